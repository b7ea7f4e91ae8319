"""Small helpers shared by the built-in architectures."""

from __future__ import annotations

import inspect
from typing import Callable

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
