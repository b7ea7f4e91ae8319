"""Tracer rules on hand-written modules: supported patterns keep the function
under spec permutations, unsupported ones fail with errors that name the op
and the module path."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import weightspace as ws
from weightspace.errors import TraceError, UnsupportedOperationError
from weightspace.symmetry import apply_permutation, random_permutation
from weightspace.trace import passthrough, register_function_rule, trace

from tests.trace.tracekit import Between, DataDependent, Wrapper


def check_symmetry(model, x, seeds=3):
    model = model.double().eval()
    x = x.double() if x.is_floating_point() else x
    spec = ws.permutation_spec(model, x)
    sd = model.state_dict()
    with torch.no_grad():
        y = model(x)
    for seed in range(seeds):
        psd = apply_permutation(sd, spec, random_permutation(spec, seed=seed))
        other = type(model)().double().eval() if not hasattr(model, "_clone") else model._clone()
        other.load_state_dict(psd)
        with torch.no_grad():
            assert (other(x) - y).abs().max().item() < 1e-9
    return spec


class Branches(nn.Module):
    """cat of two branches, residual over the concatenation, flatten C*H*W."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 5, 1)
        self.mix = nn.Conv2d(9, 9, 3, padding=1)
        self.fc = nn.Linear(9 * 2 * 2, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        h = torch.cat([F.relu(self.a(x)), torch.tanh(self.b(x))], dim=1)
        h = h + self.mix(h)
        h = F.adaptive_max_pool2d(h, 2)
        return self.head(F.gelu(self.fc(h.view(h.size(0), -1))))


def test_cat_residual_flatten():
    spec = check_symmetry(Branches(), torch.randn(2, 3, 6, 6))
    sizes = sorted(g.size for g in spec.groups)
    assert sizes == [4, 5, 6]  # a, b (tied through the residual with mix), fc
    fc = next(g for g in spec.groups if g.size == 4)
    # the flatten makes every channel own 4 consecutive fc inputs
    assert ("fc.weight", 1, 0, 4) in fc.axes


class Gated(nn.Module):
    """SwiGLU-style gating, LayerNorm, mean/max reductions, einsum."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(5, 8)
        self.norm = nn.LayerNorm(8)
        self.gate = nn.Linear(8, 12)
        self.up = nn.Linear(8, 12)
        self.down = nn.Linear(12, 8)
        self.w = nn.Parameter(torch.randn(8, 3))

    def forward(self, x):
        h = self.inp(x)
        h = h + self.down(F.silu(self.gate(self.norm(h))) * self.up(self.norm(h)))
        pooled = h.mean(dim=1) + h.amax(dim=1)
        return torch.einsum("bd,dk->bk", pooled, self.w)


def test_gating_layernorm_einsum():
    spec = check_symmetry(Gated(), torch.randn(2, 7, 5))
    assert sorted(g.size for g in spec.groups) == [8, 12]
    stream = next(g for g in spec.groups if g.size == 8)
    params = {p for p, *_ in stream.axes}
    assert {"inp.weight", "norm.weight", "down.weight", "w"} <= params


class DepthwiseSeparable(nn.Module):
    def __init__(self):
        super().__init__()
        self.pw1 = nn.Conv1d(2, 6, 1)
        self.dw = nn.Conv1d(6, 6, 5, padding=2, groups=6)
        self.bn = nn.BatchNorm1d(6)
        self.pw2 = nn.Conv1d(6, 4, 1)

    def forward(self, x):
        return self.pw2(F.relu(self.bn(self.dw(F.relu(self.pw1(x)))))).mean(-1)


def test_depthwise_ties_input_and_output_channels():
    m = DepthwiseSeparable()
    m.bn.running_mean.normal_()
    m.bn.running_var.uniform_(0.5, 1.5)
    spec = check_symmetry(m, torch.randn(2, 2, 16))
    (g,) = spec.groups
    params = {(p, a) for p, a, *_ in g.axes}
    assert {("pw1.weight", 0), ("dw.weight", 0), ("bn.running_var", 0), ("pw2.weight", 1)} <= params


class HandAttention(nn.Module):
    """Separate q/k/v projections, manual softmax attention with a mask."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(8, 12), nn.Linear(8, 12), nn.Linear(8, 12)
        self.o = nn.Linear(12, 8)
        self.register_buffer("mask", torch.triu(torch.ones(5, 5), 1).bool())

    def forward(self, x):
        B, N, _ = x.shape
        q = self.q(x).view(B, N, 3, 4).permute(0, 2, 1, 3)
        k = self.k(x).view(B, N, 3, 4).permute(0, 2, 1, 3)
        v = self.v(x).view(B, N, 3, 4).permute(0, 2, 1, 3)
        att = (q @ k.transpose(-1, -2)) / 2.0
        att = att.masked_fill(self.mask, float("-inf")).softmax(-1)
        out = (att @ v).permute(0, 2, 1, 3).reshape(B, N, 12)
        return self.o(out)


def test_hand_written_attention_heads():
    spec = check_symmetry(HandAttention(), torch.randn(2, 5, 8))
    (heads,) = spec.head_groups
    assert heads.size == 3 and heads.unit == 4
    # per head: q/k share one permutation, v another (3 heads x 2)
    assert sum(1 for g in spec.neuron_groups if g.size == 4) == 6


def CustomAct():  # noqa: N802 - a model factory
    return Between(nn.Linear(4, 6), torch.special.expit, nn.Linear(6, 2))


def test_unknown_function_is_clear_error_and_rules_are_extensible():
    m = CustomAct()
    with pytest.raises(UnsupportedOperationError, match=r"expit.*register_function_rule") as info:
        trace(m, torch.randn(2, 4))
    assert info.value.module_path == ""
    register_function_rule(torch.special.expit, passthrough)
    spec = check_symmetry(CustomAct(), torch.randn(2, 4))
    assert [g.size for g in spec.groups] == [6]


class WithLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(3, 4))
        self.rnn = nn.LSTM(4, 4)

    def forward(self, x):
        return self.rnn(self.enc(x))[0]


def test_unknown_module_names_type_and_path():
    with pytest.raises(UnsupportedOperationError, match=r"'LSTM' in module 'rnn'.*register_module_rule"):
        trace(WithLSTM(), torch.randn(5, 2, 3))


class Inner(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(4, 4)

    def forward(self, x):
        return torch.fft.fft(self.l(x)).real


def test_function_error_names_submodule_path():
    with pytest.raises(UnsupportedOperationError, match=r"fft.*in module 'block'"):
        trace(Wrapper("block", Inner()), torch.randn(2, 4))


def test_data_dependent_control_flow_is_trace_error():
    with pytest.raises(TraceError, match="control flow"):
        trace(DataDependent(), torch.randn(2, 4))


class Interleave(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(4, 6)
        self.o = nn.Linear(18, 2)

    def forward(self, x):  # (B, 3, 4) -> (B, 3*6): tokens outside features
        return self.o(self.l(x).flatten(1))


def test_flatten_with_neurons_inside_is_unsupported():
    with pytest.raises(UnsupportedOperationError, match="flatten puts a neuron axis inside"):
        trace(Interleave(), torch.randn(2, 3, 4))


class ChannelShuffle(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 8, 1)
        self.b = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        h = self.a(x)
        B, C, H, W = h.shape
        h = h.view(B, 2, 4, H, W).transpose(1, 2).reshape(B, C, H, W)
        return self.b(h)


def test_channel_shuffle_is_unsupported_not_wrong():
    with pytest.raises(UnsupportedOperationError, match="out of order|regroups"):
        trace(ChannelShuffle(), torch.randn(2, 2, 3, 3))


class PickChannel(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 5)
        self.b = nn.Linear(5, 5)
        self.c = nn.Linear(5, 2)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.c(torch.relu(self.b(h))) + h[:, :1]


def test_selecting_a_neuron_fixes_its_group():
    spec = check_symmetry(PickChannel(), torch.randn(2, 3))
    # a's neurons are sliced -> cut: neuron 0 alone, neurons 1..4 free; b free
    assert sorted(g.size for g in spec.groups) == [4, 5]


class PartialWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 6)
        self.w = nn.Parameter(torch.randn(4, 8))

    def forward(self, x):
        return F.linear(torch.relu(self.a(x)), self.w[:, :6])


def test_partial_parameter_slice_is_unsupported():
    with pytest.raises(UnsupportedOperationError, match="slice of a parameter axis"):
        trace(PartialWeight(), torch.randn(2, 3))


def test_trace_restores_training_flags_and_weights():
    m = Branches().train()
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    trace(m, torch.randn(2, 3, 6, 6))
    assert m.training and all(x.training for x in m.modules())
    assert all(torch.equal(sd[k], v) for k, v in m.state_dict().items())


def test_missing_example_input_is_clear():
    with pytest.raises(ValueError, match="example input"):
        ws.permutation_spec(Branches())
