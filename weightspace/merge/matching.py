"""Permutation alignment of two networks (Git Re-Basin, Ainsworth et al. 2023).

All matchers return a :class:`MatchResult` whose ``perm`` maps model ``b``
onto model ``a``: ``apply_permutation(sd_b, spec, perm)`` is ``b`` expressed
in ``a``'s neuron order (the same function as ``b``).

Weight matching maximises ``sum_W <W_a, P(W_b)>`` over every tensor the spec
permutes, by coordinate descent over the spec's groups: each step fixes the
other groups and solves one linear assignment problem
(:func:`~weightspace.merge.assignment.linear_assignment`) whose cost matrix
sums one matmul per tensor axis the group touches (``group.axes``), with the
current permutations of the other groups applied to the other axes.

Attention heads: a head group and the neuron groups nested in its heads
(q/k pairs, v) are one coordinate, solved exactly by
:func:`~weightspace.merge.assignment.head_assignment`. Activation matching
takes its statistics from :mod:`weightspace.merge.activations`."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from weightspace.arch.ref import INDEX_FILE
from weightspace.core import permutation_spec
from weightspace.errors import SpecError, StateDictError
from weightspace.io import atomic_write
from weightspace.merge._common import (
    MergeError,
    channel_axis,
    coordinates,
    check_finite_data,
    check_state_dict,
    check_state_dicts,
    is_running_stat,
    iter_batches,
    masked_unit_rows,
    model_label,
    nested_rows,
    resolve_spec,
    unit_rows,
)
from weightspace.merge.activations import (
    STATS_BYTES,
    ModelSource,
    Slab,
    head_costs_from_slabs,
    load_model,
    matching_slabs,
    slab_moments,
)
from weightspace.merge.assignment import (
    WarmAssignment,
    head_assignment,
    head_assignment_value,
    linear_assignment,
    set_head_assignment_,
)
from weightspace.merge.stream import COPIED_FILES, _Dir
from weightspace.symmetry import (
    HeadLayout,
    PermGroup,
    Permutation,
    PermutationSpec,
    apply_block_maps,
    apply_permutation,
    axis_index,
    block_index_maps,
    identity_permutation,
    split_groups,
    validate_permutation,
)

__all__ = [
    "CACHE_BYTES",
    "MatchResult",
    "activation_matching",
    "match_objective",
    "ste_matching",
    "weight_matching",
]


#: default bound (bytes) of weight matching's product cache (``cache=True``)
CACHE_BYTES = 128 * 2**20


@dataclass
class MatchResult:
    """A permutation aligning model ``b`` to model ``a``.

    Attributes:
        perm: ``{group: LongTensor[size]}``, gather convention.
        spec: the spec it belongs to.
        method: ``"weight"``, ``"activation"``, ``"ste"``.
        objective: final matching objective (weights: ``sum <W_a, P(W_b)>``;
            activations: summed correlation of matched neurons).
        sweeps: coordinate-descent sweeps run (weight matching).
        converged: the last sweep changed nothing (weight matching stopped
            by ``rtol`` reports ``False``; ``info["stop"]`` says why it stopped).
        info: method-specific details (e.g. groups that fell back to weights,
            STE loss history).
    """

    perm: Permutation
    spec: PermutationSpec
    method: str
    objective: float = float("nan")
    sweeps: int = 0
    converged: bool = True
    info: dict = field(default_factory=dict)

    def apply(self, sd_b: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``sd_b`` permuted into ``a``'s neuron order (a new state_dict)."""
        return apply_permutation(sd_b, self.spec, self.perm)

    def apply_to_directory(self, src: str | os.PathLike, out: str | os.PathLike, *, progress: bool = False) -> Path:
        """Checkpoint directory ``src`` (model ``b``) permuted into ``a``'s
        neuron order, written to ``out`` shard by shard: see :func:`permute_directory`."""
        return permute_directory(src, out, self.spec, self.perm, progress=progress)


def permute_directory(
    src: str | os.PathLike, out: str | os.PathLike, spec: PermutationSpec, perm: Mapping[str, torch.Tensor], *,
    progress: bool = False,
) -> Path:
    """Write safetensors checkpoint directory ``src`` permuted by ``perm`` to ``out``.

    Out-of-core: tensor by tensor, one shard at a time (peak memory: one
    output shard plus a tensor). ``out`` gets the same shards (and
    ``model.safetensors.index.json``) as ``src``, every tensor under its
    stored name and dtype, permuted where ``spec`` says; tensors the spec does
    not know are copied unchanged. ``config.json`` and the tokenizer files
    are copied, so ``from_pretrained(out)`` loads it. Every file is written
    with :func:`weightspace.io.atomic_write`.

    Raises:
        MissingFileError, InputFileError, StateDictError: ``src`` at fault.
        SpecError: a stored tensor's shape is not the spec's.
    """
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    d = _Dir(src, "src")
    out = Path(out)
    maps = block_index_maps(spec, perm)
    meta = {"format": "pt"}
    files: dict[str, list[str]] = {}
    for name, fname in d.weight_map.items():
        files.setdefault(fname, []).append(name)
    total = 0
    with tqdm(total=len(d.weight_map), disable=not progress, desc="permute", unit="tensor") as bar:
        for fname, names in files.items():
            shard = {}
            for name in names:
                shard[name] = apply_block_maps({name: d.read(name)}, spec, maps)[name].contiguous()
                total += shard[name].numel() * shard[name].element_size()
                bar.update(1)
            atomic_write(out / fname, lambda tmp, t=shard: save_file(t, str(tmp), metadata=meta))
            del shard
    if (d.dir / INDEX_FILE).is_file():
        index = {"metadata": {"total_size": total, **meta}, "weight_map": dict(sorted(d.weight_map.items()))}
        atomic_write(out / INDEX_FILE, json.dumps(index, indent=2))
    for fname in COPIED_FILES:
        if (d.dir / fname).is_file():
            atomic_write(out / fname, (d.dir / fname).read_bytes())
    return out


class _Checkpoint(Mapping):
    """A safetensors checkpoint directory as a read-only state_dict whose
    tensors are read on every access and kept by nobody: each one is
    resident only while it is used (safetensors maps it from the page cache,
    so a re-read costs no disk I/O). ``tied``: names that are not stored but
    read as the stored name they are tied to."""

    def __init__(self, directory: str | os.PathLike, key: str, tied: Mapping[str, str] | None = None) -> None:
        self.dir = _Dir(directory, key)
        self.tied = {str(k): str(v) for k, v in dict(tied or {}).items() if k not in self.dir.info}
        for k, v in self.tied.items():
            if v not in self.dir.info:
                raise StateDictError(f"tied name {k!r} points to {v!r}, which is not stored ({key})",
                                     path=self.dir.dir, field=k)

    def __getitem__(self, k: str) -> torch.Tensor:
        name = self.tied.get(k, k)
        if name not in self.dir.info:
            raise KeyError(k)
        return self.dir.read(name)

    def __contains__(self, k: object) -> bool:
        return k in self.dir.info or k in self.tied

    def __iter__(self) -> Iterator[str]:
        yield from self.dir.info
        yield from self.tied

    def __len__(self) -> int:
        return len(self.dir.info) + len(self.tied)


def _state_dict_or_checkpoint(sd: Any, key: str, tied: Mapping[str, str] | None) -> Mapping[str, torch.Tensor]:
    if isinstance(sd, (str, os.PathLike)):
        return _Checkpoint(sd, key, tied)
    return sd


def match_objective(
    sd_a: Mapping[str, torch.Tensor],
    sd_b: Mapping[str, torch.Tensor],
    spec: PermutationSpec,
    perm: Mapping[str, torch.Tensor] | None = None,
    *,
    include_buffers: bool = False,
) -> float:
    """``sum_W <W_a, P(W_b)>`` over the permuted float tensors (float64).

    Streams tensor by tensor: the permuted copy of ``b`` is never held whole.

    Args:
        perm: permutation of ``b`` (``None`` = identity).
        include_buffers: also count BatchNorm running statistics.
    """
    maps = block_index_maps(spec, perm) if perm is not None else None
    keys = [k for k in spec.param_axes if include_buffers or not is_running_stat(k)]
    return _objective(sd_a, sd_b, spec, keys, maps)


def _objective(sd_a, sd_b, spec: PermutationSpec, keys, maps) -> float:
    """:func:`match_objective` over ``keys`` with ``b`` gathered by block ``maps``
    (``None``: as it is), in float64 blocks of rows: neither a permuted copy
    of a tensor nor a float64 copy of it is ever made (an embedding is 38M entries)."""
    total = 0.0
    for k in keys:
        a, b = sd_a[k], sd_b[k]
        if a.dim() == 0:
            total += float(a.double() * b.double())
            continue
        index: dict[int, torch.Tensor] = {}  # per axis, the composed gather index
        for ref in spec.param_axes.get(k, ()) if maps is not None else ():
            ix = axis_index(ref, b.shape[ref.axis], maps)
            index[ref.axis] = ix if ref.axis not in index else index[ref.axis][ix]
        rows = max(1, _CHUNK // max(1, a[0].numel()))
        for s in range(0, a.shape[0], rows):
            e = min(s + rows, a.shape[0])
            bb = b.index_select(0, index[0][s:e]) if 0 in index else b[s:e]
            for axis, ix in index.items():
                if axis:
                    bb = bb.index_select(axis, ix)
            total += float((a[s:e].double() * bb.double()).sum())
    return total


_CHUNK = 1 << 20


def weight_matching(
    sd_a: Mapping[str, torch.Tensor] | str | os.PathLike,
    sd_b: Mapping[str, torch.Tensor] | str | os.PathLike,
    spec: PermutationSpec | str,
    *,
    tied: Mapping[str, str] | None = None,
    seed: int = 0,
    max_sweeps: int = 100,
    init: Mapping[str, torch.Tensor] | None = None,
    groups: Sequence[str] | None = None,
    include_buffers: bool = False,
    dtype: torch.dtype = torch.float32,
    tol: float = 1e-9,
    rtol: float = 1e-3,
    cache: bool | int = True,
    progress: bool = False,
    validate: bool = True,
) -> MatchResult:
    """Align ``b`` to ``a`` by weight matching (Git Re-Basin, Alg. 1).

    Out-of-core: give ``sd_a`` / ``sd_b`` as safetensors checkpoint
    directories (``model.safetensors``, or shards listed in
    ``model.safetensors.index.json``) and neither model is held in memory:
    every cost matrix is built from the tensors that touch its group, read
    from the files when needed and dropped after (products still reused by
    ``cache``). Same permutation as with the state_dicts in memory. Write
    the permuted ``b`` with :meth:`MatchResult.apply_to_directory`.

    Args:
        sd_a: reference state_dict (tensors of the shapes in
            ``spec.param_shapes``) or checkpoint directory.
        sd_b: state_dict to permute (same keys and shapes) or checkpoint directory.
        spec: the architecture's :class:`PermutationSpec` (or a registered
            architecture name).
        tied: for checkpoint directories, spec names that are not stored
            because they are tied to a stored tensor, e.g.
            ``{"lm_head.weight": "transformer.wte.weight"}``.
        seed: seeds the random order of coordinates in every sweep.
        max_sweeps: sweeps over all coordinates at most; stops earlier when a
            whole sweep improves nothing, or by ``rtol``.
        init: starting permutation (default identity).
        groups: optimise only these coordinates (neuron group names, or head
            group names -- a head group carries its nested groups); the rest
            stay at ``init``. Default: all.
        include_buffers: also match BatchNorm running statistics (off: they
            are estimates, not weights).
        dtype: matmul precision of the cost matrices (accumulated in float64).
        tol: relative improvement below which a step counts as no progress.
        rtol: stop once a sweep raised the objective by at most
            ``rtol * |objective|`` (relative objective change; the objective
            is computed exactly after every sweep); ``0``: run until a sweep
            changes nothing.
        cache: keep each tensor's ``[n, n]`` product (in ``dtype``) and reuse
            it while the permutations of its other axes are unchanged; when
            full, the products cheapest to recompute per byte go first (the
            least recently used among equals): ``True`` bounds it by
            :data:`CACHE_BYTES` (128 MiB), an int by that many bytes,
            ``False`` keeps nothing.
        progress: show a tqdm bar over sweeps.
        validate: check both state_dicts against ``spec`` (keys, shapes, finite).

    Returns:
        :class:`MatchResult` with ``perm`` mapping ``b`` onto ``a``;
        ``info["timing"]`` (``build_s``, ``lap_s``, ``steps`` in total),
        ``info["per_group"]`` (the same per coordinate),
        ``info["history"]`` (per sweep: ``sweep``, ``time_s``, ``steps``,
        ``changed`` coordinates, the coordinates' own ``gain`` and the
        ``objective`` after the sweep: exact, or, where every coordinate is
        one neuron group permuting one axis per tensor, the previous one
        plus the gains, as ``info["objective_per_sweep"]`` says: ``"exact"``
        or ``"gains"``; the last sweep's and ``objective`` are always exact),
        ``info["initial_objective"]``,
        ``info["stop"]`` (``"converged"``, ``"rtol"`` or ``"max_sweeps"``) and
        ``info["cache_peak_bytes"]``.
    """
    spec = resolve_spec(spec)
    sd_a, sd_b = _state_dict_or_checkpoint(sd_a, "sd_a", tied), _state_dict_or_checkpoint(sd_b, "sd_b", tied)
    if validate:  # a checkpoint: tensor by tensor
        check_state_dicts([sd_a, sd_b], spec, min_models=2)
    keys = {k for k in spec.param_axes if include_buffers or not is_running_stat(k)}
    coords = coordinates(spec)
    if groups is not None:
        wanted = set(groups)
        unknown = wanted - {_coord_name(c) for c in coords}
        if unknown:
            raise SpecError(
                f"groups {sorted(unknown)} are not matchable coordinates (nested head neurons are "
                "optimised through their head group)"
            )
        coords = [c for c in coords if _coord_name(c) in wanted]
    perm = {k: v.clone().long() for k, v in (init or identity_permutation(spec)).items()}
    validate_permutation(spec, perm)
    budget = 0 if cache is False else CACHE_BYTES if cache is True else int(cache)
    costs = _WeightCosts(spec, sd_a, sd_b, keys, dtype, budget)
    obj_keys = [k for k in spec.param_axes if k in costs.keys]  # match_objective's order

    # A coordinate's cost matrix only changes when a coordinate sharing one of
    # its tensors changes; a coordinate whose cost is unchanged since it was
    # last solved is already optimal, so it is skipped (same result, and the
    # final confirming sweep costs nothing).
    touched = [_coord_tensors(c) for c in coords]
    neighbours = [[j for j, t in enumerate(touched) if t & ti] for ti in touched]
    dirty = [True] * len(coords)
    warm: dict[str, WarmAssignment] = {}
    log = _SweepLog()
    rng = np.random.default_rng(seed)
    maps = block_index_maps(spec, perm)
    objective = initial = _objective(sd_a, sd_b, spec, obj_keys, maps)
    # With neuron coordinates only, none permuting two axes of one tensor, a
    # step raises the objective by exactly its own gain: the objective after
    # a sweep is the one before plus the sweep's gains (up to the rounding of
    # the cost matrices), computed exactly only at the end.
    additive = all(c[0] == "neuron" for c in coords) and _one_axis_per_tensor(coords)
    sweeps, stop = 0, "max_sweeps"
    from tqdm.auto import tqdm

    bar = tqdm(range(max_sweeps), disable=not progress, desc="weight matching", leave=False)
    for _ in bar:
        if not any(dirty):
            stop = "converged"
            break
        sweeps += 1
        improved = False
        with log.sweep():
            for ci in rng.permutation(len(coords)):
                if not dirty[ci]:
                    continue
                dirty[ci] = False
                if _solve_coordinate_(coords[ci], costs, maps, perm, tol, log, warm):
                    improved = True
                    maps = block_index_maps(spec, perm)
                    for j in neighbours[ci]:
                        if j != ci:
                            dirty[j] = True
        if not improved:
            log.history[-1]["objective"] = objective
            stop = "converged"
            break
        previous = objective
        objective = previous + log.history[-1]["gain"] if additive else _objective(sd_a, sd_b, spec, obj_keys, maps)
        log.history[-1]["objective"] = objective
        bar.set_postfix(objective=f"{objective:.6g}")
        if objective - previous <= rtol * abs(objective):
            stop = "rtol"
            break
    else:
        if not any(dirty):
            stop = "converged"
    if additive and sweeps:
        objective = log.history[-1]["objective"] = _objective(sd_a, sd_b, spec, obj_keys, maps)
    info = log.info()
    info.update(initial_objective=initial, stop=stop, cache_peak_bytes=costs.cache.peak,
                objective_per_sweep="gains" if additive else "exact")
    return MatchResult(perm, spec, "weight", objective, sweeps, stop == "converged", info)


def activation_matching(
    model_a: ModelSource,
    model_b: ModelSource,
    data: Any,
    spec: PermutationSpec | None = None,
    *,
    example_input: torch.Tensor | None = None,
    batch_size: int = 256,
    max_samples: int | None = None,
    fallback: str = "weights",
    seed: int = 0,
    max_bytes: int | None = STATS_BYTES,
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> MatchResult:
    """Align ``b`` to ``a`` by activation correlation (Git Re-Basin, Sec. 3.1).

    For every neuron group ``g`` the cost is the summed Pearson correlation,
    over all blocks ``t`` the group spans (both sides of a residual add,
    ...), between the neurons of ``a`` and ``b`` on ``data``:
    ``C_g[i, j] = sum_t corr(A_t[:, s_t + i], B_t[:, s_t + j])``, ``A_t`` the
    ``(rows, width)`` output of block ``t``'s producer (tokens and positions
    count as rows), ``s_t`` the group's offset in it; one LAP per group
    maximises ``sum_i C_g[i, perm[i]]`` (no coordinate descent: activations
    of ``b`` do not depend on how its other layers are permuted). Heads: as
    in :func:`weight_matching`, from the correlations inside each head region.

    Activations are the outputs of the module that creates each block
    (``spec.blocks[b].producer``), taken by forward hooks. Statistics are
    streamed (:func:`~weightspace.merge.activations.slab_moments`): only the
    diagonal slab of each group (``[n, n]`` sums per block) and the head
    regions are accumulated, and beyond ``max_bytes`` the data is run several
    times (each pass stops its forwards early).

    Memory: with two modules both are resident and no activation is kept
    beyond one batch. Give either model as a loader (a zero-argument
    callable returning a fresh module, e.g. one whose tensors are mapped
    from a checkpoint, and keep no other reference to what it returns) and
    only one model is resident at a time: the models take turns, each run
    over all the data pairing its slabs with those the other model stored
    in its run (``rows x width`` each, ``dtype``) and storing its own for the
    next pass (``passes + 1`` runs and loads); ``max_bytes`` then bounds the
    statistics plus that store. The permutation is the same either way.

    Args:
        model_a, model_b: modules of the same architecture (not modified;
            run in eval mode), or loaders returning them (each called about
            every other pass; the same weights each time: the first load of
            each is checked against ``spec``).
        data: inputs ``(N, ...)`` (e.g. token ids ``(N, T)``), ``(x, y)`` or
            an iterable of batches (re-iterable when several passes or a
            loader are used; the same batches every time).
        spec: defaults to the spec traced from ``model_a`` on two samples.
        batch_size: samples per forward (sequences for a language model).
        max_samples: use at most that many samples.
        fallback: for groups whose blocks cannot be captured as a module
            output (e.g. ``nn.MultiheadAttention``'s packed in-projection):
            ``"weights"`` matches them by weight matching with the others
            fixed (both models loaded for it); ``"error"`` raises.
        seed: seed of that weight-matching fallback.
        max_bytes: bound of what one pass holds (bytes; ``None``: one pass,
            everything at once): the sums, ``(w^2 + 6 w)`` entries of ``dtype``
            per slab of width ``w``, plus, one model at a time, the stored
            slabs, ``rows x w`` entries each, of the pass and of the next
            one while they are swapped (a pass of one module may exceed it).
        dtype: of the statistics: float32 (shifted sums, see
            ``activations._CrossCorr``) or float64.
        progress: a tqdm bar over passes.

    Returns:
        :class:`MatchResult` (``objective``: summed correlation of the matched
        neurons; ``info["fallback_groups"]`` lists groups matched by weights,
        ``info["passes"]``, ``info["samples"]`` per pass, ``info["stats_bytes"]``
        and ``info["store_bytes"]`` of the largest pass, ``info["loads"]``).
    """
    if fallback not in ("weights", "error"):
        raise MergeError(f"fallback must be 'weights' or 'error', got {fallback!r}")
    if dtype not in (torch.float32, torch.float64):
        raise MergeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0):
        raise MergeError(f"max_bytes must be a positive int or None, got {max_bytes!r}")
    first_a = model_a if isinstance(model_a, nn.Module) else load_model(model_a, "model_a")
    if spec is None:
        x0 = example_input
        if x0 is None:
            x0 = next(iter_batches(data, 2))[0][:2]
        spec = permutation_spec(first_a, x0)
    check_state_dict(first_a.state_dict(), spec, model_label(0, None))
    free, heads = split_groups(spec)
    want = matching_slabs(spec)
    slabs = _activation_slabs(first_a, spec, want)
    if isinstance(model_b, nn.Module):
        check_state_dict(model_b.state_dict(), spec, model_label(1, None))
        src_b: ModelSource = model_b
    else:
        src_b = _checked_loader(model_b, spec, 1)
    src_a = model_a if isinstance(model_a, nn.Module) else _first_then(first_a, model_a)
    del first_a  # a loader's module: held by src_a until its first run only
    perm = identity_permutation(spec)
    solver = _ActivationSolver(free, heads, want, perm)
    _, missing, stats = slab_moments(
        src_a, src_b, data, slabs, batch_size=batch_size, max_samples=max_samples, max_bytes=max_bytes,
        dtype=dtype, progress=progress, consume=solver.consume,
    )
    todo = [name for name in want if name not in solver.solved]
    total = solver.total
    info: dict = {"fallback_groups": todo, "uncaptured_blocks": sorted({slabs[k].module for k in missing}), **stats}
    if todo:
        if fallback == "error":
            raise MergeError(
                f"activation matching cannot capture the outputs of {info['uncaptured_blocks']} "
                f"(groups {todo}); use fallback='weights'"
            )
        sd_a, sd_b = (m.state_dict() if isinstance(m, nn.Module) else load_model(m, key).state_dict()
                      for m, key in ((model_a, "model_a"), (model_b, "model_b")))
        wm = weight_matching(sd_a, sd_b, spec, seed=seed, init=perm, groups=todo, validate=False)
        perm = wm.perm
    return MatchResult(perm, spec, "activation", total, 1, True, info)


def _checked_loader(loader: Any, spec: PermutationSpec, i: int) -> Any:
    """``loader`` whose first module is checked against ``spec``."""
    key = ("model_a", "model_b")[i]
    checked = []

    def load() -> nn.Module:
        m = load_model(loader, key)
        if not checked:
            check_state_dict(m.state_dict(), spec, model_label(i, None))
            checked.append(True)
        return m

    return load


def _first_then(module: nn.Module, loader: Any) -> Any:
    """A loader giving ``module`` on its first call (then kept by nobody
    here), ``loader()`` after."""
    box = [module]

    def load() -> nn.Module:
        return box.pop() if box else load_model(loader, "model_a")

    return load


class _ActivationSolver:
    """Activation matching's coordinates, solved as soon as the statistics of
    all their slabs are in (:func:`slab_moments` ``consume``): a group
    outside heads sums its slabs' correlations into one float64 ``[n, n]``
    cost as they arrive (the residual stream spans every layer); a head group
    solves from its regions' correlations. Each pass's statistics are freed
    after it, so at most one pass's are held."""

    def __init__(self, free, heads, want, perm: Permutation) -> None:
        self.free = {g.name: g for g in free}
        self.heads = {L.group.name: L for L in heads}
        self.group_of = {k: name for name, keys in want.items() for k in keys}
        self.left = {name: set(keys) for name, keys in want.items()}
        self.parts: dict[str, Any] = {}
        self.perm = perm
        self.solved: set[str] = set()
        self.total = 0.0

    def consume(self, acc: dict) -> None:
        for k in list(acc):
            name = self.group_of[k]
            c = acc.pop(k).corr()
            if name in self.free:
                if name not in self.parts:
                    self.parts[name] = c.double()
                else:
                    self.parts[name] += c
            else:
                self.parts.setdefault(name, {})[k] = c
            del c
            self.left[name].discard(k)
            if not self.left[name]:
                self._solve(name)

    def _solve(self, name: str) -> None:
        part = self.parts.pop(name)
        if name in self.free:
            cols, v = linear_assignment(part, overwrite=True)
            self.perm[name] = torch.as_tensor(cols, dtype=torch.long)
        else:
            L = self.heads[name]
            S, R = head_costs_from_slabs(L, part)
            sigma, pis, v = head_assignment(S, R)
            set_head_assignment_(self.perm, L, sigma, pis)
        self.total += v
        self.solved.add(name)


def _activation_slabs(
    model: nn.Module, spec: PermutationSpec, want: Mapping[str, Sequence[tuple[int, int, int]]]
) -> dict[tuple[int, int, int], Slab]:
    """The :class:`~weightspace.merge.activations.Slab` of every ``(block,
    start, stop)`` activation matching reads (same ranges in ``a`` and ``b``)."""
    mods = dict(model.named_modules())
    out = {}
    for keys in want.values():
        for b, s, e in keys:
            blk = spec.blocks[b]
            out[(b, s, e)] = Slab(blk.producer, channel_axis(mods.get(blk.producer)), (s, e), (s, e), blk.size, blk.size)
    return out


# ---------------------------------------------------------------- STE matching
def ste_matching(
    model: nn.Module,
    sd_a: Mapping[str, torch.Tensor],
    sd_b: Mapping[str, torch.Tensor],
    data: tuple[torch.Tensor, torch.Tensor],
    spec: PermutationSpec | str,
    *,
    steps: int = 200,
    lr: float = 1e-2,
    batch_size: int = 128,
    lam: float = 0.5,
    loss_fn: Any = None,
    seed: int = 0,
    init: Mapping[str, torch.Tensor] | None = None,
    progress: bool = False,
) -> MatchResult:
    """Straight-through estimator matching (Git Re-Basin, Alg. 2).

    A free copy ``theta`` of ``b`` in ``a``'s basis (initialised to ``a``) is
    trained so that the
    midpoint model ``(1 - lam) * a + lam * P(b)`` has low loss, where ``P`` is
    the weight-matching projection of ``b`` onto ``theta`` and gradients pass
    straight through ``P(b)`` to ``theta``. BatchNorm layers use batch
    statistics during training (running statistics of the midpoint are
    meaningless before a reset).

    Args:
        model: a module of the architecture (template; not modified).
        sd_a, sd_b: endpoint state_dicts.
        data: ``(x (N, ...), y (N,))`` training data for the midpoint loss.
        spec: the architecture's spec (or registered name).
        steps: optimiser steps (Adam, ``lr``); minibatches drawn with ``seed``.
            The projection only changes once ``theta`` has moved far enough:
            with few steps use a larger ``lr`` (e.g. ``1e-2``).
        lam: interpolation weight of ``b`` in the trained model.
        loss_fn: ``(logits, y) -> scalar``; default cross-entropy.
        init: starting permutation (default: weight matching of ``b`` to ``a``).

    Returns:
        :class:`MatchResult` (``info["loss"]``: loss per step; the projection
        of the final ``theta``).
    """
    from torch.func import functional_call

    spec = resolve_spec(spec)
    check_state_dicts([sd_a, sd_b], spec, min_models=2)
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise MergeError("ste_matching needs data=(x, y) tensors")
    x, y = data
    check_finite_data(x)
    loss_fn = loss_fn or torch.nn.functional.cross_entropy
    gen = torch.Generator().manual_seed(int(seed))
    m = copy.deepcopy(model)
    m.load_state_dict(dict(sd_a))
    m.train()
    for mod in m.modules():  # only BatchNorm runs in training mode (no dropout noise)
        if not isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.training = False
    param_keys = [k for k, _ in m.named_parameters()]
    perm = dict(init) if init is not None else weight_matching(sd_a, sd_b, spec, seed=seed, validate=False).perm
    # theta starts at a (Alg. 2: "theta_B <- theta_A"); its first projection is weight matching
    theta = {k: sd_a[k].detach().clone().float().requires_grad_(True) for k in param_keys}
    opt = torch.optim.Adam(theta.values(), lr=lr)
    losses = []
    from tqdm.auto import tqdm

    for step in tqdm(range(steps), disable=not progress, desc="STE matching", leave=False):
        th = {k: v.detach() for k, v in theta.items()}
        perm = weight_matching(th, sd_b, spec, seed=seed + step, init=perm, validate=False).perm
        pb = apply_permutation(sd_b, spec, perm)
        idx = torch.randint(0, x.shape[0], (min(batch_size, x.shape[0]),), generator=gen)
        params = {}
        for k in sd_a:
            if k in theta:
                bk = theta[k] + (pb[k].float() - theta[k]).detach()  # straight-through
                params[k] = (1 - lam) * sd_a[k].float() + lam * bk
            else:
                v = sd_a[k]
                params[k] = ((1 - lam) * v.float() + lam * pb[k].float()) if v.is_floating_point() else v.clone()
        out = functional_call(m, params, (x[idx],))
        loss = loss_fn(out, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    th = {k: v.detach() for k, v in theta.items()}
    final = weight_matching(th, sd_b, spec, seed=seed, init=perm, validate=False)
    return MatchResult(final.perm, spec, "ste", final.objective, steps, True, {"loss": losses})


# ------------------------------------------------------------------ helpers
def _coord_name(c: tuple[str, Any]) -> str:
    """The group name of a coordinate (a head coordinate: its head group)."""
    return c[1].name if c[0] == "neuron" else c[1].group.name


def _one_axis_per_tensor(coords: Sequence[tuple[str, Any]]) -> bool:
    """Whether no neuron coordinate permutes two different axes of one tensor."""
    for kind, g in coords:
        if kind == "neuron" and any(len({ax for p2, ax, *_ in g.axes if p2 == p}) > 1 for p, *_ in g.axes):
            return False
    return True


def _coord_tensors(c: tuple[str, Any]) -> set[str]:
    """The tensors a coordinate's cost matrix reads."""
    if c[0] == "neuron":
        return {p for p, *_ in c[1].axes}
    return {p for p, *_ in c[1].group.axes} | {p for subs in c[1].subs for g in subs for p, *_ in g.axes}


def _solve_coordinate_(
    coord: tuple[str, Any], costs: "_WeightCosts", maps: Sequence[torch.Tensor], perm: Permutation, tol: float,
    log: "_SweepLog", warm: dict[str, WarmAssignment] | None = None,
) -> bool:
    """One coordinate-descent step: solve ``coord`` with the others fixed and
    write it into ``perm`` (the matcher's working copy, in place) when it
    improves the objective by more than ``tol`` (relative). Returns whether
    it did. ``warm``: per neuron coordinate, the warm start of its LAP
    (kept across steps; same assignments, less work)."""
    kind, obj = coord
    name = _coord_name(coord)
    with log.timed(name, "build_s"):
        cost = costs.neuron(obj, maps) if kind == "neuron" else costs.heads(obj, maps)
    with log.timed(name, "lap_s"):
        if kind == "neuron":
            old = float(cost[torch.arange(obj.size), perm[obj.name]].sum())
            if warm is None:
                cols, new = linear_assignment(cost, overwrite=True)  # the cost matrix is not needed after
            else:
                cols, new = warm.setdefault(name, WarmAssignment()).solve(cost)
            del cost
        else:
            S, R = cost
            sigma, pis, new = head_assignment(S, R)
            old = head_assignment_value(S, R, obj, perm)
        changed = new - old > tol * max(1.0, abs(old))
        if changed:
            if kind == "neuron":
                perm[obj.name] = torch.as_tensor(cols, dtype=torch.long)
            else:
                set_head_assignment_(perm, obj, sigma, pis)
    log.step(name, new - old if changed else None)
    return changed


class _SweepLog:
    """Where coordinate descent spends its time, kept out of the loop.

    Per coordinate (group name): seconds building cost matrices
    (``build_s``), seconds solving and applying the assignment (``lap_s``)
    and the steps run. Per sweep: its wall time, steps, coordinates changed
    and ``gain``, the summed improvement of the changed coordinates' own
    objective (the increase of the matching objective when no group acts on
    two axes of one tensor).
    """

    def __init__(self, clock: Any = time.perf_counter) -> None:
        self.clock = clock
        self.per_group: dict[str, dict[str, float]] = {}
        self.history: list[dict[str, float]] = []

    @contextlib.contextmanager
    def timed(self, name: str, phase: str) -> Iterator[None]:
        pg = self.per_group.setdefault(name, {"build_s": 0.0, "lap_s": 0.0, "steps": 0})
        t0 = self.clock()
        try:
            yield
        finally:
            pg[phase] += self.clock() - t0

    @contextlib.contextmanager
    def sweep(self) -> Iterator[None]:
        rec = {"sweep": len(self.history) + 1, "time_s": 0.0, "steps": 0, "changed": 0, "gain": 0.0}
        self.history.append(rec)
        t0 = self.clock()
        try:
            yield
        finally:
            rec["time_s"] = self.clock() - t0

    def step(self, name: str, gain: float | None) -> None:
        """Count one solved coordinate; ``gain`` is ``None`` when it did not change."""
        self.per_group[name]["steps"] += 1
        rec = self.history[-1]
        rec["steps"] += 1
        if gain is not None:
            rec["changed"] += 1
            rec["gain"] += gain

    def info(self) -> dict:
        """``{"timing": totals, "per_group": {...}, "history": [per sweep]}``."""
        timing = {"build_s": 0.0, "lap_s": 0.0, "steps": 0}
        for pg in self.per_group.values():
            for k in timing:
                timing[k] += pg[k]
        return {"timing": timing, "per_group": self.per_group, "history": self.history}


class _Cache:
    """A cache bounded by the bytes of its tensors (``0``: keeps nothing).

    When full, the entries cheapest to recompute per byte go first (``worth``:
    multiply-adds per byte, e.g. the inner dimension of a product; the least
    recently used among equals), so an embedding's ``[768, 768]`` product over
    50k rows outlives ``[3072, 3072]`` products over 768. ``peak`` is the most
    bytes it ever held.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.items: OrderedDict = OrderedDict()
        self.bytes = self.peak = 0

    def get(self, key):
        hit = self.items.get(key)
        if hit is not None:
            self.items.move_to_end(key)
            return hit[0]
        return None

    def put(self, key, value, nbytes: int, worth: float = 0.0) -> None:
        if nbytes > self.budget:
            return
        old = self.items.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        while self.items and self.bytes + nbytes > self.budget:
            victim = min(self.items, key=lambda k: self.items[k][2])  # first minimum: least recently used
            if self.items[victim][2] > worth and self.items[victim][1] > 0:
                return  # everything held is worth more than the newcomer
            self.bytes -= self.items.pop(victim)[1]
        self.items[key] = (value, nbytes, worth)
        self.bytes += nbytes
        self.peak = max(self.peak, self.bytes)


class _WeightCosts:
    """Cost matrices of weight matching for one pair of state_dicts.

    The product ``A_e @ B_e^T`` of one tensor axis entry only depends on how
    the *other* axes of that tensor are currently permuted; it is kept (in
    the matmul ``dtype``) with those gather indices in a cache bounded by
    ``budget`` bytes and reused while they are unchanged. Row views of ``a``
    that need a copy (e.g. convolutions) share that budget.
    """

    def __init__(self, spec, sd_a, sd_b, keys: set[str], dtype: torch.dtype, budget: int = CACHE_BYTES) -> None:
        self.spec = spec
        keys = {k for k in keys if k in sd_a and k in sd_b}
        self.keys = keys
        # a checkpoint stays on disk: its tensors are read (and converted) per use
        self.lazy = isinstance(sd_a, _Checkpoint) or isinstance(sd_b, _Checkpoint)
        self.dtype = dtype
        if self.lazy:
            self.A, self.B = sd_a, sd_b
        else:
            self.A = {k: sd_a[k].detach().to(dtype) for k in keys}
            self.B = {k: sd_b[k].detach().to(dtype) for k in keys}
        self.cache = _Cache(budget)

    def a(self, p: str, memo: dict | None = None) -> torch.Tensor:
        """Tensor ``p`` of ``a`` in ``dtype`` (``memo``: reuse a read within one cost build)."""
        return self._get(self.A, "a", p, memo)

    def b(self, p: str, memo: dict | None = None) -> torch.Tensor:
        return self._get(self.B, "b", p, memo)

    def _get(self, sd, side: str, p: str, memo: dict | None) -> torch.Tensor:
        if memo is not None and (side, p) in memo:
            return memo[(side, p)]
        t = sd[p].detach().to(self.dtype) if self.lazy else sd[p]
        if memo is not None:
            memo[(side, p)] = t
        return t

    def _other_indices(self, p: str, ax: int, maps) -> tuple[tuple[int, torch.Tensor], ...]:
        shape = self.spec.param_shapes[p]
        return tuple(
            (ref.axis, axis_index(ref, shape[ref.axis], maps)) for ref in self.spec.param_axes.get(p, ()) if ref.axis != ax
        )

    def _b_except(self, cache: dict, p: str, ax: int, maps) -> torch.Tensor:
        key = (p, ax)
        if key not in cache:
            cache[key] = _permute_except(self.b(p, cache), self.spec, p, maps, ax)
        return cache[key]

    def product(self, p: str, ax: int, st: int, n: int, u: int, maps) -> torch.Tensor:
        """``[n, n]`` in ``dtype``: ``rows(A) @ rows(P_other(B))^T`` for one axis entry."""
        idx = self._other_indices(p, ax, maps)
        key = (p, ax, st, n, u)
        hit = self.cache.get(("prod", key))
        if hit is not None:
            moved = [i for i, ((_, x), (_, y)) in enumerate(zip(hit[0], idx)) if not torch.equal(x, y)]
            if not moved:
                return hit[1]
            if len(moved) == 1:
                axis, new = idx[moved[0]]
                old = hit[0][moved[0]][1]
                changed = (old != new).nonzero().flatten()
                if 2 * changed.numel() < new.numel():  # a low-rank update is cheaper than the product
                    return self._update(p, ax, st, n, u, key, hit[1], idx, axis, old, changed)
        a = self.cache.get(("rows", key))
        if a is None:
            A = self.a(p)
            a = unit_rows(A, ax, st, n, u)
            copied = a.untyped_storage().data_ptr() != A.untyped_storage().data_ptr()
            if copied or not self.lazy:  # a view of a tensor read from a checkpoint would keep all of it
                self.cache.put(("rows", key), a, a.numel() * a.element_size() if copied else 0, 1.0)
            del A
        bt = self.b(p)
        for axis, ix in idx:
            bt = bt.index_select(axis, ix)
        prod = a @ unit_rows(bt, ax, st, n, u).T
        self.cache.put(("prod", key), (idx, prod), prod.numel() * prod.element_size(), a.shape[1] / prod.element_size())
        return prod

    def _update(self, p, ax, st, n, u, key, prod, idx, axis, old, changed) -> torch.Tensor:
        """The cached product ``prod`` after the gather index of one other
        ``axis`` changed from ``old`` to ``idx``'s at positions ``changed``:
        only those terms of the contraction differ, so
        ``rows(A_K) @ rows(B[new_K] - B[old_K])^T`` is added to it in place
        (float rounding aside, the product itself; cost ``len(changed)`` of
        the axis' length)."""
        A, bt = self.a(p), self.b(p)
        new = None
        for ax2, ix in idx:  # the other axes as they are gathered now
            if ax2 != axis:
                bt = bt.index_select(ax2, ix)
            else:
                new = ix
        diff = bt.index_select(axis, new[changed]) - bt.index_select(axis, old[changed])
        prod.addmm_(unit_rows(A.index_select(axis, changed), ax, st, n, u), unit_rows(diff, ax, st, n, u).T)
        worth = u * A.numel() // A.shape[ax] / prod.element_size()  # as for the whole product
        self.cache.put(("prod", key), (idx, prod), prod.numel() * prod.element_size(), worth)
        return prod

    def neuron(self, g: PermGroup, maps) -> torch.Tensor:
        """``[n, n]``: similarity of unit ``i`` of ``a`` and unit ``j`` of ``b``."""
        C = torch.zeros(g.size, g.size, dtype=torch.float64)
        for p, ax, st, u in g.axes:
            if p in self.keys:
                C += self.product(p, ax, st, g.size, u, maps)
        return C

    def heads(self, L: HeadLayout, maps) -> tuple[list[torch.Tensor], torch.Tensor]:
        H = L.group
        h = H.size
        cache: dict = {}
        S = []
        for subs in L.subs:
            n = subs[0].size
            Sk = torch.zeros(h * n, h * n, dtype=torch.float64)
            for e, (p, ax, _, u) in enumerate(subs[0].axes):
                if p not in self.keys:
                    continue
                bt = self._b_except(cache, p, ax, maps)
                a = nested_rows(self.a(p, cache), ax, subs, e, n, u)
                b = nested_rows(bt, ax, subs, e, n, u)
                Sk += (a @ b.T).to(torch.float64)
            S.append(Sk.view(h, n, h, n))
        R = torch.zeros(h, h, dtype=torch.float64)
        for (p, ax, st, ue), mask in zip(H.axes, L.uncovered):
            if p not in self.keys or not bool(mask.any()):
                continue
            rep = ue // H.unit
            sel = mask.repeat_interleave(rep)
            a = masked_unit_rows(self.a(p, cache), ax, st, h, ue, sel)
            bt = self._b_except(cache, p, ax, maps)
            b = masked_unit_rows(bt, ax, st, h, ue, sel)
            R += (a @ b.T).to(torch.float64)
        return S, R


def _permute_except(
    t: torch.Tensor, spec: PermutationSpec, name: str, maps: Sequence[torch.Tensor], skip_axis: int | None
) -> torch.Tensor:
    """``t`` (tensor ``name``) gathered by ``maps`` on every neuron axis but ``skip_axis``."""
    for ref in spec.param_axes.get(name, ()):
        if ref.axis != skip_axis:
            t = t.index_select(ref.axis, axis_index(ref, t.shape[ref.axis], maps))
    return t
