"""Rules of the functional forms of layers (``F.linear``, ``F.conv2d``,
norms, embedding, pooling, padding, interpolation).

The ``*_fn`` helpers hold the logic shared with the module rules in
:mod:`weightspace.trace.rules.modules`."""

from __future__ import annotations

import torch.nn.functional as F

from weightspace.trace.axes import Ctx
from weightspace.trace.channels import Feat, Lazy, SplitAx
from weightspace.trace.rules._base import function_rule, get_arg, get_desc, set_roles


def linear_fn(ctx: Ctx, x, dx, w, dw, b, db, out, producer: str) -> tuple:
    fin = ctx.as_feature(dx[-1], int(x.shape[-1]), op="input")
    if dw is not None:
        ctx.bind_param(dw[1], fin)
        fout = ctx.state.materialize(dw[0], producer, "Linear", ctx.where) if isinstance(dw[0], Lazy) else ctx.as_feature(dw[0], int(w.shape[0]))
        set_roles(ctx, dw, {0: "out", 1: "in"})
    else:
        fout = ctx.state.new_block(int(out.shape[-1]), "hidden", producer, "Linear")
    if db is not None and b is not None:
        ctx.bind_param(db[0], fout)
        set_roles(ctx, db, {0: "out"})
    return tuple(dx[:-1]) + (fout,)


@function_rule(F.linear)
def linear_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    x, w = args[0], get_arg(args, kwargs, 1, "weight")
    b = get_arg(args, kwargs, 2, "bias")
    return linear_fn(ctx, x, descs[0], w, get_desc(descs, kdescs, 1, "weight"), b,
                     get_desc(descs, kdescs, 2, "bias"), out, ctx.where)


def conv_fn(ctx: Ctx, x, dx, w, dw, b, db, out, groups: int, producer: str, op: str, transposed: bool = False) -> tuple:
    st = ctx.state
    cin = int(x.shape[1])
    fin = ctx.as_feature(dx[1], cin, op="input")
    if fin.rep != 1:
        raise ctx.unsupported("convolution over a flattened neuron axis")
    if transposed:
        if groups != 1:
            raise ctx.unsupported("grouped transposed convolution", hint="use groups=1")
        cout = int(w.shape[1])
        if dw is not None:
            ctx.bind_param(dw[0], fin)
            fout = st.materialize(dw[1], producer, op, ctx.where)
            set_roles(ctx, dw, {0: "in", 1: "out"})
        else:
            fout = st.new_block(cout, "hidden", producer, op)
    else:
        cout = int(w.shape[0])
        if dw is not None:
            fout = st.materialize(dw[0], producer, op, ctx.where)
            meta = {}
            if groups == 1:
                ctx.bind_param(dw[1], fin)
            else:
                meta = {"groups": groups, "graph_in": fin}
                per_in, per_out = cin // groups, cout // groups
                if per_in == 1:
                    # depthwise: out channel o reads input channel o // mult
                    mult = per_out
                    if mult == 1:
                        st.tie_feats(fout, fin, "group", ctx.where)
                    else:
                        st.fix(fin)
                        st.add_cuts(fout, range(0, cout + 1, mult))
                else:
                    # grouped: neurons stay inside their group; the input
                    # groups share one permutation so the weight's in-axis
                    # (size cin / groups) can be permuted by a single gather
                    st.add_cuts(fin, range(0, cin + 1, per_in))
                    st.add_cuts(fout, range(0, cout + 1, per_out))
                    first = fin.slice_units(0, per_in)
                    for g in range(1, groups):
                        st.tie_feats(first, fin.slice_units(g * per_in, (g + 1) * per_in), "group", ctx.where)
                    ctx.bind_param(dw[1], first)
            set_roles(ctx, dw, {0: "out", 1: "in"}, **meta)
        else:
            fout = st.new_block(cout, "hidden", producer, op)
    if db is not None and b is not None:
        ctx.bind_param(db[0], fout)
        set_roles(ctx, db, {0: "out"})
    return (dx[0], fout) + (None,) * (out.dim() - 2)


@function_rule(F.conv1d, F.conv2d, F.conv3d)
def conv_rule(ctx: Ctx, args, descs, kwargs, kdescs, out, transposed: bool = False):
    x, w = args[0], get_arg(args, kwargs, 1, "weight")
    b = get_arg(args, kwargs, 2, "bias")
    groups = int(get_arg(args, kwargs, 6 if not transposed else 6, "groups", 1))
    op = "ConvTranspose" if transposed else "Conv"
    return conv_fn(ctx, x, descs[0], w, get_desc(descs, kdescs, 1, "weight"), b,
                   get_desc(descs, kdescs, 2, "bias"), out, groups, ctx.where, op, transposed)


def _channel_params(ctx: Ctx, dx, f, pdescs: list) -> tuple:
    """Bind per-channel parameters (``pdescs``, ``None`` where absent) to the
    channel axis ``f``; the output keeps ``dx`` with ``f`` at axis 1."""
    for pd in pdescs:
        if pd is not None:
            ctx.bind_param(pd[0], f)
            set_roles(ctx, pd, {0: "out"})
    return (dx[0], f) + tuple(dx[2:])


def batch_norm_fn(ctx: Ctx, x, dx, pdescs: list, out) -> tuple:
    f = ctx.as_feature(dx[1], int(x.shape[1]), op="input")
    if f.rep != 1:
        raise ctx.unsupported("BatchNorm over a flattened neuron axis")
    return _channel_params(ctx, dx, f, pdescs)


@function_rule(F.batch_norm)
def batch_norm_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    x = args[0]
    pds = [get_desc(descs, kdescs, i, n) for i, n in ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias"))]
    return batch_norm_fn(ctx, x, descs[0], pds, out)


def layer_norm_fn(ctx: Ctx, x, dx, shape, pdescs: list, out) -> tuple:
    k = len(shape)
    nd = x.dim()
    for i in range(k):
        d = dx[nd - k + i]
        if isinstance(d, SplitAx):
            raise ctx.unsupported(
                "LayerNorm over a head-split axis (per-head norm shared across heads)",
                hint="normalize before splitting into heads",
            )
        for pd in pdescs:
            if pd is None:
                continue
            if isinstance(d, Feat):
                ctx.bind_param(pd[i], d)
            elif isinstance(d, Lazy):
                ctx.unify(pd[i], d, int(x.shape[nd - k + i]))
            elif d is None and int(x.shape[nd - k + i]) > 1:
                pass  # spatial / token axis: parameter axis stays untracked
    for pd in pdescs:
        if pd is not None:
            set_roles(ctx, pd, {i: "out" for i in range(k)})
    return tuple(dx)


@function_rule(F.layer_norm)
def layer_norm_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    x = args[0]
    shape = get_arg(args, kwargs, 1, "normalized_shape")
    pds = [get_desc(descs, kdescs, 2, "weight"), get_desc(descs, kdescs, 3, "bias")]
    return layer_norm_fn(ctx, x, descs[0], tuple(shape), pds, out)


def group_norm_fn(ctx: Ctx, x, dx, groups: int, pdescs: list, out) -> tuple:
    c = int(x.shape[1])
    f = ctx.as_feature(dx[1], c, op="input")
    if 1 < groups < c:
        # channels may move only inside their normalisation group
        ctx.state.add_cuts(f, range(0, c + 1, c // groups))
    return _channel_params(ctx, dx, f, pdescs)


@function_rule(F.group_norm)
def group_norm_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    x = args[0]
    groups = int(get_arg(args, kwargs, 1, "num_groups"))
    pds = [get_desc(descs, kdescs, 2, "weight"), get_desc(descs, kdescs, 3, "bias")]
    return group_norm_fn(ctx, x, descs[0], groups, pds, out)


def embedding_fn(ctx: Ctx, idx, didx, w, dw, out, producer: str) -> tuple:
    st = ctx.state
    if dw is not None and isinstance(dw[1], Lazy):
        f = st.materialize(dw[1], producer, "Embedding", ctx.where)
        set_roles(ctx, dw, {0: "virtual", 1: "out"})
    else:
        f = st.new_block(int(w.shape[1]), "hidden", producer, "Embedding")
    return tuple(didx) + (f,)


@function_rule(F.embedding)
def embedding_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    return embedding_fn(ctx, args[0], descs[0], get_arg(args, kwargs, 1, "weight"),
                        get_desc(descs, kdescs, 1, "weight"), out, ctx.where)


@function_rule(
    F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.max_pool1d, F.max_pool2d, F.max_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
)
def pool_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    """Pooling over spatial axes (N, C, *spatial): the channel axis survives."""
    x, d = args[0], descs[0]
    res_shape_out = out[0] if isinstance(out, tuple) else out
    nspatial = res_shape_out.dim() - (x.dim() - (x.dim() - 2 if x.dim() >= 3 else 1))
    del nspatial
    if x.dim() >= 3:
        res = (d[0], d[1]) + (None,) * (res_shape_out.dim() - 2)
    else:  # unbatched (C, L)
        res = (d[0],) + (None,) * (res_shape_out.dim() - 1)
    if isinstance(out, tuple):
        return [res, res]
    return res


@function_rule(F.pad)
def pad_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    x, d = args[0], descs[0]
    pad = get_arg(args, kwargs, 1, "pad")
    npad = len(pad) // 2
    res = list(d)
    for k in range(npad):
        axis = x.dim() - 1 - k
        if pad[2 * k] or pad[2 * k + 1]:
            if isinstance(res[axis], (Feat, SplitAx)):
                raise ctx.unsupported("padding a neuron axis")
            res[axis] = None
    return tuple(res)


@function_rule(F.interpolate)
def interpolate_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    d = descs[0]
    return (d[0], d[1]) + (None,) * (out.dim() - 2)
