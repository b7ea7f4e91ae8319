"""GMN: a Graph Metanetwork over parameter graphs of any architecture.

Invariant (graph-level) and equivariant (node-, edge-level) outputs, by
construction: node features never encode the position of a permutable
neuron, every layer treats all nodes and edges alike, and every aggregation
is symmetric. See :class:`~weightspace.nn.conv.GMNConv` for the layer.
"""

from __future__ import annotations

import math
import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from weightspace.common.tensor_stats import STATS, tensor_statistics
from weightspace.graph import EDGE_TYPES, NODE_TYPES, ParameterGraph
from weightspace.nn.base import MetaNetwork, register_metanetwork
from weightspace.nn.batch import GraphBatch, collate, from_pyg
from weightspace.nn.conv._common import AGGRS, NORMS, activation, mlp
from weightspace.nn.conv._compile import compiler_missing
from weightspace.nn.conv.gmn_conv import GMNConv, PyGContext
from weightspace.nn.dgl.gmn_conv import DGLContext, DGLGMNConv, require_dgl

__all__ = ["GMN", "GMNOutput", "BACKENDS"]

BACKENDS = ("pyg", "dgl")
LAYER_ENCODINGS = ("embedding", "depth", "both")
_DEPTH_FREQS = 4


#: per-tensor statistics of live graphs for the hybrid readout:
#: ``id(graph) -> (weakref to graph, [stats])``; an entry leaves with its graph
_STATS_CACHE: dict[int, tuple[weakref.ref, Tensor]] = {}


#: the compiled message passing shared by every GMN (GMN.compile_; built on first use)
_COMPILED_LAYERS = None


def _run_layers(model: "GMN", x: Tensor, e: Tensor, u: Tensor, ctx: Any, counts: Any):
    return model._layers(x, e, u, ctx, counts)


def _cache_stats(graph: ParameterGraph, stats: Tensor) -> None:
    key = id(graph)
    _STATS_CACHE[key] = (weakref.ref(graph, lambda _r, key=key: _STATS_CACHE.pop(key, None)), stats.clone())


@dataclass
class GMNOutput:
    """Outputs of :class:`GMN` (``None`` where the readout is off).

    Attributes:
        graph: ``[B, out_dim]`` invariant graph-level output.
        node: ``[N, node_out]`` equivariant per-node output.
        edge: ``[E, edge_out]`` equivariant per-edge output (write it back
            with :meth:`GraphBatch.write_back` when ``edge_out >=`` the
            graphs' edge width).
        batch: the :class:`GraphBatch` the outputs refer to.
    """

    graph: Tensor | None
    node: Tensor | None
    edge: Tensor | None
    batch: GraphBatch


@register_metanetwork
class GMN(MetaNetwork):
    """Graph Metanetwork (Lim et al., 2024; Kofinas et al., 2024) on
    :class:`~weightspace.graph.ParameterGraph` batches.

    Input encoding (all permutation invariant per node / edge):

    * node: embeddings of ``node_type``, ``node_role`` (clamped to
      ``max_roles``), ``node_layer`` (embedding clamped to ``max_layers``
      and/or sinusoidal features of the per-graph normalized depth, see
      ``layer_encoding``), ``node_pos`` for fixed neurons only (``-1`` has its
      own embedding; clamped to ``max_pos``), ``log(1 + degree)``, and
      optional extra features (``extra_dim``, e.g. probe activations);
    * edge: embedding of ``edge_type`` plus linear maps of the values and
      of their mask (edge width up to ``edge_dim``; an edge of width ``w``
      uses the first ``w`` columns, read from the compact ``edge_values``
      per width, so no ``[E, widest]`` table is built).

    Then ``num_layers`` :class:`~weightspace.nn.conv.GMNConv` layers update
    nodes, edges and a per-graph global vector, and up to three readouts run:
    graph (``out_dim``; MLP on the global vector and the pooled nodes and
    edges), node (``node_out``), edge (``edge_out``; with
    ``edge_residual=True`` the readout is added to the input values, i.e. it
    predicts a weight update).

    Args:
        out_dim: graph-level output size (0: no graph readout).
        hidden: feature width.
        num_layers: message-passing depth.
        aggr: ``"sum"`` | ``"mean"`` | ``"max"`` | ``"pna"``.
        norm: ``"layer"`` | ``"batch"`` | ``"none"``.
        act: ``"silu"`` | ``"relu"`` | ``"gelu"`` | ``"tanh"``.
        dropout: dropout inside the MLPs.
        edge_dim: widest edge feature supported (49 covers 7x7 kernels).
        node_out, edge_out: sizes of the equivariant readouts (0: off).
        edge_residual: edge readout = input values + MLP output.
        pool: graph readout pooling, ``"mean"`` | ``"sum"`` | ``"max"``.
        readout_norm: ``"none"`` or ``"batch"``: standardize the graph
            readout's input (global vector, pooled nodes and edges) across
            the graphs of a batch (``BatchNorm1d`` without affine; running
            statistics in eval). At init the per-network part of those
            features can be ~0.1 % of their size (constant type / position
            embeddings; mean pooling cancels per-weight changes), so the
            graph output is nearly constant and training plateaus; this
            removes the constant part. Invariance is unaffected.
        layer_encoding: ``"embedding"`` (block id, for zoos of one
            architecture), ``"depth"`` (normalized depth, comparable across
            architectures) or ``"both"``.
        max_layers, max_roles, max_pos: embedding table sizes (larger ids
            share the last row).
        extra_dim: width of per-node extra features (0: none).
        stats_dim: hybrid readout (0: off): the graph readout also sees the
            per-tensor weight statistics of each input network
            (:data:`~weightspace.common.tensor_stats.STATS`: mean, variance,
            five quantiles, L1 and L2 norm of every tensor, the features the
            gradient-boosting predictor reads), standardized with training
            statistics (:meth:`fit_normalization`) and encoded by an MLP.
            ``stats_dim`` is their width, ``len(STATS) * num_tensors``
            (:meth:`stats_width`; networks with fewer tensors are zero
            padded). Each statistic is a symmetric function of one tensor's
            entries, so the model stays permutation invariant. Needs batches
            that keep their graphs (the default of :meth:`collate`).
        backend: ``"pyg"`` (default) or ``"dgl"``; the parameters are the same,
            so a state_dict moves between backends (:meth:`with_backend`).

    Shapes:
        ``forward(batch)`` with ``B`` graphs, ``N`` nodes and ``E`` edges
        returns :class:`GMNOutput` with ``graph [B, out_dim]``,
        ``node [N, node_out]``, ``edge [E, edge_out]``.
    """

    def __init__(
        self,
        out_dim: int = 1,
        hidden: int = 32,
        num_layers: int = 3,
        *,
        aggr: str = "sum",
        norm: str = "layer",
        act: str = "silu",
        dropout: float = 0.0,
        edge_dim: int = 64,
        node_out: int = 0,
        edge_out: int = 0,
        edge_residual: bool = False,
        pool: str = "mean",
        readout_norm: str = "none",
        layer_encoding: str = "both",
        max_layers: int = 64,
        max_roles: int = 16,
        max_pos: int = 128,
        extra_dim: int = 0,
        backend: str = "pyg",
        stats_dim: int = 0,
    ) -> None:
        hparams = {k: v for k, v in locals().items() if k not in ("self", "__class__")}  # the arguments, for with_backend / saving
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if aggr not in AGGRS:
            raise ValueError(f"aggr must be one of {sorted(AGGRS)}, got {aggr!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if pool not in ("mean", "sum", "max"):
            raise ValueError(f"pool must be 'mean', 'sum' or 'max', got {pool!r}")
        if readout_norm not in ("none", "batch"):
            raise ValueError(f"readout_norm must be 'none' or 'batch', got {readout_norm!r}")
        if layer_encoding not in LAYER_ENCODINGS:
            raise ValueError(f"layer_encoding must be one of {LAYER_ENCODINGS}, got {layer_encoding!r}")
        if edge_residual and edge_out < edge_dim:
            raise ValueError("edge_residual needs edge_out >= edge_dim (the output adds to the input values)")
        if hidden < 1 or num_layers < 0 or edge_dim < 1:
            raise ValueError("hidden and edge_dim must be >= 1 and num_layers >= 0")
        self.hparams = hparams
        self.backend = backend
        h = hidden
        act_cls = activation(act)
        # node encoder
        self.node_type_emb = nn.Embedding(len(NODE_TYPES), h)
        self.role_emb = nn.Embedding(max_roles, h)
        self.pos_emb = nn.Embedding(max_pos + 1, h)
        self.layer_emb = nn.Embedding(max_layers, h) if layer_encoding in ("embedding", "both") else None
        self.depth_lin = nn.Linear(1 + 2 * _DEPTH_FREQS, h) if layer_encoding in ("depth", "both") else None
        self.deg_lin = nn.Linear(2, h)
        self.extra_lin = nn.Linear(extra_dim, h) if extra_dim else None
        # edge encoder
        self.edge_type_emb = nn.Embedding(len(EDGE_TYPES), h)
        self.edge_val = nn.Linear(edge_dim, h, bias=False)
        self.edge_mask_lin = nn.Linear(edge_dim, h, bias=False)
        self.u0 = nn.Parameter(torch.zeros(h))
        # per edge type scale of the input values (fit_normalization); a
        # scalar per type keeps every symmetry
        self.register_buffer("edge_scale", torch.ones(len(EDGE_TYPES)))
        conv_cls = self._conv_class(backend)
        self.convs = nn.ModuleList(conv_cls(h, aggr=aggr, norm=norm, act=act_cls, dropout=dropout) for _ in range(num_layers))
        if stats_dim:  # hybrid readout: standardized per-tensor statistics -> MLP, next to the pooled features
            self.register_buffer("stats_mean", torch.zeros(stats_dim))
            self.register_buffer("stats_std", torch.ones(stats_dim))
            self.stats_enc = mlp(stats_dim, h, h, act_cls)
        self.graph_head = mlp((4 if stats_dim else 3) * h, h, out_dim, act_cls) if out_dim else None
        self.readout_norm = (nn.BatchNorm1d(3 * h, affine=False)
                             if out_dim and readout_norm == "batch" else None)
        self.node_head = mlp(h, h, node_out, act_cls) if node_out else None
        self.edge_head = mlp(h, h, edge_out, act_cls) if edge_out else None
        self.reset_parameters()
        self._compiled = False  # compile_()

    @staticmethod
    def _conv_class(backend: str) -> type[GMNConv]:
        if backend == "dgl":
            require_dgl()
            return DGLGMNConv
        return GMNConv

    def reset_parameters(self) -> None:
        """Re-initialize all parameters (PyTorch defaults; ``u0`` = 0)."""
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters") and not isinstance(m, GMNConv):
                m.reset_parameters()
        for c in self.convs:
            c.reset_parameters()
        nn.init.zeros_(self.u0)

    def with_backend(self, backend: str) -> "GMN":
        """A copy of this model running on ``backend`` (same parameters)."""
        other = GMN(**{**self.hparams, "backend": backend})
        other.load_state_dict(self.state_dict())
        other.train(self.training)
        return other.to(self.device)

    # ----------------------------------------------------------------- input
    def collate(self, graphs: Sequence[ParameterGraph], node_extra: Sequence[Tensor] | None = None) -> GraphBatch:
        """:func:`weightspace.nn.collate` with this model's ``edge_dim`` check."""
        w = max(g.template.max_width for g in graphs)
        if w > self.hparams["edge_dim"]:
            raise ValueError(
                f"a graph has edge width {w} > edge_dim={self.hparams['edge_dim']}; build the GMN with edge_dim>={w}"
            )
        return collate(graphs, node_extra=node_extra)

    def _as_batch(self, batch: Any) -> GraphBatch:
        if isinstance(batch, GraphBatch):
            return batch
        if isinstance(batch, ParameterGraph):
            return self.collate([batch])
        if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], ParameterGraph):
            return self.collate(batch)
        if hasattr(batch, "edge_index") and hasattr(batch, "node_type"):
            return from_pyg(batch)
        raise TypeError(
            f"GMN expects a GraphBatch, ParameterGraph(s) or a PyG Data/Batch, got {type(batch).__name__}"
        )

    def context(self, batch: GraphBatch):
        """The backend's view of ``batch``'s structure (cached on the batch)."""
        key = ("ctx", self.backend)
        if key not in batch._cache:
            if self.backend == "dgl":
                batch._cache[key] = DGLContext(batch)
            else:
                batch._cache[key] = PyGContext(batch)
        return batch._cache[key]

    def encode_nodes(self, batch: GraphBatch, ctx: Any) -> Tensor:
        """Initial node features ``[N, H]`` (no permutable-neuron index)."""
        hp = self.hparams
        x = self.node_type_emb(batch.node_type)
        x = x + self.role_emb(batch.node_role.clamp(0, hp["max_roles"] - 1))
        pos = torch.where(batch.node_pos >= 0, batch.node_pos.clamp(max=hp["max_pos"] - 1) + 1, 0)
        x = x + self.pos_emb(pos)
        if self.layer_emb is not None:
            x = x + self.layer_emb(batch.node_layer.clamp(0, hp["max_layers"] - 1))
        if self.depth_lin is not None:
            d = batch.node_depth.to(x.dtype)[:, None]
            k = torch.arange(1, _DEPTH_FREQS + 1, device=d.device, dtype=d.dtype)[None, :] * math.pi
            x = x + self.depth_lin(torch.cat([d, torch.sin(k * d), torch.cos(k * d)], dim=1))
        x = x + self.deg_lin(ctx.log_deg)
        if self.extra_lin is not None:
            if batch.node_extra is None:
                raise ValueError(f"this GMN expects node_extra features of width {hp['extra_dim']}")
            x = x + self.extra_lin(batch.node_extra)
        return x

    def encode_edges(self, batch: GraphBatch) -> Tensor:
        """Initial edge features ``[E, H]``: type embedding + linear maps of
        the values and of their mask (an edge of width ``w`` uses the first
        ``w`` columns of both maps).

        From the compact ``edge_values`` (the default batch) the encoding is
        one ``embedding_bag`` over the value columns and a (type, width) table
        (:meth:`GraphBatch.value_layout`), so no ``[E, widest]`` table is built;
        a batch with explicit ``edge_attr`` / ``edge_mask`` (a caller's own
        edge features) is encoded from those. Both give the same features.
        """
        F = batch.width
        if F > self.hparams["edge_dim"]:
            raise ValueError(f"batch edge width {F} > edge_dim={self.hparams['edge_dim']}")
        if batch.edge_attr is not None:
            attr = batch.edge_attr * batch.edge_mask / self.edge_scale[batch.edge_type][:, None]
            e = self.edge_type_emb(batch.edge_type)
            e = e + torch.nn.functional.linear(attr, self.edge_val.weight[:, :F])
            return e + torch.nn.functional.linear(batch.edge_mask.to(attr.dtype), self.edge_mask_lin.weight[:, :F])
        # one embedding_bag over the values: a value in column p of an edge of type t weights row
        # p * T + t (its value_key) of the value map scaled by 1 / edge_scale[t]; plus one lookup of the edge's
        # (width, type) row of a table holding the type embedding + the sum of its first w mask
        # columns. No [E, F] table is built; the indices are structure, cached on the batch.
        T, H = len(EDGE_TYPES), self.hparams["hidden"]
        lay = batch.value_layout()
        rows = (self.edge_val.weight[:, :F].t()[:, None, :] / self.edge_scale[None, :, None]).flatten(0, 1)
        e = torch.nn.functional.embedding_bag(lay["value_key"], rows, lay["value_start"], mode="sum",
                                              per_sample_weights=batch.edge_values)  # [E, H]
        mask_w = torch.cat([self.edge_mask_lin.weight.new_zeros(1, H),
                            self.edge_mask_lin.weight[:, :F].t().cumsum(0)])  # [F + 1, H]
        table = (mask_w[:, None, :] + self.edge_type_emb.weight[None]).flatten(0, 1)  # row w * T + t
        return e + torch.nn.functional.embedding(batch.edge_width * T + batch.edge_type, table)

    def fit_normalization(self, graphs: Sequence[ParameterGraph]) -> "GMN":
        """Set ``edge_scale``: the RMS of the input values of each edge type
        over ``graphs`` (1 for types without values). Returns ``self``."""
        n = len(EDGE_TYPES)
        tot = torch.zeros(n, dtype=torch.float64)
        num = torch.zeros(n, dtype=torch.float64)
        graphs = list(graphs)
        for i in range(0, len(graphs), 64):  # chunks bound the memory for big zoos
            b = collate(graphs[i : i + 64], keep_graphs=False)
            value_type = torch.repeat_interleave(b.edge_type, b.edge_width)  # [V]
            tot += torch.bincount(value_type, weights=b.edge_values.double().pow(2), minlength=n)
            num += torch.bincount(value_type, minlength=n).double()
        rms = torch.where(num > 0, (tot / num.clamp(min=1)).sqrt(), torch.ones_like(tot))
        self.edge_scale.copy_(rms.clamp(min=1e-8).to(self.edge_scale.dtype))
        if self.hparams["stats_dim"]:
            s = torch.cat([self.graph_statistics(graphs[i : i + 256]) for i in range(0, len(graphs), 256)])
            std = s.std(0, unbiased=False) if len(graphs) > 1 else torch.ones_like(s[0])
            self.stats_mean.copy_(s.mean(0).to(self.stats_mean.dtype))
            # constant features (e.g. padding) keep scale 1
            self.stats_std.copy_(torch.where(std > 1e-12, std, torch.ones_like(std)).to(self.stats_std.dtype))
        return self

    @staticmethod
    def stats_width(template) -> int:
        """``stats_dim`` of the hybrid readout for an architecture
        (a :class:`~weightspace.graph.GraphTemplate`)."""
        return len(STATS) * len(template.keys)

    def graph_statistics(self, graphs: Sequence[ParameterGraph]) -> Tensor:
        """``[B, stats_dim]`` per-tensor :data:`STATS` of ``graphs`` (float64,
        zero padded; :func:`~weightspace.common.tensor_stats.tensor_statistics`
        of each tensor, for all graphs of one template at once), cached per
        graph object while it lives (training re-batches the same graphs
        every epoch)."""
        d = self.hparams["stats_dim"]
        out = torch.zeros(len(graphs), d, dtype=torch.float64)
        todo: dict[int, list[int]] = {}
        for i, g in enumerate(graphs):
            hit = _STATS_CACHE.get(id(g))
            if hit is not None and hit[0]() is g:
                out[i, : hit[1].numel()] = hit[1]
            else:
                todo.setdefault(id(g.template), []).append(i)
        for rows in todo.values():
            t = graphs[rows[0]].template
            if self.stats_width(t) > d:
                raise ValueError(f"a graph gives {self.stats_width(t)} statistics > stats_dim={d}; "
                                 "build the GMN with stats_dim=GMN.stats_width(template)")
            v = torch.stack([graphs[i].values.detach().cpu().to(torch.float64) for i in rows]).numpy()  # [b, P]
            f = torch.from_numpy(np.concatenate(
                [tensor_statistics(v[:, t.offsets[k] : t.offsets[k] + int(math.prod(t.shapes[k]))]) for k in t.keys],
                axis=1))
            out[torch.as_tensor(rows), : f.shape[1]] = f
            for j, i in enumerate(rows):
                _cache_stats(graphs[i], f[j])
        return out

    def _standardized_stats(self, batch: GraphBatch) -> Tensor:
        if batch.graphs is None:
            raise ValueError("this GMN has a statistics readout (stats_dim > 0): collate with keep_graphs=True")
        if "stats" not in batch._cache:
            batch._cache["stats"] = self.graph_statistics(batch.graphs)
        s = batch._cache["stats"].to(self.stats_mean.device, self.stats_mean.dtype)
        return ((s - self.stats_mean) / self.stats_std).clamp(-10.0, 10.0)

    # --------------------------------------------------------------- forward
    def forward(self, batch: Any) -> GMNOutput:
        """Run the GMN on a :class:`GraphBatch` (or graphs / a PyG batch)."""
        batch = self._as_batch(batch)
        dev, dtype = self.u0.device, self.u0.dtype
        if batch.edge_index.device != dev or batch.dtype != dtype:
            batch = batch.to(dev, dtype)  # e.g. a float64 GMN (model.double()) for exact symmetry checks
        ctx = self.context(batch)
        x = self.encode_nodes(batch, ctx)
        e = self.encode_edges(batch)
        u = self.u0.expand(batch.num_graphs, -1)
        pool = self.hparams["pool"]
        # without an edge readout the last layer's edge stream is only aggregated and pooled; with a
        # linear aggregation and a sum / mean pool that needs no E x H output (GMNConv.step)
        lazy = (len(self.convs) > 0 and self.edge_head is None and self.convs[-1].linear_aggregation
                and pool in ("mean", "sum"))
        counts = self._aggregate_counts(batch) if lazy else None
        if self._compiled and not torch.is_grad_enabled() and self.backend == "pyg":
            x, e, u, agg = self._compiled_layers(x, e, u, ctx, counts)
        else:
            x, e, u, agg = self._layers(x, e, u, ctx, counts)
        graph = node = edge = None
        if self.graph_head is not None:
            pe = ctx.pool(e, "edge", pool) if e is not None else self._edge_pool_from_aggregates(batch, ctx, agg[0])
            z = torch.cat([u, ctx.pool(x, "node", pool), pe], dim=1)
            rn = self.readout_norm
            if rn is not None and self.training and z.shape[0] < 2:  # one graph: no batch statistics
                z = torch.nn.functional.batch_norm(z, rn.running_mean, rn.running_var, training=False, eps=rn.eps)
            elif rn is not None:
                z = rn(z)
            if self.hparams["stats_dim"]:
                z = torch.cat([z, self.stats_enc(self._standardized_stats(batch))], dim=1)
            graph = self.graph_head(z)
        if self.node_head is not None:
            node = self.node_head(x)
        if self.edge_head is not None:
            edge = self.edge_head(e)
            if self.hparams["edge_residual"]:
                attr, mask = batch.padded()
                edge = edge + torch.nn.functional.pad(attr * mask, (0, edge.shape[1] - attr.shape[1]))
        return GMNOutput(graph, node, edge, batch)

    def compile_(self) -> "GMN":
        """Run the message-passing layers through ``torch.compile`` (inductor,
        C++ / OpenMP code for the CPU) where no gradient is recorded
        (``torch.no_grad`` / ``inference_mode``: prediction, evaluation);
        training and the DGL backend stay eager. Returns ``self``.

        Inductor fuses each layer's edge stream (layer norm, bias, residual,
        gather, activation) into fewer passes and the edge products run
        through oneDNN (:mod:`weightspace.nn.conv._compile`); the outputs
        equal the eager ones up to float32 rounding. The first forward
        compiles (25-60 s of one CPU core with ``g++``; inductor's on-disk
        cache shortens later processes); graph sizes are dynamic, so other
        batch sizes and architectures reuse the code (a batch of one graph
        compiles once more), and so do other GMNs of the same
        hyperparameters. Each other configuration (depth, width,
        aggregation, ...) compiles its own code; past torch's cache limit
        (``torch._dynamo.config.cache_size_limit``, 8) further ones run
        eager. Measured on one thread of an AMD EPYC (Zen 1), 64
        ``cnn_small`` graphs: 1.09-1.15x the eager networks per CPU second
        (1.08x with 8 graphs), so it pays after a few thousand batches of 64:
        long inference runs, not one-off predictions
        (``benchmarks/bench_gmn.py --compile``,
        ``benchmarks/results/gmn_pyg_compile.json``).

        Where no C++ compiler is found, or the first compiled forward
        fails, a ``RuntimeWarning`` says why and the model stays eager
        (same results).
        """
        if self.backend != "pyg":
            raise ValueError(f"compile_ supports the pyg backend, not {self.backend!r}")
        why = compiler_missing()
        if why is not None:
            warnings.warn(f"GMN.compile_: {why}; the GMN runs eager", RuntimeWarning, stacklevel=2)
            return self
        self._compiled = True
        return self

    def _compiled_layers(self, x: Tensor, e: Tensor, u: Tensor, ctx: Any, counts: tuple[Tensor, Tensor] | None):
        """:meth:`_layers` through the shared compiled function; on a failure
        of the compiler, a warning and eager from then on."""
        global _COMPILED_LAYERS
        if _COMPILED_LAYERS is None:
            _COMPILED_LAYERS = torch.compile(_run_layers, dynamic=True)
        try:
            return _COMPILED_LAYERS(self, x, e, u, ctx, counts)
        except torch._dynamo.exc.TorchDynamoException as exc:  # dynamo, inductor or the C++ toolchain
            self._compiled = False
            warnings.warn(f"GMN.compile_: compiling failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                          "the GMN runs eager", RuntimeWarning, stacklevel=3)
            return self._layers(x, e, u, ctx, counts)

    def _layers(self, x: Tensor, e: Tensor, u: Tensor, ctx: Any, counts: tuple[Tensor, Tensor] | None):
        """The message-passing layers: ``(x, e, u, agg)`` after the last one
        (``e`` is ``None`` where the last layer runs lazily, i.e. ``counts``
        is given: see :meth:`GMNConv.step`)."""
        # without autograd the edge stream (E x H, the bulk of the work) is
        # updated in place: e is this method's own tensor
        inplace = not torch.is_grad_enabled()
        agg = None
        for i, conv in enumerate(self.convs):
            if counts is not None and i == len(self.convs) - 1:
                if agg is None:  # a one-layer GMN: aggregate the encoded edges
                    agg = (conv.aggregate_edges(ctx, e, "in"), conv.aggregate_edges(ctx, e, "out"))
                x, e, u, agg = conv.step(x, e, u, ctx, e_agg=agg, counts=counts)
            else:
                x, e, u, agg = conv.step(x, e, u, ctx, inplace=inplace)
        return x, e, u, agg

    def _aggregate_counts(self, batch: GraphBatch) -> tuple[Tensor, Tensor]:
        """Per node, the aggregate of a constant 1 over its in / out edges
        (``[N, 1]`` each): the degree for ``sum``, ``degree > 0`` for ``mean``."""
        din, dout = batch.degrees()
        if self.hparams["aggr"] == "mean":
            return (din > 0).to(din.dtype)[:, None], (dout > 0).to(dout.dtype)[:, None]
        return din[:, None], dout[:, None]

    def _edge_pool_from_aggregates(self, batch: GraphBatch, ctx: Any, agg_in: Tensor) -> Tensor:
        """Per-graph sum / mean of the edge features ``[B, H]`` from their
        ``sum`` / ``mean`` aggregates at the target nodes ``[N, H]`` (every
        edge enters exactly one node, in its own graph)."""
        if self.hparams["aggr"] == "mean":
            agg_in = agg_in * batch.degrees()[0][:, None]
        total = ctx.pool(agg_in, "node", "sum")
        if self.hparams["pool"] == "sum":
            return total
        n_edges = (batch.edge_ptr[1:] - batch.edge_ptr[:-1]).clamp(min=1).to(total.dtype)
        return total / n_edges[:, None]

    def predict(self, batch: Any) -> Tensor:
        """Graph-level output ``[B, out_dim]``."""
        out = self(batch).graph
        if out is None:
            raise ValueError("this GMN has no graph readout (out_dim=0)")
        return out

    def write_back(self, batch: Any) -> list[ParameterGraph]:
        """Run the model and write its edge output back as new weights:
        one :class:`~weightspace.graph.ParameterGraph` per input graph."""
        out = self(batch)
        if out.edge is None:
            raise ValueError("this GMN has no edge readout (edge_out=0)")
        return out.batch.write_back(out.edge)
