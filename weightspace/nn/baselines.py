"""Baseline metanetworks under the :class:`~weightspace.nn.MetaNetwork`
interface: StatNN (per-tensor weight statistics), a flattened-weights MLP,
and an NFN/DWS-style equivariant network for MLP weight spaces.

* :class:`StatNN` and :class:`NFN` are invariant to the spec's permutations
  (statistics / equivariant layers + mean pooling).
* :class:`FlatMLP` is **not**: it reads the weights in storage order (the
  control in every invariance test; train it with permutation augmentation).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from weightspace.common.tensor_stats import NUM_BASIC_STATS, weight_statistics
from weightspace.graph import GraphTemplate, ParameterGraph
from weightspace.nn.base import MetaNetwork, register_metanetwork
from weightspace.nn.conv._common import activation
from weightspace.nn.conv.np_linear import NPLinear

__all__ = ["StatNN", "FlatMLP", "NFN", "weight_statistics", "mlp_layers", "NUM_STATS"]

#: statistics per tensor: mean, variance, quantiles 0, .25, .5, .75, 1 (Unterthiner et al., 2020)
NUM_STATS = NUM_BASIC_STATS


def _mlp_head(d_in: int, hidden: int, num_layers: int, out_dim: int, act: str, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(num_layers):
        layers += [nn.Linear(d, hidden), activation(act)(), nn.Dropout(dropout)]
        d = hidden
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class _StandardizedMLP(MetaNetwork):
    """Shared body: a fixed-width feature vector per graph, standardized with
    training-set statistics (buffers), then an MLP."""

    def __init__(self, in_features: int, out_dim: int = 1, hidden: int = 64, num_layers: int = 2,
                 act: str = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        self.hparams = dict(in_features=in_features, out_dim=out_dim, hidden=hidden, num_layers=num_layers,
                            act=act, dropout=dropout)
        self.register_buffer("feat_mean", torch.zeros(in_features))
        self.register_buffer("feat_std", torch.ones(in_features))
        self.head = _mlp_head(in_features, hidden, num_layers, out_dim, act, dropout)

    def features(self, graph: ParameterGraph) -> Tensor:
        raise NotImplementedError

    def collate(self, graphs: Sequence[ParameterGraph], node_extra: Sequence[Tensor] | None = None) -> Tensor:
        """``[B, in_features]`` feature matrix (zero padded)."""
        d = self.hparams["in_features"]
        out = torch.zeros(len(graphs), d)
        for i, g in enumerate(graphs):
            f = self.features(g).reshape(-1)
            if f.numel() > d:
                raise ValueError(
                    f"{type(self).__name__}: a graph gives {f.numel()} features > in_features={d}; "
                    f"build the model with {type(self).__name__}.for_template(...) or a larger in_features"
                )
            out[i, : f.numel()] = f
        return out

    def fit_normalization(self, graphs: Sequence[ParameterGraph]) -> "MetaNetwork":
        """Set the per-feature mean / std buffers from ``graphs``."""
        x = self.collate(graphs)
        self.feat_mean.copy_(x.mean(0))
        std = x.std(0, unbiased=False) if len(graphs) > 1 else torch.ones_like(x[0])
        # constant features (e.g. padding) keep scale 1 instead of exploding
        self.feat_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
        return self

    def forward(self, batch: Tensor) -> Tensor:
        """``[B, in_features] -> [B, out_dim]``."""
        batch = batch.to(self.feat_mean.device)
        return self.head((batch - self.feat_mean) / self.feat_std)


@register_metanetwork
class StatNN(_StandardizedMLP):
    """Per-tensor weight statistics -> MLP (Unterthiner et al., 2020).

    Features: :func:`weight_statistics` of every tensor, flattened
    (``num_tensors * 7``; graphs with fewer tensors are zero padded).
    Invariant to every neuron permutation.

    Args:
        in_features: ``7 * num_tensors`` (see :meth:`for_template`).
        out_dim, hidden, num_layers, act, dropout: the MLP.
    """

    @classmethod
    def for_template(cls, template: GraphTemplate, **kwargs) -> "StatNN":
        """A StatNN sized for one architecture."""
        return cls(NUM_STATS * len(template.keys), **kwargs)

    def features(self, graph: ParameterGraph) -> Tensor:
        return weight_statistics(graph)


@register_metanetwork
class FlatMLP(_StandardizedMLP):
    """All weights flattened in state_dict order -> MLP (not invariant).

    Args:
        in_features: number of values (see :meth:`for_template`); shorter
            networks are zero padded.
        out_dim, hidden, num_layers, act, dropout: the MLP.
    """

    @classmethod
    def for_template(cls, template: GraphTemplate, **kwargs) -> "FlatMLP":
        """A FlatMLP sized for one architecture."""
        return cls(template.num_values, **kwargs)

    def features(self, graph: ParameterGraph) -> Tensor:
        return graph.values.to(torch.float32)


def mlp_layers(graph: ParameterGraph) -> tuple[list[Tensor], list[Tensor]]:
    """Weights ``[n_l, n_{l-1}]`` and biases ``[n_l]`` of a plain MLP
    (alternating Linear ``weight``/``bias`` tensors forming a chain).

    Raises:
        ValueError: the network is not such an MLP (NFN needs one).
    """
    sd = graph.to_state_dict()
    keys = graph.template.keys
    if len(keys) % 2 or len(keys) == 0:
        raise ValueError(f"NFN needs an MLP of Linear layers with biases; tensors: {keys}")
    ws, bs = [], []
    for wk, bk in zip(keys[0::2], keys[1::2]):
        w, b = sd[wk], sd[bk]
        if not (wk.endswith("weight") and bk.endswith("bias") and w.dim() == 2 and b.dim() == 1 and b.shape[0] == w.shape[0]):
            raise ValueError(f"NFN needs alternating Linear weight/bias tensors; got {wk} {tuple(w.shape)}, {bk} {tuple(b.shape)}")
        if ws and ws[-1].shape[0] != w.shape[1]:
            raise ValueError(f"layers do not chain: {tuple(ws[-1].shape)} then {tuple(w.shape)}")
        ws.append(w.to(torch.float32))
        bs.append(b.to(torch.float32))
    return ws, bs


@register_metanetwork
class NFN(MetaNetwork):
    """NFN / DWS-style invariant network for MLP weight spaces: ``num_layers``
    :class:`~weightspace.nn.conv.NPLinear` layers (ReLU between), mean
    pooling of every weight and bias tensor over its neuron axes, then an MLP.

    Works only on plain MLPs of one layout (``layer_sizes``); this is the
    limitation of NFN/DWSNets that :class:`~weightspace.nn.GMN` removes.

    Args:
        layer_sizes: ``(n_0, ..., n_L)``, see :meth:`for_template`.
        out_dim: output size.
        hidden: channels of the equivariant layers.
        num_layers: number of equivariant layers.
        mlp_hidden: width of the head.
    """

    def __init__(self, layer_sizes: Sequence[int], out_dim: int = 1, hidden: int = 16, num_layers: int = 2,
                 mlp_hidden: int = 64) -> None:
        super().__init__()
        self.hparams = dict(layer_sizes=[int(n) for n in layer_sizes], out_dim=out_dim, hidden=hidden,
                            num_layers=num_layers, mlp_hidden=mlp_hidden)
        L = len(layer_sizes) - 1
        chans = [1] + [hidden] * num_layers
        self.layers = nn.ModuleList(NPLinear(layer_sizes, a, b) for a, b in zip(chans[:-1], chans[1:]))
        self.register_buffer("scale", torch.ones(2 * L))
        self.head = _mlp_head(2 * L * chans[-1], mlp_hidden, 1, out_dim, "relu", 0.0)

    @classmethod
    def for_template(cls, template: GraphTemplate, **kwargs) -> "NFN":
        """An NFN sized for one MLP architecture."""
        keys = template.keys
        sizes = [template.shapes[keys[0]][1]] + [template.shapes[k][0] for k in keys[0::2]]
        return cls(sizes, **kwargs)

    def collate(self, graphs: Sequence[ParameterGraph], node_extra: Sequence[Tensor] | None = None):
        """``(weights, biases)``: lists of ``[B, n_l, n_{l-1}, 1]`` and ``[B, n_l, 1]``."""
        per = [mlp_layers(g) for g in graphs]
        sizes = [per[0][0][0].shape[1]] + [w.shape[0] for w in per[0][0]]
        if sizes != self.hparams["layer_sizes"]:
            raise ValueError(f"NFN built for layer sizes {self.hparams['layer_sizes']}, got an MLP with {sizes}")
        L = len(per[0][0])
        ws = [torch.stack([p[0][l] for p in per])[..., None] for l in range(L)]
        bs = [torch.stack([p[1][l] for p in per])[..., None] for l in range(L)]
        return ws, bs

    def fit_normalization(self, graphs: Sequence[ParameterGraph]) -> "MetaNetwork":
        """One scale per tensor (its root mean square over the training
        graphs); a scalar per tensor keeps the layer equivariant."""
        ws, bs = self.collate(graphs)
        s = [t.pow(2).mean().sqrt() for t in ws + bs]
        s = [torch.where(v > 1e-8, v, torch.ones_like(v)) for v in s]
        self.scale.copy_(torch.stack(s))
        return self

    def forward(self, batch) -> Tensor:
        """``(weights, biases) -> [B, out_dim]``."""
        ws, bs = batch
        dev = self.scale.device
        L = len(ws)
        ws = [w.to(dev) / self.scale[l] for l, w in enumerate(ws)]
        bs = [b.to(dev) / self.scale[L + l] for l, b in enumerate(bs)]
        for i, layer in enumerate(self.layers):
            ws, bs = layer(ws, bs)
            if i + 1 < len(self.layers):
                ws = [torch.relu(w) for w in ws]
                bs = [torch.relu(b) for b in bs]
        pooled = [w.mean(dim=(1, 2)) for w in ws] + [b.mean(dim=1) for b in bs]
        return self.head(torch.cat(pooled, dim=1))
