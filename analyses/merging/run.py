"""Linear mode connectivity modulo permutation on small digits / MNIST-1D networks.

For every setting, two networks are trained independently (same recipe,
seeds 1 and 2, plain seeded Adam loop), and the loss/accuracy along the
linear path ``(1 - lam) * a + lam * P(b)`` is measured on the held-out test
split for these alignments ``P``:

* ``naive``       -- no alignment,
* ``weight``      -- weight matching (Git Re-Basin Alg. 1),
* ``activation``  -- activation matching on the training inputs,
* ``ste``         -- straight-through-estimator matching (Alg. 2),
* ``ot``          -- OT fusion's exact transport (``ot.emd``, ground metric
  on weights; equal widths, so the plan is a permutation),

each without and with REPAIR at every lambda (REPAIR folds interpolated
neuron statistics into biased Linear/Conv layers and re-estimates BatchNorm
statistics; for ResNet-20, whose convolutions have no bias, that is the
BatchNorm reset). Barrier = max over lambda of the loss (error) minus the
line between the endpoints.

Settings: ``mlp``, ``cnn_small``, ``resnet20`` x1 and x4 on sklearn digits
(8x8, one channel: ``in_channels=1, image_size=8``), ``mlp`` on MNIST-1D
(40 inputs). Also: OT fusion of a wide and a narrow MLP into either width.

Writes ``results.json``, ``table.md`` and per-setting figures (PNG + SVG)
into ``--out``. ``--small`` trains fewer epochs on fewer settings with fewer
lambdas (a few minutes on 2 CPU cores).

Run: python analyses/merging/run.py [--out DIR] [--small] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import weightspace as ws
import zoo
from weightspace.merge import (
    activation_matching,
    linear_path,
    loss_and_accuracy,
    ot_fusion,
    ste_matching,
    weight_matching,
)

METHODS = ("naive", "weight", "activation", "ste", "ot")


def settings(small: bool) -> list[dict]:
    rn = {"in_channels": 1, "image_size": 8}
    full = [
        {"name": "mlp-digits", "arch": "mlp", "kw": {}, "data": "digits", "epochs": 30, "ste_steps": 300},
        {"name": "cnn_small-digits", "arch": "cnn_small", "kw": {}, "data": "digits", "epochs": 30, "ste_steps": 300},
        {"name": "resnet20x1-digits", "arch": "resnet20", "kw": dict(rn, width=1), "data": "digits", "epochs": 15, "ste_steps": 100},
        {"name": "resnet20x4-digits", "arch": "resnet20", "kw": dict(rn, width=4), "data": "digits", "epochs": 15, "ste_steps": 40,
         "num_lambdas": 13, "fit_n": 512},
        {"name": "mlp-mnist1d", "arch": "mlp", "kw": {"in_features": 40, "hidden": (128, 128)}, "data": "mnist1d", "epochs": 30, "ste_steps": 300},
    ]
    if not small:
        return full
    out = []
    for s in full[:3]:
        out.append(dict(s, epochs=max(5, s["epochs"] // 3), ste_steps=30))
    return out


def load(data: str):
    ds = zoo.load_dataset(data)
    xtr, ytr, xte, yte = ds.x_train.float(), ds.y_train.long(), ds.x_test.float(), ds.y_test.long()
    if data == "mnist1d":  # (N, 1, 40) -> flat for the MLP
        xtr, xte = xtr.flatten(1), xte.flatten(1)
    return xtr, ytr, xte, yte


def train(arch: str, kw: dict, seed: int, x, y, epochs: int, lr: float = 3e-3, batch_size: int = 64):
    """Adam + cross-entropy with seeded init and shuffling; returns (module, state_dict)."""
    model = zoo.create_model(arch, seed=seed, **kw)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * ((len(y) + batch_size - 1) // batch_size))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        idx = torch.randperm(len(y), generator=gen)
        for i in range(0, len(idx), batch_size):
            b = idx[i : i + batch_size]
            loss = torch.nn.functional.cross_entropy(model(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    return model, {k: v.detach().clone() for k, v in model.state_dict().items()}


def run_setting(s: dict, num_lambdas: int, seed: int) -> dict:
    num_lambdas = min(num_lambdas, s.get("num_lambdas", num_lambdas))
    xtr, ytr, xte, yte = load(s["data"])
    t0 = time.perf_counter()
    ma, sd_a = train(s["arch"], s["kw"], 1, xtr, ytr, s["epochs"])
    mb, sd_b = train(s["arch"], s["kw"], 2, xtr, ytr, s["epochs"])
    train_s = time.perf_counter() - t0
    spec = ws.permutation_spec(s["arch"], **s["kw"])
    fit = xtr[: s.get("fit_n", 1024)]  # inputs for activation matching and REPAIR
    aligned, align_s = {}, {}
    t = time.perf_counter()
    aligned["naive"] = sd_b
    align_s["naive"] = 0.0
    t = time.perf_counter()
    wm = weight_matching(sd_a, sd_b, spec, seed=seed)
    aligned["weight"], align_s["weight"] = wm.apply(sd_b), time.perf_counter() - t
    t = time.perf_counter()
    am = activation_matching(ma, mb, fit, spec)
    aligned["activation"], align_s["activation"] = am.apply(sd_b), time.perf_counter() - t
    t = time.perf_counter()
    st = ste_matching(ma, sd_a, sd_b, (xtr, ytr), spec, steps=s["ste_steps"], seed=seed)
    aligned["ste"], align_s["ste"] = st.apply(sd_b), time.perf_counter() - t
    t = time.perf_counter()
    fu = ot_fusion([sd_a, sd_b], spec, solver="emd")
    aligned["ot"], align_s["ot"] = fu.aligned[1], time.perf_counter() - t
    res = {
        "setting": s["name"], "arch": s["arch"], "arch_kwargs": s["kw"], "data": s["data"],
        "epochs": s["epochs"], "ste_steps": s["ste_steps"], "num_lambdas": num_lambdas, "train_s": train_s,
        "endpoints": {"a": loss_and_accuracy(ma, sd_a, (xte, yte)), "b": loss_and_accuracy(mb, sd_b, (xte, yte))},
        "align_s": align_s, "wm_sweeps": wm.sweeps,
        "same_perm_as_weight": {
            k: all(torch.equal(aligned[k][p], aligned["weight"][p]) for p in sd_b) for k in ("activation", "ste", "ot")
        },
        "paths": {},
    }
    for name in METHODS:
        for corr in (None, "repair"):
            t = time.perf_counter()
            p = linear_path(ma, sd_a, aligned[name], (xte, yte), num_lambdas=num_lambdas,
                            correction=corr, correction_data=fit, spec=spec)
            d = p.to_dict()
            d["seconds"] = time.perf_counter() - t
            res["paths"][f"{name}{'+repair' if corr else ''}"] = d
    return res


def hetero_fusion(seed: int, small: bool) -> dict:
    """OT fusion of a 64-64 and a 32-32 digits MLP into either width."""
    xtr, ytr, xte, yte = load("digits")
    epochs = 10 if small else 30
    wide = dict(hidden=(64, 64))
    narrow = dict(hidden=(32, 32))
    mw, sw = train("mlp", wide, 1, xtr, ytr, epochs)
    mn, sn = train("mlp", narrow, 2, xtr, ytr, epochs)
    specs = [ws.permutation_spec("mlp", **wide), ws.permutation_spec("mlp", **narrow)]
    out = {"wide": loss_and_accuracy(mw, sw, (xte, yte)), "narrow": loss_and_accuracy(mn, sn, (xte, yte))}
    for target, (m, kw) in enumerate(((mw, wide), (mn, narrow))):
        for solver in ("emd", "sinkhorn"):
            fu = ot_fusion([sw, sn], specs, target=target, solver=solver, reg=0.05, num_itermax=10000)
            key = f"fused_into_{'wide' if target == 0 else 'narrow'}_{solver}"
            out[key] = loss_and_accuracy(m, fu.state_dict, (xte, yte))
    return out


def plot(res: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = dict(zip(METHODS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for key, p in res["paths"].items():
        name = key.split("+")[0]
        style = "-" if "+repair" in key else "--"
        axes[0].plot(p["lambdas"], p["loss"], style, color=colors[name], label=key)
        axes[1].plot(p["lambdas"], p["accuracy"], style, color=colors[name], label=key)
    axes[0].set(xlabel="lambda", ylabel="test loss", title=f"{res['setting']}: loss")
    axes[1].set(xlabel="lambda", ylabel="test accuracy", title=f"{res['setting']}: accuracy")
    axes[0].set_yscale("log")
    axes[1].legend(fontsize=7, ncol=2)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    files = []
    for ext in ("png", "svg"):
        f = out / f"path_{res['setting']}.{ext}"
        fig.savefig(f, dpi=120)
        files.append(f.name)
    plt.close(fig)
    return files


def table(results: list[dict], hetero: dict) -> str:
    lines = [
        "| setting | endpoints acc | method | loss barrier | +REPAIR | error barrier | +REPAIR | midpoint acc | +REPAIR |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ea = f"{r['endpoints']['a'][1]:.3f} / {r['endpoints']['b'][1]:.3f}"
        for m in METHODS:
            p, q = r["paths"][m], r["paths"][m + "+repair"]
            mid = len(p["lambdas"]) // 2
            lines.append(
                f"| {r['setting']} | {ea} | {m} | {p['loss_barrier']:.3f} | {q['loss_barrier']:.3f} | "
                f"{p['error_barrier']:.3f} | {q['error_barrier']:.3f} | {p['accuracy'][mid]:.3f} | {q['accuracy'][mid]:.3f} |"
            )
    lines += ["", "OT fusion of a 64-64 and a 32-32 digits MLP (test accuracy):", ""]
    lines += ["| model | accuracy | loss |", "|---|---|---|"]
    for k, (loss, acc) in hetero.items():
        lines.append(f"| {k} | {acc:.3f} | {loss:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("analyses/merging/out"))
    ap.add_argument("--small", action="store_true", help="quick run: 3 settings, fewer epochs and lambdas")
    ap.add_argument("--seed", type=int, default=0, help="seed of the matchers (training seeds are 1 and 2)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest for these sizes)")
    ap.add_argument("--only", nargs="*", default=None, help="run only these setting names")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    num_lambdas = 11 if args.small else 25
    results = []
    t0 = time.perf_counter()
    for s in settings(args.small):
        if args.only and s["name"] not in args.only:
            continue
        t = time.perf_counter()
        r = run_setting(s, num_lambdas, args.seed)
        r["figures"] = plot(r, args.out)
        r["seconds"] = time.perf_counter() - t
        results.append(r)
        summary = "  ".join(
            f"{m}: {r['paths'][m]['loss_barrier']:.3f}/{r['paths'][m + '+repair']['loss_barrier']:.3f}" for m in METHODS
        )
        print(f"{s['name']:20s} ({r['seconds']:.0f}s) loss barrier (plain/+REPAIR)  {summary}", flush=True)
    hetero = hetero_fusion(args.seed, args.small)
    payload = {
        "small": args.small, "num_lambdas": num_lambdas, "seed": args.seed, "threads": args.threads,
        "torch": torch.__version__, "platform": platform.platform(), "seconds": time.perf_counter() - t0,
        "results": results, "hetero_fusion": hetero,
    }
    (args.out / "results.json").write_text(json.dumps(payload, indent=2))
    (args.out / "table.md").write_text(table(results, hetero))
    print(table(results, hetero))
    print(f"wrote {args.out / 'results.json'}, {args.out / 'table.md'} and figures")


if __name__ == "__main__":
    main()
