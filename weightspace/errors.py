"""Exceptions raised by weightspace. Every message names the thing at fault
(op, module path, parameter, file) and says what to do about it."""

from __future__ import annotations


class WeightspaceError(Exception):
    """Base class of all weightspace errors."""


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

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class NonFiniteWeightsError(WeightspaceError, ValueError):
    """A tensor contains NaN or Inf values."""


class SpecError(WeightspaceError, ValueError):
    """A permutation does not fit its PermutationSpec (unknown group, wrong size,
    not a permutation)."""
