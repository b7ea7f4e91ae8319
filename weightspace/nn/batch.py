"""Backend-neutral batches of parameter graphs for metanetworks.

:func:`collate` concatenates :class:`~weightspace.graph.ParameterGraph` s of
any architectures into one disconnected graph (node ids offset per graph),
the way ``torch_geometric.data.Batch`` does, but reads every structural
tensor from the (shared) :class:`~weightspace.graph.GraphTemplate`, so a
batch of 64 small CNNs collates in about a millisecond. The result is a
:class:`GraphBatch` that both message-passing backends (PyG, DGL) consume.

Edge features are stored compactly, as in :meth:`ParameterGraph.to_pyg`:
``edge_values`` (every value in edge order) and ``edge_width`` (values per
edge). No ``[edges x widest kernel]`` table is built unless asked for
(``collate(padded=True)`` / :meth:`GraphBatch.padded`); the GMN encodes each
group of edges of one width with its own slice of the value map
(:meth:`GraphBatch.width_groups`).

Node features never contain the index of a permutable neuron: only
``node_type``, ``node_role``, ``node_layer`` (and its per-graph normalized
``node_depth``), ``node_pos`` (``-1`` for permutable neurons), degrees, and
optional per-node extras (e.g. probe activations) that are themselves
equivariant.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import torch

from weightspace.graph import ParameterGraph, pad_edge_values
from weightspace.graph.parameter_graph import NODE_FIELDS, NodeCount

__all__ = ["GraphBatch", "collate", "from_pyg"]

_TENSORS = ("edge_index", "edge_values", "edge_width", "edge_attr", "edge_mask", "edge_type", "node_type",
            "node_layer", "node_role", "node_pos", "node_depth", "node_batch", "edge_batch", "node_ptr",
            "edge_ptr", "node_extra")


@dataclass(eq=False)
class GraphBatch(NodeCount):
    """A batch of ``B`` parameter graphs as one disconnected graph.

    Attributes (``N`` nodes, ``E`` edges, ``V`` values):
        num_graphs: ``B``.
        edge_index: LongTensor ``[2, E]`` (row 0 = source = input neuron,
            row 1 = target = output neuron of the weight).
        edge_values: ``[V]`` all edge values in edge order: edge ``e`` holds
            ``edge_width[e]`` consecutive entries (compact, no padding).
        edge_width: LongTensor ``[E]``, values per edge (0: structural edge).
        edge_type: LongTensor ``[E]``, index into ``weightspace.graph.EDGE_TYPES``.
        node_type, node_layer, node_role, node_pos: LongTensor ``[N]``
            (see :class:`~weightspace.graph.GraphTemplate`).
        node_depth: ``[N]`` float, ``node_layer / max(node_layer)`` of the
            node's graph (comparable across architectures of different depth).
        node_batch: LongTensor ``[N]``, graph id of each node.
        edge_batch: LongTensor ``[E]``, graph id of each edge.
        node_ptr, edge_ptr: LongTensor ``[B + 1]``, offsets of each graph.
        edge_attr, edge_mask: optional explicit padded edge features
            ``[E, F]`` / BoolTensor ``[E, F]``. ``None`` unless
            ``collate(padded=True)`` or a caller sets its own features (a
            metanetwork then reads these instead of ``edge_values``).
        node_extra: optional ``[N, P]`` per-node features (probe activations).
        graphs: the source graphs (for writing outputs back), or ``None``.
    """

    num_graphs: int
    edge_index: torch.Tensor
    edge_values: torch.Tensor
    edge_width: torch.Tensor
    edge_type: torch.Tensor
    node_type: torch.Tensor
    node_layer: torch.Tensor
    node_role: torch.Tensor
    node_pos: torch.Tensor
    node_depth: torch.Tensor
    node_batch: torch.Tensor
    edge_batch: torch.Tensor
    node_ptr: torch.Tensor
    edge_ptr: torch.Tensor
    edge_attr: torch.Tensor | None = None
    edge_mask: torch.Tensor | None = None
    node_extra: torch.Tensor | None = None
    graphs: Sequence[ParameterGraph] | None = field(default=None, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def num_edges(self) -> int:
        return int(self.edge_type.numel())

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the batch's features."""
        return self.node_depth.dtype

    @property
    def width(self) -> int:
        """Edge feature width ``F``: the explicit ``edge_attr``'s, else the
        widest edge's."""
        if self.edge_attr is not None:
            return int(self.edge_attr.shape[1])
        if "width" not in self._cache:
            self._cache["width"] = int(self.edge_width.max()) if self.edge_width.numel() else 0
        return self._cache["width"]

    def padded(self, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(edge_attr [E, F], edge_mask [E, F])``: the explicit features if
        set, else the zero-padded view of ``edge_values`` (built on request:
        ``E x F`` floats, about 4 GB for a ResNet-50)."""
        if self.edge_attr is not None and self.edge_mask is not None and width in (None, self.width):
            return self.edge_attr, self.edge_mask
        return pad_edge_values(self.edge_values, self.edge_width, width)

    def width_groups(self) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """Edges with values grouped by width (cached): ``(w, rows [E_w],
        value index [E_w, w])`` for each width ``w > 0`` present, so
        ``edge_values[index]`` are the values of edges ``rows`` (in order)."""
        if "width_groups" not in self._cache:
            w = self.edge_width
            start = torch.cumsum(w, 0) - w
            groups = []
            counts = torch.bincount(w)
            for width in torch.nonzero(counts[1:]).flatten().add(1).tolist():
                rows = torch.nonzero(w == width).flatten()
                idx = start[rows, None] + torch.arange(width, device=w.device)
                groups.append((int(width), rows, idx))
            self._cache["width_groups"] = groups
        return self._cache["width_groups"]

    def value_layout(self) -> dict[str, torch.Tensor]:
        """Where each value sits, for encoders that read the compact
        ``edge_values`` in one pass (cached): ``value_start [E]`` (each
        edge's first value: ``edge_values[value_start[e] : value_start[e] +
        edge_width[e]]`` are edge ``e``'s) and ``value_key [V]``, ``p * T +
        t`` for a value in column ``p`` of an edge of type ``t`` (``T =
        len(EDGE_TYPES)``; read per template where the batch holds its
        graphs)."""
        if "value_layout" not in self._cache:
            w = self.edge_width
            start = torch.cumsum(w, 0) - w
            if self.graphs is not None:
                key = torch.cat([_template_value_key(g.template) for g in self.graphs])
            else:
                key = _value_key(w, self.edge_type, self.edge_values.numel())
            self._cache["value_layout"] = {"value_start": start, "value_key": key.to(w.device)}
        return self._cache["value_layout"]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "GraphBatch":
        """A copy with every tensor on ``device`` and every floating tensor
        in ``dtype`` (``None``: unchanged)."""
        kw = {}
        for name in _TENSORS:
            v = getattr(self, name)
            if v is not None:
                v = v.to(device) if device is not None else v
                if dtype is not None and v.is_floating_point():
                    v = v.to(dtype)
            kw[name] = v
        return replace(self, _cache={}, **kw)

    def degrees(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(in_degree [N], out_degree [N])`` over all edges (float)."""
        if "deg" not in self._cache:
            n = self.num_nodes
            src, dst = self.edge_index
            self._cache["deg"] = (
                torch.bincount(dst, minlength=n).to(self.dtype),
                torch.bincount(src, minlength=n).to(self.dtype),
            )
        return self._cache["deg"]

    def split_edges(self, edge_out: torch.Tensor) -> list[torch.Tensor]:
        """Per-graph slices ``[E_g, ...]`` of an edge-level tensor ``[E, ...]``."""
        sizes = (self.edge_ptr[1:] - self.edge_ptr[:-1]).tolist()
        return list(torch.split(edge_out, sizes, dim=0))

    def split_nodes(self, node_out: torch.Tensor) -> list[torch.Tensor]:
        """Per-graph slices ``[N_g, ...]`` of a node-level tensor ``[N, ...]``."""
        sizes = (self.node_ptr[1:] - self.node_ptr[:-1]).tolist()
        return list(torch.split(node_out, sizes, dim=0))

    def write_back(self, edge_out: torch.Tensor) -> list[ParameterGraph]:
        """New parameter graphs from an edge-level output ``[E, F']``
        (``F' >=`` each graph's edge width; extra columns are ignored).

        Every value of a network lives on exactly one edge feature, so this
        defines a full new set of weights per graph
        (:meth:`ParameterGraph.with_edge_values`).
        """
        if self.graphs is None:
            raise ValueError("this batch does not hold its source graphs; collate(..., keep_graphs=True)")
        out = []
        for g, part in zip(self.graphs, self.split_edges(edge_out)):
            t = g.template
            if part.shape[1] < t.max_width:
                raise ValueError(f"edge output has width {part.shape[1]} < the graph's edge width {t.max_width}")
            # each edge's first w columns, in edge order: the compact edge values
            w = t.edge_width()
            values = part[:, : t.max_width][torch.arange(t.max_width) < w[:, None]]
            out.append(g.with_edge_values(values.to(g.values.dtype)))
        return out


_TEMPLATE_CACHE: dict[int, tuple[object, dict]] = {}


def _value_key(width: torch.Tensor, edge_type: torch.Tensor, num_values: int) -> torch.Tensor:
    """``[V]`` ``column * len(EDGE_TYPES) + edge type`` of every value (edge order)."""
    from weightspace.graph import EDGE_TYPES

    start = torch.cumsum(width, 0) - width
    value_edge = torch.repeat_interleave(torch.arange(width.numel(), device=width.device), width,
                                         output_size=num_values)
    pos = torch.arange(num_values, device=width.device) - start.index_select(0, value_edge)
    return pos * len(EDGE_TYPES) + edge_type.index_select(0, value_edge)


def _template_tensors(template) -> dict:
    """Structural tensors of one template (cached by identity; templates are
    immutable after construction)."""
    hit = _TEMPLATE_CACHE.get(id(template))
    if hit is not None and hit[0] is template:
        return hit[1]
    layer = template.node_layer
    depth = layer.to(torch.float32) / max(int(layer.max()) if layer.numel() else 1, 1)
    ei = template.edge_index()
    d = {
        "edge_index": ei,
        "edge_type": template.edge_type(),
        "edge_width": template.edge_width(),
        "node_type": template.node_type,
        "node_layer": layer,
        "node_role": template.node_role,
        "node_pos": template.node_pos,
        "node_depth": depth,
        # edges sorted by target / source node (the CSR order of the
        # aggregations; a batch's is these, offset per graph)
        "perm_in": torch.argsort(ei[1], stable=True),
        "perm_out": torch.argsort(ei[0], stable=True),
    }
    if len(_TEMPLATE_CACHE) > 256:
        _TEMPLATE_CACHE.clear()
    _TEMPLATE_CACHE[id(template)] = (template, d)
    return d


def _template_value_key(template) -> torch.Tensor:
    """:func:`_value_key` of a template (cached with its structural tensors
    on first use: collate alone does not build it)."""
    d = _template_tensors(template)
    if "value_key" not in d:
        d["value_key"] = _value_key(d["edge_width"], d["edge_type"], template.num_values)
    return d["value_key"]


def collate(
    graphs: Sequence[ParameterGraph],
    *,
    width: int | None = None,
    padded: bool = False,
    node_extra: Sequence[torch.Tensor] | None = None,
    dtype: torch.dtype = torch.float32,
    keep_graphs: bool = True,
) -> GraphBatch:
    """Batch parameter graphs of any architectures.

    Args:
        graphs: ``B`` parameter graphs.
        width: also build the padded ``edge_attr`` / ``edge_mask`` with this
            many columns (at least the widest graph's edge width).
        padded: also build ``edge_attr`` / ``edge_mask`` at the widest
            graph's width (``E x F``; off by default: the GMN reads the
            compact ``edge_values``).
        node_extra: optional per-graph ``[N_g, P]`` node features (e.g.
            :func:`weightspace.nn.probe_features`).
        dtype: floating dtype of ``edge_values`` / ``node_depth``.
        keep_graphs: keep references to ``graphs`` for
            :meth:`GraphBatch.write_back`.

    Returns:
        :class:`GraphBatch`.
    """
    if len(graphs) == 0:
        raise ValueError("collate needs at least one graph")
    graphs = list(graphs)
    w = max(g.template.max_width for g in graphs)
    if width is not None and width < w:
        raise ValueError(f"width={width} is smaller than the widest graph's edge width {w}")
    B = len(graphs)
    n_nodes = torch.tensor([g.num_nodes for g in graphs], dtype=torch.long)
    n_edges = torch.tensor([g.num_edges for g in graphs], dtype=torch.long)
    node_ptr = torch.cat([torch.zeros(1, dtype=torch.long), n_nodes.cumsum(0)])
    edge_ptr = torch.cat([torch.zeros(1, dtype=torch.long), n_edges.cumsum(0)])

    names = ("edge_index", "edge_type", "edge_width", "node_type", "node_layer", "node_role", "node_pos",
             "node_depth", "perm_in", "perm_out")
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in names}
    values = []
    for g in graphs:
        d = _template_tensors(g.template)
        for k in names:
            parts[k].append(d[k])
        values.append(g.edge_values())
    node_batch = torch.repeat_interleave(torch.arange(B), n_nodes)
    edge_batch = torch.repeat_interleave(torch.arange(B), n_edges)
    extra = None
    if node_extra is not None:
        if len(node_extra) != B:
            raise ValueError(f"node_extra has {len(node_extra)} entries for {B} graphs")
        for g, x in zip(graphs, node_extra):
            if x.shape[0] != g.num_nodes:
                raise ValueError(f"node_extra entry has {x.shape[0]} rows, the graph has {g.num_nodes} nodes")
        extra = torch.cat([x.to(dtype) for x in node_extra])
    cat = {k: torch.cat(v, dim=1 if k == "edge_index" else 0) for k, v in parts.items()}
    # node / edge ids offset per graph, in place on the concatenation (one copy
    # of each index tensor, not two: ResNet-50's are 15.5M edges)
    if B > 1:
        cat["edge_index"] += node_ptr.index_select(0, edge_batch)
        edge_offset = edge_ptr.index_select(0, edge_batch)
        cat["perm_in"] += edge_offset
        cat["perm_out"] += edge_offset
    batch = GraphBatch(
        num_graphs=B,
        edge_index=cat["edge_index"],
        edge_values=torch.cat(values).to(dtype),
        edge_width=cat["edge_width"],
        edge_type=cat["edge_type"],
        node_type=cat["node_type"],
        node_layer=cat["node_layer"],
        node_role=cat["node_role"],
        node_pos=cat["node_pos"],
        node_depth=cat["node_depth"].to(dtype),
        node_batch=node_batch,
        edge_batch=edge_batch,
        node_ptr=node_ptr,
        edge_ptr=edge_ptr,
        node_extra=extra,
        graphs=graphs if keep_graphs else None,
    )
    batch._cache["perm"] = {"in": cat["perm_in"], "out": cat["perm_out"]}
    if padded or width is not None:
        batch.edge_attr, batch.edge_mask = batch.padded(width or w)
    return batch


def from_pyg(data) -> GraphBatch:
    """A :class:`GraphBatch` from a ``torch_geometric`` ``Data`` / ``Batch``
    made by :meth:`ParameterGraph.to_pyg` / :func:`weightspace.graph.to_pyg_batch`.

    The source graphs are not known, so :meth:`GraphBatch.write_back` is not
    available (use ``ParameterGraph.with_edge_values`` on the slices). The
    compact ``edge_values`` / ``edge_width`` are used as they are; where only
    a padded ``edge_attr`` / ``edge_mask`` is stored, the compact values are
    read from it.
    """
    from torch_geometric.utils import scatter

    n = int(data.num_nodes)
    node_batch = getattr(data, "batch", None)
    if node_batch is None:
        node_batch = torch.zeros(n, dtype=torch.long)
    B = int(node_batch.max()) + 1 if n else 1
    edge_batch = node_batch[data.edge_index[0]]
    n_nodes = torch.bincount(node_batch, minlength=B)
    n_edges = torch.bincount(edge_batch, minlength=B)
    max_layer = scatter(data.node_layer, node_batch, dim=0, dim_size=B, reduce="max").clamp(min=1)
    depth = data.node_layer.to(torch.float32) / max_layer[node_batch].to(torch.float32)
    if getattr(data, "edge_values", None) is not None and getattr(data, "edge_width", None) is not None:
        values, widths = data.edge_values, data.edge_width
    elif getattr(data, "edge_attr", None) is not None and getattr(data, "edge_mask", None) is not None:
        values, widths = data.edge_attr[data.edge_mask], data.edge_mask.sum(1)  # row-major = edge order
    else:
        raise ValueError(
            "from_pyg needs edge_values and edge_width (ParameterGraph.to_pyg / to_pyg_batch) "
            "or edge_attr and edge_mask (to_pyg(padded=True)) on the PyG data"
        )
    return GraphBatch(
        num_graphs=B,
        edge_index=data.edge_index,
        edge_values=values.to(torch.float32),
        edge_width=widths.long(),
        edge_type=data.edge_type,
        **{f: getattr(data, f) for f in NODE_FIELDS},
        node_depth=depth,
        node_batch=node_batch,
        edge_batch=edge_batch,
        node_ptr=torch.cat([torch.zeros(1, dtype=torch.long), n_nodes.cumsum(0)]),
        edge_ptr=torch.cat([torch.zeros(1, dtype=torch.long), n_edges.cumsum(0)]),
        graphs=None,
    )
