"""Tiny networks shared by the capture tests."""

from torch import nn


class ActTwice(nn.Module):
    """One ``ReLU`` module called twice (``act(lin(act(x)))``): fx lists the
    calls as ``act`` and ``act_1``, while a forward hook fires twice on one
    module."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.lin(self.act(x)))


class Branchy(nn.Module):
    """Data-dependent control flow (fx cannot trace it) and no submodules
    (no hook can stand in)."""

    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x
