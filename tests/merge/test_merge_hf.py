"""`weightspace merge` of local Hugging Face directories (tiny GPT-2 written
with save_pretrained, offline) and of a `factory:` model; the merged
directory loads with from_pretrained."""

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

T = pytest.importorskip("transformers")

from weightspace.cli.app import app  # noqa: E402
from weightspace.core import permutation_spec  # noqa: E402
from weightspace.io import read_safetensors_metadata  # noqa: E402
from weightspace.symmetry.permutation import apply_permutation, random_permutation  # noqa: E402


def _cfg():
    return T.GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2, bos_token_id=0,
                        eos_token_id=0)


def _gpt2(seed):
    torch.manual_seed(seed)
    return T.GPT2LMHeadModel(_cfg()).eval()


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    a, b = _gpt2(0), _gpt2(1)
    a.save_pretrained(root / "a")
    b.save_pretrained(root / "b", max_shard_size="4KB")  # sharded, with an index
    # a with a planted permutation of every group: the same function
    x = torch.randint(0, 50, (1, 8))
    spec = permutation_spec(a, x)
    sd = apply_permutation(a.state_dict(), spec, random_permutation(spec, seed=3))
    c = _gpt2(0)
    c.load_state_dict(sd)
    c.save_pretrained(root / "a_perm")
    return root, a


def _merge(tmp_path, cfg, out_name="out"):
    p = tmp_path / "merge.yaml"
    p.write_text(yaml.safe_dump(cfg))
    out = tmp_path / out_name
    res = CliRunner().invoke(app, ["merge", str(p), str(out)])
    return res, out


def _load(out):
    m = T.GPT2LMHeadModel.from_pretrained(str(out), local_files_only=True).eval()
    return m


def test_average_of_two_hf_dirs_loads_with_from_pretrained(dirs, tmp_path):
    root, a = dirs
    res, out = _merge(tmp_path, {"method": "average",
                                 "models": [{"model": {"hf": str(root / "a")}}, {"model": {"hf": str(root / "b")}}]})
    assert res.exit_code == 0, res.output
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    meta = read_safetensors_metadata(out / "model.safetensors")
    assert meta["method"] == "average" and meta["format"] == "pt" and "options" in meta
    assert json.loads((out / "weightspace_merge.json").read_text())["method"] == "average"
    m = _load(out)
    b = _gpt2(1)
    want = (a.state_dict()["transformer.h.0.mlp.c_fc.weight"] + b.state_dict()["transformer.h.0.mlp.c_fc.weight"]) / 2
    assert torch.allclose(m.state_dict()["transformer.h.0.mlp.c_fc.weight"], want, atol=1e-6)
    with torch.no_grad():
        logits = m(torch.randint(0, 50, (1, 8))).logits
    assert torch.isfinite(logits).all()


def test_sharded_reference_writes_shards_and_index(dirs, tmp_path):
    root, _ = dirs
    res, out = _merge(tmp_path, {"method": "average", "reference": 0,
                                 "models": [{"model": {"hf": str(root / "b")}}, {"model": {"hf": str(root / "a")}}]})
    assert res.exit_code == 0, res.output
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert all((out / f).is_file() for f in index["weight_map"].values())
    with torch.no_grad():
        assert torch.isfinite(_load(out)(torch.randint(0, 50, (1, 8))).logits).all()


def test_weight_matching_undoes_a_planted_permutation(dirs, tmp_path):
    root, a = dirs
    # relative paths resolve against the config file's folder
    (tmp_path / "models").symlink_to(root, target_is_directory=True)
    res, out = _merge(tmp_path, {"method": "weight_matching", "options": {"seed": 0},
                                 "models": [{"model": {"hf": "models/a"}}, {"model": "hf:models/a_perm"}]})
    assert res.exit_code == 0, res.output
    m = _load(out)
    for k, v in a.state_dict().items():
        assert torch.allclose(m.state_dict()[k], v, atol=1e-5), k


def test_factory_model_end_to_end(tmp_path, monkeypatch):
    from weightspace.io import save_state_dict

    pkg = tmp_path / "mymodels_ws_test.py"
    pkg.write_text(
        "import torch\n"
        "from torch import nn\n"
        "def make(width=8):\n"
        "    m = nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 3))\n"
        "    return m, torch.randn(2, 4)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    importlib.invalidate_caches()
    mods = importlib.import_module("mymodels_ws_test")
    sds = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        sd = mods.make(width=8)[0].state_dict()
        save_state_dict(sd, tmp_path / f"m{seed}.safetensors")
        sds.append(sd)
    res, out = _merge(tmp_path, {"method": "average", "model": {"factory": "mymodels_ws_test:make",
                                                                "kwargs": {"width": 8}},
                                 "models": ["m0.safetensors", "m1.safetensors"]}, "merged.safetensors")
    assert res.exit_code == 0, res.output
    meta = read_safetensors_metadata(out)
    assert meta["arch"] == "mymodels_ws_test:make" and json.loads(meta["arch_kwargs"]) == {"width": 8}
    from weightspace.io import load_state_dict

    got = load_state_dict(out)
    assert torch.allclose(got["0.weight"], (sds[0]["0.weight"] + sds[1]["0.weight"]) / 2)


@pytest.mark.parametrize("model, field", [
    ({"hf": "nowhere"}, "models[0].model.hf"),
    ({"factory": "no_such_pkg_ws.mod:fn"}, "models[0].model.factory"),
    ({"factory": "weightspace.arch:no_such_factory"}, "models[0].model.factory"),
    ({"factory": "not a factory"}, "models[0].model.factory"),
    ({"hf": "x", "factory": "a.b:c"}, "models[0].model"),
    ({"hf": "x", "kwarg": 1}, "models[0].model.kwarg"),
    ({"arch": "no_such_arch_xyz"}, "models[0].arch"),
])
def test_bad_model_entries_are_one_line_exit_2(tmp_path, model, field):
    entry = {"model": model, "path": "w.safetensors"} if "factory" in model or "arch" in model else {"model": model}
    res, _ = _merge(tmp_path, {"method": "average", "models": [entry]}, "o.safetensors")
    assert res.exit_code == 2, res.output
    assert "error:" in res.output and field in res.output
    assert "Traceback" not in res.output and "internal error" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_missing_shard_is_one_line(dirs, tmp_path):
    import shutil

    root, _ = dirs
    shutil.copytree(root / "b", tmp_path / "b")
    index = json.loads((tmp_path / "b" / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[0]
    (tmp_path / "b" / shard).unlink()
    res, _ = _merge(tmp_path, {"method": "average", "models": [{"model": {"hf": "b"}}, {"model": {"hf": "b"}}]})
    assert res.exit_code == 2, res.output
    assert shard in res.output and "index.json" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["merge", str(tmp_path / "merge.yaml"), str(tmp_path / "out2"), "--in-memory"])
    assert res.exit_code == 2 and shard in res.output and "weight_map" in res.output, res.output


def test_hf_dir_with_path_is_refused(dirs, tmp_path):
    root, _ = dirs
    res, _ = _merge(tmp_path, {"method": "average", "models": [{"model": {"hf": str(root / "a")}, "path": "w.st"}]})
    assert res.exit_code == 2 and "models[0].path" in res.output and "Traceback" not in res.output


def test_hf_merge_refuses_a_file_out(dirs, tmp_path):
    root, _ = dirs
    (tmp_path / "out").write_text("mine")
    res, out = _merge(tmp_path, {"method": "average", "models": [{"model": {"hf": str(root / "a")}}]})
    assert res.exit_code == 2 and "error:" in res.output and str(out) in res.output
    assert out.read_text() == "mine"


def test_vit_with_renamed_stored_tensors_round_trips(tmp_path):
    # transformers 5 renames ViT's stored attention tensors on load; the merged
    # directory must store the original names again
    cfg = T.ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=16, num_hidden_layers=1,
                      num_attention_heads=2, intermediate_size=32, num_labels=3)
    ms = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        ms.append(T.ViTForImageClassification(cfg).eval())
        ms[-1].save_pretrained(tmp_path / f"v{seed}")
    res, out = _merge(tmp_path, {"method": "average", "models": [{"model": {"hf": "v0"}}, {"model": {"hf": "v1"}}]})
    assert res.exit_code == 0, res.output
    from safetensors.torch import load_file

    assert set(load_file(str(out / "model.safetensors"))) == set(load_file(str(tmp_path / "v0" / "model.safetensors")))
    m = T.ViTForImageClassification.from_pretrained(str(out), local_files_only=True).eval()
    k = next(k for k in m.state_dict() if k.endswith("q_proj.weight"))
    want = (ms[0].state_dict()[k] + ms[1].state_dict()[k]) / 2
    assert torch.allclose(m.state_dict()[k], want, atol=1e-6)


@pytest.mark.parametrize("method, extra", [
    ("task_arithmetic", {"base": {"model": {"hf": "a"}}}),
    ("merge_many", {}),
])
def test_other_data_free_methods_on_hf_dirs(dirs, tmp_path, method, extra):
    root, _ = dirs
    for n in ("a", "b"):
        (tmp_path / n).symlink_to(root / n, target_is_directory=True)
    res, out = _merge(tmp_path, {"method": method, **extra,
                                 "models": [{"model": {"hf": "a"}}, {"model": {"hf": "b"}}]})
    assert res.exit_code == 0, res.output
    assert read_safetensors_metadata(out / "model.safetensors")["method"] == method
    with torch.no_grad():
        assert torch.isfinite(_load(out)(torch.randint(0, 50, (1, 8))).logits).all()


def test_different_hf_configs_name_the_field(dirs, tmp_path):
    root, _ = dirs
    cfg = _cfg()
    cfg.n_embd = 8
    torch.manual_seed(0)
    T.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "narrow")
    res, _ = _merge(tmp_path, {"method": "average",
                               "models": [{"model": {"hf": str(root / "a")}}, {"model": {"hf": "narrow"}}]})
    assert res.exit_code == 2, res.output
    assert "n_embd" in res.output and "Traceback" not in res.output and "internal error" not in res.output


def test_model_arch_form_equals_the_arch_keys(tmp_path):
    from weightspace.arch import create_model
    from weightspace.io import load_state_dict, save_state_dict

    for seed in (0, 1):
        save_state_dict(create_model("mlp", seed=seed, hidden=[8]).state_dict(), tmp_path / f"m{seed}.safetensors")
    outs = []
    for cfg in ({"arch": "mlp", "arch_kwargs": {"hidden": [8]}},
                {"model": {"arch": "mlp", "arch_kwargs": {"hidden": [8]}}}):
        res, out = _merge(tmp_path, {"method": "average", **cfg, "models": ["m0.safetensors", "m1.safetensors"]},
                          f"o{len(outs)}.safetensors")
        assert res.exit_code == 0, res.output
        outs.append(load_state_dict(out))
    assert outs[0].keys() == outs[1].keys() and all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])


def test_model_and_arch_together_are_refused(tmp_path):
    res, _ = _merge(tmp_path, {"method": "average", "arch": "mlp", "model": {"factory": "a.b:c"},
                               "models": ["m0.safetensors"]}, "o.safetensors")
    assert res.exit_code == 2 and "model" in res.output and "not both" in res.output


# ------------------------------------------------------------ out of core
def _tensors(out):
    from safetensors.torch import load_file

    sd = {}
    for f in sorted(out.glob("*.safetensors")):
        sd.update(load_file(str(f)))
    return sd


@pytest.mark.parametrize("method, extra", [
    ("average", {}),
    ("task_arithmetic", {"base": {"model": {"hf": "a"}}, "options": {"scale": 0.7}}),
    ("ties", {"base": {"model": {"hf": "a"}}, "options": {"density": 0.5, "trim": "per_tensor"}}),
    ("dare", {"base": {"model": {"hf": "a"}}, "options": {"density": 0.5}, "seed": 3}),
    ("breadcrumbs", {"base": {"model": {"hf": "a"}}}),
    ("slerp", {"options": {"t": 0.3}}),
])
def test_streamed_merge_equals_the_in_memory_one(dirs, tmp_path, method, extra):
    root, _ = dirs
    for n in ("a", "b"):
        (tmp_path / n).symlink_to(root / n, target_is_directory=True)
    cfg = {"method": method, **extra, "models": [{"model": {"hf": "b"}, "weight": 0.6}, {"model": {"hf": "a"}}]}
    (tmp_path / "merge.yaml").write_text(yaml.safe_dump(cfg))
    run = lambda out, *flags: CliRunner().invoke(app, ["merge", str(tmp_path / "merge.yaml"), str(tmp_path / out),  # noqa: E731
                                                         *flags])
    streamed, memory = run("streamed"), run("memory", "--in-memory")
    assert streamed.exit_code == 0 and memory.exit_code == 0, streamed.output + memory.output
    assert "out of core" in streamed.output and "out of core" not in memory.output
    got, want = _tensors(tmp_path / "streamed"), _tensors(tmp_path / "memory")
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k
    # sharded like the reference source (b: 4 KB shards, with an index)
    assert (tmp_path / "streamed" / "model.safetensors.index.json").is_file()
    assert json.loads((tmp_path / "streamed" / "weightspace_merge.json").read_text())["out_of_core"] is True
    meta = read_safetensors_metadata(sorted((tmp_path / "streamed").glob("*.safetensors"))[0])
    assert meta["method"] == method and meta["format"] == "pt"
    with torch.no_grad():
        assert torch.isfinite(_load(tmp_path / "streamed")(torch.randint(0, 50, (1, 8))).logits).all()


def test_dry_run_prints_the_plan_and_writes_nothing(dirs, tmp_path):
    root, _ = dirs
    (tmp_path / "merge.yaml").write_text(yaml.safe_dump({
        "method": "ties", "base": {"model": {"hf": str(root / "a")}}, "options": {"trim": "per_tensor"},
        "models": [{"model": {"hf": str(root / "b")}}]}))
    res = CliRunner().invoke(app, ["merge", str(tmp_path / "merge.yaml"), str(tmp_path / "out"), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "transformer.h.0.mlp.c_fc.weight" in res.output and "(16, 64)" in res.output
    assert "estimated peak memory" in res.output and "nothing written" in res.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("cfg, flag, words", [
    ({"method": "merge_many"}, "--stream", "merge_many needs whole models"),
    ({"method": "merge_many"}, "--dry-run", "--dry-run shows the out-of-core plan"),
    ({"method": "ties", "base": {"model": {"hf": "a"}}}, "--stream", "trim: per_tensor"),
])
def test_configs_that_cannot_stream_are_one_line_exit_2(dirs, tmp_path, cfg, flag, words):
    root, _ = dirs
    (tmp_path / "a").symlink_to(root / "a", target_is_directory=True)
    (tmp_path / "merge.yaml").write_text(yaml.safe_dump({**cfg, "models": [{"model": {"hf": "a"}}]}))
    res = CliRunner().invoke(app, ["merge", str(tmp_path / "merge.yaml"), str(tmp_path / "out"), flag])
    assert res.exit_code == 2, res.output
    assert words in res.output and "merge.yaml" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
