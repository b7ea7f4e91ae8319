"""Weight generation study: graph hypernetwork inits, a zoo-trained
checkpoint generator with its novelty report, and Reptile SIREN inits.

1. **Graph hypernetwork** (``weightspace.generate.hypernet``): trained on
   MLPs / Small-CNNs / 1-d CNNs (/ ResNet-20) on sklearn digits, evaluated on
   held-out architectures (unseen widths, depths, a kernel size, an unseen
   family): test accuracy after k SGD steps from (a) the hypernetwork's
   prediction, (b) PyTorch's default init, (c) the untrained hypernetwork
   (= the He-scaled random draw with the same per-layer scaling).
2. **Checkpoint generator** (``weightspace.generate.checkpoint_flow``):
   a zoo of 1-hidden-layer MLPs on digits (several checkpoints per run),
   flow matching conditioned on test accuracy, with and without permutation
   augmentation; for a grid of target accuracies: achieved accuracy and the
   novelty report (aligned distance to the nearest training checkpoint,
   prediction agreement, copy flags). A control feeds permuted training
   checkpoints to the novelty report (they must be flagged).
3. **Learned INR inits** (``weightspace.generate.inr_init``): Reptile on
   digit images and on sample-photo crops; PSNR after k Adam steps on
   held-out signals vs the standard SIREN init (and across families).

Writes ``hypernet_*.png/svg``, ``flow_*.png/svg``, ``inr_*.png/svg``,
``<part>.json`` per part, ``results.json`` (all parts found in ``--out``)
and ``table.md`` to ``--out``; parts may run in separate processes.

Run: python analyses/generation/run.py [--out DIR] [--small] [--parts hypernet,flow,inr]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

STEPS_CURVE = (0, 1, 2, 5, 10, 20, 50)
TABLE_K = (0, 1, 5, 50)


def _save(fig, out: Path, name: str) -> list[str]:
    paths = []
    for ext in ("png", "svg"):
        p = out / f"{name}.{ext}"
        fig.savefig(p, dpi=130, bbox_inches="tight")
        paths.append(p.name)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths


# ----------------------------------------------------------------- hypernet
def run_hypernet(out: Path, small: bool, seed: int, log) -> dict:
    import matplotlib.pyplot as plt

    from weightspace.generate import compare_inits, default_archs, load_task, train_hypernet

    data = load_task("digits")
    train, held = default_archs(small=small)
    steps = 300 if small else 1500
    seeds = (0,) if small else (0, 1, 2)
    t0 = time.time()
    log(f"hypernet: training on {len(train)} architectures for {steps} steps")
    hn, hist = train_hypernet(train, data, steps=steps, archs_per_step=4, seed=seed, progress=True)
    train_s = time.time() - t0
    hn.save(out / "hypernet.safetensors", metadata={"steps": steps, "train_archs": [a.label for a in train]})
    log(f"hypernet: trained in {train_s:.0f}s; evaluating {len(held)} held-out architectures")
    seen = [train[1], train[7]]  # two training architectures, for reference
    rows = compare_inits(hn, held + seen, data, steps=STEPS_CURVE, seeds=seeds, progress=True)
    for r in rows:
        r["held_out"] = r["arch"] in {a.label for a in held}

    # aggregate
    inits = ("hypernet", "default", "random")
    labels = [a.label for a in held + seen]
    agg = {}
    for lab in labels:
        agg[lab] = {}
        for ini in inits:
            accs = np.array([[r["acc"][k] for k in STEPS_CURVE] for r in rows if r["arch"] == lab and r["init"] == ini])
            agg[lab][ini] = {"mean": accs.mean(0).tolist(), "std": accs.std(0).tolist()}
    held_mean = {ini: np.mean([agg[a.label][ini]["mean"] for a in held], axis=0).tolist() for ini in inits}

    # figures: training curve, per-arch curves
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    w = max(1, steps // 50)
    sm = lambda v: np.convolve(v, np.ones(w) / w, mode="valid")  # noqa: E731
    ax[0].plot(sm(hist.loss))
    ax[0].set(xlabel="step", ylabel="task loss (batch)", title="hypernetwork training")
    ax[1].plot(sm(hist.acc))
    ax[1].set(xlabel="step", ylabel="accuracy (batch)", title="predicted networks, training archs")
    figs = _save(fig, out, "hypernet_training")
    n = len(labels)
    cols = 4
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(3.2 * cols, 2.6 * math.ceil(n / cols)), squeeze=False)
    colors = {"hypernet": "C0", "default": "C1", "random": "C2"}
    for ax_, lab in zip(axes.flat, labels):
        for ini in inits:
            m, s = np.array(agg[lab][ini]["mean"]), np.array(agg[lab][ini]["std"])
            x = np.array(STEPS_CURVE) + 1
            ax_.plot(x, m, marker="o", ms=3, color=colors[ini], label=ini)
            ax_.fill_between(x, m - s, m + s, color=colors[ini], alpha=0.15)
        ax_.set_xscale("log")
        ax_.set_title(("" if lab in {a.label for a in held} else "[seen] ") + lab, fontsize=7)
        ax_.set_ylim(0, 1)
        ax_.set_xlabel("SGD steps + 1", fontsize=7)
    for ax_ in list(axes.flat)[n:]:
        ax_.axis("off")
    axes.flat[0].legend(fontsize=7)
    figs += _save(fig, out, "hypernet_curves")
    return {
        "train_archs": [a.label for a in train],
        "held_out_archs": [a.label for a in held],
        "steps": steps,
        "train_seconds": train_s,
        "history": {"loss": hist.loss, "acc": hist.acc},
        "curve_steps": list(STEPS_CURVE),
        "per_arch": agg,
        "held_out_mean": held_mean,
        "rows": rows,
        "figures": figs,
        "sgd": {"lr": 0.05, "momentum": 0.9, "batch_size": 64},
    }


# ----------------------------------------------------------------- flow
def run_flow(out: Path, small: bool, seed: int, log) -> dict:
    import matplotlib.pyplot as plt

    import zoo
    from weightspace.generate import collect_checkpoints, load_task, novelty_report, train_checkpoint_flow
    from weightspace.symmetry import apply_permutation, random_permutation

    n_members = 16 if small else 48
    steps = 600 if small else 3000
    n_samples = 8 if small else 16
    zoo_dir = out / f"zoo_mlp32_{n_members}"
    rep = zoo.build_zoo(zoo.load_recipe("digits_mlp32").with_members(n_members), zoo_dir, workers=1, backend="serial", progress=False)
    z = rep.open()
    cs = collect_checkpoints(z, metric="test_acc")
    data = load_task("digits", split_seed=0)
    lo, hi = float(cs.metric.min()), float(cs.metric.max())
    log(f"flow: {len(cs)} checkpoints from {len(z)} runs, test_acc in [{lo:.3f}, {hi:.3f}]")
    conds = [c for c in (0.2, 0.4, 0.6, 0.8, 0.9, hi - 0.005) if lo <= c <= hi]

    # control: permuted training checkpoints must be flagged as copies
    spec = cs.arch.template().spec
    ctrl_idx = list(range(0, len(cs), max(1, len(cs) // 4)))[:4]
    ctrl = [apply_permutation(cs.state_dict(i), spec, random_permutation(spec, seed=i)) for i in ctrl_idx]
    ctrl_rep = novelty_report(ctrl, cs, data, seed=seed)

    variants = {}
    for augment in (True, False):
        name = "augmented" if augment else "no_augmentation"
        t0 = time.time()
        model, hist = train_checkpoint_flow(cs, steps=steps, augment=augment, seed=seed, progress=True)
        train_s = time.time() - t0
        model.save(out / f"flow_{name}.safetensors")
        per_cond = []
        for c in conds:
            sds = model.generate(cs.arch, n_samples, condition=c, seed=seed)
            nr = novelty_report(sds, cs, data, conditions=[c] * n_samples, seed=seed)
            per_cond.append({"condition": c, "summary": nr.summary, "reference": nr.reference,
                             "rows": nr.rows, "alignment": nr.alignment})
            log(f"flow[{name}] condition {c:.3f}: acc {nr.summary['accuracy_mean']:.3f}, "
                f"ratio {nr.summary['ratio_median']:.2f}, copies {nr.summary['copies']}")
        variants[name] = {"train_seconds": train_s, "loss": hist.loss, "per_condition": per_cond}

    # training-set reference: accuracy of the checkpoints nearest each condition
    fig, ax = plt.subplots(1, 3, figsize=(12, 3.4))
    for name, col in (("augmented", "C0"), ("no_augmentation", "C3")):
        pc = variants[name]["per_condition"]
        x = [p["condition"] for p in pc]
        accs = [[r["accuracy"] for r in p["rows"]] for p in pc]
        ax[0].errorbar(x, [np.mean(a) for a in accs], yerr=[np.std(a) for a in accs], marker="o", color=col,
                       label=name, capsize=2)
        ratios = [[r["ratio"] for r in p["rows"]] for p in pc]
        ax[1].errorbar(x, [np.median(r) for r in ratios], yerr=[np.std(r) for r in ratios], marker="o", color=col,
                       label=name, capsize=2)
        agree = [[r["agreement"] for r in p["rows"]] for p in pc]
        ax[2].plot(x, [np.mean(a) for a in agree], marker="o", color=col, label=name)
        w = max(1, steps // 50)
        ax[2].set_title("")
    ax[0].plot([0, 1], [0, 1], "k:", lw=0.8)
    ax[0].set(xlim=(0, 1), ylim=(0, 1), xlabel="target test accuracy", ylabel="achieved test accuracy",
              title="conditioning")
    ax[0].scatter(cs.metric.numpy(), cs.metric.numpy() * 0 + 0.02, marker="|", color="grey", s=30,
                  label="training ckpts")
    ax[0].legend(fontsize=7)
    ax[1].axhline(1.0, color="k", ls=":", lw=0.8)
    ax[1].set(xlabel="target test accuracy", ylabel="aligned NN distance / between-runs",
              title="novelty (1 = as far as two runs)")
    ax[2].set(xlabel="target test accuracy", ylabel="agreement with nearest ckpt", ylim=(0, 1),
              title="prediction agreement")
    figs = _save(fig, out, "flow_generation")
    fig, ax = plt.subplots(figsize=(4.5, 3))
    for name, col in (("augmented", "C0"), ("no_augmentation", "C3")):
        loss = np.array(variants[name]["loss"])
        w = max(1, len(loss) // 50)
        ax.plot(np.convolve(loss, np.ones(w) / w, mode="valid"), color=col, label=name)
    ax.set(xlabel="step", ylabel="flow-matching loss", title="generator training")
    ax.legend(fontsize=7)
    figs += _save(fig, out, "flow_training")
    return {
        "zoo": {"path": str(zoo_dir), "members": len(z), "checkpoints": len(cs), "epochs": sorted(set(cs.epochs)),
                "test_acc_range": [lo, hi], "arch": cs.arch.label},
        "steps": steps, "samples_per_condition": n_samples, "conditions": conds,
        "variants": variants,
        "copy_control": {"indices": ctrl_idx, "flagged": [r["copy"] for r in ctrl_rep.rows],
                         "distances": [r["distance"] for r in ctrl_rep.rows], "alignment": ctrl_rep.alignment},
        "figures": figs,
    }


# ----------------------------------------------------------------- inr
def run_inr(out: Path, small: bool, seed: int, log) -> dict:
    import matplotlib.pyplot as plt

    from weightspace.generate import ArchSpec, fit_curve, load_signals, reptile

    ks = (0, 1, 2, 5, 10, 25, 50, 100)
    outer = 100 if small else 600
    n_train, n_test = (64, 16) if small else (300, 64)
    fams = {
        "digits": (load_signals("digits", range(0, n_train)), load_signals("digits", range(1000, 1000 + n_test))),
        "sample_crops": (load_signals("sample_crops", range(0, n_train)),
                         load_signals("sample_crops", range(1000, 1000 + n_test))),
    }
    std = ArchSpec.of("siren").module(seed=seed).state_dict()
    res: dict = {"ks": list(ks), "outer_steps": outer, "inner_steps": 10, "inner_lr": 1e-3, "families": {}}
    metas = {}
    for fam, (tr, te) in fams.items():
        t0 = time.time()
        theta, hist = reptile(tr, outer_steps=outer, inner_steps=10, meta_batch=8, seed=seed, progress=True)
        metas[fam] = theta
        res["families"][fam] = {"train_signals": len(tr), "test_signals": len(te), "grid": list(te.shape),
                                "reptile_seconds": time.time() - t0, "inner_psnr": hist.inner_psnr}
        log(f"inr[{fam}]: Reptile {outer} steps in {time.time() - t0:.0f}s")
    for fam, (tr, te) in fams.items():
        curves = {"standard": fit_curve(std, te, ks=ks)}
        for src, theta in metas.items():
            curves[f"meta_{src}"] = fit_curve(theta, te, ks=ks)
        res["families"][fam]["psnr"] = {name: {"mean": [float(c[k].mean()) for k in ks],
                                               "std": [float(c[k].std()) for k in ks]} for name, c in curves.items()}
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.3))
    for ax, fam in zip(axes, fams):
        for name, d in res["families"][fam]["psnr"].items():
            m, s = np.array(d["mean"]), np.array(d["std"])
            x = np.array(ks) + 1
            ax.plot(x, m, marker="o", ms=3, label=name)
            ax.fill_between(x, m - s, m + s, alpha=0.15)
        ax.set_xscale("log")
        ax.set(xlabel="Adam steps + 1", ylabel="PSNR (dB)", title=f"held-out {fam}")
        ax.legend(fontsize=7)
    res["figures"] = _save(fig, out, "inr_psnr")
    return res


# ----------------------------------------------------------------- table
def _table(results: dict) -> str:
    lines = ["# Weight generation study", ""]
    hn = results.get("hypernet")
    if hn:
        lines += ["## Graph hypernetwork: test accuracy after k SGD steps (mean over seeds)", "",
                  f"Trained {hn['steps']} steps on: {', '.join(hn['train_archs'])}.", "",
                  "| architecture | init | " + " | ".join(f"k={k}" for k in TABLE_K) + " |",
                  "|---|---|" + "---|" * len(TABLE_K)]
        idx = [hn["curve_steps"].index(k) for k in TABLE_K]
        for lab, d in hn["per_arch"].items():
            tag = "" if lab in hn["held_out_archs"] else " (seen)"
            for ini, v in d.items():
                lines.append(f"| {lab}{tag} | {ini} | " + " | ".join(f"{v['mean'][i]:.3f}" for i in idx) + " |")
        lines.append("| **held-out mean** | " + " | ".join([]) + "|" * 0)
        lines.pop()
        for ini, v in hn["held_out_mean"].items():
            lines.append(f"| **held-out mean** | {ini} | " + " | ".join(f"{v[i]:.3f}" for i in idx) + " |")
        lines.append("")
    fl = results.get("flow")
    if fl:
        lines += ["## Checkpoint generator (flow matching, conditioned on test accuracy)", "",
                  f"Zoo: {fl['zoo']['members']} runs x epochs {fl['zoo']['epochs']} = {fl['zoo']['checkpoints']} "
                  f"checkpoints of {fl['zoo']['arch']}, test_acc in [{fl['zoo']['test_acc_range'][0]:.3f}, "
                  f"{fl['zoo']['test_acc_range'][1]:.3f}].", "",
                  "| variant | target acc | achieved acc (mean) | aligned NN dist (median) | dist / between-runs | "
                  "agreement w/ NN | copies | near-copies |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, v in fl["variants"].items():
            for p in v["per_condition"]:
                s = p["summary"]
                lines.append(f"| {name} | {p['condition']:.3f} | {s['accuracy_mean']:.3f} | {s['distance_median']:.3f} | "
                             f"{s['ratio_median']:.2f} | {s['agreement_mean']:.3f} | {s['copies']}/{s['n']} | "
                             f"{s['near_copies']}/{s['n']} |")
        c = fl["copy_control"]
        lines += ["", f"Copy control (permuted training checkpoints): flagged {sum(c['flagged'])}/{len(c['flagged'])}, "
                  f"aligned distances {', '.join(f'{d:.2e}' for d in c['distances'])} ({c['alignment']}).", ""]
    inr = results.get("inr")
    if inr:
        lines += ["## SIREN inits: PSNR (dB) on held-out signals after k Adam steps (lr 1e-3)", "",
                  "| test family | init | " + " | ".join(f"k={k}" for k in inr["ks"]) + " |",
                  "|---|---|" + "---|" * len(inr["ks"])]
        for fam, d in inr["families"].items():
            for name, v in d["psnr"].items():
                lines.append(f"| {fam} | {name} | " + " | ".join(f"{m:.2f}" for m in v["mean"]) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/generation"))
    ap.add_argument("--small", action="store_true", help="minutes instead of an hour: fewer steps, archs, seeds")
    ap.add_argument("--parts", default="hypernet,flow,inr")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    parts = {"hypernet": run_hypernet, "flow": run_flow, "inr": run_inr}
    settings = {"small": args.small, "seed": args.seed, "torch": torch.__version__, "threads": args.threads}
    for name in args.parts.split(","):
        if name not in parts:
            raise SystemExit(f"unknown part {name!r}; choose from {sorted(parts)}")
        t0 = time.time()
        res = parts[name](args.out, args.small, args.seed, log)
        res["seconds"] = time.time() - t0
        res["settings"] = settings
        # one file per part, so parts can run in separate processes; results.json merges them
        (args.out / f"{name}.json").write_text(json.dumps(res, indent=1, default=float))
        log(f"{name} done in {time.time() - t0:.0f}s")
    results = {n: json.loads((args.out / f"{n}.json").read_text()) for n in parts if (args.out / f"{n}.json").exists()}
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    (args.out / "table.md").write_text(_table(results))
    print(_table(results))
    return results


if __name__ == "__main__":
    main()
