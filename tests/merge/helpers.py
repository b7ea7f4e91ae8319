"""Helpers of the merge tests: cached analyses and a tiny seeded digits trainer."""

from __future__ import annotations

import contextlib
import functools

import torch

import weightspace as ws
import zoo


@functools.lru_cache(maxsize=None)
def analysis(arch: str, kw: tuple = ()):
    """``ws.analyze`` of a registered architecture, cached per (arch, kwargs)."""
    return ws.analyze(arch, arch_kwargs=dict(kw))


def init_sd(arch: str, seed: int, **kw) -> dict:
    """The seeded initial state dict of a registered architecture."""
    return zoo.create_model(arch, seed=seed, **kw).state_dict()


def perturbed(sd: dict, seed: int) -> dict:
    """Default init plus random biases / norm parameters / BN statistics, so that
    every tensor carries information about the neuron order."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in sd.items():
        if not v.is_floating_point():
            out[k] = v.clone()
        elif k.endswith("running_var"):
            out[k] = 0.5 + torch.rand(v.shape, generator=g)
        elif v.dim() == 1 or "token" in k or "pos_embed" in k:
            out[k] = v + 0.1 * torch.randn(v.shape, generator=g)
        else:
            out[k] = v.clone()
    return out


@contextlib.contextmanager
def one_thread():
    """Tiny models train 10x faster with one intra-op thread on a busy 2-core box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@functools.lru_cache(maxsize=1)
def digits():
    """``(x_train (1400,1,8,8), y_train, x_test (397,1,8,8), y_test)``, pixels in [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return x[:1400], y[:1400], x[1400:], y[1400:]


@functools.lru_cache(maxsize=None)
def trained(arch: str, seed: int, epochs: int = 20, kw: tuple = ()):
    """``(module, state_dict)`` of ``arch`` trained on digits with Adam (seeded)."""
    xtr, ytr, _, _ = digits()
    with one_thread():
        m = zoo.create_model(arch, seed=seed, **dict(kw))
        opt = torch.optim.Adam(m.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(seed)
        m.train()
        for _ in range(epochs):
            idx = torch.randperm(len(ytr), generator=g)
            for i in range(0, len(idx), 64):
                b = idx[i : i + 64]
                loss = torch.nn.functional.cross_entropy(m(xtr[b]), ytr[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
        m.eval()
    return m, {k: v.detach().clone() for k, v in m.state_dict().items()}
