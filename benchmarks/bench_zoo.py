"""Zoo-building benchmark: members/minute and resume overhead.

Builds the shipped ``digits_cnn_small`` recipe (cnn_small on sklearn digits,
10 epochs per member) with the local process pool, then measures

* throughput: members per minute for the full build;
* no-op resume: re-running the finished build (open, lock, index scan);
* kill + resume: a second build in a subprocess is killed with SIGKILL once
  half of the members are in the index, then resumed; overhead = (time until
  the kill + time of the resume) - time of the uninterrupted build. The
  resumed zoo is checked to be bit-identical to the uninterrupted one.

Prints a table and writes ``benchmarks/results/zoo.json``.

    python -m benchmarks.bench_zoo                 # 100 members, 2 workers
    python benchmarks/bench_zoo.py --members 10    # quick run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "zoo.json"

_CHILD = """
import json, sys, zoo
zoo.build_zoo(json.loads(sys.argv[1]), sys.argv[2], workers=int(sys.argv[3]), progress=False)
"""


def _count(out: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{out / 'index.sqlite'}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM members").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def _hashes(out: Path) -> dict:
    from zoo.store import Zoo

    return {m.member_id: [c.sha256 for c in m.checkpoints] for m in Zoo(out).members()}


def run(members: int, workers: int, keep: Path | None = None) -> dict:
    import zoo

    recipe = zoo.load_recipe("digits_cnn_small").with_members(members)
    load_before = os.getloadavg()
    base = Path(tempfile.mkdtemp(prefix="bench_zoo_"))
    try:
        full = base / "full"
        t0 = time.perf_counter()
        rep = zoo.build_zoo(recipe, full, workers=workers, progress=False)
        t_full = time.perf_counter() - t0

        t0 = time.perf_counter()
        noop = zoo.build_zoo(recipe, full, workers=workers, progress=False)
        t_noop = time.perf_counter() - t0
        assert noop.trained == 0

        killed = base / "killed"
        kill_at = max(1, members // 2)
        repo = Path(__file__).resolve().parent.parent
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, json.dumps(recipe.to_dict()), str(killed), str(workers)],
            cwd=repo, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            while _count(killed) < kill_at and proc.poll() is None:
                time.sleep(0.05)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        t_until_kill = time.perf_counter() - t0
        done_at_kill = _count(killed)
        t0 = time.perf_counter()
        resumed = zoo.build_zoo(recipe, killed, workers=workers, progress=False)
        t_resume = time.perf_counter() - t0
        identical = _hashes(killed) == _hashes(full)

        df = rep.open().to_pandas()
        acc = df["test_acc"].astype(float)
        result = {
            "benchmark": "zoo_build",
            "recipe": "digits_cnn_small",
            "members": members,
            "workers": workers,
            "backend": "local",
            "epochs_per_member": int(recipe.train["epochs"]),
            "full_build_s": round(t_full, 2),
            "members_per_minute": round(60.0 * members / t_full, 2),
            "mean_member_train_s": round(rep.train_time / max(1, rep.trained), 3),
            "noop_resume_s": round(t_noop, 3),
            "kill_after_members": done_at_kill,
            "time_until_kill_s": round(t_until_kill, 2),
            "resume_s": round(t_resume, 2),
            "resume_trained": resumed.trained,
            "resume_skipped": resumed.skipped,
            "kill_resume_overhead_s": round(t_until_kill + t_resume - t_full, 2),
            "resumed_identical_to_uninterrupted": identical,
            "test_acc": {"min": round(float(acc.min()), 4), "median": round(float(acc.median()), 4),
                         "max": round(float(acc.max()), 4)},
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "platform": platform.platform(),
                        # other processes on the machine slow every timing above
                        "loadavg_1m_before": round(load_before[0], 2),
                        "loadavg_1m_after": round(os.getloadavg()[0], 2)},
        }
        if keep is not None:
            if keep.exists():
                shutil.rmtree(keep)
            shutil.copytree(full, keep)
        return result
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _rows(res: dict) -> list[tuple[str, object]]:
    """The table: one row per value of the JSON result, under its key
    (``_s``: seconds; nested dicts as ``key.field``)."""
    rows: list[tuple[str, object]] = []
    for key, value in res.items():
        if isinstance(value, dict):
            rows += [(f"{key}.{k}", v) for k, v in value.items()]
        else:
            rows.append((key, value))
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=100, help="zoo size (default 100)")
    ap.add_argument("--workers", type=int, default=2, help="process-pool workers (default 2)")
    ap.add_argument("--out", type=Path, default=RESULTS, help=f"JSON output (default {RESULTS})")
    ap.add_argument("--keep", type=Path, default=None, help="copy the built zoo here")
    args = ap.parse_args(argv)
    res = run(args.members, args.workers, args.keep)
    print(f"{'zoo benchmark (digits_cnn_small)':34s} value")
    for k, v in _rows(res):
        print(f"{k:34s} {v}")
    from zoo.store import atomic_write_bytes

    atomic_write_bytes(args.out, (json.dumps(res, indent=2) + "\n").encode())
    print(f"\nwrote {args.out}")
    return res


if __name__ == "__main__":
    main()
