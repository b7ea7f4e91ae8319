"""Backend-neutral batches of parameter graphs for metanetworks.

:func:`collate` concatenates :class:`~weightspace.graph.ParameterGraph` s of
any architectures into one disconnected graph (node ids offset per graph),
the way ``torch_geometric.data.Batch`` does, but reads every structural
tensor from the (shared) :class:`~weightspace.graph.GraphTemplate` and
gathers the edge values of all graphs of one template in one indexing op, so
a batch of 64 small CNNs collates in about a millisecond. The result is a
:class:`GraphBatch` that both message-passing backends (PyG, DGL) consume.

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
from weightspace.graph.parameter_graph import NodeCount

__all__ = ["GraphBatch", "collate", "from_pyg"]


@dataclass
class GraphBatch(NodeCount):
    """A batch of ``B`` parameter graphs as one disconnected graph.

    Attributes (``N`` nodes, ``E`` edges, ``F`` edge feature width):
        num_graphs: ``B``.
        edge_index: LongTensor ``[2, E]`` (row 0 = source = input neuron,
            row 1 = target = output neuron of the weight).
        edge_attr: ``[E, F]`` edge values, zero padded.
        edge_mask: BoolTensor ``[E, F]``, which entries are real values.
        edge_type: LongTensor ``[E]``, index into ``weightspace.graph.EDGE_TYPES``.
        node_type, node_layer, node_role, node_pos: LongTensor ``[N]``
            (see :class:`~weightspace.graph.GraphTemplate`).
        node_depth: ``[N]`` float, ``node_layer / max(node_layer)`` of the
            node's graph (comparable across architectures of different depth).
        node_batch: LongTensor ``[N]``, graph id of each node.
        edge_batch: LongTensor ``[E]``, graph id of each edge.
        node_ptr, edge_ptr: LongTensor ``[B + 1]``, offsets of each graph.
        node_extra: optional ``[N, P]`` per-node features (probe activations).
        graphs: the source graphs (for writing outputs back), or ``None``.
    """

    num_graphs: int
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    edge_mask: torch.Tensor
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
    node_extra: torch.Tensor | None = None
    graphs: Sequence[ParameterGraph] | None = field(default=None, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def num_edges(self) -> int:
        return int(self.edge_type.numel())

    @property
    def width(self) -> int:
        return int(self.edge_attr.shape[1])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "GraphBatch":
        """A copy with every tensor on ``device`` and every floating tensor
        in ``dtype`` (``None``: unchanged)."""
        kw = {}
        for name in ("edge_index", "edge_attr", "edge_mask", "edge_type", "node_type", "node_layer",
                     "node_role", "node_pos", "node_depth", "node_batch", "edge_batch", "node_ptr",
                     "edge_ptr", "node_extra"):
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
                torch.bincount(dst, minlength=n).to(self.edge_attr.dtype),
                torch.bincount(src, minlength=n).to(self.edge_attr.dtype),
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
        (:meth:`ParameterGraph.with_edge_attr`).
        """
        if self.graphs is None:
            raise ValueError("this batch does not hold its source graphs; collate(..., keep_graphs=True)")
        out = []
        for g, part in zip(self.graphs, self.split_edges(edge_out)):
            t = g.template
            if part.shape[1] < t.max_width:
                raise ValueError(f"edge output has width {part.shape[1]} < the graph's edge width {t.max_width}")
            # every value lives on exactly one edge feature (ParameterGraph
            # invariant), so the edge sets overwrite all of them; same result
            # as g.with_edge_attr without its padded [E, width] int64 index
            plan, _ = _edge_fill_plan(t, t.max_width)
            values = torch.empty_like(g.values)
            for off, n, pos in plan:
                values[pos] = part[off : off + n, : pos.shape[1]].to(values.dtype)
            out.append(ParameterGraph(t, values, dict(g.extras)))
        return out


_TEMPLATE_CACHE: dict[int, tuple[object, dict]] = {}


def _template_tensors(template) -> dict:
    """Structural tensors of one template (cached by identity; templates are
    immutable after construction)."""
    hit = _TEMPLATE_CACHE.get(id(template))
    if hit is not None and hit[0] is template:
        return hit[1]
    layer = template.node_layer
    depth = layer.to(torch.float32) / max(int(layer.max()) if layer.numel() else 1, 1)
    d = {
        "edge_index": template.edge_index(),
        "edge_type": template.edge_type(),
        "node_type": template.node_type,
        "node_layer": layer,
        "node_role": template.node_role,
        "node_pos": template.node_pos,
        "node_depth": depth,
    }
    if len(_TEMPLATE_CACHE) > 256:
        _TEMPLATE_CACHE.clear()
    _TEMPLATE_CACHE[id(template)] = (template, d)
    return d


def _edge_fill_plan(template, width: int) -> tuple[list[tuple[int, int, torch.Tensor]], torch.Tensor]:
    """Per edge set ``(first edge, edges, value positions [E_s, F_s])`` and
    the batch mask ``[E, width]`` (cached). Filling per edge set at its own
    width avoids a padded ``[E, width]`` int64 index (6 GB for ResNet-50)."""
    d = _template_tensors(template)
    key = ("fill", width)
    if key not in d:
        plan, off = [], 0
        mask = torch.zeros(template.num_edges, width, dtype=torch.bool)
        for s in template.edge_sets:
            if s.pos is not None and s.width:
                plan.append((off, s.num_edges, s.pos))
                mask[off : off + s.num_edges, : s.width] = True
            off += s.num_edges
        d[key] = (plan, mask)
    return d[key]


def collate(
    graphs: Sequence[ParameterGraph],
    *,
    width: int | None = None,
    node_extra: Sequence[torch.Tensor] | None = None,
    dtype: torch.dtype = torch.float32,
    keep_graphs: bool = True,
) -> GraphBatch:
    """Batch parameter graphs of any architectures.

    Args:
        graphs: ``B`` parameter graphs.
        width: edge feature width ``F`` (default: the widest graph's).
        node_extra: optional per-graph ``[N_g, P]`` node features (e.g.
            :func:`weightspace.nn.probe_features`).
        dtype: floating dtype of ``edge_attr`` / ``node_depth``.
        keep_graphs: keep references to ``graphs`` for
            :meth:`GraphBatch.write_back`.

    Returns:
        :class:`GraphBatch`.
    """
    if len(graphs) == 0:
        raise ValueError("collate needs at least one graph")
    graphs = list(graphs)
    w = max(g.template.max_width for g in graphs)
    if width is not None:
        if width < w:
            raise ValueError(f"width={width} is smaller than the widest graph's edge width {w}")
        w = width
    B = len(graphs)
    n_nodes = torch.tensor([g.num_nodes for g in graphs], dtype=torch.long)
    n_edges = torch.tensor([g.num_edges for g in graphs], dtype=torch.long)
    node_ptr = torch.cat([torch.zeros(1, dtype=torch.long), n_nodes.cumsum(0)])
    edge_ptr = torch.cat([torch.zeros(1, dtype=torch.long), n_edges.cumsum(0)])
    E = int(edge_ptr[-1])

    # edge values: gather all graphs of one template at once
    attr = torch.zeros(E, w, dtype=dtype)
    mask = torch.zeros(E, w, dtype=torch.bool)
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(graphs):
        groups.setdefault(id(g.template), []).append(i)
    for idx in groups.values():
        t = graphs[idx[0]].template
        plan, m = _edge_fill_plan(t, w)
        vals = torch.stack([graphs[i].values for i in idx]).to(dtype)  # [k, V]
        k, Et = len(idx), t.num_edges
        if idx == list(range(idx[0], idx[0] + k)):  # consecutive graphs: one copy per edge set
            s0 = int(edge_ptr[idx[0]])
            region = attr[s0 : s0 + k * Et].view(k, Et, w)
            mask[s0 : s0 + k * Et].view(k, Et, w)[:] = m
            for off, n, pos in plan:
                region[:, off : off + n, : pos.shape[1]] = vals[:, pos]
            continue
        for i in idx:
            s0 = int(edge_ptr[i])
            mask[s0 : s0 + Et] = m
        for off, n, pos in plan:
            block = vals[:, pos]  # [k, E_s, F_s]
            for j, i in enumerate(idx):
                s0 = int(edge_ptr[i]) + off
                attr[s0 : s0 + n, : pos.shape[1]] = block[j]

    parts: dict[str, list[torch.Tensor]] = {k: [] for k in
                                            ("edge_index", "edge_type", "node_type", "node_layer",
                                             "node_role", "node_pos", "node_depth")}
    for i, g in enumerate(graphs):
        d = _template_tensors(g.template)
        parts["edge_index"].append(d["edge_index"] + node_ptr[i])
        for k in ("edge_type", "node_type", "node_layer", "node_role", "node_pos", "node_depth"):
            parts[k].append(d[k])
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
    return GraphBatch(
        num_graphs=B,
        edge_index=torch.cat(parts["edge_index"], dim=1),
        edge_attr=attr,
        edge_mask=mask,
        edge_type=torch.cat(parts["edge_type"]),
        node_type=torch.cat(parts["node_type"]),
        node_layer=torch.cat(parts["node_layer"]),
        node_role=torch.cat(parts["node_role"]),
        node_pos=torch.cat(parts["node_pos"]),
        node_depth=torch.cat(parts["node_depth"]).to(dtype),
        node_batch=node_batch,
        edge_batch=edge_batch,
        node_ptr=node_ptr,
        edge_ptr=edge_ptr,
        node_extra=extra,
        graphs=graphs if keep_graphs else None,
    )


def from_pyg(data) -> GraphBatch:
    """A :class:`GraphBatch` from a ``torch_geometric`` ``Data`` / ``Batch``
    made by :meth:`ParameterGraph.to_pyg` / :func:`weightspace.graph.to_pyg_batch`.

    The source graphs are not known, so :meth:`GraphBatch.write_back` is not
    available (use ``ParameterGraph.with_edge_attr`` on the slices). The
    padded ``[E, F]`` table the GMN consumes is built here, from the compact
    ``edge_values`` / ``edge_width`` (or taken from ``edge_attr`` /
    ``edge_mask`` where ``to_pyg(padded=True)`` stored them).
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
    if getattr(data, "edge_attr", None) is not None and getattr(data, "edge_mask", None) is not None:
        attr, mask = data.edge_attr, data.edge_mask
    elif getattr(data, "edge_values", None) is not None and getattr(data, "edge_width", None) is not None:
        attr, mask = pad_edge_values(data.edge_values.to(torch.float32), data.edge_width)
    else:
        raise ValueError(
            "from_pyg needs edge_values and edge_width (ParameterGraph.to_pyg / to_pyg_batch) "
            "or edge_attr and edge_mask (to_pyg(padded=True)) on the PyG data"
        )
    return GraphBatch(
        num_graphs=B,
        edge_index=data.edge_index,
        edge_attr=attr.to(torch.float32),
        edge_mask=mask,
        edge_type=data.edge_type,
        node_type=data.node_type,
        node_layer=data.node_layer,
        node_role=data.node_role,
        node_pos=data.node_pos,
        node_depth=depth,
        node_batch=node_batch,
        edge_batch=edge_batch,
        node_ptr=torch.cat([torch.zeros(1, dtype=torch.long), n_nodes.cumsum(0)]),
        edge_ptr=torch.cat([torch.zeros(1, dtype=torch.long), n_edges.cumsum(0)]),
        graphs=None,
    )
