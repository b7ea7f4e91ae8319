"""Benchmark: linear CKA speed and peak memory against a bare numpy
feature-space formula.

Cases
  1. linear_cka on 2000 x 512 vs 2000 x 512 (in-memory, exact).
  2. 50000 x 2048 vs 50000 x 2048 (``--small``: 10000 x 1024): minibatch CKA
     (Nguyen et al. 2021; MinibatchCKAAccumulator) and exact streaming linear
     CKA (LinearCKAAccumulator), both fed batch by batch, against the numpy
     formula on the full float64 matrices.

Baseline (the formula every CKA tutorial uses):
    Xc, Yc = X - mean, Y - mean
    ||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)

Times are wall-clock (median of repeats for case 1, one run for case 2);
peak memory is the tracemalloc peak of allocations made during the call
(numpy buffers are traced; BLAS scratch space is not). Inputs are float32
arrays created beforehand and not counted. The target is ours / numpy <= 2.

Run: python benchmarks/bench_similarity.py [--small] [--batch-size 1000]
Writes benchmarks/results/similarity.json (--out to change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import scipy

from weightspace.similarity import LinearCKAAccumulator, MinibatchCKAAccumulator, linear_cka


def numpy_linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Bare feature-space formula in float64 (the baseline)."""
    X = X.astype(np.float64)
    Y = Y.astype(np.float64)
    X -= X.mean(axis=0)
    Y -= Y.mean(axis=0)
    return float(
        np.linalg.norm(X.T @ Y) ** 2 / (np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y))
    )


def make_data(n: int, p: int, seed: int, latent: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Two float32 (n, p) representations of a shared latent, built in chunks."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((latent, p), dtype=np.float32) / np.sqrt(latent)
    B = rng.standard_normal((latent, p), dtype=np.float32) / np.sqrt(latent)
    X = np.empty((n, p), np.float32)
    Y = np.empty((n, p), np.float32)
    for i in range(0, n, 5000):
        Z = rng.standard_normal((min(5000, n - i), latent), dtype=np.float32)
        X[i : i + len(Z)] = Z @ A + 0.5 * rng.standard_normal((len(Z), p), dtype=np.float32)
        Y[i : i + len(Z)] = np.tanh(Z @ B) + 0.5 * rng.standard_normal((len(Z), p), dtype=np.float32)
    return X, Y


def measure(fn, repeats: int = 1, memory: bool = True) -> dict:
    """Median wall time over ``repeats`` and (separately) the tracemalloc peak."""
    times, value = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t)
    out = {"seconds": statistics.median(times), "seconds_all": times, "value": value}
    if memory:
        tracemalloc.start()
        tracemalloc.reset_peak()
        fn()
        out["peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return out


def streamed(acc_cls, X, Y, batch_size):
    def run():
        acc = acc_cls()
        for i in range(0, X.shape[0], batch_size):
            xb, yb = X[i : i + batch_size], Y[i : i + batch_size]
            if xb.shape[0] >= 4:
                acc.update(xb, yb)
        return float(acc.result().values[0, 0])

    return run


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="quick run (10000 x 1024 for case 2)")
    ap.add_argument("--batch-size", type=int, default=1000, help="minibatch size for case 2")
    ap.add_argument("--repeats", type=int, default=5, help="repeats for case 1")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "similarity.json")
    args = ap.parse_args(argv)

    env = {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_avg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    cases = []

    # ---- case 1: 2000 x 512, in memory
    X, Y = make_data(2000, 512, seed=0)
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    for label, (a, b) in {"float32 input": (X, Y), "float64 input": (X64, Y64)}.items():
        ours = measure(lambda: linear_cka(a, b), args.repeats)
        base = measure(lambda: numpy_linear_cka(a, b), args.repeats)
        cases.append({
            "case": f"linear_cka 2000x512 vs 2000x512 ({label})",
            "ours": "weightspace.similarity.linear_cka",
            "ours_s": ours["seconds"], "numpy_s": base["seconds"],
            "ratio": ours["seconds"] / base["seconds"],
            "ours_peak_mib": ours["peak_mib"], "numpy_peak_mib": base["peak_mib"],
            "ours_value": ours["value"], "numpy_value": base["value"],
        })

    # ---- case 2: big, streamed
    n, p = (10000, 1024) if args.small else (50000, 2048)
    X, Y = make_data(n, p, seed=1)
    base = measure(lambda: numpy_linear_cka(X, Y), 1)
    for name, cls in (("minibatch CKA (unbiased, Nguyen et al.)", MinibatchCKAAccumulator),
                      ("exact streaming linear CKA", LinearCKAAccumulator)):
        ours = measure(streamed(cls, X, Y, args.batch_size), 1)
        cases.append({
            "case": f"{name} {n}x{p} vs {n}x{p}, batch {args.batch_size}",
            "ours": cls.__name__,
            "ours_s": ours["seconds"], "numpy_s": base["seconds"],
            "ratio": ours["seconds"] / base["seconds"],
            "ours_peak_mib": ours["peak_mib"], "numpy_peak_mib": base["peak_mib"],
            "ours_value": ours["value"], "numpy_value": base["value"],
        })

    print(f"{'case':72s} {'ours s':>8s} {'numpy s':>8s} {'ratio':>6s} {'ours MiB':>9s} {'numpy MiB':>9s} {'ours':>7s} {'numpy':>7s}")
    for c in cases:
        print(f"{c['case']:72s} {c['ours_s']:8.3f} {c['numpy_s']:8.3f} {c['ratio']:6.2f} "
              f"{c['ours_peak_mib']:9.1f} {c['numpy_peak_mib']:9.1f} {c['ours_value']:7.4f} {c['numpy_value']:7.4f}")
    result = {"benchmark": "similarity", "small": args.small, "target": "ours / numpy <= 2",
              "env": env, "cases": cases}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
