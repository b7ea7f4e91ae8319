"""Helpers shared by the ``weightspace`` subcommands (argument parsing and
error exits). No library logic here."""

from __future__ import annotations

import json
from typing import Annotated, NoReturn, Optional, Sequence

import typer

try:  # typer >= 0.20 vendors click
    from typer._click.exceptions import ClickException as _ClickException
    from typer._click.exceptions import NoArgsIsHelpError as _NoArgsIsHelp
    from typer._click.exceptions import UsageError as _UsageError
except ImportError:  # pragma: no cover - older typer on top of click
    from click.exceptions import ClickException as _ClickException
    from click.exceptions import UsageError as _UsageError

    try:
        from click.exceptions import NoArgsIsHelpError as _NoArgsIsHelp
    except ImportError:
        _NoArgsIsHelp = ()


# Option types shared by the subcommands (``seed: Seed = 0``): one definition
# of each common option's flags, range and help.
Seed = Annotated[int, typer.Option(min=0, help="random seed")]
Threads = Annotated[Optional[int], typer.Option(min=1, help="torch threads")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="progress bar")]
Steps = Annotated[int, typer.Option(min=1, help="training steps")]
ArchArgs = Annotated[list[str], typer.Option("--arg", "-a", help="architecture / factory argument key=value (repeatable)")]


def one_line(msg: object) -> str:
    """``msg`` as one line (newlines folded into ``"; "``)."""
    return "; ".join(part.strip() for part in str(msg).strip().splitlines() if part.strip())


def fail(msg: object, code: int = 2) -> NoReturn:
    """Print ``error: msg`` (one line) in red on stderr and exit with ``code``."""
    typer.secho(f"error: {one_line(msg)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=code)


def usage_fail(exc: _ClickException) -> NoReturn:
    """A click usage error (bad option value, ``min=``/``max=`` range, unknown
    option or command, missing argument) as one line ``error: ...`` naming
    the option, plus where the help is; exit code 2 as click's."""
    msg = one_line(exc.format_message())
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, _UsageError) and ctx is not None:
        msg += f" (see '{ctx.command_path} --help')"
    fail(msg, code=exc.exit_code)


class ErrorBoundary(typer.core.TyperGroup):
    """The CLI's one error boundary, as the root command group.

    Any :class:`~weightspace.errors.WeightspaceError` or ``OSError`` escaping a
    command becomes one line ``error: ...`` on stderr and exit code 2; any
    other exception is a bug: one line ``internal error: ...`` and exit code 1.
    Click's usage errors (a bad option value, a count out of its ``min=``
    range, an unknown option) are one line ``error: ...`` as well, exit code 2.
    ``weightspace --debug ...`` (or ``WEIGHTSPACE_DEBUG=1``) re-raises instead,
    so the traceback shows.
    """

    def make_context(self, info_name, args, parent=None, **extra):  # noqa: D102 - click API
        # errors in the root's own options or an unknown command name
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except _NoArgsIsHelp:
            raise
        except _ClickException as exc:
            usage_fail(exc)

    def invoke(self, ctx):  # noqa: D102 - click API
        import os

        from weightspace.errors import WeightspaceError

        try:
            return super().invoke(ctx)
        except _NoArgsIsHelp:
            raise
        except _ClickException as exc:  # subcommands' usage errors are parsed in here
            usage_fail(exc)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
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


def name_path(exc: Exception, path: object) -> Exception:
    """``exc`` (a :class:`~weightspace.errors.WeightspaceError`) naming the file
    ``path`` if it names none yet -- e.g. a state_dict mismatch found after
    the file was read. Other exceptions are returned unchanged."""
    from weightspace.errors import WeightspaceError

    if not isinstance(exc, WeightspaceError) or exc.path is not None:
        return exc
    try:
        return type(exc)(exc.message, path=path, field=exc.field)
    except TypeError:  # a subclass with its own constructor
        return WeightspaceError(exc.message, path=path, field=exc.field)


def check_arch(arch: str, kwargs: dict, option: str = "--arg") -> None:
    """Refuse an unknown architecture or architecture arguments it cannot be
    built with (wrong type, negative or zero sizes, more than
    :data:`~weightspace.io.MAX_NUMEL` values) before anything is allocated:
    the model is first built on the ``meta`` device.

    Raises:
        ConfigError: naming ``option`` and the arguments.
    """
    import warnings

    import torch
    import zoo

    from weightspace.errors import ConfigError
    from weightspace.io import MAX_NUMEL

    try:
        zoo.get_model_info(arch)
    except KeyError as exc:
        raise ConfigError(str(exc.args[0]) if exc.args else f"unknown architecture {arch!r}") from None
    shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "its default arguments"
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            module = zoo.create_model(arch, **kwargs)
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise ConfigError(f"cannot build {arch!r} with {shown}: {one_line(exc)}", field=option) from None
    total = 0
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if t.numel() == 0 and t.dim() > 0:
            raise ConfigError(f"{arch!r} with {shown} has an empty tensor {name!r} {tuple(t.shape)}; "
                              "every layer needs at least one unit", field=option)
        total += t.numel()
    if total > MAX_NUMEL:
        raise ConfigError(f"{arch!r} with {shown} has {total} values (limit {MAX_NUMEL}); check the sizes",
                          field=option)
