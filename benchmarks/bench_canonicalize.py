"""Networks per second of ``weightspace.symmetry.canonicalize`` (full group:
scale, sign, permutation).

For each case, ``N`` perturbed ``cnn_small`` networks (float32 state_dicts,
default init plus seeded noise) are canonicalized

* ``batched``: one call with ``batched=True`` on ``[N, ...]`` tensors (what a
  metanetwork pipeline does before training);
* ``loop``: one call per network.

Each case is timed ``--repeats`` times after one warm-up call (the per-spec
balancing plan is built then); the table shows the median. One torch thread.
Writes ``benchmarks/results/canonicalize.json`` with the 1/5/15-minute load
averages before and after (the machine is shared).

    python benchmarks/bench_canonicalize.py [--arch cnn_small] [--kw activation=tanh] [--n 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

import weightspace as ws
from weightspace.symmetry import canonicalize


def _nets(arch: str, kw: dict, n: int) -> list[dict[str, torch.Tensor]]:
    model = ws.arch.create_model(arch, seed=0, **kw)
    base = model.state_dict()
    g = torch.Generator().manual_seed(0)
    return [
        {k: v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in base.items()}
        for _ in range(n)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="cnn_small")
    ap.add_argument("--kw", nargs="*", default=[], help="architecture arguments key=value")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--loop-n", type=int, default=100, help="networks for the per-network loop")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "canonicalize.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    kw = {}
    for item in args.kw:
        k, v = item.split("=", 1)
        kw[k] = v
    spec = ws.permutation_spec(args.arch, **kw)
    nets = _nets(args.arch, kw, args.n)
    batch = {k: torch.stack([n[k] for n in nets]) for k in nets[0]}
    load0 = os.getloadavg()
    canonicalize(nets[0], spec)  # warm-up: the per-spec plan
    rows = []
    for case in ("batched", "loop"):
        times = []
        count = args.n if case == "batched" else min(args.loop_n, args.n)
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            if case == "batched":
                canonicalize(batch, spec, batched=True)
            else:
                for sd in nets[:count]:
                    canonicalize(sd, spec)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        rows.append({"case": case, "networks": count, "median_s": med, "networks_per_s": count / med,
                     "times_s": times})
    load1 = os.getloadavg()
    result = {
        "arch": args.arch,
        "arch_kwargs": kw,
        "scale_groups": sum(s.has_scale for s in spec.scalings),
        "sign_groups": sum(s.has_sign for s in spec.scalings),
        "threads": 1,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "load_average_1_5_15": {"before": list(load0), "after": list(load1)},
        "rows": rows,
    }
    print(f"canonicalize {args.arch} {kw or ''}  (load {load0[0]:.1f} -> {load1[0]:.1f})")
    print(f"{'case':<8} {'networks':>8} {'median s':>10} {'networks/s':>11}")
    for r in rows:
        print(f"{r['case']:<8} {r['networks']:>8} {r['median_s']:>10.3f} {r['networks_per_s']:>11.0f}")
    out = Path(args.out)
    old = json.loads(out.read_text()) if out.exists() else {}
    key = args.arch + "".join(f"-{k}{v}" for k, v in kw.items())
    old[key] = result
    from weightspace.io import atomic_write

    atomic_write(out, json.dumps(old, indent=2))


if __name__ == "__main__":
    main()
