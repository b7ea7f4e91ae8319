"""Helpers of the zoo safety and repair tests: small zoos and byte snapshots."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

import zoo
from weightspace.cli import app
from zoo.errors import ZooFormatError
from zoo.store import ZooWriter
from zoo.train import CheckpointResult

from .conftest import tiny_recipe_dict

#: Built zoos of the tests: 2 members, 1 epoch, checkpoints at epochs 0 and 1.
BUILT_RECIPE = tiny_recipe_dict(num_members=2, epochs=1)


def fake_member(i: int, *, act: str = "relu", acc: float = 0.5, seed: int | None = None) -> dict:
    """Keyword arguments of ``ZooWriter.add_member`` for a tiny MLP member
    with two checkpoints (epochs 0 and 5); no training. ``seed`` defaults to ``i``."""
    seed = i if seed is None else seed
    model = zoo.create_model("mlp", seed=seed, in_features=4, hidden=[3], out_features=2, activation=act)
    sd0 = {k: v.clone() for k, v in model.state_dict().items()}
    sd1 = {k: v + 1.0 for k, v in sd0.items()}
    cfg = {"arch": "mlp", "model": {"in_features": 4, "hidden": [3], "out_features": 2, "activation": act},
           "train": {"lr": 0.1 * (i + 1)}, "seed": seed}
    cks = [CheckpointResult(0, 0, {"test_acc": 0.1}, sd0), CheckpointResult(5, 50, {"test_acc": acc}, sd1)]
    return dict(member_id=f"m{i:03d}", index=i, config=cfg, checkpoints=cks, seed=seed,
                metrics={"test_acc": acc, "train_acc": acc + 0.05}, wall_time=1.0 + i, extra={"label": i % 3})


def write_fake_zoo(path: Path, n: int = 4) -> Path:
    with ZooWriter(path, {"name": "fake", "source": "test"}) as w:
        for i in range(n):
            w.add_member(**fake_member(i, act=["relu", "tanh"][i % 2], acc=i / 10))
    return path


def index_count(path: Path) -> int:
    """Members in the index of zoo ``path`` as another process sees it now (0 while it cannot be read)."""
    try:
        conn = sqlite3.connect(f"file:{path / 'index.sqlite'}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute("SELECT COUNT(*) FROM members").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file below ``path`` (relative name -> bytes)."""
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def index_rows(path: Path) -> tuple[list[tuple], list[tuple]]:
    """All rows of the members and checkpoints tables, sorted."""
    conn = sqlite3.connect(f"file:{path / 'index.sqlite'}?mode=ro", uri=True)
    try:
        members = sorted(conn.execute("SELECT * FROM members").fetchall())
        cks = sorted(conn.execute("SELECT * FROM checkpoints").fetchall())
    finally:
        conn.close()
    return members, cks


def build_small_zoo(path: Path) -> Path:
    zoo.build_zoo(BUILT_RECIPE, path, backend="serial", progress=False)
    return path


def assert_cli_refuses(argv: list[str], option: str, out: Path) -> None:
    """``weightspace <argv>`` exits 2 naming ``option`` (no traceback, no
    internal error) and writes nothing at ``out``."""
    r = CliRunner().invoke(app, argv)
    assert r.exit_code == 2, r.output
    assert option in r.output and "Traceback" not in r.output and "internal error" not in r.output
    assert not out.exists()


def assert_directory_errors(tmp_path: Path, load, expected: str, missing: str) -> Path:
    """``load`` (a loader yielding members) of a plain file says it ``expected``
    a directory; of a missing path, that ``missing`` was not found. Returns the file."""
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(ZooFormatError, match=rf"afile: is a file; expected {expected}"):
        list(load(f))
    with pytest.raises(ZooFormatError, match=rf"nope: {missing} not found"):
        list(load(tmp_path / "nope"))
    return f
