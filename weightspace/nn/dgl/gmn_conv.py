"""DGL backend of :class:`~weightspace.nn.conv.GMNConv` (same parameters,
same outputs)."""

from __future__ import annotations

import torch
from torch import Tensor

from weightspace.nn.conv._common import AGGRS
from weightspace.nn.conv.gmn_conv import GMNConv

__all__ = ["DGLContext", "DGLGMNConv", "require_dgl"]


def require_dgl():
    """Import ``dgl`` or raise an ``ImportError`` that says how to get it."""
    try:
        import dgl  # noqa: F401
    except Exception as exc:  # dgl raises various errors beside a wrong torch
        raise ImportError(
            "the DGL backend needs dgl==2.1.0, which loads only beside torch 2.0-2.2 "
            "(torch==2.2.1, torchdata==0.7.1, numpy<2); build that environment with "
            f".ci/dgl_lane.sh (import failed: {type(exc).__name__}: {exc})"
        ) from exc
    return dgl


class DGLContext:
    """Graph structure of a batch for the DGL backend: a ``DGLGraph`` over
    all edges (edge ids = batch edge order), its reverse, per-graph node and
    edge counts, and the log-degrees."""

    def __init__(self, batch) -> None:
        dgl = require_dgl()
        src, dst = batch.edge_index
        n = batch.num_nodes
        self.graph = dgl.graph((src, dst), num_nodes=n)
        self.graph_rev = dgl.graph((dst, src), num_nodes=n)
        n_nodes = batch.node_ptr[1:] - batch.node_ptr[:-1]
        n_edges = batch.edge_ptr[1:] - batch.edge_ptr[:-1]
        for g in (self.graph, self.graph_rev):
            g.set_batch_num_nodes(n_nodes)
            g.set_batch_num_edges(n_edges)
        self.node_batch = batch.node_batch
        self.edge_batch = batch.edge_batch
        self.num_graphs = batch.num_graphs
        self.num_nodes = n
        self.log_deg = torch.stack(
            [self.graph.in_degrees().to(batch.dtype), self.graph.out_degrees().to(batch.dtype)],
            dim=1,
        ).log1p()

    def pool(self, x: Tensor, level: str, reduce: str) -> Tensor:
        """Per-graph ``mean``/``sum``/``max`` of node or edge features ``-> [B, H]``."""
        import dgl

        g = self.graph
        with g.local_scope():
            if level == "node":
                g.ndata["_p"] = x
                return dgl.readout_nodes(g, "_p", op=reduce)
            g.edata["_p"] = x
            return dgl.readout_edges(g, "_p", op=reduce)


class DGLGMNConv(GMNConv):
    """:class:`~weightspace.nn.conv.GMNConv` with its three graph operations
    (edge gather, directional aggregation, pooling) run by DGL kernels. The
    update equations and parameters are inherited unchanged, so a state_dict
    moves between backends and gives the same outputs."""

    def edge_gather(self, ctx: DGLContext, a: Tensor, b: Tensor) -> Tensor:
        import dgl.function as fn

        g = ctx.graph
        with g.local_scope():
            g.srcdata["a"] = a
            g.dstdata["b"] = b
            g.apply_edges(fn.u_add_v("a", "b", "s"))
            return g.edata["s"]

    def aggregate_edges(self, ctx: DGLContext, m: Tensor, direction: str) -> Tensor:
        import dgl.function as fn

        g = ctx.graph if direction == "in" else ctx.graph_rev
        outs = []
        with g.local_scope():
            g.edata["m"] = m
            for r in AGGRS[self.aggr_name]:
                if r == "var":
                    g.edata["m2"] = m * m
                    g.update_all(fn.copy_e("m", "t"), fn.mean("t", "mu"))
                    g.update_all(fn.copy_e("m2", "t"), fn.mean("t", "mu2"))
                    mu = g.dstdata["mu"]
                    outs.append(g.dstdata["mu2"] - mu * mu)
                else:
                    reducer = {"sum": fn.sum, "mean": fn.mean, "max": fn.max, "min": fn.min}[r]
                    g.update_all(fn.copy_e("m", "t"), reducer("t", "h"))
                    outs.append(g.dstdata["h"])
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)

    def pool(self, ctx: DGLContext, x: Tensor, level: str) -> Tensor:
        return ctx.pool(x, level, "mean")
