"""Symmetry claims as properties, on every registered architecture: a random
permutation from the derived spec leaves outputs unchanged; permuting only one
side of a group changes them (the spec is not vacuous)."""

import pytest
import torch

import weightspace as ws
import zoo
from weightspace.errors import SpecError
from weightspace.symmetry import (
    apply_permutation,
    canonicalize,
    compose_permutations,
    identity_permutation,
    invert_permutation,
    random_permutation,
)

from tests.symmetry.symkit import ARCHS, BIG, IDS, analysis
from tests.symmetry.symkit import make_input as _input
from tests.symmetry.symkit import make_model as _model
from tests.symmetry.symkit import perturbed_state as _perturbed_state




def _reference(name, kw, seed):
    """The analysis, perturbed weights ``sd`` (``seed``), the example input
    ``x`` and the model's output ``y`` on it."""
    a = analysis(name, kw)
    model = _model(name, kw)
    sd = _perturbed_state(model, seed)
    model.load_state_dict(sd)
    x = _input(name, kw)
    with torch.no_grad():
        y = model(x)
    return a, sd, x, y


def _max_diff(model, sd, x, y):
    """Largest absolute difference of ``model`` with weights ``sd`` on ``x`` from ``y``."""
    model.load_state_dict(sd)
    with torch.no_grad():
        return (model(x) - y).abs().max().item()


@pytest.mark.parametrize("name,kw", ARCHS, ids=IDS)
def test_random_permutation_preserves_function(name, kw):
    a, sd, x, y = _reference(name, kw, 1)
    other = _model(name, kw)
    for seed in range(1 if name in BIG else 3):
        perm = random_permutation(a.spec, seed=seed)
        psd = apply_permutation(sd, a.spec, perm)
        # the permutation really moved weights
        assert any(not torch.equal(psd[k], sd[k]) for k in a.spec.param_axes)
        diff = _max_diff(other, psd, x, y)
        assert diff <= 1e-5 * max(1.0, y.abs().max().item()), (name, seed, diff)


@pytest.mark.parametrize("name,kw", ARCHS, ids=IDS)
def test_one_sided_permutation_changes_function(name, kw):
    """Permute only the first tensor axis a group acts on (e.g. the rows of the
    layer that produces a residual stream, not its consumers): outputs change."""
    a, sd, x, y = _reference(name, kw, 2)
    other = _model(name, kw)
    checked = 0
    for g in a.spec.groups:
        if len({(p, ax) for p, ax, _, _ in g.axes}) < 2:
            continue
        p, axis, start, unit = g.axes[0]
        t = sd[p]
        idx = torch.arange(t.shape[axis])
        shift = torch.roll(torch.arange(g.size), 1)
        idx[start : start + g.size * unit] = idx[start : start + g.size * unit].view(g.size, unit)[shift].reshape(-1)
        bad = dict(sd)
        bad[p] = t.index_select(axis, idx)
        diff = _max_diff(other, bad, x, y)
        assert diff > 1e-6, (name, g.name, p)
        checked += 1
        if checked >= 3:
            break
    assert checked >= 1


@pytest.mark.parametrize("name,kw", ARCHS, ids=IDS)
def test_invert_compose_canonicalize(name, kw):
    a = analysis(name, kw)
    sd = _perturbed_state(_model(name, kw), 3)
    p = random_permutation(a.spec, seed=10)
    q = random_permutation(a.spec, seed=11)
    back = apply_permutation(apply_permutation(sd, a.spec, p), a.spec, invert_permutation(a.spec, p))
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    two = apply_permutation(apply_permutation(sd, a.spec, p), a.spec, q)
    one = apply_permutation(sd, a.spec, compose_permutations(a.spec, p, q))
    assert all(torch.equal(two[k], one[k]) for k in sd)
    # the permutation step alone is exact (scale/sign: tests/symmetry/test_scaling.py)
    c1, _ = canonicalize(sd, a.spec, scale=False, sign=False)
    c2, _ = canonicalize(apply_permutation(sd, a.spec, p), a.spec, scale=False, sign=False)
    assert all(torch.equal(c1[k], c2[k]) for k in sd)


def test_expected_group_structure():
    mlp = ws.permutation_spec("mlp", hidden=[32, 16])
    assert sorted(g.size for g in mlp.groups) == [16, 32]
    cnn = ws.permutation_spec("cnn_small")
    assert [g.size for g in cnn.groups] == [16, 16, 16]
    r20 = ws.permutation_spec("resnet20")
    # one residual stream per stage + the inner channels of each of 9 blocks
    assert len(r20.neuron_groups) == 12
    stream = r20.groups[0]
    assert len(stream.targets) == 4  # stem conv + 3 blocks' conv2 outputs tied by adds
    vit = ws.permutation_spec("vit_tiny")
    assert len(vit.head_groups) == 2 and all(g.size == 4 and g.unit == 8 for g in vit.head_groups)
    tt = ws.permutation_spec("token_transformer")
    assert len(tt.head_groups) == 2
    mob = ws.permutation_spec("mobilenet_tiny")
    # grouped conv (4 groups of 8) cuts its output into 4 free groups of 8
    assert sum(1 for g in mob.groups if g.size == 8) >= 4


def test_heads_move_q_k_v_and_output_projection_together():
    spec = ws.permutation_spec("vit_tiny")
    g = spec.head_groups[0]
    params = {(p, ax) for p, ax, _, _ in g.axes}
    assert ("blocks.0.attn.qkv.weight", 0) in params
    assert ("blocks.0.attn.proj.weight", 1) in params
    starts = sorted(s for p, ax, s, _ in g.axes if p == "blocks.0.attn.qkv.weight")
    assert starts == [0, 32, 64]  # q, k and v regions of the packed projection


def test_random_permutation_needs_seed_and_is_deterministic():
    spec = ws.permutation_spec("mlp")
    with pytest.raises(ValueError, match="seed"):
        random_permutation(spec)
    a, b = random_permutation(spec, seed=5), random_permutation(spec, seed=5)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_permutations_are_clear_errors():
    spec = ws.permutation_spec("mlp")
    sd = zoo.create_model("mlp", seed=0).state_dict()
    name = spec.names[0]
    good = identity_permutation(spec)
    with pytest.raises(SpecError, match="unknown group"):
        apply_permutation(sd, spec, {**good, "nope": torch.arange(3)})
    with pytest.raises(SpecError, match="missing group"):
        apply_permutation(sd, spec, {k: v for k, v in good.items() if k != name})
    with pytest.raises(SpecError, match="expected shape"):
        apply_permutation(sd, spec, {**good, name: torch.arange(5)})
    with pytest.raises(SpecError, match="not a permutation"):
        apply_permutation(sd, spec, {**good, name: torch.zeros(spec[name].size, dtype=torch.long)})


def test_inputs_are_not_mutated():
    spec = ws.permutation_spec("mlp")
    sd = zoo.create_model("mlp", seed=0).state_dict()
    copy = {k: v.clone() for k, v in sd.items()}
    apply_permutation(sd, spec, random_permutation(spec, seed=0))
    canonicalize(sd, spec)
    assert all(torch.equal(copy[k], sd[k]) for k in sd)
