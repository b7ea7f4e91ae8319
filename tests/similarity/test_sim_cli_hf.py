"""`weightspace similarity hf:DIR hf:DIR`: two tiny GPT-2 directories written
with save_pretrained (offline); activations are captured through forward
hooks because torch.fx cannot trace them."""

import json

import pytest
import torch
from typer.testing import CliRunner

T = pytest.importorskip("transformers")

from weightspace.cli import app  # noqa: E402

LAYERS = "transformer.h.0.mlp.c_fc,transformer.h.1,lm_head"


@pytest.fixture(scope="module")
def gpt2_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_sim")
    cfg = T.GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=4, bos_token_id=0,
                       eos_token_id=0)
    for seed in (0, 1):
        torch.manual_seed(seed)
        T.GPT2LMHeadModel(cfg).save_pretrained(root / f"g{seed}")
    return root / "g0", root / "g1"


def _run(*args):
    return CliRunner().invoke(app, ["similarity", *map(str, args)])


def test_two_hf_directories(gpt2_dirs, tmp_path):
    a, b = gpt2_dirs
    out = tmp_path / "sim"
    r = _run(f"hf:{a}", f"hf:{b}", "--data", "random", "--max-samples", "24", "--reduction", "pool_tokens",
             "--layers-a", LAYERS, "--layers-b", LAYERS, "--out", out)
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    assert res["capture"] == "auto" and res["n_samples"] == 24
    assert res["cka"]["layers_a"] == LAYERS.split(",") == res["cka"]["layers_b"]
    assert set(res["cka_same_name"]) == set(LAYERS.split(","))
    assert all(0.0 <= v < 0.999 for v in res["cka_same_name"].values())  # two different networks
    assert (out / "cka_heatmap.png").stat().st_size > 0
    assert "transformer.h.0.mlp.c_fc" in r.output


def test_hf_directory_with_itself_has_unit_diagonal(gpt2_dirs, tmp_path):
    a, _ = gpt2_dirs
    out = tmp_path / "self"
    r = _run(f"hf:{a}", f"hf:{a}", "--data", "random", "--max-samples", "16", "--reduction", "pool_tokens",
             "--layers-a", LAYERS, "--layers-b", LAYERS, "--no-match", "--out", out, "--capture", "hooks")
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    assert res["capture"] == "hooks"
    assert all(v == pytest.approx(1.0, abs=1e-6) for v in res["cka_same_name"].values())


def test_hf_directory_default_layers_are_module_outputs(gpt2_dirs, tmp_path):
    a, b = gpt2_dirs
    out = tmp_path / "all"
    r = _run(f"hf:{a}", f"hf:{b}", "--data", "random", "--max-samples", "8", "--reduction", "pool_tokens",
             "--method", "minibatch", "--batch-size", "8", "--no-match", "--out", out)
    assert r.exit_code == 0, r.output
    layers = json.loads((out / "results.json").read_text())["cka"]["layers_a"]
    assert "transformer.h.0.mlp.c_fc" in layers and layers[-1] == "lm_head"
    assert "transformer.wpe" not in layers  # (1, T, D): not batch-first


@pytest.mark.parametrize("args, needle", [
    (["--capture", "fx"], "torch.fx could not trace GPT2LMHeadModel"),
    (["--capture", "jit"], "--capture"),
    (["--layers-a", "transformer.h.0.mlp.cfc"], "transformer.h.0.mlp.c_fc"),  # did you mean
])
def test_hf_errors_are_one_line(gpt2_dirs, tmp_path, args, needle):
    a, _ = gpt2_dirs
    r = _run(f"hf:{a}", f"hf:{a}", "--data", "random", "--max-samples", "8", "--out", tmp_path / "e", *args)
    assert r.exit_code == 2, r.output
    assert "error:" in r.output and needle in r.output
    assert "Traceback" not in r.output and "internal error" not in r.output
    assert not (tmp_path / "e").exists()
