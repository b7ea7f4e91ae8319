"""``weightspace generate ...`` end to end on tiny settings."""

import json

import pytest
import torch
from typer.testing import CliRunner

import zoo
from weightspace.cli import app
from weightspace.io import load_state_dict

runner = CliRunner()


def run(*args):
    return runner.invoke(app, ["generate", *map(str, args)])


def test_hypernet_train_and_init(tmp_path):
    hn = tmp_path / "hn.safetensors"
    r = run("hypernet-train", hn, "--steps", 1, "--archs-per-step", 1, "--small", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "held-out architectures" in r.output and hn.exists()
    out = tmp_path / "init.safetensors"
    r = run("init", "cnn_small", "-a", "width=6", "-a", "depth=2", "--hypernet", hn, "-o", out)
    assert r.exit_code == 0, r.output
    sd = load_state_dict(out)
    m = zoo.create_model("cnn_small", width=6, depth=2)
    m.load_state_dict(sd)
    r = run("init", "no_such_net", "--hypernet", hn, "-o", out)
    assert r.exit_code == 2 and "unknown architecture 'no_such_net'" in r.output
    r = run("init", "mlp", "-a", "widht=3", "--hypernet", hn, "-o", out)
    assert r.exit_code == 2 and "unknown argument" in r.output


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    recipe = {
        "name": "tiny", "arch": "mlp", "model": {"hidden": [4]},
        "data": {"name": "digits", "split_seed": 0},
        "train": {"epochs": 2, "batch_size": 256, "optimizer": "adam", "lr": 0.01},
        "checkpoints": [0, 1, 2],
        "search": {"method": "grid", "seeds": 2, "space": {}},
    }
    return zoo.build_zoo(recipe, tmp_path_factory.mktemp("z") / "z", workers=1, backend="serial", progress=False).path


def test_flow_train_samples_with_novelty(tmp_path, tiny_zoo):
    flow = tmp_path / "flow.safetensors"
    r = run("flow-train", tiny_zoo, flow, "--steps", 2, "--no-progress")
    assert r.exit_code == 0, r.output
    lo, hi = [float(x) for x in r.output.split(" in [")[1].split("]")[0].split(", ")]
    out = tmp_path / "s"
    r = run("samples", flow, tiny_zoo, "-o", out, "--n", 2, "--condition", (lo + hi) / 2)
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "novelty.json").read_text())
    assert len(rep["rows"]) == 2 and {"distance", "copy", "agreement", "accuracy"} <= set(rep["rows"][0])
    sd = load_state_dict(out / "sample_000.safetensors")
    assert sd["layers.0.weight"].shape == (4, 64)
    r = run("samples", flow, tiny_zoo, "-o", out, "--condition", hi + 0.5)
    assert r.exit_code == 2 and "outside the range seen in training" in r.output


def test_inr_init(tmp_path):
    out = tmp_path / "siren.safetensors"
    r = run("inr-init", out, "--family", "sines", "--count", 2, "--outer-steps", 1, "--inner-steps", 1, "--no-progress")
    assert r.exit_code == 0, r.output
    m = zoo.create_model("siren")
    m.load_state_dict(load_state_dict(out))
    assert torch.isfinite(m(torch.zeros(3, 2))).all()
    r = run("inr-init", out, "--family", "cats", "--count", 2)
    assert r.exit_code == 2 and "unknown signal family" in r.output
