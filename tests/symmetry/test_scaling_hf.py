"""Scaling/sign symmetries of the nanoGPT module (torch.fx) and a tiny
Hugging Face Llama (torch.export): what is derived, and that the full group
keeps the outputs."""

import pytest
import torch

from weightspace.symmetry import apply_symmetry, random_symmetry


def _logits(out):
    return out.logits if hasattr(out, "logits") else (out[0] if isinstance(out, tuple) else out)


def _check_full_group(name):
    from tests.hf_models import analysis, build, perturbed_model

    spec = analysis(name).spec
    model = perturbed_model(name)
    _, x = build(name)
    x = tuple(t.double() if t.is_floating_point() else t for t in x)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        y = _logits(model(*x))
        model.load_state_dict(apply_symmetry(sd, spec, random_symmetry(spec, seed=0)))
        y2 = _logits(model(*x))
    assert ((y2 - y).abs().max() / y.abs().max()).item() <= 1e-6
    return spec


def test_nanogpt_layernorm_outputs_only():
    spec = _check_full_group("nanogpt")
    assert spec.scalings
    for s in spec.scalings:
        # the LN affine absorbs the factor before q/k/v and the MLP's first Linear
        assert s.kinds == ("scale", "sign")
        assert all(".ln_" in a.param for a in s.axes if a.role == "in")
    # GELU hidden units of the MLP, attention and the residual stream: none
    assert not any("mlp.c_fc" in a.param and a.role == "in" for s in spec.scalings for a in s.axes)


@pytest.mark.slow
def test_export_traced_llama_gets_no_scalings():
    pytest.importorskip("transformers")
    # the torch.export front end keeps no fx graph to derive them from
    # (conservative: the up-projection units of the SiLU-gated MLP do have one)
    assert _check_full_group("llama").scalings == ()
