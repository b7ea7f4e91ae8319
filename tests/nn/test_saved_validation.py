"""A saved metanetwork (``config.json`` + ``model.safetensors``) that is
damaged or tampered with fails with one clear error naming the file and the
key or tensor -- and a config asking for absurd sizes fails before anything
is allocated."""

from __future__ import annotations

import json
import time

import pytest
import torch
from torch import nn

from weightspace.errors import ConfigError, InputFileError, MissingFileError, StateDictError
from weightspace.io import build_checked, load_state_dict, match_state_dict, save_state_dict
from weightspace.nn import GMN, StatNN
from weightspace.nn.train import load_checkpoint, save_checkpoint

from tests.file_checks import check_bad_bytes, check_truncated_and_empty


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    path = save_checkpoint(StatNN(in_features=6, hidden=4), tmp_path / "ckpt", extra={"note": "x"})
    return path


def _edit(path, **changes):
    info = json.loads((path / "config.json").read_text())
    for k, v in changes.items():
        if k.startswith("config."):
            info["config"][k[len("config."):]] = v
        else:
            info[k] = v
    (path / "config.json").write_text(json.dumps(info))


def test_round_trip_still_works(saved):
    model, info = load_checkpoint(saved)
    assert isinstance(model, StatNN) and info["extra"] == {"note": "x"}


@pytest.mark.parametrize("content,match", [(b"", "invalid JSON"), (b'{"class": "StatNN", ', "invalid JSON"),
                                           (b"\xff\xfe", "not a text file")])
def test_bad_config_json_names_the_file(saved, content, match):
    check_bad_bytes(saved / "config.json", content, match, lambda: load_checkpoint(saved))


@pytest.mark.parametrize("change,field", [
    ({"config.hidden": "four"}, "config.hidden"),
    ({"config.hidden": -1}, "config.hidden"),
    ({"config.hiden": 4}, "config.hiden"),
    ({"config.num_layers": 10**6}, "config.num_layers"),
    ({"class": "os.system"}, "class"),
    ({"target_mean": "zero"}, "target_mean"),
    ({"surprise": 1}, "surprise"),
])
def test_wrong_type_unknown_key_or_class_names_the_key(saved, change, field):
    _edit(saved, **change)
    with pytest.raises(ConfigError) as e:
        load_checkpoint(saved)
    assert e.value.field == field and e.value.path.endswith("config.json")


def test_unknown_key_suggests_the_right_one(saved):
    _edit(saved, **{"config.hiden": 4})
    with pytest.raises(ConfigError, match="did you mean 'hidden'"):
        load_checkpoint(saved)


def test_a_4tb_config_fails_fast_without_allocating(saved):
    _edit(saved, **{"config.hidden": 2**20})  # hidden x hidden floats: 4 TB
    t = time.perf_counter()
    with pytest.raises(InputFileError) as e:
        load_checkpoint(saved)
    assert time.perf_counter() - t < 2.0
    assert e.value.field == "config" and "tampered" in str(e.value) and e.value.path.endswith("config.json")
    _edit(saved, **{"config.hidden": 2**40})
    with pytest.raises(ConfigError) as e:
        load_checkpoint(saved)
    assert e.value.field == "config.hidden"


def test_truncated_empty_or_directory_weights_name_the_file(saved):
    w = saved / "model.safetensors"
    check_truncated_and_empty(w, lambda: load_checkpoint(saved))
    w.unlink()
    w.mkdir()
    with pytest.raises(InputFileError, match="is a directory") as e:
        load_checkpoint(saved)
    assert e.value.path == str(w)


def test_missing_extra_or_misshaped_tensor_is_named(saved):
    w = saved / "model.safetensors"
    sd = load_state_dict(w)
    key = next(k for k in sd if k.endswith("weight"))
    save_state_dict({k: v for k, v in sd.items() if k != key}, w)
    with pytest.raises(StateDictError, match="missing") as e:
        load_checkpoint(saved)
    assert e.value.field == key and e.value.path == str(w)
    save_state_dict({**sd, "intruder": torch.zeros(2)}, w)
    with pytest.raises(StateDictError, match="unexpected") as e:
        load_checkpoint(saved)
    assert e.value.field == "intruder"
    _edit(saved, **{"config.hidden": 5})
    save_state_dict(sd, w)
    with pytest.raises(StateDictError, match="shape") as e:
        load_checkpoint(saved)
    assert e.value.path == str(w) and e.value.field in sd


def test_a_file_or_missing_directory_instead_of_a_checkpoint(tmp_path, saved):
    with pytest.raises(MissingFileError):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(InputFileError, match="is a file"):
        load_checkpoint(saved / "config.json")
    with pytest.raises(InputFileError, match="is a file"):
        save_checkpoint(StatNN(in_features=2), saved / "config.json")
    (saved / "config.json").unlink()
    with pytest.raises(MissingFileError) as e:
        load_checkpoint(saved)
    assert e.value.path.endswith("config.json")


def test_constructor_refusals_become_config_errors(tmp_path):
    path = save_checkpoint(GMN(out_dim=1, hidden=4, num_layers=1), tmp_path / "g")
    _edit(path, **{"config.aggr": "median-of-three"})
    with pytest.raises(ConfigError, match="aggr must be one of") as e:
        load_checkpoint(path)
    assert e.value.path.endswith("config.json")


def test_io_helpers_name_the_tensor():
    sd = nn.Linear(3, 4).state_dict()
    match_state_dict(sd, sd)
    with pytest.raises(StateDictError, match=r"needs \[5, 3\]") as e:
        match_state_dict({"weight": (5, 3), "bias": (4,)}, sd, path="f.safetensors")
    assert e.value.field == "weight" and e.value.path == "f.safetensors"
    assert isinstance(build_checked(lambda: nn.Linear(3, 4), sd), nn.Linear)
    with pytest.raises(ConfigError, match="cannot build"):
        build_checked(lambda: nn.Linear("a", 4), sd, path="f")
