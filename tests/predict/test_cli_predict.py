"""``weightspace predict fit`` / ``rank`` end to end on the tiny zoo."""

import json

from typer.testing import CliRunner

import zoo
from weightspace.cli import app
from weightspace.io import save_state_dict

runner = CliRunner()


def test_fit_then_rank(tiny_zoo, tmp_path):
    out = tmp_path / "pred"
    res = runner.invoke(app, ["predict", "fit", str(tiny_zoo.path), "--target", "test_accuracy", "--model", "gbm",
                              "--out", str(out), "--json", str(tmp_path / "fit.json"), "-p", "max_iter=100"])
    assert res.exit_code == 0, res.output
    assert "kendall_tau" in res.output and "saved" in res.output
    rep = json.loads((tmp_path / "fit.json").read_text())
    assert rep["target"] == "test_acc" and rep["params"]["max_iter"] == 100 and rep["n_test"] > 0
    assert rep["metrics"]["kendall_tau"]["low"] <= rep["metrics"]["kendall_tau"]["value"]

    members = tiny_zoo.members()[:6]
    files = [str(m.checkpoint().path) for m in members]
    res = runner.invoke(app, ["predict", "rank", *files, "--predictor", str(out), "--json", str(tmp_path / "rank.json")])
    assert res.exit_code == 0, res.output
    ranking = json.loads((tmp_path / "rank.json").read_text())["ranking"]
    preds = [r["prediction"] for r in ranking]
    assert sorted(r["checkpoint"] for r in ranking) == sorted(files)
    assert preds == sorted(preds, reverse=True) and [r["rank"] for r in ranking] == list(range(1, 7))
    # the printed table lists the best checkpoint first
    lines = [ln for ln in res.output.splitlines() if ln.strip().startswith("1 ")]
    assert lines and ranking[0]["checkpoint"] in lines[0]


def test_rank_other_architecture_fails_clearly(tiny_zoo, tmp_path):
    out = tmp_path / "pred"
    res = runner.invoke(app, ["predict", "fit", str(tiny_zoo.path), "--model", "linear", "--test-fraction", "0",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    bad = tmp_path / "wide.safetensors"
    save_state_dict(zoo.create_model("cnn_small", seed=0, width=16, depth=2).state_dict(), bad)
    good = str(tiny_zoo.members()[0].checkpoint().path)
    res = runner.invoke(app, ["predict", "rank", good, str(bad), "--predictor", str(out)])
    assert res.exit_code == 2
    assert "wide.safetensors" in res.output and "does not have the architecture" in res.output


def test_fit_errors(tiny_zoo, tmp_path):
    res = runner.invoke(app, ["predict", "fit", str(tiny_zoo.path), "--target", "accuracy"])
    assert res.exit_code == 2 and "no metric 'accuracy'" in res.output
    res = runner.invoke(app, ["predict", "fit", str(tiny_zoo.path), "--model", "svm"])
    assert res.exit_code == 2 and "unknown predictor" in res.output
    res = runner.invoke(app, ["predict", "fit", str(tmp_path)])
    assert res.exit_code == 2 and "zoo.json" in res.output
    res = runner.invoke(app, ["predict", "rank", "x.safetensors", "--predictor", str(tmp_path)])
    assert res.exit_code == 2 and "not a saved predictor" in res.output


def test_fit_ood_split(tiny_zoo):
    res = runner.invoke(app, ["predict", "fit", str(tiny_zoo.path), "--model", "linear", "--split", "ood",
                              "--ood-column", "activation", "--ood-train", "relu", "--ood-test", "tanh"])
    assert res.exit_code == 0, res.output
    df = tiny_zoo.to_pandas()
    n_tanh = int((df["config.model.activation"] == "tanh").sum()) * 2  # two checkpoints per member
    assert n_tanh > 0 and f"/ {n_tanh} test networks" in res.output
