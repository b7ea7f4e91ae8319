"""Exceptions raised by ``zoo``. Each names the file and the field at fault
(``path`` / ``field`` attributes, see :class:`weightspace.errors.WeightspaceError`)."""

from __future__ import annotations

from weightspace.errors import ConfigError, InputFileError, WeightspaceError


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
