"""BatchNorm running statistics recomputed for a module's current weights."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import nn

__all__ = ["recalibrate_batchnorm_"]


@torch.no_grad()
def recalibrate_batchnorm_(module: nn.Module, batches: Iterable[Any],
                           forward: Callable[[Any], Any] | None = None) -> None:
    """Reset the running statistics of ``module``'s BatchNorm layers and set
    them to their cumulative average over ``forward(b)`` (default
    ``module(b)``) for every ``b`` in ``batches``, in train mode without
    gradients; momenta and the train / eval mode are restored. No-op (the
    batches are not consumed) without BatchNorm layers that track statistics."""
    bns = [m for m in module.modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return
    forward = forward or module
    momenta = [m.momentum for m in bns]
    was = module.training
    module.train()
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        for b in batches:
            forward(b)
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        module.train(was)
