"""Rules of contractions: matmul, einsum, scaled dot-product attention."""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F

from weightspace.trace.axes import Ctx
from weightspace.trace.channels import Lazy
from weightspace.trace.rules._base import function_rule, get_arg, get_desc, is_tensor, method_rule


@function_rule(operator.matmul, torch.matmul, torch.bmm, torch.mm)
@method_rule("matmul", "bmm", "mm", "__matmul__")
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
    if db and isinstance(db[-1], Lazy) and db[-1].kind == "param":
        name = db[-1].name
        nd = len(db)
        ctx.state.param_roles.setdefault(name, {nd - 2: "in", nd - 1: "out"})


@function_rule(torch.einsum)
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


@function_rule(F.scaled_dot_product_attention)
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
