"""`weightspace merge` with `method: weight_matching` on Hugging Face
directories, out of core: matched from the directories, B written permuted
to a temporary directory next to OUT, then averaged tensor by tensor. Equal
to the in-memory path; plan with --dry-run; configs that cannot stream fall
back to memory; bad input is one line, exit 2 (tiny GPT-2s written with
save_pretrained, offline)."""

import json
import shutil

import pytest
import torch
import yaml
from typer.testing import CliRunner

T = pytest.importorskip("transformers")

from weightspace.cli.app import app  # noqa: E402
from weightspace.core import permutation_spec  # noqa: E402
from weightspace.merge import weight_matching  # noqa: E402


def _cfg(**kw):
    return T.GPT2Config(**{**dict(vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2, bos_token_id=0,
                                  eos_token_id=0), **kw})


def _gpt2(seed, **kw):
    torch.manual_seed(seed)
    return T.GPT2LMHeadModel(_cfg(**kw)).eval()


def _save_pair(root):
    """Two tiny GPT-2s: ``root/a`` in one file, ``root/b`` in 8 KB shards with an index."""
    models = [_gpt2(0), _gpt2(1)]
    for name, m, shard in zip("ab", models, ({}, {"max_shard_size": "8KB"})):
        m.save_pretrained(root / name, **shard)
    return models


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("rebasin_cli")
    return (root, *_save_pair(root))


def _tensors(out):
    from safetensors.torch import load_file

    sd = {}
    for f in sorted(out.glob("*.safetensors")):
        sd.update(load_file(str(f)))
    return sd


def _write(tmp_path, cfg):
    (tmp_path / "merge.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "merge.yaml"


def _run(config, out, *flags):
    return CliRunner().invoke(app, ["merge", str(config), str(out), *flags])


def _link(root, tmp_path, *names):
    for n in names:
        (tmp_path / n).symlink_to(root / n, target_is_directory=True)


def _streamed_and_in_memory(config, tmp_path, method):
    """``config`` merged out of core (OUT ``streamed``) and ``--in-memory``
    (``memory``): both succeed and write the same tensors, bit for bit (the
    same permutation and the same averaging function). Returns both results."""
    streamed, memory = _run(config, tmp_path / "streamed"), _run(config, tmp_path / "memory", "--in-memory")
    assert streamed.exit_code == 0 and memory.exit_code == 0, streamed.output + memory.output
    assert f"out of core: {method} then linear" in streamed.output and "out of core" not in memory.output
    got, want = _tensors(tmp_path / "streamed"), _tensors(tmp_path / "memory")
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k
    return streamed, memory


def _matching_record(out):
    """The one matching record of a two-model out-of-core merge into ``out``:
    models[0] matched to the reference models[1]."""
    rec = json.loads((out / "weightspace_merge.json").read_text())
    assert rec["out_of_core"] is True and len(rec["matching"]) == 1
    m = rec["matching"][0]
    assert m["model"] == "models[0]" and m["reference"] == "models[1]"
    return m


def _one_line_exit_2(res):
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error:") and len(res.output.strip().splitlines()) == 1, res.output
    assert "Traceback" not in res.output and "internal error" not in res.output


def test_streamed_rebasin_equals_the_in_memory_one(dirs, tmp_path):
    root, a, b = dirs
    _link(root, tmp_path, "a", "b")
    # reference 1 (a), b weighted 0.6: b is matched to a and permuted
    config = _write(tmp_path, {"method": "weight_matching", "reference": 1, "options": {"max_sweeps": 50},
                               "seed": 2, "models": [{"model": {"hf": "b"}, "weight": 0.6}, {"model": {"hf": "a"}}]})
    (tmp_path / "mine.txt").write_text("the user's")
    _streamed_and_in_memory(config, tmp_path, "weight_matching")
    # the matching is the in-memory one, on the model's state_dicts
    spec = permutation_spec(a, torch.zeros(1, 8, dtype=torch.long))
    direct = weight_matching(a.state_dict(), b.state_dict(), spec, seed=2, max_sweeps=50)
    assert any(not torch.equal(p, torch.arange(len(p))) for p in direct.perm.values())
    m = _matching_record(tmp_path / "streamed")
    assert m["objective"] == pytest.approx(direct.objective, rel=1e-12)
    assert m["objective_per_sweep"] == pytest.approx([h["objective"] for h in direct.info["history"]], rel=1e-12)
    assert m["sweeps"] == direct.sweeps and m["stop"] == direct.info["stop"]
    # sharded like the reference (a: one file); loads with from_pretrained
    assert (tmp_path / "streamed" / "model.safetensors").is_file()
    merged = T.GPT2LMHeadModel.from_pretrained(str(tmp_path / "streamed"), local_files_only=True).eval()
    with torch.no_grad():
        assert torch.isfinite(merged(torch.randint(0, 50, (1, 8))).logits).all()
    # the temporary directory is gone; the user's files stay
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "memory", "merge.yaml", "mine.txt", "streamed"]


def test_sharded_reference_and_three_models(dirs, tmp_path):
    root, _, _ = dirs
    _gpt2(5).save_pretrained(tmp_path / "c")
    _link(root, tmp_path, "a", "b")
    config = _write(tmp_path, {"method": "weight_matching",
                               "models": [{"model": {"hf": "b"}}, {"model": {"hf": "a"}}, {"model": {"hf": "c"}}]})
    _streamed_and_in_memory(config, tmp_path, "weight_matching")
    assert (tmp_path / "streamed" / "model.safetensors.index.json").is_file()  # b's shards
    rec = json.loads((tmp_path / "streamed" / "weightspace_merge.json").read_text())
    assert [m["model"] for m in rec["matching"]] == ["models[1]", "models[2]"]


def test_dry_run_prints_groups_and_memory_and_writes_nothing(dirs, tmp_path):
    root, _, _ = dirs
    _link(root, tmp_path, "a", "b")
    config = _write(tmp_path, {"method": "weight_matching", "models": [{"model": {"hf": "a"}}, {"model": {"hf": "b"}}]})
    res = _run(config, tmp_path / "out", "--dry-run")
    assert res.exit_code == 0, res.output
    # the residual stream (16), each MLP (64) and each layer's heads (2)
    assert "transformer.wte" in res.output and "transformer.h.1.mlp.c_fc" in res.output
    assert "transformer.h.0.attn.c_attn.heads" in res.output
    assert "matching   5 groups, 148 neurons/heads" in res.output
    assert "estimated peak memory" in res.output and "nothing written" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "merge.yaml"]


def test_renamed_stored_tensors_fall_back_to_memory(tmp_path):
    # transformers 5 stores ViT's attention under other names than the module's:
    # the directory permutation cannot name them, so the merge runs in memory
    cfg = T.ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=16, num_hidden_layers=1,
                      num_attention_heads=2, intermediate_size=32, num_labels=3)
    for seed in (0, 1):
        torch.manual_seed(seed)
        T.ViTForImageClassification(cfg).eval().save_pretrained(tmp_path / f"v{seed}")
    config = _write(tmp_path, {"method": "weight_matching",
                               "models": [{"model": {"hf": "v0"}}, {"model": {"hf": "v1"}}]})
    res = _run(config, tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert "out of core" not in res.output
    T.ViTForImageClassification.from_pretrained(str(tmp_path / "out"), local_files_only=True)
    res = _run(config, tmp_path / "out2", "--stream")
    _one_line_exit_2(res)
    assert "stores tensors under other names" in res.output and "merge.yaml" in res.output
    assert not (tmp_path / "out2").exists()


def test_barrier_cannot_stream(dirs, tmp_path):
    root, _, _ = dirs
    _link(root, tmp_path, "a", "b")
    config = _write(tmp_path, {"method": "weight_matching", "barrier": True,
                               "models": [{"model": {"hf": "a"}}, {"model": {"hf": "b"}}]})
    res = _run(config, tmp_path / "out", "--stream")
    _one_line_exit_2(res)
    assert "'barrier' runs the models" in res.output


@pytest.mark.parametrize("extra, words", [
    ({}, None),
    ({"barrier": True}, "'barrier' runs the models"),
    ({"repair": "reset_bn"}, "'repair' runs the models"),
])
def test_streaming_blocker_of_weight_matching(dirs, tmp_path, extra, words):
    from weightspace.merge.config import load_config, streaming_blocker

    root, _, _ = dirs
    _link(root, tmp_path, "a", "b")
    config = _write(tmp_path, {"method": "weight_matching", **extra,
                               "models": [{"model": {"hf": "a"}}, {"model": {"hf": "b"}}]})
    why = streaming_blocker(load_config(config))
    assert why is None if words is None else words in why


def test_different_architectures_are_one_line(dirs, tmp_path):
    root, _, _ = dirs
    _gpt2(0, n_embd=8).save_pretrained(tmp_path / "narrow")
    _link(root, tmp_path, "a")
    config = _write(tmp_path, {"method": "weight_matching",
                               "models": [{"model": {"hf": "a"}}, {"model": {"hf": "narrow"}}]})
    res = _run(config, tmp_path / "out")
    _one_line_exit_2(res)
    assert "n_embd" in res.output
    assert not (tmp_path / "out").exists()


def test_missing_shard_is_one_line(dirs, tmp_path):
    root, _, _ = dirs
    shutil.copytree(root / "b", tmp_path / "b")
    index = json.loads((tmp_path / "b" / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[-1]
    (tmp_path / "b" / shard).unlink()
    _link(root, tmp_path, "a")
    config = _write(tmp_path, {"method": "weight_matching", "models": [{"model": {"hf": "a"}}, {"model": {"hf": "b"}}]})
    res = _run(config, tmp_path / "out")
    _one_line_exit_2(res)
    assert shard in res.output and "models[1]" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "merge.yaml"]


def test_untraceable_model_is_one_line(dirs, tmp_path, monkeypatch):
    import weightspace.merge.config as config_mod

    def fail(*args, **kwargs):
        raise RuntimeError("data-dependent control flow\n  at line 3")

    monkeypatch.setattr(config_mod, "permutation_spec", fail)
    root, _, _ = dirs
    _link(root, tmp_path, "a", "b")
    config = _write(tmp_path, {"method": "weight_matching", "models": [{"model": {"hf": "a"}}, {"model": {"hf": "b"}}]})
    res = _run(config, tmp_path / "out")
    _one_line_exit_2(res)
    assert "cannot trace GPT2LMHeadModel" in res.output and "data-dependent control flow" in res.output
    assert "models[0].model.hf" in res.output or "model.hf" in res.output


def test_failed_matching_removes_the_temporary_directory(dirs, tmp_path):
    root, _, _ = dirs
    m = _gpt2(1)
    with torch.no_grad():
        m.transformer.h[1].mlp.c_fc.weight[0, 0] = float("nan")
    m.save_pretrained(tmp_path / "nan")
    _link(root, tmp_path, "a")
    (tmp_path / "mine.txt").write_text("the user's")
    config = _write(tmp_path, {"method": "weight_matching",
                               "models": [{"model": {"hf": "a"}}, {"model": {"hf": "nan"}}]})
    res = _run(config, tmp_path / "out")
    _one_line_exit_2(res)
    assert "c_fc.weight" in res.output and "matching models[1] to models[0]" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "merge.yaml", "mine.txt", "nan"]
