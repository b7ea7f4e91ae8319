"""Out-of-core merging of Hugging Face checkpoint directories, tensor by tensor.

The elementwise methods (``linear``, ``task_arithmetic``, ``ties``, ``dare``,
``breadcrumbs``, ``slerp``) need one tensor of every model at a time, so
:func:`merge_directories` never holds a whole model: it opens each input
file with ``safetensors.safe_open`` per tensor (closing it again, so no
mapping stays resident), merges that tensor with the in-memory function
(:mod:`weightspace.merge.task_vectors`, same result bit for bit), and
writes it into its output shard at once. The shards are safetensors files
whose header is known from the plan (names, dtypes, shapes), so each merged
tensor goes to its offset as soon as it exists and is freed: peak memory is
the working copies of the largest tensor (see :class:`StreamPlan`), not a
shard. Each shard is a :class:`weightspace.io.AtomicFile` (temp file,
fsync, rename); a background thread fsyncs the shard being written after
every :data:`SYNC_BYTES` and fsyncs and renames each complete shard while
the next one is merged, so the disk works while the CPU merges and the end
waits for the last few tensors only. The index
``model.safetensors.index.json`` is written once every shard is durable.
Tensors are not copied on read (safetensors maps the file copy-on-write)
nor on write (``os.pwrite`` from the tensor's memory).

The paper's global TIES trim (``trim="global"``) ranks a whole task vector
and cannot stream: give ``trim: per_tensor`` (mergekit's convention).
"""

from __future__ import annotations

import json
import os
import struct
import sys
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from weightspace.arch.ref import INDEX_FILE, SINGLE_FILE, _read_index
from weightspace.errors import InputFileError, MissingFileError, StateDictError
from weightspace.io import AtomicFile, atomic_write, write_all
from weightspace.merge._common import MergeConfigError
from weightspace.merge.average import average, task_arithmetic
from weightspace.merge.task_vectors import breadcrumbs, dare, layer_index, slerp, ties

__all__ = ["STREAM_METHODS", "StreamPlan", "TensorPlan", "merge_directories"]

#: files copied from the first model's directory (the base, or ``models[0]`` for slerp)
COPIED_FILES = (
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model",
)

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
#: safetensors' order of the dtypes in a file (``save_file`` lays out the larger first, then by name)
_LAYOUT = {d: i for i, d in enumerate(("I64", "F64", "F32", "I32", "BF16", "F16", "I16", "I8", "U8", "BOOL"))}


def _fn(method: str) -> Callable[..., dict[str, torch.Tensor]]:
    return {"task_arithmetic": task_arithmetic, "ties": ties, "dare": dare, "breadcrumbs": breadcrumbs}[method]


#: bytes written to a shard between two background fsyncs of it: the disk
#: writes while the merge computes, and the last shard's commit waits for
#: at most about this much
SYNC_BYTES = 64 * 2**20

STREAM_METHODS = ("linear", "task_arithmetic", "ties", "dare", "breadcrumbs", "slerp")
#: methods that merge the models themselves and take no base
NO_BASE = ("linear", "slerp")
#: methods that take per-model weights
WEIGHTED = ("linear", "ties", "dare", "breadcrumbs")


@dataclass
class TensorPlan:
    """One tensor of the merge: name, shape, stored dtype, what happens to it
    (``"<method>"`` for floating tensors, ``"non_float"`` for the
    :func:`~weightspace.merge.average.merge_non_float` rule) and its output shard."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    method: str
    shard: str = ""


@dataclass
class StreamPlan:
    """What :func:`merge_directories` will do (``dry_run=True`` returns it).

    Attributes:
        method, options: the merge.
        tensors: one :class:`TensorPlan` per tensor, in the order merged.
        shards: output file name -> its tensor names.
        model_bytes: bytes of one model (the output).
        peak_bytes: estimated peak memory of the merge: for the largest
            tensor, every model's copy, the output and the method's float64
            working vectors (the elementwise steps work in cache-sized
            blocks); each merged tensor is written to its shard and freed.
    """

    method: str
    options: dict
    tensors: list[TensorPlan] = field(default_factory=list)
    shards: dict[str, list[str]] = field(default_factory=dict)
    model_bytes: int = 0
    peak_bytes: int = 0


class _Dir:
    """A safetensors directory: tensor name -> file, shapes and dtypes from the headers."""

    def __init__(self, directory: str | os.PathLike, key: str):
        self.dir, self.key = Path(directory), key
        if not self.dir.is_dir():
            raise MissingFileError(f"no such model directory ({key})", path=self.dir, field=key)
        if (self.dir / INDEX_FILE).is_file():
            self.weight_map = _read_index(self.dir / INDEX_FILE)
        elif (self.dir / SINGLE_FILE).is_file():
            self.weight_map = None
        else:
            raise MissingFileError(f"no {SINGLE_FILE} or {INDEX_FILE} in the model directory ({key})",
                                   path=self.dir / SINGLE_FILE, field=key)
        self.info: dict[str, tuple[tuple[int, ...], str]] = {}
        for fname in sorted(set(self.weight_map.values())) if self.weight_map else [SINGLE_FILE]:
            with self._open(fname) as f:
                for name in f.keys():
                    sl = f.get_slice(name)
                    self.info[name] = (tuple(int(s) for s in sl.get_shape()), str(sl.get_dtype()))
        if self.weight_map is None:
            self.weight_map = {k: SINGLE_FILE for k in self.info}
        missing = sorted(set(self.weight_map) - set(self.info))
        if missing:
            raise StateDictError(f"tensor listed in {INDEX_FILE} is not in its shard ({key})",
                                 path=self.dir / self.weight_map[missing[0]], field=missing[0])

    def _open(self, fname: str):
        p = self.dir / fname
        if not p.is_file():
            raise MissingFileError(f"shard listed in {INDEX_FILE} is missing ({self.key})", path=p, field=self.key)
        try:
            return safe_open(str(p), framework="pt")
        except Exception as exc:  # SafetensorError, OSError
            raise InputFileError(f"cannot read as safetensors ({type(exc).__name__}: {exc}) ({self.key})",
                                 path=p) from None

    def read(self, name: str) -> torch.Tensor:
        """One tensor; the file is opened for it and closed again. Not
        copied: safetensors maps the file copy-on-write, so the tensor reads
        the page cache (writes to it would stay private) and the mapping goes
        when the tensor does."""
        fname = self.weight_map[name]
        try:
            with self._open(fname) as f:
                return f.get_tensor(name)
        except InputFileError:
            raise
        except Exception as exc:
            raise InputFileError(f"cannot read tensor {name!r} ({type(exc).__name__}: {exc})",
                                 path=self.dir / fname, field=name) from None


def _check_options(method: str, options: Mapping[str, Any]) -> dict:
    if method not in STREAM_METHODS:
        raise MergeConfigError(f"method {method!r} cannot stream; use one of {', '.join(STREAM_METHODS)}",
                               field="method")
    opts = dict(options or {})
    if method == "ties" and opts.get("trim", "global") == "global":
        raise MergeConfigError("trim 'global' (the paper's) ranks the whole task vector and cannot stream; "
                               "give trim: per_tensor", field="trim")
    if method == "task_arithmetic" and opts.get("density", 1.0) != 1.0 and opts.get("trim", "global") == "global":
        raise MergeConfigError("density with trim 'global' cannot stream; give trim: per_tensor", field="trim")
    return opts


def _plan(method: str, opts: dict, first: _Dir, others: Sequence[_Dir], max_shard_size: int) -> StreamPlan:
    plan = StreamPlan(method, opts)
    names = list(first.info)
    for d in others:
        if set(d.info) != set(names):
            diff = sorted(set(names) ^ set(d.info))
            raise StateDictError(f"{d.key} has different tensor names than {first.key} (e.g. {diff[0]!r}): "
                                 "are they the same architecture?", path=d.dir, field=diff[0])
    shard_sizes: list[int] = [0]
    shards: list[list[str]] = [[]]
    biggest = 0
    for name in names:
        shape, dt = first.info[name]
        for d in others:
            if d.info[name][0] != shape:
                raise StateDictError(f"tensor {name!r} has shape {d.info[name][0]} in {d.key}, {shape} in "
                                     f"{first.key}", path=d.dir, field=name)
        torch_dt = _DTYPES.get(dt)
        if torch_dt is None:
            raise InputFileError(f"tensor dtype {dt} is not supported", path=first.dir, field=name)
        numel = 1
        for s in shape:
            numel *= s
        nbytes = numel * torch_dt.itemsize
        biggest = max(biggest, numel)
        if shards[-1] and shard_sizes[-1] + nbytes > max_shard_size:
            shards.append([])
            shard_sizes.append(0)
        shards[-1].append(name)
        shard_sizes[-1] += nbytes
        plan.tensors.append(TensorPlan(name, shape, dt, method if torch_dt.is_floating_point else "non_float"))
        plan.model_bytes += nbytes
    k = len(shards)
    files = [SINGLE_FILE] if k == 1 else [f"model-{i + 1:05d}-of-{k:05d}.safetensors" for i in range(k)]
    plan.shards = {f: s for f, s in zip(files, shards)}
    where = {n: f for f, s in plan.shards.items() for n in s}
    for t in plan.tensors:
        t.shard = where[t.name]
    n_in = 1 + len(others)
    # the largest tensor: every model's copy (mapped from the page cache) and
    # the output (linear, task arithmetic and slerp work in cache-sized float64
    # blocks); the task-vector methods add the float64 base, one task vector
    # per model and one |tau| for the trim
    work = {"linear": 0, "task_arithmetic": 0, "slerp": 0}.get(method, 8 * (n_in + 1))
    plan.peak_bytes = biggest * (4 * (n_in + 1) + work)
    return plan


class _ShardWriter:
    """One output shard, written tensor by tensor at offsets fixed by its header.

    The header is what ``safetensors.torch.save_file`` writes for these
    tensors (same layout: larger dtypes first, then by name; metadata keys
    sorted), built from the plan, so a merged tensor can be written as soon
    as it exists. :meth:`put` writes one tensor (``os.pwrite`` from its
    memory, no copy); :meth:`commit` checks every tensor arrived, fsyncs and renames the file
    (:class:`~weightspace.io.AtomicFile`).
    """

    def __init__(self, path: Path, tensors: Sequence[TensorPlan], metadata: Mapping[str, str]):
        if sys.byteorder != "little":  # pragma: no cover - safetensors stores little-endian
            raise StateDictError("the streamed writer needs a little-endian machine", path=path)
        header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
        self.where: dict[str, tuple[int, int, TensorPlan]] = {}
        off = 0
        for t in sorted(tensors, key=lambda t: (_LAYOUT[t.dtype], t.name)):
            n = _DTYPES[t.dtype].itemsize
            for s in t.shape:
                n *= s
            header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [off, off + n]}
            self.where[t.name] = (off, n, t)
            off += n
        head = json.dumps(header, separators=(",", ":")).encode()
        head += b" " * (-len(head) % 8)
        self.start = 8 + len(head)
        self.path = path
        self.file = AtomicFile(path)
        try:
            write_all(self.file.fd, struct.pack("<Q", len(head)) + head, 0)
            os.ftruncate(self.file.fd, self.start + off)
        except BaseException:
            self.file.abort()
            raise
        self.pending = set(self.where)

    def put(self, name: str, tensor: torch.Tensor) -> None:
        off, n, t = self.where[name]
        if tensor.dtype != _DTYPES[t.dtype] or tuple(tensor.shape) != t.shape:
            raise StateDictError(f"merged tensor {name!r} is {tensor.dtype} {tuple(tensor.shape)}, the plan says "
                                 f"{t.dtype} {t.shape}", path=self.path, field=name)
        if n:
            write_all(self.file.fd, tensor.contiguous().reshape(-1).view(torch.uint8).numpy(), self.start + off)
        self.pending.discard(name)

    def commit(self) -> Path:
        if self.pending:
            self.file.abort()
            raise StateDictError(f"{len(self.pending)} tensors of the shard were not written",
                                 path=self.path, field=sorted(self.pending)[0])
        return self.file.commit()


def merge_directories(
    method: str,
    models: Sequence[str | os.PathLike],
    out: str | os.PathLike | None = None,
    *,
    base: str | os.PathLike | None = None,
    weights: Sequence[float] | None = None,
    options: Mapping[str, Any] | None = None,
    max_shard_size: int = 2 * 2**30,
    dry_run: bool = False,
    progress: bool = False,
    metadata: Mapping[str, str] | None = None,
) -> StreamPlan:
    """Merge safetensors model directories tensor by tensor into ``out``.

    Args:
        method: one of :data:`STREAM_METHODS` (``linear``: the weighted
            average of :func:`~weightspace.merge.average.average`, mergekit's
            ``linear``).
        models: the fine-tuned directories (``slerp``: exactly two; ``t = 0``
            is ``models[0]``). Each holds ``model.safetensors`` or shards
            listed in ``model.safetensors.index.json``.
        out: the output directory (not needed with ``dry_run``).
        base: the base model's directory (every method but ``linear`` and ``slerp``).
        weights: per-model weights (linear, ties, dare, breadcrumbs; default 1).
        options: keyword arguments of the method's function (``seed`` for
            dare included); ``ties`` needs ``trim: per_tensor``.
        max_shard_size: bytes per output shard (one ``model.safetensors``
            when everything fits).
        dry_run: only return the plan; nothing is read but the headers and
            nothing is written.
        progress: a tqdm bar over the tensors.
        metadata: extra string entries for every shard's safetensors header
            (and the index's metadata).

    Returns:
        the :class:`StreamPlan` (after writing, unless ``dry_run``). The
        output holds the shards, the index (when sharded), the copied config
        and tokenizer files; every safetensors header carries ``format: pt``
        and ``weightspace_merge`` (JSON: method, options, weights).

    Raises:
        MergeConfigError: a method that cannot stream or a bad option (naming it).
        MissingFileError, InputFileError, StateDictError: a directory or file
            at fault, or models of different tensors or shapes.
        OSError: writing or fsyncing a shard failed (e.g. the disk is full).
            After any error no temporary file is left; shards completed
            before it stay, but the index is (re)written only once every
            shard is durable; a rerun rewrites the directory.
    """
    opts = _check_options(method, options or {})
    if method == "slerp":
        if base is not None:
            raise MergeConfigError("slerp merges two models and takes no base", field="base")
        if len(models) != 2:
            raise MergeConfigError(f"slerp merges exactly 2 models, got {len(models)}", field="models")
        first = _Dir(models[0], "models[0]")
        others = [_Dir(models[1], "models[1]")]
    elif method == "linear":
        if base is not None:
            raise MergeConfigError("linear averages the models and takes no base", field="base")
        if not models:
            raise MergeConfigError("needs at least one model directory", field="models")
        first = _Dir(models[0], "models[0]")
        others = [_Dir(m, f"models[{i + 1}]") for i, m in enumerate(models[1:])]
    else:
        if base is None:
            raise MergeConfigError(f"method {method} needs a base model directory", field="base")
        if not models:
            raise MergeConfigError("needs at least one fine-tuned model directory", field="models")
        first = _Dir(base, "base")
        others = [_Dir(m, f"models[{i}]") for i, m in enumerate(models)]
    plan = _plan(method, opts, first, others, int(max_shard_size))
    if method == "slerp" and "n_layers" not in opts:
        idx = [i for i in (layer_index(t.name) for t in plan.tensors) if i is not None]
        opts["n_layers"] = max(idx) + 1 if idx else 1
    if method in WEIGHTED and weights is not None:
        opts["weights"] = list(weights)
    elif weights is not None:
        raise MergeConfigError(f"method {method} takes no per-model weights (use its options)", field="weights")
    if dry_run:
        return plan

    def merge_one(name: str) -> torch.Tensor:
        tensors = [first.read(name)] + [d.read(name) for d in others]
        if method == "slerp":
            return slerp({name: tensors[0]}, {name: tensors[1]}, **opts)[name]
        if method == "linear":
            return average([{name: t} for t in tensors], **opts)[name]
        return _fn(method)({name: tensors[0]}, [{name: t} for t in tensors[1:]], **opts)[name]

    if out is None:
        raise MergeConfigError("give an output directory (or dry_run=True)", field="out")
    out = Path(out)
    record = {"method": method, "options": {k: v for k, v in opts.items() if k != "weights"},
              "weights": list(weights) if weights is not None else None}
    meta = {**{str(k): str(v) for k, v in (metadata or {}).items()}, "format": "pt",
            "weightspace_merge": json.dumps(record, sort_keys=True)}
    bar = tqdm(total=len(plan.tensors), disable=not progress, desc=f"merge ({method})", unit="tensor")
    by_name = {t.name: t for t in plan.tensors}
    committed: list[Future] = []
    writer = None
    # one background thread fsyncs and renames each complete shard while the next one is merged
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="weightspace-merge-commit") as pool:
        try:
            for fname, names in plan.shards.items():
                for fut in committed:  # a shard that failed to commit stops the merge
                    if fut.done():
                        fut.result()
                writer = _ShardWriter(out / fname, [by_name[n] for n in names], meta)
                unsynced = 0
                for name in names:
                    writer.put(name, merge_one(name))
                    bar.update(1)
                    unsynced += writer.where[name][1]
                    if unsynced >= SYNC_BYTES:  # the disk starts on it now, not at the commit
                        committed.append(pool.submit(os.fsync, writer.file.fd))
                        unsynced = 0
                committed.append(pool.submit(writer.commit))
                writer = None
        except BaseException:
            wait(committed)  # the pool finishes what it has (before the file goes); then the error is raised
            if writer is not None:
                writer.file.abort()
            raise
        finally:
            bar.close()
        for fut in committed:  # every shard is durable before the index names them
            fut.result()
    if len(plan.shards) > 1:
        index = {"metadata": {"total_size": plan.model_bytes, **meta},
                 "weight_map": {t.name: t.shard for t in sorted(plan.tensors, key=lambda t: t.name)}}
        atomic_write(out / INDEX_FILE, json.dumps(index, indent=2))
    for fname in COPIED_FILES:
        src = first.dir / fname
        if src.is_file():
            atomic_write(out / fname, src.read_bytes())
    return plan
