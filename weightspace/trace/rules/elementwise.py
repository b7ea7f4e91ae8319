"""Rules of elementwise ops, reductions, softmax and other ops that keep
every axis in place."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F

from weightspace.trace.axes import Ctx
from weightspace.trace.channels import Feat, SplitAx
from weightspace.trace.rules._base import (
    function_rule,
    get_arg,
    is_tensor,
    method_rule,
    norm_dim,
    reduce_dims,
    untracked,
)


def passthrough(ctx: Ctx, args, descs, kwargs, kdescs, out):
    """Unary elementwise op (activations, dropout, casts): descriptors unchanged."""
    d = descs[0] if descs else None
    if is_tensor(out) and is_tensor(args[0]) and out.shape == args[0].shape:
        return d
    return untracked(out)


_UNARY_FUNCS = [
    torch.relu, torch.relu_, F.relu, F.relu6, F.gelu, F.silu, F.elu, F.selu, F.celu, F.leaky_relu,
    F.softplus, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh, F.tanhshrink, F.softsign,
    torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, torch.sin, torch.cos, torch.exp, torch.log,
    torch.abs, torch.neg, torch.sqrt, torch.rsqrt, torch.square, torch.erf, torch.sign,
    torch.clamp, torch.clip, F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout, torch.dropout,
    torch.nn.functional.logsigmoid, operator.neg, operator.pos, abs, torch.reciprocal,
    torch.exp2, torch.log1p, torch.expm1, torch.sinh, torch.cosh, torch.atan, torch.floor, torch.round,
    torch.nan_to_num, torch.detach,
]
_UNARY_METHODS = [
    "relu", "relu_", "sigmoid", "tanh", "sin", "cos", "exp", "log", "abs", "neg", "sqrt", "rsqrt",
    "square", "clamp", "clip", "float", "double", "half", "bfloat16", "to", "type", "type_as",
    "contiguous", "clone", "detach", "requires_grad_", "exp_", "sign", "erf", "reciprocal",
    "sigmoid_", "tanh_", "clamp_", "abs_", "nan_to_num", "cpu", "cuda",
]
function_rule(*_UNARY_FUNCS)(passthrough)
method_rule(*_UNARY_METHODS)(passthrough)


def elementwise(ctx: Ctx, args, descs, kwargs, kdescs, out):
    """Broadcast elementwise op over all tensor operands."""
    items = [(a, d) for a, d in zip(list(args) + list(kwargs.values()), list(descs) + list(kdescs.values())) if is_tensor(a) and a.dim() > 0]
    if not is_tensor(out):
        return None
    return ctx.broadcast(items, out.shape)


_BINARY_FUNCS = [
    operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv, operator.pow,
    operator.iadd, operator.isub, operator.imul, operator.itruediv,
    torch.add, torch.sub, torch.subtract, torch.mul, torch.multiply, torch.div, torch.divide,
    torch.pow, torch.maximum, torch.minimum, torch.fmax, torch.fmin, torch.atan2, torch.lerp,
    torch.addcmul, torch.addcdiv,
]
_BINARY_METHODS = [
    "add", "sub", "mul", "div", "pow", "add_", "sub_", "mul_", "div_", "maximum", "minimum",
    "__add__", "__mul__", "__sub__", "__truediv__", "__radd__", "__rmul__", "lerp",
]
function_rule(*_BINARY_FUNCS)(elementwise)
method_rule(*_BINARY_METHODS)(elementwise)


def _check_head_reduction(ctx: Ctx, descs: tuple, reduced: list[int]) -> None:
    st = ctx.state
    for r in reduced:
        d = descs[r]
        if isinstance(d, SplitAx) and d.level < len(st.splits[d.sid].sizes) - 1:
            kept_inner = any(
                isinstance(e, SplitAx) and e.sid == d.sid and e.level > d.level
                for k, e in enumerate(descs)
                if k not in reduced
            )
            if kept_inner:
                raise ctx.unsupported(
                    "reduction over the head axis while head_dim is kept mixes heads",
                    hint="reduce over head_dim too, or merge heads back first",
                )


def reduction(ctx: Ctx, args, descs, kwargs, kdescs, out, *, dim_pos: int = 1, returns_indices: bool = False):
    """sum / mean / amax / var ...: reduced neuron axes vanish (order-free)."""
    x, d = args[0], descs[0]
    dim = get_arg(args, kwargs, dim_pos, "dim", None)
    keepdim = bool(get_arg(args, kwargs, dim_pos + 1, "keepdim", False))
    reduced = reduce_dims(x, dim)
    _check_head_reduction(ctx, d, reduced)
    if returns_indices:
        for r in reduced:
            if isinstance(d[r], (Feat, SplitAx)):
                ctx.state.fix(d[r])  # argmax over neurons depends on their order
    kept = [None if (k in reduced) else e for k, e in enumerate(d)]
    res = tuple(kept) if keepdim else tuple(e for k, e in enumerate(kept) if k not in reduced)
    if isinstance(out, tuple):  # (values, indices)
        return [res, res]
    return res


_REDUCE_FUNCS = [torch.sum, torch.mean, torch.amax, torch.amin, torch.var, torch.std,
                 torch.logsumexp, torch.prod, torch.norm, torch.linalg.vector_norm, torch.nansum,
                 torch.nanmean, torch.all, torch.any, torch.median]
_REDUCE_METHODS = ["sum", "mean", "amax", "amin", "var", "std", "logsumexp", "prod", "norm",
                   "nansum", "nanmean", "all", "any"]
function_rule(*_REDUCE_FUNCS)(reduction)
method_rule(*_REDUCE_METHODS)(reduction)


@function_rule(torch.max, torch.min)
@method_rule("max", "min")
def max_like(ctx: Ctx, args, descs, kwargs, kdescs, out):
    # torch.max(x) / torch.max(x, dim) / torch.max(a, b)
    if len(args) > 1 and is_tensor(args[1]):
        return elementwise(ctx, args, descs, kwargs, kdescs, out)
    if len(args) == 1 and "dim" not in kwargs:
        return ()
    return reduction(ctx, args, descs, kwargs, kdescs, out, returns_indices=True)


@function_rule(torch.argmax, torch.argmin)
@method_rule("argmax", "argmin")
def argreduction(ctx: Ctx, args, descs, kwargs, kdescs, out):
    return reduction(ctx, args, descs, kwargs, kdescs, out, returns_indices=True)


@function_rule(torch.softmax, F.softmax, F.log_softmax, torch.log_softmax)
@method_rule("softmax", "log_softmax")
def softmax(ctx: Ctx, args, descs, kwargs, kdescs, out):
    # softmax over any axis is equivariant to permutations of that axis
    return descs[0]


@function_rule(F.normalize)
def normalize_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    # F.normalize(x, dim=...) divides by a norm over one axis: equivariant
    return descs[0]


@function_rule(torch.cumsum, torch.cumprod)
@method_rule("cumsum", "cumprod")
def cumulative_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    x, d = args[0], descs[0]
    dim = norm_dim(int(get_arg(args, kwargs, 1, "dim")), x.dim())
    if isinstance(d[dim], (Feat, SplitAx)):
        raise ctx.unsupported("cumulative op along a neuron axis depends on neuron order")
    return d


@function_rule(torch.zeros_like, torch.ones_like, torch.full_like)
@method_rule("zero_", "fill_")
def like_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    """``zeros_like`` / ``ones_like`` / ``full_like``: constant over neurons,
    hence equivariant; keep the layout."""
    return descs[0]


@function_rule(torch.where)
def where_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    return elementwise(ctx, args, descs, kwargs, kdescs, out)


@function_rule(torch.masked_fill)
@method_rule("masked_fill", "masked_fill_")
def masked_fill_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    return elementwise(ctx, args[:2], descs[:2], {}, {}, out)


_COMPARE_FUNCS = [
    operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge,
    operator.and_, operator.or_, operator.xor, operator.invert,
    torch.eq, torch.ne, torch.lt, torch.le, torch.gt, torch.ge,
    torch.logical_and, torch.logical_or, torch.logical_not, torch.logical_xor, torch.isnan,
    torch.isinf, torch.isfinite,
]
_COMPARE_METHODS = ["eq", "ne", "lt", "le", "gt", "ge", "__eq__", "__ne__", "__lt__", "__le__",
                    "__gt__", "__ge__", "logical_not", "logical_and", "logical_or", "bool", "long", "int"]
function_rule(*_COMPARE_FUNCS)(elementwise)
method_rule(*_COMPARE_METHODS)(elementwise)


@function_rule(torch.tril, torch.triu)
@method_rule("tril", "triu")
def triangle_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    """``tril`` / ``triu`` zero entries by position on the last two axes:
    those axes must not carry neurons (causal masks are built from constants)."""
    x, d = args[0], descs[0]
    if x.dim() >= 2:
        for e in d[-2:]:
            if isinstance(e, (Feat, SplitAx)):
                raise ctx.unsupported("triangular mask over a neuron axis depends on neuron order")
    return d


_FACTORY_FUNCS = [torch.arange, torch.ones, torch.zeros, torch.full, torch.empty, torch.eye,
                  torch.linspace, torch.tensor, torch.randn, torch.rand]


def factory_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    """Tensor factories (``torch.arange(T)``, ``torch.ones(T, T)``): constants
    with no neuron axes."""
    return untracked(out)


function_rule(*_FACTORY_FUNCS)(factory_rule)
