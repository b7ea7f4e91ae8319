"""The on-disk zoo format and the :class:`Zoo` object.

A zoo is a directory::

    zoo.json                      format version, name, source, the recipe (if built)
    recipe.yaml                   human-readable copy of the recipe (if built)
    index.sqlite                  members + checkpoints (configs, metrics, paths, hashes)
    weights/<member_id>/epoch_00008.safetensors   one file per checkpoint

Guarantees:

* Weights are safetensors only; nothing on disk is ever unpickled.
* Every file is written through :func:`weightspace.io.atomic_write`: a
  temporary name, ``fsync``, ``os.replace``, ``fsync`` of the directory.
* A member enters the index in one sqlite transaction together with all its
  checkpoints, after its files are on disk. A member is therefore either
  complete or absent.
* A zoo never deletes what it did not write. While a member's files are being
  written, ``weights/<member_id>/.writing`` marks the directory as the
  writer's own; the marker is removed once the index transaction commits. On
  open, a writer removes only directories that carry the marker and are not
  in the index (a build killed mid-write; the member is trained again) and
  temporary files named like its own. Anything else under ``weights/`` is
  left alone and reported (:attr:`ZooWriter.unknown_entries`).
* A missing, empty or unreadable index over existing checkpoint files is an
  error, never a fresh start: ``weightspace zoo repair ZOO``
  (:func:`zoo.repair.repair_zoo`) rebuilds it from the files, whose
  safetensors metadata holds everything the index does (see
  :data:`CHECKPOINT_METADATA`).
* One writer at a time (an exclusive ``flock`` on ``.lock``).

Content hash (:func:`state_dict_sha256`, i.e. :func:`weightspace.io.state_dict_hash`):
sha256 over names, dtypes, shapes and raw tensor bytes in sorted name order.
It identifies the weights, independent of how the file was written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import functools
import json
import math
import os
import re
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

import weightspace.arch as registry
from weightspace.common.splits import resolve_column
from weightspace.common.zoo_samples import zoo_checkpoints
from weightspace.errors import ConfigError, InputFileError
from weightspace.graph import to_pyg_batch
from weightspace.io import (
    Field,
    atomic_write,
    fsync_dir as _fsync_dir,
    match_state_dict,
    read_json,
    read_safetensors,
    read_safetensors_metadata,
    save_state_dict,
    state_dict_hash,
    validate,
)
from zoo.errors import ZooError, ZooFormatError, ZooLockedError
from zoo.recipe import Recipe
from zoo.recipe import config_hash as _chash

__all__ = [
    "Zoo",
    "Member",
    "Checkpoint",
    "ZooWriter",
    "state_dict_sha256",
    "save_safetensors",
    "load_safetensors",
    "atomic_write_bytes",
    "FORMAT_NAME",
    "FORMAT_VERSION",
]

FORMAT_NAME = "weightspace-zoo"
FORMAT_VERSION = 1
INDEX_FILE = "index.sqlite"
INFO_FILE = "zoo.json"
WEIGHTS_DIR = "weights"
#: Marker file inside ``weights/<member_id>/`` while the writer owns a member
#: that is not committed yet (see the module docstring).
WRITING_MARKER = ".writing"
#: Version of the checkpoint metadata layout (:data:`CHECKPOINT_METADATA`).
CHECKPOINT_META_VERSION = "1"
#: Keys of the safetensors metadata of every checkpoint the writer stores;
#: together they hold the member's complete index rows, so
#: ``weightspace zoo repair`` can rebuild a lost index. Files written before
#: version 1 carry only ``member_id``, ``epoch``, ``arch`` and ``sha256``.
CHECKPOINT_METADATA = {
    "zoo_meta": "layout version (CHECKPOINT_META_VERSION)",
    "member_id": "the member",
    "epoch": "this checkpoint's epoch",
    "arch": "registry name of the architecture",
    "sha256": "content hash of the tensors (state_dict_sha256)",
    "step": "JSON: this checkpoint's step (or null)",
    "metrics": "this checkpoint's metrics, the exact JSON of its index row",
    "member": "JSON: index, seed, config_hash, status, wall_time, final_epoch, epochs, source, created_at",
    "member_config": "the member's config, exact JSON of its index row",
    "member_metrics": "the member's final metrics, exact JSON of its index row",
    "member_extra": "the member's extra facts, exact JSON of its index row",
}
#: A member id is a directory name: letters, digits, ``_ . + -``; no leading dot.
MEMBER_ID_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,199}")
_CHECKPOINT_NAME = re.compile(r"epoch_(\d{5,})\.safetensors")
# Temporary files of atomic_write (".<name>.<random>.tmp") for the files the
# writer itself creates; nothing else is ever removed as a temp file.
_TOP_TMP = re.compile(r"\.(zoo\.json|recipe\.yaml)\.[A-Za-z0-9_]+\.tmp|\.index\.sqlite\.[A-Za-z0-9_]+\.tmp(-journal)?")
_MEMBER_TMP = re.compile(r"\.(epoch_\d{5,}\.safetensors|\.writing)\.[A-Za-z0-9_]+\.tmp")
REPAIR_HINT = "weightspace zoo repair"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    member_id   TEXT PRIMARY KEY,
    idx         INTEGER NOT NULL,
    arch        TEXT NOT NULL,
    seed        INTEGER,
    config      TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    status      TEXT NOT NULL,
    metrics     TEXT NOT NULL,
    extra       TEXT NOT NULL,
    wall_time   REAL,
    sha256      TEXT NOT NULL,
    final_epoch INTEGER NOT NULL,
    source      TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    member_id TEXT NOT NULL REFERENCES members(member_id) ON DELETE CASCADE,
    epoch     INTEGER NOT NULL,
    step      INTEGER,
    path      TEXT NOT NULL,
    sha256    TEXT NOT NULL,
    metrics   TEXT NOT NULL,
    PRIMARY KEY (member_id, epoch)
);
CREATE INDEX IF NOT EXISTS members_idx ON members(idx);
"""


# --------------------------------------------------------------------------- weights I/O


def _as_tensors(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {
        # np.require keeps 0-d arrays 0-d (np.ascontiguousarray would make them 1-d);
        # "W": arrays that come back from Ray's object store are read-only
        k: (v if isinstance(v, torch.Tensor) else torch.from_numpy(np.require(np.asarray(v), requirements="CW")))
        for k, v in state_dict.items()
    }


def state_dict_sha256(state_dict: Mapping[str, Any]) -> str:
    """Content hash of a state dict (torch tensors or numpy arrays): sha256
    over names, dtypes, shapes and raw bytes in sorted name order
    (:func:`weightspace.io.state_dict_hash`)."""
    return state_dict_hash(_as_tensors(state_dict))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (an alias of
    :func:`weightspace.io.atomic_write`: temp file, ``fsync``,
    ``os.replace``, directory ``fsync``)."""
    atomic_write(path, data)


def save_safetensors(
    path: str | Path, state_dict: Mapping[str, Any], metadata: Mapping[str, str] | None = None
) -> str:
    """Atomically and durably write ``state_dict`` (tensors or arrays) as
    safetensors (:func:`weightspace.io.save_state_dict`, through
    :func:`weightspace.io.atomic_write`).

    Returns:
        the content hash (:func:`state_dict_sha256`), also stored in the
        file's metadata under ``sha256``.
    """
    tensors = _as_tensors(state_dict)
    digest = state_dict_sha256(tensors)
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta["sha256"] = digest
    save_state_dict(tensors, path, metadata=meta)
    return digest


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors checkpoint of a zoo (never unpickles).

    Raises:
        ZooFormatError: the file is missing, truncated or corrupt (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise ZooFormatError("checkpoint file is missing", path=path)
    try:
        return read_safetensors(path, what="checkpoint file")
    except InputFileError as e:
        raise ZooFormatError(e.message, path=e.path) from None


def _check_checkpoint_header(path: Path, sha256: str) -> str | None:
    """Cheap integrity check of one checkpoint (no hashing): the file exists,
    its header parses and covers the whole file (catches truncation), and a
    ``sha256`` in its metadata agrees with the index. Returns the problem or ``None``."""
    if not path.is_file():
        return f"{path}: checkpoint file is missing"
    try:
        meta = read_safetensors_metadata(path, what="checkpoint file")
    except InputFileError as e:
        return str(e)
    if meta.get("sha256") not in (None, sha256):
        return (f"{path}: [sha256] content hash mismatch: index says {sha256[:12]}, "
                f"file metadata says {meta['sha256'][:12]}")
    return None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def _dumps(obj: Any) -> str:
    # NaN/inf are allowed (diverged members); Python's json round-trips them.
    return json.dumps(obj, sort_keys=True, default=_json_default)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (tuple, set)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {o!r}")


def _index_error(index: Path, problem: str) -> ZooFormatError:
    return ZooFormatError(
        f"the zoo index {problem}; rebuild it from the checkpoint files with: "
        f"{REPAIR_HINT} {index.parent}",
        path=index,
    )


def _count_checkpoint_files(weights: Path) -> int:
    return sum(1 for _ in weights.glob("*/*.safetensors")) if weights.is_dir() else 0


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    if readonly:
        from urllib.parse import quote

        conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=30.0)
    else:
        conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = FULL")
    return conn


# --------------------------------------------------------------------------- writer


class ZooWriter:
    """The single writer of a zoo directory.

    Opening creates the directory and index if needed, takes an exclusive
    lock, checks ``zoo.json`` compatibility and the index, and removes what
    its own interrupted writes left behind (never anything else). Use as a
    context manager.

    Args:
        path: zoo directory.
        info: ``zoo.json`` content for a new zoo (``name``, ``source``,
            ``recipe`` ...). For an existing zoo, ``compatible(old_info)``
            decides whether it may be extended.
        compatible: predicate on the existing ``zoo.json``; defaults to
            "same ``source`` and ``recipe_hash``".

    Attributes:
        removed_orphans: paths (relative to the zoo) removed on open:
            directories of members whose write was interrupted (they carry
            the ``.writing`` marker and are not in the index) and the
            writer's own temporary files.
        unknown_entries: paths under ``weights/`` the writer did not write
            (user folders, unmarked directories not in the index, other
            files); left alone.

    Raises:
        ZooFormatError: the directory holds something else, a different zoo,
            or checkpoint files with a missing, empty or unreadable index
            (the message names ``weightspace zoo repair``).
        ZooLockedError: another writer holds the zoo.
    """

    def __init__(
        self,
        path: str | Path,
        info: Mapping[str, Any],
        *,
        compatible: Callable[[dict], bool] | None = None,
        recipe_yaml: str | None = None,
    ) -> None:
        self.path = Path(path).expanduser()
        self.conn: sqlite3.Connection | None = None
        self.removed_orphans: list[str] = []
        self.unknown_entries: list[str] = []
        self._lock_fd: int | None = None
        # Refuse what can be refused before anything (the lock file included)
        # is created in a directory that may be the user's; checked again below,
        # under the lock.
        _precheck_output(self.path, info, compatible)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _acquire_lock(self.path)
        try:
            info_path = self.path / INFO_FILE
            index_path = self.path / INDEX_FILE
            if info_path.exists():
                old = _read_info(self.path)
                _check_compatible(info_path, old, info, compatible)
                # Before anything is written: a lost index must not become a new, empty one.
                self.conn = _open_index_for_writing(index_path)
                self.info = old
                if info.get("recipe") is not None and old.get("recipe") != info.get("recipe"):
                    # e.g. a random-search zoo grown with more members
                    self.info = dict(old, recipe=info["recipe"], recipe_hash=info.get("recipe_hash"))
                    if recipe_yaml is not None:
                        atomic_write(self.path / "recipe.yaml", recipe_yaml.encode())
                    atomic_write(info_path, json.dumps(self.info, indent=2).encode())
            else:
                _check_empty(self.path)
                self.info = {
                    "format": FORMAT_NAME,
                    "version": FORMAT_VERSION,
                    "created": _now(),
                    **dict(info),
                }
                if recipe_yaml is not None:
                    atomic_write(self.path / "recipe.yaml", recipe_yaml.encode())
                # zoo.json marks the directory as a zoo; the index is created
                # (idempotently) right after, so an interruption here is harmless.
                atomic_write(info_path, json.dumps(self.info, indent=2).encode())
                self.conn = _open_index_for_writing(index_path)
            self._cleanup_orphans()
        except BaseException:
            if self.conn is not None:
                self.conn.close()
                self.conn = None
            _release_lock(self._lock_fd)
            raise

    # context manager -------------------------------------------------------
    def __enter__(self) -> "ZooWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "conn", None) is not None:
            self.conn.close()
            self.conn = None
        if self._lock_fd is not None:
            _release_lock(self._lock_fd)
            self._lock_fd = None

    # queries -----------------------------------------------------------------
    def member_ids(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT member_id FROM members")}

    def __len__(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM members").fetchone()[0])

    # writes ------------------------------------------------------------------
    def _cleanup_orphans(self) -> None:
        """Remove what this writer's interrupted writes left, nothing else.

        Removed: ``weights/<member_id>/`` directories that carry the
        ``.writing`` marker and are not in the index, and temporary files
        named like the writer's own (in the zoo directory and in member
        directories it owns). A marker left in a committed member (killed
        between commit and unlinking it) is dropped. Everything else under
        ``weights/`` goes to :attr:`unknown_entries`.
        """
        removed, unknown = self.removed_orphans, self.unknown_entries
        known = self.member_ids()
        for tmp in sorted(self.path.iterdir()):
            if _TOP_TMP.fullmatch(tmp.name) and tmp.is_file() and not tmp.is_symlink():
                tmp.unlink(missing_ok=True)
                removed.append(tmp.name)
        wdir = self.path / WEIGHTS_DIR
        if not wdir.is_dir():
            return
        for d in sorted(wdir.iterdir()):
            rel = f"{WEIGHTS_DIR}/{d.name}"
            if d.is_symlink() or not d.is_dir() or not MEMBER_ID_PATTERN.fullmatch(d.name):
                unknown.append(rel)
                continue
            marker = d / WRITING_MARKER
            if d.name in known:
                for tmp in sorted(d.iterdir()):
                    if _MEMBER_TMP.fullmatch(tmp.name) and tmp.is_file() and not tmp.is_symlink():
                        tmp.unlink(missing_ok=True)
                        removed.append(f"{rel}/{tmp.name}")
                marker.unlink(missing_ok=True)  # committed: the marker outlived its write
            elif marker.is_file():
                shutil.rmtree(d)
                removed.append(rel)
            else:
                unknown.append(rel)

    def _claim_member_dir(self, mid: str) -> Path:
        """Create ``weights/<mid>/`` with the writing marker, durably, before
        any checkpoint goes there. An existing directory is reused only if it
        is the writer's own (marked) or empty."""
        d = self.path / WEIGHTS_DIR / mid
        if d.is_symlink() or (d.exists() and not d.is_dir()):
            raise ZooFormatError(
                "is not a directory this writer made; move it out of weights/ and run again", path=d
            )
        if d.is_dir() and not (d / WRITING_MARKER).is_file() and any(d.iterdir()):
            raise ZooFormatError(
                f"member {mid} is not in the index, but this directory already holds files that no "
                "unfinished write of this zoo left (no .writing marker); if the index lost them, "
                f"rebuild it with: {REPAIR_HINT} {self.path}; otherwise move the directory away and run again",
                path=d,
            )
        new_weights = not d.parent.is_dir()
        d.mkdir(parents=True, exist_ok=True)
        _fsync_dir(d.parent)  # the new directory entries are durable before any file in them
        if new_weights:
            _fsync_dir(self.path)
        # No fsync of its own: the first checkpoint's atomic_write fsyncs this
        # directory, so the marker is on disk no later than any checkpoint.
        (d / WRITING_MARKER).write_text(f"{os.getpid()} {_now()}\n")
        return d

    def add_member(
        self,
        *,
        member_id: str,
        index: int,
        config: Mapping[str, Any],
        checkpoints: Sequence[Any],
        seed: int | None = None,
        config_hash: str | None = None,
        status: str = "ok",
        metrics: Mapping[str, Any] | None = None,
        wall_time: float | None = None,
        extra: Mapping[str, Any] | None = None,
        source: str = "build",
    ) -> None:
        """Write one member (files, then one index transaction).

        Args:
            config: full config; must hold ``arch`` and ``model`` (kwargs).
            checkpoints: objects with ``epoch``, ``step``, ``metrics`` and
                ``state_dict`` (tensors or numpy arrays), ascending epochs;
                the last one is the member's final checkpoint.
        """
        self.add_members(
            [
                dict(
                    member_id=member_id, index=index, config=config, checkpoints=checkpoints,
                    seed=seed, config_hash=config_hash, status=status, metrics=metrics,
                    wall_time=wall_time, extra=extra, source=source,
                )
            ]
        )

    def add_members(self, members: Iterable[Mapping[str, Any]]) -> int:
        """Write several members in one index transaction (faster imports).

        Each checkpoint file's safetensors metadata holds the member's full
        index rows (:data:`CHECKPOINT_METADATA`), so a lost index can be
        rebuilt from the files (``weightspace zoo repair``).

        Raises:
            ValueError: a malformed member (id, config, no checkpoints).
            ZooError: a member is already in the zoo (its files are not touched).
            ZooFormatError: ``weights/<member_id>/`` holds files this writer
                did not write.
        """

        known = self.member_ids()
        rows, ck_rows, written = [], [], []
        for m in members:
            mid = str(m["member_id"])
            if not MEMBER_ID_PATTERN.fullmatch(mid):
                raise ValueError(
                    f"invalid member_id {mid!r}: use letters, digits and _ . + - (no leading dot, "
                    "at most 200 characters)"
                )
            if mid in known:
                raise ZooError(f"{self.path}: member {mid} is already in the zoo; its files were left as they are")
            cfg = dict(m["config"])
            if "arch" not in cfg or "model" not in cfg:
                raise ValueError(f"member {mid}: config needs 'arch' and 'model'")
            cks = list(m["checkpoints"])
            if not cks:
                raise ValueError(f"member {mid}: no checkpoints")
            row = dict(
                member_id=mid, idx=int(m["index"]), arch=str(cfg["arch"]),
                seed=None if m.get("seed") is None else int(m["seed"]),
                config=_dumps(cfg), config_hash=m.get("config_hash") or _chash(cfg),
                status=str(m.get("status", "ok")),
                metrics=_dumps(dict(m.get("metrics") or cks[-1].metrics)),
                extra=_dumps(dict(m.get("extra") or {})),
                wall_time=None if m.get("wall_time") is None else float(m["wall_time"]),
                sha256="", final_epoch=int(cks[-1].epoch), source=str(m.get("source", "build")),
                created_at=_now(),
            )
            member_meta = {
                "zoo_meta": CHECKPOINT_META_VERSION, "member_id": mid, "arch": row["arch"],
                "member": _dumps({
                    k: row[k] for k in ("seed", "config_hash", "status", "wall_time", "final_epoch",
                                        "source", "created_at")
                } | {"index": row["idx"], "epochs": [int(ck.epoch) for ck in cks]}),
                "member_config": row["config"], "member_metrics": row["metrics"], "member_extra": row["extra"],
            }
            self._claim_member_dir(mid)
            written.append(mid)
            for ck in cks:
                rel = f"{WEIGHTS_DIR}/{mid}/epoch_{int(ck.epoch):05d}.safetensors"
                step = None if ck.step is None else int(ck.step)
                ck_metrics = _dumps(dict(ck.metrics))
                digest = save_safetensors(
                    self.path / rel, ck.state_dict,
                    dict(member_meta, epoch=str(int(ck.epoch)), step=_dumps(step), metrics=ck_metrics),
                )
                ck_rows.append((mid, int(ck.epoch), step, rel, digest, ck_metrics))
                row["sha256"] = digest  # the last one is the final checkpoint's
            rows.append(tuple(row[c] for c in _MEMBER_COLUMNS))
        if not rows:
            return 0
        _insert_rows(self.conn, rows, ck_rows)
        for mid in written:  # committed: the directories are ordinary members now
            (self.path / WEIGHTS_DIR / mid / WRITING_MARKER).unlink(missing_ok=True)
        return len(rows)


_MEMBER_COLUMNS = (
    "member_id", "idx", "arch", "seed", "config", "config_hash", "status", "metrics", "extra",
    "wall_time", "sha256", "final_epoch", "source", "created_at",
)


def _check_compatible(info_path: Path, old: dict, info: Mapping[str, Any],
                      compatible: Callable[[dict], bool] | None) -> None:
    ok = compatible(old) if compatible else (
        old.get("source") == info.get("source") and old.get("recipe_hash") == info.get("recipe_hash")
    )
    if not ok:
        raise ZooFormatError(
            "this directory already holds a different zoo "
            f"(source {old.get('source')!r}, name {old.get('name')!r}); use a new output directory",
            path=info_path,
        )


def _check_empty(path: Path) -> None:
    entries = sorted(p.name for p in path.iterdir() if p.name != ".lock")
    if entries:
        raise ZooFormatError(
            f"directory is not empty and is not a zoo (found {entries[:5]}); use a new output directory",
            path=path,
        )


def _precheck_output(path: Path, info: Mapping[str, Any], compatible: Callable[[dict], bool] | None) -> None:
    """The checks of :class:`ZooWriter` that need no lock, made before the
    writer creates anything: ``path`` is a directory (or absent), an existing
    zoo there is this one, and its index is readable (read-only) when
    checkpoint files depend on it; otherwise a directory that is not a zoo
    must be empty."""
    if path.exists() and not path.is_dir():
        raise ZooFormatError("is not a directory; give a new or existing zoo directory", path=path)
    if not path.is_dir():
        return
    info_path = path / INFO_FILE
    if not info_path.exists():
        _check_empty(path)
        return
    _check_compatible(info_path, _read_info(path), info, compatible)
    index = path / INDEX_FILE
    n_files = _count_checkpoint_files(path / WEIGHTS_DIR)
    if not n_files:
        return  # nothing a fresh index could disown; the writer handles the rest
    if not index.is_file():
        raise _index_error(index, f"is {'missing' if not index.exists() else 'not a file'}, but {WEIGHTS_DIR}/ "
                                  f"holds {n_files} checkpoint file(s); refusing to start a new index over them")
    if index.stat().st_size == 0:
        raise _index_error(index, f"is empty, but {WEIGHTS_DIR}/ holds {n_files} checkpoint file(s); "
                                  "refusing to start a new index over them")
    if any(index.with_name(index.name + sfx).exists() for sfx in ("-journal", "-wal")):
        return  # a crash's hot journal: only the writer (read-write, under the lock) may roll it back
    try:
        conn = _connect(index, readonly=True)
    except sqlite3.Error as e:
        raise _index_error(index, f"cannot be opened ({type(e).__name__}: {e})") from None
    try:
        conn.execute("SELECT member_id FROM members LIMIT 1").fetchall()
        conn.execute("SELECT member_id FROM checkpoints LIMIT 1").fetchall()
    except sqlite3.Error as e:
        if "locked" in str(e) or "busy" in str(e):
            return  # a writer is at work (or a hot journal): the checks under the lock decide
        raise _index_error(index, f"cannot be read ({type(e).__name__}: {e}), but {WEIGHTS_DIR}/ holds "
                                  f"{n_files} checkpoint file(s)") from None
    finally:
        conn.close()


def _insert_rows(conn: sqlite3.Connection, rows: Sequence[tuple], ck_rows: Sequence[tuple]) -> None:
    """Insert members and their checkpoints in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany("INSERT INTO members VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        conn.executemany("INSERT INTO checkpoints VALUES (?,?,?,?,?,?)", ck_rows)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _open_index_for_writing(index: Path) -> sqlite3.Connection:
    """Open (or create) the index for the writer.

    A missing, empty or unreadable index is created afresh only when no
    checkpoint file exists under ``weights/``; otherwise a fresh index would
    disown every member, so it is a :class:`ZooFormatError` naming
    ``weightspace zoo repair``.
    """
    weights = index.parent / WEIGHTS_DIR
    problem = None
    if index.exists() and not index.is_file():
        problem = "is not a file"
    elif not index.exists():
        problem = "is missing"
    elif index.stat().st_size == 0:
        problem = "is empty"
    n_files = _count_checkpoint_files(weights) if problem else 0
    if problem and n_files:
        raise _index_error(index, f"{problem}, but {WEIGHTS_DIR}/ holds {n_files} checkpoint file(s); "
                                  "refusing to start a new index over them")
    if problem == "is not a file":
        raise _index_error(index, problem)
    try:
        conn = _connect(index, readonly=False)
    except sqlite3.Error as e:
        raise _index_error(index, f"cannot be opened ({type(e).__name__}: {e})") from None
    try:
        if not problem:
            try:  # the tables must be there (read-write: a hot journal of a crash is rolled back)
                conn.execute("SELECT member_id FROM members LIMIT 1").fetchall()
                conn.execute("SELECT member_id FROM checkpoints LIMIT 1").fetchall()
            except sqlite3.Error as e:
                n_files = _count_checkpoint_files(weights)
                if n_files:
                    raise _index_error(index, f"cannot be read ({type(e).__name__}: {e}), but {WEIGHTS_DIR}/ "
                                              f"holds {n_files} checkpoint file(s)") from None
        conn.executescript(_SCHEMA)
    except sqlite3.Error as e:
        conn.close()
        raise _index_error(index, f"cannot be read ({type(e).__name__}: {e})") from None
    except BaseException:
        conn.close()
        raise
    return conn


def _acquire_lock(path: Path) -> int:
    fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # pragma: no cover - non-POSIX: no cross-process lock
        pass
    except OSError:
        os.close(fd)
        raise ZooLockedError(
            f"{path}: another process is writing to this zoo (lock {path / '.lock'} is held)"
        ) from None
    return fd


def _release_lock(fd: int | None) -> None:
    if fd is None:
        return
    with contextlib.suppress(Exception):
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


#: The fields of ``zoo.json`` the library reads (others are kept as they are).
_INFO_SCHEMA = {
    "format": Field(str, required=True),
    "version": Field(int, required=True, min=0),
    "name": Field(str, nullable=True),
    "source": Field(str, nullable=True),
    "recipe": Field(dict, nullable=True),
}


def _read_info(path: Path) -> dict:
    p = path / INFO_FILE
    if not p.is_file():
        raise ZooFormatError(f"not a zoo directory ({INFO_FILE} is missing)", path=path)
    try:
        info = read_json(p, what=f"zoo description ({INFO_FILE})")
    except InputFileError as e:
        raise ZooFormatError(e.message, path=e.path, field=e.field) from None
    if not isinstance(info, dict):
        raise ZooFormatError(f"expected a JSON object, got {type(info).__name__}", path=p)
    if info.get("format") != FORMAT_NAME:
        raise ZooFormatError(f"not a {FORMAT_NAME} file", path=p, field="format")
    try:
        validate(info, _INFO_SCHEMA, path=p, allow_unknown=True)
    except ConfigError as e:
        raise ZooFormatError(e.message, path=p, field=e.field) from None
    if info["version"] > FORMAT_VERSION:
        raise ZooFormatError(
            f"zoo format version {info.get('version')} is newer than this library ({FORMAT_VERSION})",
            path=p, field="version",
        )
    return info


# --------------------------------------------------------------------------- reader


@dataclass(frozen=True)
class Checkpoint:
    """One stored checkpoint of a member."""

    epoch: int
    step: int | None
    path: Path
    sha256: str
    metrics: dict
    #: ``(index, why)`` when the index row's path must not be read (it leads
    #: out of the zoo directory), else ``None``
    refused: tuple[str, str] | None = field(default=None, compare=False, repr=False)
    #: ``(arch, JSON of the model kwargs)`` of the member: the tensors read are
    #: checked against that architecture (names and shapes), naming the file
    arch_key: tuple[str, str] | None = field(default=None, compare=False, repr=False)

    def _check_path(self) -> None:
        if self.refused is not None:
            raise ZooFormatError(self.refused[1], path=self.refused[0], field="checkpoints.path")

    def state_dict(self, *, verify: bool = False) -> dict[str, torch.Tensor]:
        """Load the weights; ``verify`` re-hashes them against the index."""
        self._check_path()
        sd = load_safetensors(self.path)
        expected = _expected_shapes(*self.arch_key) if self.arch_key is not None else None
        if expected is not None:
            match_state_dict(expected, sd, path=self.path, what=f"the member's architecture ({self.arch_key[0]})")
        if verify:
            got = state_dict_sha256(sd)
            if got != self.sha256:
                raise ZooFormatError(
                    f"content hash mismatch: index says {self.sha256[:12]}, file has {got[:12]}",
                    path=self.path, field="sha256",
                )
        return sd


@dataclass(frozen=True)
class Member:
    """A zoo member: its config, final metrics and checkpoints."""

    member_id: str
    index: int
    arch: str
    seed: int | None
    config: dict
    config_hash: str
    status: str
    metrics: dict
    extra: dict
    wall_time: float | None
    sha256: str
    final_epoch: int
    source: str
    created_at: str
    checkpoints: tuple[Checkpoint, ...] = field(default_factory=tuple)

    @property
    def model_kwargs(self) -> dict:
        return dict(self.config.get("model", {}))

    def checkpoint(self, epoch: int | None = None) -> Checkpoint:
        """The checkpoint at ``epoch`` (``None`` = final)."""
        if epoch is None:
            epoch = self.final_epoch
        for ck in self.checkpoints:
            if ck.epoch == epoch:
                return ck
        raise KeyError(
            f"member {self.member_id} has no checkpoint at epoch {epoch}; "
            f"it has {[c.epoch for c in self.checkpoints]}"
        )

    def state_dict(self, epoch: int | None = None, *, verify: bool = False) -> dict[str, torch.Tensor]:
        return self.checkpoint(epoch).state_dict(verify=verify)

    def module(self, epoch: int | None = None) -> torch.nn.Module:
        """The network with this checkpoint's weights loaded (eval mode)."""
        ck = self.checkpoint(epoch)
        return _build_module(self.arch, self.model_kwargs, ck.state_dict(), ck.path, self.member_id)


@functools.lru_cache(maxsize=64)
def _expected_shapes(arch: str, kwargs_json: str) -> dict[str, tuple[int, ...]] | None:
    """Tensor names and shapes of ``arch(**kwargs)``, built on the ``meta``
    device (no memory, the global RNG untouched); ``None`` when the model
    cannot be built there (the check is skipped; building it for real reports
    the problem)."""
    try:
        with torch.device("meta"):
            model = registry.resolve_model(arch, seed=0, load_weights=False, require_input=False,
                                           **json.loads(kwargs_json)).module
    except Exception:  # noqa: BLE001 - best effort: an unbuildable config is reported where it is built
        return None
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _build_module(arch: str, kwargs: Mapping[str, Any], sd: Mapping[str, torch.Tensor], path: Path,
                  mid: str) -> torch.nn.Module:
    """The member's network with the weights ``sd`` read from ``path`` (eval
    mode); a file whose tensors do not fit the member's architecture (swapped,
    or from another model) is a :class:`~weightspace.errors.StateDictError`
    naming the file."""
    model = registry.resolve_model(arch, seed=None, load_weights=False, require_input=False, **kwargs).module
    match_state_dict(model.state_dict(), sd, path=path, what=f"member {mid}'s architecture ({arch})")
    model.load_state_dict(sd)
    return model.eval()


def _flatten(d: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (list, tuple, dict)):
            out[key] = json.dumps(v)  # keep columns scalar (Parquet-friendly)
        else:
            out[key] = v
    return out


def _row_json(index: Path, mid: str, column: str, text: Any, *, epoch: Any = None) -> dict:
    """Decode one JSON column of an index row (a mapping); a tampered or
    damaged value is a :class:`ZooFormatError` naming the index, the member
    and the column."""
    where = f"member {mid}" + (f", epoch {epoch}" if epoch is not None else "")
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as e:
        msg = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
        raise ZooFormatError(
            f"{where}: invalid JSON in the index ({msg}); restore the index from a copy or rebuild it from "
            f"the checkpoint files with: {REPAIR_HINT} {index.parent}",
            path=index, field=column,
        ) from None
    if not isinstance(value, dict):
        raise ZooFormatError(
            f"{where}: expected a JSON object in the index, got {type(value).__name__}; restore the index "
            f"from a copy or rebuild it with: {REPAIR_HINT} {index.parent}",
            path=index, field=column,
        )
    return value


def _escaping_path(index: Path, root: Path, mid: str, epoch: Any, rel: Any) -> tuple[str, str] | None:
    """``(index, why)`` when the checkpoint path ``rel`` of an index row must
    not be followed (absolute, or leading out of the zoo directory), else ``None``."""
    text = str(rel)
    p = Path(text)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        return str(index), (
            f"member {mid}, epoch {epoch}: the index gives the checkpoint path {text!r}, outside the zoo "
            f"directory; refusing to read it (restore the index from a copy or rebuild it with: "
            f"{REPAIR_HINT} {root})")
    return None


class Zoo:
    """A read-only view of a zoo directory (or a subset of its members).

    Example::

        z = Zoo("runs/digits")
        good = z.filter("test_acc > 0.5", activation="relu")
        train, val, test = good.split((0.8, 0.1, 0.1), by="seed", seed=0)
        for state_dict, metrics in train:
            ...
        df = z.to_pandas()

    ``filter`` and ``split`` return new :class:`Zoo` objects over the same
    directory; nothing is copied.
    """

    def __init__(self, path: str | Path, *, member_ids: Sequence[str] | None = None) -> None:
        self.path = Path(path).expanduser()
        self.info = _read_info(self.path)
        index = self.path / INDEX_FILE
        if not index.is_file():
            n_files = _count_checkpoint_files(self.path / WEIGHTS_DIR)
            if n_files:
                raise _index_error(index, f"is missing, but {WEIGHTS_DIR}/ holds {n_files} checkpoint file(s)")
            raise ZooFormatError(f"{INDEX_FILE} is missing", path=self.path)
        try:
            self._members = self._load(index)
        except ZooFormatError:  # a row named by _row_json / _escaping_path
            raise
        except (sqlite3.Error, ValueError, TypeError) as e:  # a damaged database; undecodable JSON in a row
            problem = "is empty" if index.stat().st_size == 0 else f"cannot be read ({type(e).__name__}: {e})"
            raise _index_error(index, problem) from None
        if member_ids is None:
            self._ids = tuple(sorted(self._members, key=lambda m: (self._members[m].index, m)))
        else:
            missing = [m for m in member_ids if m not in self._members]
            if missing:
                raise KeyError(f"unknown member id(s) {missing[:5]} in zoo {self.path}")
            self._ids = tuple(member_ids)
        self._df_cache: dict[bool, Any] = {}

    @classmethod
    def _subset(cls, parent: "Zoo", ids: Sequence[str]) -> "Zoo":
        z = cls.__new__(cls)
        z.path, z.info, z._members = parent.path, parent.info, parent._members
        z._ids = tuple(ids)
        z._df_cache = {}
        return z

    def _load(self, index: Path) -> dict[str, Member]:
        conn = _connect(index, readonly=True)
        try:
            cks: dict[str, list[Checkpoint]] = {}
            for mid, epoch, step, rel, sha, met in conn.execute(
                "SELECT member_id, epoch, step, path, sha256, metrics FROM checkpoints ORDER BY member_id, epoch"
            ):
                cks.setdefault(mid, []).append(Checkpoint(
                    int(epoch), step, self.path / str(rel), sha,
                    _row_json(index, mid, "checkpoints.metrics", met, epoch=epoch),
                    refused=_escaping_path(index, self.path, mid, epoch, rel),
                ))
            members = {}
            for row in conn.execute(
                "SELECT member_id, idx, arch, seed, config, config_hash, status, metrics, extra, "
                "wall_time, sha256, final_epoch, source, created_at FROM members"
            ):
                mid = row[0]
                config = _row_json(index, mid, "members.config", row[4])
                model_kwargs = config.get("model", {})
                arch_key = (str(row[2]), _dumps(model_kwargs)) if isinstance(model_kwargs, dict) else None
                members[mid] = Member(
                    member_id=mid, index=int(row[1]), arch=row[2], seed=row[3],
                    config=config, config_hash=row[5], status=row[6],
                    metrics=_row_json(index, mid, "members.metrics", row[7]),
                    extra=_row_json(index, mid, "members.extra", row[8]), wall_time=row[9],
                    sha256=row[10], final_epoch=int(row[11]), source=row[12], created_at=row[13],
                    checkpoints=tuple(dataclasses.replace(c, arch_key=arch_key) for c in cks.get(mid, ())),
                )
        finally:
            conn.close()
        return members

    # ------------------------------------------------------------------ basics
    @property
    def name(self) -> str:
        return str(self.info.get("name", self.path.name))

    @property
    def recipe(self):
        """The :class:`~zoo.recipe.Recipe` this zoo was built from, or ``None``."""
        if self.info.get("recipe") is None:
            return None

        return Recipe.from_dict(self.info["recipe"], source=str(self.path / INFO_FILE))

    @property
    def member_ids(self) -> list[str]:
        return list(self._ids)

    def members(self) -> list[Member]:
        return [self._members[m] for m in self._ids]

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return f"Zoo({str(self.path)!r}, members={len(self)})"

    def __getitem__(self, key: int | str) -> Member:
        """A member by position in this view or by ``member_id``."""
        if isinstance(key, str):
            if key not in self._ids:
                raise KeyError(f"no member {key!r} in this zoo view")
            return self._members[key]
        return self._members[self._ids[key]]

    def __iter__(self) -> Iterator[tuple[dict[str, torch.Tensor], dict]]:
        """``(state_dict, metrics)`` of each member's final checkpoint."""
        return self.iter_members()

    def iter_members(
        self,
        *,
        epoch: int | None = None,
        as_module: bool = False,
        all_checkpoints: bool = False,
        verify: bool = False,
    ) -> Iterator[tuple[Any, dict]]:
        """Iterate ``(state_dict or module, metrics)``.

        Args:
            epoch: which checkpoint (``None`` = each member's final one).
            as_module: yield the built ``nn.Module`` (eval mode) instead of the state dict.
            all_checkpoints: yield every checkpoint of every member.
            verify: re-hash each loaded state dict against the index.

        ``metrics`` is the checkpoint's metrics plus ``member_id``, ``epoch``
        and ``seed``.
        """
        for mid in self._ids:
            m = self._members[mid]
            cks = m.checkpoints if all_checkpoints else (m.checkpoint(epoch),)
            for ck in cks:
                sd = ck.state_dict(verify=verify)
                if as_module:
                    obj: Any = _build_module(m.arch, m.model_kwargs, sd, ck.path, mid)
                else:
                    obj = sd
                yield obj, dict(ck.metrics, member_id=mid, epoch=ck.epoch, seed=m.seed)

    def state_dict(self, member_id: str, epoch: int | None = None) -> dict[str, torch.Tensor]:
        return self[member_id].state_dict(epoch)

    def module(self, member_id: str, epoch: int | None = None) -> torch.nn.Module:
        return self[member_id].module(epoch)

    def stacked(self, epoch: int | None = None) -> dict[str, torch.Tensor]:
        """All members' weights stacked: ``{name: (len(zoo), *shape)}``, in
        this view's order. Needs every member to have the same tensors."""
        out: dict[str, list[torch.Tensor]] = {}
        ref: dict[str, tuple] | None = None
        for sd, meta in self.iter_members(epoch=epoch):
            shapes = {k: tuple(v.shape) for k, v in sd.items()}
            if ref is None:
                ref = shapes
            elif shapes != ref:
                raise ValueError(
                    f"member {meta['member_id']} has different tensors than the first member; "
                    "stack members of one architecture (use filter(arch=...))"
                )
            for k, v in sd.items():
                out.setdefault(k, []).append(v)
        return {k: torch.stack(v) for k, v in out.items()}

    # ------------------------------------------------------------------ tables
    def to_pandas(self, *, checkpoints: bool = False):
        """A DataFrame with one row per member (or per checkpoint).

        Columns: ``member_id, index, arch, seed, status, wall_time, sha256,
        final_epoch, source, created_at, n_checkpoints, path``, the final
        metrics (``test_acc``, ...), ``extra`` facts, and the flattened config
        as ``config.<dotted.path>`` (lists as JSON strings). With
        ``checkpoints=True`` also ``epoch, step`` and per-checkpoint metrics,
        ``sha256``/``path`` being the checkpoint's.
        """
        import pandas as pd

        if checkpoints in self._df_cache:
            return self._df_cache[checkpoints].copy()
        rows = []
        for mid in self._ids:
            m = self._members[mid]
            base = {
                "member_id": mid, "index": m.index, "arch": m.arch, "seed": m.seed,
                "status": m.status, "wall_time": m.wall_time, "final_epoch": m.final_epoch,
                "source": m.source, "created_at": m.created_at, "n_checkpoints": len(m.checkpoints),
            }
            cfg = _flatten(m.config, "config.")
            if checkpoints:
                for ck in m.checkpoints:
                    rows.append({**base, "epoch": ck.epoch, "step": ck.step, "sha256": ck.sha256,
                                 "path": str(ck.path), **ck.metrics, **m.extra, **cfg})
            else:
                final = m.checkpoint()
                rows.append({**base, "sha256": m.sha256, "path": str(final.path),
                             **m.metrics, **m.extra, **cfg})
        df = pd.DataFrame(rows)
        if df.empty:
            df = pd.DataFrame(columns=["member_id", "index", "arch", "seed", "status"])
        self._df_cache[checkpoints] = df
        return df.copy()

    @property
    def df(self):
        """Shortcut for :meth:`to_pandas` (one row per member)."""
        return self.to_pandas()

    def export_parquet(self, path: str | Path, *, checkpoints: bool = False) -> Path:
        """Write :meth:`to_pandas` to Parquet atomically; returns the path."""
        import io

        df = self.to_pandas(checkpoints=checkpoints)
        for col in df.columns:  # mixed-type object columns -> strings (Parquet needs one type)
            if df[col].dtype == object:
                kinds = {type(v) for v in df[col] if v is not None and not (isinstance(v, float) and math.isnan(v))}
                if len(kinds) > 1 and not kinds <= {int, float, bool}:
                    df[col] = df[col].map(lambda v: None if v is None else str(v))
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        path = Path(path)
        atomic_write_bytes(path, buf.getvalue())
        return path

    # ------------------------------------------------------------------ queries
    def _resolve_column(self, key: str, columns: Sequence[str]) -> str:
        return resolve_column(columns, key, where=f" in zoo {self.path}")

    def filter(self, query: str | None = None, /, **conditions: Any) -> "Zoo":
        """Members matching a pandas ``query`` string and/or conditions.

        Args:
            query: ``DataFrame.query`` expression over :meth:`to_pandas`
                columns (quote dotted names with backticks:
                ``"`config.train.lr` < 0.01 and test_acc > 0.5"``).
            conditions: ``column=value`` (equality), ``column=[v1, v2]``
                (membership) or ``column=callable`` (predicate on the column
                Series, returning a boolean Series). A column may be named by
                a unique suffix (``activation`` for ``config.model.activation``);
                dotted names go through ``**{"config.train.lr": 0.01}``.

        Returns:
            a new :class:`Zoo` view (order preserved).
        """
        df = self.to_pandas()
        if df.empty:
            return Zoo._subset(self, [])
        mask = np.ones(len(df), dtype=bool)
        if query:
            mask &= df.index.isin(df.query(query).index)
        for key, cond in conditions.items():
            col = df[self._resolve_column(key, list(df.columns))]
            if callable(cond):
                sel = np.asarray(cond(col), dtype=bool)
            elif isinstance(cond, (list, tuple, set, frozenset)):
                sel = col.isin(list(cond)).to_numpy()
            else:
                sel = (col == cond).to_numpy()
            mask &= sel
        return Zoo._subset(self, [mid for mid, keep in zip(df["member_id"], mask) if keep])

    def split(
        self,
        fractions: Sequence[float] = (0.8, 0.1, 0.1),
        *,
        by: str = "member",
        seed: int = 0,
        values: Mapping[str, Sequence[Any]] | None = None,
    ) -> tuple["Zoo", "Zoo", "Zoo"]:
        """Split into ``(train, val, test)`` views.

        Random split (``values is None``): the distinct values of column
        ``by`` are shuffled with ``numpy.random.default_rng(seed)`` and
        assigned to train/val/test by ``fractions``; all members sharing a
        value land in the same split. ``by="member"`` splits members, ``by="seed"``
        keeps members of one training seed together, any other column (e.g.
        ``"config.model.activation"``) groups by that hyperparameter.

        Out-of-distribution split (``values`` given): ``{"train": [...],
        "val": [...], "test": [...]}`` lists the values of column ``by`` for
        each split (e.g. train on relu/tanh, test on gelu). Members whose
        value is listed nowhere are left out; listing a value twice is an error.
        """
        from weightspace.common.splits import check_fractions, group_key, group_split

        df = self.to_pandas()
        if df.empty:
            return Zoo._subset(self, []), Zoo._subset(self, []), Zoo._subset(self, [])
        col = "member_id" if by == "member" else self._resolve_column(by, list(df.columns))
        keys = [group_key(v) for v in df[col]]
        ids = df["member_id"].to_numpy()
        if values is not None:
            bad = set(values) - {"train", "val", "test"}
            if bad:
                raise ValueError(f"values keys must be train/val/test, got {sorted(bad)}")
            where: dict[str, str] = {}
            for split_name, vals in values.items():
                for v in vals:
                    k = group_key(v)
                    if k in where:
                        raise ValueError(f"value {v!r} of {col!r} is listed in both {where[k]} and {split_name}")
                    where[k] = split_name
            assign = np.array([where.get(k, "") for k in keys])
            return tuple(Zoo._subset(self, list(ids[assign == s])) for s in ("train", "val", "test"))  # type: ignore[return-value]
        parts = group_split(keys, check_fractions(fractions, parts=3), seed=seed)
        return tuple(Zoo._subset(self, list(ids[idx])) for idx in parts)  # type: ignore[return-value]

    # ------------------------------------------------------------------ integrity
    def verify(self, *, quick: bool = False) -> list[str]:
        """Check every checkpoint of this view against the index.

        Args:
            quick: skip re-hashing the tensors: check only that each file
                exists, that its header parses and covers the whole file
                (truncation) and that the hash in its metadata matches the
                index (one header read per file).

        Returns:
            the problems, one line each (``"<file>: <what is wrong>"``:
            missing, truncated or corrupt files, content hash mismatches);
            empty when the zoo is intact. Never raises for a damaged file.
        """
        problems = []
        for mid in self._ids:
            for ck in self._members[mid].checkpoints:
                if ck.refused is not None:
                    problems.append(f"{ck.refused[0]}: [checkpoints.path] {ck.refused[1]}")
                    continue
                if quick:
                    problem = _check_checkpoint_header(ck.path, ck.sha256)
                    if problem:
                        problems.append(problem)
                    continue
                try:
                    ck.state_dict(verify=True)
                except (InputFileError, OSError) as e:  # ZooFormatError is an InputFileError
                    problems.append(str(e) if isinstance(e, InputFileError) else f"{ck.path}: {e}")
        return problems

    # ------------------------------------------------------------------ parameter graphs
    # The zoo -> graphs loop is the library's one (weightspace.common.zoo_samples),
    # shared with nn.train.dataset_from_zoo and predict.zoo_dataset.
    def parameter_graphs(
        self,
        epoch: int | None = None,
        *,
        all_checkpoints: bool = False,
        batch: bool = False,
        allow_nonfinite: bool = False,
    ):
        """Parameter graphs of the members.

        One :class:`weightspace.graph.ParameterGraph` per member (its final
        checkpoint, or ``epoch``), or per checkpoint with ``all_checkpoints``.
        Graph templates are traced once per (architecture, model config).

        Returns:
            a list of graphs, in member order, or one
            ``torch_geometric.data.Batch`` when ``batch=True`` (members of
            different architectures batch together).
        """
        cks = zoo_checkpoints(self, "all" if all_checkpoints else epoch)
        graphs = [ck.graph(allow_nonfinite=allow_nonfinite) for ck in cks]
        return to_pyg_batch(graphs) if batch else graphs
