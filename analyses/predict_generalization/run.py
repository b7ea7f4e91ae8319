"""Predicting generalization from raw weights: every predictor on real zoos.

Zoos (built here with the recipe machinery, or loaded from a path):

* ``digits``: ``cnn_small`` (4970 parameters, the Small CNN Zoo shape) on
  sklearn digits, the shipped ``digits_cnn_small_1000`` recipe (the
  ``digits_cnn_small`` search grown to 1000 members: activation relu / tanh /
  gelu / silu, dropout, optimizer, learning rate, weight decay, init scale,
  train fraction, label noise), checkpoints after epochs 1, 2, 5, 10.
* ``mnist1d``: ``cnn1d`` (width 16, depth 3, kernel 5) on MNIST-1D, the
  shipped ``mnist1d_cnn1d_fixed_1000`` recipe (architecture fixed so the
  per-tensor feature baselines apply; activation, optimizer, learning rate,
  weight decay, init scale, train fraction and label noise varied), 1000
  members by default (``--mnist1d-members``), checkpoints after epochs 1, 2,
  5, 10.
* ``small_cnn_zoo`` (``--small-cnn-zoo PATH``): a published Small CNN Zoo
  directory (Unterthiner et al. 2020) imported with ``zoo.loaders``.

Initialization checkpoints (epoch 0) are left out by default
(``--include-init`` keeps them): their accuracy is chance by construction and
they would add thousands of tied pairs that say nothing about training.

Predictors: mean (reference), linear (ridge on weight statistics), GBM
(sklearn HistGradientBoosting on weight statistics), StatNN, FlatMLP
(permutation augmentation), GMN. Splits: random by member (80 % train, 20 %
test; the metanetworks hold out 15 % of the training members for early
stopping), and on digits an out-of-distribution split by activation (train
relu/gelu/silu, test tanh).

Metrics on the test members: Kendall τ, Spearman ρ and R² with 95 %
bootstrap CIs resampling members (all their checkpoints together), plus τ on
the final checkpoints only.

Outputs in --out: ``table.md``, ``results.json``, ``scatter_<zoo>_<split>.png/.svg``
(predicted vs true per method), ``predictions_<zoo>_<split>.csv``.

Run:
    python analyses/predict_generalization/run.py --out runs/predict            # full (many hours on 2 CPUs)
    python analyses/predict_generalization/run.py --small --out runs/predict_small
    python analyses/predict_generalization/run.py --digits-zoo PATH --skip-mnist1d ...
    python analyses/predict_generalization/run.py --small-cnn-zoo /data/small-cnn-zoo/mnist ...
    # in parallel, one process per split / method group, then merged:
    python analyses/predict_generalization/run.py --digits-zoo Z --skip-mnist1d --splits random --methods gmn --out A
    python analyses/predict_generalization/run.py --combine A B C --out runs/predict
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

import zoo
from weightspace.predict import (evaluate_predictions, hyperparameter_split, kendall_tau, make_predictor, random_split,
                                 zoo_dataset)

METHODS = ("mean", "linear", "gbm", "statnn", "flatmlp", "gmn", "gmn_best", "gmn_best_snap3", "gmn_best_ens3",
           "gmn_best_rank")
LABELS = {"mean": "mean", "linear": "linear (stats)", "gbm": "GBM (stats)", "statnn": "StatNN",
          "flatmlp": "FlatMLP (+aug)", "gmn": "GMN", "gmn_best": "GMN + stats readout",
          "gmn_best_snap3": "GMN + stats, 3-snapshot ensemble", "gmn_best_ens3": "GMN + stats, 3-seed ensemble",
          "gmn_best_rank": "GMN + stats, MSE + rank loss"}
#: study methods that are a predictor kind with other settings: method -> kind
KINDS = {"gmn_best": "gmn", "gmn_best_snap3": "gmn", "gmn_best_ens3": "gmn", "gmn_best_rank": "gmn"}
#: what the ``gmn_best_*`` methods add to ``gmn_best`` (the sweep's variants
#: ``stats_snap3``, ``stats_ens3``, ``stats_rank``; chosen between on
#: validation only, RESULTS.md)
GMN_BEST_EXTRA = {"gmn_best_snap3": {"snapshot_ensemble": 3}, "gmn_best_ens3": {"ensemble": 3},
                  "gmn_best_rank": {"rank_weight": 1.0}}
#: the settings of ``gmn_best`` on top of ``method_params("gmn")``: the variant
#: the validation sweep (``sweep_gmn.py``, never a test member) puts forward.
#: Today the hybrid statistics readout, launched as the first sweep result
#: (ood_proxy +0.005 τ); the random task then measured it -0.034 τ below plain,
#: so no variant has yet beaten the plain GMN on validation (RESULTS.md).
GMN_BEST: dict = {"stats_readout": True}


def digits_recipe(n: int) -> zoo.Recipe:
    """The shipped ``digits_cnn_small_1000`` recipe (``digits_cnn_small``
    grown; random members do not depend on the count) with ``n`` members."""
    return zoo.load_recipe("digits_cnn_small_1000").with_members(n)


def mnist1d_recipe(n: int) -> zoo.Recipe:
    """The shipped ``mnist1d_cnn1d_fixed_1000`` recipe (``mnist1d_cnn1d``
    with the architecture fixed, activation / init scale / label noise
    varied) with ``n`` members."""
    return zoo.load_recipe("mnist1d_cnn1d_fixed_1000").with_members(n)


def method_params(method: str, small: bool, seed: int, epochs: int | None, gmn_epochs: int | None = None) -> dict:
    if method in ("mean", "linear"):
        return {}
    if method == "gbm":
        return {"seed": seed}
    kind = KINDS.get(method, method)
    if kind == "gmn" and gmn_epochs:
        epochs = gmn_epochs
    ep = epochs or (30 if small else {"gmn": 100, "statnn": 200, "flatmlp": 100}[kind])
    p = {"epochs": ep, "patience": max(10, ep // 4), "seed": seed, "lr": 1e-3, "batch_size": 32}
    if kind == "gmn":
        p["model_kwargs"] = {"hidden": 32, "num_layers": 3}
    if method.startswith("gmn_best"):
        best = {**GMN_BEST, **GMN_BEST_EXTRA.get(method, {})}
        p["model_kwargs"].update(best.pop("model_kwargs", {}))
        p.update(best)
    return p


def build_or_open(recipe: zoo.Recipe, path: Path, workers: int, log) -> zoo.Zoo:
    t = time.time()
    rep = zoo.build_zoo(recipe, path, workers=workers, progress=True)
    log(f"  zoo {recipe.name}: {rep.total} members ({rep.trained} trained now, {rep.skipped} reused) in {time.time() - t:.0f}s")
    return rep.open()


def run_split(name, ds, split, methods, small, seed, epochs, log, gmn_epochs=None):
    """Fit every method on ``split.train + split.val``, evaluate on ``split.test``."""
    train_idx = np.sort(np.concatenate([split.train, split.val]))
    train, test = ds.subset(train_idx), ds.subset(split.test)
    final_epoch = int(ds.meta["epoch"].max())
    is_final = test.meta["epoch"].to_numpy() == final_epoch
    out = {"n_train": len(train), "n_test": len(test), "n_train_members": int(len(set(train.groups))),
           "n_test_members": int(len(set(test.groups))), "methods": {}}
    preds = {}
    for m in methods:
        t = time.time()
        params = method_params(m, small, seed, epochs, gmn_epochs)
        p = make_predictor(KINDS.get(m, m), **params)
        p.fit(train)
        fit_s = time.time() - t
        pred = p.predict(test)
        preds[m] = pred
        metrics = ("r2",) if m == "mean" else ("kendall_tau", "spearman", "r2")
        res = evaluate_predictions(test.y, pred, metrics, groups=test.groups, n_resamples=1000, seed=seed)
        row = {k: v.to_dict() for k, v in res.items()}
        row["fit_seconds"] = fit_s
        row["params"] = params
        if m != "mean" and is_final.sum() > 2:
            row["kendall_tau_final"] = kendall_tau(test.y[is_final], pred[is_final])
        if hasattr(p, "fit_result_"):
            row["best_epoch"] = int(p.fit_result_.best_epoch)
            row["epochs_run"] = len(p.history_)
            row["history"] = p.history_
        out["methods"][m] = row
        tau = row.get("kendall_tau", {}).get("value", float("nan"))
        log(f"    {name:28s} {m:8s} tau {tau:6.3f}  R2 {row['r2']['value']:7.3f}  ({fit_s:.0f}s)")
    return out, test, preds


def scatter(path: Path, title: str, test, preds: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ms = [m for m in preds if m != "mean"]
    cols = min(3, len(ms))
    rows = int(np.ceil(len(ms) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols + 0.8, 3.4 * rows), squeeze=False, layout="constrained")
    lo = min(test.y.min(), *(preds[m].min() for m in ms))
    hi = max(test.y.max(), *(preds[m].max() for m in ms))
    epochs = test.meta["epoch"].to_numpy()
    for ax, m in zip(axes.flat, ms):
        sc = ax.scatter(test.y, preds[m], c=epochs, s=9, alpha=0.7, cmap="viridis")
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8, ls="--")
        tau = kendall_tau(test.y, preds[m])
        r2v = 1 - ((test.y - preds[m]) ** 2).sum() / ((test.y - test.y.mean()) ** 2).sum()
        ax.set_title(f"{LABELS.get(m, m)}: τ={tau:.3f}, R²={r2v:.3f}", fontsize=9)
        ax.set_xlabel(f"true {test.target}")
        ax.set_ylabel("predicted")
    for ax in list(axes.flat)[len(ms):]:
        ax.axis("off")
    fig.colorbar(sc, ax=axes, shrink=0.8, label="checkpoint epoch")
    fig.suptitle(title, fontsize=10)
    for ext in ("png", "svg"):
        fig.savefig(path.with_suffix(f".{ext}"), dpi=130)
    plt.close(fig)


def write_predictions(path: Path, test, preds: dict) -> None:
    df = test.meta[["member_id", "epoch"]].copy()
    df["true"] = test.y
    for m, p in preds.items():
        df[f"pred_{m}"] = p
    df.to_csv(path, index=False)


def fmt(ci: dict | None) -> str:
    if ci is None:
        return "–"
    return f"{ci['value']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"


def table(results: dict) -> str:
    lines = ["# Predicting generalization (test accuracy) from weights", "",
             "Kendall τ, Spearman ρ and R² on held-out members with 95 % bootstrap CIs "
             "(1000 resamples of members); τ-final: final checkpoints only.", ""]
    for key, r in results["experiments"].items():
        lines += [f"## {key}", "",
                  f"{r['n_train']} training / {r['n_test']} test checkpoints "
                  f"({r['n_train_members']} / {r['n_test_members']} members). {r.get('note', '')}", "",
                  "| method | Kendall τ | Spearman ρ | R² | τ-final | fit s |", "|---|---|---|---|---|---|"]
        for m, row in r["methods"].items():
            tf = row.get("kendall_tau_final")
            lines.append(f"| {LABELS.get(m, m)} | {fmt(row.get('kendall_tau'))} | {fmt(row.get('spearman'))} | "
                         f"{fmt(row.get('r2'))} | {'–' if tf is None else f'{tf:.3f}'} | {row['fit_seconds']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def combine(dirs: list[Path], out: Path) -> int:
    """Merge the ``results.json`` of several runs (e.g. one split per
    process) into ``out``: zoos and experiments side by side."""
    merged = {"combined_from": [str(d) for d in dirs], "runs": {}, "zoos": {}, "experiments": {}}
    for d in dirs:
        r = json.loads((d / "results.json").read_text())
        merged["runs"][str(d)] = {k: r.get(k) for k in ("config", "environment", "wall_seconds", "loadavg_start",
                                                         "loadavg_end")}
        merged["zoos"].update(r["zoos"])
        for key, exp in r["experiments"].items():  # one experiment's methods may come from several runs
            if key in merged["experiments"]:
                merged["experiments"][key]["methods"].update(exp["methods"])
            else:
                merged["experiments"][key] = exp
    for exp in merged["experiments"].values():  # table order
        exp["methods"] = {m: exp["methods"][m] for m in METHODS if m in exp["methods"]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(merged, indent=2, default=str))
    (out / "table.md").write_text(table(merged))
    _combine_predictions(dirs, out)
    print(f"combined {len(dirs)} runs, {len(merged['experiments'])} experiments -> {out}")
    return 0


def _combine_predictions(dirs: list[Path], out: Path) -> None:
    """Join the per-run ``predictions_*.csv`` (same test checkpoints, other
    methods) and redraw their scatter plots."""
    import pandas as pd

    names = sorted({f.name for d in dirs for f in d.glob("predictions_*.csv")})
    for name in names:
        merged = None
        for d in dirs:
            if not (d / name).exists():
                continue
            df = pd.read_csv(d / name)
            if merged is None:
                merged = df
            else:
                new = [c for c in df.columns if c.startswith("pred_") and c not in merged.columns]
                merged = merged.merge(df[["member_id", "epoch", *new]], on=["member_id", "epoch"], how="inner")
        merged.to_csv(out / name, index=False)
        preds = {c[5:]: merged[c].to_numpy() for c in merged.columns if c.startswith("pred_")}
        preds = {m: preds[m] for m in METHODS if m in preds}
        test = argparse.Namespace(y=merged["true"].to_numpy(), meta=merged, target="test_acc")
        stem = name[len("predictions_"):-len(".csv")]
        scatter(out / f"scatter_{stem}", stem, test, preds)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/predict_generalization"))
    ap.add_argument("--work", type=Path, default=None, help="where zoos are built (default: OUT/zoos)")
    ap.add_argument("--small", action="store_true", help="quick run: 60 digits / 40 mnist1d members, 30 epochs")
    ap.add_argument("--digits-zoo", type=Path, default=None, help="use this digits cnn_small zoo instead of building one")
    ap.add_argument("--mnist1d-zoo", type=Path, default=None, help="use this mnist1d cnn1d zoo instead of building one")
    ap.add_argument("--small-cnn-zoo", type=Path, default=None, help="also run on a published Small CNN Zoo directory")
    ap.add_argument("--skip-mnist1d", action="store_true")
    ap.add_argument("--skip-digits", action="store_true")
    ap.add_argument("--skip-ood", action="store_true")
    ap.add_argument("--splits", default="random,ood_activation",
                    help="which splits to run (random, ood_activation); e.g. one per process, then --combine")
    ap.add_argument("--combine", type=Path, nargs="+", default=None,
                    help="merge the results.json of these output folders into --out (table.md, results.json) and exit")
    ap.add_argument("--include-init", action="store_true", help="keep epoch-0 checkpoints")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--epochs", type=int, default=None, help="override metanetwork epochs")
    ap.add_argument("--gmn-epochs", type=int, default=None, help="override the GMN's epochs only (time budget)")
    ap.add_argument("--digits-members", type=int, default=None)
    ap.add_argument("--mnist1d-members", type=int, default=None)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    if args.combine:
        return combine(args.combine, args.out)
    torch.set_num_threads(args.threads)
    wanted_splits = {x.strip() for x in args.splits.split(",") if x.strip()}
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        ap.error(f"unknown methods {bad}; choose from {METHODS}")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = args.work or out / "zoos"
    logf = open(out / "log.txt", "a")

    def log(msg: str) -> None:
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    n_digits = args.digits_members or (60 if args.small else 1000)
    n_mnist = args.mnist1d_members or (40 if args.small else 1000)
    ckpts = "all" if args.include_init else [1, 2, 5, 10]
    results = {"config": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                          "checkpoints": ckpts, "methods": methods},
               "environment": {"python": sys.version.split()[0], "platform": platform.platform(),
                               "cpus": os.cpu_count()},
               "zoos": {}, "experiments": {}, "loadavg_start": os.getloadavg()}
    t0 = time.time()

    zoos = []
    log(f"[{time.strftime('%H:%M:%S')}] zoos")
    if not args.skip_digits:
        z = zoo.Zoo(args.digits_zoo) if args.digits_zoo else build_or_open(digits_recipe(n_digits), work / f"digits_{n_digits}", args.workers, log)
        zoos.append(("digits_cnn_small", z, True))
    if not args.skip_mnist1d:
        z = zoo.Zoo(args.mnist1d_zoo) if args.mnist1d_zoo else build_or_open(mnist1d_recipe(n_mnist), work / f"mnist1d_{n_mnist}", args.workers, log)
        zoos.append(("mnist1d_cnn1d", z, True))  # its recipe varies the activation too (relu/gelu/tanh/silu)
    if args.small_cnn_zoo:
        from zoo.loaders import import_small_cnn_zoo

        z = import_small_cnn_zoo(args.small_cnn_zoo, work / f"small_cnn_zoo_{args.small_cnn_zoo.name}", progress=True)
        zoos.append((f"small_cnn_zoo_{args.small_cnn_zoo.name}", z, False))

    for name, z, do_ood in zoos:
        ds = zoo_dataset(z, "test_acc", checkpoints="final" if name.startswith("small_cnn_zoo") else ckpts)
        results["zoos"][name] = {"path": str(z.path), "members": len(z), "checkpoints": len(ds), "dropped": ds.dropped,
                                 "target_mean": float(ds.y.mean()), "target_std": float(ds.y.std()),
                                 "target_quantiles": np.quantile(ds.y, [0, 0.25, 0.5, 0.75, 1]).tolist(),
                                 "architectures": ds.architectures()}
        log(f"[{time.strftime('%H:%M:%S')}] {name}: {len(z)} members, {len(ds)} checkpoints, "
            f"test_acc {ds.y.mean():.3f} ± {ds.y.std():.3f}")
        splits = []
        if "random" in wanted_splits:
            splits.append(("random", random_split(ds, (0.8, 0.0, 0.2), seed=args.seed), "random split by member"))
        if do_ood and not args.skip_ood and "ood_activation" in wanted_splits:
            try:
                sp = hyperparameter_split(ds, "activation", train=["relu", "gelu", "silu"], test=["tanh"],
                                          val_fraction=0.0, seed=args.seed)
                splits.append(("ood_activation", sp, "OOD: train relu/gelu/silu, test tanh"))
            except ValueError as e:
                log(f"  no OOD split: {e}")
        for split_name, sp, note in splits:
            key = f"{name}/{split_name}"
            r, test, preds = run_split(key, ds, sp, methods, args.small, args.seed, args.epochs, log, args.gmn_epochs)
            r["note"] = note
            r["loadavg_end"] = os.getloadavg()
            r["wall_seconds"] = sum(row["fit_seconds"] for row in r["methods"].values())
            results["experiments"][key] = r
            scatter(out / f"scatter_{name}_{split_name}", f"{name} — {note}", test, preds)
            write_predictions(out / f"predictions_{name}_{split_name}.csv", test, preds)
            (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
            (out / "table.md").write_text(table(results))
    results["wall_seconds"] = time.time() - t0
    results["loadavg_end"] = os.getloadavg()
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "table.md").write_text(table(results))
    log(f"done in {time.time() - t0:.0f}s -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
