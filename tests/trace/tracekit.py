"""Shared helpers of the trace tests. A nanoGPT-style GPT-2 (Karpathy's model.py, shrunk): ``torch.arange``
positions, ``math.sqrt`` scaling, a ``torch.tril(torch.ones(T, T))`` causal
mask buffer, tied ``lm_head.weight = wte.weight``."""

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd, n_head, block_size, flash=False):
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.n_head, self.n_embd, self.flash = n_head, n_embd, flash
        self.register_buffer(
            "bias", torch.tril(torch.ones(block_size, block_size)).view(1, 1, block_size, block_size)
        )

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if self.flash:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
            att = F.softmax(att, dim=-1)
            y = att @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, n_embd):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, n_embd, n_head, block_size, flash=False):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, block_size, flash)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = MLP(n_embd)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):
    def __init__(self, vocab_size=100, block_size=16, n_layer=2, n_head=4, n_embd=32, flash=False):
        super().__init__()
        self.block_size = block_size
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, n_embd),
            wpe=nn.Embedding(block_size, n_embd),
            h=nn.ModuleList([Block(n_embd, n_head, block_size, flash) for _ in range(n_layer)]),
            ln_f=nn.LayerNorm(n_embd),
        ))
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.cfg = dict(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer,
                        n_head=n_head, n_embd=n_embd, flash=flash)

    def forward(self, idx):
        b, t = idx.size()
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        tok_emb = self.transformer.wte(idx)
        pos_emb = self.transformer.wpe(pos)
        x = tok_emb + pos_emb
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        return self.lm_head(x)

    def _clone(self):
        return NanoGPT(**self.cfg).to(self.lm_head.weight.dtype)


# ----------------------------------------------------------------- checks
def _forward(model, inputs):
    with torch.no_grad():
        out = model(*inputs)
    if hasattr(out, "logits"):
        out = out.logits
    elif hasattr(out, "last_hidden_state"):
        out = out.last_hidden_state
    elif isinstance(out, (tuple, list)):
        out = out[0]
    return out


def check_model(model, make_clone, inputs, *, tracer="auto", seeds=2, tol=1e-5):
    """(a) random spec permutations keep the output (float64), (b) permuting
    one tensor alone breaks it, (c) the parameter graph round trip is
    bit-exact. Returns ``(analysis, seconds)``."""
    import time

    import weightspace as ws
    from weightspace.core import analyze
    from weightspace.symmetry import apply_permutation, random_permutation

    model = model.double().eval()
    inputs = tuple(x.double() if x.is_floating_point() else x for x in inputs)
    t0 = time.perf_counter()
    a = analyze(model, inputs, tracer=tracer)
    seconds = time.perf_counter() - t0
    spec = a.spec
    assert any(g.size > 1 for g in spec.groups), "no free permutation group found"
    sd = model.state_dict()
    y = _forward(model, inputs)
    for seed in range(seeds):
        psd = apply_permutation(sd, spec, random_permutation(spec, seed=seed))
        other = make_clone().double().eval()
        other.load_state_dict(psd)
        assert (_forward(other, inputs) - y).abs().max().item() <= tol
    # (b) one-sided: permute one weight matrix of the largest group alone
    g = max(spec.groups, key=lambda g: g.size)
    ax = next(ax for ax in g.axes if sd[ax.param].dim() >= 2 and ax.unit == 1)
    bad = dict(sd)
    w = sd[ax.param]
    idx = torch.arange(w.shape[ax.axis])
    idx[ax.start], idx[ax.start + 1] = ax.start + 1, ax.start
    bad[ax.param] = w.index_select(ax.axis, idx)
    other = make_clone().double().eval()
    other.load_state_dict(bad)
    assert (_forward(other, inputs) - y).abs().max().item() > 1e-6
    # (c) graph round trip
    graph = a.template.graph(sd)
    back = graph.to_state_dict()
    for k, v in back.items():
        assert torch.equal(v, sd[k]), k
    return a, seconds


# ------------------------------------------------------- small failing models


class Wrapper(nn.Module):
    """``child`` as the one submodule ``name``: errors inside it name that path."""

    def __init__(self, name, child):
        super().__init__()
        self.child_name = name
        self.add_module(name, child)

    def forward(self, x):
        return self.get_submodule(self.child_name)(x)


class Between(nn.Module):
    """``last(fn(first(x)))``: the function under test between two layers."""

    def __init__(self, first, fn, last):
        super().__init__()
        self.first, self.fn, self.last = first, fn, last

    def forward(self, x):
        return self.last(self.fn(self.first(x)))

    def _clone(self):
        """A copy for ``check_symmetry`` (which otherwise calls ``type(model)()``)."""
        return copy.deepcopy(self)


class OneLinear(nn.Module):
    """``fc = Linear(4, 3)``; subclasses give the ``forward`` under test."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)


class DataDependent(OneLinear):
    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)
