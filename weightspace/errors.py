"""Exceptions raised by weightspace. Every message names the thing at fault
(op, module path, parameter, file, field) and says what to do about it.

Every library error is a :class:`WeightspaceError`. It carries the file
(``path``) and the key or field (``field``) at fault as attributes, so callers
never parse messages; ``str(exc)`` reads ``"<path>: [<field>] <message>"``.
The CLI turns any of them into one line ``error: ...`` and exit code 2.
"""

from __future__ import annotations


class WeightspaceError(Exception):
    """Base class of all weightspace errors.

    Args:
        message: what is wrong and what to do about it (one line).
        path: the file or directory at fault, if any.
        field: the key, field, column or tensor at fault, if any.
    """

    def __init__(self, message: str = "", *, path: object = None, field: str | None = None) -> None:
        self.path = None if path is None else str(path)
        self.field = None if field is None else str(field)
        prefix = f"{self.path}: " if self.path else ""
        if self.field is not None:
            prefix += f"[{self.field}] "
        self.message = str(message)
        super().__init__(prefix + self.message)

    def __str__(self) -> str:  # KeyError subclasses would repr() the message
        return str(self.args[0]) if self.args else ""


class InputFileError(WeightspaceError, ValueError):
    """A file cannot be read: missing, a directory, empty, truncated, corrupt,
    or not in the expected format. ``path`` names the file."""


class MissingFileError(InputFileError, FileNotFoundError):
    """A file or directory the caller named does not exist (also a
    ``FileNotFoundError``)."""


class ConfigError(WeightspaceError, ValueError):
    """A config, recipe or saved-model description holds a wrong type, an
    out-of-range value or an unknown key. ``field`` names the key."""


class TraceError(WeightspaceError):
    """``torch.fx`` could not trace the module (data-dependent control flow, ...)."""


class UnsupportedOperationError(WeightspaceError):
    """The tracer met an op or module whose channel semantics it does not know.

    Attributes:
        op: the op (function, method or module type) that is not supported.
        module_path: dotted path of the module that contains it ("" = root).
        hint: what the user can do.
    """

    def __init__(self, op: str, module_path: str, hint: str = "", detail: str = "") -> None:
        self.op = op
        self.module_path = module_path
        self.hint = hint
        where = module_path or "<root module>"
        msg = f"unsupported operation {op!r} in module {where!r}"
        if detail:
            msg += f": {detail}"
        if hint:
            msg += f". Hint: {hint}"
        super().__init__(msg)


class StateDictError(WeightspaceError, KeyError):
    """A state_dict does not match the architecture (missing, extra or
    mis-shaped tensors)."""


class NonFiniteWeightsError(WeightspaceError, ValueError):
    """A tensor contains NaN or Inf values."""


class SpecError(WeightspaceError, ValueError):
    """A permutation does not fit its PermutationSpec (unknown group, wrong size,
    not a permutation)."""


class UnknownNameError(WeightspaceError, KeyError):
    """A name no registry knows (an architecture, a dataset). Also a
    ``KeyError``; the message lists the registered names and the closest one."""
