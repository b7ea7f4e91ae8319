"""`weightspace similarity`: outputs, weights loading, errors."""

import json

import pytest
from typer.testing import CliRunner

import zoo
from weightspace.io import save_state_dict


@pytest.fixture(scope="module")
def app():
    # the real CLI: errors reach its error boundary (one line, exit code 2)
    from weightspace.cli import app as ws_app

    return ws_app


def run(app, *args):
    return CliRunner().invoke(app, ["similarity", *map(str, args)], catch_exceptions=False)


def test_random_init_models_write_heatmap_and_json(app, tmp_path):
    r = run(app, "mlp", "mlp", "--data", "digits", "--max-samples", "300", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    for f in ("cka_heatmap.png", "cka_heatmap.svg", "results.json"):
        assert (tmp_path / f).stat().st_size > 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["n_samples"] == 300 and res["model_a"]["seed"] == 0 and res["model_b"]["seed"] == 1
    vals = res["cka"]["values"]
    assert len(vals) == len(res["cka"]["layers_a"]) == 5
    assert all(0.0 <= v <= 1.0 for row in vals for v in row)
    assert set(res["neuron_matching"]) == set(res["cka_same_name"])
    assert "mean same-name CKA" in r.output


def test_weights_file_same_model_gives_unit_diagonal(app, tmp_path):
    m = zoo.create_model("cnn_small", seed=3)
    path = save_state_dict(m.state_dict(), tmp_path / "w.safetensors")
    r = run(app, f"cnn_small:{path}", "cnn_small", "--seed-b", "3", "--max-samples", "200",
            "--reduction", "pool_spatial", "--out", tmp_path / "o", "--no-match")
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["model_a"]["weights"] == str(path)
    assert all(v == pytest.approx(1.0, abs=1e-9) for v in res["cka_same_name"].values())
    assert res["neuron_matching"] == {}


def test_minibatch_layers_and_arch_args(app, tmp_path):
    r = run(app, "mlp", "mlp", "--method", "minibatch", "--batch-size", "100", "--max-samples", "400",
            "--layers-a", "layers.1,layers.3", "--layers-b", "layers.1",
            "--arg-a", "hidden=[32,32]", "--arg-b", "hidden=[48,48]", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["cka"]["method"] == "minibatch" and len(res["cka"]["values"]) == 2
    assert res["model_a"]["kwargs"] == {"hidden": [32, 32]}


@pytest.mark.parametrize(
    "args,msg",
    [
        (["nosuch", "mlp"], "unknown architecture"),
        (["mlp:/nonexistent.safetensors", "mlp"], "no weights file"),
        (["mlp", "mlp", "--data", "cifar"], "unknown data"),
        (["mlp", "mlp", "--layers-a", "layers.9"], "no capturable layer"),
        (["mlp", "mlp", "--arg-a", "hidden"], "key=value"),
    ],
)
def test_errors(app, tmp_path, args, msg):
    r = run(app, *args, "--out", tmp_path)
    assert r.exit_code == 2
    assert msg in r.stderr and r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1


def test_weights_that_do_not_fit(app, tmp_path):
    path = save_state_dict(zoo.create_model("mlp", seed=0, hidden=[8]).state_dict(), tmp_path / "w.safetensors")
    r = run(app, f"mlp:{path}", "mlp", "--out", tmp_path)
    assert r.exit_code == 2 and "do not fit" in r.stderr and "w.safetensors" in r.stderr
