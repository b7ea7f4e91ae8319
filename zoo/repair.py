"""Rebuilding a lost or damaged zoo index from the checkpoint files.

``weightspace zoo repair ZOO`` / :func:`repair_zoo` reads every
``weights/<member_id>/epoch_NNNNN.safetensors``, re-hashes its tensors, and
rebuilds ``index.sqlite`` from the member and checkpoint rows that the writer
stores in each file's safetensors metadata
(:data:`zoo.store.CHECKPOINT_METADATA`). Files written before that metadata
existed can still be placed from the old index, when it is readable and agrees
with the file's content hash; otherwise they are reported, never guessed.

Nothing is deleted: the old index (and its sqlite journal, if any) is moved
aside to ``index.sqlite.broken-<UTC timestamp>``; files that cannot be placed
stay where they are and are listed in the :class:`RepairReport`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from weightspace.errors import InputFileError
from weightspace.io import atomic_write, read_safetensors, read_safetensors_metadata
from zoo.store import (
    _CHECKPOINT_NAME,
    _MEMBER_COLUMNS,
    _MEMBER_TMP,
    _SCHEMA,
    CHECKPOINT_META_VERSION,
    INDEX_FILE,
    MEMBER_ID_PATTERN,
    WEIGHTS_DIR,
    WRITING_MARKER,
    _acquire_lock,
    _connect,
    _insert_rows,
    _read_info,
    _release_lock,
    state_dict_sha256,
)

__all__ = ["repair_zoo", "RepairReport"]


@dataclass
class RepairReport:
    """What :func:`repair_zoo` did.

    Attributes:
        path: the zoo directory.
        members: ids of the members in the rebuilt index.
        checkpoints: checkpoints in the rebuilt index.
        unplaced: ``(path relative to the zoo, reason)`` of each file under
            ``weights/`` that could not be placed (corrupt or truncated,
            hash mismatch, no metadata, member incomplete ...). Left on disk.
        unknown: entries under ``weights/`` that are not member directories
            (left alone).
        from_old_index: members whose files carry no metadata (written by an
            older version) and whose rows were taken from the readable old index.
        missing: members the old index listed but whose files are not all
            there (only when the old index could be read).
        moved_index: where the old index went (``None`` if there was none).
        old_index_error: why the old index could not be read (``None`` if it
            could, or there was none).
    """

    path: Path
    members: list[str] = field(default_factory=list)
    checkpoints: int = 0
    unplaced: list[tuple[str, str]] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    from_old_index: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    moved_index: Path | None = None
    old_index_error: str | None = None

    @property
    def complete(self) -> bool:
        """Every checkpoint file found was placed and no indexed member was lost."""
        return not self.unplaced and not self.missing

    def to_dict(self) -> dict:
        return {
            "path": str(self.path), "members": list(self.members), "checkpoints": self.checkpoints,
            "unplaced": [list(u) for u in self.unplaced], "unknown": list(self.unknown),
            "from_old_index": list(self.from_old_index), "missing": list(self.missing),
            "moved_index": None if self.moved_index is None else str(self.moved_index),
            "old_index_error": self.old_index_error,
        }


@dataclass
class _File:
    rel: str
    epoch: int
    digest: str
    meta: dict[str, str]


def _read_old_index(index: Path) -> tuple[dict[str, tuple], dict[str, dict[int, tuple]], str | None]:
    """Rows of the old index, as far as they can be read: ``(members, checkpoints, error)``."""
    if not index.is_file():
        return {}, {}, None
    if index.stat().st_size == 0:
        return {}, {}, "the index file is empty"
    members: dict[str, tuple] = {}
    cks: dict[str, dict[int, tuple]] = {}
    try:
        conn = _connect(index, readonly=True)
        try:
            for row in conn.execute(f"SELECT {', '.join(_MEMBER_COLUMNS)} FROM members"):
                members[row[0]] = tuple(row)
            for row in conn.execute("SELECT member_id, epoch, step, path, sha256, metrics FROM checkpoints"):
                cks.setdefault(row[0], {})[int(row[1])] = tuple(row)
        finally:
            conn.close()
    except sqlite3.Error as e:
        return {}, {}, f"{type(e).__name__}: {e}"
    return members, cks, None


def _member_rows(mid: str, files: list[_File]) -> tuple[tuple, list[tuple]] | str:
    """Index rows of one member from its files' metadata, or why not."""
    first = files[0].meta
    keys = ("member", "member_config", "member_metrics", "member_extra", "arch")
    for f in files[1:]:
        if any(f.meta.get(k) != first.get(k) for k in keys):
            return f"its checkpoint files disagree about the member ({f.rel} differs from {files[0].rel})"
    try:
        member = json.loads(first["member"])
        for k in ("member_config", "member_metrics", "member_extra"):
            json.loads(first[k])
        epochs = [int(e) for e in member["epochs"]]
        final_epoch = int(member["final_epoch"])
        ck_meta = {f.epoch: (json.loads(f.meta["step"]), f.meta["metrics"]) for f in files}
        for _, ck_metrics in ck_meta.values():
            json.loads(ck_metrics)
    except (KeyError, TypeError, ValueError) as e:
        return f"its metadata is malformed ({type(e).__name__}: {e})"
    have = {f.epoch for f in files}
    if set(epochs) != have or final_epoch not in have:
        lost = sorted(set(epochs) - have)
        return f"member incomplete: checkpoint(s) of epoch {lost} missing or unplaceable"
    by_epoch = {f.epoch: f for f in files}
    row = dict(
        member_id=mid, idx=int(member["index"]), arch=first["arch"],
        seed=None if member.get("seed") is None else int(member["seed"]),
        config=first["member_config"], config_hash=str(member["config_hash"]), status=str(member["status"]),
        metrics=first["member_metrics"], extra=first["member_extra"],
        wall_time=None if member.get("wall_time") is None else float(member["wall_time"]),
        sha256=by_epoch[final_epoch].digest, final_epoch=final_epoch, source=str(member["source"]),
        created_at=str(member["created_at"]),
    )
    ck_rows = []
    for e in sorted(by_epoch):
        step, ck_metrics = ck_meta[e]
        ck_rows.append((mid, e, None if step is None else int(step), by_epoch[e].rel, by_epoch[e].digest, ck_metrics))
    return tuple(row[c] for c in _MEMBER_COLUMNS), ck_rows


def _rows_from_old_index(mid: str, files: list[_File], old_members: dict, old_cks: dict) -> tuple[tuple, list[tuple]] | str:
    """Index rows of a member whose files carry no metadata, from the old index."""
    if mid not in old_members:
        return ("no member metadata in the file (written by an older version) and no readable "
                "index row for it; its config and metrics are unknown")
    indexed = old_cks.get(mid, {})
    by_epoch = {f.epoch: f for f in files}
    for f in files:
        row = indexed.get(f.epoch)
        if row is None:
            return f"no member metadata and the old index has no checkpoint at epoch {f.epoch}"
        if row[4] != f.digest:
            return f"hash mismatch: the old index says {row[4][:12]}, the tensors hash to {f.digest[:12]}"
    if set(indexed) != set(by_epoch):
        return f"member incomplete: checkpoint(s) of epoch {sorted(set(indexed) - set(by_epoch))} missing or unplaceable"
    member = old_members[mid]
    final_epoch = int(member[_MEMBER_COLUMNS.index("final_epoch")])
    if by_epoch[final_epoch].digest != member[_MEMBER_COLUMNS.index("sha256")]:
        return "hash mismatch: the final checkpoint differs from the old index"
    ck_rows = [
        (mid, e, indexed[e][2], by_epoch[e].rel, by_epoch[e].digest, indexed[e][5]) for e in sorted(by_epoch)
    ]
    return tuple(member), ck_rows


def _read_checkpoint(zoo_dir: Path, path: Path, mid: str) -> _File | str:
    """One checkpoint file, re-hashed and checked against its own metadata, or why not."""
    rel = path.relative_to(zoo_dir).as_posix()
    epoch = int(_CHECKPOINT_NAME.fullmatch(path.name).group(1))
    try:
        meta = read_safetensors_metadata(path, what="checkpoint file")
        tensors = read_safetensors(path, what="checkpoint file")
    except InputFileError as e:
        return f"corrupt or truncated: {e.message}"
    digest = state_dict_sha256(tensors)
    if meta.get("sha256") not in (None, digest):
        return f"hash mismatch: its metadata says {meta['sha256'][:12]}, the tensors hash to {digest[:12]}"
    if meta.get("member_id") not in (None, mid):
        return f"its metadata names member {meta['member_id']!r}, not {mid!r}"
    if meta.get("epoch") not in (None, str(epoch)):
        return f"its metadata names epoch {meta['epoch']}, the file name epoch {epoch}"
    return _File(rel, epoch, digest, meta)


def _move_aside(index: Path) -> Path | None:
    """Rename the old index (and its journal/WAL) to ``index.sqlite.broken-<stamp>``."""
    related = [p for p in (index, *(Path(f"{index}{s}") for s in ("-journal", "-wal", "-shm")))
               if p.exists() or p.is_symlink()]
    if not related:
        return None
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    target = index.with_name(f"{index.name}.broken-{stamp}")
    n = 1
    while any(Path(f"{target}{s}").exists() for s in ("", "-journal", "-wal", "-shm")):
        target = index.with_name(f"{index.name}.broken-{stamp}-{n}")
        n += 1
    for p in related:
        os.rename(p, Path(str(p).replace(str(index), str(target), 1)))
    return target


def repair_zoo(path: str | Path) -> RepairReport:
    """Rebuild ``index.sqlite`` of the zoo at ``path`` from its checkpoint files.

    Every ``weights/<member_id>/epoch_NNNNN.safetensors`` is read and
    re-hashed; a member is restored when all of its checkpoints (as listed in
    their metadata) are present, readable and match their content hash. Its
    rows come from the files' metadata, or, for files of older versions
    without it, from the old index if that is readable and agrees.

    Nothing is deleted: the old index is renamed to
    ``index.sqlite.broken-<timestamp>``; files that cannot be placed stay
    where they are and are listed in the report.

    Args:
        path: the zoo directory (``zoo.json`` must be readable).

    Returns:
        a :class:`RepairReport`; ``zoo.Zoo(path)`` opens the repaired zoo.

    Raises:
        ZooFormatError: ``path`` is not a zoo (``zoo.json`` missing or invalid).
        ZooLockedError: a writer (e.g. a build) holds the zoo.
    """
    zoo_dir = Path(path).expanduser()
    _read_info(zoo_dir)
    report = RepairReport(path=zoo_dir)
    lock = _acquire_lock(zoo_dir)
    try:
        index = zoo_dir / INDEX_FILE
        old_members, old_cks, report.old_index_error = _read_old_index(index)
        rows, ck_rows = [], []
        wdir = zoo_dir / WEIGHTS_DIR
        entries = sorted(wdir.iterdir()) if wdir.is_dir() else []
        for d in entries:
            rel_dir = f"{WEIGHTS_DIR}/{d.name}"
            if d.is_symlink() or not d.is_dir() or not MEMBER_ID_PATTERN.fullmatch(d.name):
                report.unknown.append(rel_dir)
                continue
            mid = d.name
            files: list[_File] = []
            for f in sorted(d.iterdir()):
                rel = f"{rel_dir}/{f.name}"
                if f.name == WRITING_MARKER:
                    continue
                if _MEMBER_TMP.fullmatch(f.name):
                    report.unplaced.append((rel, "temporary file of an interrupted write"))
                elif not _CHECKPOINT_NAME.fullmatch(f.name) or not f.is_file() or f.is_symlink():
                    report.unplaced.append((rel, "not a checkpoint file (weights/<member_id>/epoch_NNNNN.safetensors)"))
                else:
                    got = _read_checkpoint(zoo_dir, f, mid)
                    if isinstance(got, str):
                        report.unplaced.append((rel, got))
                    else:
                        files.append(got)
            if not files:
                continue
            with_meta = [f for f in files if f.meta.get("zoo_meta") == CHECKPOINT_META_VERSION]
            if len(with_meta) == len(files):
                got_rows = _member_rows(mid, files)
            elif not with_meta:
                got_rows = _rows_from_old_index(mid, files, old_members, old_cks)
            else:
                got_rows = "some of its checkpoint files carry member metadata and some do not"
            if isinstance(got_rows, str):
                report.unplaced.extend((f.rel, got_rows) for f in files)
                continue
            member_row, member_cks = got_rows
            rows.append(member_row)
            ck_rows.extend(member_cks)
            report.members.append(mid)
            report.checkpoints += len(member_cks)
            if not with_meta:
                report.from_old_index.append(mid)
        report.missing = sorted(set(old_members) - set(report.members))

        # The new index goes to a temporary file first; the old one is moved
        # aside only when the new one is complete and on disk.
        def build(tmp: Path) -> None:
            conn = _connect(tmp, readonly=False)
            try:
                conn.executescript(_SCHEMA)
                _insert_rows(conn, rows, ck_rows)
            finally:
                conn.close()

        def move_aside() -> None:
            report.moved_index = _move_aside(index)

        try:
            atomic_write(index, build, before_replace=move_aside)
        finally:
            for journal in zoo_dir.glob(f".{INDEX_FILE}.*.tmp-journal"):
                journal.unlink(missing_ok=True)
    finally:
        _release_lock(lock)
    return report

