"""GMNConv: one edge + node + global update of a Graph Metanetwork layer."""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

from torch_geometric.nn.aggr import MaxAggregation, MeanAggregation, SumAggregation

from weightspace.nn.conv._common import AGGRS, make_norm, mlp

_POOLS = {"mean": MeanAggregation(), "sum": SumAggregation(), "max": MaxAggregation()}


@functools.lru_cache(maxsize=None)
def _ptr_only() -> bool:
    """Whether this PyG runs an ``Aggregation`` from ``ptr`` alone (CSR
    segments; PyG >= 2.6, or older with torch-scatter). Older versions need
    the (sorted) ``index`` and scatter instead: same result, slower."""
    try:
        SumAggregation()(torch.ones(2, 1), ptr=torch.tensor([0, 2]), dim_size=1)
    except Exception:
        return False
    return True


def segment_aggregate(aggr: nn.Module, x: Tensor, index: Tensor, ptr: Tensor, dim_size: int) -> Tensor:
    """Run a PyG aggregation on rows grouped by ``index`` (sorted, with CSR
    offsets ``ptr [dim_size + 1]``): ``[M, H] -> [dim_size, H']``."""
    if _ptr_only():
        return aggr(x, ptr=ptr, dim_size=dim_size)
    return aggr(x, index, dim_size=dim_size)

__all__ = ["GMNConv", "PyGContext"]


class PyGContext:
    """Graph structure of a batch for the PyG backend.

    Aggregations run as CSR segment reductions (PyG ``Aggregation`` modules
    called with ``ptr``): the edges are sorted once per batch by target
    (``"in"``) and by source (``"out"``). On CPU this is several times faster
    than scatter-based aggregation over unsorted indices, and nodes / edges of
    one graph are already contiguous, so pooling needs no sort at all.

    Attributes:
        edge_index: ``[2, E]``.
        order, ptr: per direction, edge permutation ``[E]`` grouping edges by
            target / source node, and CSR offsets ``[N + 1]``.
        node_ptr, edge_ptr: ``[B + 1]`` offsets of each graph.
        node_batch ``[N]``, edge_batch ``[E]``, num_graphs ``B``, num_nodes ``N``.
        log_deg: ``[N, 2]`` ``log(1 + in/out degree)``.
    """

    def __init__(self, batch) -> None:
        self.edge_index = batch.edge_index
        self.node_batch = batch.node_batch
        self.edge_batch = batch.edge_batch
        self.node_ptr = batch.node_ptr
        self.edge_ptr = batch.edge_ptr
        self.num_graphs = batch.num_graphs
        self.num_nodes = n = batch.num_nodes
        self.order: dict[str, Tensor] = {}
        self.index: dict[str, Tensor] = {}
        self.ptr: dict[str, Tensor] = {}
        din, dout = batch.degrees()
        zero = torch.zeros(1, dtype=torch.long, device=batch.edge_index.device)
        for direction, row, deg in (("in", batch.edge_index[1], din), ("out", batch.edge_index[0], dout)):
            self.order[direction] = torch.argsort(row, stable=True)
            self.index[direction] = row[self.order[direction]]
            self.ptr[direction] = torch.cat([zero, deg.long().cumsum(0)])
        self.log_deg = torch.stack([din, dout], dim=1).log1p()

    def pool(self, x: Tensor, level: str, reduce: str) -> Tensor:
        """Per-graph pooling of node (``level="node"``) or edge features:
        ``[N or E, H] -> [B, H]``."""
        if level == "node":
            return segment_aggregate(_POOLS[reduce], x, self.node_batch, self.node_ptr, self.num_graphs)
        return segment_aggregate(_POOLS[reduce], x, self.edge_batch, self.edge_ptr, self.num_graphs)


class GMNConv(MessagePassing):
    r"""Edge, node and global update of a Graph Metanetwork (Lim et al.,
    2024), MetaLayer style, on a parameter graph.

    Edges run from a weight's input neuron :math:`i` to its output neuron
    :math:`j`; messages flow both ways (forward into :math:`j`, backward into
    :math:`i`), each direction aggregated separately:

    .. math::
        \mathbf{e}'_{ij} &= \mathrm{N}_e\Big(\mathbf{e}_{ij} + \phi_e\big(
            \mathbf{W}_s\mathbf{x}_i + \mathbf{W}_d\mathbf{x}_j
            + \mathbf{W}_e\mathbf{e}_{ij} + \mathbf{W}_u\mathbf{u}_{b}\big)\Big)

        \mathbf{m}^{\rightarrow}_j &= \bigoplus_{i:\,(i,j)\in\mathcal{E}} \mathbf{e}'_{ij},
        \qquad
        \mathbf{m}^{\leftarrow}_i = \bigoplus_{j:\,(i,j)\in\mathcal{E}} \mathbf{e}'_{ij}

        \mathbf{x}'_v &= \mathrm{N}_v\Big(\mathbf{x}_v + \phi_v\big(
            [\mathbf{x}_v, \mathbf{m}^{\rightarrow}_v, \mathbf{m}^{\leftarrow}_v,
            \mathbf{u}_{b}, \log(1+\deg_v)]\big)\Big)

        \mathbf{u}'_b &= \mathrm{N}_u\Big(\mathbf{u}_b + \phi_u\big([\mathbf{u}_b,
            \mathrm{mean}_{v\in b}\mathbf{x}'_v, \mathrm{mean}_{(i,j)\in b}\mathbf{e}'_{ij}]\big)\Big)

    where :math:`\bigoplus` is ``sum``, ``mean``, ``max`` or the PNA-style
    concatenation of ``mean``, ``min``, ``max`` and ``std`` (Corso et al.,
    2020; the log-degree input plays the role of PNA's degree scalers),
    :math:`\phi` are two-layer MLPs, :math:`\mathrm{N}` a normalization
    (``layer``, ``batch`` or ``none``) and :math:`b` the node's / edge's
    graph. Every function is applied identically to every node and edge and
    every aggregation is symmetric, so the layer is equivariant to any node
    relabelling that preserves the node features, in particular the
    permutations of a :class:`~weightspace.symmetry.PermutationSpec`.

    Args:
        hidden: feature width :math:`H` of nodes, edges and globals.
        aggr: ``"sum"`` | ``"mean"`` | ``"max"`` | ``"pna"``.
        norm: ``"layer"`` | ``"batch"`` | ``"none"``.
        act: activation class (default ``nn.SiLU``).
        dropout: dropout inside the MLPs.

    Shapes:
        - **input:** ``x [N, H]``, ``e [E, H]``, ``u [B, H]``, a context
          (:class:`PyGContext`).
        - **output:** ``(x' [N, H], e' [E, H], u' [B, H])``.
    """

    def __init__(
        self,
        hidden: int,
        aggr: str = "sum",
        norm: str = "layer",
        act: type[nn.Module] = nn.SiLU,
        dropout: float = 0.0,
    ) -> None:
        if aggr not in AGGRS:
            raise ValueError(f"aggr must be one of {sorted(AGGRS)}, got {aggr!r}")
        reducers = AGGRS[aggr]
        pyg_aggr: Any = reducers[0] if len(reducers) == 1 else list(reducers)
        super().__init__(aggr=pyg_aggr, aggr_kwargs=None if len(reducers) == 1 else {"mode": "cat"})
        self.hidden = hidden
        self.aggr_name = aggr
        self.norm_name = norm
        k = len(reducers)
        h = hidden
        # first layer of phi_e split by input so projections run per node, not per edge
        self.lin_src = nn.Linear(h, h, bias=False)
        self.lin_dst = nn.Linear(h, h, bias=False)
        self.lin_edge = nn.Linear(h, h, bias=True)
        self.lin_glob = nn.Linear(h, h, bias=False)
        self.edge_act = act()
        self.edge_out = nn.Sequential(nn.Dropout(dropout), nn.Linear(h, h))
        self.node_mlp = mlp(h * (2 + 2 * k) + 2, h, h, act, dropout)
        self.glob_mlp = mlp(3 * h, h, h, act, dropout)
        self.edge_norm = make_norm(norm, h)
        self.node_norm = make_norm(norm, h)
        self.glob_norm = make_norm(norm, h)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialize every learnable parameter (PyTorch default init)."""
        super().reset_parameters()
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()

    # ------------------------------------------------------------ primitives
    # The three graph operations below are the only backend-specific part;
    # weightspace.nn.dgl.DGLGMNConv overrides them with DGL kernels.
    def edge_gather(self, ctx: PyGContext, a: Tensor, b: Tensor) -> Tensor:
        """``a[src] + b[dst]``: ``[N, H], [N, H] -> [E, H]``."""
        return self.edge_updater(ctx.edge_index, a=(a, b))

    def aggregate_edges(self, ctx: PyGContext, m: Tensor, direction: str) -> Tensor:
        """Aggregate edge messages ``[E, H]`` into their target
        (``direction="in"``) or source (``"out"``) nodes: ``[N, k*H]`` with
        the reducers of :data:`AGGRS` concatenated (this layer's PyG
        aggregation module, run on CSR segments)."""
        order = ctx.order[direction]
        return segment_aggregate(self.aggr_module, self.message(m.index_select(0, order)),
                                 ctx.index[direction], ctx.ptr[direction], ctx.num_nodes)

    def pool(self, ctx: PyGContext, x: Tensor, level: str) -> Tensor:
        """Per-graph mean of node or edge features ``-> [B, H]``."""
        return ctx.pool(x, level, "mean")

    # PyG hooks
    def edge_update(self, a_j: Tensor, a_i: Tensor) -> Tensor:  # noqa: D102
        return a_j + a_i

    def message(self, m: Tensor) -> Tensor:  # noqa: D102
        return m

    # --------------------------------------------------------------- forward
    def forward(self, x: Tensor, e: Tensor, u: Tensor, ctx: Any) -> tuple[Tensor, Tensor, Tensor]:
        """One layer: ``(x [N,H], e [E,H], u [B,H]) -> (x', e', u')``."""
        gathered = self.edge_gather(ctx, self.lin_src(x), self.lin_dst(x))
        pre = gathered + self.lin_edge(e) + self.lin_glob(u)[ctx.edge_batch]
        e = self.edge_norm(e + self.edge_out(self.edge_act(pre)))
        m_in = self._finish(self.aggregate_edges(ctx, e, "in"))
        m_out = self._finish(self.aggregate_edges(ctx, e, "out"))
        x = self.node_norm(x + self.node_mlp(torch.cat([x, m_in, m_out, u[ctx.node_batch], ctx.log_deg], dim=1)))
        u = self.glob_norm(u + self.glob_mlp(torch.cat([u, self.pool(ctx, x, "node"), self.pool(ctx, e, "edge")], dim=1)))
        return x, e, u

    def _finish(self, agg: Tensor) -> Tensor:
        """PNA: turn the ``var`` block into a standard deviation (same rule
        for every backend)."""
        if self.aggr_name != "pna":
            return agg
        h = self.hidden
        mean_min_max, var = agg[:, : 3 * h], agg[:, 3 * h :]
        std = var.clamp(min=1e-5).sqrt()
        std = std.masked_fill(std <= math.sqrt(1e-5), 0.0)
        return torch.cat([mean_min_max, std], dim=1)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.hidden}, aggr={self.aggr_name!r}, norm={self.norm_name!r})"
