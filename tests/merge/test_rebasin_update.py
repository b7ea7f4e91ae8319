"""Weight matching's cached products follow a changed permutation by a
low-rank update (only the changed positions of the contraction) instead of a
new product: the same matrix up to float32 rounding, and the matcher's result
is unchanged by the cache."""

import torch

import weightspace as ws
from weightspace.merge import weight_matching
from weightspace.merge.matching import _WeightCosts
from weightspace.symmetry import block_index_maps, identity_permutation


def _pair(seed=0):
    spec = ws.permutation_spec("mlp", hidden=[48, 48, 48])
    g = torch.Generator().manual_seed(seed)
    sds = [{k: torch.randn(s, generator=g) for k, s in spec.param_shapes.items()} for _ in range(2)]
    return spec, sds[0], sds[1]


def test_updated_product_equals_a_new_product():
    spec, sd_a, sd_b = _pair()
    keys = set(spec.param_axes)
    g = spec["layers.2"]  # the middle group: its weight's other axis is permuted by layers.0
    (p, ax, st, u) = next(e for e in g.axes if e[0] == "layers.2.weight")
    perm = identity_permutation(spec)
    cached = _WeightCosts(spec, sd_a, sd_b, keys, torch.float32)
    first = cached.product(p, ax, st, g.size, u, block_index_maps(spec, perm))
    swap = perm["layers.0"].clone()
    swap[[3, 7, 11, 20]] = swap[[7, 20, 3, 11]]  # 4 of 48 positions change: the update path
    perm["layers.0"] = swap
    maps = block_index_maps(spec, perm)
    updated = cached.product(p, ax, st, g.size, u, maps)
    assert updated is first  # updated in place, not recomputed
    fresh = _WeightCosts(spec, sd_a, sd_b, keys, torch.float32, budget=0).product(p, ax, st, g.size, u, maps)
    assert not torch.equal(fresh, _WeightCosts(spec, sd_a, sd_b, keys, torch.float32, budget=0).product(
        p, ax, st, g.size, u, block_index_maps(spec, identity_permutation(spec))))
    torch.testing.assert_close(updated, fresh, rtol=1e-5, atol=1e-5)


def test_cache_does_not_change_the_matching():
    spec, sd_a, sd_b = _pair(1)
    ref = weight_matching(sd_a, sd_b, spec, seed=0, cache=False, rtol=0)
    res = weight_matching(sd_a, sd_b, spec, seed=0, rtol=0)
    assert res.sweeps > 2
    assert all(torch.equal(res.perm[k], ref.perm[k]) for k in ref.perm)
    assert res.objective == ref.objective
