"""Assertions shared by the saved-file validation tests of several packages."""

from pathlib import Path
from typing import Any, Callable

import pytest

from weightspace.errors import InputFileError


def check_truncated_and_empty(path: Path, load: Callable[[], Any]) -> None:
    """``path`` cut to half its bytes, then emptied: each time ``load()``
    raises :class:`InputFileError` naming ``path`` (``truncated`` for the half)."""
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(InputFileError, match="truncated") as e:
        load()
    assert e.value.path == str(path)
    path.write_bytes(b"")
    with pytest.raises(InputFileError) as e:
        load()
    assert e.value.path == str(path)


def check_bad_bytes(path: Path, content: bytes, match: str, load: Callable[[], Any]) -> None:
    """``path`` overwritten with ``content``: ``load()`` raises
    :class:`InputFileError` matching ``match`` and naming ``path``."""
    path.write_bytes(content)
    with pytest.raises(InputFileError, match=match) as e:
        load()
    assert e.value.path.endswith(path.name)
