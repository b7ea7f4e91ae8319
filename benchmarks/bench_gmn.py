"""GMN forward throughput (networks/s) and memory per graph, PyG and DGL.

Batch of 64 ``cnn_small`` parameter graphs (63 nodes, 746 edges each), CPU,
eval mode, ``torch.inference_mode``. Reports the forward pass on a collated batch, the
end-to-end time (collate + forward), and memory per graph (input tensors,
and peak resident-memory growth over a forward of the batch). Targets:
issue 5, >= 1000 small CNNs/s forward on CPU; issue 17, >= 1500/s median on
one thread (``--threads 1``, the default). Also reports networks per CPU
second of this process (robust to other load on a shared machine).
``--runs K`` repeats the whole measurement K times (fresh model and
batches each time) and stores the median over runs with every run's
numbers and load average; ``--note`` records the conditions (e.g. what else
ran).

``--compile`` measures :meth:`GMN.compile_` (torch.compile / inductor of the
layers) against eager in the same process: two models with the same
weights, their forwards alternated on each repeat (A/B on the same load),
plus the compile time of the first forward (inductor's on-disk cache makes
a later process faster: ``compile_s`` says what this one paid). Written to
``gmn_<backend>_compile.json``.

Writes ``benchmarks/results/gmn_<backend>.json`` per backend run; the DGL part
runs only where dgl imports (the DGL environment: ``.ci/dgl_lane.sh`` builds
it), e.g.::

    python benchmarks/bench_gmn.py                      # PyG (+ DGL if importable)
    .venv-dgl/bin/python benchmarks/bench_gmn.py --backend dgl
    python benchmarks/bench_gmn.py --table              # both JSON files side by side
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def _dgl_ok() -> bool:
    try:
        import dgl  # noqa: F401
    except Exception:
        return False
    return True


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _op_breakdown(model, graphs, collate, n: int = 5, top: int = 14) -> dict[str, float]:
    """CPU milliseconds per forward of the ``top`` costliest aten ops (the rest
    summed as ``other``; ``total``). ``torch.profiler`` times ops by the wall
    clock, which a loaded machine stretches, so each op's share of the
    profiled self time is scaled to this process's CPU time over the same
    forwards."""
    from torch.profiler import ProfilerActivity, profile

    batches = [collate(graphs) for _ in range(n)]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        c0 = time.process_time()
        for b in batches:
            model.predict(b)
        cpu = (time.process_time() - c0) / n * 1000
    rows = sorted(((e.key, e.self_cpu_time_total) for e in prof.key_averages() if e.self_cpu_time_total > 0),
                  key=lambda r: -r[1])
    wall = sum(v for _, v in rows)
    out = {k: round(cpu * v / wall, 3) for k, v in rows[:top]}
    out["other"] = round(cpu * sum(v for _, v in rows[top:]) / wall, 3)
    out["total"] = round(cpu, 3)
    return out


def bench(backend: str, *, batch: int, repeats: int, hidden: int, layers: int, aggr: str, arch: str,
          threads: int | None, profile: bool = False, compile: bool = False) -> dict:
    import weightspace as ws
    import zoo
    from weightspace.nn import GMN, collate

    if threads:
        torch.set_num_threads(threads)
    t = ws.graph_template(arch)
    graphs = [t.graph(zoo.create_model(arch, seed=i).state_dict()) for i in range(batch)]
    torch.manual_seed(0)
    model = GMN(out_dim=1, hidden=hidden, num_layers=layers, aggr=aggr, backend=backend).eval()
    eager, eager_cpu, compile_s = None, [], None
    if compile:  # model: compiled; eager: the same weights, run alternately with it
        eager = model
        model = GMN(out_dim=1, hidden=hidden, num_layers=layers, aggr=aggr, backend=backend).eval()
        model.load_state_dict(eager.state_dict())
        if not model.compile_()._compiled:
            raise SystemExit("--compile: this machine cannot compile (see the warning above)")
        with torch.inference_mode():
            t0 = time.perf_counter()
            model.predict(model.collate(graphs))
            compile_s = time.perf_counter() - t0
        if not model._compiled:
            raise SystemExit("--compile: compiling failed (see the warning above)")
    b = model.collate(graphs)
    input_bytes = sum(v.numel() * v.element_size() for v in (
        b.edge_index, b.edge_values, b.edge_width, b.edge_type, b.node_type, b.node_layer, b.node_role,
        b.node_pos, b.node_depth, b.node_batch, b.edge_batch) if v is not None)
    fwd, e2e, col, cpu = [], [], [], []
    with torch.inference_mode():  # a forward benchmark: no autograd bookkeeping at all
        for _ in range(3):  # warm-up (allocator, PyG templates, DGL graph build)
            model.predict(model.collate(graphs))
        rss0 = _rss_mb()
        peak0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if eager is not None:
            for _ in range(3):
                eager.predict(eager.collate(graphs))
        for _ in range(repeats):
            if eager is not None:
                b = collate(graphs)
                c0 = time.process_time()
                eager.predict(b)
                eager_cpu.append(time.process_time() - c0)
            b = collate(graphs)
            c0, t0 = time.process_time(), time.perf_counter()
            model.predict(b)  # includes building the backend's graph structures
            t1, c1 = time.perf_counter(), time.process_time()
            fwd.append(t1 - t0)
            cpu.append(c1 - c0)
            t0 = time.perf_counter()
            bb = model.collate(graphs)
            t1 = time.perf_counter()
            model.predict(bb)
            t2 = time.perf_counter()
            col.append(t1 - t0)
            e2e.append(t2 - t0)
        peak1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        ops = _op_breakdown(model, graphs, collate) if profile else None
    med_f, med_e = statistics.median(fwd), statistics.median(e2e)
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "backend": backend,
        "arch": arch,
        "batch": batch,
        "nodes_per_graph": t.num_nodes,
        "edges_per_graph": t.num_edges,
        "model": {"hidden": hidden, "num_layers": layers, "aggr": aggr,
                  "parameters": sum(p.numel() for p in model.parameters())},
        "forward_s_median": med_f,
        "forward_s_min": min(fwd),
        "networks_per_s": batch / med_f,
        "networks_per_s_best": batch / min(fwd),
        # CPU seconds of this process per forward: on a shared, loaded machine
        # wall time overstates the cost; with 1 thread this is the rate of one
        # unloaded core
        "forward_cpu_s_median": statistics.median(cpu),
        "networks_per_cpu_s": batch / statistics.median(cpu),
        "collate_s_median": statistics.median(col),
        "end_to_end_networks_per_s": batch / med_e,
        "input_bytes_per_graph": input_bytes / batch,
        "peak_rss_growth_mb_per_graph": max(peak1 - peak0, 0.0) / batch,
        "rss_mb_after_warmup": rss0,
        "repeats": repeats,
        # CPU ms per forward by aten op (torch.profiler over 5 forwards on fresh batches, shares scaled
        # to the process CPU time; the profiler adds a little per op, so the total is a bit above
        # forward_cpu_s_median)
        "op_breakdown_ms_per_forward": ops,
        "compiled": compile,
        # first forward of the compiled model (tracing + inductor + g++), wall seconds
        "compile_s": compile_s,
        # with --compile: the eager model's forwards, alternated with the compiled ones
        "eager_forward_cpu_s_median": statistics.median(eager_cpu) if eager_cpu else None,
        "eager_networks_per_cpu_s": batch / statistics.median(eager_cpu) if eager_cpu else None,
        "target_networks_per_s": 1500,
        "meets_target": batch / med_f >= 1500,
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "loadavg_1_5_15": load, "python": platform.python_version(),
                    "torch": torch.__version__, "platform": platform.platform()},
    }


def _table(rows: list[dict]) -> str:
    head = f"{'backend':8} {'nets/s fwd':>11} {'best':>8} {'nets/cpu-s':>11} {'nets/s e2e':>11} {'fwd ms':>8} {'collate ms':>11} {'in KB/graph':>12} {'peak MB/graph':>14}"
    lines = [head, "-" * len(head)]
    for r in rows:
        name = r["backend"] + ("+cc" if r.get("compiled") else "")
        lines.append(
            f"{name:8} {r['networks_per_s']:11.0f} {r['networks_per_s_best']:8.0f} "
            f"{r.get('networks_per_cpu_s', float('nan')):11.0f} "
            f"{r['end_to_end_networks_per_s']:11.0f} {1000 * r['forward_s_median']:8.1f} "
            f"{1000 * r['collate_s_median']:11.1f} {r['input_bytes_per_graph'] / 1024:12.1f} "
            f"{r['peak_rss_growth_mb_per_graph']:14.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=["pyg", "dgl", "auto"], default="auto",
                    help="auto: PyG, and DGL too where dgl imports")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--aggr", default="sum")
    ap.add_argument("--arch", default="cnn_small")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (issue 17 target: 1)")
    ap.add_argument("--runs", type=int, default=1, help="repeat the whole measurement; store the median run")
    ap.add_argument("--profile", action="store_true",
                    help="also store the CPU time per forward of the costliest ops (torch.profiler)")
    ap.add_argument("--compile", action="store_true",
                    help="GMN.compile_() vs eager, alternated in one process (PyG only)")
    ap.add_argument("--note", default="", help="conditions of this measurement, stored in the JSON")
    ap.add_argument("--table", action="store_true", help="print the stored JSON results side by side and exit")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    if args.table:
        rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("gmn_*.json"))]
        print(_table(rows))
        return
    backends = ["pyg", "dgl"] if args.backend == "auto" and _dgl_ok() else (
        ["pyg"] if args.backend == "auto" else [args.backend])
    if args.compile:
        backends = ["pyg"]
    rows = []
    for be in backends:
        runs = [bench(be, batch=args.batch, repeats=args.repeats, hidden=args.hidden, layers=args.layers,
                      aggr=args.aggr, arch=args.arch, threads=args.threads, profile=args.profile,
                      compile=args.compile)
                for _ in range(args.runs)]
        r = dict(sorted(runs, key=lambda x: x["networks_per_s"])[len(runs) // 2])  # the median run
        r["note"] = args.note
        r["runs"] = [{k: x[k] for k in ("networks_per_s", "networks_per_s_best", "networks_per_cpu_s",
                                        "end_to_end_networks_per_s", "collate_s_median", "compile_s",
                                        "eager_networks_per_cpu_s")}
                     | {"loadavg_1_5_15": x["machine"]["loadavg_1_5_15"]} for x in runs]
        r["networks_per_s_median_over_runs"] = statistics.median(x["networks_per_s"] for x in runs)
        if args.compile:  # later runs of this process reuse the compiled code: the first paid the compile
            r["compile_s_first_run"] = runs[0]["compile_s"]
            r["speedup_cpu_median_over_runs"] = statistics.median(
                x["networks_per_cpu_s"] / x["eager_networks_per_cpu_s"] for x in runs)
        rows.append(r)
        if not args.no_save:
            RESULTS.mkdir(parents=True, exist_ok=True)
            out = RESULTS / f"gmn_{be}{'_compile' if args.compile else ''}.json"
            tmp = out.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(r, indent=2))
            os.replace(tmp, out)
    print(_table(rows))
    for r in rows:
        if r.get("compiled"):
            print(f"\ncompiled: {r['networks_per_cpu_s']:.0f} nets/CPU-s vs eager {r['eager_networks_per_cpu_s']:.0f} "
                  f"(alternated, median run; x{r['speedup_cpu_median_over_runs']:.2f} median over runs); "
                  f"compile s per run: {[round(x['compile_s'], 1) for x in r['runs']]}")
        if r.get("op_breakdown_ms_per_forward"):
            print(f"\n{r['backend']}: CPU ms per forward by op (torch.profiler shares x CPU time)")
            for k, v in r["op_breakdown_ms_per_forward"].items():
                print(f"  {k:40s} {v:8.2f}")


if __name__ == "__main__":
    main()
