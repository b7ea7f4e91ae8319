"""Time to build the permutation spec and the parameter graph.

Prints a table and writes ``benchmarks/results/graph.json``. Targets (issue
#3): ResNet-18 < 1 s and ResNet-50 < 2 s on the 2-core CPU.

    python benchmarks/bench_graph.py [--repeats 3] [--image-size 224]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import zoo
from weightspace.graph import build_template
from weightspace.symmetry import build_spec
from weightspace.trace import trace
from weightspace.trace.structure import resolve


def bench(name: str, repeats: int, image_size: int | None) -> dict:
    kw = {"image_size": image_size} if image_size and name in ("resnet18", "resnet50", "resnet20") else {}
    model = zoo.create_model(name, seed=0, **kw)
    x = zoo.example_input(name, **kw)
    t_trace, t_spec, t_graph, t_values = [], [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        cg = trace(model, x, arch=name)
        t1 = time.perf_counter()
        structure = resolve(cg)
        spec = build_spec(cg, structure)
        t2 = time.perf_counter()
        template = build_template(cg, spec, structure)
        t3 = time.perf_counter()
        g = template.graph(model.state_dict())
        t4 = time.perf_counter()
        t_trace.append(t1 - t0)
        t_spec.append(t2 - t1)
        t_graph.append(t3 - t2)
        t_values.append(t4 - t3)
    total = [a + b + c + d for a, b, c, d in zip(t_trace, t_spec, t_graph, t_values)]
    return {
        "arch": name,
        "input_shape": list(x.shape),
        "parameters": sum(p.numel() for p in model.parameters()),
        "nodes": template.num_nodes,
        "edges": template.num_edges,
        "groups": len(spec),
        "trace_s": statistics.median(t_trace),
        "spec_s": statistics.median(t_spec),
        "template_s": statistics.median(t_graph),
        "values_s": statistics.median(t_values),
        "total_s": statistics.median(total),
        "values": int(g.values.numel()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=224, help="example input size for the ResNets")
    ap.add_argument("--archs", nargs="*", default=["resnet20", "resnet18", "resnet50"])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "graph.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    targets = {"resnet18": 1.0, "resnet50": 2.0}
    import os

    load_before = os.getloadavg()[0]
    rows = [bench(a, args.repeats, args.image_size) for a in args.archs]
    load_after = os.getloadavg()[0]
    print(f"{'arch':10s} {'params':>10s} {'nodes':>7s} {'edges':>10s} {'trace':>7s} {'spec':>7s} {'graph':>7s} {'values':>7s} {'total':>7s} target")
    for r in rows:
        tgt = targets.get(r["arch"])
        ok = "" if tgt is None else (f"< {tgt:.0f} s " + ("ok" if r["total_s"] < tgt else "MISSED"))
        r["target_s"] = tgt
        print(f"{r['arch']:10s} {r['parameters']:10d} {r['nodes']:7d} {r['edges']:10d} {r['trace_s']:7.3f} "
              f"{r['spec_s']:7.3f} {r['template_s']:7.3f} {r['values_s']:7.3f} {r['total_s']:7.3f} {ok}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                               "image_size": args.image_size,
                               "load_average_1min": {"before": load_before, "after": load_after},
                               "rows": rows}, indent=2))
    print(f"load average (1 min) before/after: {load_before:.2f} / {load_after:.2f} (other work on the machine slows these timings)")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
