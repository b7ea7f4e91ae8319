"""``zoo.repair_zoo`` / ``weightspace zoo repair``: rebuild a lost index from
the checkpoint files, never deleting anything."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import zoo
from weightspace.cli import app
from zoo.errors import ZooFormatError, ZooLockedError
from zoo.store import Zoo, ZooWriter, load_safetensors, save_safetensors

from .safety_helpers import BUILT_RECIPE, build_small_zoo, index_rows, snapshot, write_fake_zoo

runner = CliRunner()


@pytest.fixture(scope="module")
def built_zoo(tmp_path_factory) -> Path:
    return build_small_zoo(tmp_path_factory.mktemp("built") / "z")


def _weights(path: Path) -> dict[str, bytes]:
    return snapshot(path / "weights")


@pytest.mark.parametrize("damage", ["truncate", "remove"])
def test_repair_restores_the_index_of_a_built_zoo(built_zoo, tmp_path, damage):
    path = tmp_path / "z"
    shutil.copytree(built_zoo, path)
    members, cks = index_rows(path)
    weights = _weights(path)
    index = path / "index.sqlite"
    index.write_bytes(b"") if damage == "truncate" else index.unlink()

    rep = zoo.repair_zoo(path)
    assert sorted(rep.members) == sorted(r[0] for r in members) and len(rep.members) == 2
    assert rep.checkpoints == len(cks) == 4
    assert (rep.unplaced, rep.unknown, rep.missing, rep.from_old_index) == ([], [], [], [])
    assert rep.complete
    if damage == "truncate":  # moved aside, not deleted
        assert rep.moved_index.name.startswith("index.sqlite.broken-") and rep.moved_index.read_bytes() == b""
        assert rep.old_index_error == "the index file is empty"
    else:
        assert rep.moved_index is None
    # every column of every row: ids, configs, hashes, metrics, extra, seeds, steps, paths, times
    assert index_rows(path) == (members, cks)
    assert _weights(path) == weights
    z = Zoo(path)
    assert len(z) == 2 and z.verify() == [] and z.recipe.name == "tiny"
    again = zoo.build_zoo(BUILT_RECIPE, path, backend="serial", progress=False)
    assert (again.trained, again.skipped) == (0, 2)


def test_repair_lists_files_it_cannot_place_and_deletes_nothing(tmp_path):
    path = write_fake_zoo(tmp_path / "z", n=4)
    members, cks = index_rows(path)
    z = Zoo(path)
    corrupt = z["m001"].checkpoint().path
    corrupt.write_bytes(corrupt.read_bytes()[:100])
    altered = z["m002"].checkpoint(0).path  # valid file, tensors changed after the write
    sd = load_safetensors(altered)
    sd["layers.0.weight"][0, 0] += 1
    from safetensors.torch import save_file
    from weightspace.io import read_safetensors_metadata

    save_file(sd, str(altered), metadata=read_safetensors_metadata(altered))
    (path / "weights" / "my folder").mkdir()
    (path / "weights" / "my folder" / "notes.txt").write_text("mine")
    (path / "weights" / "m003" / "notes.txt").write_text("mine too")
    before = snapshot(path)

    rep = zoo.repair_zoo(path)
    assert rep.members == ["m000", "m003"] and rep.checkpoints == 4
    why = dict(rep.unplaced)
    rel = lambda p: p.relative_to(path).as_posix()  # noqa: E731
    assert why[rel(corrupt)].startswith("corrupt or truncated")
    assert why[rel(z["m001"].checkpoint(0).path)].startswith("member incomplete: checkpoint(s) of epoch [5]")
    assert why[rel(altered)].startswith("hash mismatch")
    assert why[rel(z["m002"].checkpoint().path)].startswith("member incomplete: checkpoint(s) of epoch [0]")
    assert why["weights/m003/notes.txt"].startswith("not a checkpoint file")
    assert rep.unknown == ["weights/my folder"] and rep.missing == ["m001", "m002"] and not rep.complete
    after = snapshot(path)
    kept = {k: v for k, v in before.items() if k != "index.sqlite"}
    assert {k: v for k, v in after.items() if k in kept} == kept  # nothing else deleted or changed
    moved = [k for k in set(after) - set(before)]
    assert moved == [rep.moved_index.name]  # the old index, moved aside, byte for byte
    assert after[rep.moved_index.name] == before["index.sqlite"]
    restored = index_rows(path)
    assert restored == ([r for r in members if r[0] in ("m000", "m003")],
                        [c for c in cks if c[0] in ("m000", "m003")])


def test_files_without_metadata_are_placed_from_a_readable_old_index_only(tmp_path):
    """Checkpoints of older versions carry member_id/epoch/arch only: their
    rows can come from the old index when it agrees, never from guessing."""
    path = write_fake_zoo(tmp_path / "z", n=2)
    members, cks = index_rows(path)
    for ck in Zoo(path)["m001"].checkpoints:  # rewrite m001 as the old writer did
        save_safetensors(ck.path, load_safetensors(ck.path), {"member_id": "m001", "epoch": str(ck.epoch), "arch": "mlp"})
    rep = zoo.repair_zoo(path)
    assert rep.members == ["m000", "m001"] and rep.from_old_index == ["m001"] and rep.complete
    assert index_rows(path) == (members, cks)

    (path / "index.sqlite").write_bytes(b"garbage" * 100)
    rep = zoo.repair_zoo(path)
    assert rep.members == ["m000"] and rep.old_index_error.startswith("DatabaseError")
    assert {why for _, why in rep.unplaced} == {
        "no member metadata in the file (written by an older version) and no readable index row for it; "
        "its config and metrics are unknown"
    }
    assert len(rep.unplaced) == 2 and all((path / p).is_file() for p, _ in rep.unplaced)
    assert len(list(path.glob("index.sqlite.broken-*"))) == 2


def test_repair_refuses_non_zoos_and_running_writers(tmp_path):
    d = tmp_path / "notes"
    d.mkdir()
    (d / "todo.txt").write_text("x")
    with pytest.raises(ZooFormatError, match="zoo.json is missing"):
        zoo.repair_zoo(d)
    assert sorted(p.name for p in d.iterdir()) == ["todo.txt"]
    path = write_fake_zoo(tmp_path / "z", n=1)
    with ZooWriter(path, {"source": "test"}):
        with pytest.raises(ZooLockedError):
            zoo.repair_zoo(path)


def test_cli_repair(tmp_path):
    path = write_fake_zoo(tmp_path / "z", n=3)
    bad = Zoo(path)["m002"].checkpoint().path
    bad.write_bytes(bad.read_bytes()[:-1])
    (path / "index.sqlite").write_bytes(b"")
    r = runner.invoke(app, ["zoo", "info", str(path)])
    assert r.exit_code == 2 and "weightspace zoo repair" in r.output
    r = runner.invoke(app, ["zoo", "repair", str(path)])
    assert r.exit_code == 0, r.output
    assert "index rebuilt with 2 members, 4 checkpoints" in r.output
    assert "old index moved to" in r.output and "index.sqlite.broken-" in r.output
    assert "2 file(s) could not be placed" in r.output and "weights/m002/epoch_00005.safetensors: corrupt" in r.output
    r = runner.invoke(app, ["zoo", "info", str(path)])
    assert r.exit_code == 0 and "members    2" in r.output
    r = runner.invoke(app, ["zoo", "repair", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and r.output.startswith("error: ") and "zoo.json is missing" in r.output
    assert "Traceback" not in r.output


def test_metadata_of_every_checkpoint_holds_the_member(tmp_path):
    """What repair relies on, stated once: the writer's metadata layout."""
    from weightspace.io import read_safetensors_metadata

    path = write_fake_zoo(tmp_path / "z", n=1)
    m = Zoo(path)["m000"]
    for ck in m.checkpoints:
        meta = read_safetensors_metadata(ck.path)
        assert meta["zoo_meta"] == "1" and meta["member_id"] == "m000" and meta["epoch"] == str(ck.epoch)
        assert json.loads(meta["member_config"]) == m.config and json.loads(meta["metrics"]) == ck.metrics
        member = json.loads(meta["member"])
        assert member["epochs"] == [0, 5] and member["index"] == 0 and member["created_at"] == m.created_at
        assert json.loads(meta["member_metrics"]) == m.metrics and json.loads(meta["member_extra"]) == m.extra
        assert json.loads(meta["step"]) == ck.step and meta["sha256"] == ck.sha256
    assert torch.equal(m.state_dict()["layers.0.bias"], load_safetensors(m.checkpoint().path)["layers.0.bias"])
