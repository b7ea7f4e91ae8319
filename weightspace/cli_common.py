"""Helpers shared by the ``weightspace`` subcommands (argument parsing and
error exits). No library logic here."""

from __future__ import annotations

import json
from typing import NoReturn, Sequence

import typer

try:  # typer >= 0.20 vendors click
    from typer._click.exceptions import ClickException as _ClickException
except ImportError:  # pragma: no cover - older typer on top of click
    from click.exceptions import ClickException as _ClickException


def one_line(msg: object) -> str:
    """``msg`` as one line (newlines folded into ``"; "``)."""
    return "; ".join(part.strip() for part in str(msg).strip().splitlines() if part.strip())


def fail(msg: object, code: int = 2) -> NoReturn:
    """Print ``error: msg`` (one line) in red on stderr and exit with ``code``."""
    typer.secho(f"error: {one_line(msg)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=code)


class ErrorBoundary(typer.core.TyperGroup):
    """The CLI's one error boundary, as the root command group.

    Any :class:`~weightspace.errors.WeightspaceError` or ``OSError`` escaping a
    command becomes one line ``error: ...`` on stderr and exit code 2; any
    other exception is a bug: one line ``internal error: ...`` and exit code 1.
    ``weightspace --debug ...`` (or ``WEIGHTSPACE_DEBUG=1``) re-raises instead,
    so the traceback shows.
    """

    def invoke(self, ctx):  # noqa: D102 - click API
        import os

        from weightspace.errors import WeightspaceError

        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, _ClickException, KeyboardInterrupt):
            raise
        except Exception as exc:
            if ctx.params.get("debug") or os.environ.get("WEIGHTSPACE_DEBUG"):
                raise
            if isinstance(exc, (WeightspaceError, OSError)):
                fail(exc, code=2)
            fail_internal = f"internal error ({type(exc).__name__}: {one_line(exc)}); rerun with --debug for the traceback"
            typer.secho(f"error: {fail_internal}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=1) from None


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



def _check_parents(p, option: str) -> None:
    from weightspace.errors import InputFileError

    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputFileError(f"is a file, so {p} cannot be written ({option})", path=parent, field=option)
            return


def check_output_file(path, option: str) -> None:
    """Fail early (before any long computation) when ``path``, given to
    ``option`` as a file to write, is an existing directory or lies under a
    file."""
    from pathlib import Path

    from weightspace.errors import InputFileError

    p = Path(path).expanduser()
    if p.is_dir():
        raise InputFileError(f"is a directory; {option} needs a file name to write", path=p, field=option)
    _check_parents(p, option)


def check_output_dir(path, option: str) -> None:
    """Fail early when ``path``, given to ``option`` as a directory to write
    into, is an existing file or lies under a file."""
    from pathlib import Path

    from weightspace.errors import InputFileError

    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise InputFileError(f"is a file; {option} needs a directory", path=p, field=option)
    _check_parents(p, option)
