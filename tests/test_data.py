"""weightspace.data: datasets by name without importing zoo (registry,
entry points, named sources), and zoos passed in as objects (ZooLike)."""

import sys
import types
from importlib import metadata

import pytest
import torch

import weightspace.data as data
from weightspace.errors import ConfigError, UnknownNameError


def _tiny(name="t_tiny", k=2):
    x = torch.arange(8.0).reshape(4, 2)
    y = torch.tensor([0, 1, 0, 1])
    return data.Dataset(name=name, task="classification", x_train=x, y_train=y, x_val=x, y_val=y,
                        x_test=x * k, y_test=y, num_classes=2)


@pytest.fixture
def clean_registry(monkeypatch):
    """A registry of the test's own (the real one is restored afterwards)."""
    monkeypatch.setattr(data, "_LOADERS", {})
    monkeypatch.setattr(data, "_SOURCES", {})
    monkeypatch.setattr(data, "_BROKEN", {})
    monkeypatch.setattr(data, "_ENTRY_POINTS_LOADED", False)
    data._load_cached.cache_clear()
    yield
    data._load_cached.cache_clear()


def test_register_load_and_cache(clean_registry, monkeypatch):
    monkeypatch.setattr(metadata, "entry_points", lambda group: [])
    calls = []

    @data.register_dataset("t_tiny")
    def _load(k: int = 2):
        calls.append(k)
        return _tiny(k=k)

    ds = data.load_dataset("t_tiny", k=3)
    assert isinstance(ds, data.Dataset) and torch.equal(ds.x_test, ds.x_train * 3)
    assert data.load_dataset("t_tiny", k=3) is ds and calls == [3]
    assert data.list_datasets() == ["t_tiny"]
    with pytest.raises(ConfigError, match="dataset 't_tiny'"):
        data.load_dataset("t_tiny", colour=True)
    with pytest.raises(ValueError, match="already registered"):
        data.register_dataset("t_tiny")(lambda: _tiny())
    # a loader may return any object with the fields (duck typing): returned as is
    duck = types.SimpleNamespace(**vars(_tiny("t_duck")))
    data.register_dataset("t_duck")(lambda: duck)
    assert data.load_dataset("t_duck") is duck


def test_unknown_name_is_one_line_with_did_you_mean(clean_registry, monkeypatch):
    monkeypatch.setattr(metadata, "entry_points", lambda group: [])
    with pytest.raises(UnknownNameError, match="none is registered; `import zoo`"):
        data.load_dataset("digits")
    data.register_dataset("digits")(lambda: _tiny("digits"))
    with pytest.raises(KeyError) as info:
        data.load_dataset("digitz")
    assert "\n" not in str(info.value) and "did you mean 'digits'" in str(info.value)


def _fake_plugin(monkeypatch, name, body):
    mod = types.ModuleType(name)
    exec(body, mod.__dict__)
    monkeypatch.setitem(sys.modules, name, mod)


def test_entry_points_are_loaded_on_the_first_unknown_name(clean_registry, monkeypatch):
    _fake_plugin(monkeypatch, "t_plugin", "import weightspace.data as d\n"
                 "def register():\n    d.register_dataset('t_plug')(lambda: None)\n")
    eps = [metadata.EntryPoint("t", "t_plugin:register", data.ENTRY_POINT_GROUP),
           metadata.EntryPoint("broken", "t_missing_module", data.ENTRY_POINT_GROUP)]
    asked = []
    monkeypatch.setattr(metadata, "entry_points", lambda group: asked.append(group) or eps)
    assert "t_plug" in data.list_datasets() and asked == [data.ENTRY_POINT_GROUP]
    with pytest.raises(UnknownNameError, match="t_missing_module.*ModuleNotFoundError"):
        data.load_dataset("nope")  # the broken entry point is named, the good one still loaded


def test_a_named_source_is_imported_only_when_needed(clean_registry, monkeypatch):
    monkeypatch.setattr(metadata, "entry_points", lambda group: [])
    data.register_dataset_source("t_source_loader:go")  # not importable yet: naming it imports nothing
    _fake_plugin(monkeypatch, "t_source_loader", "import weightspace.data as d\n"
                 "def go():\n    d.register_dataset('t_src')(lambda: None)\n")
    assert "t_src" not in data._LOADERS
    assert data.list_datasets() == ["t_src"]


def test_zoo_datasets_register_into_the_library_registry():
    import zoo.datasets

    assert zoo.datasets.register_dataset is data.register_dataset
    assert {"digits", "mnist1d", "inr_digits"} <= set(data.list_datasets())
    assert data.load_dataset("digits").x_train.shape[1:] == (1, 8, 8)


def test_zooish_objects_satisfy_zoolike_and_fit_zoo_rejects_paths():
    from weightspace.predict import fit_zoo

    class FakeZoo:
        def members(self):
            return []

        def to_pandas(self):
            return None

    assert isinstance(FakeZoo(), data.ZooLike) and not isinstance("runs/zoo", data.ZooLike)
    with pytest.raises(TypeError, match=r"zoo.Zoo\(path\)"):
        fit_zoo("runs/zoo")
