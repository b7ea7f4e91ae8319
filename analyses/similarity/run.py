"""Representation similarity of small digits networks across seeds and widths.

Trains MLPs (hidden widths 32/64/128) and Small-CNN-Zoo CNNs (8/16/32
filters) on sklearn's 8x8 digits with a plain, seeded torch loop (a few
seconds each), then on the held-out test images computes

* layer x layer linear CKA heatmaps between two seeds of the same width and
  between the narrowest and widest network of the same seed,
* same-layer CKA per layer, mean +- std over all seed pairs, per width, for
  the trained networks and for their untrained initialisations,
* the one-to-one neuron-matched Pearson correlation per layer (convergent
  learning, Li et al. 2016) between seeds,

and writes figures (PNG + SVG), ``table.md`` and ``results.json`` to --out.

Run: python analyses/similarity/run.py [--out DIR] [--quick]

Git Re-Basin before/after: model b of every seed pair is permuted onto model
a with ``weightspace.merge.weight_matching``; the analysis records the
correlation of *same-index* neurons (should rise after alignment), the
one-to-one matched correlation (an upper bound that permutations cannot
change) and CKA (permutation invariant: unchanged).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

import zoo
from weightspace.similarity import (
    DegenerateRepresentationWarning,
    capture_activations,
    cka_matrix,
    match_neurons_by_layer,
)
from weightspace.similarity.plot import plot_similarity_heatmap

# Layers compared per family: post-activation hidden layers and the logits.
LAYERS = {
    "mlp": ["layers.1", "layers.3", "layers.4"],
    "cnn_small": ["features.1", "features.3", "features.5", "classifier"],
}
# Layers whose units are matched neuron-by-neuron (hidden layers only). CNN
# channels are matched on spatially averaged maps (one value per channel).
MATCH_LAYERS = {"mlp": ["layers.1", "layers.3"], "cnn_small": ["features.1", "features.3", "features.5"]}
REDUCTION = {"mlp": "flatten", "cnn_small": "flatten"}
MATCH_REDUCTION = {"mlp": "flatten", "cnn_small": "pool_spatial"}


def load_digits_split(seed: int = 0):
    """Stratified 70/30 train/test split of sklearn digits, images (N, 1, 8, 8) in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(d.target, dtype=torch.long)
    tr, te = train_test_split(np.arange(len(y)), test_size=0.3, random_state=seed, stratify=d.target)
    return x[tr], y[tr], x[te], y[te]


def build(family: str, width: int, seed: int) -> nn.Module:
    if family == "mlp":
        return zoo.create_model("mlp", seed=seed, hidden=(width, width))
    return zoo.create_model("cnn_small", seed=seed, width=width)


def train(model: nn.Module, x, y, *, seed: int, epochs: int, lr: float = 3e-3, batch_size: int = 64) -> nn.Module:
    """Adam, cross-entropy, seeded shuffling; returns the trained model (same object)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def accuracy(model, x, y) -> float:
    return float((model.eval()(x).argmax(1) == y).float().mean())


def rebasin_alignment(model_a: nn.Module, model_b: nn.Module, example_input: torch.Tensor):
    """Git Re-Basin weight matching of ``model_b`` onto ``model_a``.

    Uses ``weightspace.merge.weight_matching`` with the spec derived from the
    trace (nothing is re-implemented here). Returns ``(aligned copy of b,
    info)`` or ``(None, reason)`` when the merge module or its API is not
    available, so the rest of the analysis still runs.
    """
    try:
        from weightspace.core import permutation_spec
        from weightspace.merge import weight_matching
    except ImportError as exc:  # merge not built yet
        return None, f"pending: {exc}"
    try:
        spec = permutation_spec(model_a, example_input)
        res = weight_matching(model_a.state_dict(), model_b.state_dict(), spec, seed=0)
        aligned = copy.deepcopy(model_b)
        aligned.load_state_dict(res.apply(model_b.state_dict()))
    except Exception as exc:  # noqa: BLE001 - report, never abort the analysis
        return None, f"failed: {type(exc).__name__}: {exc}"
    return aligned.eval(), {"groups": list(res.perm), "sweeps": res.sweeps, "converged": res.converged}


def same_index_correlation(acts_a, acts_b, layers) -> dict[str, float]:
    """Mean Pearson correlation of neuron i in a with neuron i in b (no matching)."""
    from weightspace.similarity import neuron_correlation

    return {k: float(np.mean(np.diag(neuron_correlation(acts_a[k], acts_b[k])))) for k in layers}


def rebasin_block(family, width, seeds, models, match_acts, acts, x) -> dict:
    """Before/after Git Re-Basin statistics over all seed pairs of one width."""
    after_idx = {k: [] for k in MATCH_LAYERS[family]}
    after_match = {k: [] for k in MATCH_LAYERS[family]}
    cka_change = {k: [] for k in LAYERS[family]}
    infos = []
    for s1, s2 in itertools.combinations(seeds, 2):
        ka, kb = f"{family}/w{width}/s{s1}", f"{family}/w{width}/s{s2}"
        aligned, info = rebasin_alignment(models[ka], models[kb], x[:2])
        if aligned is None:
            return {"status": info}
        infos.append(info)
        al = capture_activations(aligned, MATCH_LAYERS[family], x, reduction=MATCH_REDUCTION[family])
        for k, v in same_index_correlation(match_acts[ka], al, MATCH_LAYERS[family]).items():
            after_idx[k].append(v)
        for k, mt in match_neurons_by_layer(match_acts[ka], al).items():
            after_match[k].append(mt.mean)
        al_cka = capture_activations(aligned, LAYERS[family], x, reduction=REDUCTION[family])
        before = cka_matrix(acts[ka], acts[kb]).matching_diagonal()
        after = cka_matrix(acts[ka], al_cka).matching_diagonal()
        for k in LAYERS[family]:
            cka_change[k].append(abs(after[k] - before[k]))
    ms = lambda d: {k: {"mean": float(np.mean(v)), "std": float(np.std(v))} for k, v in d.items()}
    return {
        "status": "done",
        "weight_matching": infos,
        "same_index_after": ms(after_idx),
        "matched_after": ms(after_match),
        "cka_abs_change": {k: {"mean": float(np.max(v)), "std": 0.0} for k, v in cka_change.items()},
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description="CKA heatmaps across seeds and widths on digits")
    ap.add_argument("--out", type=Path, default=Path("out/analyses/similarity"))
    ap.add_argument("--quick", action="store_true", help="2 seeds, 2 widths, fewer epochs (smoke run)")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 1 is fastest for these tiny models (and on a busy machine)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    seeds = [0, 1] if args.quick else [0, 1, 2]
    widths = {"mlp": [32, 128] if args.quick else [32, 64, 128], "cnn_small": [8, 32] if args.quick else [8, 16, 32]}
    epochs = 5 if args.quick else args.epochs
    xtr, ytr, xte, yte = load_digits_split(0)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    results: dict = {"config": {"seeds": seeds, "widths": widths, "epochs": epochs, "n_train": len(ytr),
                                "n_test": len(yte), "layers": LAYERS, "reduction": REDUCTION,
                                "match_reduction": MATCH_REDUCTION, "cka": "linear, exact, test set"},
                     "models": {}, "same_layer_cka": {}, "neuron_matching": {}, "heatmaps": {},
                     "rebasin": {}}
    acts, acts_init, match_acts, models = {}, {}, {}, {}
    t0 = time.perf_counter()
    for family in LAYERS:
        for width, seed in itertools.product(widths[family], seeds):
            key = f"{family}/w{width}/s{seed}"
            init = build(family, width, seed)
            acts_init[key] = capture_activations(init, LAYERS[family], xte, reduction=REDUCTION[family])
            t = time.perf_counter()
            model = train(build(family, width, seed), xtr, ytr, seed=seed, epochs=epochs)
            results["models"][key] = {"test_accuracy": accuracy(model, xte, yte),
                                      "train_seconds": time.perf_counter() - t}
            models[key] = model
            acts[key] = capture_activations(model, LAYERS[family], xte, reduction=REDUCTION[family])
            match_acts[key] = capture_activations(model, MATCH_LAYERS[family], xte, reduction=MATCH_REDUCTION[family])
    results["total_train_seconds"] = time.perf_counter() - t0

    table_rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateRepresentationWarning)  # dead ReLUs: documented 0 fallback
        for family in LAYERS:
            for width in widths[family]:
                for label, store in (("trained", acts), ("init", acts_init)):
                    per_layer = {k: [] for k in LAYERS[family]}
                    for s1, s2 in itertools.combinations(seeds, 2):
                        m = cka_matrix(store[f"{family}/w{width}/s{s1}"], store[f"{family}/w{width}/s{s2}"])
                        for k, v in m.matching_diagonal().items():
                            per_layer[k].append(v)
                    stats = {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n_pairs": len(v)} for k, v in per_layer.items()}
                    results["same_layer_cka"][f"{family}/w{width}/{label}"] = stats
                    table_rows.append((family, width, f"CKA across seeds ({label})", stats))
                corr = {k: [] for k in MATCH_LAYERS[family]}
                same_idx = {k: [] for k in MATCH_LAYERS[family]}
                for s1, s2 in itertools.combinations(seeds, 2):
                    a, b = match_acts[f"{family}/w{width}/s{s1}"], match_acts[f"{family}/w{width}/s{s2}"]
                    for k, mt in match_neurons_by_layer(a, b).items():
                        corr[k].append(mt.mean)
                    for k, v in same_index_correlation(a, b, MATCH_LAYERS[family]).items():
                        same_idx[k].append(v)
                stats = {k: {"mean": float(np.mean(v)), "std": float(np.std(v))} for k, v in corr.items()}
                stats_idx = {k: {"mean": float(np.mean(v)), "std": float(np.std(v))} for k, v in same_idx.items()}
                results["neuron_matching"][f"{family}/w{width}"] = {"matched": stats, "same_index": stats_idx}
                table_rows.append((family, width, "matched neuron corr", stats))
                table_rows.append((family, width, "same-index neuron corr", stats_idx))
                rb = rebasin_block(family, width, seeds, models, match_acts, acts, xte)
                results["rebasin"][f"{family}/w{width}"] = rb
                if "same_index_after" in rb:
                    table_rows.append((family, width, "same-index corr after Re-Basin", rb["same_index_after"]))
                    table_rows.append((family, width, "matched corr after Re-Basin", rb["matched_after"]))
                    table_rows.append((family, width, "max |CKA change| after Re-Basin", rb["cka_abs_change"]))

        # heatmaps: two seeds of the middle width; narrowest vs widest of seed 0
        for family in LAYERS:
            ws = widths[family]
            mid = ws[len(ws) // 2]
            pairs = {
                f"{family}_seeds_w{mid}": (f"{family}/w{mid}/s{seeds[0]}", f"{family}/w{mid}/s{seeds[1]}"),
                f"{family}_widths_w{ws[0]}_vs_w{ws[-1]}": (f"{family}/w{ws[0]}/s{seeds[0]}", f"{family}/w{ws[-1]}/s{seeds[0]}"),
            }
            for name, (ka, kb) in pairs.items():
                m = cka_matrix(acts[ka], acts[kb])
                files = plot_similarity_heatmap(m, out / name, title=f"linear CKA (digits test): {ka} vs {kb}", xlabel=kb, ylabel=ka)
                results["heatmaps"][name] = {"a": ka, "b": kb, **m.to_dict(), "files": [str(f) for f in files]}

    summary_fig = plot_summary(results, widths, out / "same_layer_cka_vs_width")
    results["summary_figure"] = [str(f) for f in summary_fig]

    lines = ["| family | width | measure | " + " | ".join(["layer 1", "layer 2", "layer 3", "layer 4"]) + " |",
             "|---|---|---|---|---|---|---|"]
    for family, width, measure, stats in table_rows:
        cells = [f"{k}: {v['mean']:.3f} ± {v['std']:.3f}" for k, v in stats.items()]
        cells += [""] * (4 - len(cells))
        lines.append(f"| {family} | {width} | {measure} | " + " | ".join(cells) + " |")
    acc_lines = ["", "| model | test accuracy | train s |", "|---|---|---|"]
    for k, v in results["models"].items():
        acc_lines.append(f"| {k} | {v['test_accuracy']:.3f} | {v['train_seconds']:.1f} |")
    (out / "table.md").write_text("\n".join(lines + acc_lines) + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print("\n".join(lines + acc_lines))
    print(f"wrote {out}/table.md, {out}/results.json and figures")
    return results


def plot_summary(results, widths, stem: Path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, family in zip(fig.subplots(1, 2), LAYERS):
        for k in LAYERS[family]:
            for label, style in (("trained", "-o"), ("init", ":x")):
                m = [results["same_layer_cka"][f"{family}/w{w}/{label}"][k]["mean"] for w in widths[family]]
                s = [results["same_layer_cka"][f"{family}/w{w}/{label}"][k]["std"] for w in widths[family]]
                ax.errorbar(widths[family], m, yerr=s, fmt=style, capsize=2, label=f"{k} ({label})")
        ax.set_xscale("log", base=2)
        ax.set_xticks(widths[family], [str(w) for w in widths[family]])
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("width")
        ax.set_ylabel("same-layer CKA across seeds")
        ax.set_title(family)
        ax.legend(fontsize=6)
    paths = []
    for fmt in ("png", "svg"):
        p = stem.with_name(stem.name + "." + fmt)
        fig.savefig(p, dpi=150)
        paths.append(p)
    return paths


if __name__ == "__main__":
    main()
