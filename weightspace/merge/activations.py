"""Activation statistics of two networks on the same data: streaming
second moments between the neurons of each block, captured at the op that
creates the block (``spec.blocks[b].producer``) through an fx trace, and
their conversion into the inputs of the head solver.

Used by :func:`~weightspace.merge.matching.activation_matching` (Pearson
correlation) and :func:`~weightspace.merge.ot_fusion.ot_fusion` with
``ground="activations"`` (mean squared distance).

:func:`slab_moments` is the streaming core at language-model scale: only the
channel ranges ("slabs") a matcher reads are accumulated (a neuron group's
diagonal slab of its block, an attention head region), the forward stops
after the last module a pass needs, and when the statistics would exceed
``max_bytes`` the modules are split into several passes over the data (in
the order they run, so early passes stop early). Two ways to run the models:

* both resident (two modules): each module output is consumed by forward
  hooks as it is produced, ``a``'s slabs wait for ``b``'s forward of the
  same batch, then are dropped (no activation store);
* one model at a time (either model given as a loader, a zero-argument
  callable returning the module): the models take turns, one run over all
  the data each, ``passes + 1`` runs (and loads): run ``r`` pairs each of
  its slabs of pass ``r - 1`` with the one the other model stored in run
  ``r - 1`` (freed as it is used) and stores its own slabs of pass ``r``
  (``rows x width`` each, in the statistics' dtype); then it is dropped and
  the other model is loaded. ``max_bytes`` then bounds statistics plus store.
"""

from __future__ import annotations

import gc
import weakref
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Mapping, Sequence

import torch
from torch import nn

from weightspace.merge._common import MergeError, as_samples, channel_axis, check_finite_data, iter_batches
from weightspace.similarity.capture import _eval_mode  # eval + no_grad, training flags restored
from weightspace.symmetry import HeadLayout, PermutationSpec, split_groups

__all__ = ["STATS_BYTES", "ModelSource", "block_moments", "head_costs_from_blocks", "load_model", "slab_moments"]

#: default bound (bytes) of the statistics :func:`slab_moments` accumulates in
#: one pass over the data, plus, one model at a time, the slabs it stores
#: (more bytes: more passes)
STATS_BYTES = 128 * 2**20

#: a model given to :func:`slab_moments`: the module, or a zero-argument
#: loader returning it (then only one model is resident at a time)
ModelSource = nn.Module | Callable[[], nn.Module]


def block_moments(
    model_a: nn.Module,
    model_b: nn.Module,
    data: Any,
    spec_a: PermutationSpec,
    blocks: Sequence[int] | None = None,
    *,
    spec_b: PermutationSpec | None = None,
    batch_size: int = 256,
    max_samples: int | None = None,
) -> tuple[dict[int, "_CrossCorr"], list[int]]:
    """Streaming second moments between the neurons of each block of ``a``
    and ``b`` (the same architecture family; widths may differ).

    Activations are the outputs of the module that creates the block
    (``spec.blocks[b].producer``), taken by forward hooks
    (:func:`slab_moments`, whole blocks, float64, one pass); spatial
    positions and tokens count as samples.

    Args:
        data: ``x`` ``(N, ...)``, ``(x, y)`` or an iterable of batches.
        blocks: block indices (default: every non-fixed block).
        spec_b: ``b``'s spec when its widths differ (default ``spec_a``).

    Returns:
        ``({block: accumulator with .corr() / .sqdist() [size_a, size_b]},
        blocks whose producer output could not be captured)``.
    """

    spec_b = spec_b or spec_a
    want = set(range(len(spec_a.blocks))) if blocks is None else set(blocks)
    want = {b for b in want if not spec_a.blocks[b].fixed}
    mods = dict(model_a.named_modules())
    slabs = {}
    for b in sorted(want):
        blk, blk_b = spec_a.blocks[b], spec_b.blocks[b]
        slabs[b] = Slab(blk.producer, channel_axis(mods.get(blk.producer)), (0, blk.size), (0, blk_b.size),
                        blk.size, blk_b.size)
    acc, missing, _ = slab_moments(model_a, model_b, data, slabs, batch_size=batch_size, max_samples=max_samples,
                                   max_bytes=None, dtype=torch.float64)
    return acc, sorted(missing)


def head_costs_from_blocks(
    L_a: HeadLayout, L_b: HeadLayout, mats: Mapping[int, torch.Tensor]
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Head-solver inputs from block-level neuron similarities.

    Args:
        L_a, L_b: the same head group in ``a``'s and ``b``'s spec.
        mats: ``{block: [size_a, size_b]}`` similarity of neurons.

    Returns:
        ``S`` (per nested kind ``[h, n_k, h, n_k]``) and ``R [h, h]`` as
        taken by the head solver.
    """
    return _head_costs(L_a, L_b, lambda b, ia, ib: mats[b][ia][:, ib])


def head_costs_from_slabs(
    L: HeadLayout, mats: Mapping[tuple[int, int, int], torch.Tensor]
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """:func:`head_costs_from_blocks` of one spec from the similarities of
    the slabs :func:`matching_slabs` lists (``{(block, start, stop): [w, w]}``;
    every head region must be one of them)."""

    def pair(b: int, ia: torch.Tensor, ib: torch.Tensor) -> torch.Tensor:
        lo, hi = int(min(ia.min(), ib.min())), int(max(ia.max(), ib.max()))
        for (sb, s, e), m in mats.items():
            if sb == b and s <= lo and hi < e:
                return m[ia - s][:, ib - s]
        raise MergeError(f"no activation statistics cover channels {lo}..{hi} of block {b}")

    return _head_costs(L, L, pair)


def matching_slabs(spec: PermutationSpec) -> dict[str, list[tuple[int, int, int]]]:
    """The channel ranges activation matching reads, per coordinate.

    Returns:
        ``{group name: [(block, start, stop), ...]}``: a neuron group outside
        heads reads the diagonal slab of each block it spans; a head group
        (its nested groups included) reads each head region
        ``[start, start + heads * unit)``. Fixed blocks are left out.
    """
    free, heads = split_groups(spec)
    out: dict[str, list[tuple[int, int, int]]] = {}
    for g in free:
        out[g.name] = [(b, s, s + g.size) for b, s in g.targets]
    for L in heads:
        H = L.group
        out[H.name] = [(b, s, s + H.size * H.unit) for b, s in H.targets]
    return out


def _head_costs(L_a: HeadLayout, L_b: HeadLayout, pair: Any) -> tuple[list[torch.Tensor], torch.Tensor]:
    """:func:`head_costs_from_blocks` with ``pair(block, ia, ib) -> [len(ia), len(ib)]``."""
    H, Hb = L_a.group, L_b.group
    h = H.size
    S = []
    for subs, subs_b in zip(L_a.subs, L_b.subs):
        n = subs[0].size
        Sk = torch.zeros(h * n, h * n, dtype=torch.float64)
        for t in range(len(subs[0].targets)):
            b = subs[0].targets[t][0]
            ia = torch.cat([torch.arange(g.targets[t][1], g.targets[t][1] + n) for g in subs])
            ib = torch.cat([torch.arange(g.targets[t][1], g.targets[t][1] + n) for g in subs_b])
            Sk += pair(b, ia, ib)
        S.append(Sk.view(h, n, h, n))
    R = torch.zeros(h, h, dtype=torch.float64)
    for t, ((rb, rs), (_, rs_b)) in enumerate(zip(H.targets, Hb.targets)):
        for o in L_a.uncovered_offsets(t):
            pa = rs + torch.arange(h) * H.unit + o
            pb = rs_b + torch.arange(h) * Hb.unit + o
            R += pair(rb, pa, pb)
    return S, R


# ------------------------------------------------------------------ helpers
class _CrossCorr:
    """Streaming second moments of two ``(m, n_a)`` / ``(m, n_b)`` streams:
    Pearson cross-correlation and mean squared distance ``[n_a, n_b]``.

    ``dtype``: of the sums (and of the per-batch products). In float32 the
    streams are shifted by the first batch's means (sums of a shifted stream
    do not cancel catastrophically: the shifted algorithm for variances);
    float64 sums are taken as they are.
    """

    def __init__(self, n_a: int, n_b: int | None = None, dtype: torch.dtype = torch.float64) -> None:
        n_b = n_a if n_b is None else n_b
        z = lambda *s: torch.zeros(*s, dtype=dtype)  # noqa: E731
        self.m = 0
        self.dtype = dtype
        self.shift: tuple[torch.Tensor, torch.Tensor] | None = None
        self.sa, self.sb, self.saa, self.sbb, self.sab = z(n_a), z(n_b), z(n_a), z(n_b), z(n_a, n_b)

    @staticmethod
    def nbytes(n_a: int, n_b: int, dtype: torch.dtype) -> int:
        """Bytes of the sums of one accumulator."""
        return (n_a * n_b + 3 * (n_a + n_b)) * torch.finfo(dtype).bits // 8

    def update(self, a: torch.Tensor, b: torch.Tensor) -> None:
        a, b = a.to(self.dtype), b.to(self.dtype)
        if self.dtype != torch.float64:
            if self.shift is None:
                self.shift = (a.double().mean(0).to(self.dtype), b.double().mean(0).to(self.dtype))
            a, b = a - self.shift[0], b - self.shift[1]
        self.m += a.shape[0]
        self.sa += a.sum(0)
        self.sb += b.sum(0)
        self.saa += (a * a).sum(0)
        self.sbb += (b * b).sum(0)
        self.sab.addmm_(a.T, b)

    def corr(self) -> torch.Tensor:
        """Pearson correlation ``[n_a, n_b]`` over samples (float64 when the
        sums are; else their dtype). In place on one new ``[n_a, n_b]``
        (plus one temporary): a 3072-wide MLP block is 38 MB in float32."""
        m = max(self.m, 1)
        ma, mb = self.sa / m, self.sb / m
        cov = torch.div(self.sab, m).addr_(ma, mb, alpha=-1)
        sa = (self.saa / m - ma**2).clamp_min(0).sqrt()
        sb = (self.sbb / m - mb**2).clamp_min(0).sqrt()
        den = torch.outer(sa, sb)
        dead = den <= 1e-12  # dead (constant) neurons correlate 0 with everything
        cov.div_(den.clamp_min_(1e-12))
        del den
        return cov.masked_fill_(dead, 0.0)

    def sqdist(self) -> torch.Tensor:
        """``E[(a_i - b_j)^2]`` over samples."""
        m = max(self.m, 1)
        d = (self.saa[:, None] / m + self.sbb[None, :] / m - 2 * self.sab / m)
        if self.shift is not None:  # E[(a' - b' + c)^2], c = shift_a - shift_b
            c = self.shift[0][:, None] - self.shift[1][None, :]
            d = d + 2 * c * (self.sa[:, None] / m - self.sb[None, :] / m) + c * c
        return d.clamp_min(0)


@dataclass(frozen=True)
class Slab:
    """Channels ``[start, stop)`` of one module's output, in ``a`` and ``b``.

    Attributes:
        module: the producing submodule's path (``named_modules``).
        axis: the output's channel axis (e.g. ``-1``, ``1`` for convolutions).
        a, b: ``(start, stop)`` in ``a``'s and ``b``'s output.
        width_a, width_b: the whole channel axis expected in each output.
    """

    module: str
    axis: int
    a: tuple[int, int]
    b: tuple[int, int]
    width_a: int
    width_b: int


class _StopForward(Exception):
    """Raised by a hook once every module a pass reads has run."""


def slab_moments(
    model_a: ModelSource,
    model_b: ModelSource,
    data: Any,
    slabs: Mapping[Hashable, Slab],
    *,
    batch_size: int = 256,
    max_samples: int | None = None,
    max_bytes: int | None = STATS_BYTES,
    dtype: torch.dtype = torch.float64,
    progress: bool = False,
    consume: Callable[[dict[Hashable, _CrossCorr]], None] | None = None,
) -> tuple[dict[Hashable, _CrossCorr], list[Hashable], dict]:
    """Streaming cross-moments of module output slabs of ``a`` and ``b``.

    Both models run in eval mode without gradients on the same batches;
    forward hooks slice each slab out of its module's output (positions and
    tokens count as samples: a slab of width ``w`` of an output ``(B, T,
    C)`` is ``(B*T, w)`` rows), and each slab's accumulator sums, over the
    rows of every batch, ``a``, ``b``, ``a*a``, ``b*b`` and ``a^T b``
    (``[w_a, w_b]``). A pass stops each forward once its last module has run.

    Two modules: ``a``'s slices are held until ``b`` produces the same
    module's output, then fed to the accumulator and dropped. A loader for
    either model (a zero-argument callable returning the module, called
    about every other pass and dropped after its run; give it one that reads the
    weights from files, not a module kept elsewhere): one model at a time,
    see below. Each slab's sums are the same either way (the same batches,
    in the same order).

    One model at a time, for passes ``p = 1..P`` over modules ``M_p``: the
    models take turns (``a`` first), ``P + 1`` runs over every batch, each
    forward stopping after the last module of ``M_{r+1}``. Run ``r`` feeds
    the accumulators of pass ``r`` with its slabs of ``M_r`` against the
    other model's stored ones of the same batch (each freed once used) and
    stores its own slabs ``X_k`` (``rows x w_k``, ``dtype``) of ``M_{r+1}``;
    the model is dropped after its run. Run 0 only stores, run ``P`` only
    accumulates. The first model's load also probes the data: samples per
    input shape, and each module's rows per sample.

    Before the first batch, one sample runs through each model with hooks
    on every module: slabs whose module is unknown, does not run exactly
    once, or whose output is not a tensor with the expected channel width
    are returned as missing.

    Args:
        model_a, model_b: modules, or loaders returning them.
        data: inputs ``(N, ...)``, ``(x, y)`` or an iterable of batches;
            iterated once per pass (twice with a loader), so several passes
            or a loader need a re-iterable: a tensor, a list, a ``DataLoader``.
        slabs: ``{key: Slab}``.
        max_bytes: bound of what one pass holds: its sums ``S_p`` (``(w_a
            w_b + 3 (w_a + w_b))`` entries per slab) and, one model at a
            time, the stored slabs ``O_p`` (``rows x max(w_a, w_b)`` entries
            per slab, rows over the whole data: samples times a one-sample
            probe's rows, an upper bound for an output that does not grow
            with the batch, e.g. a position embedding), swapped batch by
            batch for the next pass's: ``S_p + max(O_p, O_{p+1})``. Modules
            (with all their slabs) go into passes in the order they run; a
            pass of one module may exceed it; ``None``: one pass.
        dtype: of the sums and of the stored slabs (see ``_CrossCorr``).
        progress: a tqdm bar over passes.
        consume: called after each pass with that pass's ``{key:
            accumulator}`` (it may pop them); they are not kept (so the
            statistics held never exceed one pass's) and the first return
            value is empty.

    Returns:
        ``({key: accumulator with .corr() / .sqdist()}, missing keys,
        info)``; ``info``: ``passes``, ``samples`` (per pass),
        ``stats_bytes`` (largest pass), ``store_bytes`` (largest store, 0
        with two modules), ``held_bytes`` (largest statistics + store held
        at once, before or after a batch), ``loads`` (calls of the loaders).

    Raises:
        MergeError: ``data`` yields no samples, or a different number of
            samples in a later pass (a one-shot iterator), or, one model at
            a time, other batches to the second model (a shuffling loader);
            a loader that does not return an ``nn.Module``.
    """
    sides = (_Side(model_a, "model_a"), _Side(model_b, "model_b"))
    if any(s.loader is not None for s in sides):
        return _sequential_moments(sides, data, slabs, batch_size=batch_size, max_samples=max_samples,
                                   max_bytes=max_bytes, dtype=dtype, progress=progress, consume=consume)
    from tqdm.auto import tqdm

    mods_a, mods_b = dict(model_a.named_modules()), dict(model_b.named_modules())
    missing = [k for k, s in slabs.items() if not s.module or s.module not in mods_a or s.module not in mods_b]
    live = {k: s for k, s in slabs.items() if k not in set(missing)}
    acc: dict[Hashable, _CrossCorr] = {}
    info: dict = {"passes": 0, "samples": 0, "stats_bytes": 0, "store_bytes": 0, "held_bytes": 0, "loads": 0}
    if not live:
        return acc, missing, info
    passes: list[list[str]] | None = None
    done = 0
    bar = tqdm(disable=not progress, desc="activation statistics", leave=False)
    with _eval_mode(model_a), _eval_mode(model_b), bar:
        while passes is None or done < len(passes):
            seen = 0
            for x in _inputs(data, batch_size, max_samples, model_a):
                if passes is None:
                    order, bad = _probe(model_a, model_b, x[:1], live)
                    missing += bad
                    for k in bad:
                        del live[k]
                    passes = _plan_passes(live, order, max_bytes, dtype)
                    info["passes"] = len(passes)
                    if not passes:
                        break
                    bar.total = len(passes)
                if seen == 0:
                    keys = [k for k, s in live.items() if s.module in set(passes[done])]
                    cur = {k: _CrossCorr(s.a[1] - s.a[0], s.b[1] - s.b[0], dtype) for k, s in
                           ((k, live[k]) for k in keys)}
                    info["stats_bytes"] = max(info["stats_bytes"], _stats_bytes([live[k] for k in keys], dtype))
                seen += x.shape[0]
                _update_pass(model_a, model_b, x, {k: live[k] for k in keys}, cur)
            if passes is None:
                raise MergeError("data yielded no samples to capture activations from")
            if not passes:
                break
            if done == 0:
                info["samples"] = seen
            else:
                _check_samples(info["samples"], seen, done, len(passes), max_bytes)
            done += 1
            bar.update(1)
            (acc.update if consume is None else consume)(cur)
            del cur
    info["held_bytes"] = info["stats_bytes"]
    return acc, sorted(set(missing), key=str), info


def load_model(source: ModelSource, key: str = "model") -> nn.Module:
    """``source`` when it is a module, else the module its loader returns;
    a one-line error for anything else."""
    if isinstance(source, nn.Module):
        return source
    if not callable(source):
        raise MergeError(f"{key}: expected an nn.Module or a zero-argument loader returning one, "
                         f"got {type(source).__name__}")
    m = source()
    if not isinstance(m, nn.Module):
        raise MergeError(f"the loader of {key} returned a {type(m).__name__}, not an nn.Module")
    return m


class _Side:
    """One model given to :func:`slab_moments`: a module (kept by the
    caller), or a loader called when the model is needed and whose module
    is dropped after its run (``drop``)."""

    def __init__(self, source: ModelSource, key: str) -> None:
        self.key, self.loads = key, 0
        self.module: nn.Module | None = source if isinstance(source, nn.Module) else None
        self.loader: Callable[[], nn.Module] | None = None if self.module is not None else source
        if self.module is None and not callable(source):
            load_model(source, key)  # raises

    def get(self) -> nn.Module:
        if self.module is None:
            self.loads += 1
            self.module = load_model(self.loader, self.key)
        return self.module

    def drop(self) -> None:
        if self.loader is not None and self.module is not None:
            ref = weakref.ref(self.module)
            self.module = None
            if ref() is not None:  # a module in a reference cycle: free its weights before the other loads
                gc.collect()


def _sequential_moments(
    sides: tuple[_Side, _Side], data: Any, slabs: Mapping[Hashable, Slab], *, batch_size: int,
    max_samples: int | None, max_bytes: int | None, dtype: torch.dtype, progress: bool,
    consume: Callable[[dict[Hashable, _CrossCorr]], None] | None,
) -> tuple[dict[Hashable, _CrossCorr], list[Hashable], dict]:
    """:func:`slab_moments` one model at a time (at least one side a loader)."""
    from tqdm.auto import tqdm

    acc: dict[Hashable, _CrossCorr] = {}
    info: dict = {"passes": 0, "samples": 0, "stats_bytes": 0, "store_bytes": 0, "held_bytes": 0, "loads": 0}
    itemsize = torch.finfo(dtype).bits // 8
    try:
        model = sides[0].get()
        mods = dict(model.named_modules())
        missing = [k for k, s in slabs.items() if not s.module or s.module not in mods]
        live = {k: s for k, s in slabs.items() if k not in set(missing)}
        del mods
        if not live:
            return acc, missing, info
        names = sorted({s.module for s in live.values()})
        rows: Counter = Counter()  # module -> rows over the whole data
        per_shape: dict[tuple, dict[str, int]] = {}  # input shape -> module -> rows per sample
        order: list[str] | None = None
        marks: list[tuple] = []  # per batch: its shape and a checksum, to see the same batches every time
        with _eval_mode(model):
            for x in _inputs(data, batch_size, max_samples, model):
                shape = tuple(x.shape[1:])
                if shape not in per_shape:
                    runs = _run_probe(model, x[:1], names)
                    if order is None:
                        order = list(runs)
                        bad = _bad_slabs(live, runs, 0)
                        missing += bad
                        for k in bad:
                            del live[k]
                    per_shape[shape] = _rows_per_sample(runs, live)
                    del runs
                info["samples"] += x.shape[0]
                marks.append(_mark(x))
                for n, r in per_shape[shape].items():
                    rows[n] += r * x.shape[0]
        del model  # held by sides[0] until its first run
        if order is None:
            raise MergeError("data yielded no samples to capture activations from")
        store_need = {k: rows[s.module] * max(s.a[1] - s.a[0], s.b[1] - s.b[0]) * itemsize for k, s in live.items()}
        passes = _plan_passes(live, order, max_bytes, dtype, store_need)
        info["passes"] = len(passes)
        n_pass = len(passes)
        pass_keys = [[k for k, s in live.items() if s.module in set(mods)] for mods in passes]
        probed = [True, False]
        stored: list[dict[Hashable, torch.Tensor]] = []  # per batch: the other model's slabs of pass r - 1
        stored_bytes = 0
        side = 0
        with tqdm(total=n_pass, disable=not progress, desc="activation statistics", leave=False) as bar:
            for r in range(n_pass + 1):  # run r: pass r - 1's sums, pass r's slabs stored
                model = sides[side].get()
                cur: dict[Hashable, _CrossCorr] = {}
                stats_now = 0
                if r:
                    cur = {k: _CrossCorr(live[k].a[1] - live[k].a[0], live[k].b[1] - live[k].b[0], dtype)
                           for k in pass_keys[r - 1] if k in live}
                    stats_now = _stats_bytes([live[k] for k in cur], dtype)
                    info["stats_bytes"] = max(info["stats_bytes"], stats_now)
                new: list[dict[Hashable, torch.Tensor]] = []
                seen = 0
                with _eval_mode(model):
                    for i, x in enumerate(_inputs(data, batch_size, max_samples, model)):
                        if not probed[side]:  # the other model's first run: its slabs are checked too
                            bad = _bad_slabs(live, _run_probe(model, x[:1], names), side)
                            missing += bad
                            for k in bad:
                                del live[k]
                                cur.pop(k, None)
                            probed[side] = True
                        if i >= len(marks) or marks[i] != _mark(x):
                            raise MergeError(
                                "data yielded other batches than the first time (e.g. a shuffling DataLoader): "
                                "with a loader, the models run one after the other and need the same batches, "
                                "in the same order, every time the data is iterated")
                        info["held_bytes"] = max(info["held_bytes"], stats_now + stored_bytes)
                        held = stored[i] if r else {}
                        stored_bytes -= _nbytes(held)
                        keep = {k: live[k] for k in pass_keys[r] if k in live} if r < n_pass else {}
                        new.append(_run_pass(model, x, side, {k: live[k] for k in cur}, held, cur, keep, dtype))
                        if r:
                            stored[i] = {}
                        del held
                        stored_bytes += _nbytes(new[-1])
                        info["store_bytes"] = max(info["store_bytes"], stored_bytes)
                        info["held_bytes"] = max(info["held_bytes"], stats_now + stored_bytes)
                        seen += x.shape[0]
                del model
                sides[side].drop()  # a loader's module goes before the pass is consumed (corr, LAP)
                _check_samples(info["samples"], seen, max(r - 1, 0), n_pass, max_bytes)
                stored = new
                del new
                if r:
                    bar.update(1)
                    (acc.update if consume is None else consume)(cur)
                del cur
                side = 1 - side  # the other model runs next
    finally:
        for s in sides:
            s.drop()
        info["loads"] = sides[0].loads + sides[1].loads
    return acc, sorted(set(missing), key=str), info


def _inputs(data: Any, batch_size: int, max_samples: int | None, model: nn.Module):
    """The input tensors of ``data``'s batches, checked finite, floats in the model's dtype."""
    ref = next(iter(model.parameters()), None)
    for x, _ in iter_batches(data, batch_size, max_samples):
        x = torch.as_tensor(x)
        check_finite_data(x)
        if x.is_floating_point() and ref is not None:
            x = x.to(ref.dtype)
        yield x


def _check_samples(first: int, seen: int, p: int, n_passes: int, max_bytes: int | None) -> None:
    if seen != first:
        raise MergeError(
            f"data yielded {first} samples the first time but {seen} in pass {p + 1}: the activation "
            f"statistics need {n_passes} passes over the data (max_bytes={max_bytes}; each pass iterates it twice "
            "when a model is given as a loader); pass a tensor or a re-iterable (list, DataLoader), not a one-shot "
            "iterator, or raise max_bytes"
        )


def _stats_bytes(slabs: Sequence[Slab], dtype: torch.dtype) -> int:
    return sum(_CrossCorr.nbytes(s.a[1] - s.a[0], s.b[1] - s.b[0], dtype) for s in slabs)


def _output(out: Any) -> Any:
    """A module output's tensor (a tuple's first element)."""
    return out[0] if isinstance(out, (tuple, list)) and out else out


def _run_probe(model: nn.Module, x: torch.Tensor, names: Sequence[str]) -> dict[str, list]:
    """``{module: [its outputs]}`` of one forward of ``x`` with counting hooks
    on ``names`` (in the order the modules ran)."""
    mods = dict(model.named_modules())
    runs: dict[str, list] = {}

    def hook(name):
        return lambda m, args, out: runs.setdefault(name, []).append(_output(out))

    handles = [mods[n].register_forward_hook(hook(n)) for n in names if n in mods]
    try:
        with _eval_mode(model):
            model(x)
    finally:
        for h in handles:
            h.remove()
    return runs


def _bad_slabs(slabs: Mapping[Hashable, Slab], runs: Mapping[str, list], side: int) -> list[Hashable]:
    """Slabs whose module did not run exactly once on the probe, or whose
    output is not a float tensor of the expected width (``side`` 0: ``a``)."""
    bad = []
    for k, s in slabs.items():
        outs = runs.get(s.module, [])
        width = s.width_a if side == 0 else s.width_b
        ok = (
            len(outs) == 1
            and isinstance(outs[0], torch.Tensor)
            and outs[0].ndim >= 2
            and outs[0].is_floating_point()
            and outs[0].shape[s.axis] == width
        )
        if not ok:
            bad.append(k)
    return bad


def _rows_per_sample(runs: Mapping[str, list], slabs: Mapping[Hashable, Slab]) -> dict[str, int]:
    """Rows (samples) per input sample of each module a slab reads, from a
    one-sample probe (0 when it did not give one tensor)."""
    out = {}
    for s in slabs.values():
        t = runs.get(s.module, [])
        ok = len(t) == 1 and isinstance(t[0], torch.Tensor) and t[0].ndim >= 2
        out[s.module] = t[0].numel() // t[0].shape[s.axis] if ok else 0
    return out


def _mark(x: torch.Tensor) -> tuple:
    """A batch's shape and a position-weighted checksum (float64)."""
    v = x.reshape(-1).double()
    return tuple(x.shape), float(v @ torch.linspace(1.0, 2.0, v.numel(), dtype=torch.float64)) if v.numel() else 0.0


def _probe(
    model_a: nn.Module, model_b: nn.Module, x: torch.Tensor, slabs: Mapping[Hashable, Slab]
) -> tuple[list[str], list[Hashable]]:
    """Run ``x`` through both models with counting hooks on every slab's
    module: ``(modules in the order they ran in a, slabs that cannot be
    captured)``."""
    names = sorted({s.module for s in slabs.values()})
    runs_a = _run_probe(model_a, x, names)
    bad = _bad_slabs(slabs, runs_a, 0)
    bad += [k for k in _bad_slabs(slabs, _run_probe(model_b, x, names), 1) if k not in set(bad)]
    return list(runs_a), bad


def _plan_passes(
    slabs: Mapping[Hashable, Slab], order: Sequence[str], max_bytes: int | None, dtype: torch.dtype,
    store: Mapping[Hashable, int] | None = None,
) -> list[list[str]]:
    """Modules per pass, in the order they run, a new pass whenever the
    next module would take the pass beyond ``max_bytes``: its sums ``S_p``;
    one model at a time also its stored slabs ``O_p`` (``store`` bytes per
    slab), held beside ``S_p`` while swapped batch by batch for those of the
    next pass: ``S_p + max(O_p, O_{p+1}) <= max_bytes``, with ``O_{p+1}``
    at least the next module's (a module alone may exceed it)."""
    need: Counter = Counter()
    kept: Counter = Counter()
    for k, s in slabs.items():
        need[s.module] += _CrossCorr.nbytes(s.a[1] - s.a[0], s.b[1] - s.b[0], dtype)
        kept[s.module] += (store or {}).get(k, 0)
    names = [n for n in order if n in need]
    passes: list[list[str]] = []
    cur: list[str] = []
    total = held = 0
    before: int | None = None  # S of the pass before
    for i, name in enumerate(names):
        if cur and max_bytes is not None:
            nxt = kept[names[i + 1]] if i + 1 < len(names) else 0
            t, h = total + need[name], held + kept[name]
            fits = t + max(h, nxt) <= max_bytes and (store is None or before is None or before + h <= max_bytes)
            if not fits:
                passes.append(cur)
                before, cur, total, held = total, [], 0, 0
        cur.append(name)
        total += need[name]
        held += kept[name]
    return passes + ([cur] if cur else [])


def _cut(out: Any, s: Slab, rng: tuple[int, int]) -> torch.Tensor:
    """Channels ``rng`` of a module output as ``(samples, width)`` rows."""
    return as_samples(_output(out).narrow(s.axis, rng[0], rng[1] - rng[0]), s.axis)


def _hooked_forward(model: nn.Module, x: torch.Tensor, modules: Sequence[str], fn: Callable[[str, Any], None]) -> None:
    """``model(x)`` with ``fn(module, output)`` hooked on ``modules``; the
    forward stops once all of them have run."""
    mods = dict(model.named_modules())
    ran: set[str] = set()

    def hook(name):
        def run(m, args, out):
            fn(name, out)
            ran.add(name)
            if len(ran) == len(modules):
                raise _StopForward

        return run

    if not modules:
        return
    handles = [mods[n].register_forward_hook(hook(n)) for n in modules]
    try:
        model(x)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    if len(ran) != len(modules):
        raise MergeError(f"modules {sorted(set(modules) - ran)} did not run on this batch")


def _run_pass(
    model: nn.Module, x: torch.Tensor, side: int, pair: Mapping[Hashable, Slab], held: dict[Hashable, torch.Tensor],
    acc: Mapping[Hashable, _CrossCorr], keep: Mapping[Hashable, Slab], dtype: torch.dtype,
) -> dict[Hashable, torch.Tensor]:
    """One batch through one model (``side`` 0: ``a``): each slab of ``pair``
    meets the other model's ``held`` slab of this batch in its accumulator
    (popped, so freed as it is used); the slabs of ``keep`` are returned as
    copies in ``dtype`` (later in-place ops must not change them)."""
    by_mod: dict[str, tuple[list, list]] = {}
    for i, slabs in enumerate((pair, keep)):
        for k, s in slabs.items():
            by_mod.setdefault(s.module, ([], []))[i].append(k)
    got: dict[Hashable, torch.Tensor] = {}

    def take(name: str, out: Any) -> None:
        for k in by_mod[name][0]:
            s = pair[k]
            t = _cut(out, s, s.a if side == 0 else s.b)
            a, b = (t, held.pop(k)) if side == 0 else (held.pop(k), t)
            acc[k].update(a, b)
        for k in by_mod[name][1]:
            s = keep[k]
            got[k] = _cut(out, s, s.a if side == 0 else s.b).to(dtype, copy=True)

    _hooked_forward(model, x, list(by_mod), take)
    return got


def _nbytes(tensors: Mapping[Hashable, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _update_pass(
    model_a: nn.Module, model_b: nn.Module, x: torch.Tensor, slabs: Mapping[Hashable, Slab],
    acc: Mapping[Hashable, _CrossCorr],
) -> None:
    """One batch of one pass: ``a``'s slabs held until ``b`` produces them."""
    by_mod: dict[str, list[Hashable]] = {}
    for k, s in slabs.items():
        by_mod.setdefault(s.module, []).append(k)
    held: dict[Hashable, torch.Tensor] = {}

    def take_a(name: str, out: Any) -> None:
        for k in by_mod[name]:  # a copy: later in-place ops must not change it
            held[k] = _cut(out, slabs[k], slabs[k].a).to(acc[k].dtype, copy=True)

    def take_b(name: str, out: Any) -> None:
        for k in by_mod[name]:
            acc[k].update(held.pop(k), _cut(out, slabs[k], slabs[k].b))

    _hooked_forward(model_a, x, list(by_mod), take_a)
    _hooked_forward(model_b, x, list(by_mod), take_b)
