"""Implicit neural representations (SIREN, Sitzmann et al. 2020)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from weightspace.arch.registry import register_model


class Sine(nn.Module):
    """``sin(w0 * x)``."""

    def __init__(self, w0: float = 30.0) -> None:
        super().__init__()
        self.w0 = float(w0)

    def forward(self, x):
        return torch.sin(self.w0 * x)


@register_model(
    "siren",
    input_shape=lambda kw: (2, kw["in_features"]),
    description="SIREN INR (2 -> 32 -> 32 -> 1 by default)",
    tags=("inr", "mlp"),
)
class Siren(nn.Module):
    """SIREN MLP mapping coordinates to signal values, with the SIREN init
    (first layer U(-1/in, 1/in), later layers U(-sqrt(6/in)/w0, sqrt(6/in)/w0)).
    The default 2 -> 32 -> 32 -> 1 matches the NFN/DWSNets INR zoos."""

    def __init__(
        self,
        in_features: int = 2,
        hidden: Sequence[int] = (32, 32),
        out_features: int = 1,
        w0: float = 30.0,
        w0_first: float = 30.0,
    ) -> None:
        super().__init__()
        dims = [in_features, *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.acts = nn.ModuleList(
            Sine(w0_first if i == 0 else w0) for i in range(len(self.layers))
        )
        self.out = nn.Linear(dims[-1], out_features)
        with torch.no_grad():
            for i, layer in enumerate(self.layers):
                fan_in = layer.in_features
                bound = 1.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in) / w0
                layer.weight.uniform_(-bound, bound)
            bound = math.sqrt(6.0 / self.out.in_features) / w0
            self.out.weight.uniform_(-bound, bound)

    def forward(self, coords):
        x = coords
        for layer, act in zip(self.layers, self.acts):
            x = act(layer(x))
        return self.out(x)
