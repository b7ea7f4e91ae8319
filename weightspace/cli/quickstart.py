"""``weightspace quickstart``: the whole toolkit, end to end, offline on a CPU.

Every step returns data; :func:`run_quickstart` collects it into
``results.json``, writes figures (PNG + SVG) and a Markdown report. The CLI
prints. Steps:

1. **graphs** — parameter graph and permutation spec of every registered
   architecture, with the symmetry check (a spec permutation keeps the
   function, a one-sided one does not);
2. **zoo** — zoos of ``cnn_small`` networks on digits and ``cnn1d`` networks
   on MNIST-1D (resume if re-run);
3. **predict** — performance predictors fit on the zoo, Kendall τ / R²;
4. **merge** — two independently trained MLPs merged naively, with weight
   matching (± REPAIR) and with OT fusion, loss/accuracy barriers;
5. **similarity** — CKA and neuron correlations before/after alignment;
6. **generate** — a tiny graph hypernetwork (accuracy of its predicted
   weights on architectures it never saw, vs. default and random init) and
   a checkpoint generator trained on the zoo, with its novelty report.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

import zoo
from weightspace.core import analyze
from weightspace.runtime import torch_threads
from weightspace.symmetry import apply_permutation, random_permutation

Log = Callable[[str], None]


def _noop(msg: str) -> None:
    return None


# ----------------------------------------------------------------- 1. graphs
def foundation_tour(archs: list[str] | None = None, seed: int = 0, progress: Log | None = None) -> list[dict]:
    """For each architecture: graph/spec sizes, build time, and the output
    difference under a random spec permutation (float64) and under a broken
    one (only the first tensor axis of the largest group permuted)."""
    rows = []
    for name in archs or zoo.list_models():
        (progress or _noop)(f"graph {name}")
        t0 = time.perf_counter()
        a = analyze(name)
        build = time.perf_counter() - t0
        model = a.module.double().eval()
        x = a.example_input.double() if a.example_input.is_floating_point() else a.example_input
        sd = model.state_dict()
        perm = random_permutation(a.spec, seed=seed)
        permuted = zoo.create_model(name).double().eval()
        permuted.load_state_dict(apply_permutation(sd, a.spec, perm))
        with torch.no_grad():
            y = model(x)
            diff = (permuted(x) - y).abs().max().item()
        broken_diff = float("nan")
        if len(a.spec):
            g = max(a.spec.groups, key=lambda g: g.size)
            p, axis, start, unit = g.axes[0]
            bad = dict(sd)
            t = bad[p]
            shift = torch.roll(torch.arange(g.size), 1)
            idx = torch.arange(t.shape[axis])
            idx[start : start + g.size * unit] = idx[start : start + g.size * unit].view(g.size, unit)[shift].reshape(-1)
            bad[p] = t.index_select(axis, idx)
            permuted.load_state_dict(bad)
            with torch.no_grad():
                broken_diff = (permuted(x) - y).abs().max().item()
        s = a.template.summary()
        rows.append(
            {
                "arch": name,
                "parameters": sum(v.numel() for v in a.module.parameters()),
                "groups": len(a.spec),
                "head_groups": len(a.spec.head_groups),
                "nodes": s["nodes"],
                "edges": s["edges"],
                "build_seconds": round(build, 4),
                "max_abs_diff_permuted": diff,
                "max_abs_diff_broken": broken_diff,
            }
        )
    return rows


# -------------------------------------------------------------------- 2. zoo
def build_recipe_zoo(recipe: str, out: Path, members: int, workers: int = 2, progress: bool = False) -> Any:
    """A shipped recipe (``digits_cnn_small``, ``mnist1d_cnn1d``) cut to ``members`` (resumable)."""
    report = zoo.build_zoo(zoo.load_recipe(recipe).with_members(members), out, workers=workers, progress=progress)
    return report.open()


def build_digits_zoo(out: Path, members: int, workers: int = 2, progress: bool = False) -> Any:
    """The shipped ``digits_cnn_small`` recipe cut to ``members`` (resumable)."""
    return build_recipe_zoo("digits_cnn_small", out, members, workers, progress)


# ---------------------------------------------------------------- 3. predict
def predict_performance(z: Any, methods: list[str], seed: int = 0, epochs: int = 100, log: Log | None = None) -> dict:
    """Fit each predictor on 70% of the members (all checkpoints), report
    Kendall τ and R² (bootstrap 95% CI) on the held-out 30%."""
    from weightspace.predict import evaluate_predictions, make_predictor, random_split, zoo_dataset

    ds = zoo_dataset(z, target="test_acc", checkpoints="all")
    split = random_split(ds, (0.7, 0.0, 0.3), seed=seed)
    tr, te = split[0], split[2]
    out: dict[str, Any] = {"samples": len(ds), "train": len(tr), "test": len(te), "methods": {}}
    preds = {}
    for m in ["mean", *methods]:
        (log or _noop)(f"predict {m}")
        t0 = time.perf_counter()
        params: dict[str, Any] = {}
        if m in ("gbm", "statnn", "gmn", "flatmlp"):
            params["seed"] = seed
        if m in ("statnn", "gmn"):
            params["epochs"] = epochs
        model = make_predictor(m, **params)
        model.fit(ds.subset(tr))
        yhat = model.predict(ds.subset(te))
        res = evaluate_predictions(ds.y[te], yhat, groups=ds.groups[te], n_resamples=300, seed=seed)
        out["methods"][m] = {k: v.to_dict() for k, v in res.items()} | {"seconds": time.perf_counter() - t0}
        preds[m] = yhat.tolist()
    out["y_true"] = ds.y[te].tolist()
    out["y_pred"] = preds
    return out


# ------------------------------------------------------------------ 4. merge
def _train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], 64):
            b = order[i : i + 64]
            opt.zero_grad()
            F.cross_entropy(model(x[b]), y[b]).backward()
            opt.step()
    return model.eval()


def train_pair(width: int = 128, epochs: int = 30, seeds: tuple[int, int] = (0, 1)):
    """Two MLPs (64 -> width -> width -> 10) trained on digits from different seeds."""
    data = zoo.load_dataset("digits")
    x_tr, y_tr = data.split("train")
    x_te, y_te = data.split("test")
    models = []
    for s in seeds:
        m = zoo.create_model("mlp", seed=s, hidden=[width, width])
        models.append(_train(m, x_tr.flatten(1), y_tr, epochs, seed=s))
    return models, (x_tr.flatten(1), y_tr), (x_te.flatten(1), y_te)


def merge_pair(models, train, test, num_lambdas: int = 11, seed: int = 0) -> dict:
    """Barriers on the linear path for naive averaging, weight matching and
    weight matching + REPAIR; accuracy of the OT-fused midpoint."""
    from weightspace.merge import evaluate, linear_path, ot_fusion, weight_matching

    a, b = models
    spec = analyze(a, train[0][:2]).spec
    sd_a, sd_b = a.state_dict(), b.state_dict()
    t0 = time.perf_counter()
    match = weight_matching(sd_a, sd_b, spec, seed=seed)
    wm_seconds = time.perf_counter() - t0
    sd_b_aligned = match.apply(sd_b)
    paths = {
        "naive": linear_path(a, sd_a, sd_b, test, num_lambdas=num_lambdas),
        "weight_matching": linear_path(a, sd_a, sd_b_aligned, test, num_lambdas=num_lambdas),
        "weight_matching+repair": linear_path(
            a, sd_a, sd_b_aligned, test, num_lambdas=num_lambdas, correction="repair",
            correction_data=train[0], spec=spec,
        ),
    }
    fused = ot_fusion([sd_a, sd_b], spec, solver="emd")
    fused_loss, fused_acc = evaluate(a, fused.state_dict, test)
    out = {name: p.to_dict() for name, p in paths.items()}
    out["ot_fusion"] = {"loss": fused_loss, "accuracy": fused_acc}
    out["weight_matching_seconds"] = wm_seconds
    out["weight_matching_sweeps"] = match.sweeps
    out["perm"] = {k: v.tolist() for k, v in match.perm.items()}
    return out


# ------------------------------------------------------------- 5. similarity
def similarity_pair(models, data, perm: dict) -> dict:
    """Layer-by-layer linear CKA (unchanged by permutations) and the mean
    correlation of same-index neurons before/after weight matching."""
    from weightspace.similarity import (
        DegenerateRepresentationWarning,
        capture_activations,
        model_cka_matrix,
        neuron_correlation,
    )

    a, b = models
    x = data[0]
    cka = model_cka_matrix(a, b, x)
    spec = analyze(a, x[:2]).spec
    aligned = zoo.create_model("mlp", hidden=[a.layers[0].out_features, a.layers[2].out_features])
    aligned.load_state_dict(apply_permutation(b.state_dict(), spec, {k: torch.tensor(v) for k, v in perm.items()}))
    aligned.eval()
    layers = ["layers.1", "layers.3"]
    acts_a = capture_activations(a, layers, x)
    out = {"cka_layers_a": list(cka.layers_a), "cka_layers_b": list(cka.layers_b),
           "cka": cka.values.tolist(), "same_index_correlation": {}}
    for name, other in (("before", b), ("after", aligned)):
        acts_o = capture_activations(other, layers, x)
        # dead ReLU units have zero variance: their correlation is defined as 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DegenerateRepresentationWarning)
            out["same_index_correlation"][name] = {
                layer: float(torch.as_tensor(neuron_correlation(acts_a[layer], acts_o[layer])).diagonal().mean())
                for layer in layers
            }
    return out


# --------------------------------------------------------------- 6. generate
def generate_tour(small: bool, seed: int = 0, log: Log | None = None, zoo_dir: Path | None = None,
                  progress: bool = False) -> dict:
    """Weight generation, two ways.

    * **Graph hypernetwork**: trained on a few MLP / CNN shapes by
      backpropagating the digits loss through its predicted weights, then
      asked for the weights of shapes it never saw (other widths / depths);
      test accuracy after k = 0, 5, 50 SGD steps from its prediction vs.
      PyTorch's default init and vs. the untrained hypernetwork (random
      weights with the same per-layer scaling).
    * **Checkpoint generator** (when ``zoo_dir`` is given): a conditional
      flow trained on the checkpoints of a ``digits_mlp32`` zoo (one
      architecture, built in ``zoo_dir``) samples new ones for a target
      test accuracy, shipped with the novelty report (distance to the
      nearest training checkpoint after weight-matching alignment, relative
      to the distance between two training runs; exact copies are flagged).
    """
    import numpy as np

    from weightspace.generate import (
        ArchSpec, collect_checkpoints, compare_inits, load_task, novelty_report, train_checkpoint_flow, train_hypernet,
    )

    log = log or _noop
    data = load_task("digits")
    A = ArchSpec.of
    train = [A("mlp", hidden=[32]), A("mlp", hidden=[64, 64]), A("mlp", hidden=[128]),
             A("cnn_small", width=8, depth=2), A("cnn_small", width=16, depth=3)]
    held = [A("mlp", hidden=[96, 48]), A("cnn_small", width=24, depth=4)]
    if not small:
        train += [A("mlp", hidden=[32, 32, 32]), A("cnn_small", width=32, depth=2)]
        held += [A("mlp", hidden=[64, 64, 64, 64]), A("mobilenet_tiny")]
    steps = 200 if small else 600
    ks = (0, 5, 50)
    seeds = (0,) if small else (0, 1)
    log(f"generate: training a graph hypernetwork on {len(train)} architectures ({steps} steps)")
    t0 = time.perf_counter()
    hn, hist = train_hypernet(train, data, steps=steps, seed=seed)
    train_s = time.perf_counter() - t0
    rows = compare_inits(hn, held, data, steps=ks, seeds=seeds)
    per_arch: dict[str, dict[str, list[float]]] = {}
    for a in held:
        per_arch[a.label] = {}
        for ini in ("hypernet", "default", "random"):
            accs = np.array([[r["acc"][k] for k in ks] for r in rows if r["arch"] == a.label and r["init"] == ini])
            per_arch[a.label][ini] = accs.mean(0).tolist()
    w = max(1, len(hist.loss) // 10)
    out: dict[str, Any] = {"hypernet": {
        "train_archs": [a.label for a in train], "held_out_archs": [a.label for a in held], "steps": steps,
        "train_seconds": train_s, "sgd_steps": list(ks), "seeds": list(seeds),
        "train_loss_first": float(np.mean(hist.loss[:w])), "train_loss_last": float(np.mean(hist.loss[-w:])),
        "accuracy": per_arch,
        "novelty": "The hypernetwork is trained on the task loss only and never reads a checkpoint, "
                   "so there is no training checkpoint it could copy",
    }}
    if zoo_dir is not None:
        log("generate: building digits_mlp32 (checkpoints for the generator; resumes if re-run)")
        zoo_obj = build_recipe_zoo("digits_mlp32", zoo_dir, members=12 if small else 32, progress=progress)
        cs = collect_checkpoints(zoo_obj, metric="test_acc")
        lo, hi = float(cs.metric.min()), float(cs.metric.max())
        cond = float(lo + 0.9 * (hi - lo))
        fsteps = 600 if small else 1500
        log(f"generate: checkpoint flow on {len(cs)} checkpoints ({fsteps} steps), sampling at test_acc={cond:.2f}")
        t0 = time.perf_counter()
        # No permutation augmentation here: on this 12-member zoo, 600 steps
        # with augmentation gave samples at 0.32 test accuracy (target 0.86),
        # without it 0.76 -- at 1.27x the between-runs distance from the
        # nearest training checkpoint, so not copies (the novelty report
        # below checks exactly that). analyses/generation compares both.
        flow, fhist = train_checkpoint_flow(cs, steps=fsteps, lr=1e-3, augment=False, seed=seed)
        ftrain_s = time.perf_counter() - t0
        n = 4 if small else 8
        sds = flow.generate(cs.arch, n, condition=cond, seed=seed)
        nr = novelty_report(sds, cs, data, conditions=[cond] * n, seed=seed)
        out["checkpoint_flow"] = {
            "arch": cs.arch.label, "checkpoints": len(cs), "steps": fsteps, "train_seconds": ftrain_s,
            "augment": False, "lr": 1e-3,
            "condition": cond, "samples": n, "summary": nr.summary, "reference": nr.reference,
            "alignment": nr.alignment,
            "rows": [{k: r[k] for k in ("accuracy", "ratio", "agreement", "copy", "near_copy")} for r in nr.rows],
        }
    return out


# ----------------------------------------------------------------- report
def _save_figure(fig: Any, stem: Path) -> list[str]:
    """Write ``stem.png`` and ``stem.svg``; return the file names."""
    paths = []
    for ext in ("png", "svg"):
        fig.savefig(f"{stem}.{ext}", dpi=120)
        paths.append(f"{stem.name}.{ext}")
    return paths


def _plot_barriers(merge: dict, stem: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.2))
    ax1, ax2 = fig.subplots(1, 2)
    for name in ("naive", "weight_matching", "weight_matching+repair"):
        p = merge[name]
        ax1.plot(p["lambdas"], p["loss"], marker="o", ms=3, label=name)
        ax2.plot(p["lambdas"], p["accuracy"], marker="o", ms=3, label=name)
    ax1.set(xlabel="λ", ylabel="test loss", title="loss along (1-λ)·A + λ·B")
    ax2.set(xlabel="λ", ylabel="test accuracy", title="accuracy")
    ax2.axhline(merge["ot_fusion"]["accuracy"], color="k", ls="--", lw=1, label="OT fusion")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return _save_figure(fig, stem)


def _plot_prediction(pred: dict, stem: Path) -> list[str]:
    from matplotlib.figure import Figure

    methods = [m for m in pred["y_pred"] if m != "mean"]
    fig = Figure(figsize=(3.2 * len(methods), 3.2))
    axes = fig.subplots(1, len(methods), squeeze=False)[0]
    for ax, m in zip(axes, methods):
        ax.scatter(pred["y_true"], pred["y_pred"][m], s=8, alpha=0.6)
        ax.plot([0, 1], [0, 1], color="k", lw=0.8)
        tau = pred["methods"][m]["kendall_tau"]["value"]
        ax.set(title=f"{m} (τ={tau:.2f})", xlabel="true test accuracy", ylabel="predicted")
    fig.tight_layout()
    return _save_figure(fig, stem)


def _plot_cka(sim: dict, stem: Path) -> list[str]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 3.5))
    ax = fig.subplots()
    im = ax.imshow(sim["cka"], vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(sim["cka_layers_b"])), sim["cka_layers_b"], rotation=90, fontsize=6)
    ax.set_yticks(range(len(sim["cka_layers_a"])), sim["cka_layers_a"], fontsize=6)
    ax.set(title="linear CKA, MLP seed 0 vs seed 1")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return _save_figure(fig, stem)


def _plot_generate(gen: dict, stem: Path) -> list[str]:
    from matplotlib.figure import Figure

    hn = gen["hypernet"]
    archs = list(hn["accuracy"])
    fig = Figure(figsize=(3.4 * len(archs), 3.0))
    axes = fig.subplots(1, len(archs), squeeze=False)[0]
    x = [k + 1 for k in hn["sgd_steps"]]
    for ax, arch in zip(axes, archs):
        for ini, accs in hn["accuracy"][arch].items():
            ax.plot(x, accs, marker="o", ms=3, label=ini)
        ax.set_xscale("log")
        ax.set(title=f"unseen: {arch}", xlabel="SGD steps + 1", ylabel="test accuracy", ylim=(0, 1))
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return _save_figure(fig, stem)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def run_quickstart(out: Path, small: bool = False, seed: int = 0, log: Log | None = None, progress: bool = False,
                   num_threads: int | None = 1) -> dict:
    """Run every step, write ``results.json``, figures and ``report.md``.

    ``small``: fewer architectures, a 16-member zoo and lighter models;
    the default builds a 48-member zoo and trains longer.
    ``num_threads``: torch intra-op threads in this process (default 1:
    every model here is small, and more threads oversubscribe a busy
    machine; zoo training uses worker processes instead). ``None`` leaves
    torch's setting alone.
    """
    with torch_threads(num_threads):
        return _run_quickstart(Path(out), small, seed, log, progress)


def _run_quickstart(out: Path, small: bool, seed: int, log: Log | None, progress: bool) -> dict:
    log = log or _noop
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    results: dict[str, Any] = {"small": small, "seed": seed}

    t = time.perf_counter()
    archs = ["mlp", "cnn_small", "resnet20", "vit_tiny", "token_transformer"] if small else None
    results["graphs"] = foundation_tour(archs, seed=seed, progress=log)
    timings["graphs"] = time.perf_counter() - t

    t = time.perf_counter()
    log("zoo: building digits_cnn_small (resumes if re-run)")
    z = build_digits_zoo(out / "zoo", members=16 if small else 48, progress=progress)
    df = z.to_pandas()
    results["zoo"] = {"path": str(out / "zoo"), "members": len(z),
                      "test_acc_min": float(df["test_acc"].min()), "test_acc_max": float(df["test_acc"].max())}
    log("zoo: building mnist1d_cnn1d (resumes if re-run)")
    z1 = build_recipe_zoo("mnist1d_cnn1d", out / "zoo_mnist1d", members=6 if small else 16, progress=progress)
    df1 = z1.to_pandas()
    results["zoo"]["mnist1d"] = {"path": str(out / "zoo_mnist1d"), "members": len(z1),
                                 "test_acc_min": float(df1["test_acc"].min()),
                                 "test_acc_max": float(df1["test_acc"].max())}
    timings["zoo"] = time.perf_counter() - t

    t = time.perf_counter()
    methods = ["gbm", "linear", "statnn"] if small else ["gbm", "linear", "statnn", "gmn"]
    results["predict"] = predict_performance(z, methods, seed=seed, epochs=60 if small else 150, log=log)
    timings["predict"] = time.perf_counter() - t

    t = time.perf_counter()
    log("merge: training two MLPs on digits")
    models, train, test = train_pair(width=64 if small else 128, epochs=20 if small else 40)
    results["merge"] = merge_pair(models, train, test, num_lambdas=11 if small else 25, seed=seed)
    timings["merge"] = time.perf_counter() - t

    t = time.perf_counter()
    log("similarity: CKA before/after alignment")
    results["similarity"] = similarity_pair(models, test, results["merge"]["perm"])
    timings["similarity"] = time.perf_counter() - t

    t = time.perf_counter()
    results["generate"] = generate_tour(small, seed=seed, log=log, zoo_dir=out / "zoo_mlp", progress=progress)
    timings["generate"] = time.perf_counter() - t
    results["seconds"] = timings

    figures = {
        "merge": _plot_barriers(results["merge"], out / "barriers"),
        "predict": _plot_prediction(results["predict"], out / "prediction"),
        "similarity": _plot_cka(results["similarity"], out / "cka"),
        "generate": _plot_generate(results["generate"], out / "generate"),
    }
    results["figures"] = figures
    (out / "results.json").write_text(json.dumps(_finite(results), indent=2))
    (out / "report.md").write_text(render_report(results))
    return results


def render_report(r: dict) -> str:
    """Markdown report of :func:`run_quickstart` results."""
    L = ["# weightspace quickstart", ""]
    L += ["## 1. Parameter graphs and permutation symmetries", "",
          "| arch | params | groups | heads | nodes | edges | build s | diff (spec perm) | diff (broken perm) |",
          "|---|---|---|---|---|---|---|---|---|"]
    for g in r["graphs"]:
        L.append(f"| {g['arch']} | {g['parameters']} | {g['groups']} | {g['head_groups']} | {g['nodes']} | {g['edges']} | "
                 f"{g['build_seconds']:.3f} | {g['max_abs_diff_permuted']:.1e} | {g['max_abs_diff_broken']:.1e} |")
    z = r["zoo"]
    L += ["", "## 2. Model zoo", "",
          f"{z['members']} `cnn_small` networks on digits at `{z['path']}`; test accuracy "
          f"{z['test_acc_min']:.2f} – {z['test_acc_max']:.2f}.", ""]
    if "mnist1d" in z:
        m1 = z["mnist1d"]
        L += [f"{m1['members']} `cnn1d` networks (varied width, depth, kernel) on MNIST-1D at `{m1['path']}`; "
              f"test accuracy {m1['test_acc_min']:.2f} – {m1['test_acc_max']:.2f}.", ""]
    p = r["predict"]
    L += ["## 3. Predicting test accuracy from weights", "",
          f"{p['samples']} checkpoints; held-out members: {p['test']} checkpoints. 95% bootstrap CIs over members.", "",
          "| method | Kendall τ | R² | seconds |", "|---|---|---|---|"]
    for m, v in p["methods"].items():
        tau, r2 = v["kendall_tau"], v["r2"]
        L.append(f"| {m} | {tau['value']:.3f} [{tau['low']:.3f}, {tau['high']:.3f}] | "
                 f"{r2['value']:.3f} [{r2['low']:.3f}, {r2['high']:.3f}] | {v['seconds']:.1f} |")
    L += ["", "![prediction](prediction.png)", ""]
    mg = r["merge"]
    L += ["## 4. Merging two independently trained MLPs", "",
          "| method | loss barrier | error barrier | midpoint accuracy |", "|---|---|---|---|"]
    for name in ("naive", "weight_matching", "weight_matching+repair"):
        pth = mg[name]
        mid = min(range(len(pth["lambdas"])), key=lambda i: abs(pth["lambdas"][i] - 0.5))
        L.append(f"| {name} | {pth['loss_barrier']:.3f} | {pth['error_barrier']:.3f} | {pth['accuracy'][mid]:.3f} |")
    L.append(f"| OT fusion (exact) | – | – | {mg['ot_fusion']['accuracy']:.3f} |")
    L += ["", f"Weight matching: {mg['weight_matching_sweeps']} sweeps, {mg['weight_matching_seconds']:.2f} s.", "",
          "![barriers](barriers.png)", ""]
    s = r["similarity"]
    L += ["## 5. Representation similarity", "",
          "Linear CKA is invariant to neuron permutations, so alignment leaves it unchanged; the correlation of "
          "same-index neurons is what alignment raises.", "",
          "| layer | same-index corr. before | after |", "|---|---|---|"]
    for layer, v in s["same_index_correlation"]["before"].items():
        L.append(f"| {layer} | {v:.3f} | {s['same_index_correlation']['after'][layer]:.3f} |")
    L += ["", "![cka](cka.png)", ""]
    gen = r.get("generate", {})
    L += ["## 6. Generating weights", ""]
    hn = gen.get("hypernet")
    if hn:
        ks = hn["sgd_steps"]
        L += [f"A graph hypernetwork trained for {hn['steps']} steps ({hn['train_seconds']:.0f} s) on "
              f"{', '.join(hn['train_archs'])} (task loss {hn['train_loss_first']:.3f} → {hn['train_loss_last']:.3f}) "
              "predicts all weights of architectures it never saw. Test accuracy after k SGD steps "
              f"(mean over seeds {hn['seeds']}):", "",
              "| architecture (unseen) | init | " + " | ".join(f"k={k}" for k in ks) + " |",
              "|---|---|" + "---|" * len(ks)]
        for arch, inits in hn["accuracy"].items():
            for ini, accs in inits.items():
                L.append(f"| {arch} | {ini} | " + " | ".join(f"{a:.3f}" for a in accs) + " |")
        L += ["", "`default` = PyTorch's default init; `random` = the untrained hypernetwork (random weights with "
              "the same per-layer scaling). " + hn["novelty"] + ".", "", "![generate](generate.png)", ""]
    cf = gen.get("checkpoint_flow")
    if cf:
        sm, ref = cf["summary"], cf["reference"]
        L += [f"A conditional flow trained on the {cf['checkpoints']} `{cf['arch']}` checkpoints of a `digits_mlp32` "
              f"zoo ({cf['steps']} steps, {'with' if cf.get('augment') else 'no'} permutation augmentation, "
              f"{cf['train_seconds']:.0f} s) sampled {cf['samples']} networks for "
              f"test accuracy {cf['condition']:.3f}: mean accuracy {sm.get('accuracy_mean', float('nan')):.3f}.", "",
              f"Novelty ({cf['alignment']} alignment): median distance to the nearest training checkpoint is "
              f"{sm['ratio_median']:.2f}× the median distance between two training runs "
              f"({ref['between_runs_median']:.3g}); {sm['copies']} exact copies, {sm['near_copies']} near copies, "
              f"agreement with the nearest checkpoint's predictions {sm.get('agreement_mean', float('nan')):.3f}.", ""]
        th = sm.get("thresholds")
        if th:
            L += [f"Distances are relative to the networks' scale (`{th['rel_distance']}`; about 1.41 for two "
                  f"independent networks). A sample is a copy when `{th['copy']}`, a near copy when "
                  f"`{th['near_copy']}`.", ""]
    if not gen:
        L.append("Not run.")
    L += ["", "## Time", "", " · ".join(f"{k} {v:.0f} s" for k, v in r["seconds"].items()), ""]
    return "\n".join(L)
