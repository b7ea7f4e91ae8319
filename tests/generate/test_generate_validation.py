"""Generators on bad input: damaged or tampered saved hypernetworks and
checkpoint flows, non-finite generated weights, zoos that mix architectures,
the novelty report's scale, and the ``weightspace generate`` options."""

from __future__ import annotations

import json
import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

import zoo
from weightspace.cli import app
from weightspace.errors import ConfigError, InputFileError, MissingFileError, NonFiniteWeightsError, StateDictError
from weightspace.generate import (
    ArchSpec,
    CheckpointFlow,
    CheckpointSet,
    GraphHyperNetwork,
    MixedArchitecturesError,
    collect_checkpoints,
    novelty_report,
    train_checkpoint_flow,
)
from weightspace.symmetry import apply_permutation, random_permutation

from tests.file_checks import check_truncated_and_empty

ARCH = ArchSpec.of("mlp", hidden=[6], in_features=64)


def _cli(*args):
    r = CliRunner().invoke(app, [*map(str, args)])
    return r, r.output


def _one_line_error(r, out, *names):
    assert r.exit_code == 2, out
    assert "error:" in out and "Traceback" not in out and "internal error" not in out and "Aborted" not in out
    for n in names:
        assert n in out, out


def _resave(path, *, meta=None, tensors=None):
    """Rewrite a saved generator with changed metadata entries / tensors."""
    with safe_open(str(path), framework="pt") as f:
        m = dict(f.metadata())
        t = {k: f.get_tensor(k) for k in f.keys()}
    m.update(meta or {})
    t = tensors(t) if tensors else t
    save_file(t, str(path), metadata=m)


def _config(path):
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["config"])


# ------------------------------------------------------------------ saved hypernetwork
@pytest.fixture
def hn_file(tmp_path):
    torch.manual_seed(0)
    hn = GraphHyperNetwork(hidden=4, num_layers=1, rank=4, kernel_grid=3, generic_width=4, probes=torch.zeros(3, 64))
    return hn.save(tmp_path / "hn.safetensors")


def test_hypernet_round_trip_still_works(hn_file):
    hn = GraphHyperNetwork.load(hn_file)
    assert hn.probes.shape == (3, 64)
    assert set(hn.predict(ARCH, seed=0)) == set(ARCH.module().state_dict())


@pytest.mark.parametrize("change,field", [
    ({"hidden": "four"}, "config.hidden"),
    ({"hidden": 0}, "config.hidden"),
    ({"hiden": 4}, "config.hiden"),
    ({"num_layers": 10**9}, "config.num_layers"),
    ({"hidden": 2**20}, "config.hidden"),  # hidden x hidden GMN matrices: 4 TB
    ({"gain": float("nan")}, "config.gain"),
])
def test_hypernet_config_errors_name_the_key(hn_file, change, field):
    _resave(hn_file, meta={"config": json.dumps({**_config(hn_file), **change})})
    t = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        GraphHyperNetwork.load(hn_file)
    assert time.perf_counter() - t < 2.0
    assert e.value.field == field and e.value.path == str(hn_file)


def test_hypernet_unknown_key_suggests_the_right_one(hn_file):
    cfg = _config(hn_file)
    cfg["hiden"] = cfg.pop("hidden")
    _resave(hn_file, meta={"config": json.dumps(cfg)})
    with pytest.raises(ConfigError, match="did you mean 'hidden'"):
        GraphHyperNetwork.load(hn_file)


def test_hypernet_4tb_probe_shape_fails_fast_and_names_the_field(hn_file):
    _resave(hn_file, meta={"probe_shape": json.dumps([2**20, 2**20])})
    t = time.perf_counter()
    with pytest.raises(InputFileError, match="tampered") as e:
        GraphHyperNetwork.load(hn_file)
    assert time.perf_counter() - t < 2.0 and e.value.field == "probe_shape" and e.value.path == str(hn_file)
    _resave(hn_file, meta={"probe_shape": json.dumps([3, "64"])})
    with pytest.raises(InputFileError) as e:
        GraphHyperNetwork.load(hn_file)
    assert e.value.field == "probe_shape"


def test_hypernet_metadata_that_is_not_json_or_not_a_hypernet(hn_file):
    _resave(hn_file, meta={"config": "{hidden: 4"})
    with pytest.raises(InputFileError, match="invalid JSON") as e:
        GraphHyperNetwork.load(hn_file)
    assert e.value.field == "config" and e.value.path == str(hn_file)
    _resave(hn_file, meta={"kind": "CheckpointFlow"})
    with pytest.raises(InputFileError, match="not a saved GraphHyperNetwork") as e:
        GraphHyperNetwork.load(hn_file)


def test_hypernet_missing_or_misshaped_tensor_is_named(hn_file):
    gone = "bilinear.weight"
    _resave(hn_file, tensors=lambda t: {k: v for k, v in t.items() if k != gone})
    with pytest.raises(StateDictError, match="missing") as e:
        GraphHyperNetwork.load(hn_file)
    assert e.value.field == gone and e.value.path == str(hn_file)
    _resave(hn_file, tensors=lambda t: {**t, gone: torch.zeros(2, 2)})
    with pytest.raises(StateDictError, match="shape") as e:
        GraphHyperNetwork.load(hn_file)
    assert e.value.field == gone


def test_truncated_empty_missing_or_directory_generator_files(tmp_path, hn_file):
    blob = hn_file.read_bytes()
    for load in (GraphHyperNetwork.load, CheckpointFlow.load):
        hn_file.write_bytes(blob)
        check_truncated_and_empty(hn_file, lambda: load(hn_file))
        with pytest.raises(InputFileError, match="is a directory"):
            load(tmp_path)
        with pytest.raises(MissingFileError):
            load(tmp_path / "nope.safetensors")


# ------------------------------------------------------------------ non-finite weights
def test_nan_hypernetwork_is_refused_in_the_library_and_the_cli(tmp_path, hn_file):
    _resave(hn_file, tensors=lambda t: {k: (v * float("nan") if v.is_floating_point() else v) for k, v in t.items()})
    hn = GraphHyperNetwork.load(hn_file)
    with pytest.raises(NonFiniteWeightsError, match="NaN/Inf") as e:
        hn.predict(ARCH, seed=0)
    assert e.value.field in ARCH.module().state_dict()
    out = tmp_path / "init.safetensors"
    r, text = _cli("generate", "init", "mlp", "-a", "hidden=[6]", "--hypernet", hn_file, "-o", out)
    _one_line_error(r, text, "NaN/Inf", "layers.")
    assert not out.exists()


@pytest.fixture(scope="module")
def flow(make_checkpoint_set):
    cs = make_checkpoint_set(ARCH)
    model, _ = train_checkpoint_flow(cs, steps=2, batch_size=8, hidden=16, depth=1, bank_size=2, seed=0)
    return cs, model


def test_nan_checkpoint_flow_sample_is_refused(flow):
    cs, model = flow
    broken = CheckpointFlow(ARCH, hidden=16, depth=1, cond_range=model.cond_range)
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        broken.out.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteWeightsError, match="own weights are NaN") as e:
        broken.generate(ARCH, 2, condition=cs.metric.mean().item(), seed=0)
    assert e.value.field in ARCH.module().state_dict()
    with pytest.raises(ValueError, match="steps must be >= 1"):
        model.sample(1, cs.metric.mean().item(), seed=0, steps=0)


# ------------------------------------------------------------------ saved checkpoint flow
@pytest.fixture
def flow_file(tmp_path, flow):
    return flow[1].save(tmp_path / "flow.safetensors")


def test_flow_round_trip_still_works(flow_file, flow):
    assert CheckpointFlow.load(flow_file).cond_range == flow[1].cond_range


@pytest.mark.parametrize("change,field", [
    ({"hidden": "wide"}, "config.hidden"),
    ({"depht": 1}, "config.depht"),
    ({"hidden": 2**30}, "config.hidden"),
    ({"cond_range": [1.0, 0.0]}, "config.cond_range"),
    ({"cond_range": "0-1"}, "config.cond_range"),
    ({"arch": {"name": "no_such_net"}}, "config.arch"),
    ({"arch": {"name": "mlp", "kwargs": {"widht": 3}}}, "config.arch"),
])
def test_flow_config_errors_name_the_key(flow_file, change, field):
    _resave(flow_file, meta={"config": json.dumps({**_config(flow_file), **change})})
    with pytest.raises(ConfigError) as e:
        CheckpointFlow.load(flow_file)
    assert e.value.field == field and e.value.path == str(flow_file)


def test_flow_4tb_architecture_fails_fast_and_names_the_field(flow_file):
    cfg = _config(flow_file)
    cfg["arch"] = {"name": "mlp", "kwargs": {"in_features": 64, "hidden": [2**20, 2**20]}}  # 4 TB of weights
    _resave(flow_file, meta={"config": json.dumps(cfg)})
    t = time.perf_counter()
    with pytest.raises(InputFileError, match="tampered") as e:
        CheckpointFlow.load(flow_file)
    assert time.perf_counter() - t < 5.0 and e.value.field == "config.arch"
    cfg["arch"] = {"name": "mlp", "kwargs": {"in_features": 64, "hidden": [7]}}  # plausible but not what is stored
    _resave(flow_file, meta={"config": json.dumps(cfg)})
    with pytest.raises(StateDictError, match="config.arch") as e:
        CheckpointFlow.load(flow_file)
    assert e.value.field == "mean"


def test_flow_missing_tensor_is_named(flow_file):
    _resave(flow_file, tensors=lambda t: {k: v for k, v in t.items() if k != "out.weight"})
    with pytest.raises(StateDictError, match="missing") as e:
        CheckpointFlow.load(flow_file)
    assert e.value.field == "out.weight" and e.value.path == str(flow_file)


# ------------------------------------------------------------------ architecture identity
def _recipe(space, seeds=1):
    return {
        "name": "tiny", "arch": "mlp", "model": {"hidden": [4]},
        "data": {"name": "digits", "split_seed": 0},
        "train": {"epochs": 1, "batch_size": 256, "optimizer": "adam", "lr": 0.01},
        "checkpoints": [0, 1],
        "search": {"method": "grid", "seeds": seeds, "space": space},
    }


@pytest.fixture(scope="module")
def mixed_zoo(tmp_path_factory):
    """Two members: a ReLU and a Tanh MLP (same tensor shapes)."""
    return zoo.build_zoo(_recipe({"model.activation": ["relu", "tanh"]}), tmp_path_factory.mktemp("mixed") / "z",
                         workers=1, backend="serial", progress=False).open()


@pytest.fixture(scope="module")
def relu_zoo(tmp_path_factory):
    return zoo.build_zoo(_recipe({}, seeds=2), tmp_path_factory.mktemp("relu") / "z", workers=1, backend="serial",
                         progress=False).open()


def test_relu_and_tanh_members_are_not_one_architecture(mixed_zoo, tmp_path):
    ids = [m.member_id for m in mixed_zoo.members()]
    with pytest.raises(MixedArchitecturesError) as e:
        collect_checkpoints(mixed_zoo)
    assert e.value.field == "activation"
    assert all(i in str(e.value) for i in ids) and "relu" in str(e.value) and "tanh" in str(e.value)
    r, text = _cli("generate", "flow-train", mixed_zoo.path, tmp_path / "f.safetensors", "--steps", 1, "--no-progress")
    _one_line_error(r, text, "activation", *ids)
    assert not (tmp_path / "f.safetensors").exists()
    assert len(collect_checkpoints(mixed_zoo.filter(activation="relu"))) == 2


def test_cli_refuses_nan_samples_and_writes_nothing(relu_zoo, tmp_path):
    flow = tmp_path / "flow.safetensors"
    r, text = _cli("generate", "flow-train", relu_zoo.path, flow, "--steps", 1, "--no-progress")
    assert r.exit_code == 0, text
    _resave(flow, tensors=lambda t: {k: (v * float("nan") if k == "out.bias" else v) for k, v in t.items()})
    lo, hi = CheckpointFlow.load(flow).cond_range
    out = tmp_path / "samples"
    r, text = _cli("generate", "samples", flow, relu_zoo.path, "-o", out, "--n", 2, "--condition", (lo + hi) / 2)
    _one_line_error(r, text, "NaN/Inf", "out.bias")
    assert not out.exists()


# ------------------------------------------------------------------ novelty scale
def test_a_tiny_random_network_is_not_a_near_copy_of_a_collapsed_run(make_checkpoint_set):
    """A run that collapsed to tiny weights sits in the training set. An
    independent tiny N(0, 1e-3) network is close to it in absolute terms
    only; relative to their scale the two are as different as independent
    networks. A permuted training checkpoint is still an exact copy."""
    cs = make_checkpoint_set(ARCH)
    g = torch.Generator().manual_seed(0)
    tiny_run = torch.stack([1e-3 * torch.randn(cs.values.shape[1], generator=g) for _ in range(3)])
    train = CheckpointSet(ARCH, torch.cat([cs.values, tiny_run]), torch.cat([cs.metric, torch.full((3,), 0.1)]),
                          "test_acc", cs.member_ids + ["collapsed"] * 3, cs.epochs + [0, 1, 2])
    tiny = {k: 1e-3 * torch.randn(v.shape, generator=g) for k, v in cs.state_dict(0).items()}
    spec = ARCH.template().spec
    permuted = apply_permutation(cs.state_dict(5), spec, random_permutation(spec, seed=1))
    rep = novelty_report([tiny, permuted], train)
    assert rep.rows[0]["nearest"]["member_id"] == "collapsed"
    assert rep.rows[0]["distance"] < 0.05 * rep.rows[1]["distance"] + 0.1  # absolutely close ...
    assert not rep.rows[0]["copy"] and not rep.rows[0]["near_copy"], rep.rows[0]  # ... but not a copy
    assert 1.0 < rep.rows[0]["rel_distance"] < 1.6  # ~sqrt(2): independent networks
    assert rep.rows[1]["copy"] and rep.rows[1]["nearest"]["index"] == 5
    t = rep.summary["thresholds"]
    assert t["copy_tol"] == 1e-6 and t["near_copy_ratio"] == 0.1
    assert "1e-06" in rep.thresholds_text() and "0.1" in rep.thresholds_text()
    assert json.loads(json.dumps(rep.to_dict()))["summary"]["thresholds"]["near_copy_ratio"] == 0.1


# ------------------------------------------------------------------ CLI options
@pytest.mark.parametrize("args,name", [
    (["hypernet-train", "{tmp}/hn.safetensors", "--steps", "0"], "--steps"),
    (["hypernet-train", "{tmp}/hn.safetensors", "--steps", "-3"], "--steps"),
    (["hypernet-train", "{tmp}/hn.safetensors", "--archs-per-step", "0"], "--archs-per-step"),
    (["hypernet-train", "{tmp}/hn.safetensors", "--threads", "0"], "--threads"),
    (["flow-train", "{tmp}", "{tmp}/f.safetensors", "--steps", "0"], "--steps"),
    (["samples", "{tmp}/f", "{tmp}", "-o", "{tmp}/o", "--condition", "0.5", "--n", "0"], "--n"),
    (["inr-init", "{tmp}/s.safetensors", "--count", "0"], "--count"),
    (["inr-init", "{tmp}/s.safetensors", "--outer-steps", "-1"], "--outer-steps"),
    (["inr-init", "{tmp}/s.safetensors", "--inner-steps", "0"], "--inner-steps"),
    (["init", "mlp", "--hypernet", "{tmp}/h", "-o", "{tmp}/o", "--seed", "-1"], "--seed"),
    (["hypernet-train", "{tmp}/hn.safetensors", "--steps", "abc"], "--steps"),
])
def test_counts_are_bounded(tmp_path, args, name):
    r, text = _cli("generate", *[a.format(tmp=tmp_path) for a in args])
    assert r.exit_code == 2, text
    assert name in text and "Traceback" not in text and "Aborted" not in text
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("args", [
    ["hypernet-train", "{tmp}", "--steps", "1"],
    ["inr-init", "{tmp}", "--count", "1", "--outer-steps", "1"],
    ["flow-train", "{tmp}/zoo", "{tmp}", "--steps", "1"],
    ["init", "mlp", "--hypernet", "{tmp}/h", "-o", "{tmp}"],
])
def test_an_output_that_is_a_directory_is_named_before_any_work(tmp_path, args):
    t = time.perf_counter()
    r, text = _cli("generate", *[a.format(tmp=tmp_path) for a in args])
    _one_line_error(r, text, str(tmp_path), "is a directory")
    assert time.perf_counter() - t < 5.0


def test_samples_out_that_is_a_file_is_named(tmp_path, flow_file):
    f = tmp_path / "file.txt"
    f.write_text("x")
    r, text = _cli("generate", "samples", flow_file, tmp_path, "-o", f, "--condition", "0.3")
    _one_line_error(r, text, str(f), "needs a directory")
