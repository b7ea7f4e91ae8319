"""Wall time of weight matching (Git Re-Basin) on ResNet-20x4 and ResNet-18
pairs (random init) and on trained pairs (MLP 64-512x3-10 and ResNet-20x2 on
sklearn digits, trained once and cached in the temp dir); LAP time vs cost-matrix build time per permutation group; and, when it
can be imported, the ``rebasin`` PyPI package on the same pairs.

Both tools solve the same problem (coordinate descent over permutation
groups maximising ``sum <W_a, P(W_b)>``), so besides the wall time each run
reports the objective it reached (higher is better; computed with
``weightspace.merge.match_objective`` on the returned weights) and whether it
recovers a planted permutation exactly.

``rebasin`` 0.0.47 runs in its own environment; its child process appends
this environment's site-packages to ``sys.path`` (after rebasin's own) to
build the models::

    python3.11 -m venv /work/venvs/rebasin
    /work/venvs/rebasin/bin/pip install rebasin==0.0.47 "torch==2.13.*"
    python benchmarks/bench_merge.py --rebasin-python /work/venvs/rebasin/bin/python

Ours and rebasin run back to back, in alternation (``--repeats`` each);
both wall and CPU time (``time.process_time``: this process for ours, the
rebasin child's own for rebasin) are recorded with the load average before
each run: the machine is shared.

Prints a table and writes ``benchmarks/results/merge.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import weightspace as ws  # noqa: E402
import zoo  # noqa: E402
from weightspace.io import load_state_dict, save_state_dict  # noqa: E402
from weightspace.merge import match_objective, weight_matching  # noqa: E402
from weightspace.symmetry import apply_permutation, random_permutation  # noqa: E402

PAIRS = {
    "resnet20x4": ("resnet20", {"width": 4}),
    "resnet18": ("resnet18", {"num_classes": 1000, "image_size": 64}),
    "mlp512-digits": ("mlp", {"hidden": [512, 512, 512]}),
    "resnet20x2-digits": ("resnet20", {"width": 2, "in_channels": 1, "image_size": 8}),
}
#: pairs trained on a dataset (seeds 1 and 2, ``analyses.merging.run.train``): label -> (dataset, epochs);
#: the others are random inits with perturbed biases and BatchNorm statistics
TRAINED = {"mlp512-digits": ("digits", 30), "resnet20x2-digits": ("digits", 15)}
CACHE = Path(tempfile.gettempdir()) / "ws_bench_merge"


def trained_pair(label: str) -> tuple[dict, dict]:
    """The two trained state dicts of ``label`` (cached under the temp dir)."""
    arch, kw = PAIRS[label]
    data, epochs = TRAINED[label]
    paths = [CACHE / f"{label}-seed{s}.safetensors" for s in (1, 2)]
    if not all(p.is_file() for p in paths):
        from analyses.merging.run import load, train

        xtr, ytr, _, _ = load(data)
        CACHE.mkdir(parents=True, exist_ok=True)
        for seed, p in zip((1, 2), paths):
            save_state_dict(train(arch, kw, seed, xtr, ytr, epochs)[1], str(p))
    return load_state_dict(str(paths[0])), load_state_dict(str(paths[1]))

_REBASIN_SCRIPT = r"""
import json, os, sys, time
sys.path.append(os.environ["WS_SITE_PACKAGES"])  # this environment's packages, after rebasin's own
import torch, zoo
torch.set_num_threads(int(sys.argv[5]))
from rebasin import PermutationCoordinateDescent
from weightspace.io import load_state_dict, save_state_dict
arch, kw, pa, pb = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
a = zoo.create_model(arch, **kw).eval(); a.load_state_dict(load_state_dict(pa))
b = zoo.create_model(arch, **kw).eval(); b.load_state_dict(load_state_dict(pb))
x = zoo.example_input(arch, batch_size=2, **kw)
t0, c0 = time.perf_counter(), time.process_time()
pcd = PermutationCoordinateDescent(a, b, x)
t1, c1 = time.perf_counter(), time.process_time()
pcd.rebasin()
t2, c2 = time.perf_counter(), time.process_time()
save_state_dict(b.state_dict(), pb + ".rebasin.safetensors")
print(json.dumps({"init_s": t1 - t0, "match_s": t2 - t1, "init_cpu_s": c1 - c0, "match_cpu_s": c2 - c1}))
"""


def perturb(sd: dict, seed: int) -> dict:
    """Random BN statistics / biases so every tensor carries the neuron order."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in sd.items():
        if not v.is_floating_point():
            out[k] = v
        elif k.endswith("running_var"):
            out[k] = 0.5 + torch.rand(v.shape, generator=g)
        elif v.dim() == 1:
            out[k] = v + 0.1 * torch.randn(v.shape, generator=g)
        else:
            out[k] = v
    return out


def run_rebasin(python: str, arch: str, kw: dict, sd_a: dict, sd_b: dict, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        pa, pb = os.path.join(d, "a.safetensors"), os.path.join(d, "b.safetensors")
        save_state_dict(sd_a, pa)
        save_state_dict(sd_b, pb)
        import sysconfig

        env = dict(os.environ, PYTHONPATH=str(ROOT), WS_SITE_PACKAGES=sysconfig.get_paths()["purelib"])
        load = os.getloadavg()
        proc = subprocess.run(
            [python, "-c", _REBASIN_SCRIPT, arch, json.dumps(kw), pa, pb, str(threads)],
            capture_output=True, text=True, env=env, timeout=3600,
        )
        if proc.returncode != 0:
            return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        out["load_avg_before"] = load
        out["state_dict"] = load_state_dict(pb + ".rebasin.safetensors")
        return out


def bench_pair(label: str, repeats: int, rebasin_python: str | None, threads: int, seed: int,
               options: dict | None = None) -> dict:
    arch, kw = PAIRS[label]
    t0 = time.perf_counter()
    spec = ws.permutation_spec(arch, **kw)
    spec_s = time.perf_counter() - t0
    if label in TRAINED:
        sd_a, sd_b = trained_pair(label)
    else:
        sd_a = perturb(zoo.create_model(arch, seed=1, **kw).state_dict(), 11)
        sd_b = perturb(zoo.create_model(arch, seed=2, **kw).state_dict(), 12)
    planted = apply_permutation(sd_a, spec, random_permutation(spec, seed=seed))
    res: dict = {"pair": label, "arch": arch, "arch_kwargs": kw, "trained": TRAINED.get(label), "groups": len(spec),
                 "spec_s": spec_s,
                 "parameters": sum(v.numel() for v in sd_a.values())}
    times, cpus, loads, last = [], [], [], None
    rb_runs: list[dict] = []
    for r in range(repeats):  # ours and rebasin back to back, in alternation
        loads.append(os.getloadavg())
        t, c = time.perf_counter(), time.process_time()
        last = weight_matching(sd_a, sd_b, spec, seed=seed + r, **(options or {}))
        times.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
        if rebasin_python:
            rb_runs.append(run_rebasin(rebasin_python, arch, kw, sd_a, sd_b, threads))
    res["ours"] = {
        "wall_s_median": statistics.median(times), "wall_s": times, "cpu_s_median": statistics.median(cpus),
        "cpu_s": cpus, "load_avg_before": loads, "options": options or {}, "sweeps": last.sweeps,
        "objective": last.objective, "build_s": last.info["timing"]["build_s"],
        "lap_s": last.info["timing"]["lap_s"], "steps": last.info["timing"]["steps"],
        "stop": last.info["stop"], "objective_per_sweep": [h["objective"] for h in last.info["history"]],
        "per_group": last.info["per_group"],
    }
    t = time.perf_counter()
    rec = weight_matching(sd_a, planted, spec, seed=seed, **(options or {}))
    res["ours"]["planted_s"] = time.perf_counter() - t
    back = rec.apply(planted)
    res["ours"]["planted_exact"] = all(torch.equal(back[k], sd_a[k]) for k in sd_a)
    res["identity_objective"] = match_objective(sd_a, sd_b, spec)
    if rebasin_python:
        bad = [rb for rb in rb_runs if "error" in rb]
        if bad:
            res["rebasin"] = {"error": bad[0]["error"]}
        else:
            rb_sd = rb_runs[-1].pop("state_dict")
            for rb in rb_runs:
                rb.pop("state_dict", None)
            rb = {"match_s_median": statistics.median(x["match_s"] for x in rb_runs),
                  "match_cpu_s_median": statistics.median(x["match_cpu_s"] for x in rb_runs),
                  "init_s_median": statistics.median(x["init_s"] for x in rb_runs), "runs": rb_runs}
            rb["match_s"], rb["init_s"] = rb["match_s_median"], rb["init_s_median"]
            rb["objective"] = match_objective(sd_a, rb_sd, spec)
            rb["wall_s"] = rb["init_s"] + rb["match_s"]
            rbp = run_rebasin(rebasin_python, arch, kw, sd_a, planted, threads)
            if "error" not in rbp:
                psd = rbp.pop("state_dict")
                rb["planted_exact"] = all(torch.equal(psd[k], sd_a[k]) for k in sd_a if psd[k].is_floating_point())
                rb["planted_max_abs_diff"] = max(
                    float((psd[k].double() - sd_a[k].double()).abs().max()) for k in sd_a if sd_a[k].is_floating_point()
                )
            res["rebasin"] = rb
            res["speedup_match_only"] = rb["match_s"] / res["ours"]["wall_s_median"]
            res["speedup_match_only_cpu"] = rb["match_cpu_s_median"] / res["ours"]["cpu_s_median"]
            res["speedup_with_setup"] = rb["wall_s"] / (res["ours"]["wall_s_median"] + spec_s)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both tools")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pairs", nargs="*", default=list(PAIRS))
    ap.add_argument("--rebasin-python", default=None, help="interpreter that can `import rebasin` (see module doc)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "merge.json")
    ap.add_argument("--options", default="{}", help="JSON keyword arguments of weight_matching (ours)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rebasin_python = args.rebasin_python
    rebasin_note = None
    if rebasin_python is None:
        try:
            import rebasin  # noqa: F401

            rebasin_python = sys.executable
        except ImportError as exc:
            rebasin_note = f"rebasin not importable here ({exc}); pass --rebasin-python"
    if rebasin_python is not None and not Path(rebasin_python).exists():
        raise SystemExit(f"--rebasin-python {rebasin_python}: no such interpreter; build it as the module docstring says")
    results = [bench_pair(p, args.repeats, rebasin_python, args.threads, args.seed, json.loads(args.options))
               for p in args.pairs]
    print(f"{'pair':12s} {'groups':>6s} {'spec s':>7s} {'WM s':>7s} {'build s':>8s} {'LAP s':>7s} {'sweeps':>6s} "
          f"{'objective':>11s} {'planted':>7s} | {'rebasin s':>9s} {'objective':>11s} {'planted':>7s} {'speedup wall/cpu':>16s}")
    for r in results:
        o, rb = r["ours"], r.get("rebasin", {})
        rb_s = f"{rb['match_s']:9.2f}" if "match_s" in rb else f"{'-':>9s}"
        rb_o = f"{rb['objective']:11.2f}" if "objective" in rb else f"{'-':>11s}"
        rb_p = str(rb.get("planted_exact", "-"))
        sp = (f"{r['speedup_match_only']:.1f}/{r['speedup_match_only_cpu']:.1f}"
              if "speedup_match_only" in r else "-")
        print(f"{r['pair']:12s} {r['groups']:6d} {r['spec_s']:7.2f} {o['wall_s_median']:7.2f} {o['build_s']:8.2f} "
              f"{o['lap_s']:7.3f} {o['sweeps']:6d} {o['objective']:11.2f} {str(o['planted_exact']):>7s} | "
              f"{rb_s} {rb_o} {rb_p:>7s} {sp:>16s}")
    for r in results:
        print(f"\n{r['pair']}: per group (build s / LAP s / steps)")
        for g, t in r["ours"]["per_group"].items():
            print(f"  {g:28s} {t['build_s']:8.3f} {t['lap_s']:8.4f} {t['steps']:4d}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "torch": torch.__version__, "threads": args.threads, "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "load_avg": os.getloadavg(), "rebasin_note": rebasin_note,
        "results": results,
    }
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
