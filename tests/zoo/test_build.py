import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import zoo
from zoo.errors import ZooError, ZooFormatError
from zoo.store import Zoo

from .conftest import tiny_recipe_dict
from .safety_helpers import index_count


def _hashes(path):
    return {m.member_id: [c.sha256 for c in m.checkpoints] for m in Zoo(path).members()}


def test_serial_build_then_resume_is_a_noop(tmp_path, tiny_recipe):
    out = tmp_path / "z"
    rep = zoo.build_zoo(tiny_recipe, out, backend="serial", progress=False)
    assert (rep.total, rep.trained, rep.skipped) == (4, 4, 0)
    z = rep.open()
    assert len(z) == 4 and z.recipe.name == "tiny" and z.verify() == []
    m = z.members()[0]
    assert m.config["arch"] == "cnn_small" and [c.epoch for c in m.checkpoints] == [0, 2]
    for key in ("train_acc", "val_acc", "test_acc", "gap_acc", "train_loss", "wall_time"):
        assert key in m.metrics
    assert m.sha256 == m.checkpoints[-1].sha256 and m.wall_time > 0
    before = _hashes(out)
    rep2 = zoo.build_zoo(tiny_recipe, out, backend="serial", progress=False)
    assert (rep2.trained, rep2.skipped) == (0, 4)
    assert _hashes(out) == before
    assert (out / "recipe.yaml").is_file()


def test_growing_a_random_zoo_keeps_old_members(tmp_path):
    out = tmp_path / "z"
    zoo.build_zoo(tiny_recipe_dict(num_members=2), out, backend="serial", progress=False)
    first = _hashes(out)
    rep = zoo.build_zoo(tiny_recipe_dict(num_members=3), out, backend="serial", progress=False)
    assert (rep.trained, rep.skipped) == (1, 2)
    assert {k: v for k, v in _hashes(out).items() if k in first} == first
    assert Zoo(out).recipe.search["num_members"] == 3


def test_different_recipe_into_same_directory_is_refused(tmp_path, tiny_recipe):
    out = tmp_path / "z"
    zoo.build_zoo(tiny_recipe_dict(num_members=1), out, backend="serial", progress=False)
    other = tiny_recipe_dict(num_members=1)
    other["train"]["batch_size"] = 64
    with pytest.raises(ZooFormatError, match="different zoo"):
        zoo.build_zoo(other, out, backend="serial", progress=False)


def test_failure_keeps_finished_members_and_names_the_member(tmp_path):
    d = tiny_recipe_dict()
    d["search"] = {"method": "grid", "space": {"train.optimizer": ["adam", "nope", "sgd"]}}
    bad = zoo.load_recipe(d).members()[1]
    with pytest.raises(ZooError, match=f"{bad.member_id}.*unknown optimizer 'nope'"):
        zoo.build_zoo(d, tmp_path / "z", backend="serial", progress=False)
    assert len(Zoo(tmp_path / "z")) == 1


def test_max_members_and_on_member_callback(tmp_path, tiny_recipe):
    seen = []
    rep = zoo.build_zoo(tiny_recipe, tmp_path / "z", backend="serial", progress=False, max_members=2,
                        on_member=lambda r: seen.append(r.member_id))
    assert rep.total == 2 and seen == Zoo(tmp_path / "z").member_ids


def test_bad_backend_arguments(tmp_path, tiny_recipe):
    with pytest.raises(ValueError, match="backend"):
        zoo.build_zoo(tiny_recipe, tmp_path / "z", backend="slurm")
    with pytest.raises(ValueError, match="address"):
        zoo.build_zoo(tiny_recipe, tmp_path / "z", backend="local", address="auto")


_KILL_SCRIPT = """
import sys, zoo
from tests.zoo.conftest import tiny_recipe_dict
zoo.build_zoo(tiny_recipe_dict(num_members=8, epochs=6), sys.argv[1], workers=2, backend="local", progress=False)
"""


def test_killed_process_pool_build_resumes_exactly(tmp_path):
    """Kill a real (process-pool) build with SIGKILL mid-way, leave a
    half-written member behind, resume: finished members are kept untouched,
    the rest are trained, nothing is duplicated, and the members trained in
    the worker processes equal in-process training bit for bit."""
    out = tmp_path / "z"
    recipe = tiny_recipe_dict(num_members=8, epochs=6)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(out)], cwd=repo,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    try:
        while index_count(out) < 2:
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            assert time.monotonic() < deadline, "build made no progress"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the builder and its workers
        proc.wait()
    done_before = index_count(out)
    assert 2 <= done_before < 8, "the build finished before it could be killed"
    z0 = Zoo(out)
    kept = {m.member_id: (m.sha256, m.created_at, os.stat(m.checkpoint().path).st_mtime_ns) for m in z0.members()}
    # Simulate a kill between writing a member's files and committing it.
    todo = [s for s in zoo.load_recipe(recipe).members() if s.member_id not in kept]
    partial = out / "weights" / todo[0].member_id
    partial.mkdir(parents=True, exist_ok=True)
    (partial / ".writing").write_text("")  # the writer marks a member's directory before its first file
    (partial / "epoch_00000.safetensors").write_bytes(b"truncated")

    rep = zoo.build_zoo(recipe, out, backend="serial", progress=False)
    assert rep.skipped == done_before and rep.trained == 8 - done_before
    assert f"weights/{todo[0].member_id}" in rep.removed
    z = Zoo(out)
    assert len(z) == 8 and len(set(z.member_ids)) == 8
    for m in z.members():
        if m.member_id in kept:  # not retrained, not rewritten
            assert kept[m.member_id] == (m.sha256, m.created_at, os.stat(m.checkpoint().path).st_mtime_ns)
    on_disk = {p.relative_to(out) for p in (out / "weights").rglob("*") if p.is_file()}
    indexed = {c.path.relative_to(out) for m in z.members() for c in m.checkpoints}
    assert on_disk == indexed
    assert z.verify() == []
    # Members trained in the killed run's worker processes equal in-process training.
    from zoo.train import train_member

    specs = {s.member_id: s for s in zoo.load_recipe(recipe).members()}
    for mid in list(kept)[:2]:
        fresh = train_member(specs[mid])
        assert [c.sha256 for c in z[mid].checkpoints] == [zoo.state_dict_sha256(c.state_dict) for c in fresh.checkpoints]


@pytest.mark.slow  # starting Ray takes tens of seconds on 2 cores
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (optional extra)")
def test_ray_backend_matches_serial(tmp_path):
    recipe = tiny_recipe_dict(num_members=3)
    rep = zoo.build_zoo(recipe, tmp_path / "ray", backend="ray", workers=2, progress=False)
    assert rep.trained == 3
    zoo.build_zoo(recipe, tmp_path / "ser", backend="serial", progress=False)
    assert _hashes(tmp_path / "ray") == _hashes(tmp_path / "ser")


def test_ray_backend_without_ray_is_a_clear_error(tmp_path, tiny_recipe, monkeypatch):
    if importlib.util.find_spec("ray") is not None:
        pytest.skip("ray is installed")
    with pytest.raises(ZooError, match="pip install"):
        zoo.build_zoo(tiny_recipe, tmp_path / "z", backend="ray", progress=False)


@pytest.mark.slow
def test_shipped_digits_recipe_gives_a_spread_of_accuracies(tmp_path):
    """Training-scale check of the default zoo: 24 members of digits_cnn_small."""
    rep = zoo.build_zoo("digits_cnn_small", tmp_path / "z", max_members=24, workers=2, progress=False)
    df = rep.open().to_pandas()
    assert len(df) == 24 and (df["status"] == "ok").all()
    assert df["test_acc"].max() > 0.85  # some members learn digits well
    assert df["test_acc"].min() < 0.3  # and some barely learn
    assert df["test_acc"].std() > 0.15
