"""Time to build the permutation spec and the parameter graph.

Prints a table and writes ``benchmarks/results/graph.json``. Targets (issue
#3): ResNet-18 < 1 s and ResNet-50 < 2 s on the 2-core CPU; Hugging Face
GPT-2-small (``GPT2Config()``, 124M) and a ~100M Llama-style model (hidden 768,
12 layers, GQA 12/4 heads, intermediate 2048, vocab 32000) < 3 s each
("real checkpoints" issue). The Hugging Face models need ``transformers``
(built from configs, nothing downloaded) and are traced with ``tracer="auto"``
(torch.export's make_fx capture, see ``weightspace.trace.export``).

``total_s`` and ``cpu_s`` are the median repeat; ``total_first_s`` and
``cpu_first_s`` the first (cold) call for the model. For the export front
end, torch's one-time import of the ``torch.export`` machinery is timed on
its own first (``export_warmup``, a tiny module), so it is in neither.

Every architecture runs in a fresh subprocess, so its peak RSS
(``ru_maxrss``) is its own; each row records the load averages before and
after. Rows of architectures not run this time are kept from the previous
JSON.

The timed graph is a :class:`ParameterGraph` ready for use: nodes, the value
vector and lazy edge sets (one edge per weight is 163M edges for GPT-2-small;
they are written on first use). ``--to-pyg`` also times ``g.to_pyg()``, which
writes every edge, and the floor of that: allocating and filling a
``[2, E]`` int64 ``edge_index``.

    python benchmarks/bench_graph.py [--repeats 3] [--image-size 224] [--only gpt2,llama] [--to-pyg]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import zoo
from weightspace.graph import build_template
from weightspace.symmetry import build_spec
from weightspace.trace import trace_module
from weightspace.trace.structure import resolve

# Hugging Face models built from configs (transformers, offline): name -> (config class, kwargs, model class)
HF_MODELS = {
    "gpt2": ("GPT2Config", {"use_cache": False}, "GPT2LMHeadModel"),
    "llama": ("LlamaConfig", {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                              "num_key_value_heads": 4, "intermediate_size": 2048, "vocab_size": 32000,
                              "max_position_embeddings": 2048, "use_cache": False}, "LlamaForCausalLM"),
}


def _model(name: str, image_size: int | None) -> tuple[torch.nn.Module, torch.Tensor, str]:
    if name in HF_MODELS:
        import transformers

        cfg_cls, cfg_kw, model_cls = HF_MODELS[name]
        torch.manual_seed(0)
        model = getattr(transformers, model_cls)(getattr(transformers, cfg_cls)(**cfg_kw)).eval()
        x = torch.randint(0, 1000, (1, 8), generator=torch.Generator().manual_seed(0))
        return model, x, "auto"
    kw = {"image_size": image_size} if image_size and name in ("resnet18", "resnet50", "resnet20") else {}
    return zoo.create_model(name, seed=0, **kw), zoo.example_input(name, **kw), "fx"


def _peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux: the peak of this (fresh) process so far
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _edge_index_floor(num_edges: int) -> float:
    """Seconds to allocate and write a fresh ``[2, E]`` int64 tensor (what
    any ``edge_index`` of E edges costs at least), freed afterwards."""
    t0 = time.perf_counter()
    out = torch.empty(2, num_edges, dtype=torch.long)
    out.fill_(1)
    t = time.perf_counter() - t0
    del out
    return t


def _export_warmup() -> dict:
    """Wall and CPU seconds of the first ``torch.export`` front-end trace in
    this process, of a tiny module: torch imports the machinery of
    ``torch.export`` (dynamo, functorch, inductor pieces, networkx, ...) on
    first use. A one-time cost per process, recorded on its own so that the
    first trace of the benchmarked model is that model's own cold call."""
    m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    c0, t0 = time.process_time(), time.perf_counter()
    trace_module(m, torch.randn(1, 4), tracer="export")
    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}


def bench(name: str, repeats: int, image_size: int | None, to_pyg: bool) -> dict:
    t_build = time.perf_counter()
    model, x, tracer = _model(name, image_size)
    t_build = time.perf_counter() - t_build
    rss_model = _peak_rss_mib()
    warmup = _export_warmup() if tracer != "fx" else None
    t_trace, t_spec, t_graph, t_values, cpu = [], [], [], [], []
    for _ in range(repeats):
        # the previous repeat's graph is freed first: every repeat builds one
        # graph (and peak_rss_mib is that of one), none shares its memory
        cg = structure = spec = template = g = None  # noqa: F841
        c0 = time.process_time()
        t0 = time.perf_counter()
        cg = trace_module(model, x, arch=name, tracer=tracer)
        t1 = time.perf_counter()
        c1 = time.process_time()
        structure = resolve(cg)
        spec = build_spec(cg, structure)
        t2 = time.perf_counter()
        c2 = time.process_time()
        template = build_template(cg, spec, structure)
        t3 = time.perf_counter()
        c3 = time.process_time()
        g = template.graph(model.state_dict())
        t4 = time.perf_counter()
        c4 = time.process_time()
        t_trace.append(t1 - t0)
        t_spec.append(t2 - t1)
        t_graph.append(t3 - t2)
        t_values.append(t4 - t3)
        cpu.append((c1 - c0, c2 - c1, c3 - c2, c4 - c3))
    total = [a + b + c + d for a, b, c, d in zip(t_trace, t_spec, t_graph, t_values)]
    # CPU seconds of this process (all threads) per stage, from the median
    # repeat: less sensitive than wall time to other work on a shared machine
    mid = sorted(range(repeats), key=lambda i: total[i])[repeats // 2]
    row = {
        "arch": name,
        "tracer": tracer,
        "build_model_s": t_build,
        "input_shape": list(x.shape),
        "parameters": sum(p.numel() for p in model.parameters()),
        "nodes": template.num_nodes,
        "edges": template.num_edges,
        "groups": len(spec),
        "trace_s": statistics.median(t_trace),
        "trace_first_s": t_trace[0],  # the first call also imports torch.export's machinery
        "spec_s": statistics.median(t_spec),
        "template_s": statistics.median(t_graph),
        "values_s": statistics.median(t_values),
        "total_s": statistics.median(total),
        "cpu_s": dict(zip(("trace", "spec", "template", "values"), cpu[mid]), total=sum(cpu[mid])),
        # the first (cold) call for this model, after the one-time torch.export warm-up
        "total_first_s": total[0],
        "cpu_first_s": dict(zip(("trace", "spec", "template", "values"), cpu[0]), total=sum(cpu[0])),
        "export_warmup": warmup,
        "values": int(g.values.numel()),
        "peak_rss_model_mib": rss_model,  # after building the model, before tracing
        "peak_rss_mib": _peak_rss_mib(),  # after trace + spec + graph, model included
    }
    if to_pyg:
        # the lazy edge sets written out: edge_index [2, E], edge types,
        # widths and edge-ordered values (what a metanetwork reads)
        importlib.import_module("torch_geometric.data")  # its import (seconds) is not part of the graph

        t0 = time.perf_counter()
        g.to_pyg()
        row["to_pyg_s"] = time.perf_counter() - t0
        row["to_pyg_peak_rss_mib"] = _peak_rss_mib()
        template._cache.clear()
        row["floor_edge_index_s"] = _edge_index_floor(template.num_edges)
    return row


def _bench_in_subprocess(name: str, repeats: int, image_size: int | None, to_pyg: bool) -> dict:
    """``bench`` in a fresh interpreter so that ``peak_rss_mib`` is this architecture's own."""
    cmd = [sys.executable, __file__, "--child", name, "--repeats", str(repeats), "--image-size", str(image_size or 0)]
    cmd += ["--to-pyg"] if to_pyg else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    load_all = list(os.getloadavg())
    load = load_all[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: benchmark subprocess failed:\n{proc.stderr[-2000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["load_average_1min"] = {"before": load, "after": os.getloadavg()[0]}
    row["load_average"] = {"before": load_all, "after": list(os.getloadavg())}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=224, help="example input size for the ResNets")
    ap.add_argument("--archs", nargs="*", default=["resnet20", "resnet18", "resnet50", "gpt2", "llama"])
    ap.add_argument("--only", default=None, help="comma-separated subset of --archs, e.g. gpt2,llama")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "graph.json"))
    ap.add_argument("--to-pyg", action="store_true",
                    help="also time g.to_pyg() (writes every edge) and the floor of writing a [2, E] int64 edge_index")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.child:
        print(json.dumps(bench(args.child, args.repeats, args.image_size or None, args.to_pyg)))
        return
    targets = {"resnet18": 1.0, "resnet50": 2.0, "gpt2": 3.0, "llama": 3.0}
    archs = args.only.split(",") if args.only else args.archs

    load_before = os.getloadavg()[0]
    rows = [_bench_in_subprocess(a, args.repeats, args.image_size, args.to_pyg) for a in archs]
    load_after = os.getloadavg()[0]
    print(f"{'arch':10s} {'params':>10s} {'nodes':>7s} {'edges':>10s} {'trace':>7s} {'spec':>7s} {'graph':>7s} {'values':>7s} {'total':>7s} {'peak RSS':>12s} target")
    for r in rows:
        tgt = targets.get(r["arch"])
        ok = "" if tgt is None else (f"< {tgt:.0f} s " + ("ok" if r["total_s"] < tgt else "MISSED"))
        r["target_s"] = tgt
        print(f"{r['arch']:10s} {r['parameters']:10d} {r['nodes']:7d} {r['edges']:10d} {r['trace_s']:7.3f} "
              f"{r['spec_s']:7.3f} {r['template_s']:7.3f} {r['values_s']:7.3f} {r['total_s']:7.3f} "
              f"{r['peak_rss_mib']:8.0f} MiB {ok}")
        c = r["cpu_s"]
        print(f"{'':10s} CPU s (all threads): trace {c['trace']:.3f}  spec {c['spec']:.3f}  graph {c['template']:.3f}  "
              f"values {c['values']:.3f}  total {c['total']:.3f}")
        f = r.get("cpu_first_s")
        if f:
            w = r.get("export_warmup") or {}
            print(f"{'':10s} first call: wall {r['total_first_s']:.3f} s, CPU s trace {f['trace']:.3f}  spec {f['spec']:.3f}  "
                  f"graph {f['template']:.3f}  values {f['values']:.3f}  total {f['total']:.3f}"
                  + (f"; before it, torch.export's one-time warm-up (imports) {w['cpu_s']:.3f} CPU s" if w else ""))
        if "to_pyg_s" in r:
            print(f"{'':10s} to_pyg (every edge written) {r['to_pyg_s']:.3f} s, peak RSS {r['to_pyg_peak_rss_mib']:.0f} MiB; "
                  f"floor: writing a [2, E] int64 edge_index {r['floor_edge_index_s']:.3f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    old, extra = [], {}
    if out.exists():  # keep the rows of architectures not run this time, and a recorded baseline
        prev = json.loads(out.read_text())
        old = [r for r in prev.get("rows", []) if r["arch"] not in archs]
        extra = {"baseline": prev["baseline"]} if "baseline" in prev else {}
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                               "image_size": args.image_size,
                               "load_average_1min": {"before": load_before, "after": load_after},
                               "rows": old + rows, **extra}, indent=2))
    print(f"load average (1 min) before/after: {load_before:.2f} / {load_after:.2f} (other work on the machine slows these timings)")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
