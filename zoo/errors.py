"""Exceptions raised by ``zoo``. Each names the file and the field at fault
(``path`` / ``field`` attributes, see :class:`weightspace.errors.WeightspaceError`)."""

from __future__ import annotations

from pathlib import Path

from weightspace.errors import ConfigError, InputFileError, WeightspaceError
from weightspace.io import read_text


class ZooError(WeightspaceError):
    """Base class of all zoo errors."""


class RecipeError(ZooError, ConfigError):
    """A zoo recipe is malformed (unknown key, bad search space, unknown
    architecture or dataset). The message names the recipe source and field."""


class ZooFormatError(ZooError, InputFileError):
    """A zoo on disk (ours or a published one) is malformed or incomplete.

    Attributes:
        path: the file at fault (``None`` when not file-specific).
        field: the column / key / tensor at fault (``None`` when not field-specific).
    """


class ZooLockedError(ZooError, RuntimeError):
    """Another process is writing to the same zoo directory."""


def read_text_as(error: type[ZooError], path: Path, *, what: str, missing: str = "file not found") -> str:
    """:func:`weightspace.io.read_text` of ``path`` whose every failure is an
    ``error`` naming ``path``: ``missing`` when it does not exist, else the
    reader's message (a directory, not UTF-8, unreadable)."""
    if not path.exists():
        raise error(missing, path=path)
    try:
        return read_text(path, what=what)
    except WeightspaceError as e:
        raise error(e.message, path=path) from None
