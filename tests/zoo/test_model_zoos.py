"""model-zoos.cc style loader on fixtures written like Ray Tune trial dirs."""

import json
import pickle

import pytest
import torch
from torch import nn

import zoo
from zoo.errors import ZooFormatError
from zoo.loaders import import_model_zoos, load_model_zoos

ARCH_KW = {"in_features": 6, "hidden": [5], "out_features": 3, "activation": "tanh"}


class ZooCNNLike(nn.Module):
    """Stands in for the model-zoos code base's networks: a ``module_list``
    whose parameter names differ from the registry's ``mlp``."""

    def __init__(self):
        super().__init__()
        self.module_list = nn.ModuleList([nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)])

    def forward(self, x):
        for m in self.module_list:
            x = m(x)
        return x


def write_trial(root, name, seed, iterations=(1, 2, 3), params_extra=None):
    d = root / name
    d.mkdir(parents=True)
    params = {"model::type": "MLP_small", "model::nlin": "tanh", "optim::lr": 1e-3 * (seed + 1),
              "optim::optimizer": "adam", "seed": seed, "training::epochs_train": max(iterations)}
    params.update(params_extra or {})
    (d / "params.json").write_text(json.dumps(params))
    torch.manual_seed(seed)
    net = ZooCNNLike()
    lines = []
    for it in range(1, max(iterations) + 1):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.01)
        lines.append(json.dumps({"train_loss": 1.0 / it, "train_acc": 0.5 + 0.1 * it, "test_loss": 1.2 / it,
                                 "test_acc": 0.45 + 0.1 * it, "training_iteration": it, "time_this_iter_s": 0.1,
                                 "trial_id": name, "date": "2022-01-01_00-00-00", "done": False}))
        if it in iterations:
            ck = d / f"checkpoint_{it:06d}"
            ck.mkdir()
            torch.save(net.state_dict(), ck / "checkpoints")
            torch.save({"state": {}, "param_groups": []}, ck / "optimizer")
    (d / "result.json").write_text("\n".join(lines) + "\n")
    return net


@pytest.fixture
def mz(tmp_path):
    root = tmp_path / "tune_zoo_mlp"
    nets = {f"NN_tune_trainable_{i:05d}_{i}_seed={i}": write_trial(root, f"NN_tune_trainable_{i:05d}_{i}_seed={i}", i)
            for i in range(3)}
    return root, nets


def test_load_with_key_map_by_order_reproduces_the_network(mz):
    root, nets = mz
    members = list(load_model_zoos(root, arch="mlp", model_kwargs=ARCH_KW, key_map="by_order"))
    assert len(members) == 3
    m = members[1]
    assert [c.epoch for c in m.checkpoints] == [1, 2, 3] and m.seed == 1
    assert m.config["arch"] == "mlp" and m.config["hparams"]["optim::lr"] == pytest.approx(0.002)
    ck = m.checkpoints[-1]
    assert ck.metrics["test_acc"] == pytest.approx(0.75) and ck.metrics["gap_acc"] == pytest.approx(0.05)
    assert "time_this_iter_s" not in ck.metrics and "trial_id" not in ck.metrics
    x = torch.randn(4, 6)
    original = nets[m.extra["trial"]]
    assert torch.allclose(m.module()(x), original(x), atol=1e-6)


def test_arch_mapping_and_explicit_key_map(mz):
    root, _ = mz
    mapping = {"module_list.0.weight": "layers.0.weight", "module_list.0.bias": "layers.0.bias",
               "module_list.2.weight": "layers.2.weight", "module_list.2.bias": "layers.2.bias"}
    ms = list(load_model_zoos(root, arch={"MLP_small": "mlp"}, model_kwargs=ARCH_KW, key_map=mapping,
                              epochs="final"))
    assert [[c.epoch for c in m.checkpoints] for m in ms] == [[3], [3], [3]]
    ms2 = list(load_model_zoos(root, arch=lambda p: ("mlp", dict(ARCH_KW, activation=p["model::nlin"])),
                               key_map=lambda k: k.replace("module_list", "layers"), epochs=[2]))
    assert [c.epoch for c in ms2[0].checkpoints] == [2]


def test_import_into_zoo(mz, tmp_path):
    root, _ = mz
    z = import_model_zoos(root, tmp_path / "out", arch="mlp", model_kwargs=ARCH_KW, key_map="by_order",
                          progress=False)
    assert len(z) == 3 and z.info["source"] == "model_zoos"
    df = z.to_pandas(checkpoints=True)
    assert len(df) == 9 and set(df["epoch"]) == {1, 2, 3}
    tr, va, te = z.split((0.34, 0.33, 0.33), by="seed")
    assert sorted(tr.member_ids + va.member_ids + te.member_ids) == z.member_ids


def test_unknown_architecture_names_the_params_file(mz):
    root, _ = mz
    with pytest.raises(ZooFormatError, match=r"params\.json: \[model::type\] unknown architecture 'MLP_small'"):
        list(load_model_zoos(root, arch={"CNN": "cnn_small"}))
    with pytest.raises(ZooFormatError, match=r"unknown architecture.*no_such_net"):
        list(load_model_zoos(root, arch="no_such_net"))


def test_mismatched_names_without_key_map(mz):
    root, _ = mz
    with pytest.raises(ZooFormatError, match=r"checkpoints: \[layers.0.weight\] state dict lacks tensor"):
        list(load_model_zoos(root, arch="mlp", model_kwargs=ARCH_KW))


def test_wrong_shapes_are_named(mz):
    root, _ = mz
    with pytest.raises(ZooFormatError, match=r"\[layers.0.weight\] tensor has shape \(5, 6\).*expects \(5, 7\)"):
        list(load_model_zoos(root, arch="mlp", model_kwargs=dict(ARCH_KW, in_features=7), key_map="by_order"))


def test_missing_files(tmp_path):
    root = tmp_path / "zoo"
    write_trial(root, "t0", 0)
    (root / "t0" / "result.json").unlink()
    with pytest.raises(ZooFormatError, match=r"result\.json: file not found"):
        list(load_model_zoos(root, arch="mlp", model_kwargs=ARCH_KW, key_map="by_order"))
    root2 = tmp_path / "zoo2"
    write_trial(root2, "t0", 0)
    (root2 / "t0" / "params.json").unlink()
    with pytest.raises(ZooFormatError, match=r"params\.json.*missing file params\.json"):
        list(load_model_zoos(root2, arch="mlp"))
    root3 = tmp_path / "zoo3"
    write_trial(root3, "t0", 0)
    (root3 / "t0" / "checkpoint_000002" / "checkpoints").unlink()
    (root3 / "t0" / "checkpoint_000002" / "optimizer").unlink()
    with pytest.raises(ZooFormatError, match=r"checkpoint_000002: no state dict file"):
        list(load_model_zoos(root3, arch="mlp", model_kwargs=ARCH_KW, key_map="by_order"))


def test_malformed_result_json_names_the_line(tmp_path):
    root = tmp_path / "zoo"
    write_trial(root, "t0", 0)
    p = root / "t0" / "result.json"
    p.write_text(p.read_text() + "{not json\n")
    with pytest.raises(ZooFormatError, match=r"result\.json: \[line 4\] line 4 is not valid JSON"):
        list(load_model_zoos(root, arch="mlp", model_kwargs=ARCH_KW, key_map="by_order"))


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoints_are_never_unpickled(tmp_path, capsys):
    root = tmp_path / "zoo"
    write_trial(root, "t0", 0)
    with open(root / "t0" / "checkpoint_000003" / "checkpoints", "wb") as f:
        pickle.dump({"w": _Evil()}, f)
    with pytest.raises(ZooFormatError, match=r"checkpoint_000003/checkpoints.*weights_only"):
        list(load_model_zoos(root, arch="mlp", model_kwargs=ARCH_KW, key_map="by_order"))
    assert "this must never run" not in capsys.readouterr().out
