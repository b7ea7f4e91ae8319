"""Weight matching undoes a planted permutation exactly on the "real
checkpoint" families (tiny GPT-2, BERT, ViT, HF ResNet, Llama with GQA +
rotary, nanoGPT-style): the recovered permutation is the inverse of the
planted one and the matched state dict equals the original bit for bit.
Activation matching (through forward-hook capture) recovers it too."""

import pytest
import torch

pytest.importorskip("transformers")

from tests.hf_models import CHECKED, build, make_inputs, perturbed_model, planted  # noqa: E402
from weightspace.merge import activation_matching, weight_matching  # noqa: E402
from weightspace.symmetry import invert_permutation  # noqa: E402


@pytest.mark.parametrize("name", CHECKED)
def test_weight_matching_recovers_planted_permutation(name):
    a, sd, perm, sd_p = planted(name)
    assert any(not torch.equal(sd[k], sd_p[k]) for k in sd)
    res = weight_matching(sd, sd_p, a.spec, seed=0, dtype=torch.float64)
    assert res.converged
    want = invert_permutation(a.spec, perm)
    wrong = [g for g in want if not torch.equal(res.perm[g], want[g])]
    assert not wrong, f"groups not recovered: {wrong[:5]}"
    back = res.apply(sd_p)
    assert back.keys() == sd.keys()
    bad = [k for k in sd if not torch.equal(back[k], sd[k])]
    assert not bad, f"tensors differ after matching: {bad[:5]}"


@pytest.mark.parametrize("name", CHECKED)
def test_activation_matching_recovers_planted_permutation(name):
    """torch.fx cannot trace these models: activations are captured through
    forward hooks on the producing submodules (weightspace.similarity)."""
    a, sd, perm, sd_p = planted(name)
    make, _ = build(name)
    model = perturbed_model(name)
    permuted = make(0).double().eval()
    permuted.load_state_dict(sd_p)
    res = activation_matching(model, permuted, make_inputs(name, 32, seed=5), a.spec)
    want = invert_permutation(a.spec, perm)
    wrong = [g for g in want if not torch.equal(res.perm[g], want[g])]
    assert not wrong, f"groups not recovered: {wrong[:5]}"
