"""Shared by the symmetry property tests: every registered architecture
(plus a few variants), perturbed weights and example inputs in float64."""

import torch

import zoo

BIG = {"resnet18", "resnet50"}
# ImageNet ResNets with 10 classes and 32x32 inputs: same channel structure, faster
ARCHS = [(n, {"num_classes": 10, "image_size": 32} if n in BIG else {}) for n in zoo.list_models()] + [
    ("vit_tiny", {"qkv": "separate"}),
    ("resnet20", {"width": 2}),
]
IDS = [n + ("-" + "-".join(f"{k}{v}" for k, v in kw.items()) if kw and n not in BIG else "") for n, kw in ARCHS]


def perturbed_state(model, seed):
    """Default init plus non-trivial biases and BN statistics (so BN
    permutations and scalings matter)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in model.state_dict().items():
        if not v.is_floating_point():
            sd[k] = v.clone()
        elif k.endswith("running_var"):
            sd[k] = 0.5 + torch.rand(v.shape, generator=g, dtype=v.dtype)
        elif k.endswith("running_mean") or k.endswith("bias") or "token" in k:
            sd[k] = 0.1 * torch.randn(v.shape, generator=g, dtype=v.dtype)
        else:
            sd[k] = v.clone()  # not the module's own storage: loading other weights must not change sd
    return sd


def make_model(name, kw):
    return zoo.create_model(name, seed=0, **kw).double().eval()


def make_input(name, kw):
    x = zoo.example_input(name, **kw)
    return x.double() if x.is_floating_point() else x


_ANALYSES: dict = {}


def analysis(name, kw):
    """``ws.analyze(name, arch_kwargs=kw)``, computed once per process."""
    import weightspace as ws

    key = (name, tuple(sorted(kw.items())))
    if key not in _ANALYSES:
        _ANALYSES[key] = ws.analyze(name, arch_kwargs=kw)
    return _ANALYSES[key]


def arch_params(is_slow):
    """``ARCHS`` as pytest params, those with ``is_slow(name, kw)`` marked slow."""
    import pytest

    return [pytest.param(n, k, marks=pytest.mark.slow) if is_slow(n, k) else (n, k) for n, k in ARCHS]
