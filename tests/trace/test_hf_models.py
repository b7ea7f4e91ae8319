"""Hugging Face models built from tiny configs (no download) trace through
``tracer="auto"`` (fx fails on them, torch.export takes over): random spec
permutations keep the logits in float64, a one-sided permutation breaks
them, the parameter-graph round trip is bit-exact."""

import pytest
import torch

T = pytest.importorskip("transformers")

from tests.hf_models import HF_MODELS as MODELS  # noqa: E402
from tests.hf_models import build as _build  # noqa: E402
from tests.trace.tracekit import check_model  # noqa: E402


def _groups_of(spec, param, axis):
    return [g for g in spec.groups if any(ax.param == param and ax.axis == axis for ax in g.axes)]


@pytest.mark.parametrize("name", list(MODELS))
def test_hf_model_symmetry(name):
    make, x = _build(name)
    torch.manual_seed(1)
    a, _ = check_model(make(), make, x, tracer="auto")
    assert a.computation_graph.fx_graph is None  # fx refused; export traced it
    spec = a.spec
    if name == "gpt2":
        # tied wte / lm_head: one residual group acts on both names
        g = _groups_of(spec, "transformer.wte.weight", 1)
        assert len(g) == 1 and _groups_of(spec, "lm_head.weight", 1) == g
        assert g[0].size == 32
        assert sum(g.kind == "head" for g in spec.groups) == 2
    if name == "llama":
        # hand-written RMSNorm: residual stream permutable
        assert [g.size for g in _groups_of(spec, "model.layers.0.input_layernorm.weight", 0)] == [32]
        # SwiGLU: gate and up projections share one permutation
        gate = _groups_of(spec, "model.layers.0.mlp.gate_proj.weight", 0)
        assert len(gate) == 1 and gate == _groups_of(spec, "model.layers.0.mlp.up_proj.weight", 0)
        # rotary + GQA: q/k/v neurons and heads are kept fixed
        for p in ("q_proj", "k_proj", "v_proj"):
            assert not _groups_of(spec, f"model.layers.0.self_attn.{p}.weight", 0)
        assert not any(g.kind == "head" for g in spec.groups)
    if name == "llama_mqa_tied":
        cg = a.computation_graph
        assert cg.aliases["lm_head.weight"] == cg.aliases["model.embed_tokens.weight"]
        g = _groups_of(spec, "model.embed_tokens.weight", 1)
        assert len(g) == 1 and g == _groups_of(spec, "lm_head.weight", 1) and g[0].size == 32
    if name == "resnet":
        assert sorted(g.size for g in spec.groups) == [8, 8, 16, 16]


def test_default_use_cache_is_switched_off_for_export():
    # the default config returns a DynamicCache, which torch.export cannot
    # return; the export front end passes use_cache=False
    cfg = T.GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=1, n_head=4, bos_token_id=0,
                       eos_token_id=0)
    assert cfg.use_cache
    torch.manual_seed(0)
    m = T.GPT2LMHeadModel(cfg)
    from weightspace.core import permutation_spec

    spec = permutation_spec(m, torch.randint(0, 100, (2, 8)), tracer="export")
    assert [g.size for g in spec.groups if g.kind == "head"] == [4]
