"""Tracing of a module into a :class:`ComputationGraph` (channel blocks,
ties, cuts) and the free permutation groups it implies. Two front ends share
the channel rules: ``torch.fx`` (:func:`trace`) and ``torch.export``
(:func:`weightspace.trace.export.trace_export`); :func:`trace_module` picks
one (``tracer="auto"|"fx"|"export"``)."""

from weightspace.trace.rules import (
    elementwise,
    passthrough,
    reduction,
    register_function_rule,
    register_method_rule,
    register_module_rule,
)
from weightspace.trace.frontend import TRACERS, trace_module
from weightspace.trace.tracer import ComputationGraph, ExampleInputs, split_inputs, trace

__all__ = [
    "ComputationGraph",
    "ExampleInputs",
    "split_inputs",
    "trace",
    "trace_module",
    "TRACERS",
    "register_function_rule",
    "register_method_rule",
    "register_module_rule",
    "passthrough",
    "elementwise",
    "reduction",
]
