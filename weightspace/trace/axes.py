"""Descriptor algebra shared by all op rules: unify, broadcast, reshape, index."""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import torch

from weightspace.errors import UnsupportedOperationError
from weightspace.trace.channels import ChannelState, Feat, Lazy, SplitAx, slice_segs

Desc = Any  # None | Feat | Lazy | SplitAx


class Resplit(NamedTuple):
    """Returned by :meth:`Ctx.slice_axis` / :meth:`Ctx.select_axis` instead of
    a descriptor when level 0 (the heads) of split ``old`` was sliced or
    indexed: the tensor's other levels of ``old`` must be rewritten with
    :func:`apply_resplit`.

    ``kind == "resplit"``: they become levels of split ``new`` (a split id),
    shifted by ``level_shift`` (0 after a slice, -1 after an integer index
    removed level 0). ``kind == "resplit-feat"``: an integer index left a
    single head of a (heads, head_dim) split; ``new`` is the :class:`Feat`
    of that head's neurons.
    """

    kind: str
    old: int
    new: Any  # split id, or Feat for "resplit-feat"
    level_shift: int = 0


class Ctx:
    """What a rule sees: the channel state and where it is (for error messages)."""

    def __init__(self, state: ChannelState, where: str, op: str) -> None:
        self.state = state
        self.where = where
        self.op = op

    def unsupported(self, detail: str = "", hint: str = "") -> UnsupportedOperationError:
        return UnsupportedOperationError(self.op, self.where, hint=hint, detail=detail)

    # ------------------------------------------------------------ basic forms
    def as_feature(self, d: Desc, size: int, producer: str = "", op: str = "") -> Feat:
        """Neurons of an axis used as a feature axis (creating blocks for
        untracked or lazy axes)."""
        st = self.state
        if isinstance(d, Feat):
            return d
        if isinstance(d, Lazy):
            return st.materialize(d, producer or self.where, op or self.op, self.where)
        if isinstance(d, SplitAx):
            raise self.unsupported(
                "a split (heads, head_dim) axis is used as a whole feature axis",
                hint="merge the head axes back with reshape before this op",
            )
        # Untracked values used as features (e.g. a Linear over the token axis):
        # their positions carry meaning, so they are fixed neurons.
        return st.new_block(size, "input", self.where, f"{self.op} (untracked input)", fixed=True)

    def bind_param(self, d: Desc, feat: Feat) -> None:
        """A parameter axis (descriptor ``d``) carries the neurons ``feat``."""
        if isinstance(d, Lazy):
            self.state.bind(d, feat, self.where)
        elif isinstance(d, Feat):
            self.state.tie_feats(d, feat, "elementwise", self.where)
        elif isinstance(d, SplitAx):
            raise self.unsupported("parameter axis meets a split head axis")
        # None: a computed weight with no parameter behind it; nothing to record

    # ---------------------------------------------------------------- unify
    def unify(self, a: Desc, b: Desc, size: int) -> Desc:
        """Two axes of equal size meeting elementwise (add, mul, cat's other dims)."""
        st = self.state
        if size <= 1:
            return None
        if a is None and b is None:
            return None
        if a is None or b is None:
            other = b if a is None else a
            if isinstance(other, (Feat, SplitAx)):
                # untracked values (constants, buffers) meet neurons: those
                # neurons can no longer be permuted
                st.fix(other)
                if isinstance(other, SplitAx):
                    st.disable_heads(other.sid)
            return other
        if isinstance(a, Lazy) and isinstance(b, Lazy):
            return st.lazy_alias(a, b, self.where)
        if isinstance(a, Lazy) or isinstance(b, Lazy):
            lazy, other = (a, b) if isinstance(a, Lazy) else (b, a)
            if isinstance(other, Feat):
                st.bind(lazy, other, self.where)
                return other
            # lazy (parameter / input) axis meets a split axis
            st.disable_heads(other.sid)
            if other.level == len(st.splits[other.sid].sizes) - 1:
                st.fix(other)
            return other
        if isinstance(a, Feat) and isinstance(b, Feat):
            st.tie_feats(a, b, "elementwise", self.where)
            return a
        if isinstance(a, SplitAx) and isinstance(b, SplitAx):
            sa, sb = st.splits[a.sid], st.splits[b.sid]
            if a.level != b.level or sa.sizes != sb.sizes:
                raise self.unsupported(
                    f"split axes of different structure meet ({sa.sizes}[{a.level}] vs {sb.sizes}[{b.level}])"
                )
            if a.sid != b.sid:
                if a.level == len(sa.sizes) - 1:
                    # innermost axes meet elementwise: neuron j of head i on
                    # both sides must move together
                    if len(sa.sizes) == 2:
                        st.within_tie(a.sid, b.sid, self.where)
                    else:
                        st.tie(Feat(sa.segs), Feat(sb.segs), "within", self.where)
                else:
                    # head axes meet (batch dims of q @ k^T, attn @ v): heads
                    # move together, each keeps its own inner permutation
                    st.head_tie(a.sid, b.sid, self.where)
            return a
        raise self.unsupported(
            "a neuron axis meets a split (heads, head_dim) axis elementwise",
            hint="reshape both operands the same way",
        )

    def contract(self, a: Desc, b: Desc, size: int) -> None:
        """Two axes summed over together (matmul / einsum contraction)."""
        st = self.state
        if size <= 1 or (a is None and b is None):
            return
        if isinstance(a, SplitAx) and isinstance(b, SplitAx):
            sa, sb = st.splits[a.sid], st.splits[b.sid]
            last_a, last_b = len(sa.sizes) - 1, len(sb.sizes) - 1
            if a.level == last_a and b.level == last_b:
                st.within_tie(a.sid, b.sid, self.where)
                return
            raise self.unsupported("contraction over a head axis")
        if isinstance(a, SplitAx) or isinstance(b, SplitAx):
            other = b if isinstance(a, SplitAx) else a
            split = a if isinstance(a, SplitAx) else b
            if other is None:
                st.fix(split)
                st.disable_heads(split.sid)
                return
            raise self.unsupported("a head-split axis is contracted with a plain axis")
        self.unify(a, b, size)

    # ------------------------------------------------------------ broadcast
    def broadcast(self, items: Sequence[tuple[torch.Tensor, tuple]], out_shape: Sequence[int]) -> tuple:
        """Descriptors of a broadcast elementwise result."""
        nd = len(out_shape)
        out: list[Desc] = []
        for i in range(nd):
            k = nd - i  # position from the right
            size = int(out_shape[i])
            ds = [
                d[t.dim() - k]
                for t, d in items
                if d is not None and t.dim() >= k and int(t.shape[t.dim() - k]) == size
            ]
            if not ds or size <= 1:
                out.append(None)
                continue
            # A plain axis of the same size but of a *different* operand that
            # broadcasts (size 1) is ignored; only full-size axes meet.
            acc = ds[0]
            for d in ds[1:]:
                acc = self.unify(acc, d, size)
            # Operands missing this axis entirely (broadcast from the left)
            # do not meet it.
            out.append(acc)
        return tuple(out)

    # ------------------------------------------------------------- reshape
    def reshape(self, in_shape: Sequence[int], descs: tuple, out_shape: Sequence[int]) -> tuple:
        """Descriptors after ``view``/``reshape``/``flatten``/``unflatten``."""
        in_shape = [int(s) for s in in_shape]
        out_shape = [int(s) for s in out_shape]
        out: list[Desc] = [None] * len(out_shape)
        i = j = 0
        while i < len(in_shape) or j < len(out_shape):
            # skip size-1 axes on either side (they carry no neurons)
            if i < len(in_shape) and in_shape[i] == 1 and not (j < len(out_shape) and out_shape[j] == 1):
                self._drop(descs[i])
                i += 1
                continue
            if j < len(out_shape) and out_shape[j] == 1 and not (i < len(in_shape) and in_shape[i] == 1):
                j += 1
                continue
            if i < len(in_shape) and j < len(out_shape) and in_shape[i] == 1 and out_shape[j] == 1:
                i += 1
                j += 1
                continue
            if i >= len(in_shape) or j >= len(out_shape):
                raise self.unsupported(f"cannot match reshape {in_shape} -> {out_shape}")
            # grow groups until the products match
            gi, gj = [i], [j]
            pi, pj = in_shape[i], out_shape[j]
            while pi != pj:
                if pi < pj:
                    i += 1
                    gi.append(i)
                    pi *= in_shape[i]
                else:
                    j += 1
                    gj.append(j)
                    pj *= out_shape[j]
            i += 1
            j += 1
            res = self._reshape_group([in_shape[a] for a in gi], [descs[a] for a in gi], [out_shape[b] for b in gj])
            for b, d in zip(gj, res):
                out[b] = d
        return tuple(out)

    def _drop(self, d: Desc) -> None:
        # A size-1 axis disappearing never carries neurons worth keeping.
        return None

    def _reshape_group(self, in_sizes: list[int], in_descs: list[Desc], out_sizes: list[int]) -> list[Desc]:
        if len(in_sizes) == 1 and len(out_sizes) == 1:
            return [in_descs[0]]
        tracked = [(k, d) for k, (d, s) in enumerate(zip(in_descs, in_sizes)) if d is not None and s > 1]
        if not tracked:
            return [None] * len(out_sizes)
        if len(in_sizes) == 1:
            return self._split(in_sizes[0], in_descs[0], out_sizes)
        if len(out_sizes) == 1:
            return [self._merge(in_sizes, in_descs)]
        raise self.unsupported(
            f"reshape regroups axes {in_sizes} -> {out_sizes} across a neuron axis",
            hint="reshape neuron axes only by flattening (C, H, W) -> C*H*W or splitting E -> (heads, head_dim)",
        )

    def _merge(self, in_sizes: list[int], in_descs: list[Desc]) -> Desc:
        st = self.state
        nontriv = [(s, d) for s, d in zip(in_sizes, in_descs) if s > 1]
        descs = [d for _, d in nontriv]
        # all levels of one split, in order -> the original neuron axis
        if all(isinstance(d, SplitAx) for d in descs):
            sids = {d.sid for d in descs}
            if len(sids) > 1 and len({st.head_find(x) for x in sids}) == 1 and len({st.splits[x].sizes for x in sids}) == 1:
                # heads of a tied split (attn @ v keeps q's head axis and v's
                # head_dim): neuron (i, t) is the innermost split's neuron
                sids = {descs[-1].sid}
                descs = [SplitAx(descs[-1].sid, d.level) for d in descs]
            if len(sids) == 1:
                sid = descs[0].sid
                sp = st.splits[sid]
                levels = [d.level for d in descs]
                nontriv_levels = [k for k, s in enumerate(sp.sizes) if s > 1]
                if levels == nontriv_levels[: len(levels)] and levels[0] == nontriv_levels[0] and levels == nontriv_levels:
                    return Feat(sp.segs)
                if levels == sorted(levels) and levels[-1] == len(sp.sizes) - 1 and levels == list(range(levels[0], levels[-1] + 1)):
                    merged = math.prod(sp.sizes[levels[0]:])
                    new = st.new_split(sp.segs, sp.sizes[: levels[0]] + (merged,))
                    st.attention_splits.discard(new)
                    return SplitAx(new, levels[0])
            raise self.unsupported(
                "reshape merges head axes out of order",
                hint="transpose heads back next to head_dim before merging",
            )
        # flatten (C, H, W) -> C*H*W: the first non-trivial axis is the neuron axis
        first, rest = descs[0], descs[1:]
        if any(isinstance(d, (Feat, SplitAx)) for d in rest):
            raise self.unsupported(
                "flatten puts a neuron axis inside another axis (e.g. (tokens, features) -> tokens*features)",
                hint="flatten so that the neuron axis is the outermost of the merged axes",
            )
        rep = math.prod(s for s, _ in nontriv[1:])
        if isinstance(first, Feat):
            if any(isinstance(d, Lazy) for d in rest):
                # spatial axes of an input that were never neurons
                pass
            return Feat(first.segs, first.rep * rep)
        if isinstance(first, Lazy):
            if all(not isinstance(d, (Feat, SplitAx)) for d in rest):
                # e.g. flattening an input image for an MLP: the merged axis is
                # a new lazy input axis (all pixels are input features)
                kind = "input" if first.kind == "input" else "param-merged"
                if kind != "input":
                    raise self.unsupported(
                        "reshape merges axes of a parameter",
                        hint="use parameters with their natural shape in F.linear / F.conv",
                    )
                key = ("input", first.name, f"{first.key[2]}..{first.key[2] + len(in_sizes) - 1}")
                return Lazy(key, math.prod(in_sizes))
        if isinstance(first, SplitAx):
            raise self.unsupported("flatten of a head axis with non-head axes")
        return None

    def _split(self, size: int, d: Desc, out_sizes: list[int]) -> list[Desc]:
        st = self.state
        if isinstance(d, Lazy):
            if d.kind == "input":
                # an input axis reshaped: positions stay meaningful, nothing to track
                return [None] * len(out_sizes)
            raise self.unsupported(
                "reshape splits an axis of a parameter",
                hint="use parameters with their natural shape",
            )
        if isinstance(d, SplitAx):
            sp = st.splits[d.sid]
            if d.level != 0 or len(sp.sizes) != 1 and False:
                pass
            raise self.unsupported("reshape splits an already split head axis further")
        assert isinstance(d, Feat)
        if d.rep > 1:
            # unflatten C*H*W -> (C, H, W)
            if out_sizes[0] == d.n and math.prod(out_sizes[1:]) == d.rep:
                return [Feat(d.segs)] + [None] * (len(out_sizes) - 1)
            raise self.unsupported(
                f"reshape of a flattened neuron axis ({d.n} neurons x {d.rep}) into {out_sizes}",
                hint="unflatten back to (C, H, W) only",
            )
        nontriv = [k for k, s in enumerate(out_sizes) if s > 1]
        sizes = tuple(out_sizes[k] for k in nontriv)
        sid = st.new_split(d.segs, sizes)
        out: list[Desc] = [None] * len(out_sizes)
        for level, k in enumerate(nontriv):
            out[k] = SplitAx(sid, level)
        return out

    # -------------------------------------------------------------- indexing
    def slice_axis(self, d: Desc, size: int, start: int, stop: int, step: int = 1) -> Desc:
        """Descriptor of ``x[..., start:stop:step, ...]`` along one axis (or a
        :class:`Resplit` marker when a split's level 0 is sliced)."""
        st = self.state
        start, stop, step = slice(start, stop, step).indices(size)
        if start == 0 and stop == size and step == 1:
            return d
        if d is None:
            return None
        if step != 1:
            if isinstance(d, Lazy) and d.kind == "input":
                return None
            raise self.unsupported("strided slice of a neuron axis")
        if isinstance(d, Feat):
            if start % d.rep or stop % d.rep:
                raise self.unsupported("slice cuts through a flattened neuron")
            a, b = start // d.rep, stop // d.rep
            st.add_cuts(d, [a, b], slice_cut=True)
            return d.slice_units(a, b)
        if isinstance(d, Lazy):
            if d.kind == "input":
                return None
            return Lazy(("param-slice",) + d.key[1:] + (start, stop), stop - start, opaque=True)
        if isinstance(d, SplitAx):
            sp = st.splits[d.sid]
            if d.level == 0:
                u = sp.unit
                segs = slice_segs(sp.segs, start * u, stop * u)
                st.add_cuts(Feat(sp.segs), [start * u, stop * u], slice_cut=True)
                new = st.new_split(segs, (stop - start,) + sp.sizes[1:])
                return Resplit("resplit", d.sid, new)
            raise self.unsupported("slice inside a head (of the head_dim axis)")
        return None

    def select_axis(self, d: Desc, size: int, index: int) -> Desc:
        """Descriptor effect of removing an axis by integer indexing. Returns a
        :class:`Resplit` marker when a split level 0 is selected."""
        st = self.state
        if d is None or size <= 1:
            return None
        if isinstance(d, Feat):
            # one neuron singled out: it can no longer move
            st.fix(d)
            return None
        if isinstance(d, Lazy):
            return None
        if isinstance(d, SplitAx):
            sp = st.splits[d.sid]
            if d.level == 0:
                index = index % size
                u = sp.unit
                segs = slice_segs(sp.segs, index * u, (index + 1) * u)
                st.add_cuts(Feat(sp.segs), [index * u, (index + 1) * u], slice_cut=True)
                if len(sp.sizes) == 2:
                    return Resplit("resplit-feat", d.sid, Feat(segs))
                new = st.new_split(segs, sp.sizes[1:])
                return Resplit("resplit", d.sid, new, level_shift=-1)
            raise self.unsupported("integer index inside a head (head_dim axis)")
        return None


def apply_resplit(descs: list, marker: Resplit) -> list:
    """Rewrite the other axes of a tensor after a split's level 0 was sliced
    (levels unchanged) or selected (levels shift down by one)."""
    out = []
    for d in descs:
        if isinstance(d, SplitAx) and d.sid == marker.old:
            if marker.kind == "resplit-feat":
                out.append(marker.new if d.level == 1 else None)
            else:
                out.append(SplitAx(marker.new, d.level + marker.level_shift))
        else:
            out.append(d)
    return out
