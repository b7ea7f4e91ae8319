"""Small helpers shared by the built-in architectures."""

from __future__ import annotations

import inspect
from typing import Callable, Sequence

from torch import nn

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "identity": nn.Identity,
}


def activation(name: str) -> nn.Module:
    """A fresh activation module by name (clear error for unknown names)."""
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}"
        ) from None


def image_input_shape(kw: dict) -> tuple[int, int, int, int]:
    """Example input shape ``(2, in_channels, image_size, image_size)`` of an
    image model (the registry's ``input_shape`` for the built-in CNNs,
    ResNets and the ViT)."""
    return (2, kw["in_channels"], kw["image_size"], kw["image_size"])


def layer_stack(
    make_layer: Callable[[int, int], nn.Module],
    in_dim: int,
    widths: Sequence[int],
    activation_name: str,
    dropout: float = 0.0,
) -> tuple[list[nn.Module], int]:
    """``[make_layer(prev, width) -> activation (-> dropout)]`` for each of
    ``widths``, starting from ``in_dim``: the modules in order (their
    positions are the state-dict names inside an ``nn.Sequential``) and the
    last width. Dropout is added only when ``dropout > 0``."""
    layers: list[nn.Module] = []
    prev = in_dim
    for width in widths:
        layers += [make_layer(prev, width), activation(activation_name)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        prev = width
    return layers, prev


def extend_signature(base: Callable, own: Callable) -> inspect.Signature:
    """The signature of ``own(*args, extra..., **kwargs)`` that forwards
    ``args``/``kwargs`` to ``base``: ``base``'s parameters, then ``own``'s
    named ones as keyword arguments with their defaults."""
    params = list(inspect.signature(base).parameters.values())
    extra = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for p in inspect.signature(own).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    return inspect.Signature(params + extra, return_annotation=inspect.signature(own).return_annotation)
