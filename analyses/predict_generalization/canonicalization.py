"""Do the scale/sign symmetries help the metanetworks? GMN with and without
canonicalization, FlatMLP with permutation vs full-group augmentation (and
with canonicalization), GBM on weight statistics as the reference.

Zoo: digits ``cnn_small`` (``--zoo PATH``, e.g. ``/work/zoos/digits_1000``),
members with the activations in ``--activations`` (default relu and tanh:
ReLU has the per-unit positive rescaling symmetry, tanh the sign flips),
checkpoints ``--checkpoints``. Splits: random by member (80 / 20) and OOD by
activation (train on every kept activation but tanh, test on tanh).

Variants (``--methods``):

* ``gbm``: GBM on weight statistics (reference).
* ``gbm_canon``: GBM on the statistics of networks canonicalized for scale and sign.
* ``flatmlp``: FlatMLP, random spec permutations each epoch (the study's default).
* ``flatmlp_full``: FlatMLP, random elements of the full group each epoch
  (permutation x per-unit scale x sign).
* ``flatmlp_canon``: FlatMLP on networks canonicalized under the full group
  (no augmentation).
* ``gmn``: GMN (permutation-invariant by construction).
* ``gmn_canon``: GMN on networks canonicalized for scale and sign.

Metrics: Kendall τ (and R²) on the test members with 95 % bootstrap CIs
resampling members (``evaluate_predictions``, as in ``run.py``), and the
paired difference τ(variant) − τ(baseline) with a bootstrap CI over the same
members. Training settings are ``run.py``'s ``method_params`` with
``--epochs``.

Run (each split can run in its own process; ``--merge`` joins the parts):
    nice -n 10 python analyses/predict_generalization/canonicalization.py \\
        --zoo /work/zoos/digits_1000 --split random --epochs 20 --out runs/canon_random.json
    python analyses/predict_generalization/canonicalization.py --merge runs/canon_*.json \\
        --out analyses/predict_generalization/results/canonicalization.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import fmt, method_params  # noqa: E402  (the study's settings and CI format)

from weightspace.predict import (  # noqa: E402
    bootstrap_ci,
    evaluate_predictions,
    hyperparameter_split,
    kendall_tau,
    make_predictor,
    random_split,
    zoo_dataset,
)

#: variant -> (predictor kind, extra parameters)
VARIANTS = {
    "gbm": ("gbm", {}),
    "gbm_canon": ("gbm", {"canonicalize": "scale_sign"}),
    "flatmlp": ("flatmlp", {"augment": True, "augment_group": "permute"}),
    "flatmlp_full": ("flatmlp", {"augment": True, "augment_group": "full"}),
    "flatmlp_canon": ("flatmlp", {"augment": False, "canonicalize": "full"}),
    "gmn": ("gmn", {}),
    "gmn_canon": ("gmn", {"canonicalize": "scale_sign"}),
}
#: variant -> the variant it is compared with (paired τ difference)
BASELINE = {"gbm_canon": "gbm", "flatmlp_full": "flatmlp", "flatmlp_canon": "flatmlp", "gmn_canon": "gmn"}


def params(variant: str, seed: int, epochs: int) -> tuple[str, dict]:
    kind, extra = VARIANTS[variant]
    return kind, {**method_params(kind, False, seed, epochs), **extra}


def tau_difference(y, pa, pb, groups, seed: int) -> dict:
    """τ(y, pa) − τ(y, pb) with a bootstrap CI resampling ``groups``
    (``bootstrap_ci`` on row indices, so both predictions see the same resample)."""
    idx = np.arange(len(y), dtype=np.float64)

    def diff(t, i):
        i = i.astype(np.int64)
        return kendall_tau(t, pa[i]) - kendall_tau(t, pb[i])

    return bootstrap_ci(y, idx, diff, groups=groups, n_resamples=1000, seed=seed).to_dict()


def run_split(ds, split, variants, seed, epochs, log) -> dict:
    train_idx = np.sort(np.concatenate([split.train, split.val]))
    train, test = ds.subset(train_idx), ds.subset(split.test)
    out = {"n_train": len(train), "n_test": len(test), "n_train_members": int(len(set(train.groups))),
           "n_test_members": int(len(set(test.groups))), "methods": {}}
    preds = {}
    for v in variants:
        kind, p = params(v, seed, epochs)
        t = time.time()
        pred_obj = make_predictor(kind, **p)
        pred_obj.fit(train)
        fit_s = time.time() - t
        preds[v] = pred_obj.predict(test)
        res = evaluate_predictions(test.y, preds[v], ("kendall_tau", "r2"), groups=test.groups,
                                   n_resamples=1000, seed=seed)
        row = {k: r.to_dict() for k, r in res.items()}
        row.update(kind=kind, params=p, fit_seconds=fit_s, load_after=list(os.getloadavg()))
        if hasattr(pred_obj, "fit_result_"):
            row["best_epoch"] = int(pred_obj.fit_result_.best_epoch)
            row["epochs_run"] = len(pred_obj.history_)
        base = BASELINE.get(v)
        if base in preds:
            row["tau_minus_" + base] = tau_difference(test.y, preds[v], preds[base], test.groups, seed)
        out["methods"][v] = row
        extra = f"  Δτ vs {base} {fmt(row['tau_minus_' + base])}" if base in preds else ""
        log(f"  {v:14s} τ {fmt(row['kendall_tau'])}  R² {row['r2']['value']:.3f}  ({fit_s:.0f}s){extra}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", type=Path)
    ap.add_argument("--activations", nargs="+", default=["relu", "tanh"])
    ap.add_argument("--checkpoints", nargs="+", type=int, default=[2, 10])
    ap.add_argument("--split", choices=["random", "ood", "both"], default="both")
    ap.add_argument("--methods", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--merge", nargs="+", type=Path, help="join the JSON files of earlier runs into --out")
    args = ap.parse_args(argv)

    if args.merge:
        parts = [json.loads(p.read_text()) for p in args.merge]
        merged = {**parts[0], "splits": {}, "runs": []}
        for p in parts:  # later files add methods to a split; a method run twice keeps the first result
            merged["runs"].append({k: p[k] for k in ("seed", "load_before", "wall_seconds")} | {"splits": list(p["splits"])})
            for name, sp in p["splits"].items():
                if p["seed"] != parts[0]["seed"]:
                    name = f"{name}_seed{p['seed']}"
                into = merged["splits"].setdefault(name, {**sp, "methods": {}})
                for m, row in sp["methods"].items():
                    into["methods"].setdefault(m, row)
        merged.pop("load_before", None)
        merged["wall_seconds"] = sum(p["wall_seconds"] for p in parts)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(merged, indent=2))
        return 0
    if args.zoo is None:
        ap.error("--zoo is required")

    import zoo

    def log(msg):
        print(msg, flush=True)

    t0 = time.time()
    z = zoo.Zoo(args.zoo).filter(activation=list(args.activations))
    ds = zoo_dataset(z, "test_acc", checkpoints=list(args.checkpoints))
    log(f"zoo {args.zoo}: {len(set(ds.groups))} members ({', '.join(args.activations)}), {len(ds)} networks, "
        f"checkpoints {args.checkpoints}, loaded in {time.time() - t0:.0f}s, load {os.getloadavg()[0]:.1f}")
    splits = []
    if args.split in ("random", "both"):
        splits.append(("random", random_split(ds, (0.8, 0.0, 0.2), seed=args.seed)))
    if args.split in ("ood", "both"):
        rest = [a for a in args.activations if a != "tanh"]
        splits.append(("ood_activation", hyperparameter_split(ds, "activation", train=rest, test=["tanh"],
                                                              val_fraction=0.0, seed=args.seed)))
    result = {
        "zoo": str(args.zoo), "activations": list(args.activations), "checkpoints": list(args.checkpoints),
        "target": "test_acc", "epochs": args.epochs, "seed": args.seed, "n_networks": len(ds),
        "n_members": int(len(set(ds.groups))), "load_before": list(os.getloadavg()), "splits": {},
    }
    for name, split in splits:
        log(f"split {name}")
        result["splits"][name] = run_split(ds, split, args.methods, args.seed, args.epochs, log)
    result["wall_seconds"] = time.time() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    log(f"wrote {args.out} ({result['wall_seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
