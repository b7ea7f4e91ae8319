"""Rules of ops that move, merge, split or pick axes: reshape, transpose,
permute, cat / stack, chunk / split, select, indexing."""

from __future__ import annotations

import operator

import torch

from weightspace.trace.axes import Ctx, Resplit, apply_resplit
from weightspace.trace.channels import Feat, SplitAx
from weightspace.trace.rules._base import (
    function_rule,
    get_arg,
    get_desc,
    is_tensor,
    method_rule,
    norm_dim,
    reduce_dims,
    untracked,
)


@function_rule(torch.reshape)
@method_rule("view", "reshape", "view_as", "reshape_as", "unflatten")
def reshape_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    x = args[0]
    return ctx.reshape(x.shape, descs[0], out.shape)


@function_rule(torch.flatten)
@method_rule("flatten")
def flatten_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    return ctx.reshape(args[0].shape, descs[0], out.shape)


@function_rule(torch.transpose, torch.swapaxes)
@method_rule("transpose", "swapaxes")
def transpose_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    x, d = args[0], list(descs[0])
    if x.dim() < 2:
        return tuple(d)
    a = norm_dim(int(get_arg(args, kwargs, 1, "dim0")), x.dim())
    b = norm_dim(int(get_arg(args, kwargs, 2, "dim1")), x.dim())
    d[a], d[b] = d[b], d[a]
    return tuple(d)


@function_rule(torch.t)
@method_rule("t")
def t_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    d = descs[0]
    return tuple(reversed(d)) if len(d) == 2 else d


@function_rule(torch.permute)
@method_rule("permute")
def permute_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    x, d = args[0], descs[0]
    dims = args[1:] if len(args) > 1 else kwargs.get("dims")
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = dims[0]
    return tuple(d[norm_dim(int(k), x.dim())] for k in dims)


@function_rule(torch.movedim)
@method_rule("movedim")
def movedim_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    x, d = args[0], descs[0]
    src = get_arg(args, kwargs, 1, "source")
    dst = get_arg(args, kwargs, 2, "destination")
    src = [src] if isinstance(src, int) else list(src)
    dst = [dst] if isinstance(dst, int) else list(dst)
    nd = x.dim()
    src = [norm_dim(s, nd) for s in src]
    dst = [norm_dim(s, nd) for s in dst]
    order = [k for k in range(nd) if k not in src]
    res: list = [None] * nd
    for s, t in zip(src, dst):
        res[t] = d[s]
    it = iter(order)
    for k in range(nd):
        if k not in dst:
            res[k] = d[next(it)]
    return tuple(res)


@function_rule(torch.unsqueeze)
@method_rule("unsqueeze")
def unsqueeze_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    x, d = args[0], list(descs[0])
    dim = norm_dim(int(get_arg(args, kwargs, 1, "dim")), x.dim() + 1)
    d.insert(dim, None)
    return tuple(d)


@function_rule(torch.squeeze)
@method_rule("squeeze")
def squeeze_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    x, d = args[0], descs[0]
    dim = get_arg(args, kwargs, 1, "dim", None)
    if dim is None:
        dims = [k for k in range(x.dim()) if x.shape[k] == 1]
    else:
        dims = [k for k in reduce_dims(x, dim) if x.shape[k] == 1]
    return tuple(e for k, e in enumerate(d) if k not in dims)


@method_rule("expand", "expand_as", "broadcast_to")
def expand_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    x, d = args[0], descs[0]
    lead = out.dim() - x.dim()
    res = [None] * lead
    for k in range(x.dim()):
        res.append(d[k] if x.shape[k] == out.shape[lead + k] else None)
    return tuple(res)


@method_rule("repeat")
def repeat_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    x, d = args[0], descs[0]
    lead = out.dim() - x.dim()
    res = [None] * lead
    for k in range(x.dim()):
        if x.shape[k] == out.shape[lead + k]:
            res.append(d[k])
        elif x.shape[k] == 1:
            res.append(None)
        else:
            if isinstance(d[k], (Feat, SplitAx)):
                raise ctx.unsupported("repeat along a neuron axis")
            res.append(None)
    return tuple(res)


@function_rule(torch.cat, torch.concat, torch.concatenate)
def cat_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    tensors = get_arg(args, kwargs, 0, "tensors")
    tdescs = get_desc(descs, kdescs, 0, "tensors")
    dim = norm_dim(int(get_arg(args, kwargs, 1, "dim", 0)), out.dim())
    items = [(t, d) for t, d in zip(tensors, tdescs) if is_tensor(t) and t.numel() > 0]
    res: list = []
    for k in range(out.dim()):
        if k == dim:
            ds = [d[k] for _, d in items]
            if any(isinstance(x, (Feat, SplitAx)) for x in ds):
                feats = [ctx.as_feature(x, int(t.shape[k])) for (t, _), x in zip(items, ds)]
                reps = {f.rep for f in feats}
                if len(reps) != 1:
                    raise ctx.unsupported("cat of neuron axes with different layouts")
                segs = tuple(s for f in feats for s in f.segs)
                res.append(Feat(segs, reps.pop()))
            else:
                res.append(None)
        else:
            acc = None
            first = True
            for t, d in items:
                if first:
                    acc, first = d[k], False
                else:
                    acc = ctx.unify(acc, d[k], int(out.shape[k]))
            res.append(acc if int(out.shape[k]) > 1 else None)
    return tuple(res)


@function_rule(torch.stack)
def stack_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    tensors = get_arg(args, kwargs, 0, "tensors")
    tdescs = get_desc(descs, kdescs, 0, "tensors")
    dim = norm_dim(int(get_arg(args, kwargs, 1, "dim", 0)), out.dim())
    nd = out.dim() - 1
    res = []
    for k in range(nd):
        acc, first = None, True
        for t, d in zip(tensors, tdescs):
            if first:
                acc, first = d[k], False
            else:
                acc = ctx.unify(acc, d[k], int(t.shape[k]))
        res.append(acc)
    res.insert(dim, None)
    return tuple(res)


def _pieces(ctx: Ctx, x: torch.Tensor, d: tuple, dim: int, bounds: list[tuple[int, int]]):
    outs = []
    for a, b in bounds:
        r = ctx.slice_axis(d[dim], int(x.shape[dim]), a, b)
        dd = list(d)
        if isinstance(r, Resplit):
            dd = apply_resplit(dd, r)
        else:
            dd[dim] = r
        outs.append(tuple(dd))
    return outs


@function_rule(torch.chunk, torch.split)
@method_rule("chunk", "split")
def chunk_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    """``chunk`` / ``split`` / ``tensor_split``: consecutive pieces along ``dim``."""
    x, d = args[0], descs[0]
    dim = norm_dim(int(get_arg(args, kwargs, 2, "dim", 0)), x.dim())
    bounds, pos = [], 0
    for o in out:
        n = int(o.shape[dim])
        bounds.append((pos, pos + n))
        pos += n
    return _pieces(ctx, x, d, dim, bounds)


split_rule = chunk_rule


@function_rule(torch.unbind)
@method_rule("unbind")
def unbind_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    x, d = args[0], descs[0]
    dim = norm_dim(int(get_arg(args, kwargs, 1, "dim", 0)), x.dim())
    res = []
    for i in range(int(x.shape[dim])):
        res.append(_select(ctx, x, d, dim, i))
    return res


def _select(ctx: Ctx, x, d: tuple, dim: int, index: int) -> tuple:
    r = ctx.select_axis(d[dim], int(x.shape[dim]), index)
    dd = list(d)
    if isinstance(r, Resplit):
        dd = apply_resplit(dd, r)
    del dd[dim]
    return tuple(dd)


@function_rule(torch.select)
@method_rule("select")
def select_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    x, d = args[0], descs[0]
    dim = norm_dim(int(get_arg(args, kwargs, 1, "dim")), x.dim())
    return _select(ctx, x, d, dim, int(get_arg(args, kwargs, 2, "index")))


@function_rule(torch.narrow)
@method_rule("narrow")
def narrow_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    x, d = args[0], descs[0]
    dim = norm_dim(int(get_arg(args, kwargs, 1, "dim")), x.dim())
    start = int(get_arg(args, kwargs, 2, "start"))
    length = int(get_arg(args, kwargs, 3, "length"))
    return _pieces(ctx, x, d, dim, [(start, start + length)])[0]


@function_rule(operator.getitem)
def getitem_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    obj, idx = args[0], args[1]
    if not is_tensor(obj):
        d = descs[0]
        if isinstance(d, (list, tuple)) and isinstance(idx, int) and not _is_axis_tuple(d):
            return d[idx]
        if isinstance(d, (list, tuple)) and isinstance(idx, slice) and not _is_axis_tuple(d):
            return list(d[idx])
        return untracked(out)
    return tensor_index(ctx, obj, descs[0], idx, out)


def _is_axis_tuple(d) -> bool:
    # tensor descriptors are tuples of axis descriptors; containers are lists
    return isinstance(d, tuple)


def tensor_index(ctx: Ctx, x: torch.Tensor, d: tuple, idx, out):
    if not isinstance(idx, tuple):
        idx = (idx,)
    # expand Ellipsis
    n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
    if any(i is Ellipsis for i in idx):
        k = idx.index(Ellipsis)
        idx = idx[:k] + (slice(None),) * (x.dim() - n_real) + idx[k + 1:]
    idx = idx + (slice(None),) * (x.dim() - sum(1 for i in idx if i is not None))
    dd = list(d)
    # per output axis: the input axis it keeps, or None (new / advanced-indexed)
    res: list[int | None] = []
    axis = 0
    for i in idx:
        if i is None:
            res.append(None)
            continue
        if isinstance(i, slice):
            r = ctx.slice_axis(dd[axis], int(x.shape[axis]), i.start if i.start is not None else 0,
                               i.stop if i.stop is not None else int(x.shape[axis]), i.step or 1)
            if isinstance(r, Resplit):
                dd = apply_resplit(dd, r)
            else:
                dd[axis] = r
            res.append(axis)
            axis += 1
        elif isinstance(i, int):
            r = ctx.select_axis(dd[axis], int(x.shape[axis]), i)
            if isinstance(r, Resplit):
                dd = apply_resplit(dd, r)
            axis += 1
        elif is_tensor(i) or isinstance(i, (list,)):
            # advanced indexing: positions along this axis are picked by value
            if isinstance(dd[axis], (Feat, SplitAx)):
                ctx.state.fix(dd[axis])
            res.append(None)
            axis += 1
        else:
            raise ctx.unsupported(f"index of type {type(i).__name__}")
    descs = [dd[a] if a is not None else None for a in res]
    if is_tensor(out) and len(descs) != out.dim():
        # advanced indexing reorders/merges axes: keep only what is certain
        return tuple(None for _ in range(out.dim()))
    return tuple(descs)


@function_rule(getattr)
def getattr_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    obj, name = args[0], args[1]
    if is_tensor(obj) and name in ("T", "mT"):
        d = descs[0]
        if name == "T":
            return tuple(reversed(d))
        return tuple(d[:-2]) + (d[-1], d[-2])
    return untracked(out)


@method_rule("size", "dim", "numel")
def size_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    return None
