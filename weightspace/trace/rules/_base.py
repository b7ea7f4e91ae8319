"""Rule registries, registration helpers and the utilities every rule uses.

A rule receives the :class:`~weightspace.trace.axes.Ctx`, the concrete
argument values (tensors already computed on the example input), their
descriptors and the concrete output, and returns the output's descriptors
(a tuple with one entry per axis for a tensor, a list for tuples, ``None``
for non-tensors). Rules record constraints on ``ctx.state``.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import torch
from torch import nn

from weightspace.trace.axes import Ctx
from weightspace.trace.channels import Lazy

Rule = Callable[..., Any]
_RuleT = TypeVar("_RuleT", bound=Rule)

FUNCTION_RULES: dict[Any, Rule] = {}
METHOD_RULES: dict[str, Rule] = {}
MODULE_RULES: dict[type, Rule] = {}


def register_function_rule(fn: Any, rule: Rule) -> None:
    """Use ``rule(ctx, args, descs, kwargs, kdescs, out)`` for calls of ``fn``."""
    FUNCTION_RULES[fn] = rule


def register_method_rule(name: str, rule: Rule) -> None:
    """Use ``rule`` for tensor method ``name`` (``x.name(...)``)."""
    METHOD_RULES[name] = rule


def register_module_rule(cls: type, rule: Rule) -> None:
    """Use ``rule(ctx, module, path, args, descs, kwargs, kdescs, out)`` for
    modules of type ``cls`` (they are then not traced into)."""
    MODULE_RULES[cls] = rule


def _registering(register: Callable[[Any, Rule], None], keys: tuple) -> Callable[[_RuleT], _RuleT]:
    """A decorator that calls ``register(key, rule)`` for every key and returns the rule."""

    def decorate(rule: _RuleT) -> _RuleT:
        for key in keys:
            register(key, rule)
        return rule

    return decorate


def function_rule(*fns: Any) -> Callable[[_RuleT], _RuleT]:
    """Decorator: register the decorated rule for calls of every ``fn`` in ``fns``."""
    return _registering(register_function_rule, fns)


def method_rule(*names: str) -> Callable[[_RuleT], _RuleT]:
    """Decorator: register the decorated rule for the tensor methods ``names``."""
    return _registering(register_method_rule, names)


def module_rule(*classes: type) -> Callable[[_RuleT], _RuleT]:
    """Decorator: register the decorated module rule for the module types ``classes``."""
    return _registering(register_module_rule, classes)


# --------------------------------------------------------------------- utils
def is_tensor(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def get_arg(args, kwargs, idx: int, name: str, default=None):
    if len(args) > idx:
        return args[idx]
    return kwargs.get(name, default)


def get_desc(descs, kdescs, idx: int, name: str):
    if len(descs) > idx:
        return descs[idx]
    return kdescs.get(name)


def norm_dim(d: int, nd: int) -> int:
    return d + nd if d < 0 else d


def reduce_dims(x: torch.Tensor, dim) -> list[int]:
    """The axes a ``dim=`` argument names (``None``: all of them), non-negative."""
    if dim is None:
        return list(range(x.dim()))
    if isinstance(dim, (tuple, list)):
        return [norm_dim(int(d), x.dim()) for d in dim]
    return [norm_dim(int(dim), x.dim())]


def untracked(out: Any):
    """Descriptors for a fresh output that carries no neurons."""
    if is_tensor(out):
        return (None,) * out.dim()
    if isinstance(out, (tuple, list)):
        return [untracked(o) for o in out]
    return None


def param_desc(module: nn.Module, path: str, name: str) -> tuple | None:
    t = getattr(module, name, None)
    if t is None or not is_tensor(t):
        return None
    full = f"{path}.{name}" if path else name
    return tuple(Lazy(("param", full, a), int(s)) for a, s in enumerate(t.shape))


def set_roles(ctx: Ctx, desc: tuple | None, roles: dict[int, str], **meta) -> None:
    """Remember which axis of a parameter is 'in' / 'out' (edge direction in
    the parameter graph) and extra metadata (groups ...)."""
    if not desc:
        return
    for d in desc:
        if isinstance(d, Lazy) and d.kind == "param":
            name = d.name
            ctx.state.param_roles.setdefault(name, dict(roles))
            if meta:
                ctx.state.param_meta.setdefault(name, {}).update(meta)
            return
