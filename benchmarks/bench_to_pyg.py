"""Time and peak memory of ``ParameterGraph.to_pyg()`` vs GMN's builder.

For each architecture (default ResNet-18 and ResNet-50 at 224 x 224) and each
case, a fresh subprocess builds the parameter graph (not timed), then times

* ``to_pyg``: ``g.to_pyg()`` (the PyG ``Data``; default layout);
* ``to_pyg_padded``: ``g.to_pyg(padded=True)`` (the old ``[E, widest]``
  ``edge_attr`` / ``edge_mask``, only where that option exists);
* ``gmn_collate``: ``weightspace.nn.collate([g])`` (GMN's builder; until
  issue 17 a ``[E, widest]`` float32 value table and mask, now the compact
  ``edge_values`` / ``edge_width``);
* ``gmn_forward``: ``collate([g])`` and a GMN forward on it (``hidden=8``,
  one layer, ``no_grad``: small enough that the input encoding shows).

Each is called twice: ``cold_s`` is the first call (per-template caches are
built then; ``torch_geometric`` and ``weightspace.nn`` are imported before),
``warm_s`` the second. ``peak_rss_mib`` is the process's
``ru_maxrss`` (model, template and graph included); ``peak_growth_mib`` is that
peak minus the RSS just before the first call. Issue "Speed and memory"
targets: ResNet-18 ``to_pyg`` at most GMN's builder in time and memory;
ResNet-50 ``to_pyg`` under 3 GB peak.

Writes ``benchmarks/results/to_pyg.json`` (with the 1-minute load average
before and after every subprocess: the machine is shared).

    python benchmarks/bench_to_pyg.py [--archs resnet18 resnet50] [--cases to_pyg gmn_collate]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

CASES = ("to_pyg", "to_pyg_padded", "gmn_collate", "gmn_forward")


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _tensor_mib(obj) -> float:
    import torch

    items = obj.items() if hasattr(obj, "items") else vars(obj).items()
    return sum(v.numel() * v.element_size() for _, v in items if isinstance(v, torch.Tensor)) / 2**20


def child(arch: str, case: str, image_size: int) -> dict:
    import torch
    import torch_geometric.data  # noqa: F401  (imported before timing: its import is no part of the cost)

    import weightspace as ws
    import weightspace.nn  # noqa: F401
    import zoo

    torch.set_num_threads(2)
    kw = {"image_size": image_size} if image_size else {}
    t = ws.graph_template(arch, **kw)
    model = zoo.create_model(arch, seed=0, **kw)
    g = t.graph(model.state_dict())
    del model
    rss0 = _rss_mib()
    if case == "to_pyg":
        fn = g.to_pyg
    elif case == "to_pyg_padded":
        fn = lambda: g.to_pyg(padded=True)  # noqa: E731
    elif case == "gmn_collate":
        from weightspace.nn import collate

        fn = lambda: collate([g])  # noqa: E731
    else:
        from weightspace.nn import GMN, collate

        gmn = GMN(out_dim=1, hidden=8, num_layers=1, edge_dim=max(t.max_width, 1)).eval()

        def fn():
            with torch.no_grad():
                return {"graph": gmn(collate([g])).graph}
    t0 = time.perf_counter()
    out = fn()
    t1 = time.perf_counter()
    size = _tensor_mib(out)
    del out
    t2 = time.perf_counter()
    out = fn()
    t3 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    del out  # kept alive until the peak is read
    return {
        "arch": arch,
        "case": case,
        "edges": t.num_edges,
        "values": t.num_values,
        "max_edge_width": t.max_width,
        "cold_s": t1 - t0,
        "warm_s": t3 - t2,
        "output_tensors_mib": size,
        "rss_before_mib": rss0,
        "peak_rss_mib": peak,
        "peak_growth_mib": peak - rss0,
    }


def _run(arch: str, case: str, image_size: int, code: str | None = None) -> dict | None:
    cmd = [sys.executable, __file__, "--child", arch, case, "--image-size", str(image_size)]
    root = code or str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        if "padded" in proc.stderr and case == "to_pyg_padded":
            return None  # code without the padded option
        raise SystemExit(f"{arch}/{case}: benchmark subprocess failed:\n{proc.stderr[-2000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["load_average_1min"] = {"before": load, "after": os.getloadavg()[0]}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", nargs="*", default=["resnet18", "resnet50"])
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=CASES)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--label", default="after", help="key of this run in the JSON (e.g. before / after)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "to_pyg.json"))
    ap.add_argument("--code", default=None,
                    help="import weightspace from this source tree (e.g. an exported older commit, for 'before')")
    ap.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.image_size)))
        return
    load_before = os.getloadavg()
    rows = [r for a in args.archs for c in args.cases if (r := _run(a, c, args.image_size, args.code)) is not None]
    print(f"{'arch':9s} {'case':14s} {'edges':>9s} {'cold s':>7s} {'warm s':>7s} {'out MiB':>8s} "
          f"{'peak RSS':>9s} {'growth':>8s} load")
    for r in rows:
        print(f"{r['arch']:9s} {r['case']:14s} {r['edges']:9d} {r['cold_s']:7.2f} {r['warm_s']:7.2f} "
              f"{r['output_tensors_mib']:8.0f} {r['peak_rss_mib']:9.0f} {r['peak_growth_mib']:8.0f} "
              f"{r['load_average_1min']['before']:.2f}")
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.exists() else {}
    doc[args.label] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "threads": 2,
        "code": args.code or "this checkout",
        "image_size": args.image_size,
        "load_average_1_5_15": {"before": load_before, "after": os.getloadavg()},
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, out)
    print(f"load average (1/5/15 min) before: {load_before}, after: {os.getloadavg()}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
