"""``weightspace merge`` of a ``method: weight_matching`` (or, with ``--method
activation_matching``, that) YAML on two GPT-2-small Hugging Face
directories: out of core (the default: matched from the directories, or by
activations with one model mapped from its directory at a time; B written
permuted to a temporary directory, streamed average) against
``--in-memory`` (both models and the result loaded).

Activation matching runs on ``--seqs`` random token sequences of
``--tokens`` tokens (``data: {path: tokens.npz}``, written into the workdir)
with ``batch_size: 8``.

Each run is the CLI in a fresh process (``nice -n 10 python -m
weightspace.cli merge CONFIG OUT [--in-memory]``); the runner waits for it
with ``os.wait4``: wall time, CPU time (user + system) and peak RSS
(``ru_maxrss`` of that process; the runner imports no torch, so the fork's
starting RSS is small). ``baseline`` is the same measure of a process that
only imports torch, transformers and the CLI. The load average is recorded
before each run. The out-of-core plan (``--dry-run``) is run first and its
memory estimate recorded beside the measured peaks; at the end both outputs
are compared tensor by tensor.

Inputs: ``--a`` / ``--b`` (default ``/tmp/mergeio_bench/{base,ft1}`` from
``benchmarks/bench_merge_llm.py``; when absent they are built with its
builder into ``--workdir``).

    nice -n 10 python benchmarks/bench_merge_rebasin_cli.py \
        --out benchmarks/results/merge_llm_s6_rebasin_cli.json
    nice -n 10 python benchmarks/bench_merge_rebasin_cli.py --method activation_matching \
        --out benchmarks/results/merge_llm_s7_activation_cli.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(argv: list[str], env: dict) -> dict:
    """Run ``argv`` (under ``nice -n 10``); wall, CPU, peak RSS, output."""
    load = os.getloadavg()
    t = time.perf_counter()
    proc = subprocess.Popen(["nice", "-n", "10", *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            cwd=ROOT, text=True)
    out = proc.stdout.read()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"argv": argv, "rc": proc.returncode, "wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime,
            "user_s": ru.ru_utime, "sys_s": ru.ru_stime, "peak_rss": ru.ru_maxrss * 1024,
            "major_faults": ru.ru_majflt, "load_avg_before": load, "output": out[-4000:]}


def mib(n: float) -> float:
    return n / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", type=Path, default=Path("/tmp/mergeio_bench/base"))
    ap.add_argument("--b", type=Path, default=Path("/tmp/mergeio_bench/ft1"))
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/s6wm"))
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modes", nargs="+", choices=("stream", "memory"), default=["stream", "memory"])
    ap.add_argument("--method", choices=("weight_matching", "activation_matching"), default="weight_matching")
    ap.add_argument("--seqs", type=int, default=8, help="activation matching: token sequences")
    ap.add_argument("--tokens", type=int, default=128, help="activation matching: tokens per sequence")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/merge_llm_s6_rebasin_cli.json")
    args = ap.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    a, b = args.a, args.b
    if not (a / "config.json").is_file() or not (b / "config.json").is_file():
        subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                        "from benchmarks.bench_merge_llm import build_dirs; "
                        "build_dirs(Path(sys.argv[1]), 12, '200MB')", str(work)], check=True, env=env, cwd=ROOT)
        a, b = work / "base", work / "ft1"
    config = work / f"{args.method}.yaml"
    cfg = {"method": args.method, "seed": args.seed, "models": [{"model": {"hf": str(a)}}, {"model": {"hf": str(b)}}]}
    if args.method == "activation_matching":
        import numpy as np

        vocab = json.loads((a / "config.json").read_text())["vocab_size"]
        rng = np.random.default_rng(args.seed)
        np.savez(work / "tokens.npz", x=rng.integers(0, vocab, (args.seqs, args.tokens)),
                 y=np.zeros(args.seqs, dtype=np.int64))
        cfg.update(data={"path": str(work / "tokens.npz")}, options={"batch_size": 8})
    config.write_text(json.dumps(cfg))
    model_bytes = sum(f.stat().st_size for f in a.glob("*.safetensors"))
    cli = [sys.executable, "-m", "weightspace.cli", "merge", str(config)]

    baseline = measure([sys.executable, "-c", "import torch, transformers, weightspace.cli.app, "
                        "weightspace.merge.config"], env)
    dry = measure([*cli, str(work / "dry"), "--dry-run"], env)
    # the plan's estimates (MiB): the whole merge, then the matching step's
    est = [float(x) for x in re.findall(r"estimated peak memory ([\d.]+) MiB", dry["output"])]
    runs = []
    for r in range(args.repeats):
        for mode in args.modes if r % 2 == 0 else args.modes[::-1]:
            out = work / f"out_{mode}"
            shutil.rmtree(out, ignore_errors=True)
            res = measure([*cli, str(out), *(["--in-memory"] if mode == "memory" else [])], env)
            res.update(mode=mode, repeat=r)
            if res["rc"] == 0 and mode == "stream":
                res["record"] = json.loads((out / "weightspace_merge.json").read_text())
            runs.append(res)
            print(f"{mode:7s} rc {res['rc']} wall {res['wall_s']:7.1f} s  cpu {res['cpu_s']:7.1f} s  "
                  f"peak {mib(res['peak_rss']):7.0f} MiB  load {res['load_avg_before'][0]:.2f}", flush=True)

    compare = None
    if all(r["rc"] == 0 for r in runs) and len(args.modes) == 2:
        compare = subprocess.run([sys.executable, "-c", (
            "import sys, json, torch; from pathlib import Path; from safetensors.torch import load_file\n"
            "def t(d):\n    sd = {}\n"
            "    [sd.update(load_file(str(f))) for f in sorted(Path(d).glob('*.safetensors'))]\n"
            "    return sd\n"
            "s, m = t(sys.argv[1]), t(sys.argv[2])\n"
            "print(json.dumps({'same_names': set(s) == set(m), 'bit_equal': all(torch.equal(s[k], m[k]) for k in m),"
            " 'max_abs_diff': max(float((s[k].double() - m[k].double()).abs().max()) for k in m)}))")
            , str(work / "out_stream"), str(work / "out_memory")], capture_output=True, text=True, env=env, cwd=ROOT)
        compare = json.loads(compare.stdout.strip().splitlines()[-1]) if compare.returncode == 0 else \
            {"error": compare.stderr[-2000:]}
    for mode in ("stream", "memory"):
        shutil.rmtree(work / f"out_{mode}", ignore_errors=True)
    leftovers = sorted(p.name for p in work.iterdir() if f".{args.method}-" in p.name)

    def med(mode: str, key: str) -> float:
        xs = sorted(r[key] for r in runs if r["mode"] == mode and r["rc"] == 0)
        return xs[len(xs) // 2] if xs else float("nan")

    summary = {mode: {"wall_s": med(mode, "wall_s"), "cpu_s": med(mode, "cpu_s"),
                      "peak_rss_max": max((r["peak_rss"] for r in runs if r["mode"] == mode), default=None)}
               for mode in ("stream", "memory")}
    result = {
        "benchmark": "bench_merge_rebasin_cli", "method": args.method, "config": cfg, "a": str(a), "b": str(b),
        "model_bytes": model_bytes,
        "nice": 10, "cpus": os.cpu_count(), "omp_num_threads": env["OMP_NUM_THREADS"],
        "load_avg_start": baseline["load_avg_before"], "load_avg_end": os.getloadavg(),
        "baseline": baseline, "dry_run": {**dry, "estimated_peak_mib": est}, "runs": runs, "summary": summary,
        "outputs_compared": compare, "temporary_dirs_left": leftovers,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nmodel {mib(model_bytes):.0f} MiB; baseline process (imports) peak {mib(baseline['peak_rss']):.0f} MiB; "
          f"dry-run estimates (MiB): {est}")
    print(f"{'mode':8s} {'wall s':>8s} {'cpu s':>8s} {'peak MiB':>9s} {'peak/model':>10s}")
    for mode, s in summary.items():
        peak = s["peak_rss_max"] or 0
        print(f"{mode:8s} {s['wall_s']:8.1f} {s['cpu_s']:8.1f} {mib(peak):9.0f} {peak / model_bytes:10.2f}")
    print(f"outputs: {compare}; temporary dirs left: {leftovers}; load avg end {result['load_avg_end']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
