"""Activation statistics of two networks on the same data: streaming
second moments between the neurons of each block, captured at the op that
creates the block (``spec.blocks[b].producer``) through an fx trace, and
their conversion into the inputs of the head solver.

Used by :func:`~weightspace.merge.matching.activation_matching` (Pearson
correlation) and :func:`~weightspace.merge.ot_fusion.ot_fusion` with
``ground="activations"`` (mean squared distance).

:func:`slab_moments` is the streaming core at language-model scale: only the
channel ranges ("slabs") a matcher reads are accumulated (a neuron group's
diagonal slab of its block, an attention head region), each module output is
consumed by forward hooks as it is produced (no activation store: ``a``'s
slabs wait for ``b``'s forward of the same batch, then are dropped), the
forward stops after the last module a pass needs, and when the statistics
would exceed ``max_bytes`` the modules are split into several passes over
the data (in the order they run, so early passes stop early).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Mapping, Sequence

import torch
from torch import nn

from weightspace.merge._common import MergeError, as_samples, channel_axis, check_finite_data, iter_batches
from weightspace.similarity.capture import _eval_mode  # eval + no_grad, training flags restored
from weightspace.symmetry import HeadLayout, PermutationSpec, split_groups

__all__ = ["STATS_BYTES", "block_moments", "head_costs_from_blocks", "slab_moments"]

#: default bound (bytes) of the statistics :func:`slab_moments` accumulates in
#: one pass over the data (more statistics: more passes)
STATS_BYTES = 128 * 2**20


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
    model_a: nn.Module,
    model_b: nn.Module,
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
    tokens count as samples), ``a``'s slices are held until ``b`` produces
    the same module's output, then fed to the slab's accumulator and
    dropped. A pass stops each forward once its last module has run.

    Before the first batch, one sample runs through both models with hooks
    on every module: slabs whose module is unknown, does not run exactly
    once, or whose output is not a tensor with the expected channel width
    are returned as missing.

    Args:
        data: inputs ``(N, ...)``, ``(x, y)`` or an iterable of batches;
            iterated once per pass (several passes need a re-iterable:
            a tensor, a list, a ``DataLoader``).
        slabs: ``{key: Slab}``.
        max_bytes: bound of the sums held in one pass; modules (with all
            their slabs) go into passes in the order they run; ``None``:
            one pass.
        dtype: of the sums (see ``_CrossCorr``).
        progress: a tqdm bar over passes.
        consume: called after each pass with that pass's ``{key:
            accumulator}`` (it may pop them); they are not kept (so the
            statistics held never exceed one pass's) and the first return
            value is empty.

    Returns:
        ``({key: accumulator with .corr() / .sqdist()}, missing keys,
        info)``; ``info``: ``passes``, ``samples`` (per pass),
        ``stats_bytes`` (largest pass).

    Raises:
        MergeError: ``data`` yields no samples, or a different number of
            samples in a later pass (a one-shot iterator).
    """
    from tqdm.auto import tqdm

    mods_a, mods_b = dict(model_a.named_modules()), dict(model_b.named_modules())
    missing = [k for k, s in slabs.items() if not s.module or s.module not in mods_a or s.module not in mods_b]
    live = {k: s for k, s in slabs.items() if k not in set(missing)}
    acc: dict[Hashable, _CrossCorr] = {}
    info: dict = {"passes": 0, "samples": 0, "stats_bytes": 0}
    if not live:
        return acc, missing, info
    ref = next(iter(model_a.parameters()), None)
    passes: list[list[str]] | None = None
    done = 0
    bar = tqdm(disable=not progress, desc="activation statistics", leave=False)
    with _eval_mode(model_a), _eval_mode(model_b), bar:
        while passes is None or done < len(passes):
            seen = 0
            for x, _ in iter_batches(data, batch_size, max_samples):
                x = torch.as_tensor(x)
                check_finite_data(x)
                if x.is_floating_point() and ref is not None:
                    x = x.to(ref.dtype)
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
                    nbytes = sum(_CrossCorr.nbytes(s.a[1] - s.a[0], s.b[1] - s.b[0], dtype)
                                 for s in (live[k] for k in keys))
                    info["stats_bytes"] = max(info["stats_bytes"], nbytes)
                seen += x.shape[0]
                _update_pass(model_a, model_b, x, {k: live[k] for k in keys}, cur)
            if passes is None:
                raise MergeError("data yielded no samples to capture activations from")
            if not passes:
                break
            if done == 0:
                info["samples"] = seen
            elif seen != info["samples"]:
                raise MergeError(
                    f"data yielded {info['samples']} samples in the first pass but {seen} in pass {done + 1}: "
                    f"the activation statistics need {len(passes)} passes over the data (max_bytes="
                    f"{max_bytes}); pass a tensor or a re-iterable (list, DataLoader), not a one-shot "
                    "iterator, or raise max_bytes"
                )
            done += 1
            bar.update(1)
            if consume is None:
                acc.update(cur)
            else:
                consume(cur)
            del cur
    return acc, sorted(set(missing), key=str), info


def _output(out: Any) -> Any:
    """A module output's tensor (a tuple's first element)."""
    return out[0] if isinstance(out, (tuple, list)) and out else out


def _probe(
    model_a: nn.Module, model_b: nn.Module, x: torch.Tensor, slabs: Mapping[Hashable, Slab]
) -> tuple[list[str], list[Hashable]]:
    """Run ``x`` through both models with counting hooks on every slab's
    module: ``(modules in the order they ran in a, slabs that cannot be
    captured)``."""
    names = sorted({s.module for s in slabs.values()})
    seen: list[dict[str, list]] = []
    for model in (model_a, model_b):
        mods = dict(model.named_modules())
        runs: dict[str, list] = {}

        def hook(name):
            return lambda m, args, out: runs.setdefault(name, []).append(_output(out))

        handles = [mods[n].register_forward_hook(hook(n)) for n in names]
        try:
            model(x)
        finally:
            for h in handles:
                h.remove()
        seen.append(runs)
    bad = []
    for k, s in slabs.items():
        for runs, width in zip(seen, (s.width_a, s.width_b)):
            outs = runs.get(s.module, [])
            ok = (
                len(outs) == 1
                and isinstance(outs[0], torch.Tensor)
                and outs[0].ndim >= 2
                and outs[0].is_floating_point()
                and outs[0].shape[s.axis] == width
            )
            if not ok:
                bad.append(k)
                break
    return list(seen[0]), bad


def _plan_passes(
    slabs: Mapping[Hashable, Slab], order: Sequence[str], max_bytes: int | None, dtype: torch.dtype
) -> list[list[str]]:
    """Modules per pass: in the order they run, a new pass whenever the
    next module's sums would take the pass beyond ``max_bytes``."""
    need: Counter = Counter()
    for s in slabs.values():
        need[s.module] += _CrossCorr.nbytes(s.a[1] - s.a[0], s.b[1] - s.b[0], dtype)
    passes: list[list[str]] = []
    cur: list[str] = []
    total = 0
    for name in [n for n in order if n in need]:
        if cur and max_bytes is not None and total + need[name] > max_bytes:
            passes.append(cur)
            cur, total = [], 0
        cur.append(name)
        total += need[name]
    return passes + ([cur] if cur else [])


def _update_pass(
    model_a: nn.Module, model_b: nn.Module, x: torch.Tensor, slabs: Mapping[Hashable, Slab],
    acc: Mapping[Hashable, _CrossCorr],
) -> None:
    """One batch of one pass: ``a``'s slabs held until ``b`` produces them."""
    by_mod: dict[str, list[Hashable]] = {}
    for k, s in slabs.items():
        by_mod.setdefault(s.module, []).append(k)
    held: dict[Hashable, torch.Tensor] = {}

    def cut(out: Any, s: Slab, rng: tuple[int, int]) -> torch.Tensor:
        t = _output(out).narrow(s.axis, rng[0], rng[1] - rng[0])
        return as_samples(t, s.axis)

    for side, model in enumerate((model_a, model_b)):
        mods = dict(model.named_modules())
        ran: set[str] = set()

        def hook(name):
            def run(m, args, out):
                for k in by_mod[name]:
                    s = slabs[k]
                    if side == 0:  # a copy: later in-place ops must not change it
                        held[k] = cut(out, s, s.a).to(acc[k].dtype, copy=True)
                    else:
                        acc[k].update(held.pop(k), cut(out, s, s.b))
                ran.add(name)
                if len(ran) == len(by_mod):
                    raise _StopForward

            return run

        handles = [mods[n].register_forward_hook(hook(n)) for n in by_mod]
        try:
            model(x)
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        if len(ran) != len(by_mod):
            raise MergeError(f"modules {sorted(set(by_mod) - ran)} did not run on this batch")
