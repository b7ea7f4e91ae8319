"""ParameterGraph: neurons as nodes, weights as edges, with an exact index
back into every tensor.

Design choices (and why):

* **Nodes are neurons.** One node per neuron of every block (the output
  channels / units an op creates, plus the model's input features), one
  *module node* per module that owns per-neuron parameters (biases, norm
  scales and shifts, running statistics, class tokens, ...), and *virtual
  nodes* for parameter axes that are positions rather than neurons
  (embedding vocabulary).
* **Every value lives on an edge.** A weight ``W[o, i]`` is an edge
  ``i -> o``; a bias ``b[o]`` is an edge ``module node -> o`` (a bias is a
  weight from a constant-one input, as in GMN); BatchNorm contributes four
  such edges per channel (scale, shift, mean, variance), each with its own
  edge type. Keeping values only on edges gives one uniform write-back rule.
* **Conv kernels are edge feature vectors** (``k_h * k_w`` values per
  ``(in, out)`` channel pair, in kernel order), not parallel edges: kernel
  positions are not permutable, so they are features, and one edge per
  channel pair keeps the edge count 9x smaller for 3x3 kernels. The same
  holds for a Linear after ``flatten(C, H, W)``: the ``H * W`` weights
  between channel ``c`` and unit ``o`` form one edge.
* **Ties are structural edges.** Blocks whose neurons must move together
  (the two sides of a residual add, q and k of one head, the groups of a
  grouped conv) are connected neuron-to-neuron by edges of type ``tie`` /
  ``contract`` that carry no value, so messages flow through residual
  streams.
* **Node features carry no neuron position** for permutable neurons, so any
  message-passing network on the graph is invariant to the spec's
  permutations; fixed neurons (inputs, outputs) carry their index.

The structural part (nodes, edges, index back into tensors) depends only on
the architecture: it is a :class:`GraphTemplate`, built once per
architecture; a :class:`ParameterGraph` is a template plus the flat vector of
values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, NamedTuple, Sequence

import torch

from weightspace.errors import NonFiniteWeightsError, StateDictError, UnsupportedOperationError
from weightspace.symmetry.spec import AxisSegment, PermutationSpec, build_spec
from weightspace.symmetry.permutation import block_index_maps
from weightspace.trace.structure import Structure, resolve
from weightspace.trace.tracer import ComputationGraph

NODE_TYPES = ("input", "hidden", "output", "module", "virtual")
#: The per-node tensors of a :class:`GraphTemplate` that a PyG ``Data``
#: (:meth:`ParameterGraph.to_pyg`) and a GMN batch (``weightspace.nn.from_pyg``)
#: carry unchanged, under these names.
NODE_FIELDS = ("node_type", "node_layer", "node_role", "node_pos")
EDGE_TYPES = (
    "tie",
    "contract",
    "linear.weight",
    "conv.weight",
    "bias",
    "norm.weight",
    "norm.bias",
    "norm.running_mean",
    "norm.running_var",
    "embedding.weight",
    "attention.in_proj_weight",
    "param",
)
_NORMS = {"BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "GroupNorm"}


class NodePairs(NamedTuple):
    """All ``(outer[i], inner[j])`` pairs, ``i`` major: the endpoints of a
    dense tensor's edges without writing them down (``E = len(outer) *
    len(inner)``; ``outer_is_src`` says which side is the source)."""

    outer: torch.Tensor
    inner: torch.Tensor
    outer_is_src: bool

    @property
    def num_edges(self) -> int:
        return int(self.outer.numel()) * int(self.inner.numel())

    def write(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        """Fill the 1-D ``src``/``dst`` (length ``num_edges``) in place."""
        a, b = int(self.outer.numel()), int(self.inner.numel())
        o, i = (src, dst) if self.outer_is_src else (dst, src)
        o.view(a, b).copy_(self.outer[:, None].expand(a, b))
        i.view(a, b).copy_(self.inner[None, :].expand(a, b))


class ValueLayout(NamedTuple):
    """Where a tensor's values sit in edge order, as view operations.

    ``view(chunk)`` takes the tensor's ``numel`` values (a slice of the flat
    value vector starting at ``offset``) and returns a view of them whose
    row-major order is edge order, ``width`` consecutive values per edge; no
    position table is needed to read or write them.
    ``recipe``: ``("view", shape)`` / ``("permute", dims)`` /
    ``("unflatten", dim, sizes)`` steps.
    """

    offset: int
    numel: int
    width: int
    recipe: tuple

    def view(self, chunk: torch.Tensor) -> torch.Tensor:
        x = chunk
        for step in self.recipe:
            if step[0] == "view":
                x = x.view(step[1])
            elif step[0] == "permute":
                x = x.permute(step[1])
            else:
                x = x.unflatten(step[1], step[2])
        return x

    def is_identity(self) -> bool:
        """Whether edge order is the tensor's own (state_dict) order."""
        return self.view(torch.empty(self.numel, device="meta")).is_contiguous()

    def pos(self) -> torch.Tensor:
        """``[E, width]`` flat positions of the values (int64)."""
        ar = torch.arange(self.offset, self.offset + self.numel, dtype=torch.long)
        return self.view(ar).reshape(-1, self.width)


class EdgeSet:
    """Edges of one tensor (or structural ties) with a uniform feature width.

    Attributes:
        name: the state_dict key, or ``"tie:<k>"`` for structural edges.
        etype: index into :data:`EDGE_TYPES`.
        src, dst: LongTensor ``[E]`` node ids.
        pos: LongTensor ``[E, F]``: flat position of each feature in the
            graph's value vector (``None`` for structural edges, ``F = 0``).

    ``build_template`` makes edge sets *lazy*: ``nodes`` (a :class:`NodePairs`)
    and ``layout`` (a :class:`ValueLayout`) describe them, and ``src``,
    ``dst`` and ``pos`` are built on first access (a dense 768 x 3072 matrix
    is 2.4M edges; GPT-2-small has 163M). :meth:`GraphTemplate.edge_index`
    and :meth:`ParameterGraph.edge_values` read the descriptions directly.
    """

    def __init__(
        self,
        name: str,
        etype: int,
        src: torch.Tensor | None = None,
        dst: torch.Tensor | None = None,
        pos: torch.Tensor | None = None,
        *,
        nodes: NodePairs | None = None,
        layout: ValueLayout | None = None,
    ) -> None:
        if (src is None or dst is None) and nodes is None:
            raise ValueError(f"edge set {name!r} needs src and dst, or nodes")
        self.name, self.etype = name, etype
        self._src, self._dst, self._pos = src, dst, pos
        self.nodes, self.layout = nodes, layout

    def __repr__(self) -> str:
        return f"EdgeSet(name={self.name!r}, etype={self.etype}, num_edges={self.num_edges}, width={self.width})"

    @property
    def src(self) -> torch.Tensor:
        if self._src is None:
            self._materialize_nodes()
        return self._src

    @property
    def dst(self) -> torch.Tensor:
        if self._dst is None:
            self._materialize_nodes()
        return self._dst

    @property
    def pos(self) -> torch.Tensor | None:
        if self._pos is None and self.layout is not None:
            self._pos = self.layout.pos()
        return self._pos

    def _materialize_nodes(self) -> None:
        n = self.nodes.num_edges
        src, dst = torch.empty(n, dtype=torch.long), torch.empty(n, dtype=torch.long)
        self.nodes.write(src, dst)
        self._src, self._dst = src, dst

    def write_index(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        """Write this set's endpoints into the 1-D ``src``/``dst`` slices."""
        if self._src is None and self.nodes is not None:
            self.nodes.write(src, dst)
        else:
            src.copy_(self._src)
            dst.copy_(self._dst)

    @property
    def num_edges(self) -> int:
        return self.nodes.num_edges if self._src is None else int(self._src.numel())

    @property
    def width(self) -> int:
        if self.layout is not None:
            return self.layout.width
        return 0 if self._pos is None else int(self._pos.shape[1])


class NodeCount:
    """``num_nodes``: the length of the per-node ``node_type`` tensor (a
    mixin of the graph containers)."""

    @property
    def num_nodes(self) -> int:
        return int(self.node_type.numel())


@dataclass
class GraphTemplate(NodeCount):
    """Architecture-only part of a parameter graph (see module docstring).

    Attributes:
        spec: the architecture's :class:`PermutationSpec`.
        node_type: ``[N]`` index into :data:`NODE_TYPES`.
        node_layer: ``[N]`` creation order of the node's block (module and
            virtual nodes: of the block they feed).
        node_role: ``[N]`` which piece of its block a neuron is in; equal for
            neurons a permutation may exchange (heads included).
        node_pos: ``[N]`` index of fixed neurons (inputs, outputs, virtual);
            ``-1`` for permutable ones.
        node_block: ``[N]`` block id, ``-1`` for module/virtual nodes.
        block_offset: ``[num blocks]`` first node id of each block.
        edge_sets: list of :class:`EdgeSet`.
        keys, shapes, dtypes, offsets: the floating-point state_dict entries
            in order, and where each starts in the flat value vector.
        extra_keys: non-float state_dict entries (``num_batches_tracked``)
            carried through :meth:`ParameterGraph.to_state_dict` unchanged.
        module_names: name of each module node, in node order.
    """

    spec: PermutationSpec
    node_type: torch.Tensor
    node_layer: torch.Tensor
    node_role: torch.Tensor
    node_pos: torch.Tensor
    node_block: torch.Tensor
    block_offset: torch.Tensor
    edge_sets: list[EdgeSet]
    keys: list[str]
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, torch.dtype]
    offsets: dict[str, int]
    extra_keys: list[str]
    module_names: list[str]
    arch: str | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def num_neurons(self) -> int:
        return int(sum(b.size for b in self.spec.blocks))

    @property
    def num_edges(self) -> int:
        return sum(s.num_edges for s in self.edge_sets)

    @property
    def num_weight_edges(self) -> int:
        return sum(s.num_edges for s in self.edge_sets if s.pos is not None)

    @property
    def num_values(self) -> int:
        return sum(math.prod(self.shapes[k]) for k in self.keys)

    @property
    def max_width(self) -> int:
        return max((s.width for s in self.edge_sets), default=1) or 1

    @property
    def value_dtype(self) -> torch.dtype:
        return _widest([self.dtypes[k] for k in self.keys])

    def edge_index(self) -> torch.Tensor:
        """``[2, E]`` over all edge sets (cached; written in place, set by set,
        into one allocation)."""
        if "edge_index" not in self._cache:
            out = torch.empty(2, self.num_edges, dtype=torch.long)
            off = 0
            for s in self.edge_sets:
                n = s.num_edges
                s.write_index(out[0, off : off + n], out[1, off : off + n])
                off += n
            self._cache["edge_index"] = out
        return self._cache["edge_index"]

    def _per_edge(self, per_set: Sequence[int]) -> torch.Tensor:
        """``[E]`` int64: ``per_set[k]`` on every edge of edge set ``k``."""
        out = torch.empty(self.num_edges, dtype=torch.long)
        off = 0
        for s, v in zip(self.edge_sets, per_set):
            n = s.num_edges
            out[off : off + n] = v
            off += n
        return out

    def edge_type(self) -> torch.Tensor:
        """``[E]`` index into :data:`EDGE_TYPES`."""
        if "edge_type" not in self._cache:
            self._cache["edge_type"] = self._per_edge([s.etype for s in self.edge_sets])
        return self._cache["edge_type"]

    def edge_param(self) -> torch.Tensor:
        """``[E]`` index into :attr:`keys` of the tensor behind each edge (-1: tie)."""
        if "edge_param" not in self._cache:
            ids = {k: i for i, k in enumerate(self.keys)}
            self._cache["edge_param"] = self._per_edge([ids.get(s.name, -1) for s in self.edge_sets])
        return self._cache["edge_param"]

    def edge_width(self) -> torch.Tensor:
        """``[E]`` number of values on each edge (``0`` for structural edges; cached).

        With :meth:`ParameterGraph.edge_values` this is the compact (CSR-style)
        edge feature layout: edge ``e`` holds ``edge_values[o_e : o_e + w_e]``
        with ``w = edge_width()`` and ``o = cumsum(w) - w``.
        """
        if "edge_width" not in self._cache:
            self._cache["edge_width"] = self._per_edge([s.width for s in self.edge_sets])
        return self._cache["edge_width"]

    def edge_value_plan(self) -> list[tuple[int, int, slice | torch.Tensor | ValueLayout]]:
        """How the flat value vector maps to edge order (cached).

        A list of ``(start, length, src)``: entries ``start : start + length``
        of the edge-ordered values are ``values[src]`` where ``src`` is a
        slice (a contiguous run) or a LongTensor, or they are
        ``src.view(values[src.offset : src.offset + length])`` read in
        row-major order where ``src`` is a :class:`ValueLayout` (a transposed
        or permuted tensor: a strided copy, no index). Adjacent runs are
        merged, so a network whose edges list its tensors in state_dict order
        (CNNs, ResNets) has one slice: edge-ordered values are the value
        vector itself, and no ``[E, width]`` position table is ever built.
        """
        if "value_plan" not in self._cache:
            plan: list[tuple[int, int, slice | torch.Tensor | ValueLayout]] = []
            off = 0
            for s in self.edge_sets:
                lay = s.layout
                if lay is not None and s._pos is None:
                    n = lay.numel
                    if n == 0:
                        continue
                    run = slice(lay.offset, lay.offset + n) if lay.is_identity() else lay
                else:
                    if s.pos is None or s.pos.numel() == 0:
                        continue
                    flat = s.pos.reshape(-1)
                    n = flat.numel()
                    a = int(flat[0])
                    contiguous = int(flat[-1]) == a + n - 1 and torch.equal(flat, torch.arange(a, a + n, dtype=flat.dtype))
                    run = slice(a, a + n) if contiguous else flat
                last = plan[-1] if plan else None
                if isinstance(run, slice) and last is not None and isinstance(last[2], slice) and last[2].stop == run.start:
                    plan[-1] = (last[0], last[1] + n, slice(last[2].start, run.stop))
                else:
                    plan.append((off, n, run))
                off += n
            self._cache["value_plan"] = plan
        return self._cache["value_plan"]

    def edge_pos(self, width: int | None = None) -> torch.Tensor:
        """``[E, width]`` flat value positions (-1 = padding / no value).

        Dense and int64: ``E * width * 8`` bytes, cached on the template
        (6 GB for ResNet-50). Nothing in the library uses it; prefer
        :meth:`edge_width` and :meth:`edge_value_plan`.
        """
        width = width or self.max_width
        key = ("edge_pos", width)
        if key not in self._cache:
            parts = []
            for s in self.edge_sets:
                p = torch.full((s.num_edges, width), -1, dtype=torch.long)
                if s.pos is not None:
                    if s.width > width:
                        raise ValueError(f"edge set {s.name} has width {s.width} > {width}")
                    p[:, : s.width] = s.pos
                parts.append(p)
            self._cache[key] = torch.cat(parts) if parts else torch.zeros(0, width, dtype=torch.long)
        return self._cache[key]

    def node_permutation(self, perm: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Node gather index induced by a spec permutation.

        Returns ``[N]`` with ``new node i = old node idx[i]``: building the
        graph of ``apply_permutation(sd, spec, perm)`` gives the graph of
        ``sd`` relabelled by this index.
        """
        maps = block_index_maps(self.spec, perm)
        idx = torch.arange(self.num_nodes)
        for b, m in enumerate(maps):
            off = int(self.block_offset[b])
            idx[off : off + m.numel()] = off + m
        return idx

    def graph(self, state_dict: Mapping[str, torch.Tensor], *, allow_nonfinite: bool = False) -> "ParameterGraph":
        """The parameter graph of ``state_dict`` (validated against the template)."""
        validate_state_dict(state_dict, self.shapes, self.keys + self.extra_keys, allow_nonfinite=True)
        dtype = self.value_dtype
        values = torch.cat([state_dict[k].detach().reshape(-1).to(dtype) for k in self.keys]) if self.keys else torch.zeros(0)
        if not allow_nonfinite and not all_finite(values):
            # one check on the flat vector; name the culprit only on failure
            validate_state_dict(state_dict, self.shapes, self.keys + self.extra_keys, allow_nonfinite=False)
        extras = {k: state_dict[k].detach().clone() for k in self.extra_keys}
        return ParameterGraph(self, values, extras)

    def summary(self) -> dict:
        return {
            "arch": self.arch,
            "nodes": self.num_nodes,
            "neurons": self.num_neurons,
            "module_nodes": int((self.node_type == NODE_TYPES.index("module")).sum()),
            "virtual_nodes": int((self.node_type == NODE_TYPES.index("virtual")).sum()),
            "edges": self.num_edges,
            "weight_edges": self.num_weight_edges,
            "tie_edges": self.num_edges - self.num_weight_edges,
            "values": self.num_values,
            "max_edge_width": self.max_width,
        }


@dataclass
class ParameterGraph:
    """A network's weights as a graph (a :class:`GraphTemplate` plus values).

    Attributes:
        template: the architecture's structure.
        values: 1-D tensor, all floating-point state_dict entries flattened
            and concatenated in state_dict order (dtype: the widest of them).
        extras: non-float state_dict entries, carried through unchanged.
    """

    template: GraphTemplate
    values: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    # -- views -------------------------------------------------------------
    @property
    def num_nodes(self) -> int:
        return self.template.num_nodes

    @property
    def num_edges(self) -> int:
        return self.template.num_edges

    @property
    def edge_index(self) -> torch.Tensor:
        return self.template.edge_index()

    def edge_values(self) -> torch.Tensor:
        """All values in edge order, ``[sum(edge_width)]`` (= ``[num_values]``):
        edge ``e``'s features (a conv kernel in kernel order, a weight, a bias)
        are ``edge_width()[e]`` consecutive entries. Compact: no padding, no
        position table; for networks whose edges follow state_dict order this
        is :attr:`values` itself (shared, not copied)."""
        plan = self.template.edge_value_plan()
        if len(plan) == 1 and isinstance(plan[0][2], slice) and plan[0][1] == self.values.numel():
            return self.values
        out = torch.empty(sum(n for _, n, _ in plan), dtype=self.values.dtype, device=self.values.device)
        for off, n, src in plan:
            if isinstance(src, ValueLayout):
                view = src.view(self.values[src.offset : src.offset + n])
                out[off : off + n].view(view.shape).copy_(view)
            else:
                out[off : off + n] = self.values[src]
        return out

    def with_edge_values(self, edge_values: torch.Tensor) -> "ParameterGraph":
        """The inverse of :meth:`edge_values`: new weights from edge-ordered
        values ``[sum(edge_width)]``."""
        plan = self.template.edge_value_plan()
        total = sum(n for _, n, _ in plan)
        if tuple(edge_values.shape) != (total,):
            raise ValueError(f"edge_values must have shape ({total},), got {tuple(edge_values.shape)}")
        if len(plan) == 1 and isinstance(plan[0][2], slice) and plan[0][1] == self.values.numel():
            values = edge_values.to(self.values.dtype).clone()
        else:
            values = torch.empty_like(self.values)
            for off, n, src in plan:
                if isinstance(src, ValueLayout):
                    view = src.view(values[src.offset : src.offset + n])
                    view.copy_(edge_values[off : off + n].view(view.shape))
                else:
                    values[src] = edge_values[off : off + n].to(values.dtype)
        return ParameterGraph(self.template, values, dict(self.extras))

    def _check_width(self, width: int) -> None:
        t = self.template
        if width < t.max_width:
            s = max(t.edge_sets, key=lambda s: s.width)
            raise ValueError(f"edge set {s.name} has width {s.width} > {width}")

    def edge_attr(self, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Edge features ``[E, width]`` (zero padded) and their mask ``[E, width]``
        (:func:`pad_edge_values` of :meth:`edge_values`; dense: build it only
        where a model needs the padded table)."""
        width = width or self.template.max_width
        self._check_width(width)
        return pad_edge_values(self.edge_values(), self.template.edge_width(), width)

    def with_edge_attr(self, edge_attr: torch.Tensor, width: int | None = None) -> "ParameterGraph":
        """Write new edge features back (e.g. a metanetwork's output).

        ``edge_attr``: ``[E, width]``; padded entries are ignored. Every value
        of the network is on exactly one edge feature, so this defines a full
        new set of weights.
        """
        width = width or edge_attr.shape[1]
        self._check_width(width)
        if tuple(edge_attr.shape) != (self.num_edges, width):
            raise ValueError(f"edge_attr must have shape {(self.num_edges, width)}, got {tuple(edge_attr.shape)}")
        widths = self.template.edge_width().to(edge_attr.device)
        mask = torch.arange(width, device=edge_attr.device) < widths[:, None]
        return self.with_edge_values(edge_attr.masked_select(mask))

    def to_state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors back in their original shapes and dtypes (bit-exact)."""
        t = self.template
        out: dict[str, torch.Tensor] = {}
        for k in t.shapes:  # state_dict order
            if k in t.offsets:
                n = math.prod(t.shapes[k])
                off = t.offsets[k]
                out[k] = self.values[off : off + n].reshape(t.shapes[k]).to(t.dtypes[k]).clone()
            elif k in self.extras:
                out[k] = self.extras[k].clone()
        return out

    def to_pyg(self, width: int | None = None, *, padded: bool = False):
        """A ``torch_geometric.data.Data`` with ``edge_index`` ``[2, E]``,
        ``edge_values`` ``[V]`` and ``edge_width`` ``[E]`` (the compact edge
        features, see :meth:`edge_values`), ``edge_type``, ``node_type``,
        ``node_layer``, ``node_role``, ``node_pos`` and ``num_nodes``.

        No ``[E, widest kernel]`` table is built: :func:`pad_edge_values`
        (``data.edge_values, data.edge_width``) gives the padded view of a
        ``Data`` or a ``Batch`` when a model needs it. ``padded=True`` (or a
        ``width``) also stores it as ``edge_attr`` / ``edge_mask``
        ``[E, width]`` (ResNet-50: about 4 GB more).
        """
        from torch_geometric.data import Data

        t = self.template
        data = Data(
            edge_index=t.edge_index(),
            edge_values=self.edge_values(),
            edge_width=t.edge_width(),
            edge_type=t.edge_type(),
            num_nodes=t.num_nodes,
            **{f: getattr(t, f) for f in NODE_FIELDS},
        )
        if padded or width is not None:
            data.edge_attr, data.edge_mask = self.edge_attr(width)
        return data


def pad_edge_values(
    edge_values: torch.Tensor, edge_width: torch.Tensor, width: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The padded view of compact edge features.

    Args:
        edge_values: ``[V]`` edge-ordered values (:meth:`ParameterGraph.edge_values`,
            ``data.edge_values`` of :meth:`ParameterGraph.to_pyg` or of a batch).
        edge_width: ``[E]`` values per edge (``V = edge_width.sum()``).
        width: columns ``F`` (default: the widest edge, at least 1).

    Returns:
        ``(edge_attr [E, F], edge_mask [E, F])``: edge ``e``'s values in its
        first ``edge_width[e]`` columns, zeros elsewhere; the mask marks the
        real entries.
    """
    widths = edge_width.to(edge_values.device)
    widest = max(int(widths.max()) if widths.numel() else 0, 1)
    if width is None:
        width = widest
    elif width < widest:
        raise ValueError(f"width={width} is smaller than the widest edge ({widest} values)")
    if int(widths.sum()) != edge_values.numel():
        raise ValueError(f"edge_width sums to {int(widths.sum())} but there are {edge_values.numel()} edge values")
    mask = torch.arange(width, device=edge_values.device) < widths[:, None]
    attr = torch.zeros(mask.shape, dtype=edge_values.dtype, device=edge_values.device)
    return attr.masked_scatter(mask, edge_values), mask


def to_pyg_batch(graphs: Sequence[ParameterGraph], *, padded: bool = False):
    """Batch parameter graphs (of any architectures) into one
    ``torch_geometric.data.Batch`` of :meth:`ParameterGraph.to_pyg` s
    (compact ``edge_values`` / ``edge_width``; ``padded=True`` also pads
    ``edge_attr`` / ``edge_mask`` to the widest graph)."""
    from torch_geometric.data import Batch

    if not graphs:
        raise ValueError("to_pyg_batch needs at least one graph")
    if padded:
        width = max(g.template.max_width for g in graphs)
        return Batch.from_data_list([g.to_pyg(width) for g in graphs])
    return Batch.from_data_list([g.to_pyg() for g in graphs])


def all_finite(values: torch.Tensor) -> bool:
    """Whether every value is finite. One pass without a temporary: a finite
    sum proves it (NaN and Inf propagate through a sum); only a sum that is
    not finite (NaN/Inf inside, or an overflow) needs the elementwise check."""
    if values.numel() == 0 or bool(torch.isfinite(values.sum())):
        return True
    return bool(torch.isfinite(values).all())


def _widest(dtypes: Sequence[torch.dtype]) -> torch.dtype:
    if not dtypes:
        return torch.float32
    order = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
    if torch.float16 in dtypes and torch.bfloat16 in dtypes:
        return torch.float32 if torch.float64 not in dtypes else torch.float64
    return max(dtypes, key=lambda d: order.index(d) if d in order else len(order))


def validate_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    shapes: Mapping[str, tuple[int, ...]],
    expected_keys: Sequence[str],
    *,
    allow_nonfinite: bool = False,
) -> None:
    """Clear errors for missing, unexpected, mis-shaped or non-finite tensors.

    Raises:
        StateDictError: missing / unexpected keys, wrong shapes, non-tensors.
        NonFiniteWeightsError: NaN or Inf in a floating tensor (unless
            ``allow_nonfinite``).
    """
    keys = set(state_dict)
    expected = set(expected_keys)
    missing = [k for k in expected_keys if k not in keys]
    extra = sorted(keys - expected)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if extra:
            parts.append(f"unexpected keys {extra[:8]}{' ...' if len(extra) > 8 else ''}")
        raise StateDictError(
            "state_dict does not match the architecture: " + "; ".join(parts)
            + ". Check that the architecture name and its arguments (width, depth, ...) match the checkpoint."
        )
    for k in expected_keys:
        v = state_dict[k]
        if not isinstance(v, torch.Tensor):
            raise StateDictError(f"state_dict entry {k!r} is a {type(v).__name__}, not a tensor")
        if tuple(v.shape) != tuple(shapes[k]):
            raise StateDictError(
                f"state_dict entry {k!r} has shape {tuple(v.shape)}, the architecture expects {tuple(shapes[k])}"
            )
        if not allow_nonfinite and v.is_floating_point() and not all_finite(v):
            bad = int((~torch.isfinite(v)).sum())
            raise NonFiniteWeightsError(
                f"state_dict entry {k!r} has {bad} NaN/Inf value(s); pass allow_nonfinite=True to keep them"
            )


# --------------------------------------------------------------------- build
def build_template(
    cg: ComputationGraph, spec: PermutationSpec | None = None, structure: Structure | None = None
) -> GraphTemplate:
    """The :class:`GraphTemplate` of a traced module."""
    st = cg.state
    structure = structure or resolve(cg)
    spec = spec or build_spec(cg, structure)
    blocks = st.blocks
    sizes = [b.size for b in blocks]
    block_offset = torch.tensor([0] + list(_cumsum(sizes))[:-1], dtype=torch.long) if blocks else torch.zeros(0, dtype=torch.long)
    n_neurons = sum(sizes)

    size_t = torch.tensor(sizes, dtype=torch.long)
    kinds = [NODE_TYPES.index(b.kind if b.kind in ("input", "output") else "hidden") for b in blocks]
    node_type = [torch.repeat_interleave(torch.tensor(kinds, dtype=torch.long), size_t)]
    node_layer = [torch.repeat_interleave(torch.arange(len(blocks)), size_t)]
    node_block = node_layer
    # fixed neurons carry their index in the block, permutable ones -1
    fixed = torch.tensor([b.fixed for b in blocks], dtype=torch.bool)
    node_pos = [torch.where(
        torch.repeat_interleave(fixed, size_t),
        torch.arange(n_neurons) - torch.repeat_interleave(block_offset, size_t),
        torch.tensor(-1),
    )]
    node_role = []
    head_regions: dict[int, list] = {}
    for g in spec.head_groups:
        for t in g.targets:
            head_regions.setdefault(t.block, []).append((t, g))
    for b, blk in enumerate(blocks):
        role = torch.zeros(blk.size, dtype=torch.long)
        pieces = structure.pieces[b]
        for k, p in enumerate(pieces):
            role[p.start : p.stop] = k
        for t, g in head_regions.get(b, ()):
            # every head gets the roles of head 0 so heads stay exchangeable
            head0 = role[t.start : t.start + g.unit].clone()
            role[t.start : t.start + g.size * g.unit] = head0.repeat(g.size)
        node_role.append(role)

    offsets: dict[str, int] = {}
    pos = 0
    for k in cg.float_keys:
        offsets[k] = pos
        pos += math.prod(cg.param_shapes[k])

    def nodes_of(segments) -> torch.Tensor:
        """Node ids of an axis' segments, one per neuron, in axis order."""
        parts = []
        for seg in segments:
            parts.append(block_offset[seg.block] + torch.arange(seg.block_start, seg.block_start + seg.length))
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)

    def feat_segments(feat) -> list[AxisSegment]:
        out, p = [], 0
        for s in feat.segs:
            out.append(AxisSegment(s.block, s.start, s.length, p))
            p += s.length * feat.rep
        return out

    # module and virtual nodes after the neurons, as runs of
    # (node type, layer, count, positional): one tensor each at the end
    extra_runs: list[tuple[int, int, int, bool]] = []
    module_names: list[str] = []
    module_ids: dict[str, int] = {}
    next_id = [n_neurons]

    def module_node(owner: str, layer: int) -> int:
        if owner not in module_ids:
            module_ids[owner] = next_id[0]
            next_id[0] += 1
            module_names.append(owner)
            extra_runs.append((NODE_TYPES.index("module"), layer, 1, False))
        return module_ids[owner]

    def virtual_nodes(n: int, layer: int) -> torch.Tensor:
        start = next_id[0]
        next_id[0] += n
        extra_runs.append((NODE_TYPES.index("virtual"), layer, n, True))
        return torch.arange(start, start + n)

    edge_sets: list[EdgeSet] = []
    refs_by_name = {name: {r.axis: r for r in refs} for name, refs in spec.param_axes.items()}
    for name in cg.float_keys:
        shape = tuple(cg.param_shapes[name])
        numel = math.prod(shape)
        axes = refs_by_name.get(name, {})
        roles = st.param_roles.get(name, {})
        meta = st.param_meta.get(name, {})
        owner, _, local = name.rpartition(".")
        etype = _edge_type(cg, name, owner, local, len(axes), len(shape))
        grouped = "groups" in meta
        tracked = sorted(axes)

        def layout(width: int, *steps) -> ValueLayout:
            # edge-order view of this tensor's values: steps after view(shape)
            return ValueLayout(offsets[name], numel, width, (("view", shape),) + steps)

        if grouped and 0 in axes:
            # (grouped / depthwise) conv: edge (o, j) reads input channel
            # (o // out_per_group) * in_per_group + j
            g = int(meta["groups"])
            out_nodes = nodes_of(axes[0].segments)
            in_nodes = nodes_of(feat_segments(meta["graph_in"]))
            cout, per_in = shape[0], shape[1]
            per_out = cout // g
            o = torch.arange(cout).repeat_interleave(per_in)
            j = torch.arange(per_in).repeat(cout)
            src = in_nodes[(o // per_out) * per_in + j]
            dst = out_nodes[o]
            edge_sets.append(EdgeSet(name, etype, src, dst, layout=layout(numel // max(cout * per_in, 1))))
            continue
        if len(tracked) == 2:
            a_out = next((a for a in tracked if roles.get(a) == "out"), None)
            a_in = next((a for a in tracked if roles.get(a) == "in"), None)
            if a_out is None or a_in is None or a_out == a_in:
                a_out, a_in = tracked[0], tracked[1]
            r_out, r_in = axes[a_out], axes[a_in]
            out_nodes, in_nodes = nodes_of(r_out.segments), nodes_of(r_in.segments)
            rest = [d for d in range(len(shape)) if d not in (a_out, a_in)]
            n_out, n_in = out_nodes.numel(), in_nodes.numel()
            # edge (o, i) = in_nodes[i] -> out_nodes[o]; its features are
            # (rep_out, rep_in, rest...) in row-major order
            lay = layout(
                r_out.rep * r_in.rep * math.prod(shape[d] for d in rest),
                ("permute", (a_out, a_in, *rest)),
                ("unflatten", 0, (n_out, r_out.rep)),
                ("unflatten", 2, (n_in, r_in.rep)),
                ("permute", (0, 2, 1, 3, *range(4, 4 + len(rest)))),
            )
            edge_sets.append(EdgeSet(name, etype, nodes=NodePairs(out_nodes, in_nodes, False), layout=lay))
        elif len(tracked) == 1:
            a = tracked[0]
            r = axes[a]
            nodes = nodes_of(r.segments)
            virt = [d for d in range(len(shape)) if roles.get(d) == "virtual" and d != a]
            rest = [d for d in range(len(shape)) if d != a and d not in virt]
            layer = r.segments[0].block
            n = nodes.numel()
            if virt:
                nv = math.prod(shape[d] for d in virt)
                vn = virtual_nodes(nv, layer)
                # edge (v, i) = virtual node v -> nodes[i]
                lay = layout(
                    r.rep * math.prod(shape[d] for d in rest),
                    ("permute", (*virt, a, *rest)),
                    ("unflatten", len(virt), (n, r.rep)),
                )
                edge_sets.append(EdgeSet(name, etype, nodes=NodePairs(vn, nodes, True), layout=lay))
            else:
                m = module_node(owner or "<root>", layer)
                lay = layout(numel // max(n, 1), ("permute", (a, *rest)), ("unflatten", 0, (n, -1)))
                edge_sets.append(EdgeSet(name, etype, nodes=NodePairs(nodes, torch.tensor([m]), False), layout=lay))
        elif len(tracked) == 0:
            m = module_node(owner or "<root>", len(blocks))
            lay = ValueLayout(offsets[name], numel, 1, (("view", (numel, 1)),))
            node = torch.tensor([m])
            edge_sets.append(EdgeSet(name, etype, nodes=NodePairs(node, node.expand(numel), False), layout=lay))
        else:
            raise UnsupportedOperationError(
                f"parameter with {len(tracked)} neuron axes", owner,
                detail=f"tensor {name!r} (shape {tuple(shape)}) has neuron axes {tracked}",
                hint="parameter graphs support tensors with at most two neuron axes",
            )
    # structural tie edges
    for k, tie in enumerate(st.ties):
        a = block_offset[tie.a.block] + torch.arange(tie.a.start, tie.a.stop)
        b = block_offset[tie.b.block] + torch.arange(tie.b.start, tie.b.stop)
        kind = "contract" if tie.kind in ("contract", "within") else "tie"
        edge_sets.append(EdgeSet(f"tie:{k}", EDGE_TYPES.index(kind), a, b, None))

    counts = torch.tensor([r[2] for r in extra_runs], dtype=torch.long)
    n_extra = int(counts.sum())

    def runs(values) -> torch.Tensor:
        return torch.repeat_interleave(torch.tensor(values, dtype=torch.long), counts)

    def cat(parts, extra):
        base = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
        return torch.cat([base.long(), extra])

    extra_pos = [torch.arange(r[2]) if r[3] else torch.full((r[2],), -1) for r in extra_runs]

    return GraphTemplate(
        spec=spec,
        node_type=cat(node_type, runs([r[0] for r in extra_runs])),
        node_layer=cat(node_layer, runs([r[1] for r in extra_runs])),
        node_role=cat(node_role, torch.zeros(n_extra, dtype=torch.long)),
        node_pos=cat(node_pos, torch.cat(extra_pos) if extra_pos else torch.zeros(0, dtype=torch.long)),
        node_block=cat(node_block, torch.full((n_extra,), -1, dtype=torch.long)),
        block_offset=block_offset,
        edge_sets=edge_sets,
        keys=list(cg.float_keys),
        shapes=dict(cg.param_shapes),
        dtypes={k: cg.param_dtypes[k] for k in cg.float_keys},
        offsets=offsets,
        extra_keys=list(cg.extra_keys),
        module_names=module_names,
        arch=cg.arch,
    )


def _edge_type(cg: ComputationGraph, name: str, owner: str, local: str, n_tracked: int, ndim: int) -> int:
    mtype = cg.module_types.get(owner, "")
    if mtype in _NORMS:
        key = {"weight": "norm.weight", "bias": "norm.bias", "running_mean": "norm.running_mean",
               "running_var": "norm.running_var"}.get(local, "param")
    elif local == "bias" and n_tracked <= 1:
        key = "bias"
    elif mtype == "Embedding":
        key = "embedding.weight"
    elif mtype == "MultiheadAttention" and local == "in_proj_weight":
        key = "attention.in_proj_weight"
    elif local == "in_proj_bias":
        key = "bias"
    elif n_tracked == 2 or (n_tracked == 1 and local == "weight" and ndim > 2):
        key = "conv.weight" if ndim > 2 else "linear.weight"
    else:
        key = "param"
    return EDGE_TYPES.index(key)


def _cumsum(xs):
    total = 0
    for x in xs:
        total += x
        yield total
