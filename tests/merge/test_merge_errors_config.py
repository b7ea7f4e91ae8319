"""Bad input gives clear errors; the YAML config and `weightspace merge` CLI."""

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

import zoo
from tests.merge.helpers import analysis, digits, init_sd as _sd
from weightspace.errors import NonFiniteWeightsError, StateDictError
from weightspace.io import load_state_dict, save_state_dict
from weightspace.merge import (
    MergeError,
    activation_matching,
    average,
    merge_many,
    ot_fusion,
    weight_matching,
)
from weightspace.merge.config import load_config, run_config


def test_different_architectures_are_rejected_naming_the_keys():
    spec = analysis("mlp").spec
    with pytest.raises(StateDictError, match=r"model 1.*(missing|unexpected) keys"):
        weight_matching(_sd("mlp", 0), _sd("cnn_small", 0), spec)
    with pytest.raises(StateDictError, match="different keys"):
        average([_sd("mlp", 0), _sd("cnn_small", 0)])
    with pytest.raises(MergeError, match="different tensors"):
        ot_fusion([_sd("mlp", 0), _sd("cnn_small", 0)], [spec, analysis("cnn_small").spec])


def test_mismatched_shapes_are_rejected_naming_the_tensor():
    spec = analysis("mlp").spec
    narrow = _sd("mlp", 1, hidden=(32, 64))
    with pytest.raises(StateDictError, match=r"model 1.*'layers\.0\.weight'.*shape"):
        weight_matching(_sd("mlp", 0), narrow, spec)
    with pytest.raises(StateDictError, match=r"layers\.0\.weight.*ot_fusion"):
        average([_sd("mlp", 0), narrow])


def test_missing_bn_statistics_are_rejected():
    spec = analysis("resnet20").spec
    sd = _sd("resnet20", 1)
    broken = {k: v for k, v in sd.items() if k != "layer2.0.bn1.running_var"}
    with pytest.raises(StateDictError, match=r"layer2\.0\.bn1\.running_var.*BatchNorm running statistics"):
        weight_matching(sd, broken, spec)
    with pytest.raises(StateDictError, match="running statistics"):
        merge_many([sd, sd, broken], spec)


def test_nan_weights_are_rejected_naming_model_and_tensor():
    spec = analysis("cnn_small").spec
    sd = _sd("cnn_small", 1)
    bad = dict(sd)
    bad["features.2.bias"] = sd["features.2.bias"].clone()
    bad["features.2.bias"][3] = float("nan")
    with pytest.raises(NonFiniteWeightsError, match=r"model 1.*features\.2\.bias"):
        weight_matching(sd, bad, spec)
    with pytest.raises(NonFiniteWeightsError, match=r"features\.2\.bias"):
        average([sd, bad])
    with pytest.raises(NonFiniteWeightsError, match=r"model 0.*features\.2\.bias"):
        ot_fusion([bad, sd], spec)


def test_nan_data_is_rejected():
    m = zoo.create_model("mlp", seed=0)
    x = torch.randn(8, 64)
    x[2, 5] = float("nan")
    with pytest.raises(NonFiniteWeightsError, match="data"):
        activation_matching(m, m, x, analysis("mlp").spec)


def test_activation_ground_metric_needs_models_and_data():
    spec = analysis("mlp").spec
    with pytest.raises(MergeError, match="models="):
        ot_fusion([_sd("mlp", 0), _sd("mlp", 1)], spec, ground="activations")


# ------------------------------------------------------------------ config
def _write_models(tmp_path, arch="mlp", seeds=(1, 2), **kw):
    paths = []
    for s in seeds:
        p = tmp_path / f"{arch}{s}.safetensors"
        save_state_dict(_sd(arch, s, **kw), p)
        paths.append(p.name)
    return paths


def _data_file(tmp_path):
    xtr, ytr, xte, yte = digits()
    p = tmp_path / "digits.pt"
    torch.save({"x": xtr[:300], "y": ytr[:300], "x_test": xte[:200], "y_test": yte[:200]}, p)
    return str(p)


def test_config_validation_errors(tmp_path):
    with pytest.raises(MergeError, match=r"\[method\] 'bogus' is not one of 'average'"):
        load_config({"arch": "mlp", "models": ["a.safetensors"], "method": "bogus"})
    with pytest.raises(MergeError, match=r"\[modles\] unknown key; did you mean 'models'"):
        load_config({"arch": "mlp", "models": ["a"], "method": "average", "modles": []})
    with pytest.raises(MergeError, match=r"\[models\[0\]\.arch\] has no 'arch'"):
        load_config({"models": ["a"], "method": "average"})
    with pytest.raises(MergeError, match=r"\[base\] method task_arithmetic needs 'base"):
        load_config({"arch": "mlp", "models": ["a"], "method": "task_arithmetic"})
    cfg = load_config({"arch": "mlp", "models": ["missing.safetensors"], "method": "average"})
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        run_config(cfg)
    paths = _write_models(tmp_path)
    cfg = load_config({"models": [{"path": str(tmp_path / paths[0]), "arch": "mlp"},
                                  {"path": str(tmp_path / "c.safetensors"), "arch": "cnn_small"}],
                       "method": "weight_matching"})
    save_state_dict(_sd("cnn_small", 0), tmp_path / "c.safetensors")
    with pytest.raises(MergeError, match="different architectures"):
        run_config(cfg)
    cfg = load_config({"arch": "mlp", "models": [str(tmp_path / p) for p in paths], "method": "activation_matching"})
    with pytest.raises(MergeError, match="needs 'data'"):
        run_config(cfg)


def test_config_weight_matching_with_repair_and_barrier(tmp_path):
    paths = _write_models(tmp_path)
    cfg_path = tmp_path / "merge.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "arch": "mlp", "models": [{"path": p} for p in paths], "method": "weight_matching",
        "options": {"max_sweeps": 50}, "data": {"path": _data_file(tmp_path)},
        "repair": "repair", "barrier": {"num_lambdas": 5},
    }))
    out = run_config(load_config(cfg_path))
    assert out.path is not None and len(out.path.lambdas) == 5 and out.path.correction == "repair"
    m = zoo.create_model("mlp")
    m.load_state_dict(out.state_dict)
    assert {"model0", "model1", "merged"} <= set(out.summary["eval"])


def test_cli_merge_writes_weights_plot_and_json(tmp_path):
    from weightspace.cli import app
    paths = _write_models(tmp_path, "cnn_small")
    cfg_path = tmp_path / "merge.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "arch": "cnn_small", "models": [{"path": p} for p in paths], "method": "merge_many",
        "data": {"path": _data_file(tmp_path)}, "barrier": {"num_lambdas": 3},
    }))
    out = tmp_path / "merged.safetensors"
    res = CliRunner().invoke(app, ["merge", str(cfg_path), str(out)])
    assert res.exit_code == 0, res.output
    assert "barrier" in res.output and "merged" in res.output
    sd = load_state_dict(out)
    assert set(sd) == set(_sd("cnn_small", 0))
    data = json.loads((tmp_path / "merged.barrier.json").read_text())
    assert len(data["aligned"]["lambdas"]) == 3 and "naive" in data
    assert (tmp_path / "merged.barrier.png").exists() and (tmp_path / "merged.barrier.svg").exists()
    bad = CliRunner().invoke(app, ["merge", str(tmp_path / "nope.yaml"), str(out)])
    assert bad.exit_code == 2 and "no merge config" in bad.output


def test_config_ot_fusion_of_different_widths(tmp_path):
    a = tmp_path / "wide.safetensors"
    b = tmp_path / "narrow.safetensors"
    save_state_dict(_sd("mlp", 1), a)
    save_state_dict(_sd("mlp", 2, hidden=(32, 32)), b)
    cfg = load_config({"arch": "mlp", "models": [{"path": str(a)}, {"path": str(b), "arch_kwargs": {"hidden": [32, 32]}}],
                       "method": "ot_fusion", "reference": 1})
    out = run_config(cfg)
    assert out.arch_kwargs == {"hidden": [32, 32]}
    assert out.state_dict["layers.0.weight"].shape == (32, 64)
    cfg = load_config({"arch": "mlp", "models": [{"path": str(a)}, {"path": str(b), "arch_kwargs": {"hidden": [32, 32]}}],
                       "method": "weight_matching"})
    with pytest.raises(MergeError, match="ot_fusion"):
        run_config(cfg)


def test_iter_batches_stops_after_max_samples_and_cuts_the_last_batch():
    import torch

    from weightspace.merge._common import iter_batches

    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    got = list(iter_batches((x, y), 4, max_samples=7))
    assert [b[0].shape[0] for b in got] == [4, 3]
    assert torch.equal(torch.cat([b[1] for b in got]), y[:7])
    assert [b[0].shape[0] for b in iter_batches(x, 4)] == [4, 4, 2]
    loader = [(x[:5], y[:5]), (x[5:], y[5:])]
    assert [b[0].shape[0] for b in iter_batches(loader, 99, max_samples=6)] == [5, 1]
