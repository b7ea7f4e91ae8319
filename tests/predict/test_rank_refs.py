"""``rank_checkpoints`` / ``weightspace predict rank --arch`` with any model
reference: a registry name, ``pkg.mod:factory`` + kwargs, ``hf:DIR``; an
architecture the predictor was not fit on is one line naming both (exit 2)."""

import json

import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from tests.model_refs import bad_references, one_error_line, save_tiny_gpt2
from weightspace import parameter_graph
from weightspace.cli import app
from weightspace.errors import StateDictError, UnknownNameError
from weightspace.io import save_state_dict
from weightspace.predict import LinearPredictor, WeightDataset, rank_checkpoints
from weightspace.predict.base import ArchitectureMismatchError

runner = CliRunner()
FACTORY = f"{__name__}:make_mlp"


def make_mlp(width=6):
    return nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 3)), torch.randn(2, 4)


def _mlps(n=8, width=6):
    out = []
    for s in range(n):
        torch.manual_seed(s)
        out.append(make_mlp(width)[0].state_dict())
    return out


def _targets(sds):
    # a target the weights determine (the first layer's norm)
    return [float(sd["0.weight"].norm()) for sd in sds]


@pytest.fixture()
def factory_predictor(tmp_path):
    sds = _mlps()
    p = LinearPredictor().fit(sds, _targets(sds))
    files = []
    for i, sd in enumerate(_mlps(3)):
        files.append(tmp_path / f"ck{i}.safetensors")
        save_state_dict(sd, files[-1])
    return p, files


def test_rank_with_a_factory_reference(factory_predictor):
    p, files = factory_predictor
    plain = rank_checkpoints(files, p)
    named = rank_checkpoints(files, p, arch=FACTORY, arch_kwargs={"width": 6})
    assert [r["checkpoint"] for r in named] == [r["checkpoint"] for r in plain]
    assert [r["prediction"] for r in named] == pytest.approx([r["prediction"] for r in plain])


def test_rank_refuses_another_architecture_naming_both(factory_predictor):
    p, files = factory_predictor
    with pytest.raises(ArchitectureMismatchError) as e:
        rank_checkpoints(files, p, arch=FACTORY, arch_kwargs={"width": 9})
    msg = str(e.value)
    assert "\n" not in msg and "make_mlp(width=9)" in msg and "a network of 4 tensors" in msg


def test_rank_checkpoint_not_of_the_named_architecture(factory_predictor, tmp_path):
    p, files = factory_predictor
    bad = tmp_path / "other.safetensors"
    save_state_dict(make_mlp(9)[0].state_dict(), bad)
    with pytest.raises(StateDictError) as e:
        rank_checkpoints([files[0], bad], p, arch=FACTORY, arch_kwargs={"width": 6})
    assert e.value.path == str(bad) and "make_mlp(width=6)" in str(e.value)


def test_registry_arch_recorded_by_name_refuses_same_shapes_other_network():
    from weightspace.arch import create_model

    sds = [create_model("mlp", seed=s, hidden=[8], activation="relu").state_dict() for s in range(6)]
    graphs = [parameter_graph(sd, arch="mlp", hidden=[8], activation="relu") for sd in sds]
    meta = pd.DataFrame({"member_id": [f"m{i}" for i in range(6)], "arch": ["mlp"] * 6,
                         "arch_kwargs": [json.dumps({"hidden": [8], "activation": "relu"})] * 6})
    p = LinearPredictor().fit(WeightDataset(graphs, _targets_of(sds), meta, "test_acc"))
    assert len(rank_checkpoints(sds[:2], p, arch="mlp", arch_kwargs={"hidden": [8], "activation": "relu"})) == 2
    with pytest.raises(ArchitectureMismatchError, match=r"mlp\(activation=tanh,hidden=8\).*fit on mlp\(activation=relu"):
        rank_checkpoints(sds[:2], p, arch="mlp", arch_kwargs={"hidden": [8], "activation": "tanh"})


def _targets_of(sds):
    return [float(next(iter(sd.values())).norm()) for sd in sds]


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("rank") / "gpt2"
    save_tiny_gpt2(d)
    return d


def test_rank_hf_directory_checkpoints(gpt2_dir, tmp_path, factory_predictor):
    from weightspace.arch import HFCheckpoint, resolve_model

    ref = f"hf:{gpt2_dir}"
    r = resolve_model(ref)
    ck = HFCheckpoint.open(gpt2_dir)
    stored = ck.read_weights()
    nets, files = [], []
    for s in range(6):  # fine-tuned copies: stored names (the tied lm_head is not stored)
        g = torch.Generator().manual_seed(s)
        sd = {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in stored.items()}
        nets.append(parameter_graph(ck.complete(r.module, sd), arch=ref))
        files.append(tmp_path / f"ft{s}.safetensors")
        save_state_dict(sd, files[-1])
    p = LinearPredictor().fit(nets, [float(n.values.norm()) for n in nets])
    ranking = rank_checkpoints(files, p, arch=ref)
    assert sorted(r["checkpoint"] for r in ranking) == sorted(map(str, files))
    # the MLP predictor refuses the GPT-2 checkpoints, naming both
    mlp_p, _ = factory_predictor
    with pytest.raises(ArchitectureMismatchError) as e:
        rank_checkpoints(files[:1], mlp_p, arch=ref)
    assert f"hf:{gpt2_dir.resolve()}" in str(e.value) and "a network of 4 tensors" in str(e.value)


def test_cli_rank_with_references(factory_predictor, gpt2_dir, tmp_path):
    p, files = factory_predictor
    saved = p.save(tmp_path / "pred")
    args = ["predict", "rank", *map(str, files), "-P", str(saved)]
    res = runner.invoke(app, [*args, "--arch", FACTORY, "-a", "width=6", "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    assert len(json.loads((tmp_path / "r.json").read_text())["ranking"]) == 3
    cases = [(FACTORY, ["-a", "width=9"], "make_mlp(width=9)"),               # another architecture
             (f"hf:{gpt2_dir}", [], "a network of 4 tensors")]                # mismatch naming both
    cases += [(ref, [], says) for ref, _, says in bad_references(tmp_path, __name__)[:5]]
    for arch, extra, says in cases:
        res = runner.invoke(app, [*args, "--arch", arch, *extra])
        assert res.exit_code == 2 and says in one_error_line(res.output), (arch, res.output)


def test_unknown_reference_is_a_library_error(factory_predictor):
    p, files = factory_predictor
    with pytest.raises(UnknownNameError):
        rank_checkpoints(files, p, arch="no_such_arch")


def test_fit_zoo_split_options_are_make_splits():
    from weightspace.predict import fit_zoo

    with pytest.raises(TypeError, match="splt.*make_split"):
        fit_zoo(object(), splt="seed")
