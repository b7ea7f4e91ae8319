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
    # catch_exceptions=False: an exception escaping the CLI's error boundary
    # fails the test with its traceback instead of hiding in res.exception
    return runner.invoke(app, list(args), catch_exceptions=False)


def _assert_one_line_error(res, *names):
    """Exit code 2, stderr one line 'error: ...' naming every one of ``names``."""
    assert res.exit_code == 2, (res.exit_code, res.output)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    assert "Traceback" not in res.output and "internal error" not in res.output
    for n in names:
        assert n in lines[0], (n, lines[0])


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
    _assert_one_line_error(_run(*args), message)


def test_graph_mismatched_weights(tmp_path):
    path = save_state_dict(zoo.create_model("mlp", seed=0, hidden=[8]).state_dict(), tmp_path / "m.safetensors")
    res = _run("graph", "mlp", "--weights", str(path))
    _assert_one_line_error(res, "does not match the architecture", "m.safetensors")


def test_graph_nan_weights(tmp_path):
    sd = zoo.create_model("mlp", seed=0).state_dict()
    sd["layers.0.bias"] = torch.full_like(sd["layers.0.bias"], float("nan"))
    path = save_state_dict(sd, tmp_path / "nan.safetensors")
    res = _run("graph", "mlp", "--weights", str(path))
    _assert_one_line_error(res, "NaN", "nan.safetensors")


@pytest.mark.parametrize(
    "args,name",
    [
        (["similarity", "no_such_arch", "mlp"], "no_such_arch"),
        (["merge", "/nonexistent.yaml", "/tmp/out.safetensors"], "/nonexistent.yaml"),
        (["zoo", "info", "/nonexistent-zoo"], "/nonexistent-zoo"),
        (["zoo", "build", "no_such_recipe", "/tmp/nowhere-zoo"], "no_such_recipe"),
        (["predict", "fit", "/nonexistent-zoo"], "/nonexistent-zoo"),
    ],
)
def test_subcommands_reject_bad_arguments(args, name):
    _assert_one_line_error(_run(*args), name)


@pytest.mark.parametrize(
    "args,name",
    [
        (["graph"], "model"),
        (["graph", "mlp", "--bogus"], "--bogus"),
        (["no-such-command"], "no-such-command"),
        (["quickstart", "--seed", "-1"], "--seed"),
        (["similarity", "mlp", "mlp", "--batch-size", "0"], "--batch-size"),
    ],
)
def test_usage_errors_are_one_line(args, name):
    """Click's usage errors (missing argument, unknown option, out of range)
    go through the same one-line error as every other bad input."""
    res = _run(*args)
    _assert_one_line_error(res, name)
    assert "--help" in res.stderr  # says where the usage is


def test_no_arguments_still_shows_help():
    res = _run()
    assert "Usage" in res.output and "graph" in res.output


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception) as e:
        _run("--debug", "graph", "mlp", "--weights", str(tmp_path / "missing.safetensors"))
    assert "missing.safetensors" in str(e.value)
