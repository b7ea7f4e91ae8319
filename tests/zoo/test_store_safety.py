"""A zoo never deletes what it did not write; a broken index is an error with a
way out; workers die with the builder."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- workers die with the builder

def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def _index_count(path: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{path / 'index.sqlite'}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute("SELECT COUNT(*) FROM members").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


_BUILD_SCRIPT = """
import sys, zoo
from tests.zoo.conftest import tiny_recipe_dict
zoo.build_zoo(tiny_recipe_dict(num_members=8, epochs=8), sys.argv[1], workers=2, backend="local", progress=False)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_when_only_the_builder_is_killed(tmp_path):
    """SIGKILL the builder alone (not its process group): its pool workers and
    the multiprocessing resource tracker must not stay behind."""
    proc = subprocess.Popen([sys.executable, "-c", _BUILD_SCRIPT, str(tmp_path / "z")], cwd=REPO,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kids: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while _index_count(tmp_path / "z") < 1:  # the workers are past start-up, training
            assert proc.poll() is None, "the build ended before it could be killed"
            assert time.monotonic() < deadline, "the build made no progress"
            time.sleep(0.05)
        kids = _children(proc.pid)
        assert len(kids) >= 3, kids  # 2 workers + the resource tracker
        os.kill(proc.pid, signal.SIGKILL)  # the builder only
        proc.wait()
        deadline = time.monotonic() + 5
        while any(_alive(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [k for k in kids if _alive(k)]
        assert not left, [open(f"/proc/{k}/cmdline").read().replace("\0", " ")[:200] for k in left]
    finally:
        for k in kids:  # leave nothing behind if the assertion failed
            if _alive(k):
                os.kill(k, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
