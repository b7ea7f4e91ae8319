import json
import os
import sqlite3

import numpy as np
import pandas as pd
import pytest
import torch

import zoo
from zoo.errors import ZooFormatError, ZooLockedError
from zoo.store import Zoo, ZooWriter, load_safetensors, save_safetensors, state_dict_sha256

from .safety_helpers import fake_member


@pytest.fixture
def small_zoo(tmp_path):
    path = tmp_path / "z"
    with ZooWriter(path, {"name": "fake", "source": "test"}) as w:
        for i in range(8):
            w.add_member(**fake_member(i, act=["relu", "tanh"][i % 2], seed=i // 2, acc=i / 10))
    return Zoo(path)


def test_safetensors_round_trip_and_hash(tmp_path):
    sd = {"b": torch.arange(3.0), "a": torch.ones(2, 2, dtype=torch.float64), "n": torch.tensor(4)}
    digest = save_safetensors(tmp_path / "x.safetensors", sd, {"k": "v"})
    back = load_safetensors(tmp_path / "x.safetensors")
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
    assert digest == state_dict_sha256(back) == state_dict_sha256({k: v.numpy() for k, v in sd.items()})
    changed = dict(sd, b=torch.tensor([0.0, 1.0, 2.5]))
    assert state_dict_sha256(changed) != digest
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))


def test_zoo_round_trip(small_zoo):
    z = small_zoo
    assert len(z) == 8 and z.member_ids[0] == "m000"
    m = z["m003"]
    assert m.arch == "mlp" and m.seed == 1 and m.final_epoch == 5 and [c.epoch for c in m.checkpoints] == [0, 5]
    assert m.metrics["test_acc"] == pytest.approx(0.3) and m.extra == {"label": 0}
    sd = m.state_dict()
    ref = zoo.create_model("mlp", seed=1, **m.model_kwargs).state_dict()
    assert torch.allclose(sd["layers.0.weight"], ref["layers.0.weight"] + 1.0)
    assert torch.equal(m.state_dict(0)["layers.0.weight"], ref["layers.0.weight"])
    mod = m.module()
    assert not mod.training and mod(torch.zeros(1, 4)).shape == (1, 2)
    assert z.verify() == []


def test_iteration_yields_state_dicts_or_modules_with_metrics(small_zoo):
    items = list(small_zoo)
    assert len(items) == 8
    sd, met = items[2]
    assert isinstance(sd, dict) and met["member_id"] == "m002" and met["epoch"] == 5
    assert met["test_acc"] == pytest.approx(0.2)
    mods = list(small_zoo.iter_members(as_module=True, epoch=0))
    assert isinstance(mods[0][0], torch.nn.Module) and mods[0][1]["epoch"] == 0
    assert len(list(small_zoo.iter_members(all_checkpoints=True))) == 16
    st = small_zoo.stacked()
    assert st["layers.0.weight"].shape == (8, 3, 4)


def test_dataframe_columns(small_zoo):
    df = small_zoo.to_pandas()
    for col in ("member_id", "arch", "seed", "status", "wall_time", "sha256", "path", "test_acc",
                "train_acc", "label", "config.model.activation", "config.train.lr", "config.model.hidden"):
        assert col in df.columns, col
    assert df["config.model.hidden"].iloc[0] == "[3]"
    assert (df["sha256"] == [m.sha256 for m in small_zoo.members()]).all()
    dfc = small_zoo.to_pandas(checkpoints=True)
    assert len(dfc) == 16 and set(dfc["epoch"]) == {0, 5}
    assert dfc.loc[dfc.epoch == 0, "test_acc"].eq(0.1).all()


def test_filter(small_zoo):
    z = small_zoo
    assert z.filter(activation="relu").member_ids == ["m000", "m002", "m004", "m006"]
    assert z.filter("test_acc > 0.45").member_ids == ["m005", "m006", "m007"]
    assert z.filter("test_acc > 0.25", activation="tanh").member_ids == ["m003", "m005", "m007"]
    assert z.filter(seed=[0, 3]).member_ids == ["m000", "m001", "m006", "m007"]
    assert z.filter(**{"config.train.lr": lambda c: c < 0.25}).member_ids == ["m000", "m001"]
    assert len(z.filter("test_acc > 5")) == 0
    with pytest.raises(KeyError, match="no column"):
        z.filter(nonexistent=1)
    # a filtered view iterates only its members
    assert [m["member_id"] for _, m in z.filter(activation="tanh")] == ["m001", "m003", "m005", "m007"]


def test_split_by_member_and_by_seed(small_zoo):
    tr, va, te = small_zoo.split((0.5, 0.25, 0.25), seed=0)
    ids = tr.member_ids + va.member_ids + te.member_ids
    assert sorted(ids) == small_zoo.member_ids and (len(tr), len(va), len(te)) == (4, 2, 2)
    assert small_zoo.split((0.5, 0.25, 0.25), seed=0)[0].member_ids == tr.member_ids
    assert small_zoo.split((0.5, 0.25, 0.25), seed=1)[0].member_ids != tr.member_ids
    tr, va, te = small_zoo.split((0.5, 0.25, 0.25), by="seed", seed=0)
    seeds = [{small_zoo[m].seed for m in part.member_ids} for part in (tr, va, te)]
    assert not (seeds[0] & seeds[1]) and not (seeds[0] & seeds[2]) and not (seeds[1] & seeds[2])
    assert all(len(part) == 2 * len(s) for part, s in zip((tr, va, te), seeds))


def test_ood_split_by_hyperparameter(small_zoo):
    tr, va, te = small_zoo.split(by="activation", values={"train": ["relu"], "test": ["tanh"]})
    assert {small_zoo[m].config["model"]["activation"] for m in tr.member_ids} == {"relu"}
    assert {small_zoo[m].config["model"]["activation"] for m in te.member_ids} == {"tanh"}
    assert len(va) == 0
    with pytest.raises(ValueError, match="both"):
        small_zoo.split(by="activation", values={"train": ["relu"], "test": ["relu"]})


def test_parquet_export(small_zoo, tmp_path):
    out = small_zoo.filter(activation="relu").export_parquet(tmp_path / "z.parquet")
    df = pd.read_parquet(out)
    assert len(df) == 4 and "config.model.activation" in df.columns
    dfc = pd.read_parquet(small_zoo.export_parquet(tmp_path / "c.parquet", checkpoints=True))
    assert len(dfc) == 16


def test_verify_detects_corruption(small_zoo):
    ck = small_zoo["m001"].checkpoint()
    sd = load_safetensors(ck.path)
    sd["layers.0.weight"][0, 0] += 1
    save_safetensors(ck.path, sd)
    problems = Zoo(small_zoo.path).verify()
    assert len(problems) == 1 and "m001" in problems[0] and "hash mismatch" in problems[0]
    with pytest.raises(ZooFormatError, match="hash mismatch"):
        small_zoo["m001"].state_dict(verify=True)


def test_one_writer_at_a_time(small_zoo):
    with ZooWriter(small_zoo.path, {"source": "test"}):
        with pytest.raises(ZooLockedError, match="another process"):
            ZooWriter(small_zoo.path, {"source": "test"})
    ZooWriter(small_zoo.path, {"source": "test"}).close()  # released


def test_orphans_of_interrupted_writes_are_removed(small_zoo):
    wdir = small_zoo.path / "weights"
    (wdir / "m999").mkdir()
    (wdir / "m999" / ".writing").write_text("")  # the writer's marker: m999's write never committed
    (wdir / "m999" / "epoch_00001.safetensors").write_bytes(b"half a file")
    (wdir / "m000" / ".epoch_00005.safetensors.abc.tmp").write_bytes(b"x")
    (small_zoo.path / ".zoo.json.x.tmp").write_bytes(b"x")
    with ZooWriter(small_zoo.path, {"source": "test"}) as w:
        assert sorted(w.removed_orphans) == sorted(
            ["weights/m999", "weights/m000/.epoch_00005.safetensors.abc.tmp", ".zoo.json.x.tmp"]
        )
    assert not (wdir / "m999").exists() and len(Zoo(small_zoo.path)) == 8


def test_member_is_all_or_nothing(small_zoo, tmp_path):
    """A failure inside the index transaction leaves no trace of the member."""
    with ZooWriter(small_zoo.path, {"source": "test"}) as w:
        dup = fake_member(20, act="tanh", seed=1, acc=0.6)  # m020 twice in one batch: the INSERT fails
        with pytest.raises(sqlite3.IntegrityError):
            w.add_members([fake_member(20, act="relu", seed=0, acc=0.5), dup])
    conn = sqlite3.connect(small_zoo.path / "index.sqlite")
    assert conn.execute("SELECT COUNT(*) FROM members").fetchone()[0] == 8
    assert conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0] == 16
    conn.close()
    # its files were written before the failed commit; the next writer removes them
    assert (small_zoo.path / "weights" / "m020").exists()
    ZooWriter(small_zoo.path, {"source": "test"}).close()
    assert not (small_zoo.path / "weights" / "m020").exists()


def test_refuses_foreign_directories(tmp_path, small_zoo):
    d = tmp_path / "notes"
    d.mkdir()
    (d / "todo.txt").write_text("x")
    with pytest.raises(ZooFormatError, match="not empty and is not a zoo"):
        ZooWriter(d, {"source": "test"})
    with pytest.raises(ZooFormatError, match="different zoo"):
        ZooWriter(small_zoo.path, {"source": "other"})
    with pytest.raises(ZooFormatError, match="zoo.json is missing"):
        Zoo(d)
    info = json.loads((small_zoo.path / "zoo.json").read_text())
    info["version"] = 99
    (small_zoo.path / "zoo.json").write_text(json.dumps(info))
    with pytest.raises(ZooFormatError, match="newer"):
        Zoo(small_zoo.path)


def test_parameter_graphs_of_members(small_zoo):
    graphs = small_zoo.parameter_graphs()
    assert len(graphs) == len(small_zoo)
    for g, m in zip(graphs, small_zoo.members()):
        back = g.to_state_dict()
        sd = m.state_dict()
        assert all(torch.equal(back[k], sd[k]) for k in sd)
    every = small_zoo.parameter_graphs(all_checkpoints=True)
    assert len(every) == 2 * len(small_zoo)
    first = small_zoo.parameter_graphs(epoch=0)
    assert torch.equal(first[3].to_state_dict()["layers.0.weight"], small_zoo["m003"].state_dict(0)["layers.0.weight"])
    batch = small_zoo.parameter_graphs(batch=True)
    assert batch.num_graphs == len(small_zoo)
    assert batch.num_nodes == sum(g.num_nodes for g in graphs)


def test_files_on_disk_match_index(small_zoo):
    on_disk = {str(p.relative_to(small_zoo.path)) for p in (small_zoo.path / "weights").rglob("*.safetensors")}
    indexed = {str(c.path.relative_to(small_zoo.path)) for m in small_zoo.members() for c in m.checkpoints}
    assert on_disk == indexed and len(on_disk) == 16
    assert oct(os.stat(next(iter(small_zoo.members())).checkpoint().path).st_mode & 0o777) != "0o600"


def test_zoo_split_predict_split_and_nn_split_agree(small_zoo):
    """Zoo.split, weightspace.predict's random/seed splits and nn.train.split_dataset
    deal groups out with one function: same groups + fractions + seed, same parts."""
    from weightspace.nn.train import dataset_from_zoo, split_dataset
    from weightspace.predict import random_split, seed_split, zoo_dataset

    fr = (0.5, 0.25, 0.25)
    final = zoo_dataset(small_zoo, "test_acc", checkpoints="final")
    every = zoo_dataset(small_zoo, "test_acc", checkpoints="all")  # two rows per member
    ids = [m.member_id for m in small_zoo.members()]
    items = list(zip(ids, dataset_from_zoo(small_zoo, "test_acc")))
    seen = set()
    for seed in range(4):
        by_zoo = [list(z.member_ids) for z in small_zoo.split(fr, seed=seed)]
        assert [len(p) for p in by_zoo] == [4, 2, 2]
        seen.add(tuple(map(tuple, by_zoo)))
        for ds in (final, every):
            by_ds = [sorted(set(ds.meta["member_id"].iloc[idx])) for idx in random_split(ds, fr, seed=seed)]
            assert by_ds == by_zoo
        by_nn = [[mid for mid, _ in part] for part in split_dataset(items, fr, seed=seed, groups=ids)]
        assert by_nn == by_zoo
        by_seed = [sorted(z.member_ids) for z in small_zoo.split(fr, by="seed", seed=seed)]
        assert [sorted(set(final.meta["member_id"].iloc[idx])) for idx in seed_split(final, fr, seed=seed)] == by_seed
        seeds = [m.seed for m in small_zoo.members()]
        assert [[mid for mid, _ in p] for p in split_dataset(items, fr, seed=seed, groups=seeds)] == by_seed
    assert len(seen) > 1  # the seed matters


def test_parameter_graphs_dataset_from_zoo_and_zoo_dataset_read_the_same_graphs(small_zoo):
    from weightspace.nn.train import dataset_from_zoo
    from weightspace.predict import zoo_dataset

    for kw, nn_kw, ds_kw in [({}, {}, {"checkpoints": "final"}),
                             ({"all_checkpoints": True}, {"all_checkpoints": True}, {"checkpoints": "all"}),
                             ({"epoch": 0}, {"epoch": 0}, {"checkpoints": [0]})]:
        graphs = small_zoo.parameter_graphs(**kw)
        samples = dataset_from_zoo(small_zoo, "test_acc", **nn_kw)
        ds = zoo_dataset(small_zoo, "test_acc", **ds_kw)
        assert len(graphs) == len(samples) == len(ds) == (16 if kw.get("all_checkpoints") else 8)
        for g, (h, y), k, t in zip(graphs, samples, ds.graphs, ds.y):
            assert torch.equal(g.values, h.values) and torch.equal(g.values, k.values)
            assert y == t
    with pytest.raises(KeyError, match="no checkpoint at epoch 3"):
        small_zoo.parameter_graphs(epoch=3)
