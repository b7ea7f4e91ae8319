"""A zoo never deletes what it did not write; a broken index is an error with a
way out; workers die with the builder."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import zoo
from weightspace.cli import app
from zoo.errors import ZooError, ZooFormatError
from zoo.store import Zoo, ZooWriter

from .safety_helpers import BUILT_RECIPE, build_small_zoo, fake_member, index_count, snapshot, write_fake_zoo

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(scope="module")
def built_zoo(tmp_path_factory) -> Path:
    """A zoo built from a recipe (2 members); copy it before changing it."""
    return build_small_zoo(tmp_path_factory.mktemp("built") / "z")


@pytest.fixture
def built(built_zoo, tmp_path) -> Path:
    out = tmp_path / "z"
    shutil.copytree(built_zoo, out)
    return out


def _weights(path: Path) -> dict[str, bytes]:
    return snapshot(path / "weights")


# --------------------------------------------------------------------------- a lost index is an error


@pytest.mark.parametrize("damage", ["truncate", "remove", "garbage"])
def test_build_over_a_lost_index_is_an_error_and_deletes_nothing(built, damage):
    before = _weights(built)
    assert len(before) == 4
    index = built / "index.sqlite"
    if damage == "truncate":
        index.write_bytes(b"")
    elif damage == "remove":
        index.unlink()
    else:
        index.write_bytes(b"not a database" * 100)
    damaged = index.read_bytes() if index.exists() else None
    with pytest.raises(ZooFormatError) as exc:
        zoo.build_zoo(BUILT_RECIPE, built, backend="serial", progress=False)
    assert exc.value.path == str(index)
    assert "weightspace zoo repair" in str(exc.value) and str(built) in str(exc.value)
    assert _weights(built) == before  # every checkpoint still there, byte for byte
    assert (index.read_bytes() if index.exists() else None) == damaged  # no fresh index over the weights
    with pytest.raises(ZooFormatError, match="weightspace zoo repair") as exc:
        Zoo(built)
    assert exc.value.path == str(index)


def test_a_missing_index_without_weights_is_created(tmp_path):
    """zoo.json written, killed before the index: nothing to lose, the writer goes on."""
    path = write_fake_zoo(tmp_path / "z", n=0)
    (path / "index.sqlite").unlink()
    with ZooWriter(path, {"source": "test"}) as w:
        w.add_member(**fake_member(0))
    assert Zoo(path).member_ids == ["m000"]


def test_cli_on_a_corrupt_index_is_one_line_exit_2(built):
    (built / "index.sqlite").write_bytes(b"\0" * 4096)
    for cmd in (["zoo", "info", str(built)], ["zoo", "verify", str(built)],
                ["zoo", "build", str(built / "recipe.yaml"), str(built), "--backend", "serial", "--no-progress"]):
        r = runner.invoke(app, cmd)
        assert r.exit_code == 2, (cmd, r.output)
        assert r.output.startswith("error: ") and len(r.output.strip().splitlines()) == 1, r.output
        assert "index.sqlite" in r.output and "weightspace zoo repair" in r.output
        assert "Traceback" not in r.output and "internal error" not in r.output
    assert len(_weights(built)) == 4


# --------------------------------------------------------------------------- only the writer's own files go


def test_user_entries_under_weights_survive_a_build(built):
    wdir = built / "weights"
    (wdir / "my notes").mkdir()
    (wdir / "my notes" / "todo.txt").write_text("keep me")
    (wdir / "m_user").mkdir()  # looks like a member id, but carries no writer marker
    (wdir / "m_user" / "epoch_00001.safetensors").write_bytes(b"my own file")
    (wdir / "README.txt").write_text("hello")
    (built / ".notes.tmp").write_text("not the writer's temp file")
    (wdir / Zoo(built).member_ids[0] / ".mine.tmp").write_text("nor is this")
    before = snapshot(built)
    rep = zoo.build_zoo(BUILT_RECIPE, built, backend="serial", progress=False)
    assert (rep.trained, rep.removed) == (0, [])
    assert sorted(rep.unknown) == ["weights/README.txt", "weights/m_user", "weights/my notes"]
    after = snapshot(built)
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(before) - set(after) == set()


def test_interrupted_write_is_still_cleaned(tmp_path, monkeypatch):
    """A write killed after some files (its marker left behind) is removed on
    the next open; the member can then be written again."""
    import zoo.store as store

    path = write_fake_zoo(tmp_path / "z", n=2)
    real_save = store.save_safetensors
    calls = []

    def dying_save(p, sd, meta=None):
        calls.append(p)
        if len(calls) == 2:
            raise KeyboardInterrupt  # stands in for a kill between two checkpoints
        return real_save(p, sd, meta)

    monkeypatch.setattr(store, "save_safetensors", dying_save)
    with ZooWriter(path, {"source": "test"}) as w, pytest.raises(KeyboardInterrupt):
        w.add_member(**fake_member(7))
    monkeypatch.setattr(store, "save_safetensors", real_save)
    left = path / "weights" / "m007"
    assert (left / ".writing").is_file() and (left / "epoch_00000.safetensors").is_file()
    (path / ".zoo.json.k3j4h5g6.tmp").write_bytes(b"x")  # an atomic_write temp of the writer
    (path / ".index.sqlite.q1w2e3r4.tmp").write_bytes(b"x")  # ... and of an interrupted repair
    with ZooWriter(path, {"source": "test"}) as w:
        assert sorted(w.removed_orphans) == [".index.sqlite.q1w2e3r4.tmp", ".zoo.json.k3j4h5g6.tmp", "weights/m007"]
        assert w.unknown_entries == []
        w.add_member(**fake_member(7))
    assert not (left / ".writing").exists()
    assert Zoo(path).member_ids == ["m000", "m001", "m007"] and Zoo(path).verify() == []


def test_marker_of_a_committed_member_is_dropped_not_the_member(tmp_path):
    """Killed between the commit and unlinking the marker: the member stays."""
    path = write_fake_zoo(tmp_path / "z", n=2)
    (path / "weights" / "m001" / ".writing").write_text("")
    before = _weights(path)
    with ZooWriter(path, {"source": "test"}) as w:
        assert w.removed_orphans == []
    assert not (path / "weights" / "m001" / ".writing").exists()
    del before["m001/.writing"]
    assert _weights(path) == before and len(Zoo(path)) == 2


def test_writer_does_not_write_into_a_directory_it_did_not_make(tmp_path):
    path = write_fake_zoo(tmp_path / "z", n=1)
    mine = path / "weights" / "m003"
    mine.mkdir()
    (mine / "epoch_00005.safetensors").write_bytes(b"someone's file")
    with ZooWriter(path, {"source": "test"}) as w:
        assert w.unknown_entries == ["weights/m003"]
        with pytest.raises(ZooFormatError, match="no .writing marker") as exc:
            w.add_member(**fake_member(3))
    assert exc.value.path == str(mine)
    assert (mine / "epoch_00005.safetensors").read_bytes() == b"someone's file"
    assert not (mine / ".writing").exists() and Zoo(path).member_ids == ["m000"]


def test_adding_a_member_twice_leaves_its_files_alone(tmp_path):
    path = write_fake_zoo(tmp_path / "z", n=2)
    before = _weights(path)
    with ZooWriter(path, {"source": "test"}) as w:
        with pytest.raises(ZooError, match="m001 is already in the zoo"):
            w.add_member(**fake_member(1, acc=0.9))
    assert _weights(path) == before
    with pytest.raises(ValueError, match="invalid member_id"):
        with ZooWriter(path, {"source": "test"}) as w:
            w.add_member(**dict(fake_member(5), member_id="../m005"))


# --------------------------------------------------------------------------- verify lists, never raises


def test_verify_lists_truncated_and_missing_checkpoints(tmp_path):
    path = write_fake_zoo(tmp_path / "z", n=3)
    z = Zoo(path)
    truncated = z["m001"].checkpoint().path
    truncated.write_bytes(truncated.read_bytes()[:-7])
    missing = z["m002"].checkpoint(0).path
    missing.unlink()
    for quick in (False, True):
        problems = z.verify(quick=quick)
        assert len(problems) == 2, problems
        assert str(truncated) in problems[0] and "truncated" in problems[0]
        assert str(missing) in problems[1] and "missing" in problems[1]
    r = runner.invoke(app, ["zoo", "verify", str(path)])
    assert r.exit_code == 2 and str(truncated) in r.output and str(missing) in r.output
    assert "2 of 6 checkpoint file(s)" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["zoo", "info", str(path)])
    assert r.exit_code == 0 and "damaged    2 checkpoint file(s)" in r.output and str(truncated) in r.output
    r = runner.invoke(app, ["zoo", "verify", str(write_fake_zoo(tmp_path / "ok", n=1))])
    assert r.exit_code == 0 and "2 checkpoints of 1 members intact" in r.output




# --------------------------------------------------------------------------- workers die with the builder

def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


_BUILD_SCRIPT = """
import sys, zoo
from tests.zoo.conftest import tiny_recipe_dict
zoo.build_zoo(tiny_recipe_dict(num_members=8, epochs=8), sys.argv[1], workers=2, backend="local", progress=False)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_when_only_the_builder_is_killed(tmp_path):
    """SIGKILL the builder alone (not its process group): its pool workers and
    the multiprocessing resource tracker must not stay behind."""
    proc = subprocess.Popen([sys.executable, "-c", _BUILD_SCRIPT, str(tmp_path / "z")], cwd=REPO,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kids: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while index_count(tmp_path / "z") < 1:  # the workers are past start-up, training
            assert proc.poll() is None, "the build ended before it could be killed"
            assert time.monotonic() < deadline, "the build made no progress"
            time.sleep(0.05)
        kids = _children(proc.pid)
        assert len(kids) >= 3, kids  # 2 workers + the resource tracker
        os.kill(proc.pid, signal.SIGKILL)  # the builder only
        proc.wait()
        deadline = time.monotonic() + 5
        while any(_alive(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [k for k in kids if _alive(k)]
        assert not left, [open(f"/proc/{k}/cmdline").read().replace("\0", " ")[:200] for k in left]
    finally:
        for k in kids:  # leave nothing behind if the assertion failed
            if _alive(k):
                os.kill(k, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
