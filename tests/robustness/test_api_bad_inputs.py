"""The Python API on bad input: every reader raises a
:class:`~weightspace.errors.WeightspaceError` whose ``.path`` names the file
at fault (and ``.field`` the key, where there is one) -- never a foreign
exception, never a silent result, never code run from the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.robustness import _fixtures as F
from tests.robustness._harness import CaseCtx
from tests.robustness.cases import (
    FLOW_TAMPER,
    HYPERNET_TAMPER,
    MERGE_FIELDS,
    PREDICTOR_EDITS,
    RECIPE_FIELDS,
    SCZ_EDITS,
    WEIGHTS,
    ZOO_META,
    ZOO_WEIGHTS,
    ZOOS,
    _recipe,
    _set,
    _write_merge_yaml,
    weights_file,
)
from weightspace.errors import InputFileError, WeightspaceError


def _ctx(tmp_path, assets) -> CaseCtx:
    c = CaseCtx(tmp=tmp_path / "case", assets=assets)
    c.tmp.mkdir()
    return c


def _assert_names(exc: WeightspaceError, path, field: str | None = None) -> None:
    assert isinstance(exc, WeightspaceError), f"{type(exc).__name__}: {exc}"
    assert exc.path is not None, f"{type(exc).__name__} without .path: {exc}"
    assert Path(path).name in exc.path, f".path {exc.path!r} does not name {Path(path).name!r}"
    assert "\n" not in str(exc)
    if field is not None:
        assert field in (exc.field or "") or field in str(exc), f"{exc!r} does not name {field!r}"


# ----------------------------------------------------------------- io


def test_check_output_path(tmp_path):
    from weightspace.io import check_output_path

    d = F.directory(tmp_path / "d")
    f = F.text(tmp_path / "f", "x")
    assert check_output_path(tmp_path / "new.json") == tmp_path / "new.json"
    assert check_output_path(d, kind="dir") == d
    assert check_output_path(tmp_path / "a" / "b", kind="dir") == tmp_path / "a" / "b"
    with pytest.raises(InputFileError) as e:
        check_output_path(d, field="--json")
    assert e.value.path == str(d) and e.value.field == "--json" and "directory" in str(e.value)
    with pytest.raises(InputFileError) as e:
        check_output_path(f, kind="dir", field="--out")
    assert e.value.path == str(f) and "not a directory" in str(e.value)
    with pytest.raises(InputFileError) as e:
        check_output_path(f / "x" / "y.json")
    assert str(f) in str(e.value)
    assert not (tmp_path / "a").exists()  # nothing created


# ------------------------------------------------------------ weights files
_FILE_VARIANTS = [v for v in WEIGHTS if v not in ("other-arch", "nan")]  # those two are valid files


@pytest.mark.parametrize("variant", _FILE_VARIANTS)
def test_load_state_dict(variant, assets, tmp_path):
    from weightspace.io import load_state_dict

    c = _ctx(tmp_path, assets)
    path = weights_file(c, variant)
    with pytest.raises(WeightspaceError) as e:
        load_state_dict(path)
    _assert_names(e.value, path)
    assert not any(m.exists() for m in c.markers), "unpickling ran code from the file"


@pytest.mark.parametrize("variant", ["empty", "truncated", "random-bytes", "huge-header", "huge-shape", "directory",
                                     "missing"])
def test_read_safetensors(variant, assets, tmp_path):
    from weightspace.io import read_safetensors, read_safetensors_metadata

    path = weights_file(_ctx(tmp_path, assets), variant)
    for reader in (read_safetensors, read_safetensors_metadata):
        with pytest.raises(InputFileError) as e:
            reader(path)
        _assert_names(e.value, path)


@pytest.mark.parametrize("reader,make,name", [
    ("read_yaml", F.yaml_python_tag, "evil.yaml"),  # a !!python tag
    ("read_npy", F.malicious_npy, "evil.npy"),  # a pickled object array
], ids=["yaml-python-tag", "npy-pickle"])
def test_reader_refuses_code(reader, make, name, assets, tmp_path):
    import weightspace.io

    c = _ctx(tmp_path, assets)
    path = make(c.path(name), c.marker())
    with pytest.raises(InputFileError) as e:
        getattr(weightspace.io, reader)(path)
    _assert_names(e.value, path)
    assert not c.markers[0].exists()


# --------------------------------------------------------------------- zoos


@pytest.mark.parametrize("variant", ZOO_META)
def test_zoo_open(variant, assets, tmp_path):
    from zoo import Zoo

    _, make, expect = ZOOS[variant]
    path = make(_ctx(tmp_path, assets))
    with pytest.raises(WeightspaceError) as e:
        Zoo(path).to_pandas()
    _assert_names(e.value, path)
    for name in expect:
        assert any(n in str(e.value) for n in (name if isinstance(name, tuple) else (name,))), (name, str(e.value))


@pytest.mark.parametrize("variant", ZOO_WEIGHTS)
def test_zoo_checkpoints(variant, assets, tmp_path):
    """A damaged checkpoint is found when it is read, and named. A path in the
    index that leads out of the zoo is the index's fault: the error names the
    index as the file and the member in the message (the path it gives,
    ``../../etc/passwd``, is not a file of member m3)."""
    from zoo import Zoo

    _, make, expect = ZOOS[variant]
    z = Zoo(make(_ctx(tmp_path, assets)))
    with pytest.raises(WeightspaceError) as e:
        for m in z.members():
            for ck in m.checkpoints:
                m.module(ck.epoch)
    assert e.value.path is not None, str(e.value)
    if variant == "path-escape":
        assert "index.sqlite" in e.value.path and "m3" in str(e.value), str(e.value)
    else:
        assert "m3" in e.value.path, str(e.value)


@pytest.mark.parametrize("damage", ["empty", "garbage", "no-members-table"])
def test_zoo_writer_keeps_weights_of_a_damaged_index(damage, assets, tmp_path):
    """Opening a zoo for writing (a resumed build or import) must refuse a
    damaged index, not take every stored checkpoint for an orphan of an
    interrupted write and delete it."""
    from zoo.store import ZooWriter

    z = F.copy(assets.zoo, tmp_path / "myzoo")
    index = z / "index.sqlite"
    {"empty": F.empty, "garbage": lambda p: F.random_bytes(p, 8192),
     "no-members-table": lambda p: F.sql(z, "DROP TABLE members")}[damage](index)
    before = sorted(p.relative_to(z) for p in (z / "weights").rglob("*"))
    raised = None
    try:
        ZooWriter(z, {"name": "fixture", "source": "robustness-fixture"}).close()
    except Exception as exc:  # checked below, after the files
        raised = exc
    after = sorted(p.relative_to(z) for p in (z / "weights").rglob("*"))
    assert after == before, f"checkpoints were deleted: {sorted(set(before) - set(after))}"
    assert raised is not None, "a damaged index was accepted for writing"
    _assert_names(raised, index)


# --------------------------------------------------------------- saved models


@pytest.mark.parametrize("variant", list(PREDICTOR_EDITS))
def test_load_predictor(variant, assets, tmp_path):
    from weightspace.io import load_state_dict
    from weightspace.predict import load_predictor

    edit, _, expect = PREDICTOR_EDITS[variant]
    d = F.copy(assets.predictor, tmp_path / "pred")
    edit(d)
    with pytest.raises(WeightspaceError) as e:
        load_predictor(d).predict([load_state_dict(assets.weights)])
    assert e.value.path is not None and expect[0] in e.value.path, str(e.value)
    for name in expect[1:]:
        assert name in str(e.value), (name, str(e.value))


@pytest.mark.parametrize("variant", ["empty", "truncated", "random-bytes", "huge-shape", "directory", "missing",
                                     "pickle-code", "text"] + [f"tamper:{k}" for k in HYPERNET_TAMPER])
def test_load_hypernet(variant, assets, tmp_path):
    from weightspace.generate import GraphHyperNetwork

    c = _ctx(tmp_path, assets)
    _check_generator_load(c, variant, HYPERNET_TAMPER, assets.hypernet, "hn.safetensors", GraphHyperNetwork.load)
    assert not any(m.exists() for m in c.markers)


@pytest.mark.parametrize("variant", ["empty", "truncated", "random-bytes", "directory", "missing"]
                         + [f"tamper:{k}" for k in FLOW_TAMPER])
def test_load_checkpoint_flow(variant, assets, tmp_path):
    from weightspace.generate import CheckpointFlow

    _check_generator_load(_ctx(tmp_path, assets), variant, FLOW_TAMPER, assets.flow, "gen.safetensors", CheckpointFlow.load)


def _check_generator_load(c: CaseCtx, variant: str, tamper: dict, asset: Path, name: str, load) -> None:
    """``load`` of a generator file broken as ``variant`` says (a bad file of
    :func:`weights_file`, or ``tamper:<key>`` of ``asset``'s metadata) raises
    a WeightspaceError naming the file and the ``tamper`` entry's words."""
    if variant.startswith("tamper:"):
        changes, _, expect = tamper[variant.split(":", 1)[1]]
        path = F.retag(asset, c.path(name), **changes)
    else:
        path, expect = weights_file(c, variant), []
    with pytest.raises(WeightspaceError) as e:
        load(path)
    _assert_names(e.value, path)
    for word in expect[1:]:
        assert word in str(e.value), (word, str(e.value))


# ----------------------------------------------------------------- configs


@pytest.mark.parametrize("variant", list(MERGE_FIELDS))
def test_merge_config(variant, assets, tmp_path):
    """Every wrong field is refused when the config is loaded or, at the
    latest, before the merge returns; the error names the file and field."""
    from weightspace.merge.config import load_config, run_config

    changes, expect = MERGE_FIELDS[variant]
    c = _ctx(tmp_path, assets)
    path = _write_merge_yaml(c, **changes)
    with pytest.raises(WeightspaceError) as e:
        run_config(load_config(path))
    if variant == "data-missing-file":
        # A file the config names is missing: as everywhere (MissingFileError),
        # .path is the missing file and the config is named in the message
        # with the field (tests/merge/test_merge_config_validation.py holds
        # the merge config to exactly that).
        from weightspace.errors import MissingFileError

        assert isinstance(e.value, MissingFileError), repr(e.value)
        _assert_names(e.value, c.path("nodata.npz"), "data.path")
        assert path.name in str(e.value), str(e.value)
    else:
        _assert_names(e.value, path)
    for name in expect:
        assert name in str(e.value), (name, str(e.value))


@pytest.mark.parametrize("variant", list(RECIPE_FIELDS))
def test_load_recipe(variant, assets, tmp_path):
    from zoo.recipe import load_recipe

    dotted, value, name = RECIPE_FIELDS[variant]
    c = _ctx(tmp_path, assets)
    path = _recipe(c, edit=_set(dotted, value))
    with pytest.raises(WeightspaceError) as e:
        load_recipe(path)
    _assert_names(e.value, path)
    assert name in str(e.value), (name, str(e.value))


@pytest.mark.parametrize("variant", list(SCZ_EDITS))
def test_small_cnn_zoo(variant, assets, tmp_path):
    from zoo.loaders import load_small_cnn_zoo

    edit, _, name = SCZ_EDITS[variant]
    c = _ctx(tmp_path, assets)
    d = F.copy(assets.scz, c.path("scz"))
    if edit is None:  # the pickle case
        F.malicious_npy(d / "weights.npy", c.marker())
    else:
        edit(d)
    with pytest.raises(WeightspaceError) as e:
        list(load_small_cnn_zoo(d))
    assert e.value.path is not None and str(d) in e.value.path, str(e.value)
    assert name in str(e.value), (name, str(e.value))
    assert not any(m.exists() for m in c.markers)
