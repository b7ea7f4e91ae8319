"""Accuracy prediction from raw weights on a digits zoo: GMN vs StatNN vs
flat MLP vs predicting the mean.

Zoo: ``cnn_small`` on sklearn digits from the shipped ``digits_cnn_small``
recipe (random search over activation, dropout, optimizer, learning rate,
weight decay, init scale, train fraction, label noise), final checkpoints;
built here (``--members``) or loaded (``--zoo PATH``). Target: test accuracy.

For each split seed: 60 % train / 15 % validation (early stopping) / 25 %
test members; every metanetwork is trained with :func:`weightspace.nn.train.fit`
(AdamW, MSE on standardized targets), the flat MLP with permutation
augmentation. Metrics on the test members: Kendall τ, Spearman ρ, R², MSE.

Outputs in ``--out``: ``table.md``, ``results.json``, ``scatter.png`` /
``scatter.svg`` (predicted vs true, first split seed).

    python analyses/gmn/run.py --out runs/gmn                  # builds a 96-member zoo (~4 min) + ~5 min training
    python analyses/gmn/run.py --zoo runs/gmn/zoo --seeds 0 1 2 --out runs/gmn
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

import zoo
from weightspace.nn import GMN, FlatMLP, StatNN
from weightspace.nn.train import (
    TrainConfig,
    dataset_from_zoo,
    evaluate_metanetwork,
    fit,
    predict_metanetwork,
    regression_metrics,
    split_dataset,
)

METHODS = ("mean", "statnn", "flatmlp", "gmn")
LABELS = {"mean": "mean", "statnn": "StatNN", "flatmlp": "FlatMLP (+perm. aug.)", "gmn": "GMN (PyG)"}


def _model(method: str, template):
    if method == "gmn":
        return GMN(out_dim=1, hidden=32, num_layers=3), False
    if method == "statnn":
        return StatNN.for_template(template, out_dim=1), False
    return FlatMLP.for_template(template, out_dim=1), True


def run_split(data, seed: int, epochs: int) -> dict:
    train, val, test = split_dataset(data, (0.6, 0.15, 0.25), seed=seed)
    y_test = np.array([s[1] for s in test])
    out = {"n_train": len(train), "n_val": len(val), "n_test": len(test), "methods": {}, "pred": {}}
    mean = float(np.mean([s[1] for s in train]))
    out["methods"]["mean"] = {**regression_metrics(np.full(len(test), mean), y_test), "train_s": 0.0}
    out["pred"]["mean"] = [mean] * len(test)
    for method in METHODS[1:]:
        torch.manual_seed(seed)
        model, augment = _model(method, train[0][0].template)
        t0 = time.perf_counter()
        r = fit(model, train, val, TrainConfig(epochs=epochs, patience=25, lr=1e-3, weight_decay=1e-2,
                                               seed=seed, augment=augment))
        m = evaluate_metanetwork(r.model, test, r)
        m["train_s"] = time.perf_counter() - t0
        m["best_epoch"] = r.best_epoch
        out["methods"][method] = m
        out["pred"][method] = predict_metanetwork(r.model, test, r)[:, 0].tolist()
    out["true"] = y_test.tolist()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/gmn")
    ap.add_argument("--zoo", default=None, help="existing zoo directory (default: build one under --out)")
    ap.add_argument("--members", type=int, default=96)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    zoo_path = Path(args.zoo) if args.zoo else out / "zoo"
    if not args.zoo:
        recipe = zoo.load_recipe("digits_cnn_small").with_members(args.members)
        zoo.build_zoo(recipe, zoo_path, workers=1, progress=True)
    data = dataset_from_zoo(zoo.Zoo(zoo_path), "test_acc")
    splits = {}
    for seed in args.seeds:
        splits[seed] = run_split(data, seed, args.epochs)
        print(f"seed {seed}: " + ", ".join(f"{k} tau={v['kendall_tau']:.3f}" for k, v in splits[seed]["methods"].items()),
              flush=True)
    summary = {}
    for m in METHODS:
        vals = {k: [splits[s]["methods"][m][k] for s in args.seeds] for k in ("kendall_tau", "spearman", "r2", "mse", "train_s")}
        summary[m] = {k: {"mean": float(np.mean(v)), "std": float(np.std(v))} for k, v in vals.items()}
    lines = [
        f"Test-accuracy prediction on {len(data)} `cnn_small` digits networks "
        f"(60/15/25 % split, {len(args.seeds)} split seeds; mean ± std over seeds).",
        "",
        "| method | Kendall τ | Spearman ρ | R² | MSE | train s |",
        "|---|---|---|---|---|---|",
    ]
    for m in METHODS:
        s = summary[m]
        lines.append(f"| {LABELS[m]} | {s['kendall_tau']['mean']:.3f} ± {s['kendall_tau']['std']:.3f} | "
                     f"{s['spearman']['mean']:.3f} ± {s['spearman']['std']:.3f} | "
                     f"{s['r2']['mean']:.3f} ± {s['r2']['std']:.3f} | {s['mse']['mean']:.4f} | "
                     f"{s['train_s']['mean']:.1f} |")
    table = "\n".join(lines) + "\n"
    (out / "table.md").write_text(table)
    print(table)
    results = {
        "zoo": str(zoo_path), "n_networks": len(data), "target": "test_acc", "seeds": args.seeds,
        "epochs": args.epochs, "summary": summary,
        "splits": {str(s): {k: v for k, v in r.items() if k != "pred"} for s, r in splits.items()},
        "predictions_first_seed": splits[args.seeds[0]]["pred"],
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "python": platform.python_version()},
    }
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, out / "results.json")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = splits[args.seeds[0]]
    fig, axes = plt.subplots(1, len(METHODS), figsize=(3.2 * len(METHODS), 3.2), sharex=True, sharey=True)
    for ax, m in zip(axes, METHODS):
        ax.scatter(first["true"], first["pred"][m], s=12)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
        ax.set_title(f"{LABELS[m]}\nτ={first['methods'][m]['kendall_tau']:.2f}")
        ax.set_xlabel("true test acc")
    axes[0].set_ylabel("predicted")
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(out / f"scatter.{ext}", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
