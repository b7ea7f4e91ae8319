"""Shared helpers for the metanetwork tests (import as tests.nn.helpers)."""

from __future__ import annotations

import functools

import pytest
import torch

import weightspace as ws
import zoo
from weightspace.symmetry import apply_permutation, random_permutation

#: architectures whose graphs are too large for the fast lane (1.9M and 15.5M
#: edges); their invariance tests run with ``-m slow``.
BIG_ARCHS = ("resnet18", "resnet50")


def all_archs() -> list[str]:
    return zoo.list_models()


def fast_archs() -> list[str]:
    return [a for a in zoo.list_models() if a not in BIG_ARCHS]


@functools.lru_cache(maxsize=None)
def analysis(arch: str):
    return ws.analyze(arch)


def graph_and_permuted(arch: str, seed: int = 1, perm_seed: int = 7):
    """``(graph, permuted graph, perm)`` of a freshly initialized network.

    Biases and norm parameters are randomized too (many default to 0/1, which
    would hide a bias-edge bug)."""
    a = analysis(arch)
    t = a.template
    sd = zoo.create_model(arch, seed=seed).state_dict()
    gen = torch.Generator().manual_seed(seed)
    sd = {k: (v + 0.1 * torch.randn(v.shape, generator=gen, dtype=v.dtype) if v.is_floating_point() else v)
          for k, v in sd.items()}
    sd = {k: (v.abs() + 0.1 if k.endswith("running_var") else v) for k, v in sd.items()}
    perm = random_permutation(a.spec, seed=perm_seed)
    assert any(not torch.equal(p, torch.arange(p.numel())) for p in perm.values()), "identity permutation drawn"
    return t.graph(sd), t.graph(apply_permutation(sd, a.spec, perm)), perm


def max_sd_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)


def dgl_or_skip():
    """Import dgl, or skip (with the reason printed in the summary)."""
    try:
        import dgl  # noqa: F401
    except Exception as exc:  # wrong torch beside dgl raises more than ImportError
        pytest.skip(
            f"dgl not importable here ({type(exc).__name__}: {str(exc)[:120]}); "
            "the DGL tests run in the DGL environment: bash .ci/dgl_lane.sh",
            allow_module_level=True,
        )
