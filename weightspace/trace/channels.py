"""Axis descriptors and the channel state built while tracing.

Every tensor axis met during tracing carries one *descriptor*:

``None``
    untracked: batch, spatial and token axes, or values that are not neurons.
:class:`Feat`
    a neuron axis. Its positions are coordinates of one or more *blocks*
    (a block is the set of neurons a parametric op creates: the output
    channels of a Linear or Conv, the input features, ...). ``rep > 1`` means
    every neuron occupies ``rep`` consecutive positions (flattening
    ``C x H x W`` gives ``rep = H * W``).
:class:`Lazy`
    an axis of a model input or of a parameter that has not been given a
    meaning yet. It becomes a neuron axis only when an op uses it as one
    (an input's feature axis feeding a Linear, a weight's output axis, ...).
    Lazy keys that meet each other are aliased.
:class:`SplitAx`
    one level of a neuron axis that a reshape split into several axes, e.g.
    ``(B, N, E) -> (B, N, heads, head_dim)``. Level 0 indexes heads.

Ops never permute neurons; they only add *constraints*:

* a **tie** says two slices of blocks must be permuted identically (residual
  adds, elementwise products, contractions ``q . k``);
* a **cut** says a permutation may not move neurons across a position (group
  boundaries of GroupNorm / grouped convs, slices, head boundaries);
* a **fixed** block may not be permuted at all (inputs, outputs).

:mod:`weightspace.trace.structure` turns these constraints into the free
permutation groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from weightspace.errors import UnsupportedOperationError


@dataclass(frozen=True)
class Seg:
    """Coordinates ``[start, stop)`` of block ``block``."""

    block: int
    start: int
    stop: int

    @property
    def length(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Feat:
    """A neuron axis: concatenated block slices, each neuron repeated ``rep`` times."""

    segs: tuple[Seg, ...]
    rep: int = 1

    @property
    def n(self) -> int:
        """Number of neurons (positions / rep)."""
        return sum(s.length for s in self.segs)

    @property
    def size(self) -> int:
        return self.n * self.rep

    def slice_units(self, start: int, stop: int) -> "Feat":
        """Neurons ``[start, stop)`` (in neuron units, not positions)."""
        return Feat(slice_segs(self.segs, start, stop), self.rep)


@dataclass(frozen=True)
class Lazy:
    """An axis of an input or parameter whose meaning is not known yet.

    ``key`` is ``("input", name, axis)`` or ``("param", name, axis)``;
    ``opaque`` keys come from partial slices of parameters and may not be
    bound to neurons (that would leave part of the parameter untracked).
    """

    key: tuple
    size: int
    opaque: bool = False

    @property
    def kind(self) -> str:
        """``key[0]``: ``"input"``, ``"param"`` or ``"param-slice"``."""
        return self.key[0]

    @property
    def name(self) -> str:
        """``key[1]``: the input's or the parameter's name."""
        return self.key[1]


@dataclass(frozen=True)
class SplitAx:
    """Level ``level`` of split ``sid`` (see :class:`Split`)."""

    sid: int
    level: int


@dataclass
class Split:
    """A neuron axis (``segs``, rep 1) reshaped into ``sizes`` (outermost first)."""

    segs: tuple[Seg, ...]
    sizes: tuple[int, ...]

    @property
    def unit(self) -> int:
        """Neurons per level-0 index (e.g. head_dim)."""
        u = 1
        for s in self.sizes[1:]:
            u *= s
        return u


def slice_segs(segs: Iterable[Seg], start: int, stop: int) -> tuple[Seg, ...]:
    """Units ``[start, stop)`` of a concatenation of segments."""
    out: list[Seg] = []
    pos = 0
    for s in segs:
        lo, hi = pos, pos + s.length
        a, b = max(lo, start), min(hi, stop)
        if a < b:
            out.append(Seg(s.block, s.start + (a - lo), s.start + (b - lo)))
        pos = hi
    return tuple(out)


def align_segs(a: tuple[Seg, ...], b: tuple[Seg, ...]) -> list[tuple[Seg, Seg]]:
    """Pair up two equally long segment lists piece by piece."""
    bounds = sorted({0} | _cum(a) | _cum(b))
    pairs = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        (sa,) = slice_segs(a, lo, hi)
        (sb,) = slice_segs(b, lo, hi)
        pairs.append((sa, sb))
    return pairs


def _cum(segs: tuple[Seg, ...]) -> set[int]:
    out, pos = set(), 0
    for s in segs:
        pos += s.length
        out.add(pos)
    return out


@dataclass
class Block:
    """Neurons created by one op: ``size`` of them, produced by ``producer``."""

    id: int
    size: int
    kind: str  # "input" | "hidden" | "output"
    producer: str  # module path, parameter name or input name
    op: str  # short op description, e.g. "Linear", "Conv2d", "input"
    fixed: bool = False


@dataclass
class Tie:
    """Slices ``a`` and ``b`` must be permuted identically."""

    a: Seg
    b: Seg
    kind: str  # "elementwise" | "contract" | "within" | "group"
    where: str = ""


@dataclass
class ChannelState:
    """Everything the rules record while tracing one module."""

    blocks: list[Block] = field(default_factory=list)
    ties: list[Tie] = field(default_factory=list)
    cuts: dict[int, set[int]] = field(default_factory=dict)  # block -> positions
    slice_cuts: dict[int, set[int]] = field(default_factory=dict)
    splits: list[Split] = field(default_factory=list)
    # lazy keys: union-find + binding of the root to a Feat
    lazy_parent: dict[tuple, tuple] = field(default_factory=dict)
    lazy_binding: dict[tuple, Feat] = field(default_factory=dict)
    lazy_size: dict[tuple, int] = field(default_factory=dict)
    # attention structure
    head_parent: dict[int, int] = field(default_factory=dict)  # split id union-find
    head_disabled: set[int] = field(default_factory=set)
    attention_splits: set[int] = field(default_factory=set)
    # parameter metadata
    param_roles: dict[str, dict[int, str]] = field(default_factory=dict)
    param_meta: dict[str, dict] = field(default_factory=dict)
    param_direct: dict[tuple[str, int], Feat] = field(default_factory=dict)
    ops: list[tuple[str, str]] = field(default_factory=list)  # (module path, op) seen

    # ----------------------------------------------------------------- blocks
    def new_block(self, size: int, kind: str, producer: str, op: str, fixed: bool = False) -> Feat:
        b = Block(len(self.blocks), int(size), kind, producer, op, fixed)
        self.blocks.append(b)
        return Feat((Seg(b.id, 0, b.size),))

    def fix(self, desc) -> None:
        """Mark every block reachable from descriptor ``desc`` as not permutable."""
        if isinstance(desc, Feat):
            for s in desc.segs:
                self.blocks[s.block].fixed = True
        elif isinstance(desc, SplitAx):
            for s in self.splits[desc.sid].segs:
                self.blocks[s.block].fixed = True
        elif isinstance(desc, Lazy):
            feat = self.lazy_bound(desc)
            if feat is not None:
                self.fix(feat)

    def add_cuts(self, feat: Feat, unit_positions: Iterable[int], slice_cut: bool = False) -> None:
        """Forbid moving neurons across the given neuron positions of ``feat``."""
        store = self.slice_cuts if slice_cut else self.cuts
        pos = 0
        bounds = []
        for s in feat.segs:
            bounds.append((pos, pos + s.length, s))
            pos += s.length
        for u in unit_positions:
            for lo, hi, s in bounds:
                if lo <= u <= hi:
                    store.setdefault(s.block, set()).add(s.start + (u - lo))

    def tie(self, a: Feat, b: Feat, kind: str, where: str) -> None:
        if a.n != b.n:
            raise UnsupportedOperationError(
                kind, where, detail=f"neuron axes of different sizes meet ({a.n} vs {b.n})"
            )
        for sa, sb in align_segs(a.segs, b.segs):
            if sa != sb:
                self.ties.append(Tie(sa, sb, kind, where))

    # ------------------------------------------------------------------- lazy
    def lazy_find(self, key: tuple) -> tuple:
        root = key
        while self.lazy_parent.get(root, root) != root:
            root = self.lazy_parent[root]
        # path compression
        while self.lazy_parent.get(key, key) != root:
            nxt = self.lazy_parent[key]
            self.lazy_parent[key] = root
            key = nxt
        return root

    def lazy_register(self, lazy: Lazy) -> None:
        self.lazy_size.setdefault(lazy.key, lazy.size)
        self.lazy_parent.setdefault(lazy.key, lazy.key)

    def lazy_bound(self, lazy: Lazy) -> Feat | None:
        self.lazy_register(lazy)
        return self.lazy_binding.get(self.lazy_find(lazy.key))

    def lazy_members(self, root: tuple) -> list[tuple]:
        return [k for k in self.lazy_parent if self.lazy_find(k) == root]

    def _has_input(self, root: tuple) -> bool:
        return any(k[0] == "input" for k in self.lazy_members(root))

    def lazy_alias(self, a: Lazy, b: Lazy, where: str) -> Lazy:
        self.lazy_register(a)
        self.lazy_register(b)
        if a.opaque or b.opaque:
            # An opaque (partially sliced) parameter axis meeting another axis:
            # leave both untracked only if neither gets bound later.
            fa, fb = self.lazy_bound(a), self.lazy_bound(b)
            if fa is not None or fb is not None:
                raise UnsupportedOperationError(
                    "slice of a parameter axis", where,
                    hint="slice parameters only along non-neuron axes (tokens, positions)",
                )
            return a
        ra, rb = self.lazy_find(a.key), self.lazy_find(b.key)
        if ra == rb:
            return a
        fa, fb = self.lazy_binding.get(ra), self.lazy_binding.get(rb)
        self.lazy_parent[rb] = ra
        if fa is None and fb is not None:
            self.lazy_binding[ra] = fb
            self.lazy_binding.pop(rb, None)
        elif fa is not None and fb is not None:
            self.lazy_binding.pop(rb, None)
            self.tie(fa, fb, "elementwise", where)
        return a

    def materialize(self, lazy: Lazy, producer: str, op: str, where: str) -> Feat:
        """The neurons of a lazy axis, creating its block on first use."""
        if lazy.opaque:
            raise UnsupportedOperationError(
                "slice of a parameter axis used as a neuron axis", where,
                hint="index parameters only along non-neuron axes",
            )
        bound = self.lazy_bound(lazy)
        if bound is not None:
            return bound
        root = self.lazy_find(lazy.key)
        if self._has_input(root):
            name = next(k for k in self.lazy_members(root) if k[0] == "input")
            feat = self.new_block(lazy.size, "input", f"{name[1]}[{name[2]}]", "input", fixed=True)
        else:
            feat = self.new_block(lazy.size, "hidden", producer, op)
        self.lazy_binding[root] = feat
        return feat

    def bind(self, lazy: Lazy, feat: Feat, where: str) -> None:
        """Lazy axis ``lazy`` carries the neurons ``feat``."""
        if lazy.opaque:
            raise UnsupportedOperationError(
                "slice of a parameter axis used as a neuron axis", where,
                hint="index parameters only along non-neuron axes",
            )
        if lazy.size != feat.size:
            raise UnsupportedOperationError(
                "bind", where, detail=f"axis of size {lazy.size} meets neuron axis of size {feat.size}"
            )
        bound = self.lazy_bound(lazy)
        root = self.lazy_find(lazy.key)
        if bound is not None:
            self.tie_feats(bound, feat, "elementwise", where)
            return
        if self._has_input(root):
            # Input features are neurons of their own (fixed); tie them.
            own = self.materialize(lazy, "", "input", where)
            self.tie_feats(own, feat, "elementwise", where)
            return
        self.lazy_binding[root] = feat

    def tie_feats(self, a: Feat, b: Feat, kind: str, where: str) -> None:
        if a.rep != b.rep:
            raise UnsupportedOperationError(
                kind, where,
                detail=f"neuron axes with different layouts meet (repeat {a.rep} vs {b.rep})",
                hint="flatten both operands the same way",
            )
        self.tie(Feat(a.segs), Feat(b.segs), kind, where)

    # ----------------------------------------------------------------- splits
    def new_split(self, segs: tuple[Seg, ...], sizes: tuple[int, ...]) -> int:
        self.splits.append(Split(tuple(segs), tuple(int(s) for s in sizes)))
        sid = len(self.splits) - 1
        self.head_parent[sid] = sid
        return sid

    def head_find(self, sid: int) -> int:
        while self.head_parent[sid] != sid:
            self.head_parent[sid] = self.head_parent[self.head_parent[sid]]
            sid = self.head_parent[sid]
        return sid

    def head_tie(self, a: int, b: int, where: str) -> None:
        sa, sb = self.splits[a], self.splits[b]
        if sa.sizes[0] != sb.sizes[0]:
            raise UnsupportedOperationError(
                "head axes", where, detail=f"{sa.sizes[0]} heads meet {sb.sizes[0]} heads"
            )
        self.attention_splits.update((a, b))
        ra, rb = self.head_find(a), self.head_find(b)
        if ra != rb:
            self.head_parent[rb] = ra
            if rb in self.head_disabled:
                self.head_disabled.add(ra)

    def disable_heads(self, sid: int) -> None:
        self.attention_splits.add(sid)
        self.head_disabled.add(self.head_find(sid))

    def within_tie(self, a: int, b: int, where: str) -> None:
        """Contract the innermost (per-head) axes of two (heads, dim) splits."""
        sa, sb = self.splits[a], self.splits[b]
        if len(sa.sizes) != 2 or len(sb.sizes) != 2 or sa.sizes != sb.sizes:
            raise UnsupportedOperationError(
                "contraction of head axes", where,
                detail=f"split shapes {sa.sizes} and {sb.sizes}",
                hint="attention must contract (heads, head_dim) with (heads, head_dim)",
            )
        h, d = sa.sizes
        for j in range(h):
            fa = Feat(slice_segs(sa.segs, j * d, (j + 1) * d))
            fb = Feat(slice_segs(sb.segs, j * d, (j + 1) * d))
            for x, y in align_segs(fa.segs, fb.segs):
                if x != y:
                    self.ties.append(Tie(x, y, "within", where))
        self.head_tie(a, b, where)
