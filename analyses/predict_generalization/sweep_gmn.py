"""Validation sweep of the GMN predictor's settings (issue 17: a GMN that
reaches GBM).

Every choice here is made on **validation members that belong to neither
test set of the study** (``run.py``'s random split, seed 0, and its OOD
split, tanh held out): the sweep pool is the members of the random split's
training part that are not tanh. From a seeded subsample of that pool
(``--members``) it builds two validation tasks:

* ``random``: 80 / 20 by member;
* ``ood_proxy``: train relu + gelu, validate on silu (an activation the
  model has not seen, as tanh is in the study's OOD split).

Each named variant (``VARIANTS``) is fitted on the task's training members
(its own 15 % early-stopping hold-out inside) and scored by Kendall τ on the
task's validation members (bootstrap CI over members). GBM on the same
members is the reference. Results go to ``--out`` (JSON, rewritten after
every fit, so a partial sweep is usable).

Run (one process per task):
    python analyses/predict_generalization/sweep_gmn.py --zoo /work/zoos/digits_1000 --task random --out runs/sweep_random.json
    python analyses/predict_generalization/sweep_gmn.py --zoo /work/zoos/digits_1000 --task ood_proxy --out runs/sweep_ood.json
    python analyses/predict_generalization/sweep_gmn.py --merge runs/sweep_random.json runs/sweep_ood.json --out results/sweep_gmn.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as study  # noqa: E402  (the study's method_params, splits and zoo options)
from canonicalization import tau_difference  # noqa: E402  (paired bootstrap of a τ difference)

import zoo  # noqa: E402
from weightspace.common.splits import resolve_column  # noqa: E402
from weightspace.predict import (  # noqa: E402
    evaluate_predictions, hyperparameter_split, make_predictor, random_split, zoo_dataset,
)

#: variant -> settings on top of the study's plain GMN (``run.method_params("gmn")``)
VARIANTS = {
    "gbm": None,  # reference: the study's GBM
    "plain": {},
    "cosine": {"lr_schedule": "cosine"},
    "cosine_lr3e-3": {"lr_schedule": "cosine", "lr": 3e-3},
    "stats": {"stats_readout": True},
    "stats_cosine": {"stats_readout": True, "lr_schedule": "cosine"},
    "hidden64": {"model_kwargs": {"hidden": 64}},
    "wd1e-2": {"weight_decay": 1e-2},
    "canon": {"canonicalize": "scale_sign"},
    "stats_canon": {"stats_readout": True, "canonicalize": "scale_sign"},
    # EMA of the weights, decay per step. 0.95 (time constant 20 steps) because the sweep's tasks have only
    # 14-17 steps per epoch: that is 1.2-1.4 epochs, the window 0.99 gives on the full 1000-member zoo
    # (85 steps per epoch); 0.99 here would average over 6-7 of 20 epochs. Chosen before any result.
    "ema": {"ema_decay": 0.95},
    "stats_ema": {"stats_readout": True, "ema_decay": 0.95},
    # Ensembles on top of the hybrid readout (2026-11-29 evening; sizes fixed before any result):
    # the mean of the 3 best epochs by early-stopping loss (no extra training), and of 3 seeds (3x the cost).
    "stats_snap3": {"stats_readout": True, "snapshot_ensemble": 3},
    "stats_ens3": {"stats_readout": True, "ensemble": 3},
    # MSE + 1.0 x a pairwise logistic ranking loss (weight fixed before any result)
    "stats_rank": {"stats_readout": True, "rank_weight": 1.0},
}


def params_for(variant: str, epochs: int, seed: int) -> tuple[str, dict]:
    if VARIANTS[variant] is None:
        return variant, study.method_params(variant, False, seed, None)
    p = study.method_params("gmn", False, seed, epochs)
    extra = dict(VARIANTS[variant])
    p["model_kwargs"] = {**p["model_kwargs"], **extra.pop("model_kwargs", {})}
    p.update(extra)
    return "gmn", p


def pool_and_tasks(ds, members: int, seed: int):
    """The sweep pool (no member of either study test set) and its two tasks
    as ``{task: (train_idx, val_idx)}`` into ``ds``."""
    rnd = random_split(ds, (0.8, 0.0, 0.2), seed=seed)  # the study's random split
    ood = hyperparameter_split(ds, "activation", train=["relu", "gelu", "silu"], test=["tanh"],
                               val_fraction=0.0, seed=seed)  # the study's OOD split
    test_members = set(ds.groups[rnd.test]) | set(ds.groups[ood.test])
    pool = np.array(sorted(set(ds.groups) - test_members))
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(pool, size=min(members, len(pool)), replace=False).tolist())
    groups = ds.groups
    act = ds.meta[resolve_column(ds.meta, "activation")].to_numpy()
    in_sub = np.array([g in chosen for g in groups])
    sub_members = np.array(sorted(chosen))
    val_m = set(np.random.default_rng(seed + 1).choice(sub_members, size=len(sub_members) // 5, replace=False).tolist())
    is_val = np.array([g in val_m for g in groups])
    tasks = {
        "random": (np.flatnonzero(in_sub & ~is_val), np.flatnonzero(in_sub & is_val)),
        "ood_proxy": (np.flatnonzero(in_sub & np.isin(act, ["relu", "gelu"])), np.flatnonzero(in_sub & (act == "silu"))),
    }
    assert not (set(groups[np.concatenate([t for pair in tasks.values() for t in pair])]) & test_members)
    return tasks, len(pool)


def merge(paths: list[Path], out: Path) -> int:
    merged: dict = {"runs": {}}
    for p in paths:
        r = json.loads(p.read_text())
        prev = merged["runs"].get(r["task"])
        if prev is None:
            merged["runs"][r["task"]] = r
            continue
        # several processes of one task (variants split for CPU): same validation networks, variants joined
        same = ("zoo", "members", "epochs", "seed", "val_y", "val_groups")
        if any(prev[k] != r[k] for k in same):
            raise SystemExit(f"{p}: task {r['task']} ran on other settings than the file before it ({same})")
        prev["variants"].update(r["variants"])
        prev.setdefault("loadavg_start_other", []).append(r["loadavg_start"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(merged, indent=2, default=str))
    for task, r in merged["runs"].items():
        loads = [r["loadavg_start"][0]] + [row["loadavg"][0] for row in r["variants"].values()]
        print(f"## {task} ({r['n_train']} train / {r['n_val']} validation networks; "
              f"1-min load average {min(loads):.1f}–{max(loads):.1f})\n")
        refs = [b for b in ("plain", "stats", "gbm") if "pred" in r["variants"].get(b, {})]
        loads += [x[0] for x in r.get("loadavg_start_other", [])]
        print("| variant | val τ [95% CI] | " + " | ".join(f"Δτ vs {b} [95% CI]" for b in refs)
              + " | R² | epochs run (best) | fit s | CPU s |\n|" + "---|" * (6 + len(refs)))
        for v, row in r["variants"].items():
            ep = f"{row['epochs_run']} ({row['best_epoch']})" if "epochs_run" in row else "–"
            ds = []
            for b in refs:  # paired: the same bootstrap resamples of members for both
                ds.append("–" if v == b or "pred" not in row else study.fmt(tau_difference(
                    np.array(r["val_y"]), np.array(row["pred"]), np.array(r["variants"][b]["pred"]),
                    np.array(r["val_groups"]), r["seed"])))
            print(f"| {v} | {study.fmt(row['kendall_tau'])} | " + " | ".join(ds)
                  + f" | {row['r2']['value']:.3f} | {ep} | {row['fit_seconds']:.0f} | {row['cpu_seconds']:.0f} |")
        print()
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", type=Path)
    ap.add_argument("--task", choices=("random", "ood_proxy"))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--members", type=int, default=300, help="members drawn from the sweep pool")
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--merge", type=Path, nargs="+", default=None)
    args = ap.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out)
    if args.zoo is None or args.task is None:
        ap.error("--zoo and --task are required (or --merge)")
    torch.set_num_threads(1)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        ap.error(f"unknown variants {bad}; choose from {list(VARIANTS)}")
    ds = zoo_dataset(zoo.Zoo(args.zoo), "test_acc", checkpoints=[1, 2, 5, 10])
    tasks, pool_size = pool_and_tasks(ds, args.members, args.seed)
    tr, va = tasks[args.task]
    train, val = ds.subset(tr), ds.subset(va)
    res = {"task": args.task, "zoo": str(args.zoo), "members": args.members, "pool_members": pool_size,
           "epochs": args.epochs, "seed": args.seed, "n_train": len(train), "n_val": len(val),
           "loadavg_start": os.getloadavg(), "val_y": val.y.tolist(), "val_groups": val.groups.tolist(),
           "variants": {}}
    for v in variants:
        kind, params = params_for(v, args.epochs, args.seed)
        t, c = time.time(), time.process_time()
        p = make_predictor(kind, **params).fit(train)
        pred = p.predict(val)
        row = {k: m.to_dict() for k, m in evaluate_predictions(val.y, pred, groups=val.groups, n_resamples=1000,
                                                                 seed=args.seed).items()}
        row.update(fit_seconds=time.time() - t, cpu_seconds=time.process_time() - c, params=params,
                   loadavg=os.getloadavg(), pred=pred.tolist())
        if hasattr(p, "fit_result_"):
            row.update(best_epoch=int(p.fit_result_.best_epoch), epochs_run=len(p.history_), history=p.history_)
        res["variants"][v] = row
        print(f"[{time.strftime('%H:%M:%S')}] {args.task} {v:16s} tau {row['kendall_tau']['value']:.3f} "
              f"R2 {row['r2']['value']:.3f} {row.get('epochs_run', '-')}/{row.get('best_epoch', '-')} "
              f"{row['fit_seconds']:.0f}s", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
