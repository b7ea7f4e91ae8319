"""Multi-layer perceptrons."""

from __future__ import annotations

from typing import Sequence

from torch import nn

from weightspace.arch.models._common import layer_stack
from weightspace.arch.registry import register_model


@register_model(
    "mlp",
    input_shape=lambda kw: (2, kw["in_features"]),
    description="MLP on flat inputs (default: 64 digits pixels -> 64 -> 64 -> 10)",
    tags=("mlp",),
)
class MLP(nn.Module):
    """``in -> [Linear -> act -> dropout] * len(hidden) -> Linear -> out``.

    Inputs of any trailing shape are flattened from dim 1, so the same MLP
    takes ``(B, 64)`` vectors or ``(B, 1, 8, 8)`` images.
    """

    def __init__(
        self,
        in_features: int = 64,
        hidden: Sequence[int] = (64, 64),
        out_features: int = 10,
        activation: str = "relu",
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        layers, prev = layer_stack(lambda a, b: nn.Linear(a, b, bias=bias), in_features, hidden, activation, dropout)
        layers.append(nn.Linear(prev, out_features, bias=bias))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x.flatten(1))
