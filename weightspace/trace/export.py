"""``torch.export`` front end: a module -> :class:`ComputationGraph` through
the exported ATen graph.

``torch.export.export(module, inputs, strict=False)`` runs the module's
Python code for real (control flow on shapes, ``torch.arange(T)``,
``math.sqrt``, Hugging Face model code all work) and records the ATen ops it
calls. By default the graph is captured the way ``torch.export`` captures
it (``make_fx``, pre-dispatch, fake tensors, ``is_exporting()`` true) but
without its signature, naming and verification passes; ``torch.export``
itself is the fallback (``trace_export(..., capture=)``), and both give the
same :class:`ComputationGraph`. This front end walks that graph node by
node, exactly like the fx front end walks its fx graph: every node gets its
value (on the meta device: the capture's shapes) and its axis descriptors through the channel rules of
:mod:`weightspace.trace.rules`. Most ATen ops have the signature of their
``torch`` function, so :data:`ATEN_RULES` maps them to the existing rules;
adapters cover the rest (``aten.embedding`` takes ``(weight, indices)``,
``aten.addmm`` adds a bias, the ``native_*`` norms return tuples, ...).

Parameter and buffer placeholders are mapped back to the user's
``state_dict`` keys through ``ep.graph_signature``; tied parameters (one
tensor under two names, e.g. GPT-2's ``lm_head.weight`` and
``transformer.wte.weight``) get one canonical name, as in the fx front end.

Rotary position embeddings (``q * cos + rotate_half(q) * sin``) multiply the
head_dim axis by position tables that carry no neurons: that axis is
therefore *fixed* (no permutation of head_dim is derived, which is always
correct; the larger group pairing ``i`` with ``i + d/2`` is not derived), and
so are the heads whose head_dim meets those tables.
"""

from __future__ import annotations

import contextlib
import operator
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.utils import stateless
from torch.utils import _pytree as pytree

from weightspace.errors import ConfigError, TraceError, UnsupportedOperationError
from weightspace.trace import rules as R
from weightspace.trace.axes import Ctx, Resplit, apply_resplit
from weightspace.trace.channels import ChannelState, Feat, Lazy, SplitAx
from weightspace.trace.tracer import (
    ComputationGraph,
    ExampleInputs,
    _mark_outputs,
    _tensor_descs,
    _to_meta,
    finish_graph,
    input_shapes,
    split_inputs,
)

aten = torch.ops.aten
_META = torch.device("meta")

# ---------------------------------------------------------------- adapters


def _none(ctx, args, descs, kwargs, kdescs, out):
    return R.untracked(out)


def _embedding(ctx, args, descs, kwargs, kdescs, out):
    # aten.embedding(weight, indices, ...)
    return R.embedding_fn(ctx, args[1], descs[1], args[0], descs[0], out, ctx.where)


def _addmm(ctx, args, descs, kwargs, kdescs, out):
    # aten.addmm(bias, mat1, mat2): bias + mat1 @ mat2 (HF Conv1D: weight is (in, out))
    bias, x = args[0], args[1]
    db, dx, dw = descs[0], descs[1], descs[2]
    if dw is not None and isinstance(dw[1], Lazy) and dw[1].kind == "param":
        fin = ctx.as_feature(dx[-1], int(x.shape[-1]), op="input")
        ctx.bind_param(dw[0], fin)
        fout = ctx.state.materialize(dw[1], ctx.where, "Linear", ctx.where)
        R.set_roles(ctx, dw, {0: "in", 1: "out"})
        if R.is_tensor(bias) and db is not None and bias.dim() == 1:
            ctx.bind_param(db[0], fout)
            R.set_roles(ctx, db, {0: "out"})
            return (dx[0], fout)
        return ctx.broadcast([(bias, db), (out, (dx[0], fout))], out.shape)
    mm = R.matmul_rule(ctx, args[1:3], descs[1:3], {}, {}, out)
    return ctx.broadcast([(bias, db), (out, mm)], out.shape)


def _convolution(ctx, args, descs, kwargs, kdescs, out):
    # aten.convolution(input, weight, bias, stride, padding, dilation,
    #                  transposed, output_padding, groups)
    transposed = bool(args[6])
    op = "ConvTranspose" if transposed else "Conv"
    return R.conv_fn(ctx, args[0], descs[0], args[1], descs[1], args[2], descs[2], out,
                     int(args[8]), ctx.where, op, transposed)


def _conv_fn(ctx, args, descs, kwargs, kdescs, out):
    # aten.conv{1,2,3}d(input, weight, bias, stride, padding, dilation, groups)
    groups = int(R.get_arg(args, kwargs, 6, "groups", 1))
    b = R.get_arg(args, kwargs, 2, "bias")
    return R.conv_fn(ctx, args[0], descs[0], args[1], descs[1], b, R.get_desc(descs, kdescs, 2, "bias"),
                     out, groups, ctx.where, "Conv")


def _tuple_out(res, out):
    """Descriptors of a ``(result, statistics...)`` tuple output."""
    return [res] + [R.untracked(o) for o in out[1:]]


def _native_layer_norm(ctx, args, descs, kwargs, kdescs, out):
    # aten.native_layer_norm(input, normalized_shape, weight, bias, eps) -> (out, mean, rstd)
    res = R.layer_norm_fn(ctx, args[0], descs[0], tuple(args[1]), [descs[2], descs[3]], out[0])
    return _tuple_out(res, out)


def _batch_norm_args(ctx, args, descs, out0):
    # (input, weight, bias, running_mean, running_var, ...)
    # (the no_stats overload has no running statistics: a bool sits there)
    def desc(i):
        return descs[i] if len(descs) > i and isinstance(descs[i], tuple) else None

    pds = [desc(3), desc(4), desc(1), desc(2)]
    return R.batch_norm_fn(ctx, args[0], descs[0], pds, out0)


def _batch_norm(ctx, args, descs, kwargs, kdescs, out):
    if isinstance(out, (tuple, list)):
        return _tuple_out(_batch_norm_args(ctx, args, descs, out[0]), out)
    return _batch_norm_args(ctx, args, descs, out)


def _native_group_norm(ctx, args, descs, kwargs, kdescs, out):
    # aten.native_group_norm(input, weight, bias, N, C, HxW, group, eps) -> (out, mean, rstd)
    res = R.group_norm_fn(ctx, args[0], descs[0], int(args[6]), [descs[1], descs[2]], out[0])
    return _tuple_out(res, out)


def _native_dropout(ctx, args, descs, kwargs, kdescs, out):
    return [descs[0], descs[0]]


def _inner_split(ctx, e) -> bool:
    """Whether ``e`` is the innermost (head_dim) level of a head split."""
    return isinstance(e, SplitAx) and e.level == len(ctx.state.splits[e.sid].sizes) - 1


def _fix_axis(ctx, d: tuple, dim: int) -> tuple:
    """Slicing or chunking inside every head (rotary ``rotate_half``, GPT-NeoX
    per-head packed q/k/v): head_dim positions carry meaning, so those
    neurons and their heads are fixed and the axis is no longer tracked."""
    e = d[dim]
    ctx.state.fix(e)
    ctx.state.disable_heads(e.sid)
    dd = list(d)
    dd[dim] = None
    return tuple(dd)


def _chunk(ctx, args, descs, kwargs, kdescs, out):
    x, d = args[0], descs[0]
    dim = R.norm_dim(int(R.get_arg(args, kwargs, 2, "dim", 0)), x.dim())
    if _inner_split(ctx, d[dim]) and len(out) > 1:
        fixed = _fix_axis(ctx, d, dim)
        return [fixed for _ in out]
    return R.chunk_rule(ctx, args, descs, kwargs, kdescs, out)


def _contracting(rule):
    """matmul / SDPA where a head-split axis meets a plain neuron axis
    (multi-query attention: one k/v head is not split): fix both sides and
    their heads, then contract nothing."""

    def adapted(ctx, args, descs, kwargs, kdescs, out):
        try:
            return rule(ctx, args, descs, kwargs, kdescs, out)
        except UnsupportedOperationError as exc:
            if "a head-split axis is contracted with a plain axis" not in str(exc):
                raise
        new = []
        for d in descs:
            if isinstance(d, tuple) and d and R.is_tensor(args[len(new)]):
                d = _fix_untracked(ctx, d)
            new.append(d)
        return rule(ctx, args, tuple(new), kwargs, kdescs, out)

    return adapted


def _fix_untracked(ctx, d):
    """Fix every neuron and head axis of descriptor ``d`` (heads of a split
    axis are disabled too) and return ``d`` with those axes untracked."""
    for e in d:
        if isinstance(e, (Feat, SplitAx)):
            ctx.state.fix(e)
            if isinstance(e, SplitAx):
                ctx.state.disable_heads(e.sid)
    return tuple(None if isinstance(e, (Feat, SplitAx)) else e for e in d)


def _slice(ctx, args, descs, kwargs, kdescs, out):
    # aten.slice.Tensor(x, dim=0, start=None, end=None, step=1)
    x, d = args[0], descs[0]
    dim = R.norm_dim(int(R.get_arg(args, kwargs, 1, "dim", 0)), x.dim())
    start = R.get_arg(args, kwargs, 2, "start", None)
    end = R.get_arg(args, kwargs, 3, "end", None)
    step = int(R.get_arg(args, kwargs, 4, "step", 1) or 1)
    size = int(x.shape[dim])
    start = 0 if start is None else int(start)
    end = size if end is None else min(int(end), size)
    e = d[dim]
    if _inner_split(ctx, e) and slice(start, end, step).indices(size) != (0, size, 1):
        # a slice inside every head (rotary ``rotate_half``)
        return _fix_axis(ctx, d, dim)
    r = ctx.slice_axis(e, size, start, end, step)
    dd = list(d)
    if isinstance(r, Resplit):
        dd = apply_resplit(dd, r)
    else:
        dd[dim] = r
    return tuple(dd)


def _index(ctx, args, descs, kwargs, kdescs, out):
    # aten.index.Tensor(x, [idx or None per leading axis])
    idx = tuple(slice(None) if i is None else i for i in args[1])
    return R.tensor_index(ctx, args[0], descs[0], idx, out)


def _index_select(ctx, args, descs, kwargs, kdescs, out):
    x, d = args[0], descs[0]
    dim = R.norm_dim(int(args[1]), x.dim())
    idx = (slice(None),) * dim + (args[2],)
    return R.tensor_index(ctx, x, d, idx, out)


def _reshape(ctx, args, descs, kwargs, kdescs, out):
    """``view`` / ``reshape``; a head axis flattened with a broadcast axis
    (``repeat_kv`` of grouped-query attention: (B, kv_heads, n_rep, T, D) ->
    (B, heads, T, D)) fixes those heads and their neurons: correct, not
    general (kv-head permutations that move q heads in blocks are not derived).
    The same holds for a neuron axis flattened under an untracked one
    (multi-query attention merging q's heads with the single k/v head_dim)."""
    x, d = args[0], descs[0]
    try:
        return ctx.reshape(x.shape, d, out.shape)
    except UnsupportedOperationError as exc:
        if not any(m in str(exc) for m in _FIXABLE_RESHAPES):
            raise
    return ctx.reshape(x.shape, _fix_untracked(ctx, d), out.shape)


# reshapes that are read as "these neurons keep their place" instead of failing:
# repeat_kv of grouped-query attention, and the heads of multi-query
# attention (one k/v head: its head_dim is a plain axis under q's heads)
_FIXABLE_RESHAPES = (
    "flatten of a head axis with non-head axes",
    "flatten puts a neuron axis inside another axis",
)


def _squeeze(ctx, args, descs, kwargs, kdescs, out):
    x, d = args[0], descs[0]
    dim = args[1] if len(args) > 1 else None
    dims = [k for k in (range(x.dim()) if dim is None else R.reduce_dims(x, dim)) if x.shape[k] == 1]
    return tuple(e for k, e in enumerate(d) if k not in dims)


def _sdpa(ctx, args, descs, kwargs, kdescs, out):
    if bool(kwargs.get("enable_gqa", False)) and args[0].dim() >= 3 and args[0].shape[-3] != args[1].shape[-3]:
        # grouped-query attention inside SDPA: q heads read shared k/v heads;
        # keep q/k/v neurons and heads in place (correct, not general)
        new = list(descs)
        for i in range(3):
            for e in descs[i]:
                if isinstance(e, (Feat, SplitAx)):
                    ctx.state.fix(e)
                if isinstance(e, SplitAx):
                    ctx.state.disable_heads(e.sid)
            keep = descs[i][-2:] if i == 0 else (None, None)
            new[i] = tuple(None if isinstance(e, (Feat, SplitAx)) else e for e in descs[i][:-2]) + tuple(
                None if isinstance(e, SplitAx) else e for e in keep)
        descs = tuple(new)
    res = R.sdpa_rule(ctx, args, descs, kwargs, kdescs, out)
    if isinstance(out, (tuple, list)):
        return [res] + [R.untracked(o) for o in out[1:]]
    return res


def _reduction(ctx, args, descs, kwargs, kdescs, out):
    return R.reduction(ctx, args, descs, kwargs, kdescs, out)


def _var_correction(ctx, args, descs, kwargs, kdescs, out):
    # aten.var.correction(x, dim=None, *, correction, keepdim)
    return R.reduction(ctx, args[:2], descs[:2], {"keepdim": kwargs.get("keepdim", False)}, {}, out)


def _max_dim(ctx, args, descs, kwargs, kdescs, out):
    return R.reduction(ctx, args, descs, kwargs, kdescs, out, returns_indices=True)


def _like(ctx, args, descs, kwargs, kdescs, out):
    return descs[0] if R.is_tensor(out) and out.shape == args[0].shape else R.untracked(out)


def _pool_tuple(ctx, args, descs, kwargs, kdescs, out):
    return R.pool_rule(ctx, args, descs, kwargs, kdescs, out)


def _pad(ctx, args, descs, kwargs, kdescs, out):
    # aten.constant_pad_nd(x, pad, value)
    return R.pad_rule(ctx, args[:2], descs[:2], {}, {}, out)


def _where(ctx, args, descs, kwargs, kdescs, out):
    return R.elementwise(ctx, args, descs, kwargs, kdescs, out)


def _repeat_interleave(ctx, args, descs, kwargs, kdescs, out):
    x, d = args[0], descs[0]
    if R.is_tensor(x) and any(isinstance(e, (Feat, SplitAx)) for e in d):
        raise ctx.unsupported("repeat_interleave of a neuron axis")
    return R.untracked(out)


def _sym(ctx, args, descs, kwargs, kdescs, out):
    return None


# ------------------------------------------------------------------- table
# aten op (OpOverloadPacket or OpOverload) -> rule(ctx, args, descs, kwargs, kdescs, out)
ATEN_RULES: dict[Any, Callable] = {}


def register_aten_rule(op: Any, rule: Callable) -> None:
    """Use ``rule(ctx, args, descs, kwargs, kdescs, out)`` for an ATen op
    (an ``OpOverloadPacket`` such as ``torch.ops.aten.linear`` covers all of
    its overloads; an ``OpOverload`` such as ``aten.add.Tensor`` only that one)."""
    ATEN_RULES[op] = rule


def _reg(rule: Callable, *names: str) -> None:
    for name in names:
        op = getattr(aten, name, None)
        if op is not None:
            ATEN_RULES[op] = rule


_reg(R.linear_rule, "linear")
_reg(_addmm, "addmm")
_reg(_contracting(R.matmul_rule), "mm", "bmm", "matmul")
_reg(_convolution, "convolution", "_convolution")
_reg(_conv_fn, "conv1d", "conv2d", "conv3d")
_reg(R.layer_norm_rule, "layer_norm")
_reg(_native_layer_norm, "native_layer_norm")
_reg(R.group_norm_rule, "group_norm")
_reg(_native_group_norm, "native_group_norm")
_reg(_batch_norm, "batch_norm", "native_batch_norm", "_native_batch_norm_legit_no_training",
     "_native_batch_norm_legit", "_native_batch_norm_legit_functional", "cudnn_batch_norm")
_reg(_embedding, "embedding")
_reg(_contracting(_sdpa), "scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu")
_reg(R.einsum_rule, "einsum")
_reg(R.softmax, "softmax", "_softmax", "log_softmax", "_log_softmax", "_safe_softmax")
# shapes
_reg(_reshape, "view", "reshape", "_unsafe_view", "unflatten", "_reshape_alias")
_reg(R.flatten_rule, "flatten")
_reg(R.permute_rule, "permute")
_reg(R.transpose_rule, "transpose", "swapaxes")
_reg(R.t_rule, "t", "numpy_T")
_reg(_chunk, "split", "chunk", "unsafe_split", "unsafe_chunk", "split_with_sizes", "unsafe_split_with_sizes")
_reg(R.unbind_rule, "unbind")
_reg(R.cat_rule, "cat", "concat", "concatenate")
_reg(R.stack_rule, "stack")
_reg(_slice, "slice")
_reg(R.select_rule, "select")
_reg(R.narrow_rule, "narrow")
_reg(R.expand_rule, "expand", "expand_as", "broadcast_to")
_reg(R.repeat_rule, "repeat")
_reg(R.unsqueeze_rule, "unsqueeze")
_reg(_squeeze, "squeeze")
_reg(R.movedim_rule, "movedim")
_reg(_index, "index")
_reg(_index_select, "index_select")
_reg(_pad, "constant_pad_nd")
_reg(R.pad_rule, "pad")
# casts, copies, no-ops
_reg(R.passthrough, "clone", "contiguous", "to", "_to_copy", "alias", "detach", "lift_fresh_copy",
     "type_as", "dropout", "feature_dropout", "alpha_dropout", "_to_dim_order_copy",
     "view_copy", "copy", "relu", "relu_", "gelu", "silu", "sigmoid", "tanh", "hardtanh", "hardtanh_",
     "hardswish", "hardsigmoid", "elu", "selu", "celu", "leaky_relu", "softplus", "mish",
     "sin", "cos", "exp", "log", "abs", "neg", "sqrt", "rsqrt", "square", "erf", "sign",
     "reciprocal", "clamp", "clip", "clamp_min", "clamp_max", "exp2", "log1p", "expm1", "sinh",
     "cosh", "atan", "floor", "round", "nan_to_num", "logsigmoid", "relu6", "tanhshrink",
     "softsign", "silu_", "gelu_", "logical_not", "bitwise_not", "isnan", "isinf", "isfinite",
     "positive", "fill_")
_reg(_native_dropout, "native_dropout")
_reg(R.elementwise, "add", "sub", "rsub", "mul", "div", "pow", "maximum", "minimum", "fmax", "fmin",
     "atan2", "lerp", "addcmul", "addcdiv", "eq", "ne", "lt", "le", "gt", "ge", "logical_and",
     "logical_or", "logical_xor", "bitwise_and", "bitwise_or", "bitwise_xor", "__and__", "__or__",
     "floor_divide", "remainder", "fmod", "true_divide", "mul_", "add_", "sub_", "div_")
_reg(_where, "where")
_reg(R.masked_fill_rule, "masked_fill", "masked_fill_")
_reg(_reduction, "sum", "mean", "amax", "amin", "prod", "logsumexp", "nansum", "nanmean",
     "linalg_vector_norm", "norm", "all", "any", "std", "var")
_reg(_var_correction, "var_mean")
_reg(_max_dim, "max", "min", "argmax", "argmin")
_reg(R.cumulative_rule, "cumsum", "cumprod")
_reg(R.triangle_rule, "tril", "triu")
_reg(_like, "zeros_like", "ones_like", "full_like", "empty_like", "rand_like", "randn_like")
_reg(_none, "arange", "ones", "zeros", "full", "empty", "eye", "linspace", "scalar_tensor",
     "new_ones", "new_zeros", "new_full", "new_empty", "new_tensor", "empty_strided",
     "_assert_tensor_metadata", "_assert_async", "sym_constrain_range_for_size",
     "sym_constrain_range", "_functional_sym_constrain_range", "lift_fresh", "randn", "rand")
_reg(_sym, "sym_size", "sym_numel", "sym_stride", "_local_scalar_dense", "item", "_assert_scalar",
     "sym_storage_offset", "is_nonzero")
_reg(R.pool_rule, "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
     "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
     "adaptive_max_pool2d", "adaptive_max_pool3d", "_adaptive_avg_pool2d",
     "max_pool2d_with_indices", "max_pool3d_with_indices")
_reg(R.interpolate_rule, "upsample_nearest2d", "upsample_bilinear2d", "upsample_nearest1d")
_reg(_repeat_interleave, "repeat_interleave")
ATEN_RULES[operator.getitem] = R.getitem_rule


# modules the fx front end handles as a whole while their ATen form cannot be
# read channel by channel (MultiheadAttention folds heads into the batch axis)
_FX_MODULE_RULE_NAMES = {"MultiheadAttention"}


def _lookup(target: Any) -> Callable | None:
    rule = ATEN_RULES.get(target)
    if rule is None:
        packet = getattr(target, "overloadpacket", None)
        if packet is not None:
            rule = ATEN_RULES.get(packet)
    if rule is None:
        rule = R.FUNCTION_RULES.get(target)  # python callables (operator.*, math.*)
    return rule


def _module_path(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack")
    if stack:
        last = list(stack.values())[-1]
        path = str(last[0]) if isinstance(last, tuple) else str(last)
        return _clean_path(path)
    return ""


def _clean_path(path: str) -> str:
    # strict export writes L['self'].layer[0]; non-strict writes layer.0
    if path.startswith("L['self']"):
        path = path[len("L['self']"):].lstrip(".")
        path = path.replace("[", ".").replace("]", "").replace("'", "")
    return path


def _op_name(target: Any) -> str:
    if isinstance(target, torch._ops.OpOverload):
        return f"aten.{target.__name__}" if target.namespace == "aten" else str(target)
    return f"{getattr(target, '__module__', '')}.{getattr(target, '__name__', repr(target))}"


def _holds(descs: Any) -> bool:
    if descs is None:
        return False
    if isinstance(descs, (list, tuple)):
        return any(_holds(d) for d in descs)
    return True


def _export_kwargs(module: nn.Module, kwargs: dict | None = None) -> dict:
    """The keyword inputs plus ``use_cache=False`` for modules whose forward()
    takes it and where the caller did not set it (Hugging Face decoders):
    key/value caches are not tensors torch.export can return, and the channel
    structure never depends on them."""
    import inspect

    kwargs = dict(kwargs or {})
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return kwargs
    if "use_cache" in params and "use_cache" not in kwargs:
        kwargs["use_cache"] = False
    return kwargs


@contextlib.contextmanager
def _capture_context():
    """What both captures run under: no autograd, no per-node stack traces
    (not read here; a traceback per node costs about a fifth of a capture)
    and lazy graph modules (torch.export's passes recompile the graph's
    Python code six times, which nothing here reads: another sixth)."""
    from torch.fx._lazy_graph_module import _use_lazy_graph_module

    fx_config = getattr(torch.fx, "config", None)  # torch >= 2.9
    stack_traces = getattr(fx_config, "do_not_emit_stack_traces", None)
    if stack_traces is not None:
        fx_config.do_not_emit_stack_traces = True
    try:
        with torch.no_grad(), _use_lazy_graph_module(True):
            yield
    finally:
        if stack_traces is not None:
            fx_config.do_not_emit_stack_traces = stack_traces


def export_program(module: nn.Module, example_inputs: tuple, kwargs: dict | None = None) -> "torch.export.ExportedProgram":
    """``torch.export.export(module, inputs, kwargs, strict=False)`` in eval
    mode (with ``use_cache=False`` where forward() takes it), errors turned
    into :class:`TraceError`."""
    training = {m: m.training for m in module.modules()}
    module.eval()
    kwargs = _export_kwargs(module, kwargs)
    try:
        with _capture_context():
            return torch.export.export(module, example_inputs, kwargs=kwargs, strict=False)
    except Exception as exc:  # torch.export raises many exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise TraceError(
            f"torch.export could not export {type(module).__name__}: {type(exc).__name__}: {first}. "
            "Hint: torch.export needs outputs made of tensors (or of pytree-registered containers) "
            "and no data-dependent control flow on tensor values"
        ) from exc
    finally:
        for m, flag in training.items():
            m.training = flag


def _meta_of(v: Any) -> Any:
    """A meta tensor (or a tuple / list of them) like the capture's value ``v``."""
    if isinstance(v, torch.Tensor):
        return torch.empty_strided(tuple(v.shape), tuple(v.stride()), dtype=v.dtype, device=_META)
    if isinstance(v, (tuple, list)):
        return type(v)(_meta_of(x) for x in v)
    return v


def _walk(module, prog, sd, aliases, named, flat_inputs, *, meta: bool):
    """Run the exported graph node by node through the channel rules (on
    meta tensors when ``meta``); returns ``(state, module_types, ops)``."""
    p_of, b_of, c_of = prog.p_of, prog.b_of, prog.c_of
    user_inputs, const_inputs = prog.user_inputs, prog.const_inputs
    state = ChannelState()
    env: dict[torch.fx.Node, tuple[Any, Any]] = {}
    ops: list[tuple[str, str]] = []
    module_types: dict[str, str] = {}
    training = {m: m.training for m in module.modules()}
    module.eval()
    try:
        with torch.no_grad():
            for node in prog.graph.nodes:
                if node.op == "placeholder":
                    name = node.name
                    if name in p_of or name in b_of:
                        fqn = p_of.get(name) or b_of[name]
                        val = named[fqn] if fqn in named else prog.state_dict[fqn]
                        val = _to_meta(val.detach()) if meta else val.detach()
                        if fqn in sd:
                            desc = _tensor_descs(val, ("param", aliases.get(fqn, fqn)))
                        else:  # non-persistent buffer: a constant
                            desc = R.untracked(val)
                    elif name in c_of:
                        val = prog.constants[c_of[name]]
                        val = _to_meta(val) if meta else val
                        desc = R.untracked(val)
                    elif name in user_inputs:
                        i = user_inputs.index(name)
                        if i >= len(flat_inputs):
                            raise TraceError(f"exported program takes input {name!r} that no example input provides")
                        val = _to_meta(flat_inputs[i]) if meta else flat_inputs[i]
                        desc = _tensor_descs(val, ("input", prog.input_names.get(name, name)))
                    elif name in const_inputs:  # non-tensor user input (use_cache=False)
                        val, desc = const_inputs[name], None
                    else:
                        raise TraceError(f"exported program has an unknown input {name!r}")
                    env[node] = (val, desc)
                    continue
                if node.op == "get_attr":
                    val = getattr(prog.graph_module, str(node.target))
                    val = _to_meta(val) if meta else val
                    env[node] = (val, R.untracked(val) if R.is_tensor(val) else None)
                    continue
                if node.op == "output":
                    outs = torch.fx.node.map_arg(node.args[0], lambda n: env[n][1])
                    _mark_outputs(state, outs)
                    continue
                if node.op != "call_function":
                    raise TraceError(f"unexpected node kind {node.op!r} in the exported graph")
                where = _module_path(node)
                stack = node.meta.get("nn_module_stack") or {}
                for v in stack.values():
                    if isinstance(v, tuple) and len(v) == 2:
                        module_types.setdefault(_clean_path(str(v[0])), str(v[1]).rsplit(".", 1)[-1])
                op = _op_name(node.target)
                args = torch.fx.node.map_arg(node.args, lambda n: env[n][0])
                kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: env[n][0])
                dargs = torch.fx.node.map_arg(node.args, lambda n: env[n][1])
                dkwargs = torch.fx.node.map_arg(node.kwargs, lambda n: env[n][1])
                ops.append((where, op))
                if meta:  # tensors made or moved inside forward() (arange, masks, .to(device)) stay on meta
                    args = tuple(_META if isinstance(a, torch.device) else a for a in args)
                    kwargs = {k: _META if isinstance(v, torch.device) else v for k, v in kwargs.items()}
                if meta and "val" in node.meta:  # the capture's fake value: its shape, dtype and strides
                    val = _meta_of(node.meta["val"])
                else:
                    val = node.target(*args, **kwargs)
                rule = _lookup(node.target)
                if rule is None:
                    if not any(_holds(env[n][1]) for n in node.all_input_nodes):
                        env[node] = (val, R.untracked(val))  # constants in, constant out
                        continue
                    raise UnsupportedOperationError(
                        op, where,
                        hint="register a channel rule with weightspace.trace.export.register_aten_rule",
                    )
                ctx = Ctx(state, where, op)
                try:
                    env[node] = (val, rule(ctx, args, dargs, kwargs, dkwargs, val))
                except UnsupportedOperationError as exc:
                    owner = module_types.get(where, "")
                    if owner in _FX_MODULE_RULE_NAMES and "tracer='fx'" not in exc.hint:
                        raise UnsupportedOperationError(
                            exc.op, exc.module_path,
                            hint=f"{owner} has a module-level rule in the fx front end: use tracer='fx'"
                                 + (f"; {exc.hint}" if exc.hint else ""),
                            detail=str(exc.message).split(": ", 1)[1].split(". Hint:")[0] if ": " in exc.message else "",
                        ) from exc
                    raise
    finally:
        for m, flag in training.items():
            m.training = flag

    return state, module_types, ops


@dataclass
class _Program:
    """What the walk reads of a captured program: the ATen graph, its
    placeholders mapped to parameter / buffer / constant names and user
    inputs, and the tensors behind ``get_attr`` nodes and lifted constants."""

    graph: torch.fx.Graph
    graph_module: nn.Module
    p_of: dict[str, str]
    b_of: dict[str, str]
    c_of: dict[str, str]
    user_inputs: list[str]
    const_inputs: dict[str, Any]
    constants: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    flat_inputs: list[torch.Tensor]
    input_names: dict[str, str] = field(default_factory=dict)  # placeholder -> input name, where they differ


def _export_capture(module: nn.Module, args: tuple, kwargs: dict) -> _Program:
    """The program of ``torch.export.export`` (see :func:`export_program`)."""
    ep = export_program(module, args, kwargs)
    sig = ep.graph_signature
    const_inputs = {
        spec.arg.name: spec.arg.value
        for spec in sig.input_specs
        if spec.kind == torch.export.graph_signature.InputKind.USER_INPUT
        and isinstance(spec.arg, torch.export.graph_signature.ConstantArgument)
    }
    # user inputs are the tensor leaves of (args, kwargs), keyword inputs in
    # the exported signature's order
    call_kwargs = _export_kwargs(module, kwargs)
    try:
        from torch.export._tree_utils import reorder_kwargs

        call_kwargs = reorder_kwargs(call_kwargs, ep.call_spec.in_spec)
    except (ImportError, AssertionError, ValueError, AttributeError):
        pass  # keep the caller's order
    return _Program(
        graph=ep.graph,
        graph_module=ep.graph_module,
        p_of=dict(sig.inputs_to_parameters),
        b_of=dict(sig.inputs_to_buffers),
        c_of=dict(getattr(sig, "inputs_to_lifted_tensor_constants", {}) or {}),
        user_inputs=[n for n in sig.user_inputs if isinstance(n, str)],
        const_inputs=const_inputs,
        constants=ep.constants,
        state_dict=ep.state_dict,
        flat_inputs=[v for v in pytree.tree_leaves((args, call_kwargs)) if isinstance(v, torch.Tensor)],
    )


def _make_fx_capture(module: nn.Module, args: tuple, kwargs: dict) -> _Program:
    """The pre-dispatch ATen graph that ``torch.export`` builds before its
    passes, captured with ``make_fx`` directly (fake tensors, parameters and
    buffers as leading inputs, as in ``torch.export``'s own capture; module
    stack from :func:`_module_stack_meta`): less work than
    :func:`export_program` (no signature, verifier, lifting, naming or
    run-time-assertion passes, no attribute proxies), for the same ATen ops."""
    from torch._export.utils import _compiling_state_context, _insert_aten_to_metadata_assert_pass
    from torch.fx.experimental.proxy_tensor import make_fx

    kwargs = _export_kwargs(module, kwargs)
    named = dict(module.named_parameters(remove_duplicate=False))
    named.update(dict(module.named_buffers(remove_duplicate=False)))
    names = list(named)
    n = len(names)
    leaves, in_spec = pytree.tree_flatten((tuple(args), kwargs))
    at = [i for i, v in enumerate(leaves) if isinstance(v, torch.Tensor)]
    flat_inputs = [leaves[i] for i in at]

    def fn(*flat):
        lv = list(leaves)
        for i, t in zip(at, flat[n:]):
            lv[i] = t
        a, kw = pytree.tree_unflatten(lv, in_spec)
        with stateless._reparametrize_module(module, dict(zip(names, flat[:n]))):
            out = module(*a, **kw)
        return tuple(pytree.tree_leaves(out))

    training = {m: m.training for m in module.modules()}
    module.eval()
    try:
        # torch.compiler.is_exporting() is true, as under torch.export (model
        # code such as Hugging Face masks takes its export branch)
        with _capture_context(), _compiling_state_context(), _module_stack_meta(module):
            gm = make_fx(fn, tracing_mode="fake", pre_dispatch=True,
                         _allow_non_fake_inputs=True)(*[t.detach() for t in named.values()], *flat_inputs)
    finally:
        for m, flag in training.items():
            m.training = flag
    _insert_aten_to_metadata_assert_pass(gm)  # as torch.export does after its capture
    ph = [nd.name for nd in gm.graph.nodes if nd.op == "placeholder"]
    params = {k for k, _ in module.named_parameters(remove_duplicate=False)}
    return _Program(
        graph=gm.graph,
        graph_module=gm,
        p_of={p: k for p, k in zip(ph, names) if k in params},
        b_of={p: k for p, k in zip(ph, names) if k not in params},
        c_of={},
        user_inputs=ph[n:],
        const_inputs={},
        constants={},
        state_dict={},
        flat_inputs=flat_inputs,
        input_names=dict(zip(ph[n:], _input_names(module, args, kwargs, flat_inputs))),
    )


@contextlib.contextmanager
def _module_stack_meta(root: nn.Module):
    """Record ``nn_module_stack`` (``{key: (module path, class)}``, the form
    ``torch.export`` writes) on every node traced inside, from global module
    forward hooks and fx's preserved node meta: a fifth of the capture cheaper
    than make_fx's own module-stack tracer, which proxies every attribute
    access. A module reached under two names gets its first name."""
    from torch.fx import traceback as fx_traceback
    from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

    paths: dict[int, str] = {}
    for path, m in root.named_modules(remove_duplicate=False):
        paths.setdefault(id(m), path)
    stack: list[tuple[str, tuple[str, str]]] = []

    def publish():
        fx_traceback.current_meta["nn_module_stack"] = dict(stack)

    def pre(mod, args):
        path = paths.get(id(mod))
        if path is not None:
            t = type(mod)
            stack.append((f"{path}#{len(stack)}", (path, f"{t.__module__}.{t.__qualname__}")))
            publish()

    def post(mod, args, out):
        if paths.get(id(mod)) is not None and stack:
            stack.pop()
            publish()

    with fx_traceback.preserve_node_meta():
        h_pre = register_module_forward_pre_hook(pre)
        h_post = register_module_forward_hook(post)
        try:
            yield
        finally:
            h_pre.remove()
            h_post.remove()


def _input_names(module: nn.Module, args: tuple, kwargs: dict, flat_inputs: list[torch.Tensor]) -> list[str]:
    """The names ``torch.export`` gives the tensor inputs ``flat_inputs``:
    forward()'s parameter names, joined with the pytree path of nested
    inputs (``x_a``, ``x_b_0``), suffixed on collision."""
    from collections import defaultdict

    from torch._export.utils import _bind_signature_to_inputs, _rename_without_collisions

    def key(k) -> str:
        if isinstance(k, pytree.MappingKey):
            return re.sub(r"[^a-zA-Z0-9]", "_", str(k.key))
        if isinstance(k, pytree.SequenceKey):
            return str(k.idx)
        if isinstance(k, pytree.GetAttrKey):
            return k.name
        raise TraceError(f"input path key {k!r} has no export name")

    name_map: dict[str, str] = {}
    used: set[str] = set()
    available: dict[str, int] = defaultdict(int)
    by_id: dict[int, str] = {}
    with_path, _ = pytree.tree_flatten_with_path(_bind_signature_to_inputs(module, args, kwargs))
    for i, (path, leaf) in enumerate(with_path):
        _rename_without_collisions(name_map, available, used, str(i),
                                   "_".join(key(k).lower() for k in path), is_placeholder=True)
        if isinstance(leaf, torch.Tensor):
            by_id.setdefault(id(leaf), name_map[str(i)])
    if len({id(t) for t in flat_inputs}) != len(flat_inputs) or any(id(t) not in by_id for t in flat_inputs):
        raise TraceError("example inputs repeat a tensor: no export names")
    return [by_id[id(t)] for t in flat_inputs]


CAPTURES = ("auto", "make_fx", "export")


def trace_export(
    module: nn.Module,
    example_inputs: ExampleInputs,
    *,
    arch: str | None = None,
    capture: str = "auto",
) -> ComputationGraph:
    """Trace ``module`` through ``torch.export`` (non-strict) and derive its
    channel structure. Same result type and contract as
    :func:`weightspace.trace.trace`.

    Args:
        capture: how the ATen graph is captured. ``"export"``:
            ``torch.export.export``; ``"make_fx"``: its pre-dispatch capture
            alone (faster, the same ops); ``"auto"``: ``make_fx``, and
            ``torch.export`` when that capture or its walk fails.

    Raises:
        ConfigError: unknown ``capture``.
        TraceError: ``torch.export`` cannot export the module.
        UnsupportedOperationError: an ATen op without a channel rule (names
            the ATen op and the module path).
    """
    if capture not in CAPTURES:
        raise ConfigError(f"unknown capture {capture!r}; expected one of {', '.join(CAPTURES)}", field="capture")
    args, kwargs = split_inputs(example_inputs)
    sd = module.state_dict(keep_vars=True)
    by_id: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for k, v in sd.items():
        aliases[k] = by_id.setdefault(id(v), k)
    named = dict(module.named_parameters(remove_duplicate=False))
    named.update(dict(module.named_buffers(remove_duplicate=False)))

    def walk(prog: _Program):
        # Shapes are all the rules need: walk the graph on the meta device
        # first (no arithmetic, no weight is read), and on real tensors only
        # if an op has no meta kernel or needs a value.
        w = (prog, sd, aliases, named, prog.flat_inputs)
        try:
            return _walk(module, *w, meta=True)
        except (UnsupportedOperationError, TraceError):
            raise
        except Exception:
            return _walk(module, *w, meta=False)

    result = None
    if capture in ("auto", "make_fx"):
        try:
            result = walk(_make_fx_capture(module, args, kwargs))
        except Exception:
            if capture == "make_fx":
                raise
            result = None  # torch.export decides, and names the error
    if result is None:
        result = walk(_export_capture(module, args, kwargs))
    state, module_types, ops = result
    return finish_graph(
        state, sd, aliases, module_types, ops,
        input_shapes(args, kwargs), arch, None,
    )
