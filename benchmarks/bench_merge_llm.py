"""Merging GPT-2-small-size checkpoints: time and peak RSS of the streamed
merges (``weightspace.merge.merge_directories``) and of Re-Basin weight
matching, optionally against mergekit on the same directories.

Inputs, built once into ``--workdir`` from a ``transformers.GPT2Config``
(124M parameters at the defaults, random init, fp32, sharded safetensors):
``base`` and two "fine-tunes" ``ft1``/``ft2`` (base plus dense seeded noise
of 1% / 2% of each tensor's standard deviation).

Every run is a fresh subprocess; its peak RSS is its ``VmHWM``
(``/proc/self/status``). ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is
recorded beside it but is not the measure: a fork-exec'ed child starts from
the parent's RSS at the fork, so it reads at least that. The inputs are
built in a subprocess too.

* merges: ``linear`` (ft1, ft2, weights 1 and 2), ``ties`` (mergekit's
  conventions: ``trim="per_tensor"``, ``sign="weighted_sum"``; density 0.3,
  weights 1 and 0.5), ``dare`` (``combine="ties"``, ``rescale="l1"``: mergekit's
  ``dare_ties``; density 0.3), ``slerp`` (ft1 -> ft2, t = 0.3).
* Re-Basin: weight matching of ``base`` against a copy under a planted random
  permutation of every group of its spec plus noise (1e-3 of each tensor's
  standard deviation), saved as its own sharded directory ``planted-*`` (by
  a child of its own); reports time, sweeps, the objective per sweep,
  whether the planted permutation is recovered exactly, and peak RSS. The
  spec is traced on a meta-device model. ``--rebasin-mode directory``
  (default): out-of-core, ``weight_matching`` on the two directories, then
  the permuted model written with ``MatchResult.apply_to_directory``; the
  peak is the whole process's (``VmHWM``: imports, spec,
  matching and writing), with the peak after the imports + spec and after
  the matching reported beside it. ``memory``: both state dicts loaded
  first (the in-memory path, for comparison; nothing written).
* ``--activation``: activation matching (``weightspace.merge.activation_matching``)
  of the same planted pair (``base`` and the planted directory of the
  Re-Basin part) on seeded random token ids (``--act-sequences`` x
  ``--act-seq-len``; random ids suffice to tell a planted permutation: a
  neuron of ``b`` is a noisy copy of one of ``a``'s on any input).
  ``--act-mode loader`` (default): each model given as a loader (a
  meta-device GPT-2 given its directory's memory-mapped tensors), so one is
  resident at a time (they take turns, each run over the data storing its
  slabs for the other's next run); ``memory``: both modules loaded first.
  Statistics (and, with loaders, the stored slabs) are bounded by
  ``--act-max-bytes`` per pass over the data (default the library's
  ``STATS_BYTES``). Reports time (wall + CPU), passes, loads,
  peak RSS (``VmHWM`` reset after the spec, the peak before reported
  beside it), tokens, exact recovery and a digest of the permutation.
* ``--mergekit-python PATH``: the same merges by mergekit (an interpreter
  with ``mergekit`` installed, e.g. ``/work/venvs/mergekit/bin/python``) on
  the same directories; outputs are compared tensor by tensor (max abs
  difference, the largest difference over the tensor's max magnitude, and
  the entries differing by more than float32 rounding: 4 ulp of the larger
  magnitude and 1e-7 of the tensor's scale) and time / memory ratios are
  reported. DARE draws its masks
  differently in the two tools (mergekit: ``torch.bernoulli`` on the global
  generator in its task order; here: one generator per (seed, model,
  tensor)), so its outputs are compared by statistics, not equality.

* ``--baseline-root PATH``: another version of weightspace (a checkout or
  ``git archive`` of, e.g., main) runs the same streamed merges as a third
  tool, in alternation with ours and mergekit (its own bench script with
  ``PYTHONPATH=PATH``): an A/B of two versions under the same load; reports
  ours/baseline wall, CPU and peak RSS and whether the outputs are byte-identical.

The machine may be shared: every run records its wall time and CPU time
(``resource.getrusage``: the merge itself, and ``process_*`` the whole
child with its imports, from ``RUSAGE_CHILDREN``), the main thread's
``blocked_s`` (wall time neither on a CPU nor waiting for one, from
``/proc/thread-self/schedstat``: sleeping on I/O such as fsync, whatever
the load), page faults, context switches, bytes to and from the disk, and
the load average before it; with ``--repeats N`` the two tools run back to back in
alternation and the medians are reported (the peak RSS: the largest).

Run: nice -n 10 python benchmarks/bench_merge_llm.py [--mergekit-python PATH] [--repeats N]
     nice -n 10 python benchmarks/bench_merge_llm.py --methods --no-rebasin --activation  (activation matching only)
     ... --activation --act-mode loader memory  (one model at a time, then both in memory)
Prints a table and writes ``benchmarks/results/merge_llm.json`` (with the
load average).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

#: the merges: our method and options, mergekit's method and parameters
MERGES = {
    "linear": {
        "ours": {"method": "linear", "models": ["ft1", "ft2"], "weights": [1.0, 2.0], "options": {}},
        "mergekit": {"merge_method": "linear", "dtype": "float32",
                     "models": [{"model": "ft1", "parameters": {"weight": 1.0}},
                                {"model": "ft2", "parameters": {"weight": 2.0}}]},
    },
    "ties": {
        "ours": {"method": "ties", "base": "base", "models": ["ft1", "ft2"], "weights": [1.0, 0.5],
                 "options": {"density": 0.3, "trim": "per_tensor", "sign": "weighted_sum"}},
        "mergekit": {"merge_method": "ties", "base_model": "base", "dtype": "float32",
                     "models": [{"model": "ft1", "parameters": {"weight": 1.0, "density": 0.3}},
                                {"model": "ft2", "parameters": {"weight": 0.5, "density": 0.3}}]},
    },
    "dare": {
        "ours": {"method": "dare", "base": "base", "models": ["ft1", "ft2"], "weights": [1.0, 0.5],
                 "options": {"density": 0.3, "combine": "ties", "rescale": "l1", "sign": "weighted_sum",
                             "seed": 0}},
        "mergekit": {"merge_method": "dare_ties", "base_model": "base", "dtype": "float32",
                     "models": [{"model": "ft1", "parameters": {"weight": 1.0, "density": 0.3}},
                                {"model": "ft2", "parameters": {"weight": 0.5, "density": 0.3}}]},
    },
    "task_arithmetic": {
        "ours": {"method": "task_arithmetic", "base": "base", "models": ["ft1", "ft2"], "weights": None,
                 "options": {"scale": [1.0, 0.5]}},
        "mergekit": {"merge_method": "task_arithmetic", "base_model": "base", "dtype": "float32",
                     "parameters": {"normalize": False},
                     "models": [{"model": "ft1", "parameters": {"weight": 1.0}},
                                {"model": "ft2", "parameters": {"weight": 0.5}}]},
    },
    "slerp": {
        "ours": {"method": "slerp", "models": ["ft1", "ft2"], "weights": None, "options": {"t": 0.3}},
        "mergekit": {"merge_method": "slerp", "base_model": "ft1", "dtype": "float32",
                     "models": [{"model": "ft1"}, {"model": "ft2"}], "parameters": {"t": 0.3}},
    },
}

#: where a merge's time goes, for both tools (exec'ed in each child): the main
#: thread's time on a CPU and waiting for one (``/proc/thread-self/schedstat``),
#: so ``blocked_s = wall - on CPU - waiting for a CPU`` is the time it slept on
#: I/O (fsync, disk reads, writeback throttling) whatever the load; page faults
#: and context switches (``getrusage``) and the bytes read from / written to
#: the disk (``/proc/self/io``)
_COUNTERS = r"""
import resource, time
def counters():
    run, runq = (int(x) / 1e9 for x in open("/proc/thread-self/schedstat").read().split()[:2])
    r = resource.getrusage(resource.RUSAGE_SELF)
    io = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines() if line)
    return {"t": time.perf_counter(), "run": run, "runq": runq, "cpu": r.ru_utime + r.ru_stime, "sys": r.ru_stime,
            "minflt": r.ru_minflt, "majflt": r.ru_majflt, "nvcsw": r.ru_nvcsw, "nivcsw": r.ru_nivcsw,
            "read_bytes": int(io["read_bytes"]), "write_bytes": int(io["write_bytes"])}
def spent(c0, c1):
    d = {k: c1[k] - c0[k] for k in c0}
    return {"wall_s": d["t"], "cpu_s": d["cpu"], "sys_s": d["sys"], "runq_s": d["runq"],
            "blocked_s": d["t"] - d["run"] - d["runq"], "minflt": d["minflt"], "majflt": d["majflt"],
            "nvcsw": d["nvcsw"], "nivcsw": d["nivcsw"], "disk_read_bytes": d["read_bytes"],
            "disk_write_bytes": d["write_bytes"]}
"""

_MERGEKIT_CHILD = _COUNTERS + r"""
import json, resource, sys, yaml, torch
cfg_path, out, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(threads)
from mergekit.config import MergeConfiguration
from mergekit.merge import MergeOptions, run_merge
c0 = counters()
with open(cfg_path) as f:
    cfg = MergeConfiguration.model_validate(yaml.safe_load(f))
run_merge(cfg, out, MergeOptions(copy_tokenizer=False, write_model_card=False, num_threads=threads,
                                 random_seed=0, quiet=True))
res = spent(c0, counters())
hwm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(json.dumps({**res, "peak_rss": hwm, "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def rss() -> dict:
    """``VmRSS`` and ``VmHWM`` (bytes) of this process."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out


def gpt2_config(n_layer: int):
    import transformers as T

    return T.GPT2Config(n_layer=n_layer, use_cache=False)


def build_dirs(work: Path, n_layer: int, shard: str) -> dict:
    """``base``, ``ft1``, ``ft2`` under ``work`` (reused when they exist for this config)."""
    import transformers as T

    stamp = work / "built.json"
    want = {"n_layer": n_layer, "shard": shard, "noise": [0.01, 0.02]}
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        return want
    torch.manual_seed(0)
    model = T.GPT2LMHeadModel(gpt2_config(n_layer)).eval()
    model.save_pretrained(work / "base", max_shard_size=shard)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    for i, scale in enumerate(want["noise"], start=1):
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for k, p in model.named_parameters():
                b = base[k]
                p.copy_(b + scale * b.std() * torch.randn(b.shape, generator=g))
        model.save_pretrained(work / f"ft{i}", max_shard_size=shard)
    stamp.write_text(json.dumps(want))
    return want


def child_ours(work: Path, name: str, out: Path, threads: int) -> dict:
    from weightspace.merge import merge_directories

    torch.set_num_threads(threads)
    import resource

    m = MERGES[name]["ours"]
    ns: dict = {}
    exec(_COUNTERS, ns)
    c0 = ns["counters"]()
    plan = merge_directories(m["method"], [work / x for x in m["models"]], out,
                             base=work / m["base"] if "base" in m else None, weights=m["weights"],
                             options=m["options"], max_shard_size=200 * 2**20)
    res = ns["spent"](c0, ns["counters"]())
    return {**res, "peak_rss": rss()["VmHWM"], "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "model_bytes": plan.model_bytes, "shards": len(plan.shards)}


#: the tied name of GPT-2 that its directories do not store
TIED = {"lm_head.weight": "transformer.wte.weight"}


def _meta_spec(n_layer: int):
    """GPT-2's spec traced on a meta-device model (no weights allocated)."""
    import transformers as T

    from weightspace.core import permutation_spec

    with torch.device("meta"):
        meta = T.GPT2LMHeadModel(gpt2_config(n_layer)).eval()
        return permutation_spec(meta, (torch.zeros(1, 8, dtype=torch.long),), tracer="auto")


def planted_dir(work: Path, seed: int, noise: float) -> Path:
    return work / f"planted-s{seed}-n{noise:g}"


def build_planted(work: Path, seed: int, noise: float) -> dict:
    """``base`` under the planted permutation (``random_permutation(seed + 1)``)
    plus seeded noise, saved like ``base`` (reused when it exists)."""
    import transformers as T

    from weightspace.symmetry import apply_permutation, random_permutation

    out = planted_dir(work, seed, noise)
    built = json.loads((work / "built.json").read_text())
    if (out / "config.json").is_file():
        return {"planted": str(out)}
    spec = _meta_spec(built["n_layer"])
    model = T.GPT2LMHeadModel.from_pretrained(work / "base").eval()
    sd = apply_permutation(model.state_dict(), spec, random_permutation(spec, seed=seed + 1))
    g = torch.Generator().manual_seed(seed + 2)
    for k, v in sd.items():
        if v.is_floating_point() and k != "lm_head.weight":
            v.add_(noise * v.std() * torch.randn(v.shape, generator=g))
    sd["lm_head.weight"] = sd["transformer.wte.weight"]
    model.load_state_dict(sd)
    model.save_pretrained(out, max_shard_size=built["shard"])
    return {"planted": str(out)}


def child_rebasin(work: Path, threads: int, seed: int, noise: float, mode: str = "directory") -> dict:
    import shutil

    from weightspace.merge import weight_matching
    from weightspace.symmetry import invert_permutation, random_permutation

    def maxrss() -> int:
        # VmHWM, not ru_maxrss: Linux carries the spawning process's high-water
        # mark into the child's ru_maxrss across exec (the parent here has
        # held merge outputs), VmHWM belongs to this process's own memory
        return rss()["VmHWM"]

    torch.set_num_threads(threads)
    n_layer = json.loads((work / "built.json").read_text())["n_layer"]
    rss_start = maxrss()
    t, c = time.perf_counter(), time.process_time()
    spec = _meta_spec(n_layer)
    spec_s, spec_cpu_s = time.perf_counter() - t, time.process_time() - c
    a_dir, b_dir = work / "base", planted_dir(work, seed, noise)
    rss_spec = maxrss()
    model_bytes = sum(f.stat().st_size for f in a_dir.glob("*.safetensors"))  # headers included (a few kB)
    out: dict = {}
    load_avg = os.getloadavg()
    t, c = time.perf_counter(), time.process_time()
    if mode == "memory":
        sds = [_load_dir(d) for d in (a_dir, b_dir)]
        out["load_s"] = time.perf_counter() - t
        res = weight_matching(sds[0], sds[1], spec, seed=seed)
    else:
        res = weight_matching(a_dir, b_dir, spec, seed=seed, tied=TIED)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    rss_match = maxrss()
    if mode == "directory":
        dest = work / "out_rebasin"
        t, c = time.perf_counter(), time.process_time()
        res.apply_to_directory(b_dir, dest)
        out.update(write_s=time.perf_counter() - t, write_cpu_s=time.process_time() - c,
                   written_bytes=sum(f.stat().st_size for f in dest.glob("*.safetensors")))
        shutil.rmtree(dest)
    want = invert_permutation(spec, random_permutation(spec, seed=seed + 1))
    wrong = [k for k in want if not torch.equal(res.perm[k], want[k])]
    return {
        "mode": mode, "spec_s": spec_s, "spec_cpu_s": spec_cpu_s, "groups": len(spec.groups), "wall_s": wall,
        "cpu_s": cpu, "objective_per_sweep_kind": res.info.get("objective_per_sweep"), "load_avg_before": load_avg,
        "sweeps": res.sweeps, "stop": res.info["stop"],
        "objective": res.objective, "initial_objective": res.info["initial_objective"],
        "objective_per_sweep": [h["objective"] for h in res.info["history"]],
        "build_s": res.info["timing"]["build_s"], "lap_s": res.info["timing"]["lap_s"],
        "steps": res.info["timing"]["steps"], "cache_peak_bytes": res.info["cache_peak_bytes"],
        "planted_exact": not wrong, "groups_wrong": wrong[:10],
        "peak_rss": maxrss(), "peak_rss_start": rss_start, "peak_rss_after_spec": rss_spec,
        "peak_rss_after_match": rss_match,
        "ru_maxrss": __import__("resource").getrusage(__import__("resource").RUSAGE_SELF).ru_maxrss * 1024,
        "model_bytes": model_bytes, "params": model_bytes // 4, **out,
    }


def _load_dir(d: Path) -> dict:
    """A GPT-2 directory's state dict, the tied LM head sharing the embedding."""
    from weightspace.io import load_state_dict

    sd: dict = {}
    for f in sorted(d.glob("*.safetensors")):
        sd.update(load_state_dict(str(f)))
    sd["lm_head.weight"] = sd["transformer.wte.weight"]
    return sd


def child_activation(work: Path, threads: int, seed: int, noise: float, sequences: int, seq_len: int,
                     batch: int, max_bytes: int | None, dtype: str, mode: str = "loader") -> dict:
    """Activation matching of the Re-Basin pair (:func:`build_planted`) on
    seeded random token ids: time, peak RSS, exact recovery. ``mode``
    ``loader``: the models are given as loaders (a meta-device GPT-2 given
    the tensors of its directory, memory-mapped), one resident at a time;
    ``memory``: both modules loaded first. The peak is reset after the spec
    (and the models, in memory) and read at the end (``VmHWM``); the peak
    before the reset is reported beside it."""
    import resource

    import transformers as T

    from weightspace.merge import activation_matching
    from weightspace.symmetry import invert_permutation, random_permutation

    torch.set_num_threads(threads)
    build_planted(work, seed, noise)
    n_layer = json.loads((work / "built.json").read_text())["n_layer"]
    t, c = time.perf_counter(), time.process_time()
    spec = _meta_spec(n_layer)
    spec_s, spec_cpu_s = time.perf_counter() - t, time.process_time() - c
    perm = random_permutation(spec, seed=seed + 1)
    dirs = (work / "base", planted_dir(work, seed, noise))
    model_bytes = sum(f.stat().st_size for f in dirs[0].glob("*.safetensors"))

    def loader(d: Path):
        def load():  # modules on the meta device take the (mapped) tensors as they are
            with torch.device("meta"):
                m = T.GPT2LMHeadModel(gpt2_config(n_layer)).eval()
            m.load_state_dict(_load_dir(d), assign=True)
            return m

        return load

    models = [loader(d) for d in dirs]
    if mode == "memory":
        models = [load() for load in models]
    vocab = gpt2_config(n_layer).vocab_size
    x = torch.randint(0, vocab, (sequences, seq_len), generator=torch.Generator().manual_seed(seed + 3))
    peak_before = rss()["VmHWM"]
    with open("/proc/self/clear_refs", "w") as f:  # peak from here on: the matcher (and the models in memory)
        f.write("5")
    before = rss()
    load = os.getloadavg()
    t, c = time.perf_counter(), time.process_time()
    res = activation_matching(models[0], models[1], x, spec, batch_size=batch, max_bytes=max_bytes,
                              dtype=getattr(torch, dtype), seed=seed)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    peak = rss()["VmHWM"]
    want = invert_permutation(spec, perm)
    wrong = [k for k in want if not torch.equal(res.perm[k], want[k])]
    return {
        "mode": mode, "spec_s": spec_s, "spec_cpu_s": spec_cpu_s, "groups": len(spec.groups), "wall_s": wall,
        "cpu_s": cpu, "load_avg_before": load, "load_avg_after": os.getloadavg(), "tokens": sequences * seq_len,
        "sequences": sequences, "seq_len": seq_len, "batch_sequences": batch, "data": "seeded random token ids",
        "max_bytes": max_bytes, "dtype": dtype, "passes": res.info["passes"], "stats_bytes": res.info["stats_bytes"],
        "store_bytes": res.info["store_bytes"], "held_bytes": res.info["held_bytes"], "loads": res.info["loads"],
        "fallback_groups": res.info["fallback_groups"], "objective": res.objective,
        "planted_exact": not wrong, "groups_wrong": wrong[:10], "groups_checked": len(want),
        "perm_sha256": _perm_digest(res.perm),
        "peak_rss": peak, "peak_rss_before_match": peak_before,
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_before_match": before["VmRSS"], "model_bytes": model_bytes, "params": model_bytes // 4,
        "threads": threads,
    }


def _perm_digest(perm: dict) -> str:
    """sha256 of a permutation (groups in name order, int64 indices): equal
    digests, identical permutations."""
    import hashlib

    h = hashlib.sha256()
    for k in sorted(perm):
        h.update(k.encode() + perm[k].to(torch.int64).numpy().tobytes())
    return h.hexdigest()


def run_child(argv: list[str], python: str = sys.executable, env: dict | None = None) -> dict:
    """One fresh subprocess; adds its whole CPU time (imports included, from
    ``RUSAGE_CHILDREN``), its wall time and the load average before it."""
    import resource

    load = os.getloadavg()
    r0, t = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    proc = subprocess.run([python, *argv], capture_output=True, text=True, timeout=3600,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    r1, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - t
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": " | ".join(tail) or f"exit {proc.returncode}"}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res.update(process_wall_s=wall, process_cpu_s=r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime,
               load_avg_before=load)
    return res


def _median(runs: list[dict], key: str) -> float | None:
    vals = sorted(r[key] for r in runs if key in r)
    return vals[len(vals) // 2] if vals else None


def compare_dirs(ours: Path, theirs: Path) -> dict:
    """Tensor-by-tensor comparison of two safetensors directories."""
    import numpy as np
    from safetensors import safe_open

    def tensors(d: Path) -> dict:
        return {k: f for f in sorted(d.glob("*.safetensors")) for k in safe_open(str(f), "pt").keys()}

    a, b = tensors(ours), tensors(theirs)
    common = sorted(set(a) & set(b))
    out = {"only_ours": sorted(set(a) - set(b)), "only_mergekit": sorted(set(b) - set(a)), "tensors": len(common),
           "max_abs_diff": 0.0, "max_ulp": 0.0, "identical_tensors": 0, "worst": None, "equal_fraction": 0.0,
           "max_diff_over_scale": 0.0, "entries_beyond_rounding": 0}
    equal = total = 0
    for k in common:
        x = safe_open(str(a[k]), "pt").get_tensor(k).float()
        y = safe_open(str(b[k]), "pt").get_tensor(k).float()
        if x.shape != y.shape:
            out.setdefault("shape_mismatch", []).append(k)
            continue
        d = (x - y).abs()
        ulp = np.spacing(np.maximum(x.abs().numpy(), y.abs().numpy()).astype(np.float32))
        u = float((d.numpy() / ulp).max()) if d.numel() else 0.0
        m = float(d.max()) if d.numel() else 0.0
        scale = float(y.abs().max()) if y.numel() else 0.0
        out["max_diff_over_scale"] = max(out["max_diff_over_scale"], m / scale if scale else m)
        # beyond float32 rounding: more than 4 ulp of the larger magnitude and of 1e-7 of the tensor's scale
        tol = np.maximum(4 * ulp, 1e-7 * scale)
        out["entries_beyond_rounding"] += int((d.numpy() > tol).sum())
        equal += int((d == 0).sum())
        total += d.numel()
        out["identical_tensors"] += int(m == 0.0)
        if u > out["max_ulp"]:
            out["max_ulp"], out["worst"] = u, k
        out["max_abs_diff"] = max(out["max_abs_diff"], m)
    out["equal_fraction"] = equal / max(total, 1)
    return out


def dare_stats(out: Path, base: Path) -> dict:
    """Fraction of entries equal to the base (dropped everywhere) in a DARE output."""
    from safetensors import safe_open

    same = total = 0
    idx = json.loads((base / "model.safetensors.index.json").read_text())["weight_map"]
    for f in sorted(out.glob("*.safetensors")):
        with safe_open(str(f), "pt") as h:
            for k in h.keys():
                if k not in idx:
                    continue
                x = h.get_tensor(k)
                y = safe_open(str(base / idx[k]), "pt").get_tensor(k)
                same += int((x == y).sum())
                total += x.numel()
    return {"unchanged_fraction": same / max(total, 1)}


def mergekit_yaml(work: Path, name: str) -> str:
    import yaml

    cfg = json.loads(json.dumps(MERGES[name]["mergekit"]))
    for m in cfg["models"]:
        m["model"] = str(work / m["model"])
    if "base_model" in cfg:
        cfg["base_model"] = str(work / cfg["base_model"])
    return yaml.safe_dump(cfg, sort_keys=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ws_bench_merge_llm"))
    ap.add_argument("--n-layer", type=int, default=12, help="GPT-2 layers (12: GPT-2 small, 124M)")
    ap.add_argument("--shard", default="200MB", help="max_shard_size of the input directories")
    ap.add_argument("--methods", nargs="*", default=list(MERGES))
    ap.add_argument("--threads", type=int, default=1, help="torch threads of every run (both tools)")
    ap.add_argument("--mergekit-python", default=None, help="interpreter with mergekit installed")
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs per tool and method, the two tools in alternation (medians reported)")
    ap.add_argument("--baseline-root", type=Path, default=None,
                    help="a checkout of another version of weightspace (e.g. `git archive main`): its "
                         "streamed merges run as a third tool, in alternation with ours (A/B, same inputs)")
    ap.add_argument("--no-rebasin", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise", type=float, default=1e-3, help="noise of the Re-Basin pair (x tensor std)")
    ap.add_argument("--rebasin-mode", choices=("directory", "memory"), default="directory",
                    help="Re-Basin out-of-core on the directories (default) or on state dicts loaded first")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "merge_llm.json")
    ap.add_argument("--activation", action="store_true",
                    help="also run activation matching on the Re-Basin pair (seeded random token ids)")
    ap.add_argument("--act-sequences", type=int, default=16, help="activation matching: token sequences")
    ap.add_argument("--act-seq-len", type=int, default=128, help="activation matching: tokens per sequence")
    ap.add_argument("--act-batch", type=int, default=4, help="activation matching: sequences per forward")
    ap.add_argument("--act-max-bytes", type=int, default=None,
                    help="activation matching: statistics per pass (default: the library's STATS_BYTES; 0: one pass)")
    ap.add_argument("--act-dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--act-mode", nargs="+", default=["loader"], choices=["loader", "memory"],
                    help="activation matching: models given as loaders, one resident at a time (default), "
                         "or both loaded first; several: run each in turn (the first is 'activation', the "
                         "others its 'other_modes')")
    ap.add_argument("--compare-only", action="store_true",
                    help="recompute the output comparisons of an existing --out JSON from the workdir's outputs")
    ap.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.compare_only:
        payload = json.loads(args.out.read_text())
        for row in payload["merges"]:
            ours, mk = args.workdir / f"out_ours_{row['method']}", args.workdir / f"out_mergekit_{row['method']}"
            if ours.is_dir() and mk.is_dir():
                row["compare"] = compare_dirs(ours, mk)
                print(row["method"], json.dumps(row["compare"]))
        args.out.write_text(json.dumps(payload, indent=2))
        return
    if args.child:
        kind = args.child[0]
        if kind == "build":
            res = build_dirs(args.workdir, args.n_layer, args.shard)
        elif kind == "ours":
            res = child_ours(args.workdir, args.child[1], Path(args.child[2]), args.threads)
        elif kind == "planted":
            res = build_planted(args.workdir, args.seed, args.noise)
        elif kind == "activation":
            from weightspace.merge.activations import STATS_BYTES

            mb = STATS_BYTES if args.act_max_bytes is None else (args.act_max_bytes or None)
            res = child_activation(args.workdir, args.threads, args.seed, args.noise, args.act_sequences,
                                   args.act_seq_len, args.act_batch, mb, args.act_dtype, args.act_mode[0])
        else:
            res = child_rebasin(args.workdir, args.threads, args.seed, args.noise, args.rebasin_mode)
        print(json.dumps(res))
        return

    args.workdir.mkdir(parents=True, exist_ok=True)
    me = [sys.executable, str(Path(__file__).resolve()), "--workdir", str(args.workdir), "--threads",
          str(args.threads)]
    t = time.perf_counter()
    built = run_child(me[1:] + ["--n-layer", str(args.n_layer), "--shard", args.shard, "--child", "build"])
    if "error" in built:
        raise SystemExit(f"building the inputs failed: {built['error']}")
    build_s = time.perf_counter() - t

    def save(rows: list, rebasin: dict | None, activation: dict | None = None) -> None:
        payload = {
            "torch": torch.__version__, "threads": args.threads, "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "load_avg": os.getloadavg(), "inputs": built, "build_s": build_s,
            "mergekit_python": args.mergekit_python, "merges": rows, "rebasin": rebasin,
        }
        if activation is not None:
            payload["activation"] = activation
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=2))

    rows = []
    for name in args.methods:
        row: dict = {"method": name, "ours_options": MERGES[name]["ours"], "mergekit_config": MERGES[name]["mergekit"]}
        out_ours = args.workdir / f"out_ours_{name}"
        out_mk = args.workdir / f"out_mergekit_{name}"
        out_base = args.workdir / f"out_baseline_{name}"
        if args.mergekit_python:
            cfg = args.workdir / f"mergekit_{name}.yml"
            cfg.write_text(mergekit_yaml(args.workdir, name))
        runs: dict[str, list] = {"ours": [], "baseline": [], "mergekit": []}
        for _ in range(args.repeats):  # the tools back to back, in alternation
            runs["ours"].append(run_child(me[1:] + ["--child", "ours", name, str(out_ours)]))
            if args.baseline_root:  # its own bench script and package (PYTHONPATH), no bytecode written there
                base_me = [str(args.baseline_root / "benchmarks" / "bench_merge_llm.py"), *me[2:]]
                runs["baseline"].append(run_child(base_me + ["--child", "ours", name, str(out_base)],
                                                  env={"PYTHONPATH": str(args.baseline_root),
                                                       "PYTHONDONTWRITEBYTECODE": "1"}))
            if args.mergekit_python:
                runs["mergekit"].append(run_child(["-c", _MERGEKIT_CHILD, str(cfg), str(out_mk), str(args.threads)],
                                                  python=args.mergekit_python))
        for side, rs in runs.items():
            if not rs:
                continue
            bad = [r for r in rs if "error" in r]
            row[side] = bad[0] if bad else {
                "wall_s": _median(rs, "wall_s"), "cpu_s": _median(rs, "cpu_s"), "blocked_s": _median(rs, "blocked_s"),
                "peak_rss": max(r["peak_rss"] for r in rs),
                "process_wall_s": _median(rs, "process_wall_s"), "process_cpu_s": _median(rs, "process_cpu_s"),
                "runs": rs,
            }
        if "mergekit" in row and "error" not in row["mergekit"] and "error" not in row["ours"]:
            row["compare"] = compare_dirs(out_ours, out_mk)
            row["time_ratio"] = row["ours"]["wall_s"] / row["mergekit"]["wall_s"]
            row["cpu_ratio"] = row["ours"]["cpu_s"] / row["mergekit"]["cpu_s"]
            row["rss_ratio"] = row["ours"]["peak_rss"] / row["mergekit"]["peak_rss"]
            if name == "dare":
                row["dare_stats"] = {"ours": dare_stats(out_ours, args.workdir / "base"),
                                     "mergekit": dare_stats(out_mk, args.workdir / "base")}
        if "baseline" in row and "error" not in row["baseline"] and "error" not in row["ours"]:
            row["baseline_identical"] = all(
                (out_base / f.name).is_file() and (out_base / f.name).read_bytes() == f.read_bytes()
                for f in sorted(out_ours.glob("*.safetensors")))
            row["vs_baseline"] = {k: row["ours"][k] / row["baseline"][k] for k in ("wall_s", "cpu_s", "peak_rss")}
            if "mergekit" in row and "error" not in row["mergekit"]:
                row["baseline_time_ratio"] = row["baseline"]["wall_s"] / row["mergekit"]["wall_s"]
                row["baseline_cpu_ratio"] = row["baseline"]["cpu_s"] / row["mergekit"]["cpu_s"]
        rows.append(row)
        save(rows, None)
        print(json.dumps({k: v for k, v in row.items() if k not in ("ours_options", "mergekit_config")}), flush=True)
    rebasin = None
    if not args.no_rebasin:
        rb = ["--seed", str(args.seed), "--noise", str(args.noise)]
        planted = run_child(me[1:] + rb + ["--child", "planted"])
        if "error" in planted:
            raise SystemExit(f"building the planted Re-Basin model failed: {planted['error']}")
        rebasin = run_child(me[1:] + rb + ["--rebasin-mode", args.rebasin_mode, "--child", "rebasin"])
    activation = None
    if args.activation:
        runs = [run_child(me[1:] + ["--seed", str(args.seed), "--noise", str(args.noise),
                                    "--act-sequences", str(args.act_sequences), "--act-seq-len",
                                    str(args.act_seq_len), "--act-batch", str(args.act_batch),
                                    "--act-dtype", args.act_dtype, "--act-mode", mode]
                          + ([] if args.act_max_bytes is None else ["--act-max-bytes", str(args.act_max_bytes)])
                          + ["--child", "activation"])
                for mode in args.act_mode]
        activation = {**runs[0], **({"other_modes": runs[1:]} if runs[1:] else {})}
    gb = 2**30
    print(f"\n{'method':8s} {'ours s':>7s} {'cpu s':>6s} {'blk s':>6s} {'ours GB':>8s} | {'mergekit s':>10s} "
          f"{'cpu s':>6s} {'blk s':>6s} {'mk GB':>6s} | {'time x':>6s} {'cpu x':>6s} {'mem x':>6s} {'max |d|':>9s} {'|d|/scale':>9s} {'beyond':>7s}")
    for r in rows:
        o, mk, c = r["ours"], r.get("mergekit", {}), r.get("compare", {})
        f = lambda d, k, s, fmt: format(d[k] / s, fmt) if k in d else "-"  # noqa: E731
        print(f"{r['method'][:8]:8s} {f(o, 'wall_s', 1, '7.1f'):>7s} {f(o, 'cpu_s', 1, '6.1f'):>6s} "
              f"{f(o, 'blocked_s', 1, '6.2f'):>6s} {f(o, 'peak_rss', gb, '8.2f'):>8s} | "
              f"{f(mk, 'wall_s', 1, '10.1f'):>10s} {f(mk, 'cpu_s', 1, '6.1f'):>6s} {f(mk, 'blocked_s', 1, '6.2f'):>6s} "
              f"{f(mk, 'peak_rss', gb, '6.2f'):>6s} | {f(r, 'time_ratio', 1, '6.2f'):>6s} "
              f"{f(r, 'cpu_ratio', 1, '6.2f'):>6s} {f(r, 'rss_ratio', 1, '6.2f'):>6s} "
              f"{f(c, 'max_abs_diff', 1, '9.2e'):>9s} {f(c, 'max_diff_over_scale', 1, '9.2e'):>9s} "
              f"{f(c, 'entries_beyond_rounding', 1, '7.0f'):>7s}")
        for side in ("ours", "baseline", "mergekit"):
            if "error" in r.get(side, {}):
                print(f"  {side} error: {r[side]['error']}")
        if "vs_baseline" in r:
            b = r["baseline"]
            print(f"  baseline {b['wall_s']:7.1f} {b['cpu_s']:6.1f} {b['blocked_s']:6.2f} {b['peak_rss'] / gb:8.2f}"
                  f" | ours/baseline wall {r['vs_baseline']['wall_s']:.2f} cpu {r['vs_baseline']['cpu_s']:.2f}"
                  f" rss {r['vs_baseline']['peak_rss']:.2f}, outputs identical: {r['baseline_identical']}")
    if rebasin is not None:
        if "error" in rebasin:
            print(f"\nRe-Basin error: {rebasin['error']}")
        else:
            rb = rebasin
            mb = rb["model_bytes"]
            print(f"\nRe-Basin weight matching ({rb['mode']}), {rb['params'] / 1e6:.0f}M params, {rb['groups']} "
                  f"groups: {rb['wall_s']:.1f} s, CPU {rb['cpu_s']:.1f} s ({rb['sweeps']} sweeps, stop: {rb['stop']}; "
                  f"spec {rb['spec_s']:.1f} s, CPU {rb['spec_cpu_s']:.1f} s), planted exact: {rb['planted_exact']}; "
                  f"peak RSS of the process {rb['peak_rss'] / gb:.2f} GiB = {rb['peak_rss'] / mb:.2f}x one model "
                  f"(after imports + spec {rb['peak_rss_after_spec'] / mb:.2f}x, after matching "
                  f"{rb['peak_rss_after_match'] / mb:.2f}x)"
                  + (f"; writing the permuted model {rb['write_s']:.1f} s" if "write_s" in rb else ""))
            print("  objective per sweep:", ", ".join(f"{v:.6g}" for v in rb["objective_per_sweep"]))
    if activation is not None:
        others = activation.get("other_modes", [])
        for ac in [activation] + others:
            print_activation(ac)
        for ac in others:
            if "error" not in ac and "error" not in activation:
                print(f"  {ac['mode']} vs {activation['mode']}: same permutation "
                      f"{ac['perm_sha256'] == activation['perm_sha256']}, objective difference "
                      f"{ac['objective'] - activation['objective']:.3g}")
    save(rows, rebasin, activation)
    print(f"\nwrote {args.out}")


def print_activation(ac: dict) -> None:
    gb = 2**30
    if "error" in ac:
        print(f"\nactivation matching error: {ac['error']}")
        return
    mb = ac["model_bytes"]
    print(f"\nactivation matching ({ac['mode']}), {ac['params'] / 1e6:.0f}M params, {ac['groups']} groups, "
          f"{ac['tokens']} tokens ({ac['data']}; {ac['passes']} passes, {ac['loads']} loads, statistics "
          f"{ac['stats_bytes'] / 2**20:.0f} MiB, store {ac['store_bytes'] / 2**20:.0f} MiB, held "
          f"{ac['held_bytes'] / 2**20:.0f} MiB per pass at most, {ac['dtype']}, {ac['threads']} threads): "
          f"{ac['wall_s']:.1f} s, CPU {ac['cpu_s']:.1f} s, load {ac['load_avg_before'][0]:.1f}; planted exact: "
          f"{ac['planted_exact']} (fallback groups {ac['fallback_groups']}); peak RSS {ac['peak_rss'] / gb:.2f} GiB = "
          f"{ac['peak_rss'] / mb:.2f}x one model (before matching: {ac['peak_rss_before_match'] / mb:.2f}x, "
          f"RSS at its start {ac['rss_before_match'] / mb:.2f}x)")


if __name__ == "__main__":
    main()
