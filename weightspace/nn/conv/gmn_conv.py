"""GMNConv: one edge + node + global update of a Graph Metanetwork layer."""

from __future__ import annotations

import functools
import math
import warnings
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

    Edge-to-node aggregation is a sparse-dense product with the batch's
    incidence matrix (``torch_geometric.utils.spmm`` on a CSR matrix
    ``[N, E]``, one per direction, built once per batch): on CPU about 3x
    faster than gather + scatter/segment reduction. Nodes and edges of one
    graph are contiguous, so pooling is a CSR segment reduction.

    Attributes:
        edge_index: ``[2, E]``.
        adj: ``{"in": [N, E], "out": [N, E]}`` CSR incidence matrices (row =
            target resp. source node of each edge).
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
        self.adj: dict[str, Tensor] = {}
        din, dout = batch.degrees()
        dev = batch.edge_index.device
        zero = torch.zeros(1, dtype=torch.long, device=dev)
        ones = torch.ones(batch.num_edges, dtype=batch.edge_attr.dtype, device=dev)
        for direction, row, deg in (("in", batch.edge_index[1], din), ("out", batch.edge_index[0], dout)):
            ptr = torch.cat([zero, deg.long().cumsum(0)])
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.simplefilter("ignore")
                self.adj[direction] = torch.sparse_csr_tensor(
                    ptr, torch.argsort(row, stable=True), ones, size=(n, batch.num_edges))
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
        \mathbf{e}'_{ij} &= \mathbf{e}_{ij} + \phi_e\big(
            \mathbf{W}_s\hat{\mathbf{x}}_i + \mathbf{W}_d\hat{\mathbf{x}}_j
            + \mathbf{W}_e\hat{\mathbf{e}}_{ij} + \mathbf{W}_u\hat{\mathbf{u}}_{b}\big)

        \mathbf{m}^{\rightarrow}_j &= \bigoplus_{i:\,(i,j)\in\mathcal{E}} \mathbf{e}'_{ij},
        \qquad
        \mathbf{m}^{\leftarrow}_i = \bigoplus_{j:\,(i,j)\in\mathcal{E}} \mathbf{e}'_{ij}

        \mathbf{x}'_v &= \mathbf{x}_v + \phi_v\big(
            [\hat{\mathbf{x}}_v, \mathbf{m}^{\rightarrow}_v, \mathbf{m}^{\leftarrow}_v,
            \hat{\mathbf{u}}_{b}, \log(1+\deg_v)]\big)

        \mathbf{u}'_b &= \mathbf{u}_b + \phi_u\big([\hat{\mathbf{u}}_b,
            \mathrm{mean}_{v\in b}\mathbf{x}'_v, \mathrm{mean}_{v\in b}\mathbf{m}^{\rightarrow}_v]\big)

    where :math:`\bigoplus` is ``sum``, ``mean``, ``max`` or the PNA-style
    concatenation of ``mean``, ``min``, ``max`` and ``std`` (Corso et al.,
    2020; the log-degree input plays the role of PNA's degree scalers),
    :math:`\phi` are two-layer MLPs, :math:`\hat{\cdot} = \mathrm{N}(\cdot)` a
    normalization (``layer``, ``batch`` or ``none``; pre-norm, so the residual
    stream keeps the scale of the weights) and :math:`b` the node's / edge's
    graph. (The global update pools the aggregated edge messages per node
    rather than every edge: the same information at ``N`` instead of ``E``
    rows.) Every function is applied identically to every node and edge and
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
        self.glob_mlp = mlp((2 + k) * h, h, h, act, dropout)
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
        the reducers of :data:`AGGRS` concatenated (empty neighbourhoods
        give 0)."""
        from torch_geometric.utils import spmm

        adj = ctx.adj[direction]
        outs, mean = [], None
        for r in AGGRS[self.aggr_name]:
            if r in ("mean", "var") and mean is None:
                mean = spmm(adj, m, reduce="mean")
            if r == "mean":
                outs.append(mean)
            elif r == "var":
                outs.append(spmm(adj, m * m, reduce="mean") - mean * mean)
            else:
                outs.append(spmm(adj, m, reduce=r))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)

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
        # pre-norm residual updates: the residual stream keeps the scale of
        # the weights (post-norm would normalize it away at every layer)
        xn, en, un = self.node_norm(x), self.edge_norm(e), self.glob_norm(u)
        # W_u u_b is added per source node (an edge's graph is its source
        # node's graph): N x H work instead of E x H
        a = self.lin_src(xn) + self.lin_glob(un).index_select(0, ctx.node_batch)
        pre = torch.addmm(self.edge_gather(ctx, a, self.lin_dst(xn)), en, self.lin_edge.weight.t())
        e = e + self.edge_out(self.edge_act(pre + self.lin_edge.bias))
        m_in = self._finish(self.aggregate_edges(ctx, e, "in"))
        m_out = self._finish(self.aggregate_edges(ctx, e, "out"))
        u_n = un.index_select(0, ctx.node_batch)
        x = x + self.node_mlp(torch.cat([xn, m_in, m_out, u_n, ctx.log_deg], dim=1))
        pooled = self.pool(ctx, torch.cat([x, m_in], dim=1), "node")
        u = u + self.glob_mlp(torch.cat([un, pooled], dim=1))
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
