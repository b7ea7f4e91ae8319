"""Seeded noise on every parameter and BatchNorm statistic of a model, for
tests that must not run on default inits (zero biases, unit norm weights and
unit running variances would hide a bias-edge, norm or folding bug). Import
as ``tests.perturb``."""

from __future__ import annotations

import torch
from torch import nn


def perturb_(model: nn.Module, seed: int, *, scale: float, mean_scale: float) -> nn.Module:
    """Add ``scale``-sized Gaussian noise to every parameter (tied ones once),
    draw running variances from U[0.5, 1.5) and running means with std
    ``mean_scale``, in place; returns ``model``."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        for name, buf in model.named_buffers():
            if name.endswith("running_var"):
                buf.copy_(0.5 + torch.rand(buf.shape, generator=gen, dtype=buf.dtype))
            elif name.endswith("running_mean"):
                buf.copy_(mean_scale * torch.randn(buf.shape, generator=gen, dtype=buf.dtype))
    return model
