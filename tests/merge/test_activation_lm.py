"""Activation matching of transformer language models with streamed
statistics (``weightspace.merge.activations.slab_moments``): a planted
permutation of every group (attention heads and the dims inside them, the
residual stream, the MLP hidden units) is recovered exactly from random
token ids, also when a small ``max_bytes`` splits the statistics into
several passes over the data; float32 sums stay exact enough; bad inputs
get one-line errors; the YAML / CLI path on Hugging Face directories."""

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

pytest.importorskip("transformers")

from tests.hf_models import build, make_inputs, perturbed_model, planted  # noqa: E402
from weightspace.merge import MergeError, activation_matching  # noqa: E402
from weightspace.merge.activations import Slab, _CrossCorr, matching_slabs, slab_moments  # noqa: E402
from weightspace.symmetry import invert_permutation, split_groups  # noqa: E402


def _pair(name):
    a, sd, perm, sd_p = planted(name)
    make, _ = build(name)
    model = perturbed_model(name)
    permuted = make(0).double().eval()
    permuted.load_state_dict(sd_p)
    return a.spec, model, permuted, invert_permutation(a.spec, perm)


@pytest.mark.parametrize("name", ["gpt2", "llama", "nanogpt"])
def test_planted_permutation_recovered_in_several_passes(name):
    spec, model, permuted, want = _pair(name)
    x = make_inputs(name, 16, seed=5)  # random token ids
    res = activation_matching(model, permuted, x, spec, batch_size=4, max_bytes=20_000)
    assert res.info["passes"] > 1
    assert res.info["fallback_groups"] == [] and res.info["uncaptured_blocks"] == []
    assert res.info["samples"] == 16
    one = activation_matching(model, permuted, x, spec, batch_size=4, max_bytes=None)
    assert one.info["passes"] == 1
    # a pass holds at least one module's statistics, so it may exceed max_bytes, but never all at once
    assert res.info["stats_bytes"] < one.info["stats_bytes"]
    assert all(torch.equal(res.perm[g], one.perm[g]) for g in want)
    wrong = [g for g in want if not torch.equal(res.perm[g], want[g])]
    assert not wrong, f"groups not recovered: {wrong[:5]}"


def test_gpt2_heads_residual_and_mlp_are_all_matched_by_activations():
    spec, model, permuted, want = _pair("gpt2")
    free, heads = split_groups(spec)
    assert heads and any("mlp" in g.name for g in free) and any("wte" in g.name for g in free)
    slabs = matching_slabs(spec)
    # the residual stream reads a slab of every block it spans; a head group one region per q/k/v
    assert len(slabs["transformer.wte"]) > 2
    assert all(len(slabs[L.group.name]) == 3 for L in heads)
    res = activation_matching(model, permuted, make_inputs("gpt2", 16, seed=5), spec, batch_size=8)
    assert res.info["passes"] == 1 and res.info["fallback_groups"] == []
    assert all(torch.equal(res.perm[g], want[g]) for g in want)


def test_passes_stop_before_the_lm_head():
    """Only the probe (one sample per model) runs the output layer: every
    pass stops its forwards after the last module it reads."""
    spec, model, permuted, _ = _pair("gpt2")
    calls = []
    handles = [m.lm_head.register_forward_hook(lambda mod, args, out: calls.append(out.shape[0]))
               for m in (model, permuted)]
    try:
        res = activation_matching(model, permuted, make_inputs("gpt2", 16, seed=5), spec, batch_size=4,
                                  max_bytes=20_000)
    finally:
        for h in handles:
            h.remove()
    assert res.info["passes"] > 1
    assert calls == [1, 1]


def test_one_shot_iterator_with_several_passes_is_refused():
    spec, model, permuted, _ = _pair("gpt2")
    x = make_inputs("gpt2", 8, seed=5)
    with pytest.raises(MergeError, match="one-shot iterator"):
        activation_matching(model, permuted, (b for b in x.split(4)), spec, max_bytes=20_000)
    # one pass needs one iteration only
    res = activation_matching(model, permuted, (b for b in x.split(4)), spec, max_bytes=None)
    assert res.info["passes"] == 1 and res.info["samples"] == 8


@pytest.mark.parametrize("kw, match", [
    ({"max_bytes": 0}, "max_bytes"),
    ({"max_bytes": 1.5}, "max_bytes"),
    ({"dtype": torch.float16}, "dtype"),
    ({"fallback": "nope"}, "fallback"),
])
def test_bad_arguments(kw, match):
    spec, model, permuted, _ = _pair("nanogpt")
    with pytest.raises(MergeError, match=match):
        activation_matching(model, permuted, make_inputs("nanogpt", 4), spec, **kw)


def test_empty_data_is_refused():
    spec, model, permuted, _ = _pair("nanogpt")
    with pytest.raises(MergeError, match="no samples"):
        activation_matching(model, permuted, [], spec)


def test_float32_sums_are_shifted():
    """Activations with a large common offset: raw float32 sums would lose
    the covariance to cancellation; the shifted sums keep float64's answer."""
    g = torch.Generator().manual_seed(0)
    a = 1e4 + torch.randn(4096, 6, generator=g, dtype=torch.float64)
    b = a[:, [2, 0, 1, 5, 4, 3]] + 0.3 * torch.randn(4096, 6, generator=g, dtype=torch.float64) - 3e3
    ref, f32 = _CrossCorr(6, 6, torch.float64), _CrossCorr(6, 6, torch.float32)
    for s in range(0, 4096, 512):
        ref.update(a[s:s + 512], b[s:s + 512])
        f32.update(a[s:s + 512], b[s:s + 512])
    assert torch.allclose(f32.corr().double(), ref.corr(), atol=1e-4)
    assert torch.allclose(f32.sqdist().double(), ref.sqdist(), rtol=1e-4)


def test_unknown_or_repeated_modules_are_missing():
    """A slab whose module does not exist, or runs twice per forward, is
    reported missing (its group falls back to weights), not silently wrong."""

    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)
            self.out = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.out(self.fc(self.fc(x)))

    torch.manual_seed(0)
    m = Twice()
    slabs = {"fc": Slab("fc", -1, (0, 4), (0, 4), 4, 4), "out": Slab("out", -1, (0, 2), (0, 2), 2, 2),
             "ghost": Slab("nowhere", -1, (0, 4), (0, 4), 4, 4), "wide": Slab("out", -1, (0, 2), (0, 2), 3, 3)}
    acc, missing, info = slab_moments(m, m, torch.randn(8, 4), slabs)
    assert sorted(missing) == ["fc", "ghost", "wide"]
    assert list(acc) == ["out"] and info["samples"] == 8
    assert torch.allclose(acc["out"].corr().diagonal().double(), torch.ones(2, dtype=torch.float64))


# ------------------------------------------------------------------ YAML / CLI
T = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    from weightspace.core import permutation_spec
    from weightspace.symmetry import apply_permutation, random_permutation

    root = tmp_path_factory.mktemp("hf_act")
    cfg = T.GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2, bos_token_id=0,
                       eos_token_id=0)
    torch.manual_seed(0)
    a = T.GPT2LMHeadModel(cfg).eval()
    a.save_pretrained(root / "a")
    spec = permutation_spec(a, torch.randint(0, 50, (1, 8)))
    c = T.GPT2LMHeadModel(cfg).eval()
    c.load_state_dict(apply_permutation(a.state_dict(), spec, random_permutation(spec, seed=3)))
    c.save_pretrained(root / "a_perm")
    rng = np.random.default_rng(0)
    # token ids; y is required by the data-file format but unused by activation matching of an LM
    np.savez(root / "tokens.npz", x=rng.integers(0, 50, (16, 8)), y=np.zeros(16, dtype=np.int64))
    return root, a


def _merge(root, tmp_path, *flags, **top):
    from weightspace.cli.app import app

    cfg = {"method": "activation_matching", "data": {"path": str(root / "tokens.npz")},
           "models": [{"model": {"hf": str(root / "a")}}, {"model": {"hf": str(root / "a_perm")}}], **top}
    p = tmp_path / "merge.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return CliRunner().invoke(app, ["merge", str(p), str(tmp_path / "out"), *flags])


@pytest.mark.parametrize("flags", [(), ("--in-memory",)])
def test_yaml_activation_matching_of_hf_dirs_undoes_the_planted_permutation(hf_dirs, tmp_path, flags):
    """Out of core (the default: one model mapped at a time) and in memory."""
    root, a = hf_dirs
    res = _merge(root, tmp_path, *flags, options={"batch_size": 4, "max_bytes": 4096})
    assert res.exit_code == 0, res.output
    if flags:
        assert "eval       skipped" in res.output
    else:
        assert "out of core: activation_matching then linear" in res.output
    m = T.GPT2LMHeadModel.from_pretrained(str(tmp_path / "out"), local_files_only=True)
    for k, v in a.state_dict().items():
        assert torch.allclose(m.state_dict()[k], v, atol=1e-5), k


@pytest.mark.parametrize("top, field", [
    ({"options": {"max_bytes": 0}}, "options.max_bytes"),
    ({"options": {"dtype": "float32"}}, "options.dtype"),
    ({"barrier": True}, "barrier"),
    ({"data": None}, "data"),
])
def test_yaml_bad_inputs_get_one_line_errors(hf_dirs, tmp_path, top, field):
    root, _ = hf_dirs
    res = _merge(root, tmp_path, **top)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.startswith("error")]
    assert len(lines) == 1 and field in lines[0], res.output
    assert "Traceback" not in res.output


def test_consume_gets_each_pass_once_and_nothing_is_kept():
    spec, model, permuted, _ = _pair("nanogpt")
    from weightspace.merge.matching import _activation_slabs

    slabs = _activation_slabs(model, spec, matching_slabs(spec))
    seen = []
    acc, missing, info = slab_moments(model, permuted, make_inputs("nanogpt", 8), slabs, batch_size=4,
                                      max_bytes=20_000, dtype=torch.float32, consume=lambda cur: seen.append(set(cur)))
    assert acc == {} and missing == [] and info["passes"] == len(seen) > 1
    assert set().union(*seen) == set(slabs) and sum(map(len, seen)) == len(slabs)
