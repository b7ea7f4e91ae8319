"""Peak resident memory of a piece of code, measured in a fresh Python process.

The child script starts with :data:`PROLOGUE`'s functions: after its imports
and warm-up it calls ``reset()`` (the resident set now is the baseline and the
high-water mark ``VmHWM`` is reset to it, ``/proc/self/clear_refs`` 5; Linux
only), then ``peak()`` after each phase (``anon()``: the anonymous part of the
resident set now, i.e. without mapped files). ``run`` returns the JSON the child
prints on its last line.

glibc's malloc is pinned to map every block of 128 KiB or more
(``MALLOC_MMAP_THRESHOLD_``, its default starting value; setting it turns off
the dynamic threshold). Without the pin, a freed block raises the threshold
(up to 32 MiB), later tensors of a few MiB come from the heap and freed heap
memory stays resident, so the same run measured 2.2x to 3.1x one model on two
machines where the live memory was 1.4x (tests/merge/test_rebasin_outofcore.py,
a 34 MB model). The pin makes the measurement the code's live memory plus
mapped file pages, the same on every machine; the benchmarks
(``benchmarks/bench_merge_llm.py``) measure without it, at GPT-2-small size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]

PROLOGUE = r"""
def _status(key):
    return [int(x.split()[1]) * 1024 for x in open("/proc/self/status") if x.startswith(key)][0]

def reset():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status("VmRSS")

def peak():
    return _status("VmHWM")

def anon():
    return _status("RssAnon")
"""

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}


def run(script: str, args: Sequence[str], *, timeout: float = 600) -> dict:
    """Run ``PROLOGUE + script`` with ``args`` in a fresh interpreter (one
    thread, malloc pinned as above) and return its last stdout line as JSON."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **MALLOC_ENV)
    proc = subprocess.run([sys.executable, "-c", PROLOGUE + script, *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
