"""Per-unit scaling and sign symmetries, derived from the traced fx graph.

A hidden unit :math:`i` whose value :math:`h_i` is produced by a layer with
per-unit parameters (the rows of a Linear/Conv weight and its bias, the
affine weight and bias of a normalization layer) can be multiplied by a
factor :math:`d_i \\neq 0` if every consumer of :math:`h_i` either passes
the factor through or absorbs it:

.. math::
    f(d \\odot h) = d \\odot f(h)  \\quad\\text{(pass through)}, \\qquad
    W' = W \\operatorname{diag}(d)^{-1} \\quad\\text{(absorb)}.

What is derived (``d`` scales *incoming* slices by :math:`d_i` and
*outgoing* slices by :math:`1/d_i`):

* **sources** (incoming, :math:`\\times d_i`): the output rows of
  ``nn.Linear`` / ``nn.Conv{1,2,3}d`` (``weight`` axis 0 and ``bias``), the
  affine ``weight``/``bias`` of ``BatchNorm``, ``LayerNorm`` (1-d
  ``normalized_shape``), ``GroupNorm`` and ``RMSNorm`` outputs, and the
  columns of an ``nn.Embedding``;
* **sinks** (outgoing, :math:`\\times 1/d_i`): the input columns of
  ``nn.Linear`` / ``nn.Conv{1,2,3}d`` (``weight`` axis 1); and a
  ``BatchNorm`` with running statistics and an affine weight, in eval mode:
  :math:`\\gamma_i (d_i x - d_i\\mu_i)/\\sqrt{\\sigma^2_i+\\epsilon}/d_i` is
  unchanged, so ``running_mean`` is scaled by :math:`d_i` (role ``stat``)
  and ``weight`` by :math:`1/d_i`; ``running_var`` and ``eps`` are
  untouched, which makes this exact for *any* :math:`d_i \\neq 0` (in train
  mode BatchNorm uses batch statistics instead and the claim is about eval);
* **pass through** for :math:`d_i > 0` (kind ``"scale"``, positively
  homogeneous): ReLU, LeakyReLU, PReLU, max pooling;
* **pass through** for :math:`d_i = \\pm 1` (kind ``"sign"``, odd): tanh,
  sin (SIREN), Softsign, Tanhshrink, negation;
* **pass through** for any :math:`d_i \\neq 0` (linear): identity, dropout
  (eval), average pooling, ``flatten``, zero ``F.pad``, multiplication or
  division by a constant or by a value no symmetry touches (the gate of a
  gated MLP), and ``x + y`` / ``x - y`` when ``x`` and ``y`` carry the same
  factor (residual streams: both producers are scaled together).

Everything else kills the factor of every unit it reads (GELU, SiLU,
sigmoid, softmax, attention products, LayerNorm *inputs*, concatenation,
reshapes, model outputs, unknown ops); so does a parameter used by more
than one call or read directly (``get_attr``). LayerNorm's scale invariance
is one factor for the whole layer (and only up to ``eps``), not per unit, so
it is not derived. A false claim is a bug, a missed one only a smaller
group: anything not listed is treated as breaking the symmetry.

The ``torch.export`` front end keeps no fx graph, so networks traced with it
get no scaling symmetries (only permutations).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.fx as fx
import torch.nn.functional as F

__all__ = ["ScaleAxis", "ScaleGroup", "derive_scalings"]

KINDS = ("scale", "sign")


class ScaleAxis(NamedTuple):
    """A tensor axis a scale group acts on: positions ``start + i * unit + r``
    (``i < size``, ``r < unit``) of axis ``axis`` of ``param`` belong to unit
    ``i`` and are multiplied by :math:`d_i^{\\pm 1}`.

    ``role``: ``"in"`` (an incoming slice, :math:`\\times d_i`), ``"stat"``
    (a BatchNorm ``running_mean``, :math:`\\times d_i`) or ``"out"`` (an
    outgoing slice, :math:`\\times 1/d_i`)."""

    param: str
    axis: int
    start: int
    unit: int
    role: str

    @property
    def power(self) -> int:
        return -1 if self.role == "out" else 1


@dataclass(frozen=True)
class ScaleGroup:
    """Per-unit factors :math:`d \\in G^{size}` on the units of permutation
    group ``group`` (unit ``i`` here is unit ``i`` of that group), with
    :math:`G = \\mathbb{R}_{>0}` (``kinds == ("scale",)``), :math:`\\{\\pm1\\}`
    (``("sign",)``) or :math:`\\mathbb{R}\\setminus\\{0\\}` (``("scale", "sign")``)."""

    name: str
    group: str
    size: int
    kinds: tuple[str, ...]
    axes: tuple[ScaleAxis, ...]

    @property
    def has_scale(self) -> bool:
        return "scale" in self.kinds

    @property
    def has_sign(self) -> bool:
        return "sign" in self.kinds


# ---------------------------------------------------------------- op tables

_LINEAR_MODULES = {"Linear", "Conv1d", "Conv2d", "Conv3d"}
_BN_MODULES = {"BatchNorm1d", "BatchNorm2d", "BatchNorm3d"}
_NORM_MODULES = {"LayerNorm", "GroupNorm", "RMSNorm"}
# module class -> the kinds it passes through (the others are killed)
_PASS_MODULES = {
    **{k: ("scale",) for k in ("ReLU", "LeakyReLU", "PReLU", "MaxPool1d", "MaxPool2d", "MaxPool3d",
                               "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d")},
    **{k: ("sign",) for k in ("Tanh", "Softsign", "Tanhshrink")},
    **{k: KINDS for k in ("Identity", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AvgPool1d",
                          "AvgPool2d", "AvgPool3d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d",
                          "AdaptiveAvgPool3d", "Flatten")},
}
_PASS_FUNCTIONS: dict[Any, tuple[str, ...]] = {
    **{f: ("scale",) for f in (torch.relu, F.relu, F.leaky_relu, F.max_pool1d, F.max_pool2d, F.max_pool3d,
                               F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d)},
    **{f: ("sign",) for f in (torch.tanh, F.tanh, torch.sin, F.softsign, F.tanhshrink)},
    **{f: KINDS for f in (torch.neg, operator.neg, F.dropout, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
                          F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, torch.flatten)},
}
_PASS_METHODS = {"relu": ("scale",), "tanh": ("sign",), "sin": ("sign",), "neg": KINDS, "flatten": KINDS}
_ADD = {operator.add, operator.sub, operator.iadd, operator.isub, torch.add, torch.sub}
_MUL = {operator.mul, operator.imul, torch.mul}
_DIV = {operator.truediv, operator.itruediv, torch.div}
_CONST_METHODS = {"size", "dim", "numel"}

_CONST = -1  # a non-tensor value (sizes, numbers)
_DEAD = -2  # a tensor no symmetry touches


class _Sites:
    """Union-find over sites: sets of values that carry the same per-unit factor."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.killed: list[set[str]] = []
        self.entries: list[list[tuple[str, int, str, str]]] = []  # (param, axis, role, node)
        self.first: list[int] = []  # creation order of the first source

    def new(self, entries, order: int) -> int:
        self.parent.append(len(self.parent))
        self.killed.append(set())
        self.entries.append(list(entries))
        self.first.append(order)
        return len(self.parent) - 1

    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        if self.first[b] < self.first[a]:
            a, b = b, a
        self.parent[b] = a
        self.killed[a] |= self.killed[b]
        self.entries[a] += self.entries[b]
        return a

    def kill(self, s: int, kinds=KINDS) -> None:
        if s >= 0:
            self.killed[self.find(s)].update(kinds)


def _site_nodes(arg: Any) -> list[fx.Node]:
    out: list[fx.Node] = []
    fx.node.map_arg(arg, lambda n: out.append(n))
    return out


def derive_scalings(cg, groups, aliases: dict[str, str] | None = None) -> tuple[ScaleGroup, ...]:
    """The :class:`ScaleGroup` s of a traced graph (see the module docstring).

    Args:
        cg: the :class:`~weightspace.trace.ComputationGraph` (fx front end;
            without an fx graph nothing is derived).
        groups: the spec's permutation groups (:class:`PermGroup`); only
            ``"neuron"`` groups get factors.

    Returns:
        scale groups in graph order (the order of their first producer).
    """
    graph = cg.fx_graph
    if graph is None:
        return ()
    aliases = dict(cg.aliases if aliases is None else aliases)
    canon = lambda k: aliases.get(k, k)  # noqa: E731
    shapes = cg.param_shapes
    sites = _Sites()
    val: dict[fx.Node, int] = {}
    uses: dict[str, set[str]] = {}

    def has(p: str) -> bool:
        return p in shapes

    def site_of(a: Any) -> int:
        if isinstance(a, fx.Node):
            return val.get(a, _DEAD)
        return _CONST

    def kill_all(node: fx.Node) -> None:
        for n in node.all_input_nodes:
            sites.kill(val.get(n, _DEAD))

    def source(node: fx.Node, entries, order: int) -> int:
        for p, _, _ in entries:
            uses.setdefault(canon(p), set()).add(node.name)
        return sites.new([(canon(p), ax, role, node.name) for p, ax, role in entries], order)

    def absorb(s: int, node: fx.Node, entries) -> None:
        if s < 0:
            return
        for p, _, _ in entries:
            uses.setdefault(canon(p), set()).add(node.name)
        sites.entries[sites.find(s)] += [(canon(p), ax, role, node.name) for p, ax, role in entries]

    for order, node in enumerate(graph.nodes):
        if node.op == "placeholder":
            val[node] = _DEAD
            continue
        if node.op == "get_attr":
            uses.setdefault(canon(str(node.target)), set()).update({node.name, "<get_attr>"})
            val[node] = _DEAD
            continue
        if node.op == "output":
            kill_all(node)
            continue
        args = node.args
        first = site_of(args[0]) if args else _CONST
        others = [n for n in node.all_input_nodes if not (args and n is args[0])]

        if node.op == "call_module":
            path = str(node.target)
            kind = cg.module_types.get(path, "")
            w, b = f"{path}.weight", f"{path}.bias"
            if others:
                kill_all(node)
                val[node] = _DEAD
                continue
            if kind in _LINEAR_MODULES and has(w):
                if first >= 0:
                    if 1 in cg.param_refs.get(canon(w), {}):
                        absorb(first, node, [(w, 1, "out")])
                    else:
                        sites.kill(first)
                ins = [(w, 0, "in")] + ([(b, 0, "in")] if has(b) else [])
                val[node] = source(node, ins, order)
            elif kind in _BN_MODULES:
                mean = f"{path}.running_mean"
                if first >= 0:
                    if has(mean) and has(w):
                        absorb(first, node, [(mean, 0, "stat"), (w, 0, "out")])
                    else:
                        sites.kill(first)
                val[node] = source(node, [(w, 0, "in"), (b, 0, "in")], order) if has(w) and has(b) else _DEAD
            elif kind in _NORM_MODULES:
                sites.kill(first)
                ok = has(w) and len(shapes[w]) == 1
                ins = [(w, 0, "in")] + ([(b, 0, "in")] if has(b) else [])
                val[node] = source(node, ins, order) if ok else _DEAD
            elif kind == "Embedding" and has(w):
                sites.kill(first)
                val[node] = source(node, [(w, 1, "in")], order)
            elif kind in _PASS_MODULES:
                if kind == "PReLU" and has(w):
                    uses.setdefault(canon(w), set()).add(node.name)
                sites.kill(first, set(KINDS) - set(_PASS_MODULES[kind]))
                val[node] = first if first >= 0 else _DEAD
            else:
                kill_all(node)
                for k in shapes:  # a parameter shared with a module we do not model
                    if k.startswith(path + "."):
                        uses.setdefault(canon(k), set()).add(node.name)
                val[node] = _DEAD
            continue

        target = node.target
        if node.op == "call_method" and target in _CONST_METHODS:
            val[node] = _CONST
            continue
        if node.op == "call_function" and target is getattr:
            val[node] = _CONST
            continue
        ins = [site_of(n) for n in node.all_input_nodes]
        if ins and all(s == _CONST for s in ins):
            val[node] = _CONST
            continue
        if node.op == "call_function" and target in _ADD:
            s = [site_of(a) for a in args[:2]]
            if len(s) == 2 and s[0] >= 0 and s[1] >= 0 and not (set(node.all_input_nodes) - set(args[:2])):
                val[node] = sites.union(s[0], s[1])
            else:
                kill_all(node)
                val[node] = _DEAD
            continue
        if node.op == "call_function" and (target in _MUL or target in _DIV):
            s = [site_of(a) for a in args[:2]]
            live = [x for x in s if x >= 0]
            extra = set(node.all_input_nodes) - set(a for a in args[:2] if isinstance(a, fx.Node))
            if len(s) == 2 and len(live) == 1 and not extra and (target in _MUL or s[0] >= 0):
                val[node] = live[0]
            else:
                kill_all(node)
                val[node] = _DEAD
            continue
        passes = None
        if node.op == "call_function" and target in _PASS_FUNCTIONS:
            passes = _PASS_FUNCTIONS[target]
        elif node.op == "call_function" and target is F.pad:
            mode = node.kwargs.get("mode", args[2] if len(args) > 2 else "constant")
            value = node.kwargs.get("value", args[3] if len(args) > 3 else None)
            if mode == "constant" and value in (None, 0, 0.0):
                passes = KINDS
        elif node.op == "call_method" and target in _PASS_METHODS:
            passes = _PASS_METHODS[target]
        if passes is not None and not others:
            sites.kill(first, set(KINDS) - set(passes))
            val[node] = first if first >= 0 else (_CONST if first == _CONST else _DEAD)
            continue
        kill_all(node)
        val[node] = _DEAD

    return _to_groups(cg, groups, sites, uses, canon)


def _to_groups(cg, groups, sites: _Sites, uses, canon) -> tuple[ScaleGroup, ...]:
    """Check every live site and split it over the permutation groups."""
    unit_of: dict[tuple[int, int], tuple[str, int]] = {}
    neuron_groups = [g for g in groups if g.kind == "neuron"]
    for g in neuron_groups:
        for b, s in g.targets:
            for u in range(g.size):
                unit_of[(b, s + u)] = (g.name, u)
    by_name = {g.name: g for g in neuron_groups}
    roots = sorted({sites.find(s) for s in range(len(sites.parent))}, key=lambda r: sites.first[r])
    out: list[ScaleGroup] = []
    used_names: dict[str, int] = {}
    for r in roots:
        kinds = tuple(k for k in KINDS if k not in sites.killed[r])
        entries = sites.entries[r]
        if not kinds or not any(role == "in" for _, _, role, _ in entries) or not any(
            role == "out" for _, _, role, _ in entries
        ):
            continue
        # a parameter another call (or a direct read) also uses would be
        # changed behind that call's back
        if any(len(uses.get(p, ())) > 1 for p, _, _, _ in entries):
            continue
        roles: dict[tuple[str, int], str] = {}
        ok = True
        for p, ax, role, _ in entries:
            if roles.setdefault((p, ax), role) != role:
                ok = False  # the same slice scaled both ways
        keysets = []
        for p, ax in roles:
            feat = cg.param_refs.get(p, {}).get(ax)
            if feat is None:
                ok = False
                break
            keysets.append(
                frozenset(unit_of.get((seg.block, j), ("fixed", seg.block, j))
                          for seg in feat.segs for j in range(seg.start, seg.stop))
            )
        if not ok or any(k != keysets[0] for k in keysets):
            continue  # entries that do not cover the same units
        covered: dict[str, set[int]] = {}
        for key in keysets[0]:
            if key[0] != "fixed":
                covered.setdefault(key[0], set()).add(key[1])
        label = next(p for p, _, role, _ in entries if role == "in").rsplit(".", 1)[0]
        for gname in sorted(covered, key=lambda n: [g.name for g in neuron_groups].index(n)):
            g = by_name[gname]
            if len(covered[gname]) != g.size:
                continue
            axes = tuple(
                ScaleAxis(p, ax, start, unit, roles[(canon(p), ax)])
                for p, ax, start, unit in g.axes
                if (canon(p), ax) in roles
            )
            if {(canon(a.param), a.axis) for a in axes} != set(roles):
                continue
            base = f"{gname}@{label}"
            k = used_names.get(base, 0)
            used_names[base] = k + 1
            out.append(ScaleGroup(base if k == 0 else f"{base}#{k}", gname, g.size, kinds, axes))
    return tuple(out)
