"""CLI smoke tests: every subcommand has --help with an example, and bad
arguments give a clear message and a non-zero exit."""

import json

import pytest
import torch
from typer.testing import CliRunner

import zoo
from weightspace.cli import app
from weightspace.io import save_state_dict

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize(
    "cmd", [["models"], ["graph"], ["quickstart"], ["similarity"], ["merge"], ["zoo", "build"], ["predict", "fit"]]
)
def test_help_has_an_example(cmd):
    res = _run(*cmd, "--help")
    assert res.exit_code == 0
    assert "Example" in res.output or "example" in res.output


def test_graph_prints_groups_and_writes_json(tmp_path):
    res = _run("graph", "resnet20", "-a", "width=2", "--json", str(tmp_path / "spec.json"))
    assert res.exit_code == 0, res.output
    assert "12 neuron groups" in res.output and "layer1.0.conv1" in res.output
    spec = json.loads((tmp_path / "spec.json").read_text())
    assert spec["spec"]["summary"]["neuron_groups"] == 12
    assert any(g["size"] == 32 for g in spec["spec"]["groups"])
    assert spec["graph"]["nodes"] > 0


def test_graph_with_weights_file(tmp_path):
    path = save_state_dict(zoo.create_model("cnn_small", seed=3).state_dict(), tmp_path / "w.safetensors")
    res = _run("graph", "cnn_small", "--weights", str(path), "--no-groups")
    assert res.exit_code == 0, res.output
    assert "w.safetensors" in res.output


@pytest.mark.parametrize(
    "args,message",
    [
        (["graph", "no_such_arch"], "unknown architecture 'no_such_arch'"),
        (["graph", "mlp", "-a", "width"], "key=value"),
        (["graph", "mlp", "-a", "wdith=3"], "unknown argument"),
        (["graph", "mlp", "--weights", "/nonexistent.safetensors"], "no weights file"),
    ],
)
def test_graph_bad_arguments(args, message):
    res = _run(*args)
    assert res.exit_code != 0
    assert message in res.output


def test_graph_mismatched_weights(tmp_path):
    path = save_state_dict(zoo.create_model("mlp", seed=0, hidden=[8]).state_dict(), tmp_path / "m.safetensors")
    res = _run("graph", "mlp", "--weights", str(path))
    assert res.exit_code != 0
    assert "does not match the architecture" in res.output


def test_graph_nan_weights(tmp_path):
    sd = zoo.create_model("mlp", seed=0).state_dict()
    sd["layers.0.bias"] = torch.full_like(sd["layers.0.bias"], float("nan"))
    path = save_state_dict(sd, tmp_path / "nan.safetensors")
    res = _run("graph", "mlp", "--weights", str(path))
    assert res.exit_code != 0 and "NaN" in res.output


@pytest.mark.parametrize(
    "args",
    [
        ["similarity", "no_such_arch", "mlp"],
        ["merge", "/nonexistent.yaml", "/tmp/out.safetensors"],
        ["zoo", "info", "/nonexistent-zoo"],
        ["zoo", "build", "no_such_recipe", "/tmp/nowhere-zoo"],
        ["predict", "fit", "/nonexistent-zoo"],
    ],
)
def test_subcommands_reject_bad_arguments(args):
    res = _run(*args)
    assert res.exit_code != 0
    assert "Traceback" not in res.output
    text = res.output.lower()
    assert any(w in text for w in ("error", "unknown", "no such", "not found", "does not exist", "missing"))
