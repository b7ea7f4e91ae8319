"""Helpers shared by the ``weightspace`` subcommands (argument parsing and
error exits). No library logic here."""

from __future__ import annotations

import json
from typing import NoReturn, Sequence

import typer


def fail(msg: object, code: int = 2) -> NoReturn:
    """Print ``error: msg`` in red on stderr and exit with ``code``."""
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=code)


def parse_kv(items: Sequence[str] | None, what: str = "--arg") -> dict:
    """``["width=2", "hidden=[32,32]"]`` -> ``{"width": 2, "hidden": [32, 32]}``.

    Values are JSON when they parse as JSON, else strings. A malformed item
    exits with an error naming the option ``what``.
    """
    out = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep or not k:
            fail(f"{what} expects key=value, got {item!r}")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out
