"""The on-disk zoo format and the :class:`Zoo` object.

A zoo is a directory::

    zoo.json                      format version, name, source, the recipe (if built)
    recipe.yaml                   human-readable copy of the recipe (if built)
    index.sqlite                  members + checkpoints (configs, metrics, paths, hashes)
    weights/<member_id>/epoch_00008.safetensors   one file per checkpoint

Guarantees:

* Weights are safetensors only; nothing on disk is ever unpickled.
* Every file is written to a temporary name, fsynced and ``os.replace``-d.
* A member enters the index in one sqlite transaction together with all its
  checkpoints, after its files are on disk. A member is therefore either
  complete or absent; files of absent members (a build killed mid-write) are
  removed when a writer opens the zoo, and the member is trained again.
* One writer at a time (an exclusive ``flock`` on ``.lock``).

Content hash (:func:`state_dict_sha256`, i.e. :func:`weightspace.io.state_dict_hash`):
sha256 over names, dtypes, shapes and raw tensor bytes in sorted name order.
It identifies the weights, independent of how the file was written.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

import weightspace.arch as registry
from weightspace.core import graph_template
from weightspace.graph import to_pyg_batch
from weightspace.io import save_state_dict, state_dict_hash
from weightspace.predict.splits import resolve_column
from zoo.errors import ZooFormatError, ZooLockedError
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


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory,
    fsync, then ``os.replace`` (readers never see a partial file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())  # mkstemp creates 0600; use the usual file mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_safetensors(
    path: str | Path, state_dict: Mapping[str, Any], metadata: Mapping[str, str] | None = None
) -> str:
    """Atomically write ``state_dict`` (tensors or arrays) as safetensors
    (:func:`weightspace.io.save_state_dict`: temp file + ``os.replace``).

    Returns:
        the content hash (:func:`state_dict_sha256`), also stored in the
        file's metadata under ``sha256``.
    """
    tensors = _as_tensors(state_dict)
    digest = state_dict_sha256(tensors)
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta["sha256"] = digest
    save_state_dict(tensors, path, metadata=meta)
    os.chmod(path, _umask_mode())
    return digest


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors checkpoint of a zoo (never unpickles)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ZooFormatError("checkpoint file is missing", path=path)
    return dict(load_file(str(path)))


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


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    else:
        conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = FULL")
    return conn


# --------------------------------------------------------------------------- writer


class ZooWriter:
    """The single writer of a zoo directory.

    Opening creates the directory and index if needed, takes an exclusive
    lock, checks ``zoo.json`` compatibility, and removes files of members that
    never reached the index (interrupted writes). Use as a context manager.

    Args:
        path: zoo directory.
        info: ``zoo.json`` content for a new zoo (``name``, ``source``,
            ``recipe`` ...). For an existing zoo, ``compatible(old_info)``
            decides whether it may be extended.
        compatible: predicate on the existing ``zoo.json``; defaults to
            "same ``source`` and ``recipe_hash``".
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
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _acquire_lock(self.path)
        try:
            info_path = self.path / INFO_FILE
            index_path = self.path / INDEX_FILE
            if info_path.exists():
                old = _read_info(self.path)
                ok = compatible(old) if compatible else (
                    old.get("source") == info.get("source")
                    and old.get("recipe_hash") == info.get("recipe_hash")
                )
                if not ok:
                    raise ZooFormatError(
                        "this directory already holds a different zoo "
                        f"(source {old.get('source')!r}, name {old.get('name')!r}); "
                        "use a new output directory",
                        path=info_path,
                    )
                self.info = old
                if info.get("recipe") is not None and old.get("recipe") != info.get("recipe"):
                    # e.g. a random-search zoo grown with more members
                    self.info = dict(old, recipe=info["recipe"], recipe_hash=info.get("recipe_hash"))
                    if recipe_yaml is not None:
                        atomic_write_bytes(self.path / "recipe.yaml", recipe_yaml.encode())
                    atomic_write_bytes(info_path, json.dumps(self.info, indent=2).encode())
            else:
                entries = sorted(p.name for p in self.path.iterdir() if p.name != ".lock")
                if entries:
                    raise ZooFormatError(
                        f"directory is not empty and is not a zoo (found {entries[:5]}); "
                        "use a new output directory",
                        path=self.path,
                    )
                self.info = {
                    "format": FORMAT_NAME,
                    "version": FORMAT_VERSION,
                    "created": _now(),
                    **dict(info),
                }
                if recipe_yaml is not None:
                    atomic_write_bytes(self.path / "recipe.yaml", recipe_yaml.encode())
                # zoo.json marks the directory as a zoo; the index is created
                # (idempotently) right after, so an interruption here is harmless.
                atomic_write_bytes(info_path, json.dumps(self.info, indent=2).encode())
            self.conn = _connect(index_path, readonly=False)
            self.conn.executescript(_SCHEMA)
            self.removed_orphans = self._cleanup_orphans()
        except BaseException:
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
    def _cleanup_orphans(self) -> list[str]:
        """Delete temp files and weight directories of members not in the index."""
        removed: list[str] = []
        wdir = self.path / WEIGHTS_DIR
        known = self.member_ids()
        for tmp in self.path.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
            removed.append(str(tmp.relative_to(self.path)))
        if wdir.is_dir():
            for d in wdir.iterdir():
                if d.is_dir() and d.name not in known:
                    shutil.rmtree(d)
                    removed.append(str(d.relative_to(self.path)))
                elif d.is_dir():
                    for tmp in d.glob(".*.tmp"):
                        tmp.unlink(missing_ok=True)
                        removed.append(str(tmp.relative_to(self.path)))
        return removed

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
        """Write several members in one index transaction (faster imports)."""
        rows, ck_rows = [], []
        for m in members:
            mid = str(m["member_id"])
            if "/" in mid or mid.startswith("."):
                raise ValueError(f"invalid member_id {mid!r}")
            cfg = dict(m["config"])
            if "arch" not in cfg or "model" not in cfg:
                raise ValueError(f"member {mid}: config needs 'arch' and 'model'")
            cks = list(m["checkpoints"])
            if not cks:
                raise ValueError(f"member {mid}: no checkpoints")
            digests = []
            for ck in cks:
                rel = f"{WEIGHTS_DIR}/{mid}/epoch_{int(ck.epoch):05d}.safetensors"
                digest = save_safetensors(
                    self.path / rel, ck.state_dict,
                    {"member_id": mid, "epoch": str(int(ck.epoch)), "arch": cfg["arch"]},
                )
                digests.append(digest)
                ck_rows.append(
                    (mid, int(ck.epoch), None if ck.step is None else int(ck.step), rel, digest,
                     _dumps(dict(ck.metrics)))
                )
            final_metrics = dict(m.get("metrics") or cks[-1].metrics)
            rows.append(
                (
                    mid, int(m["index"]), str(cfg["arch"]),
                    None if m.get("seed") is None else int(m["seed"]),
                    _dumps(cfg), m.get("config_hash") or _chash(cfg), str(m.get("status", "ok")),
                    _dumps(final_metrics), _dumps(dict(m.get("extra") or {})),
                    None if m.get("wall_time") is None else float(m["wall_time"]),
                    digests[-1], int(cks[-1].epoch), str(m.get("source", "build")), _now(),
                )
            )
        if not rows:
            return 0
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.executemany("INSERT INTO members VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            c.executemany("INSERT INTO checkpoints VALUES (?,?,?,?,?,?)", ck_rows)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return len(rows)


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


def _read_info(path: Path) -> dict:
    p = path / INFO_FILE
    if not p.is_file():
        raise ZooFormatError(f"not a zoo directory ({INFO_FILE} is missing)", path=path)
    try:
        info = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ZooFormatError(f"invalid JSON: {e}", path=p) from None
    if info.get("format") != FORMAT_NAME:
        raise ZooFormatError(f"not a {FORMAT_NAME} file", path=p, field="format")
    if int(info.get("version", 0)) > FORMAT_VERSION:
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

    def state_dict(self, *, verify: bool = False) -> dict[str, torch.Tensor]:
        """Load the weights; ``verify`` re-hashes them against the index."""
        sd = load_safetensors(self.path)
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
        model = registry.create_model(self.arch, **self.model_kwargs)
        model.load_state_dict(self.state_dict(epoch))
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
            raise ZooFormatError(f"{INDEX_FILE} is missing", path=self.path)
        self._members = self._load(index)
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
                cks.setdefault(mid, []).append(
                    Checkpoint(int(epoch), step, self.path / rel, sha, json.loads(met))
                )
            members = {}
            for row in conn.execute(
                "SELECT member_id, idx, arch, seed, config, config_hash, status, metrics, extra, "
                "wall_time, sha256, final_epoch, source, created_at FROM members"
            ):
                mid = row[0]
                members[mid] = Member(
                    member_id=mid, index=int(row[1]), arch=row[2], seed=row[3],
                    config=json.loads(row[4]), config_hash=row[5], status=row[6],
                    metrics=json.loads(row[7]), extra=json.loads(row[8]), wall_time=row[9],
                    sha256=row[10], final_epoch=int(row[11]), source=row[12], created_at=row[13],
                    checkpoints=tuple(cks.get(mid, ())),
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
                    mod = registry.create_model(m.arch, **m.model_kwargs)
                    mod.load_state_dict(sd)
                    obj: Any = mod.eval()
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
        df = self.to_pandas()
        if df.empty:
            return Zoo._subset(self, []), Zoo._subset(self, []), Zoo._subset(self, [])
        col = "member_id" if by == "member" else self._resolve_column(by, list(df.columns))
        keys = df[col].map(lambda v: json.dumps(v, default=str)).to_numpy()
        if values is not None:
            bad = set(values) - {"train", "val", "test"}
            if bad:
                raise ValueError(f"values keys must be train/val/test, got {sorted(bad)}")
            where: dict[str, str] = {}
            for split_name, vals in values.items():
                for v in vals:
                    k = json.dumps(v, default=str)
                    if k in where:
                        raise ValueError(f"value {v!r} of {col!r} is listed in both {where[k]} and {split_name}")
                    where[k] = split_name
            assign = np.array([where.get(k, "") for k in keys])
        else:
            if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0):
                raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
            groups = sorted(set(keys))
            order = np.random.default_rng(int(seed)).permutation(len(groups))
            g = len(groups)
            n_tr = int(round(fractions[0] * g))
            n_va = min(g - n_tr, int(round(fractions[1] * g)))
            names = {}
            for rank, gi in enumerate(order):
                names[groups[gi]] = "train" if rank < n_tr else "val" if rank < n_tr + n_va else "test"
            assign = np.array([names[k] for k in keys])
        ids = df["member_id"].to_numpy()
        return tuple(Zoo._subset(self, list(ids[assign == s])) for s in ("train", "val", "test"))  # type: ignore[return-value]

    # ------------------------------------------------------------------ integrity
    def verify(self) -> list[str]:
        """Re-hash every checkpoint; returns a list of problems (empty = intact)."""
        problems = []
        for mid in self._ids:
            for ck in self._members[mid].checkpoints:
                try:
                    ck.state_dict(verify=True)
                except ZooFormatError as e:
                    problems.append(str(e))
        return problems

    # ------------------------------------------------------------------ parameter graphs
    # >>> PARAMETER GRAPHS: wired by the owner of ``weightspace.graph`` <<<
    # This is the one place where a zoo becomes batched parameter graphs
    # (``weightspace.graph``). Expected shape of the API: build each member's
    # ParameterGraph from ``member.module()`` (or from ``member.arch`` +
    # ``member.model_kwargs`` + ``zoo.registry.example_input``) once per
    # architecture, fill in the weights of each checkpoint, and return a batch
    # (e.g. a PyG ``Batch``) together with the metrics as targets.
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
        graphs = []
        for m in self.members():
            template = graph_template(m.arch, **m.model_kwargs)
            epochs = [c.epoch for c in m.checkpoints] if all_checkpoints else [epoch]
            for e in epochs:
                graphs.append(template.graph(m.state_dict(e), allow_nonfinite=allow_nonfinite))
        return to_pyg_batch(graphs) if batch else graphs
