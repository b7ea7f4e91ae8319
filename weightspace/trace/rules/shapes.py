"""Channel rules: how each op moves neuron axes.

A rule receives the :class:`~weightspace.trace.axes.Ctx`, the concrete
argument values (tensors already computed on the example input), their
descriptors and the concrete output, and returns the output's descriptors
(a tuple with one entry per axis for a tensor, a list for tuples, ``None``
for non-tensors). Rules record constraints on ``ctx.state``.

Users can teach the tracer new ops::

    from weightspace.trace import register_function_rule, passthrough
    register_function_rule(my_custom_activation, passthrough)
"""

from __future__ import annotations

import math
import operator
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from weightspace.trace.axes import Ctx, apply_resplit
from weightspace.trace.channels import Feat, Lazy, SplitAx

Rule = Callable[..., Any]

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
        if isinstance(d, Lazy) and d.key[0] == "param":
            name = d.key[1]
            ctx.state.param_roles.setdefault(name, dict(roles))
            if meta:
                ctx.state.param_meta.setdefault(name, {}).update(meta)
            return


# ------------------------------------------------------------- elementwise
def passthrough(ctx: Ctx, args, descs, kwargs, kdescs, out):
    """Unary elementwise op (activations, dropout, casts): descriptors unchanged."""
    d = descs[0] if descs else None
    if is_tensor(out) and is_tensor(args[0]) and out.shape == args[0].shape:
        return d
    return untracked(out)


def elementwise(ctx: Ctx, args, descs, kwargs, kdescs, out):
    """Broadcast elementwise op over all tensor operands."""
    items = [(a, d) for a, d in zip(list(args) + list(kwargs.values()), list(descs) + list(kdescs.values())) if is_tensor(a) and a.dim() > 0]
    if not is_tensor(out):
        return None
    return ctx.broadcast(items, out.shape)


def _reduce_dims(x: torch.Tensor, dim) -> list[int]:
    if dim is None:
        return list(range(x.dim()))
    if isinstance(dim, (tuple, list)):
        return [norm_dim(int(d), x.dim()) for d in dim]
    return [norm_dim(int(dim), x.dim())]


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
    reduced = _reduce_dims(x, dim)
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


def max_like(ctx: Ctx, args, descs, kwargs, kdescs, out):
    # torch.max(x) / torch.max(x, dim) / torch.max(a, b)
    if len(args) > 1 and is_tensor(args[1]):
        return elementwise(ctx, args, descs, kwargs, kdescs, out)
    if len(args) == 1 and "dim" not in kwargs:
        return ()
    return reduction(ctx, args, descs, kwargs, kdescs, out, returns_indices=True)


def argreduction(ctx: Ctx, args, descs, kwargs, kdescs, out):
    return reduction(ctx, args, descs, kwargs, kdescs, out, returns_indices=True)


def softmax(ctx: Ctx, args, descs, kwargs, kdescs, out):
    # softmax over any axis is equivariant to permutations of that axis
    return descs[0]


# ------------------------------------------------------------------ shapes
def reshape_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    x = args[0]
    return ctx.reshape(x.shape, descs[0], out.shape)


def transpose_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    x, d = args[0], list(descs[0])
    if x.dim() < 2:
        return tuple(d)
    a = norm_dim(int(get_arg(args, kwargs, 1, "dim0")), x.dim())
    b = norm_dim(int(get_arg(args, kwargs, 2, "dim1")), x.dim())
    d[a], d[b] = d[b], d[a]
    return tuple(d)


def t_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    d = descs[0]
    return tuple(reversed(d)) if len(d) == 2 else d


def permute_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    x, d = args[0], descs[0]
    dims = args[1:] if len(args) > 1 else kwargs.get("dims")
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = dims[0]
    return tuple(d[norm_dim(int(k), x.dim())] for k in dims)


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


def flatten_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    return ctx.reshape(args[0].shape, descs[0], out.shape)


def unsqueeze_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    x, d = args[0], list(descs[0])
    dim = norm_dim(int(get_arg(args, kwargs, 1, "dim")), x.dim() + 1)
    d.insert(dim, None)
    return tuple(d)


def squeeze_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    x, d = args[0], descs[0]
    dim = get_arg(args, kwargs, 1, "dim", None)
    if dim is None:
        dims = [k for k in range(x.dim()) if x.shape[k] == 1]
    else:
        dims = [k for k in _reduce_dims(x, dim) if x.shape[k] == 1]
    return tuple(e for k, e in enumerate(d) if k not in dims)


def expand_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    x, d = args[0], descs[0]
    lead = out.dim() - x.dim()
    res = [None] * lead
    for k in range(x.dim()):
        res.append(d[k] if x.shape[k] == out.shape[lead + k] else None)
    return tuple(res)


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
        if isinstance(r, tuple) and r and r[0] == "resplit":
            dd = apply_resplit(dd, r)
        else:
            dd[dim] = r
        outs.append(tuple(dd))
    return outs


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
    if isinstance(r, tuple) and r and r[0] in ("resplit", "resplit-feat"):
        dd = apply_resplit(dd, r)
    del dd[dim]
    return tuple(dd)


def select_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    x, d = args[0], descs[0]
    dim = norm_dim(int(get_arg(args, kwargs, 1, "dim")), x.dim())
    return _select(ctx, x, d, dim, int(get_arg(args, kwargs, 2, "index")))


def narrow_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    x, d = args[0], descs[0]
    dim = norm_dim(int(get_arg(args, kwargs, 1, "dim")), x.dim())
    start = int(get_arg(args, kwargs, 2, "start"))
    length = int(get_arg(args, kwargs, 3, "length"))
    return _pieces(ctx, x, d, dim, [(start, start + length)])[0]


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
    res: list = []
    axis = 0
    for i in idx:
        if i is None:
            res.append(("new",))
            continue
        if isinstance(i, slice):
            r = ctx.slice_axis(dd[axis], int(x.shape[axis]), i.start if i.start is not None else 0,
                               i.stop if i.stop is not None else int(x.shape[axis]), i.step or 1)
            if isinstance(r, tuple) and r and r[0] == "resplit":
                dd = apply_resplit(dd, r)
                res.append(("axis", axis))
            else:
                dd[axis] = r
                res.append(("axis", axis))
            axis += 1
        elif isinstance(i, int):
            r = ctx.select_axis(dd[axis], int(x.shape[axis]), i)
            if isinstance(r, tuple) and r and r[0] in ("resplit", "resplit-feat"):
                dd = apply_resplit(dd, r)
            axis += 1
        elif is_tensor(i) or isinstance(i, (list,)):
            # advanced indexing: positions along this axis are picked by value
            if isinstance(dd[axis], (Feat, SplitAx)):
                ctx.state.fix(dd[axis])
            res.append(("adv",))
            axis += 1
        else:
            raise ctx.unsupported(f"index of type {type(i).__name__}")
    descs = []
    for r in res:
        descs.append(dd[r[1]] if r[0] == "axis" else None)
    if is_tensor(out) and len(descs) != out.dim():
        # advanced indexing reorders/merges axes: keep only what is certain
        return tuple(None for _ in range(out.dim()))
    return tuple(descs)


def getattr_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    obj, name = args[0], args[1]
    if is_tensor(obj) and name in ("T", "mT"):
        d = descs[0]
        if name == "T":
            return tuple(reversed(d))
        return tuple(d[:-2]) + (d[-1], d[-2])
    return untracked(out)


# ----------------------------------------------------------------- matmul
def matmul_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    a, b = args[0], args[1]
    da, db = descs[0], descs[1]
    if a.dim() == 1 and b.dim() == 1:
        ctx.contract(da[0], db[0], int(a.shape[0]))
        return ()
    if a.dim() == 1:
        ctx.contract(da[0], db[-2], int(a.shape[0]))
        return tuple(db[:-2]) + (db[-1],)
    if b.dim() == 1:
        ctx.contract(da[-1], db[0], int(b.shape[0]))
        return tuple(da[:-1])
    ctx.contract(da[-1], db[-2], int(a.shape[-1]))
    ba = (a[..., 0, 0], da[:-2])
    bb = (b[..., 0, 0], db[:-2])
    batch_shape = out.shape[:-2]
    batch = ctx.broadcast([(ba[0], ba[1]), (bb[0], bb[1])], batch_shape) if len(batch_shape) else ()
    _matmul_out_roles(ctx, da, db)
    return tuple(batch) + (da[-2], db[-1])


def _matmul_out_roles(ctx: Ctx, da, db) -> None:
    # x @ W with a parameter W: rows of W are inputs, columns outputs
    if db and isinstance(db[-1], Lazy) and db[-1].key[0] == "param":
        name = db[-1].key[1]
        nd = len(db)
        ctx.state.param_roles.setdefault(name, {nd - 2: "in", nd - 1: "out"})


def einsum_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    eq = args[0].replace(" ", "")
    ops = args[1:]
    odescs = descs[1:]
    if len(ops) == 1 and isinstance(ops[0], (list, tuple)):
        ops, odescs = ops[0], odescs[0]
    if "..." in eq:
        raise ctx.unsupported("einsum with '...'", hint="write the labels out explicitly")
    lhs, rhs = eq.split("->") if "->" in eq else (eq, None)
    terms = lhs.split(",")
    if rhs is None:
        counts: dict[str, int] = {}
        for t in terms:
            for c in t:
                counts[c] = counts.get(c, 0) + 1
        rhs = "".join(sorted(c for c, n in counts.items() if n == 1))
    label: dict[str, Any] = {}
    label_size: dict[str, int] = {}
    seen: dict[str, bool] = {}
    for t, x, d in zip(terms, ops, odescs):
        for k, c in enumerate(t):
            size = int(x.shape[k])
            label_size[c] = max(label_size.get(c, 1), size)
            if c not in seen:
                label[c], seen[c] = d[k], True
            elif size > 1:
                if c in rhs:
                    label[c] = ctx.unify(label[c], d[k], size)
                else:
                    ctx.contract(label[c], d[k], size)
    return tuple(label[c] if label_size[c] > 1 else None for c in rhs)


def sdpa_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    q, k, v = args[0], args[1], args[2]
    dq, dk, dv = descs[0], descs[1], descs[2]
    ctx.contract(dq[-1], dk[-1], int(q.shape[-1]))
    batch_shape = out.shape[:-2]
    items = [(q[..., 0, 0], dq[:-2]), (k[..., 0, 0], dk[:-2]), (v[..., 0, 0], dv[:-2])]
    mask = get_arg(args, kwargs, 3, "attn_mask")
    batch = ctx.broadcast(items, batch_shape) if len(batch_shape) else ()
    if is_tensor(mask):
        md = get_desc(descs, kdescs, 3, "attn_mask")
        if md is not None:
            ctx.broadcast([(mask, md)], mask.shape)
    return tuple(batch) + (dq[-2], dv[-1])


# ------------------------------------------------------------------ layers
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


def conv_rule(ctx: Ctx, args, descs, kwargs, kdescs, out, transposed: bool = False):
    x, w = args[0], get_arg(args, kwargs, 1, "weight")
    b = get_arg(args, kwargs, 2, "bias")
    groups = int(get_arg(args, kwargs, 6 if not transposed else 6, "groups", 1))
    op = "ConvTranspose" if transposed else "Conv"
    return conv_fn(ctx, x, descs[0], w, get_desc(descs, kdescs, 1, "weight"), b,
                   get_desc(descs, kdescs, 2, "bias"), out, groups, ctx.where, op, transposed)


def batch_norm_fn(ctx: Ctx, x, dx, pdescs: list, out) -> tuple:
    f = ctx.as_feature(dx[1], int(x.shape[1]), op="input")
    if f.rep != 1:
        raise ctx.unsupported("BatchNorm over a flattened neuron axis")
    for pd in pdescs:
        if pd is not None:
            ctx.bind_param(pd[0], f)
            set_roles(ctx, pd, {0: "out"})
    return (dx[0], f) + tuple(dx[2:])


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
    for pd in pdescs:
        if pd is not None:
            ctx.bind_param(pd[0], f)
            set_roles(ctx, pd, {0: "out"})
    return (dx[0], f) + tuple(dx[2:])


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


def embedding_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    return embedding_fn(ctx, args[0], descs[0], get_arg(args, kwargs, 1, "weight"),
                        get_desc(descs, kdescs, 1, "weight"), out, ctx.where)


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


def interpolate_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    d = descs[0]
    return (d[0], d[1]) + (None,) * (out.dim() - 2)


def like_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    """``zeros_like`` / ``ones_like`` / ``full_like``: constant over neurons,
    hence equivariant; keep the layout."""
    return descs[0]


def where_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    return elementwise(ctx, args, descs, kwargs, kdescs, out)


def masked_fill_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    return elementwise(ctx, args[:2], descs[:2], {}, {}, out)


def size_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    return None


def normalize_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    # F.normalize(x, dim=...) divides by a norm over one axis: equivariant
    return descs[0]


def cumulative_rule(ctx: Ctx, args, descs, kwargs, kdescs, out):
    x, d = args[0], descs[0]
    dim = norm_dim(int(get_arg(args, kwargs, 1, "dim")), x.dim())
    if isinstance(d[dim], (Feat, SplitAx)):
        raise ctx.unsupported("cumulative op along a neuron axis depends on neuron order")
    return d


# --------------------------------------------------------------- modules
def module_passthrough(ctx, module, path, args, descs, kwargs, kdescs, out):
    return passthrough(ctx, args, descs, kwargs, kdescs, out)


def module_linear(ctx, m: nn.Linear, path, args, descs, kwargs, kdescs, out):
    return linear_fn(ctx, args[0], descs[0], m.weight, param_desc(m, path, "weight"),
                     m.bias, param_desc(m, path, "bias"), out, path)


def module_conv(ctx, m, path, args, descs, kwargs, kdescs, out):
    transposed = isinstance(m, nn.modules.conv._ConvTransposeNd)
    op = type(m).__name__
    return conv_fn(ctx, args[0], descs[0], m.weight, param_desc(m, path, "weight"), m.bias,
                   param_desc(m, path, "bias"), out, m.groups, path, op, transposed)


def module_batch_norm(ctx, m, path, args, descs, kwargs, kdescs, out):
    pds = [param_desc(m, path, n) for n in ("running_mean", "running_var", "weight", "bias")]
    return batch_norm_fn(ctx, args[0], descs[0], pds, out)


def module_layer_norm(ctx, m: nn.LayerNorm, path, args, descs, kwargs, kdescs, out):
    pds = [param_desc(m, path, "weight"), param_desc(m, path, "bias")]
    return layer_norm_fn(ctx, args[0], descs[0], tuple(m.normalized_shape), pds, out)


def module_group_norm(ctx, m: nn.GroupNorm, path, args, descs, kwargs, kdescs, out):
    pds = [param_desc(m, path, "weight"), param_desc(m, path, "bias")]
    return group_norm_fn(ctx, args[0], descs[0], m.num_groups, pds, out)


def module_embedding(ctx, m: nn.Embedding, path, args, descs, kwargs, kdescs, out):
    return embedding_fn(ctx, args[0], descs[0], m.weight, param_desc(m, path, "weight"), out, path)


def module_prelu(ctx, m: nn.PReLU, path, args, descs, kwargs, kdescs, out):
    x, d = args[0], descs[0]
    if m.num_parameters > 1:
        axis = 1 if x.dim() >= 2 else 0
        f = ctx.as_feature(d[axis], int(x.shape[axis]))
        ctx.bind_param(param_desc(m, path, "weight")[0], f)
        set_roles(ctx, param_desc(m, path, "weight"), {0: "out"})
        d = tuple(f if k == axis else e for k, e in enumerate(d))
    return d


def module_flatten(ctx, m: nn.Flatten, path, args, descs, kwargs, kdescs, out):
    return ctx.reshape(args[0].shape, descs[0], out.shape)


def module_unflatten(ctx, m: nn.Unflatten, path, args, descs, kwargs, kdescs, out):
    return ctx.reshape(args[0].shape, descs[0], out.shape)


def module_softmax(ctx, m, path, args, descs, kwargs, kdescs, out):
    return descs[0]


def module_pool(ctx, m, path, args, descs, kwargs, kdescs, out):
    return pool_rule(ctx, args, descs, kwargs, kdescs, out)


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


# -------------------------------------------------------------- registry
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
_BINARY_FUNCS = [
    operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv, operator.pow,
    operator.iadd, operator.isub, operator.imul, operator.itruediv,
    torch.add, torch.sub, torch.subtract, torch.mul, torch.multiply, torch.div, torch.divide,
    torch.pow, torch.maximum, torch.minimum, torch.fmax, torch.fmin, torch.atan2, torch.lerp,
    torch.addcmul, torch.addcdiv,
]
_UNARY_METHODS = [
    "relu", "relu_", "sigmoid", "tanh", "sin", "cos", "exp", "log", "abs", "neg", "sqrt", "rsqrt",
    "square", "clamp", "clip", "float", "double", "half", "bfloat16", "to", "type", "type_as",
    "contiguous", "clone", "detach", "requires_grad_", "exp_", "sign", "erf", "reciprocal",
    "sigmoid_", "tanh_", "clamp_", "abs_", "nan_to_num", "cpu", "cuda",
]
_BINARY_METHODS = [
    "add", "sub", "mul", "div", "pow", "add_", "sub_", "mul_", "div_", "maximum", "minimum",
    "__add__", "__mul__", "__sub__", "__truediv__", "__radd__", "__rmul__", "lerp",
]
_REDUCE_FUNCS = [torch.sum, torch.mean, torch.amax, torch.amin, torch.var, torch.std,
                 torch.logsumexp, torch.prod, torch.norm, torch.linalg.vector_norm, torch.nansum,
                 torch.nanmean, torch.all, torch.any, torch.median]
_REDUCE_METHODS = ["sum", "mean", "amax", "amin", "var", "std", "logsumexp", "prod", "norm",
                   "nansum", "nanmean", "all", "any"]

for fn in _UNARY_FUNCS:
    register_function_rule(fn, passthrough)
for fn in _BINARY_FUNCS:
    register_function_rule(fn, elementwise)
for name in _UNARY_METHODS:
    register_method_rule(name, passthrough)
for name in _BINARY_METHODS:
    register_method_rule(name, elementwise)
for fn in _REDUCE_FUNCS:
    register_function_rule(fn, reduction)
for name in _REDUCE_METHODS:
    register_method_rule(name, reduction)

for fn, rule in [
    (torch.max, max_like), (torch.min, max_like), (torch.argmax, argreduction), (torch.argmin, argreduction),
    (torch.softmax, softmax), (F.softmax, softmax), (F.log_softmax, softmax), (torch.log_softmax, softmax),
    (torch.flatten, flatten_rule), (torch.reshape, reshape_rule), (torch.transpose, transpose_rule),
    (torch.swapaxes, transpose_rule), (torch.permute, permute_rule), (torch.movedim, movedim_rule),
    (torch.t, t_rule), (torch.unsqueeze, unsqueeze_rule), (torch.squeeze, squeeze_rule),
    (torch.cat, cat_rule), (torch.concat, cat_rule), (torch.concatenate, cat_rule), (torch.stack, stack_rule),
    (torch.chunk, chunk_rule), (torch.split, split_rule), (torch.unbind, unbind_rule),
    (torch.select, select_rule), (torch.narrow, narrow_rule),
    (operator.getitem, getitem_rule), (getattr, getattr_rule),
    (operator.matmul, matmul_rule), (torch.matmul, matmul_rule), (torch.bmm, matmul_rule), (torch.mm, matmul_rule),
    (torch.einsum, einsum_rule), (F.scaled_dot_product_attention, sdpa_rule),
    (F.linear, linear_rule), (F.conv1d, conv_rule), (F.conv2d, conv_rule), (F.conv3d, conv_rule),
    (F.batch_norm, batch_norm_rule), (F.layer_norm, layer_norm_rule), (F.group_norm, group_norm_rule),
    (F.embedding, embedding_rule),
    (F.avg_pool1d, pool_rule), (F.avg_pool2d, pool_rule), (F.avg_pool3d, pool_rule),
    (F.max_pool1d, pool_rule), (F.max_pool2d, pool_rule), (F.max_pool3d, pool_rule),
    (F.adaptive_avg_pool1d, pool_rule), (F.adaptive_avg_pool2d, pool_rule), (F.adaptive_avg_pool3d, pool_rule),
    (F.adaptive_max_pool1d, pool_rule), (F.adaptive_max_pool2d, pool_rule), (F.adaptive_max_pool3d, pool_rule),
    (F.pad, pad_rule), (F.interpolate, interpolate_rule), (F.normalize, normalize_rule),
    (torch.zeros_like, like_rule), (torch.ones_like, like_rule), (torch.full_like, like_rule),
    (torch.where, where_rule), (torch.cumsum, cumulative_rule), (torch.cumprod, cumulative_rule),
    (torch.masked_fill, masked_fill_rule),
]:
    register_function_rule(fn, rule)

for name, rule in [
    ("max", max_like), ("min", max_like), ("argmax", argreduction), ("argmin", argreduction),
    ("softmax", softmax), ("log_softmax", softmax),
    ("view", reshape_rule), ("reshape", reshape_rule), ("view_as", reshape_rule), ("reshape_as", reshape_rule),
    ("flatten", flatten_rule), ("unflatten", reshape_rule),
    ("transpose", transpose_rule), ("swapaxes", transpose_rule), ("permute", permute_rule),
    ("movedim", movedim_rule), ("t", t_rule),
    ("unsqueeze", unsqueeze_rule), ("squeeze", squeeze_rule), ("expand", expand_rule),
    ("expand_as", expand_rule), ("broadcast_to", expand_rule), ("repeat", repeat_rule),
    ("chunk", chunk_rule), ("split", split_rule), ("unbind", unbind_rule), ("select", select_rule),
    ("narrow", narrow_rule), ("matmul", matmul_rule), ("bmm", matmul_rule), ("mm", matmul_rule),
    ("__matmul__", matmul_rule),
    ("size", size_rule), ("dim", size_rule), ("numel", size_rule),
    ("masked_fill", masked_fill_rule), ("masked_fill_", masked_fill_rule),
    ("cumsum", cumulative_rule), ("cumprod", cumulative_rule),
    ("zero_", like_rule), ("fill_", like_rule),
]:
    register_method_rule(name, rule)

for cls in [
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.ELU, nn.SELU, nn.CELU, nn.LeakyReLU, nn.Softplus,
    nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.LogSigmoid,
    nn.Softsign, nn.Tanhshrink,
]:
    register_module_rule(cls, module_passthrough)
for cls in [nn.Linear]:
    register_module_rule(cls, module_linear)
for cls in [nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d]:
    register_module_rule(cls, module_conv)
for cls in [nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d]:
    register_module_rule(cls, module_batch_norm)
register_module_rule(nn.LayerNorm, module_layer_norm)
register_module_rule(nn.GroupNorm, module_group_norm)
register_module_rule(nn.Embedding, module_embedding)
register_module_rule(nn.PReLU, module_prelu)
register_module_rule(nn.Flatten, module_flatten)
register_module_rule(nn.Unflatten, module_unflatten)
register_module_rule(nn.Softmax, module_softmax)
register_module_rule(nn.LogSoftmax, module_softmax)
register_module_rule(nn.MultiheadAttention, module_mha)
for cls in [
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
]:
    register_module_rule(cls, module_pool)

LEAF_TYPES = tuple(MODULE_RULES)
