"""Module rules: layers the tracer does not trace into (``nn.Linear``,
convolutions, norms, activations, ``nn.MultiheadAttention``, ...)."""

from __future__ import annotations

from torch import nn

from weightspace.trace.rules._base import (
    get_arg,
    get_desc,
    module_rule,
    param_desc,
    set_roles,
    untracked,
)
from weightspace.trace.rules.elementwise import passthrough
from weightspace.trace.rules.layers import (
    batch_norm_fn,
    conv_fn,
    embedding_fn,
    group_norm_fn,
    layer_norm_fn,
    linear_fn,
    pool_rule,
)


def module_passthrough(ctx, module, path, args, descs, kwargs, kdescs, out):
    return passthrough(ctx, args, descs, kwargs, kdescs, out)


_UNARY_MODULES = [
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.ELU, nn.SELU, nn.CELU, nn.LeakyReLU, nn.Softplus,
    nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.LogSigmoid,
    nn.Softsign, nn.Tanhshrink,
]
module_rule(*_UNARY_MODULES)(module_passthrough)


@module_rule(nn.Linear)
def module_linear(ctx, m: nn.Linear, path, args, descs, kwargs, kdescs, out):
    return linear_fn(ctx, args[0], descs[0], m.weight, param_desc(m, path, "weight"),
                     m.bias, param_desc(m, path, "bias"), out, path)


@module_rule(nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
def module_conv(ctx, m, path, args, descs, kwargs, kdescs, out):
    transposed = isinstance(m, nn.modules.conv._ConvTransposeNd)
    op = type(m).__name__
    return conv_fn(ctx, args[0], descs[0], m.weight, param_desc(m, path, "weight"), m.bias,
                   param_desc(m, path, "bias"), out, m.groups, path, op, transposed)


@module_rule(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
def module_batch_norm(ctx, m, path, args, descs, kwargs, kdescs, out):
    pds = [param_desc(m, path, n) for n in ("running_mean", "running_var", "weight", "bias")]
    return batch_norm_fn(ctx, args[0], descs[0], pds, out)


@module_rule(nn.LayerNorm)
def module_layer_norm(ctx, m: nn.LayerNorm, path, args, descs, kwargs, kdescs, out):
    pds = [param_desc(m, path, "weight"), param_desc(m, path, "bias")]
    return layer_norm_fn(ctx, args[0], descs[0], tuple(m.normalized_shape), pds, out)


@module_rule(nn.GroupNorm)
def module_group_norm(ctx, m: nn.GroupNorm, path, args, descs, kwargs, kdescs, out):
    pds = [param_desc(m, path, "weight"), param_desc(m, path, "bias")]
    return group_norm_fn(ctx, args[0], descs[0], m.num_groups, pds, out)


@module_rule(nn.Embedding)
def module_embedding(ctx, m: nn.Embedding, path, args, descs, kwargs, kdescs, out):
    return embedding_fn(ctx, args[0], descs[0], m.weight, param_desc(m, path, "weight"), out, path)


@module_rule(nn.PReLU)
def module_prelu(ctx, m: nn.PReLU, path, args, descs, kwargs, kdescs, out):
    x, d = args[0], descs[0]
    if m.num_parameters > 1:
        axis = 1 if x.dim() >= 2 else 0
        f = ctx.as_feature(d[axis], int(x.shape[axis]))
        ctx.bind_param(param_desc(m, path, "weight")[0], f)
        set_roles(ctx, param_desc(m, path, "weight"), {0: "out"})
        d = tuple(f if k == axis else e for k, e in enumerate(d))
    return d


@module_rule(nn.Flatten)
def module_flatten(ctx, m: nn.Flatten, path, args, descs, kwargs, kdescs, out):
    return ctx.reshape(args[0].shape, descs[0], out.shape)


@module_rule(nn.Unflatten)
def module_unflatten(ctx, m: nn.Unflatten, path, args, descs, kwargs, kdescs, out):
    return ctx.reshape(args[0].shape, descs[0], out.shape)


@module_rule(nn.Softmax, nn.LogSoftmax)
def module_softmax(ctx, m, path, args, descs, kwargs, kdescs, out):
    return descs[0]


@module_rule(nn.MultiheadAttention)
def module_mha(ctx, m: nn.MultiheadAttention, path, args, descs, kwargs, kdescs, out):
    """``nn.MultiheadAttention``: q/k/v projections (one packed weight), heads,
    output projection. q and k share a per-head permutation (their dot product
    is invariant to it), v has its own, and heads permute as wholes."""
    st = ctx.state
    if m.bias_k is not None or m.add_zero_attn:
        raise ctx.unsupported("MultiheadAttention with add_bias_kv / add_zero_attn",
                              hint="construct it with add_bias_kv=False, add_zero_attn=False")
    if not m._qkv_same_embed_dim:
        raise ctx.unsupported("MultiheadAttention with kdim/vdim != embed_dim",
                              hint="use kdim=vdim=embed_dim or write the attention by hand")
    q, k, v = (get_arg(args, kwargs, i, n) for i, n in ((0, "query"), (1, "key"), (2, "value")))
    dq, dk, dv = (get_desc(descs, kdescs, i, n) for i, n in ((0, "query"), (1, "key"), (2, "value")))
    E, h = m.embed_dim, m.num_heads
    fq = ctx.as_feature(dq[-1], E, op="input")
    fk = ctx.as_feature(dk[-1], E, op="input")
    fv = ctx.as_feature(dv[-1], E, op="input")
    # one packed in_proj weight reads query, key and value: same input neurons
    st.tie_feats(fq, fk, "elementwise", ctx.where)
    st.tie_feats(fq, fv, "elementwise", ctx.where)
    w_desc = param_desc(m, path, "in_proj_weight")
    ctx.bind_param(w_desc[1], fq)
    packed = st.materialize(w_desc[0], path, "MultiheadAttention.in_proj", ctx.where)
    set_roles(ctx, w_desc, {0: "out", 1: "in"})
    b_desc = param_desc(m, path, "in_proj_bias")
    if b_desc is not None:
        ctx.bind_param(b_desc[0], packed)
        set_roles(ctx, b_desc, {0: "out"})
    dh = E // h
    sq = st.new_split(packed.slice_units(0, E).segs, (h, dh))
    sk = st.new_split(packed.slice_units(E, 2 * E).segs, (h, dh))
    sv = st.new_split(packed.slice_units(2 * E, 3 * E).segs, (h, dh))
    st.add_cuts(packed, [E, 2 * E], slice_cut=True)
    st.within_tie(sq, sk, ctx.where)
    st.head_tie(sq, sv, ctx.where)
    ow = param_desc(m.out_proj, f"{path}.out_proj", "weight")
    ctx.bind_param(ow[1], packed.slice_units(2 * E, 3 * E))
    fout = st.materialize(ow[0], f"{path}.out_proj", "Linear", ctx.where)
    set_roles(ctx, ow, {0: "out", 1: "in"})
    ob = param_desc(m.out_proj, f"{path}.out_proj", "bias")
    if ob is not None:
        ctx.bind_param(ob[0], fout)
        set_roles(ctx, ob, {0: "out"})
    res = tuple(dq[:-1]) + (fout,)
    weights = out[1]
    return [res, untracked(weights) if weights is not None else None]


@module_rule(
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)
def module_pool(ctx, m, path, args, descs, kwargs, kdescs, out):
    return pool_rule(ctx, args, descs, kwargs, kdescs, out)
