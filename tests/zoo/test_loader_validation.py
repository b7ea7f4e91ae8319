"""Published-zoo loaders on corrupt, truncated, empty and wrong-type inputs:
each is one ZooFormatError (or ConfigError for an option) naming the file
(and column / key), and nothing is written to the output directory."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from weightspace.cli import app
from weightspace.errors import ConfigError
from zoo.errors import ZooFormatError
from zoo.loaders import (
    import_inr_zoo, import_model_zoos, import_small_cnn_zoo, load_dwsnets_inrs, load_model_zoos, load_nfn_sirens,
    load_small_cnn_zoo,
)
from zoo.store import Zoo

from .safety_helpers import assert_cli_refuses, assert_directory_errors
from .small_cnn_zoo_fixture import unflatten, write_small_cnn_zoo
from .test_inr_loaders import DWSINR, NFNSiren
from .test_model_zoos import ARCH_KW, write_trial
from .test_small_cnn_zoo import keras_small_cnn

runner = CliRunner()


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# ================================================================ Small CNN Zoo: malformed files


def _layout_header_only(p):
    (p / "layout.csv").write_text("varname,start_idx,end_idx,shape\n")


def _layout_bad_number(p):
    lay = pd.read_csv(p / "layout.csv")
    lay["start_idx"] = lay["start_idx"].astype(object)
    lay.loc[2, "start_idx"] = "x16"
    lay.to_csv(p / "layout.csv", index=False)


def _layout_dir(p):
    (p / "layout.csv").unlink()
    (p / "layout.csv").mkdir()


def _metrics_rewrite(fn):
    def go(p):
        df = pd.read_csv(p / "metrics.csv.gz")
        fn(df).to_csv(p / "metrics.csv.gz", index=False, compression="gzip")
    return go


def _npy(arr):
    return lambda p: np.save(p / "weights.npy", arr)


SCZ_BAD = [
    # (id, corrupt the fixture, file named, field named or None, words)
    ("layout-header-only", _layout_header_only, "layout.csv", None, "no variables"),
    ("layout-empty", lambda p: (p / "layout.csv").write_text(""), "layout.csv", None, "is empty"),
    ("layout-bad-number", _layout_bad_number, "layout.csv", "start_idx", "row 2"),
    ("layout-is-a-dir", _layout_dir, "layout.csv", None, "is a directory"),
    ("layout-binary", lambda p: (p / "layout.csv").write_bytes(b"\xff\xfe\x00\x81" * 10), "layout.csv", None,
     "cannot be read as CSV"),
    ("weights-empty-file", lambda p: (p / "weights.npy").write_bytes(b""), "weights.npy", None, "is empty"),
    ("weights-truncated", lambda p: _truncate(p / "weights.npy"), "weights.npy", None, "not a plain numeric"),
    ("weights-header-only", lambda p: _truncate(p / "weights.npy", 0.0005), "weights.npy", None,
     "not a plain numeric"),
    ("weights-garbage", lambda p: (p / "weights.npy").write_bytes(b"hello world" * 20), "weights.npy", None,
     "no numpy header"),
    ("weights-zero-rows", _npy(np.zeros((0, 4970), np.float32)), "weights.npy", "shape", "has no rows"),
    ("weights-strings", _npy(np.full((9, 4970), "a")), "weights.npy", "dtype", "dtype <U1"),
    ("weights-1d", _npy(np.zeros(4970, np.float32)), "weights.npy", "shape", "2-d array"),
    ("metrics-empty", lambda p: (p / "metrics.csv.gz").write_bytes(gzip.compress(b"")), "metrics.csv.gz", None,
     "is empty"),
    ("metrics-truncated-gzip", lambda p: _truncate(p / "metrics.csv.gz"), "metrics.csv.gz", None,
     "cannot be read as CSV"),
    ("metrics-missing", lambda p: (p / "metrics.csv.gz").unlink(), "metrics.csv.gz", None, "file not found"),
    ("metrics-no-step", _metrics_rewrite(lambda d: d.drop(columns=["step"])), "metrics.csv.gz", "step",
     "missing column 'step'"),
    ("metrics-bad-step", _metrics_rewrite(lambda d: d.assign(step=["x"] + list(d["step"][1:]))), "metrics.csv.gz",
     "step", "row 0: expected an integer"),
    ("metrics-blank-step", _metrics_rewrite(lambda d: d.assign(step=[None] + list(d["step"][1:]))),
     "metrics.csv.gz", "step", "expected an integer"),
    ("metrics-bad-num-units", _metrics_rewrite(lambda d: d.assign(**{"config.num_units": -16})), "metrics.csv.gz",
     "config.num_units", "positive integer"),
    ("metrics-no-activation", _metrics_rewrite(lambda d: d.drop(columns=["config.activation"])), "metrics.csv.gz",
     "config.activation", "missing column"),
]


@pytest.mark.parametrize("corrupt, fname, field, words", [c[1:] for c in SCZ_BAD], ids=[c[0] for c in SCZ_BAD])
def test_small_cnn_zoo_malformed_files(tmp_path, corrupt, fname, field, words):
    src = tmp_path / "mnist"
    write_small_cnn_zoo(src)
    corrupt(src)
    with pytest.raises(ZooFormatError) as e:
        list(load_small_cnn_zoo(src, steps="all"))
    assert e.value.path.endswith(fname), str(e.value)
    assert e.value.field == field, str(e.value)
    assert words in str(e.value) and "\n" not in str(e.value)
    out = tmp_path / "out"
    r = runner.invoke(app, ["zoo", "import-small-cnn-zoo", str(src), str(out), "--steps", "all", "--no-progress"])
    assert r.exit_code == 2, r.output
    assert "error:" in r.output and fname in r.output and words in r.output
    assert "Traceback" not in r.output and "internal error" not in r.output
    assert not out.exists()


def test_small_cnn_zoo_directory_errors(tmp_path):
    f = assert_directory_errors(tmp_path, load_small_cnn_zoo, "the Small CNN Zoo directory", "Small CNN Zoo directory")
    r = runner.invoke(app, ["zoo", "import-small-cnn-zoo", str(tmp_path / "nope"), str(tmp_path / "o"),
                            "--no-progress"])
    assert r.exit_code == 2 and "error:" in r.output and "nope" in r.output and "Traceback" not in r.output
    src = tmp_path / "mnist"
    write_small_cnn_zoo(src, runs=1)
    r = runner.invoke(app, ["zoo", "import-small-cnn-zoo", str(src), str(f), "--no-progress"])
    assert r.exit_code == 2 and "afile: exists and is not a directory" in r.output
    assert f.read_text() == "x"


def test_uncompressed_metrics_csv_is_read(tmp_path):
    src = tmp_path / "mnist"
    write_small_cnn_zoo(src, runs=2)
    pd.read_csv(src / "metrics.csv.gz").to_csv(src / "metrics.csv", index=False)
    (src / "metrics.csv.gz").unlink()
    assert len(list(load_small_cnn_zoo(src))) == 2
    pd.read_csv(src / "metrics.csv").drop(columns=["step"]).to_csv(src / "metrics.csv", index=False)
    with pytest.raises(ZooFormatError, match=r"metrics\.csv: \[step\] missing column 'step'"):
        list(load_small_cnn_zoo(src))


def test_small_cnn_zoo_zero_members_is_refused_and_writes_nothing(tmp_path):
    src = tmp_path / "mnist"
    w, _ = write_small_cnn_zoo(src, runs=2)
    with pytest.raises(ZooFormatError, match=r"metrics\.csv\.gz: \[step\] no run has a checkpoint at steps \[999\] "
                                             r"\(steps present: \[0, 1, 86\]\)"):
        list(load_small_cnn_zoo(src, steps=[999]))
    out = tmp_path / "out"
    with pytest.raises(ZooFormatError, match="no run has a checkpoint"):
        import_small_cnn_zoo(src, out, steps=[999], progress=False)
    assert not out.exists()
    w[:, 3] = np.nan
    np.save(src / "weights.npy", w)
    with pytest.raises(ZooFormatError, match=r"weights\.npy: all 2 runs have non-finite weights.*--keep-nonfinite"):
        list(load_small_cnn_zoo(src))
    assert len(list(load_small_cnn_zoo(src, drop_nonfinite=False))) == 2


@pytest.mark.parametrize("kwargs, field", [
    ({"limit": 0}, "limit"),
    ({"limit": -1}, "limit"),
    ({"limit": True}, "limit"),
    ({"limit": 1.5}, "limit"),
    ({"image_size": 0}, "image_size"),
    ({"image_size": -28}, "image_size"),
    ({"steps": "last"}, "steps"),
    ({"steps": []}, "steps"),
    ({"steps": [0, -1]}, "steps"),
    ({"padding": "SAME"}, "padding"),
])
def test_small_cnn_zoo_bad_options(tmp_path, kwargs, field):
    src = tmp_path / "mnist"
    write_small_cnn_zoo(src, runs=1)
    with pytest.raises(ConfigError) as e:
        list(load_small_cnn_zoo(src, **kwargs))
    assert e.value.field == field and field in str(e.value)
    with pytest.raises(ConfigError):
        import_small_cnn_zoo(src, tmp_path / "out", progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, option", [
    (["--limit", "-1"], "--limit"),
    (["--limit", "0"], "--limit"),
    (["--image-size", "0"], "--image-size"),
    (["--steps", "1,x"], "--steps"),
    (["--steps", "-1"], "--steps"),
    (["--padding", "SAME"], "--padding"),
])
def test_cli_import_small_cnn_zoo_bad_options(tmp_path, args, option):
    src = tmp_path / "mnist"
    write_small_cnn_zoo(src, runs=1)
    out = tmp_path / "out"
    assert_cli_refuses(["zoo", "import-small-cnn-zoo", str(src), str(out), "--no-progress", *args], option, out)


# ================================================================ Small CNN Zoo: image size


def test_unknown_dataset_needs_an_image_size(tmp_path):
    src = tmp_path / "digits"
    write_small_cnn_zoo(src, runs=2, dataset="digits")
    for padding in ("valid", "same"):
        with pytest.raises(ZooFormatError) as e:
            list(load_small_cnn_zoo(src, padding=padding))
        assert e.value.path.endswith("metrics.csv.gz") and e.value.field == "config.dataset"
        assert "unknown dataset 'digits'" in str(e.value) and "image_size=" in str(e.value)
    # padding="torch" (cnn_small) does not depend on the image size
    assert len(list(load_small_cnn_zoo(src, padding="torch"))) == 2
    out = tmp_path / "out"
    r = runner.invoke(app, ["zoo", "import-small-cnn-zoo", str(src), str(out), "--padding", "same", "--no-progress"])
    assert r.exit_code == 2, r.output
    assert "config.dataset" in r.output and "--image-size" in r.output and "Traceback" not in r.output
    assert not out.exists()
    r = runner.invoke(app, ["zoo", "import-small-cnn-zoo", str(src), str(out), "--padding", "same",
                            "--image-size", "8", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert {m.config["model"]["image_size"] for m in Zoo(out).members()} == {8}


def test_explicit_image_size_gives_the_tf_same_function(tmp_path):
    """8x8 inputs with TF SAME padding: 8 -> 4 -> 2 -> 1. The old silent
    28-pixel default padded 8-pixel inputs like 28-pixel ones (a different function)."""
    src = tmp_path / "digits"
    w, df = write_small_cnn_zoo(src, runs=2, steps=(86,), dataset="digits")
    members = list(load_small_cnn_zoo(src, padding="same", image_size=8))
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 1))
    for m in members:
        row = int(np.flatnonzero(df["modeldir"] == m.extra["modeldir"])[0])
        ref = keras_small_cnn(x, unflatten(w[row].astype(np.float64)), df.loc[row, "config.activation"], "SAME")
        with torch.no_grad():
            got = m.module()(torch.tensor(x.transpose(0, 3, 1, 2), dtype=torch.float32)).numpy()
        np.testing.assert_allclose(got, ref, atol=1e-4)
        wrong = m.module().__class__(**dict(m.config["model"], image_size=28)).eval()
        wrong.load_state_dict(m.module().state_dict())
        with torch.no_grad():
            assert not np.allclose(wrong(torch.tensor(x.transpose(0, 3, 1, 2), dtype=torch.float32)).numpy(), ref,
                                   atol=1e-3)


def test_known_datasets_keep_their_sizes_and_explicit_size_wins(tmp_path):
    src = tmp_path / "cifar10"
    write_small_cnn_zoo(src, runs=1, dataset="cifar10")
    assert next(load_small_cnn_zoo(src)).config["model"]["image_size"] == 32
    assert next(load_small_cnn_zoo(src, image_size=30)).config["model"]["image_size"] == 30


# ================================================================ resuming with other options


def test_small_cnn_zoo_resume_with_other_options_or_source_is_refused(tmp_path):
    a, b = tmp_path / "mnist", tmp_path / "fashion_mnist"
    write_small_cnn_zoo(a, runs=1)
    write_small_cnn_zoo(b, runs=1, dataset="fashion_mnist", seed=1)
    out = tmp_path / "out"
    import_small_cnn_zoo(a, out, progress=False)
    with pytest.raises(ZooFormatError) as e:
        import_small_cnn_zoo(a, out, padding="same", progress=False)
    assert e.value.field == "import_options.padding"
    assert "padding='valid'" in str(e.value) and "padding='same'" in str(e.value)
    assert "new output directory" in str(e.value)
    with pytest.raises(ZooFormatError, match=r"holds the import 'small_cnn_zoo:mnist', not "
                                             r"'small_cnn_zoo:fashion_mnist'.*new output directory"):
        import_small_cnn_zoo(b, out, progress=False)
    assert len(import_small_cnn_zoo(a, out, progress=False)) == 1  # same options: resumes


def test_model_zoos_reimport_with_other_model_kwargs_is_refused(tmp_path):
    root = tmp_path / "tune"
    for i in range(2):
        write_trial(root, f"trial_{i}", i)
    out = tmp_path / "out"
    z = import_model_zoos(root, out, arch="mlp", model_kwargs=ARCH_KW, key_map="by_order", progress=False)
    assert len(z) == 2 and z.info["import_options"]["model_kwargs"] == ARCH_KW
    other = dict(ARCH_KW, activation="relu")
    with pytest.raises(ZooFormatError) as e:
        import_model_zoos(root, out, arch="mlp", model_kwargs=other, key_map="by_order", progress=False)
    msg = str(e.value)
    assert e.value.path.endswith("zoo.json") and e.value.field == "import_options.model_kwargs"
    assert "'activation': 'tanh'" in msg and "'activation': 'relu'" in msg and "new output directory" in msg
    assert "\n" not in msg
    assert {m.config["model"]["activation"] for m in Zoo(out).members()} == {"tanh"}
    # same kwargs (a tuple where a list was stored compares equal): resumes
    same = dict(ARCH_KW, hidden=tuple(ARCH_KW["hidden"]))
    assert len(import_model_zoos(root, out, arch="mlp", model_kwargs=same, key_map="by_order", progress=False)) == 2


def test_model_zoos_callable_options_are_stable_across_calls(tmp_path):
    root = tmp_path / "tune"
    write_trial(root, "trial_0", 0)
    out = tmp_path / "out"

    def rename(k):
        return k.replace("module_list", "layers")

    import_model_zoos(root, out, arch="mlp", model_kwargs=ARCH_KW, key_map=rename, progress=False)
    assert len(import_model_zoos(root, out, arch="mlp", model_kwargs=ARCH_KW, key_map=rename, progress=False)) == 1
    with pytest.raises(ZooFormatError, match=r"\[import_options\.key_map\].*key_map='by_order'"):
        import_model_zoos(root, out, arch="mlp", model_kwargs=ARCH_KW, key_map="by_order", progress=False)


# ================================================================ model-zoos: malformed trials


def _put(path, data):
    """Write ``data`` (text or bytes) to ``path``; return ``path``."""
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def _ck(root):
    return root / "t0" / "checkpoint_000002" / "checkpoints"


def _safetensors_truncated(root):
    from safetensors.torch import save_file

    ck = _ck(root)
    sd = torch.load(ck, weights_only=True)
    ck.unlink()
    save_file(sd, str(ck.with_name("model.safetensors")))
    _truncate(ck.with_name("model.safetensors"))
    return ck.with_name("model.safetensors")


MZ_BAD = [
    # (id, corrupt -> file named, words)
    ("params-bad-json", lambda r: _put(r / "t0" / "params.json", "{oops"),
     "invalid JSON"),
    ("params-a-list", lambda r: _put(r / "t0" / "params.json", "[1, 2]"),
     "expected a JSON object"),
    ("params-binary", lambda r: _put(r / "t0" / "params.json", b"\xff\xfe\x00"),
     "not a text file"),
    ("result-line-a-list", lambda r: _put(r / "t0" / "result.json", "[1]\n"),
     "line 1 is a JSON list"),
    ("result-binary", lambda r: _put(r / "t0" / "result.json", b"\x80\x81"),
     "not a text file"),
    ("checkpoint-truncated", lambda r: _truncate(_ck(r)) or _ck(r), "torch.load(weights_only=True) refused"),
    ("checkpoint-empty", lambda r: _ck(r).write_bytes(b"") or _ck(r), "refused"),
    ("checkpoint-not-a-state-dict", lambda r: torch.save({"a": [1, 2]}, _ck(r)) or _ck(r),
     "expected a mapping of tensor names to tensors"),
    ("safetensors-truncated", _safetensors_truncated, "corrupt or truncated safetensors"),
]


@pytest.mark.parametrize("corrupt, words", [c[1:] for c in MZ_BAD], ids=[c[0] for c in MZ_BAD])
def test_model_zoos_malformed_trials(tmp_path, corrupt, words):
    root = tmp_path / "tune"
    write_trial(root, "t0", 0)
    bad = corrupt(root)
    with pytest.raises(ZooFormatError) as e:
        list(load_model_zoos(root, arch="mlp", model_kwargs=ARCH_KW, key_map="by_order"))
    assert e.value.path == str(bad), str(e.value)
    assert words in str(e.value) and "\n" not in str(e.value)
    out = tmp_path / "out"
    with pytest.raises(ZooFormatError):
        import_model_zoos(root, out, arch="mlp", model_kwargs=ARCH_KW, key_map="by_order", progress=False)
    assert not out.exists()


def test_model_zoos_directory_and_option_errors(tmp_path):
    root = tmp_path / "tune"
    write_trial(root, "t0", 0)
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(ZooFormatError, match=r"afile: is a file; expected a model zoo directory"):
        list(load_model_zoos(f, arch="mlp"))
    with pytest.raises(ZooFormatError, match=r"nope: model zoo directory not found"):
        list(load_model_zoos(tmp_path / "nope", arch="mlp"))
    with pytest.raises(ZooFormatError, match=r"tune: \[epochs\] none of the 1 trial\(s\) has a checkpoint at "
                                             r"iterations \[99\]"):
        list(load_model_zoos(root, arch="mlp", model_kwargs=ARCH_KW, key_map="by_order", epochs=[99]))
    for kwargs, field in [({"limit": 0}, "limit"), ({"limit": -1}, "limit"), ({"epochs": [-1]}, "epochs"),
                          ({"epochs": "last"}, "epochs"), ({"epochs": []}, "epochs"), ({"key_map": "bogus"}, "key_map"),
                          ({"model_kwargs": [1]}, "model_kwargs"), ({"arch": 3}, "arch"),
                          ({"arch": lambda p: "mlp"}, "arch")]:
        kw = {"arch": "mlp", **kwargs}
        with pytest.raises(ConfigError) as e:
            list(load_model_zoos(root, **kw))
        assert e.value.field == field, (kwargs, str(e.value))


# ================================================================ DWSNets INRs: splits.json


@pytest.fixture
def dws(tmp_path):
    root = tmp_path / "inrs"
    splits = {"train": {"path": [], "label": []}, "test": {"path": [], "label": []}}
    torch.manual_seed(0)
    for i, split in enumerate(["train", "train", "test"]):
        rel = f"{split}_{i}/model_final.pth"
        (root / rel).parent.mkdir(parents=True)
        torch.save(DWSINR().state_dict(), root / rel)
        splits[split]["path"].append(rel)
        splits[split]["label"].append(str(i))
    (root / "splits.json").write_text(json.dumps(splits))
    return root, splits


def _edit(fn):
    def go(root, splits):
        fn(splits)
        (root / "splits.json").write_text(json.dumps(splits))
    return go


def _rename(d, old, new):
    d[new] = d.pop(old)


DWS_BAD = [
    # (id, corrupt, field, words)
    ("misspelt-split", _edit(lambda s: _rename(s, "train", "trian")), "trian",
     "unknown split 'trian'; did you mean 'train'?"),
    ("misspelt-path-key", _edit(lambda s: _rename(s["train"], "path", "paths")), "train.paths",
     "did you mean 'path'?"),
    ("missing-path", _edit(lambda s: s["test"].pop("path")), "test.path", "lacks the 'path' list"),
    ("missing-label", _edit(lambda s: s["test"].pop("label")), "test.label", "lacks the 'label' list"),
    ("split-not-object", _edit(lambda s: s.update(test=["a.pth"])), "test", "must be an object"),
    ("path-not-list", _edit(lambda s: s["test"].update(path="a.pth")), "test.path", "must be a list"),
    ("bad-label", _edit(lambda s: s["test"].update(label=["cat"])), "test.label[0]", "integer class label"),
    ("bad-path-entry", _edit(lambda s: s["test"].update(path=[3])), "test.path[0]", "expected a file path"),
    ("length-mismatch", _edit(lambda s: s["test"].update(label=[1, 2])), "test.label", "1 paths but 2 labels"),
    ("no-entries", _edit(lambda s: s.clear()), None, "no INR files listed"),
    ("not-a-mapping", lambda root, s: (root / "splits.json").write_text("[]"), None, "expected a JSON object"),
    ("bad-json", lambda root, s: (root / "splits.json").write_text("{"), None, "invalid JSON"),
    ("empty-file", lambda root, s: (root / "splits.json").write_text(""), None, "invalid JSON"),
]


@pytest.mark.parametrize("corrupt, field, words", [c[1:] for c in DWS_BAD], ids=[c[0] for c in DWS_BAD])
def test_dwsnets_malformed_splits(dws, tmp_path, corrupt, field, words):
    root, splits = dws
    corrupt(root, splits)
    with pytest.raises(ZooFormatError) as e:
        list(load_dwsnets_inrs(root))
    assert e.value.path == str(root / "splits.json") and e.value.field == field, str(e.value)
    assert words in str(e.value) and "\n" not in str(e.value)
    out = tmp_path / "out"
    with pytest.raises(ZooFormatError):
        import_inr_zoo(root, out, style="dwsnets", progress=False)
    assert not out.exists()


def test_dwsnets_requested_splits_and_splits_file(dws):
    root, _ = dws
    assert [m.extra["split"] for m in load_dwsnets_inrs(root, splits=["test"])] == ["test"]
    data = json.loads((root / "splits.json").read_text())
    del data["test"]
    (root / "splits.json").write_text(json.dumps(data))
    with pytest.raises(ZooFormatError, match=r"splits\.json: no INR files listed for the split\(s\) \['test'\] "
                                             r"\(the file has \['train'\]\)"):
        list(load_dwsnets_inrs(root, splits=["test"]))
    with pytest.raises(ZooFormatError, match=r"my_splits\.json: splits file not found"):
        list(load_dwsnets_inrs(root, splits_file="my_splits.json"))
    with pytest.raises(ConfigError, match=r"\[splits\]"):
        list(load_dwsnets_inrs(root, splits="train"))
    with pytest.raises(ConfigError, match=r"\[limit\]"):
        list(load_dwsnets_inrs(root, limit=0))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_dwsnets_truncated_weights_file(dws, suffix):
    from safetensors.torch import save_file

    root, splits = dws
    f = root / splits["test"]["path"][0]
    if suffix == ".safetensors":
        sd = torch.load(f, weights_only=True)
        f = f.with_suffix(".safetensors")
        save_file(sd, str(f))
        splits["test"]["path"][0] = str(f.relative_to(root))
        (root / "splits.json").write_text(json.dumps(splits))
    _truncate(f)
    with pytest.raises(ZooFormatError) as e:
        list(load_dwsnets_inrs(root))
    assert e.value.path == str(f) and "\n" not in str(e.value)


def test_dwsnets_directory_errors(tmp_path):
    assert_directory_errors(tmp_path, load_dwsnets_inrs, "an INR dataset directory", "INR dataset directory")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZooFormatError, match=r"empty: no splits\.json and no \*\.pth files"):
        list(load_dwsnets_inrs(tmp_path / "empty"))


# ================================================================ NFN SIRENs


def test_nfn_truncated_archive_and_bad_patterns(tmp_path):
    import tarfile

    root = tmp_path / "sirens"
    (root / "randinit_test_3s").mkdir(parents=True)
    for i in range(3):
        torch.save(NFNSiren().state_dict(), root / "randinit_test_3s" / f"net{i}.pth")
    arc = tmp_path / "sirens.tar.gz"
    with tarfile.open(arc, "w:gz") as tar:
        tar.add(root, arcname="sirens")
    assert len(list(load_nfn_sirens(arc))) == 3
    _truncate(arc, 0.6)
    with pytest.raises(ZooFormatError) as e:
        list(load_nfn_sirens(arc))
    assert e.value.path is not None and e.value.path.startswith(str(arc)) and "\n" not in str(e.value)
    with pytest.raises(ZooFormatError, match=r"\[label_pattern\] expected an integer class label, got 'test'"):
        list(load_nfn_sirens(root, label_pattern=r"randinit_(\w+?)_"))
    with pytest.raises(ConfigError, match=r"\[index_pattern\] not a valid regular expression"):
        list(load_nfn_sirens(root, index_pattern="net(("))
    with pytest.raises(ConfigError, match=r"\[limit\]"):
        list(load_nfn_sirens(root, limit=-1))
    with pytest.raises(ConfigError, match=r"\[style\]"):
        import_inr_zoo(root, tmp_path / "o", style="functa")


def test_model_zoos_model_kwargs_the_architecture_refuses(tmp_path):
    root = tmp_path / "tune"
    write_trial(root, "t0", 0)
    for key_map in ("by_order", None):
        with pytest.raises(ZooFormatError) as e:
            list(load_model_zoos(root, arch="mlp", model_kwargs=dict(ARCH_KW, in_features=-6), key_map=key_map))
        assert e.value.field == "model_kwargs" and "cannot build mlp" in str(e.value)
        assert e.value.path.endswith("checkpoints")
