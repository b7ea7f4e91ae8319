"""Choose a front end: ``torch.fx`` first, ``torch.export`` when fx fails."""

from __future__ import annotations

from torch import nn

from weightspace.errors import ConfigError, TraceError, UnsupportedOperationError, WeightspaceError
from weightspace.trace.tracer import ComputationGraph, ExampleInputs, trace

TRACERS = ("auto", "fx", "export")


def trace_module(
    module: nn.Module,
    example_inputs: ExampleInputs,
    *,
    arch: str | None = None,
    tracer: str = "auto",
) -> ComputationGraph:
    """Trace ``module`` with the front end ``tracer``.

    Args:
        example_inputs: one tensor, a tuple of positional inputs, or a
            mapping of keyword inputs (``{"input_ids": ..., "attention_mask": ...}``).
        tracer: ``"fx"`` (``torch.fx`` symbolic trace), ``"export"``
            (``torch.export``, non-strict, ATen ops) or ``"auto"``: fx first,
            then export if fx fails with a :class:`TraceError` or an
            :class:`UnsupportedOperationError`.

    Raises:
        ConfigError: unknown ``tracer``.
        TraceError / UnsupportedOperationError: the chosen front end failed;
            with ``"auto"``, a :class:`TraceError` naming both causes.
    """
    if tracer not in TRACERS:
        raise ConfigError(f"unknown tracer {tracer!r}; expected one of {', '.join(TRACERS)}", field="tracer")
    if tracer == "fx":
        return trace(module, example_inputs, arch=arch)
    from weightspace.trace.export import trace_export

    if tracer == "export":
        return trace_export(module, example_inputs, arch=arch)
    try:
        return trace(module, example_inputs, arch=arch)
    except (TraceError, UnsupportedOperationError) as fx_exc:
        try:
            return trace_export(module, example_inputs, arch=arch)
        except WeightspaceError as ex_exc:
            raise TraceError(
                f"neither front end could trace {type(module).__name__}. "
                f"torch.fx: {fx_exc.message if hasattr(fx_exc, 'message') else fx_exc} | "
                f"torch.export: {ex_exc.message if hasattr(ex_exc, 'message') else ex_exc}"
            ) from ex_exc
