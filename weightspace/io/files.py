"""Reading and writing files at the library's boundary.

Every reader here turns a foreign error (``OSError``, ``SafetensorError``,
``json``/``yaml`` decode errors, numpy format errors) into an
:class:`~weightspace.errors.InputFileError` naming the file, so no caller has
to know which library failed. Every writer goes through :func:`atomic_write`
(or :class:`AtomicFile`, its protocol for content written in pieces): temp
file in the same directory, ``fsync``, ``os.replace``, ``fsync`` of the
directory; a crash leaves either the old file or the new one, never half.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from weightspace.errors import InputFileError, MissingFileError

__all__ = [
    "AtomicFile",
    "atomic_write",
    "write_all",
    "fsync_dir",
    "read_text",
    "read_json",
    "read_yaml",
    "read_safetensors",
    "read_safetensors_metadata",
    "read_npy",
    "check_numel",
    "check_output_path",
    "MAX_NUMEL",
]

#: Largest tensor (in elements) a size read from a file may ask for before the
#: reader allocates it: 2**31 elements (8 GiB of float32). Larger sizes in a
#: config are treated as tampering, not as a model.
MAX_NUMEL = 2**31


def _umask_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_dir(path: Path) -> None:
    """``fsync`` directory ``path`` so that new entries in it are durable
    (a no-op where a platform cannot open directories)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


class AtomicFile:
    """A file that replaces ``path`` atomically and durably once complete:
    the protocol of :func:`atomic_write` for writers that produce the
    content in several calls (e.g. at offsets, as it is computed) or want
    to make it durable later, e.g. on another thread.

    The content goes to a temporary file in ``path``'s directory (``fd``,
    open for reading and writing, or the path ``tmp``); :meth:`commit`
    fsyncs it, gives it the umask's mode, renames it over ``path`` and
    fsyncs the directory; :meth:`abort` removes it (``path`` is left as it
    was). As a context manager it commits on a normal exit and aborts on an
    exception.

    Args:
        path: the destination file; its parent directory is created.

    Raises:
        InputFileError: ``path`` is an existing directory, or its parent
            cannot be created or written.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser()
        if self.path.is_dir():
            raise InputFileError("is a directory; give a file name to write", path=self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        except OSError as exc:
            raise InputFileError(f"cannot write here ({exc.strerror or exc})", path=self.path) from None
        self.tmp = Path(tmp)
        self.done = False

    def close_fd(self) -> None:
        """Close ``fd`` (for a writer that opens ``tmp`` itself); :meth:`commit` reopens it."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def commit(self, before_replace: Callable[[], Any] | None = None) -> Path:
        """Make the content durable and put it at ``path`` (once).

        Args:
            before_replace: called once the content is fsynced, just before
                it replaces ``path`` (e.g. to move the old file aside).

        Returns:
            ``path``. Whatever fails, the temporary file is gone afterwards.
        """
        if self.done:
            raise ValueError(f"{self.path}: already committed or aborted")
        try:
            if self.fd < 0:
                self.fd = os.open(self.tmp, os.O_RDWR)
            os.fsync(self.fd)
            self.close_fd()
            os.chmod(self.tmp, _umask_mode())  # mkstemp creates 0600
            if before_replace is not None:
                before_replace()
            os.replace(self.tmp, self.path)
            fsync_dir(self.path.parent)
        finally:
            self.abort()
        return self.path

    def abort(self) -> None:
        """Close and remove the temporary file (a no-op after :meth:`commit`)."""
        self.done = True
        self.close_fd()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)

    def __enter__(self) -> "AtomicFile":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and not self.done:
            self.commit()
        else:
            self.abort()


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[Path], None], *,
                 before_replace: Callable[[], Any] | None = None) -> Path:
    """Write ``path`` atomically and durably (with an :class:`AtomicFile`).

    Args:
        path: destination file; its parent directory is created.
        data: the bytes (or text, UTF-8) to write, or a callable that writes
            the content to the temporary path it is given (e.g.
            ``lambda p: safetensors.torch.save_file(tensors, p)``).
        before_replace: called once the new content is complete and
            fsynced, just before it replaces ``path`` (e.g. to move the old
            file aside instead of losing it).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        InputFileError: ``path`` is an existing directory, or its parent cannot
            be created or written.
    """
    f = AtomicFile(path)
    try:
        if callable(data):
            f.close_fd()
            data(f.tmp)
        else:
            write_all(f.fd, data.encode() if isinstance(data, str) else data)
        return f.commit(before_replace)
    finally:
        f.abort()


def write_all(fd: int, data, offset: int | None = None) -> None:
    """Write the whole buffer ``data`` (bytes or any object with the buffer
    protocol, e.g. a numpy array) to ``fd``, at ``offset`` (``os.pwrite``)
    or at the current position; loops over partial writes."""
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        chunk = view[done:done + (1 << 30)]
        done += os.write(fd, chunk) if offset is None else os.pwrite(fd, chunk, offset + done)


def _check_file(path: str | os.PathLike, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise MissingFileError(f"no {what} at this path", path=p)
    if p.is_dir():
        raise InputFileError(f"is a directory, expected a {what}", path=p)
    return p


def read_text(path: str | os.PathLike, *, what: str = "file") -> str:
    """The UTF-8 text of ``path``; :class:`InputFileError` if it is missing,
    a directory, unreadable or not text."""
    p = _check_file(path, what)
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputFileError(f"not a text file (invalid UTF-8); expected a {what}", path=p) from None
    except OSError as exc:
        raise InputFileError(f"cannot read ({exc.strerror or exc})", path=p) from None


def read_json(path: str | os.PathLike, *, what: str = "JSON file") -> Any:
    """Parse the JSON file ``path``; errors name the file and line."""
    p = Path(path).expanduser()
    text = read_text(p, what=what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFileError(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", path=p) from None


def read_yaml(path: str | os.PathLike, *, what: str = "YAML file") -> Any:
    """Parse the YAML file ``path`` with ``yaml.safe_load`` (no tags that run
    code); errors name the file and line."""
    import yaml

    p = Path(path).expanduser()
    text = read_text(p, what=what)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputFileError(f"invalid YAML{where}: {problem}", path=p) from None


def read_safetensors(path: str | os.PathLike, *, what: str = "safetensors file") -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; a truncated or corrupt file is an
    :class:`InputFileError` naming it."""
    from safetensors.torch import load_file

    p = _check_file(path, what)
    try:
        return dict(load_file(str(p)))
    except Exception as exc:  # SafetensorError, OSError, header errors
        raise InputFileError(
            f"corrupt or truncated safetensors file ({_one_line(exc)}); restore it or re-create it", path=p
        ) from None


def read_safetensors_metadata(path: str | os.PathLike, *, what: str = "safetensors file") -> dict[str, str]:
    """The string metadata of a safetensors header (``{}`` when it has none)."""
    from safetensors import safe_open

    p = _check_file(path, what)
    try:
        with safe_open(str(p), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:
        raise InputFileError(
            f"corrupt or truncated safetensors file ({_one_line(exc)}); restore it or re-create it", path=p
        ) from None


def read_npy(path: str | os.PathLike, *, what: str = "numpy file", mmap_mode: str | None = None):
    """Load a ``.npy``/``.npz`` file with ``allow_pickle=False``. An ``.npz`` is
    read completely (a dict of arrays), so no file handle stays open.
    ``mmap_mode="r"`` maps a large ``.npy`` instead of reading it (a file
    shorter than its header says is refused here, not at first access)."""
    import numpy as np

    p = _check_file(path, what)
    try:
        with open(p, "rb") as f:
            magic = f.read(6)
    except OSError as exc:
        raise InputFileError(f"cannot read ({exc.strerror or exc})", path=p) from None
    if not magic:
        raise InputFileError(f"is empty; expected a {what}", path=p)
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):
        raise InputFileError(f"not a .npy/.npz file (no numpy header); expected a {what}", path=p)
    try:
        obj = np.load(p, allow_pickle=False, mmap_mode=mmap_mode)
        if isinstance(obj, np.lib.npyio.NpzFile):
            with obj:
                return {k: obj[k] for k in obj.files}
        return obj
    except Exception as exc:  # ValueError (pickled / bad header), EOFError, OSError, zipfile errors
        raise InputFileError(f"cannot read as a {what} ({_one_line(exc)})", path=p) from None


def check_numel(shape: Any, *, path: object = None, field: str | None = None, limit: int = MAX_NUMEL) -> tuple[int, ...]:
    """Validate a tensor shape read from a file before anything is allocated.

    Returns the shape as a tuple of ints; raises :class:`InputFileError` if it
    is not a list of non-negative ints or asks for more than ``limit`` elements.
    """
    if not isinstance(shape, (list, tuple)) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise InputFileError(f"expected a shape (a list of non-negative integers), got {shape!r}", path=path, field=field)
    n = 1
    for s in shape:
        n *= s
    if n > limit:
        raise InputFileError(
            f"shape {list(shape)} asks for {n} elements (limit {limit}); the file is damaged or tampered with",
            path=path, field=field,
        )
    return tuple(shape)


def check_output_path(path: str | os.PathLike, *, kind: str = "file", field: str | None = None) -> Path:
    """Refuse an output path that cannot be written, before any work is done.

    Args:
        path: where a command will write.
        kind: ``"file"`` (refused if it is an existing directory) or ``"dir"``
            (refused if it exists and is not a directory).
        field: the option or key that named the path (e.g. ``"--out"``).

    Returns:
        ``path`` (``~`` expanded). Nothing is created.

    Raises:
        InputFileError: ``path`` has the wrong kind, or one of its parents is
            an existing file (so it can never be created).
    """
    if kind not in ("file", "dir"):
        raise ValueError(f"kind must be 'file' or 'dir', got {kind!r}")
    p = Path(path).expanduser()
    if p.exists():
        if kind == "file" and p.is_dir():
            raise InputFileError(f"is a directory; {field or 'the output'} needs a file name to write", path=p, field=field)
        if kind == "dir" and not p.is_dir():
            raise InputFileError(f"exists and is not a directory; {field or 'the output'} needs a directory to write into",
                                 path=p, field=field)
        return p
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputFileError(f"cannot be created: {parent} is a file, not a directory", path=p, field=field)
            break
    return p


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


