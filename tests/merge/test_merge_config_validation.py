"""The merge YAML config end to end: every method runs from a file, every bad
config / weights / data file is a one-line error naming the file and key, the
rule for non-floating tensors, and the `weightspace merge` CLI error paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

import zoo
from weightspace import permutation_spec
from weightspace.errors import ConfigError, InputFileError, MissingFileError, StateDictError
from weightspace.io import load_state_dict, save_state_dict
from weightspace.merge import (
    MergeConfigError,
    MergeError,
    activation_matching,
    align_to_reference,
    average,
    breadcrumbs,
    dare,
    diagonal_fisher,
    fisher_average,
    interpolate,
    merge_many,
    ot_fusion,
    slerp,
    ste_matching,
    task_arithmetic,
    ties,
    weight_matching,
)
from weightspace.merge._common import instantiate
from weightspace.merge.config import METHODS, load_config, run_config
from weightspace.merge.methods import get_method

KW = {"in_features": 4, "hidden": [6, 6], "out_features": 3}
W = [1.0, 3.0]


def _sd(seed, **kw):
    return zoo.create_model("mlp", seed=seed, **{**KW, **kw}).state_dict()


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """Two tiny MLPs, a base model and an .npz data file in ``cfg/``; the
    working directory is another folder, so relative paths must be resolved
    against the config's folder."""
    root = tmp_path / "cfg"
    (root / "runs").mkdir(parents=True)
    sds = {"a": _sd(1), "b": _sd(2), "base": _sd(3)}
    for name, sd in sds.items():
        save_state_dict(sd, root / "runs" / f"{name}.safetensors")
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 4, generator=g), torch.randint(0, 3, (24,), generator=g)
    xt, yt = torch.randn(12, 4, generator=g), torch.randint(0, 3, (12,), generator=g)
    np.savez(root / "data.npz", x=x.numpy(), y=y.numpy(), x_test=xt.numpy(), y_test=yt.numpy())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return root, sds, (x, y)


def _config(root, **over):
    cfg = {
        "arch": "mlp", "arch_kwargs": KW, "method": "weight_matching",
        "models": [{"path": "runs/a.safetensors", "weight": W[0]}, {"path": "runs/b.safetensors", "weight": W[1]}],
    }
    cfg.update(over)
    return {k: v for k, v in cfg.items() if v is not None}


def _write(root, cfg, name="merge.yaml"):
    p = root / name
    p.write_text(yaml.safe_dump(cfg) if not isinstance(cfg, str) else cfg)
    return p


# ------------------------------------------------------------ every method
def _direct(method, sds, data):
    """The merge of ``method`` called directly (what the config must equal)."""
    a, b, base = sds["a"], sds["b"], sds["base"]
    module, spec = zoo.create_model("mlp", seed=0, **KW), permutation_spec("mlp", **KW)
    if method == "average":
        return average([a, b], W)
    if method == "weight_matching":
        return average([a, weight_matching(a, b, spec, seed=0, max_sweeps=5).apply(b)], W)
    if method == "merge_many":
        return merge_many([a, b], spec, weights=W, max_rounds=2, seed=0).state_dict
    if method == "activation_matching":
        res = activation_matching(instantiate(module, a), instantiate(module, b), data[0], spec, batch_size=8)
        return average([a, res.apply(b)], W)
    if method == "ste":
        return average([a, ste_matching(module, a, b, data, spec, steps=2, seed=0).apply(b)], W)
    if method == "ot_fusion":
        return ot_fusion([a, b], [spec, spec], target=0, weights=W, solver="sinkhorn", reg=0.05).state_dict
    if method == "fisher":
        fishers = [diagonal_fisher(module, sd, data, max_samples=16, seed=0) for sd in (a, b)]
        return fisher_average([a, b], fishers, W, eps=1e-6)
    if method == "task_arithmetic":
        return task_arithmetic(base, [a, b], [0.5, 0.25])
    if method == "ties":
        return ties(base, [a, b], W, density=0.5, trim="per_tensor", sign="weighted_sum")
    if method == "dare":
        return dare(base, [a, b], W, density=0.5, rescale="l1", combine="ties", seed=0)
    if method == "breadcrumbs":
        return breadcrumbs(base, [a, b], W, density=[0.5, 0.4], beta=0.1)
    if method == "slerp":
        return slerp(a, b, [0.0, 0.5, 1.0])
    raise AssertionError(method)


_OPTIONS = {
    "average": None,
    "weight_matching": {"max_sweeps": 5},
    "merge_many": {"max_rounds": 2},
    "activation_matching": {"batch_size": 8},
    "ste": {"steps": 2},
    "ot_fusion": {"solver": "sinkhorn", "reg": 0.05},
    "fisher": {"max_samples": 16, "eps": 1e-6},
    "task_arithmetic": {"scale": [0.5, 0.25]},
    "ties": {"density": 0.5, "trim": "per_tensor", "sign": "weighted_sum"},
    "dare": {"density": 0.5, "rescale": "l1", "combine": "ties"},
    "breadcrumbs": {"density": [0.5, 0.4], "beta": 0.1},
    "slerp": {"t": [0.0, 0.5, 1.0]},
}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_from_a_yaml_file_and_equals_the_direct_call(setup, method):
    root, sds, data = setup
    assert set(_OPTIONS) == set(METHODS)
    path = _write(root, _config(
        root, method=method, options=_OPTIONS[method], data={"path": "data.npz"},
        base={"path": "runs/base.safetensors"} if get_method(method).needs_base else None,
    ))
    out = run_config(load_config(path))
    m = zoo.create_model("mlp", **KW)
    m.load_state_dict(out.state_dict)  # strict: the merge fits the architecture
    want = _direct(method, sds, data)
    assert set(out.state_dict) == set(want)
    for k in want:
        assert torch.allclose(out.state_dict[k], want[k], atol=1e-6), (method, k)
    assert {"model0", "model1", "merged"} <= set(out.summary["eval"])


def test_relative_paths_resolve_against_the_config_folder_not_the_cwd(setup, tmp_path):
    root, sds, _ = setup
    cfg = load_config(_write(root, _config(
        root, method="task_arithmetic", base={"path": "runs/base.safetensors"}, data={"path": "data.npz"},
    )))
    assert cfg.models[1].path == root / "runs" / "b.safetensors"
    assert cfg.base.path == root / "runs" / "base.safetensors"
    assert cfg.data["path"] == root / "data.npz"
    assert not (tmp_path / "elsewhere" / "data.npz").exists()
    out = run_config(cfg)  # cwd is tmp_path/elsewhere
    assert torch.equal(out.state_dict["layers.0.weight"], task_arithmetic(sds["base"], [sds["a"], sds["b"]])["layers.0.weight"])


# -------------------------------------------------------- config validation
BAD_CONFIGS = [
    # (changes to the good config, field, message regex)
    ({"models": [{"path": "runs/a.safetensors"}, {"path": "runs/b.safetensors", "weight": "heavy"}]},
     "models[1].weight", "expected a number, got str 'heavy'"),
    ({"models": [{"path": "runs/a.safetensors", "weight": -1.0}]}, "models[0].weight", ">= 0"),
    ({"models": [{"path": "runs/a.safetensors", "weight": 0}]}, "models[0].weight", "sum to 0"),
    ({"models": [{"path": "runs/a.safetensors", "wieght": 2}]}, "models[0].wieght", "did you mean 'weight'"),
    ({"models": [{"weight": 1.0}]}, "models[0].path", "missing required key"),
    ({"models": [{"path": 12}]}, "models[0].path", "expected a string"),
    ({"models": "runs/a.safetensors"}, "models", "expected a list"),
    ({"models": []}, "models", "at least one model"),
    ({"options": "fast"}, "options", "expected a mapping, got str 'fast'"),
    ({"options": {"max_sweep": 5}}, "options.max_sweep", "unknown key; did you mean 'max_sweeps'"),
    ({"options": {"max_sweeps": "many"}}, "options.max_sweeps", "expected an integer"),
    ({"options": {"max_sweeps": 0}}, "options.max_sweeps", ">= 1"),
    ({"method": "ot_fusion", "options": {"solver": "emdd"}}, "options.solver", "did you mean 'emd'"),
    ({"method": "ot_fusion", "options": {"ground": "activations"}}, "options.ground", "needs 'data'"),
    ({"method": "average", "options": {"seed": 1}}, "options.seed", "takes no options"),
    ({"method": "task_arithmetic", "base": {"path": "runs/base.safetensors"}, "options": {"scale": [1.0]}},
     "options.scale", "1 entries for 2 models"),
    ({"method": "task_arithmetic", "base": {"path": "runs/base.safetensors"}, "options": {"scale": "big"}},
     "options.scale", "expected a number or a list"),
    ({"method": "task_arithmetic", "base": {"path": "runs/base.safetensors"}, "options": {"scale": [1.0, "x"]}},
     "options.scale[1]", "expected a number"),
    ({"options": {"groups": ["a", 3]}}, "options.groups[1]", "expected a string"),
    ({"options": {1: 2}}, "options.1", "unknown key"),
    ({"method": "average", "options": {1: 2, "b": 3}}, "options.1", "takes no options"),
    ({"method": "task_arithmetic"}, "base", "needs 'base"),
    ({"method": "task_arithmetic", "base": {"path": "runs/base.safetensors"}, "repair": "repair"}, "repair", "task_arithmetic"),
    ({"base": {"path": "runs/base.safetensors"}}, "base", "only used by method task_arithmetic"),
    ({"method": "weight_matchin"}, "method", "did you mean 'weight_matching'"),
    ({"method": 3}, "method", "expected a string"),
    ({"arch": "nosuch"}, "arch", r"unknown architecture 'nosuch' \(registered: .*mlp"),
    ({"arch": "mlpp"}, "arch", "did you mean 'mlp'"),
    ({"arch": None}, "models[0].arch", "no 'arch'"),
    ({"arch_kwargs": {"hiden": [4]}}, "arch_kwargs.hiden", "did you mean 'hidden'"),
    ({"arch_kwargs": [4]}, "arch_kwargs", "expected a mapping"),
    ({"reference": 2}, "reference", "out of range for 2 models"),
    ({"reference": -1}, "reference", ">= 0"),
    ({"reference": "first"}, "reference", "expected an integer"),
    ({"repair": "repiar"}, "repair", "did you mean 'repair'"),
    ({"seed": 1.5}, "seed", "expected an integer"),
    ({"modles": []}, "modles", "did you mean 'models'"),
    ({"data": "digits"}, "data", "expected a mapping"),
    ({"data": {"dataset": "digits", "path": "data.npz"}}, "data", "exactly one"),
    ({"data": {"path": "data.npz", "split": "train"}}, "data.split", "only applies to data.dataset"),
    ({"data": {"dataset": "digits", "split": "training"}}, "data.split", "did you mean 'train'"),
    ({"data": {"path": "data.npz", "max_samples": 0}}, "data.max_samples", ">= 1"),
    ({"data": {"path": "data.npz", "max_sample": 10}}, "data.max_sample", "did you mean 'max_samples'"),
    ({"barrier": {"num_lambda": 5}}, "barrier.num_lambda", "did you mean 'num_lambdas'"),
    ({"barrier": {"num_lambdas": 1.5}}, "barrier.num_lambdas", "expected an integer"),
    ({"barrier": "yes"}, "barrier", "expected a mapping or a boolean"),
    ({"barrier": {"lambdas": [0, "half", 1]}}, "barrier.lambdas[1]", "expected a number"),
]


@pytest.mark.parametrize("over,field,msg", BAD_CONFIGS, ids=[b[1] + ":" + b[2][:20] for b in BAD_CONFIGS])
def test_bad_config_is_one_error_naming_file_and_key(setup, over, field, msg):
    root, _, _ = setup
    path = _write(root, _config(root, **over))
    with pytest.raises(MergeConfigError, match=msg) as info:
        load_config(path)
    exc = info.value
    assert isinstance(exc, ConfigError) and isinstance(exc, MergeError)
    assert exc.path == str(path) and exc.field == field
    assert str(exc).startswith(f"{path}: [{field}] ") and "\n" not in str(exc)


@pytest.mark.parametrize("text,cls,msg", [
    ("method: [average\nmodels: a", InputFileError, r"invalid YAML at line \d+"),
    ("", MergeConfigError, "empty"),
    ("- a\n- b\n", MergeConfigError, "expected a mapping"),
])
def test_unparsable_config_names_the_file(setup, text, cls, msg):
    root, _, _ = setup
    path = _write(root, text)
    with pytest.raises(cls, match=msg) as info:
        load_config(path)
    assert info.value.path == str(path)


def test_bad_arch_kwargs_value_names_the_key(setup):
    root, _, _ = setup
    cfg = load_config(_write(root, _config(root, arch_kwargs={**KW, "hidden": "abc"})))
    with pytest.raises(MergeConfigError, match="cannot build architecture 'mlp'") as info:
        run_config(cfg)
    assert info.value.field == "arch_kwargs"


# --------------------------------------------------- weights and data files
def test_missing_weights_file_names_the_file_and_key(setup):
    root, _, _ = setup
    path = _write(root, _config(root, models=["runs/a.safetensors", "runs/nope.safetensors"]))
    with pytest.raises(MissingFileError, match=r"no weights file.*models\[1\]\.path of .*merge\.yaml") as info:
        run_config(load_config(path))
    assert info.value.path == str(root / "runs" / "nope.safetensors") and info.value.field == "models[1].path"


def test_weights_of_another_width_name_the_file_and_key(setup):
    root, _, _ = setup
    save_state_dict(_sd(4, hidden=[5, 6]), root / "runs" / "narrow.safetensors")
    path = _write(root, _config(root, models=["runs/a.safetensors", "runs/narrow.safetensors"]))
    with pytest.raises(StateDictError, match=r"layers\.0\.weight") as info:
        run_config(load_config(path))
    assert info.value.path.endswith("narrow.safetensors") and info.value.field == "models[1].path"


def _npz(root, name="bad.npz", pickle=False, **arrays):
    p = root / name
    np.savez(p, **arrays) if pickle else np.savez(p, **{k: np.asarray(v) for k, v in arrays.items()})
    return p


X, Y = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32), np.arange(10) % 3
BAD_DATA = [
    ({"x": X}, "y", "no array 'y'"),
    ({"X": X, "y": Y}, "x", r"no array 'x'.*has: X, y"),
    ({"x": X, "y": Y, "x_test": X}, "y_test", "x_test and y_test come together"),
    ({"x": X, "y": Y[:7]}, "y", r"one class label per sample.*\(7,\)"),
    ({"x": X, "y": np.stack([Y, Y], 1)}, "y", "one class label per sample"),
    ({"x": X, "y": Y + 0.5}, "y", "integer class labels"),
    ({"x": X, "y": Y - 1}, "y", ">= 0"),
    ({"x": X, "y": Y + 5}, "y", "class label 7 is out of range for a model with 3 outputs"),
    ({"x": X[:, :3], "y": Y}, "x", r"model cannot run on samples of shape \(3,\)"),
    ({"x": X, "y": np.array(list("abcdefghij"))}, "y", "expected numbers"),
    ({"x": np.full_like(X, np.nan), "y": Y}, "x", "NaN"),
    ({"x": X, "y": Y, "x_test": X[:, :2], "y_test": Y}, "x_test", "samples of shape"),
    ({"x": X[:0], "y": Y[:0]}, "x", "at least one sample"),
]


@pytest.mark.parametrize("arrays,field,msg", BAD_DATA, ids=[f"{b[1]}:{b[2][:16]}" for b in BAD_DATA])
def test_bad_data_file_names_the_file_and_array(setup, arrays, field, msg):
    root, _, _ = setup
    data = _npz(root, **arrays)
    cfg = load_config(_write(root, _config(root, method="average", data={"path": "bad.npz"})))
    with pytest.raises(InputFileError, match=msg) as info:
        run_config(cfg)
    assert info.value.path == str(data) and info.value.field == field and "\n" not in str(info.value)


def test_pickled_or_missing_data_file_is_refused(setup):
    root, _, _ = setup
    data = _npz(root, pickle=True, x=np.array([{"a": 1}] * 10, dtype=object), y=Y)
    cfg = load_config(_write(root, _config(root, method="average", data={"path": "bad.npz"})))
    with pytest.raises(InputFileError, match="cannot read") as info:
        run_config(cfg)
    assert info.value.path == str(data)
    cfg = load_config(_write(root, _config(root, method="average", data={"path": "gone.npz"})))
    with pytest.raises(MissingFileError, match=r"data\.path of .*merge\.yaml") as info:
        run_config(cfg)
    assert info.value.path == str(root / "gone.npz") and info.value.field == "data.path"


# ------------------------------------------------------ non-float tensors
def _bn_model():
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


def _bn_sd(seed, batches, extra=None):
    torch.manual_seed(seed)
    sd = {k: v.clone() for k, v in _bn_model().state_dict().items()}
    sd["1.num_batches_tracked"] = torch.tensor(batches)
    if extra is not None:
        sd["mask"] = torch.tensor(extra)
    return sd


def test_num_batches_tracked_takes_the_maximum_in_every_merge():
    a, b, c = _bn_sd(0, 7), _bn_sd(1, 30), _bn_sd(2, 12)
    key = "1.num_batches_tracked"
    assert int(average([a, b, c])[key]) == 30
    assert int(interpolate(a, b, 0.25)[key]) == 30
    assert int(task_arithmetic(a, [b, c])[key]) == 30
    assert int(fisher_average([a, b], [{}, {}])[key]) == 30
    spec = permutation_spec(_bn_model(), torch.randn(2, 4))
    assert int(align_to_reference([a, b, c], spec).state_dict[key]) == 30
    assert int(merge_many([a, b], spec, max_rounds=1).state_dict[key]) == 30
    assert int(ot_fusion([a, b], spec).state_dict[key]) == 30
    assert int(average([a, a])[key]) == 7


def test_identical_non_float_tensors_are_copied_and_differing_ones_refused():
    a, b = _bn_sd(0, 5, extra=[1, 0, 1]), _bn_sd(1, 5, extra=[1, 0, 1])
    assert average([a, b])["mask"].tolist() == [1, 0, 1]
    c = _bn_sd(2, 5, extra=[1, 1, 1])
    for merge in (lambda: average([a, c]), lambda: interpolate(a, c, 0.5), lambda: task_arithmetic(a, [b, c])):
        with pytest.raises(MergeError, match=r"non-floating tensor 'mask' differs"):
            merge()
    d = dict(a, mask=torch.tensor([1.0, 0.0, 1.0]).bool())
    with pytest.raises(MergeError, match=r"'mask'.*dtype"):
        average([a, d])


# -------------------------------------------------------------------- CLI
def _cli(*args):
    from weightspace.cli import app

    return CliRunner().invoke(app, ["merge", *map(str, args)])


def _assert_one_line_error(res, *names):
    assert res.exit_code == 2, res.output
    assert "error:" in res.output
    assert "Traceback" not in res.output and "internal error" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1, res.output
    for n in names:
        assert str(n) in res.output, (n, res.output)


CLI_CASES = [  # (changes to the good config, what the one line must name besides the config file)
    ({"models": [{"path": "runs/a.safetensors"}, {"path": "runs/b.safetensors", "weight": "heavy"}]},
     ["[models[1].weight]", "heavy"]),
    ({"options": "fast"}, ["[options]", "fast"]),
    ({"options": {"max_sweep": 5}}, ["[options.max_sweep]", "did you mean 'max_sweeps'"]),
    ({"models": "runs/a.safetensors"}, ["[models]", "expected a list"]),
    ({"reference": 5}, ["[reference]", "out of range"]),
    ({"method": "weight_matchin"}, ["[method]", "did you mean 'weight_matching'"]),
    ({"arch": "nosuch"}, ["[arch]", "unknown architecture 'nosuch'", "mlp"]),
    ({"models": ["runs/a.safetensors", "runs/missing.safetensors"]}, ["missing.safetensors", "[models[1].path]"]),
    ({"data": {"path": "nodata.npz"}}, ["nodata.npz", "[data.path]"]),
]


@pytest.mark.parametrize("over,names", CLI_CASES, ids=[c[1][0] for c in CLI_CASES])
def test_cli_bad_config_exits_2_with_one_line(setup, over, names):
    root, _, _ = setup
    path = _write(root, _config(root, **over))
    out = root / "merged.safetensors"
    _assert_one_line_error(_cli(path, out), path, *names)
    assert not out.exists()


def test_cli_yaml_syntax_error_and_out_directory(setup, tmp_path):
    root, _, _ = setup
    bad = _write(root, "method: [average\n")
    _assert_one_line_error(_cli(bad, root / "m.safetensors"), bad, "invalid YAML at line")
    good = _write(root, _config(root, method="average"), "good.yaml")
    outdir = tmp_path / "outdir"
    outdir.mkdir()
    _assert_one_line_error(_cli(good, outdir), outdir, "is a directory")
    sdir = tmp_path / "x.safetensors"
    sdir.mkdir()
    _assert_one_line_error(_cli(good, sdir), sdir, "is a directory")
    res = _cli(good, root / "ok.safetensors")
    assert res.exit_code == 0, res.output
    assert set(load_state_dict(root / "ok.safetensors")) == set(_sd(0))
