"""``torch.fx`` tracing of a module into a :class:`ComputationGraph`
(channel blocks, ties, cuts) and the free permutation groups it implies."""

from weightspace.trace.rules import (
    elementwise,
    passthrough,
    reduction,
    register_function_rule,
    register_method_rule,
    register_module_rule,
)
from weightspace.trace.tracer import ComputationGraph, trace

__all__ = [
    "ComputationGraph",
    "trace",
    "register_function_rule",
    "register_method_rule",
    "register_module_rule",
    "passthrough",
    "elementwise",
    "reduction",
]
