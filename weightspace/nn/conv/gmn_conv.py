"""GMNConv: one edge + node + global update of a Graph Metanetwork layer."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

from weightspace.nn.conv._common import AGGRS, make_norm, mlp
from weightspace.nn.conv._compile import is_compiling, linear_nobias

_POOLS = ("mean", "sum", "max")

__all__ = ["GMNConv", "PyGContext"]


class _GatherAdd(torch.autograd.Function):
    """``a[src] + b[dst]`` (``[N, H], [N, H] -> [E, H]``) as one
    ``embedding_bag`` over the row pairs; its gradient is the pair of
    segment sums of the incoming gradient by source and by target node."""

    @staticmethod
    def forward(fctx, a: Tensor, b: Tensor, ctx: "PyGContext") -> Tensor:  # noqa: D102
        fctx.ctx = ctx
        return F.embedding_bag(ctx.pair_flat, torch.cat([a, b]), ctx.pair_offsets, mode="sum")

    @staticmethod
    def backward(fctx, grad: Tensor):  # noqa: D102
        ctx = fctx.ctx
        return ctx.segment_sum(grad, "out"), ctx.segment_sum(grad, "in"), None


class _SegmentSum(torch.autograd.Function):
    """Sum of edge rows into their target (``"in"``) or source (``"out"``)
    node, ``[E, H] -> [N, H]``, as one ``embedding_bag`` over the CSR order;
    its gradient is the gather of the node gradient back to the edges."""

    @staticmethod
    def forward(fctx, m: Tensor, ctx: "PyGContext", direction: str) -> Tensor:  # noqa: D102
        fctx.ctx, fctx.direction = ctx, direction
        return F.embedding_bag(ctx.perm[direction], m, ctx.offsets[direction], mode="sum")

    @staticmethod
    def backward(fctx, grad: Tensor):  # noqa: D102
        return F.embedding(fctx.ctx.row[fctx.direction], grad), None, None


class PyGContext:
    """Graph structure of a batch for the PyG backend.

    The edge-to-node aggregations are segment reductions over the edges
    sorted by target (``"in"``) or source (``"out"``) node, and the
    node-to-edge gather ``a[src] + b[dst]`` is one ``embedding_bag`` over
    the row pairs: on one CPU thread both are 2-5x faster than the gather +
    scatter of ``MessagePassing`` or a sparse CSR product, forward and
    backward (``benchmarks/bench_gmn.py``). Nodes and edges of one graph are
    contiguous, so pooling is a CSR segment reduction (an ``embedding_bag``
    over the rows with the graph offsets; PyG's ``segment`` path was 4x
    slower on one thread).

    Attributes:
        edge_index: ``[2, E]``.
        row: ``{"in": dst, "out": src}`` ``[E]``, the node each edge reduces into.
        perm, offsets: per direction, the edges in CSR order ``[E]`` and the
            start of each node's segment ``[N]``.
        pair_index: ``[E, 2]`` rows ``(src, N + dst)`` of ``cat([a, b])``;
            pair_flat ``[2E]`` / pair_offsets ``[E]`` its 1-D ``embedding_bag`` form.
        node_ptr, edge_ptr: ``[B + 1]`` offsets of each graph.
        node_batch ``[N]``, edge_batch ``[E]``, num_graphs ``B``, num_nodes ``N``.
        log_deg: ``[N, 2]`` ``log(1 + in/out degree)``; inv_deg ``{"in", "out"}``
            ``[N, 1]`` ``1 / max(degree, 1)``.
    """

    def __init__(self, batch) -> None:
        self.edge_index = batch.edge_index
        self.node_batch = batch.node_batch
        self.edge_batch = batch.edge_batch
        self.node_ptr = batch.node_ptr
        self.edge_ptr = batch.edge_ptr
        self.num_graphs = batch.num_graphs
        self.num_nodes = n = batch.num_nodes
        src, dst = batch.edge_index
        din, dout = batch.degrees()
        cached = batch._cache.get("perm")  # collate's per-template sort, offset per graph
        self.row = {"in": dst, "out": src}
        self.perm, self.offsets, self.inv_deg = {}, {}, {}
        for direction, deg in (("in", din), ("out", dout)):
            self.perm[direction] = cached[direction] if cached else torch.argsort(self.row[direction], stable=True)
            self.offsets[direction] = torch.cumsum(deg.long(), 0) - deg.long()
            self.inv_deg[direction] = deg.clamp(min=1).reciprocal()[:, None]
        self.pair_index = torch.stack([src, dst + n], dim=1)
        # embedding_bag's 1-D form (the 2-D one builds these offsets on every call)
        self.pair_flat = self.pair_index.flatten()
        self.pair_offsets = torch.arange(0, 2 * src.numel(), 2, device=src.device)
        self.log_deg = torch.stack([din, dout], dim=1).log1p()
        self._rows: dict[str, Tensor] = {}

    def gather(self, a: Tensor, b: Tensor) -> Tensor:
        """``a[src] + b[dst]``: ``[N, H], [N, H] -> [E, H]``."""
        return _GatherAdd.apply(a, b, self)

    def segment_sum(self, m: Tensor, direction: str) -> Tensor:
        """Sum of edge rows ``[E, H]`` per target (``"in"``) or source
        (``"out"``) node ``-> [N, H]`` (0 where a node has no edge)."""
        return _SegmentSum.apply(m, self, direction)

    def segment_max(self, m: Tensor, direction: str) -> Tensor:
        """Per-node maximum of edge rows (0 where a node has no edge)."""
        return F.embedding_bag(self.perm[direction], m, self.offsets[direction], mode="max")

    def pool(self, x: Tensor, level: str, reduce: str) -> Tensor:
        """Per-graph pooling of node (``level="node"``) or edge features:
        ``[N or E, H] -> [B, H]``."""
        # rows of a graph are contiguous: one embedding_bag over them (a
        # CSR segment reduction; empty graphs give 0, as PyG's aggregations)
        if reduce not in _POOLS:
            raise ValueError(f"reduce must be one of {sorted(_POOLS)}, got {reduce!r}")
        ptr = self.node_ptr if level == "node" else self.edge_ptr
        if level not in self._rows:
            self._rows[level] = torch.arange(x.shape[0], device=x.device)
        return F.embedding_bag(self._rows[level], x, ptr[:-1], mode=reduce)


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
        """``a[src] + b[dst]``: ``[N, H], [N, H] -> [E, H]`` (a new tensor)."""
        return ctx.gather(a, b)

    def aggregate_edges(self, ctx: PyGContext, m: Tensor, direction: str) -> Tensor:
        """Aggregate edge messages ``[E, H]`` into their target
        (``direction="in"``) or source (``"out"``) nodes: ``[N, k*H]`` with
        the reducers of :data:`AGGRS` concatenated (empty neighbourhoods
        give 0)."""
        outs, mean = [], None
        for r in AGGRS[self.aggr_name]:
            if r in ("mean", "var") and mean is None:
                mean = ctx.segment_sum(m, direction) * ctx.inv_deg[direction]
            if r == "mean":
                outs.append(mean)
            elif r == "var":
                outs.append(ctx.segment_sum(m * m, direction) * ctx.inv_deg[direction] - mean * mean)
            elif r == "sum":
                outs.append(ctx.segment_sum(m, direction))
            elif r == "max":
                outs.append(ctx.segment_max(m, direction))
            else:  # min
                outs.append(-ctx.segment_max(-m, direction))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)

    def pool(self, ctx: PyGContext, x: Tensor, level: str) -> Tensor:
        """Per-graph mean of node or edge features ``-> [B, H]``."""
        return ctx.pool(x, level, "mean")

    # --------------------------------------------------------------- forward
    def forward(self, x: Tensor, e: Tensor, u: Tensor, ctx: Any) -> tuple[Tensor, Tensor, Tensor]:
        """One layer: ``(x [N,H], e [E,H], u [B,H]) -> (x', e', u')``."""
        return self.update(x, e, u, ctx)

    def update(self, x: Tensor, e: Tensor, u: Tensor, ctx: Any, *, inplace: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`forward`; ``inplace=True`` writes ``e'`` into ``e`` (saves
        a copy of the largest tensor; only for a caller that owns ``e`` and
        records no gradient)."""
        x, e, u, _ = self.step(x, e, u, ctx, inplace=inplace)
        return x, e, u

    @property
    def linear_aggregation(self) -> bool:
        """Whether the aggregation is linear in the messages (``sum``,
        ``mean``): what :meth:`step` needs to skip building ``e'``."""
        return self.aggr_name in ("sum", "mean")

    def step(
        self,
        x: Tensor,
        e: Tensor,
        u: Tensor,
        ctx: Any,
        *,
        inplace: bool = False,
        e_agg: tuple[Tensor, Tensor] | None = None,
        counts: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor | None, Tensor, tuple[Tensor, Tensor]]:
        """:meth:`update` that also returns the aggregated edge messages
        ``(agg_in [N, k*H], agg_out [N, k*H])`` of ``e'`` (before the PNA
        std transform), and can skip ``e'``.

        With ``e_agg`` (the aggregates of the input ``e``, e.g. from the
        previous layer's :meth:`step`) and ``counts`` (per node, the
        aggregate of a constant 1 over its in / out edges, ``[N, 1]``: the
        degree for ``sum``, ``degree > 0`` for ``mean``), a layer with a
        :attr:`linear_aggregation` does not build ``e' = e + h W^T + b``
        (``E x H``, the largest tensor): its aggregates are
        ``agg(e) + agg(h) W^T + counts * b``, at ``N`` rows. It then
        returns ``None`` for ``e'``; the caller pools edges from the
        aggregates (every edge enters exactly one target node).
        """
        lazy = e_agg is not None
        if lazy and (not self.linear_aggregation or counts is None):
            raise ValueError("step(e_agg=...) needs a sum or mean aggregation and counts")
        # pre-norm residual updates: the residual stream keeps the scale of
        # the weights (post-norm would normalize it away at every layer)
        xn, en, un = self.node_norm(x), self.edge_norm(e), self.glob_norm(u)
        # W_u u_b and the bias of phi_e's first layer are added per source
        # node (every edge has one source node, in its graph): N x H work
        # instead of E x H
        a = torch.addmm(self.lin_edge.bias, xn, self.lin_src.weight.t())
        a = a + self.lin_glob(un).index_select(0, ctx.node_batch)
        # inside torch.compile (GMN.compile_) the same sums in a form inductor fuses: the gather, the
        # add and the activation become one loop over the edges, after a product with no copied input
        compiling = is_compiling()
        if compiling:
            src, dst = ctx.edge_index
            pre = linear_nobias(en, self.lin_edge.weight) + a.index_select(0, src) + self.lin_dst(xn).index_select(0, dst)
            h = self.edge_out[0](self.edge_act(pre))
        else:
            pre = self.edge_gather(ctx, a, self.lin_dst(xn)).addmm_(en, self.lin_edge.weight.t())
            h = self.edge_out[0](self._edge_act(pre))  # dropout (identity when p = 0 or in eval)
        out = self.edge_out[1]
        if lazy:
            # the output map and the aggregation commute: N-row GEMMs instead of one E-row GEMM
            agg_in, agg_out = (
                torch.addmm(torch.addmm(prev, cnt, out.bias[None]), self.aggregate_edges(ctx, h, d), out.weight.t())
                for prev, cnt, d in zip(e_agg, counts, ("in", "out"))
            )
            e = None
        else:
            if compiling:  # the bias, the residual and the next layer norm fuse into one pass
                e = e + linear_nobias(h, out.weight) + out.bias
            elif inplace:
                e = e.addmm_(h, out.weight.t()).add_(out.bias)
            else:
                e = torch.addmm(e, h, out.weight.t()).add_(out.bias)  # residual: a GEMM with beta = 1
            agg_in, agg_out = self.aggregate_edges(ctx, e, "in"), self.aggregate_edges(ctx, e, "out")
        m_in, m_out = self._finish(agg_in), self._finish(agg_out)
        u_n = un.index_select(0, ctx.node_batch)
        x = x + self.node_mlp(torch.cat([xn, m_in, m_out, u_n, ctx.log_deg], dim=1))
        pooled = self.pool(ctx, torch.cat([x, m_in], dim=1), "node")
        u = u + self.glob_mlp(torch.cat([un, pooled], dim=1))
        return x, e, u, (agg_in, agg_out)

    def _edge_act(self, pre: Tensor) -> Tensor:
        """The edge activation; in place on ``pre`` (a fresh tensor) where
        no gradient is recorded."""
        if not torch.is_grad_enabled() and isinstance(self.edge_act, (nn.SiLU, nn.ReLU)):
            return (F.silu if isinstance(self.edge_act, nn.SiLU) else F.relu)(pre, inplace=True)
        return self.edge_act(pre)

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
