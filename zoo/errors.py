"""Exceptions raised by ``zoo``. Each names the file and the field at fault."""

from __future__ import annotations

from weightspace.errors import WeightspaceError


class ZooError(WeightspaceError):
    """Base class of all zoo errors."""


class RecipeError(ZooError, ValueError):
    """A zoo recipe is malformed (unknown key, bad search space, unknown
    architecture or dataset). The message names the recipe source and field."""


class ZooFormatError(ZooError, ValueError):
    """A zoo on disk (ours or a published one) is malformed or incomplete.

    Attributes:
        path: the file at fault (``None`` when not file-specific).
        field: the column / key / tensor at fault (``None`` when not field-specific).
    """

    def __init__(self, message: str, *, path: object = None, field: str | None = None) -> None:
        self.path = None if path is None else str(path)
        self.field = field
        prefix = f"{self.path}: " if self.path else ""
        if field is not None:
            prefix += f"[{field}] "
        super().__init__(prefix + message)


class ZooLockedError(ZooError, RuntimeError):
    """Another process is writing to the same zoo directory."""
