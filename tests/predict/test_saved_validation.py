"""A saved predictor (``predictor.json`` + ``arrays.safetensors``) that is
damaged or tampered with fails with one clear error naming the file and the
key or array; sizes read from it are bounded before anything is allocated.
Uses a dozen random tiny MLPs, no zoo."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from typer.testing import CliRunner

import weightspace as ws
import zoo
from weightspace.cli import app
from weightspace.errors import ConfigError, InputFileError, MissingFileError, StateDictError
from weightspace.io import save_state_dict
from weightspace.predict import GBMPredictor, LinearPredictor, MeanPredictor, load_predictor, make_predictor
from weightspace.predict.predictors import PREDICTORS

from tests.file_checks import check_bad_bytes, check_truncated_and_empty

ARCH = {"hidden": [3], "in_features": 4, "out_features": 2}


def _graphs(n=12):
    return [ws.parameter_graph(zoo.create_model("mlp", seed=i, **ARCH).state_dict(), arch="mlp", **ARCH)
            for i in range(n)]


@pytest.fixture(scope="module")
def data():
    g = _graphs()
    y = np.linspace(0.1, 0.9, len(g))
    return g, y


@pytest.fixture
def saved(tmp_path, data):
    return LinearPredictor().fit(*data).save(tmp_path / "p")


def _info(path):
    return json.loads((path / "predictor.json").read_text())


def _write(path, info):
    (path / "predictor.json").write_text(json.dumps(info))


def _cli(*args):
    r = CliRunner().invoke(app, [*map(str, args)])
    return r, r.output


def _one_line_error(r, out, *names):
    assert r.exit_code == 2, out
    assert "error:" in out and "Traceback" not in out and "internal error" not in out
    assert len([ln for ln in out.splitlines() if ln.strip()]) == 1, out
    for n in names:
        assert n in out, out


def test_param_schemas_cover_the_constructors():
    for cls in PREDICTORS.values():
        assert set(cls.param_schema) == set(cls._param_names()), cls


@pytest.mark.parametrize("kind,params", [("linear", {}), ("mean", {}), ("gbm", {"max_iter": 3, "min_samples_leaf": 2}),
                                         ("gmn", {"epochs": 1, "model_kwargs": {"hidden": 4, "num_layers": 1}})])
def test_round_trip_still_works(tmp_path, data, kind, params):
    p = make_predictor(kind, **params).fit(*data)
    q = load_predictor(p.save(tmp_path / kind))
    np.testing.assert_allclose(q.predict(data[0]), p.predict(data[0]), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("content,match", [(b"", "invalid JSON"), (b'{"format": "weightspace-predictor", ', "invalid JSON"),
                                           (b"[1, 2]", "not a weightspace-predictor")])
def test_bad_json_names_the_file(saved, content, match):
    check_bad_bytes(saved / "predictor.json", content, match, lambda: load_predictor(saved))


@pytest.mark.parametrize("edit,field", [
    (lambda i: i["params"].update(spectral="yes"), "params.spectral"),
    (lambda i: i["params"].update(spectrl=True), "params.spectrl"),
    (lambda i: i.update(n_train="many"), "n_train"),
    (lambda i: i.update(extra_key=1), "extra_key"),
    (lambda i: i.update(version=99), "version"),
    (lambda i: i["state"].update(intercept="0"), "state.intercept"),
    (lambda i: i["state"].pop("alpha"), "state.alpha"),
    (lambda i: i["layouts"][0].__setitem__(0, "layers.0.weight"), "layouts[0][0]"),
    (lambda i: i["params"]["alphas"].__setitem__(0, -1.0), "params.alphas[0].alpha"),
])
def test_wrong_type_or_unknown_key_names_the_key(saved, edit, field):
    info = _info(saved)
    edit(info)
    _write(saved, info)
    with pytest.raises(ConfigError) as e:
        load_predictor(saved)
    assert e.value.field == field and e.value.path.endswith("predictor.json")


def test_unknown_param_suggests_the_right_one(saved):
    info = _info(saved)
    info["params"]["spectrl"] = info["params"].pop("spectral")
    _write(saved, info)
    with pytest.raises(ConfigError, match="did you mean 'spectral'"):
        load_predictor(saved)


def test_gbm_refit_cannot_be_made_to_hang(tmp_path, data):
    path = GBMPredictor(max_iter=3, min_samples_leaf=2).fit(*data).save(tmp_path / "g")
    info = _info(path)
    info["params"]["max_iter"] = 10**12
    _write(path, info)
    with pytest.raises(ConfigError) as e:
        load_predictor(path)
    assert e.value.field == "params.max_iter"


def test_a_4tb_layout_fails_fast_and_names_the_field(saved):
    info = _info(saved)
    info["layouts"][0][0][1] = [2**20, 2**20]
    _write(saved, info)
    t = time.perf_counter()
    with pytest.raises(InputFileError, match="tampered") as e:
        load_predictor(saved)
    assert time.perf_counter() - t < 2.0 and e.value.field == "layouts[0][0]"


def test_a_4tb_metanetwork_config_fails_fast_and_names_the_field(tmp_path, data):
    path = make_predictor("gmn", epochs=1, model_kwargs={"hidden": 4, "num_layers": 1}).fit(*data).save(tmp_path / "g")
    info = _info(path)
    info["state"]["config"]["hidden"] = 2**20  # GMN hidden x hidden matrices: 4 TB
    _write(path, info)
    t = time.perf_counter()
    with pytest.raises(InputFileError, match="tampered") as e:
        load_predictor(path)
    assert time.perf_counter() - t < 5.0
    assert e.value.field == "state.config" and e.value.path.endswith("predictor.json")
    info["state"]["config"]["hidden"] = 2**40
    _write(path, info)
    with pytest.raises(ConfigError) as e:
        load_predictor(path)
    assert e.value.field == "state.config.hidden"
    info["state"]["config"]["hidden"] = 4
    info["state"]["config"]["hiden"] = 4
    _write(path, info)
    with pytest.raises(ConfigError, match="did you mean 'hidden'") as e:
        load_predictor(path)
    assert e.value.field == "state.config.hiden"


def test_missing_or_misshaped_arrays_are_named(tmp_path, saved, data):
    from safetensors.numpy import load_file, save_file

    a = saved / "arrays.safetensors"
    arrays = load_file(str(a))
    save_file({k: v for k, v in arrays.items() if k != "coef"}, str(a))
    with pytest.raises(StateDictError, match="missing") as e:
        load_predictor(saved)
    assert e.value.field == "coef" and e.value.path == str(a)
    save_file({**arrays, "coef": arrays["coef"][:-1]}, str(a))
    with pytest.raises(StateDictError, match="shape") as e:
        load_predictor(saved)
    assert e.value.field == "coef"
    save_file({**arrays, "coef": arrays["coef"] * np.nan}, str(a))
    with pytest.raises(ValueError, match="NaN") as e:
        load_predictor(saved)
    assert e.value.field == "coef"

    g = make_predictor("gmn", epochs=1, model_kwargs={"hidden": 4, "num_layers": 1}).fit(*data).save(tmp_path / "g")
    a = g / "arrays.safetensors"
    arrays = load_file(str(a))
    gone = sorted(arrays)[0]
    save_file({k: v for k, v in arrays.items() if k != gone}, str(a))
    with pytest.raises(StateDictError, match="missing") as e:
        load_predictor(g)
    assert e.value.field == gone[len("model."):] and e.value.path == str(a)


def test_truncated_empty_or_directory_files_are_named(saved):
    a = saved / "arrays.safetensors"
    check_truncated_and_empty(a, lambda: load_predictor(saved))
    a.unlink()
    with pytest.raises(MissingFileError) as e:
        load_predictor(saved)
    assert e.value.path == str(a)
    a.mkdir()
    with pytest.raises(InputFileError, match="is a directory") as e:
        load_predictor(saved)
    assert e.value.path == str(a)
    (saved / "predictor.json").unlink()
    (saved / "predictor.json").mkdir()
    with pytest.raises(InputFileError, match="is a directory") as e:
        load_predictor(saved)
    assert e.value.path.endswith("predictor.json")


def test_a_file_instead_of_a_predictor_directory(tmp_path, data):
    f = tmp_path / "f.json"
    f.write_text("{}")
    with pytest.raises(InputFileError, match="is a file"):
        load_predictor(f)
    with pytest.raises(InputFileError, match="is a file"):
        MeanPredictor().fit(*data).save(f)
    with pytest.raises(MissingFileError, match="not a saved predictor"):
        load_predictor(tmp_path / "nope")


def test_cli_rank_with_a_damaged_predictor_is_one_line(tmp_path, saved):
    ck = tmp_path / "ck.safetensors"
    save_state_dict(zoo.create_model("mlp", seed=0, **ARCH).state_dict(), ck)
    info = _info(saved)
    info["params"]["spectral"] = "yes"
    _write(saved, info)
    r, out = _cli("predict", "rank", ck, "--predictor", saved)
    _one_line_error(r, out, "predictor.json", "params.spectral")
    (saved / "arrays.safetensors").write_bytes(b"\x00" * 5)
    info["params"]["spectral"] = False
    _write(saved, info)
    r, out = _cli("predict", "rank", ck, "--predictor", saved)
    _one_line_error(r, out, "arrays.safetensors")


@pytest.mark.parametrize("content", [b"", b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ", b"not a checkpoint at all",
                                     b'\x40\x00\x00\x00\x00\x00\x00\x00{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}  '])
def test_cli_rank_with_an_empty_header_only_or_corrupt_checkpoint_is_one_line(tmp_path, saved, content):
    ck = tmp_path / "bad.safetensors"
    ck.write_bytes(content)
    good = tmp_path / "good.safetensors"
    save_state_dict(zoo.create_model("mlp", seed=0, **ARCH).state_dict(), good)
    r, out = _cli("predict", "rank", good, ck, "--predictor", saved)
    _one_line_error(r, out, "bad.safetensors")


@pytest.mark.parametrize("args,name", [
    (["rank", "{tmp}/x.safetensors", "--predictor", "{tmp}", "--top", "0"], "--top"),
    (["fit", "{tmp}", "--epochs", "0"], "--epochs"),
    (["fit", "{tmp}", "--seed", "-1"], "--seed"),
    (["fit", "{tmp}", "--test-fraction", "1.5"], "--test-fraction"),
])
def test_predict_counts_are_bounded(tmp_path, args, name):
    r, out = _cli("predict", *[a.format(tmp=tmp_path) for a in args])
    assert r.exit_code == 2 and name in out and "Traceback" not in out, out


def test_predict_outputs_that_are_directories_or_files_are_named_before_any_work(tmp_path, saved):
    f = tmp_path / "file.txt"
    f.write_text("x")
    r, out = _cli("predict", "fit", tmp_path / "no_zoo", "--json", tmp_path)
    _one_line_error(r, out, str(tmp_path), "--json", "is a directory")
    r, out = _cli("predict", "fit", tmp_path / "no_zoo", "--out", f)
    _one_line_error(r, out, str(f), "needs a directory")
    ck = tmp_path / "ck.safetensors"
    save_state_dict(zoo.create_model("mlp", seed=0, **ARCH).state_dict(), ck)
    r, out = _cli("predict", "rank", ck, "--predictor", saved, "--json", tmp_path)
    _one_line_error(r, out, str(tmp_path), "is a directory")
    r, out = _cli("predict", "rank", ck, "--predictor", saved, "--json", f / "rank.json")
    _one_line_error(r, out, str(f), "is a file")
    r, out = _cli("predict", "rank", ck, "--predictor", saved, "--json", tmp_path / "rank.json", "--top", 1)
    assert r.exit_code == 0, out
    assert json.loads((tmp_path / "rank.json").read_text())["ranking"][0]["rank"] == 1
