"""The derivation rules on small custom modules: what passes a factor, what
kills it (each claim is checked by running the network)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import weightspace as ws
from weightspace.errors import NonFiniteWeightsError
from weightspace.symmetry import apply_symmetry, canonicalize, random_symmetry


class Gated(nn.Module):
    """``down(up(x) * sigmoid(gate(x)))``: up units scale and flip (the gate is
    a value no symmetry touches), gate units do not."""

    def __init__(self):
        super().__init__()
        self.up, self.gate, self.down = nn.Linear(6, 8), nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.down(self.up(x) * torch.sigmoid(self.gate(x)))


class CatBranches(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(6, 4), nn.Linear(6, 4), nn.Linear(8, 3)

    def forward(self, x):
        return self.out(torch.cat([F.relu(self.a(x)), F.relu(self.b(x))], dim=1))


class AddConstant(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)) + 1.0)


class SharedLayer(nn.Module):
    """One Linear applied twice: its parameters cannot move for one call only."""

    def __init__(self):
        super().__init__()
        self.inp, self.mid, self.out = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = F.relu(self.inp(x))
        return self.out(F.relu(self.mid(F.relu(self.mid(h)))))


class Residual(nn.Module):
    """``fc2(relu(h + fc_r(relu(h))))`` with ``h = fc1(x)``: both sides of the
    add carry one factor."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc_r, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(F.relu(h + self.fc_r(F.relu(h))))


def _spec_and_check(module, seeds=3):
    torch.manual_seed(0)
    module = module.double().eval()
    x = torch.randn(5, 6, dtype=torch.float64)
    spec = ws.analyze(module, x).spec
    sd = {k: v.clone() for k, v in module.state_dict().items()}
    y = module(x)
    for seed in range(seeds):
        module.load_state_dict(apply_symmetry(sd, spec, random_symmetry(spec, seed=seed)))
        assert ((module(x) - y).abs().max() / y.abs().max()).item() <= 1e-6
    c1, _ = canonicalize(sd, spec)
    c2, _ = canonicalize(apply_symmetry(sd, spec, random_symmetry(spec, seed=7)), spec)
    assert all(torch.allclose(c1[k], c2[k], rtol=1e-9, atol=1e-12) for k in sd)
    return spec


def _scaled(spec):
    return {(s.group, s.kinds) for s in spec.scalings}


def test_gated_product_passes_the_factor_of_the_ungated_side():
    spec = _spec_and_check(Gated())
    assert _scaled(spec) == {("up", ("scale", "sign"))}


@pytest.mark.parametrize("module", [CatBranches(), AddConstant()], ids=["cat", "add-constant"])
def test_concatenation_and_constant_offsets_kill_the_factor(module):
    assert _spec_and_check(module).scalings == ()


def test_a_layer_called_twice_keeps_its_parameters():
    spec = _spec_and_check(SharedLayer())
    assert not any(a.param.startswith("mid.") for s in spec.scalings for a in s.axes)


def test_residual_add_ties_both_sides():
    spec = _spec_and_check(Residual())
    stream = [s for s in spec.scalings if any(a.param == "fc1.weight" for a in s.axes)]
    assert len(stream) == 1 and stream[0].kinds == ("scale",)
    roles = {(a.param, a.axis, a.role) for a in stream[0].axes}
    # fc1 and fc_r produce the stream, fc_r and fc2 read it
    assert {("fc1.weight", 0, "in"), ("fc_r.weight", 0, "in"), ("fc_r.weight", 1, "out"),
            ("fc2.weight", 1, "out")} <= roles


def test_canonicalize_rejects_nonfinite_weights():
    spec = ws.permutation_spec("mlp")
    sd = ws.arch.create_model("mlp", seed=0).state_dict()
    key = spec.scalings[0].axes[0].param
    sd[key] = sd[key].clone()
    sd[key][0, 0] = float("nan")
    with pytest.raises(NonFiniteWeightsError, match=key):
        canonicalize(sd, spec)
