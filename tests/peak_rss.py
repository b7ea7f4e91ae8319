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


def save_gpt2_pair(root: Path) -> int:
    """Two independently initialised ~34 MB GPT-2s (vocabulary 8192, width
    256, 8 layers; the embedding a quarter of the model, as in GPT-2 small)
    saved in 10 MB shards to ``root/a`` and ``root/b``. Returns one model's
    bytes (stored tensors: ``lm_head.weight`` is tied)."""
    import torch
    import transformers as T

    cfg = T.GPT2Config(vocab_size=8192, n_embd=256, n_layer=8, n_head=4, n_positions=32, use_cache=False,
                       bos_token_id=0, eos_token_id=0)
    for seed, name in ((1, "a"), (2, "b")):
        torch.manual_seed(seed)
        m = T.GPT2LMHeadModel(cfg).eval()
        m.save_pretrained(Path(root) / name, max_shard_size="10MB")
    return sum(v.numel() * v.element_size() for k, v in m.state_dict().items() if k != "lm_head.weight")
