"""Scaling and sign symmetries as properties, on every registered architecture:
a random element of the full group (permutation x scale x sign) keeps the
outputs; the derived groups are the expected ones (non-trivial where the
activations allow it, absent where they do not); transforms in the wrong
direction change the outputs; ``canonicalize`` is constant on orbits and
idempotent."""

import pytest
import torch

import weightspace as ws
from weightspace.errors import SpecError
import weightspace.symmetry as sym

from tests.symmetry.symkit import BIG, IDS, analysis, arch_params, make_input, make_model, perturbed_state



def _outputs(model, sd, x):
    model.load_state_dict(sd)
    with torch.no_grad():
        return model(x)


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def _max_rel(sd1, sd2):
    """Largest difference over tensors, relative to each tensor's magnitude."""
    return max(
        ((sd1[k] - sd2[k]).abs().max() / sd2[k].abs().max().clamp_min(1e-12)).item()
        for k in sd2
        if sd2[k].is_floating_point() and sd2[k].numel()
    )


def _name(param):
    return param.values[0] if hasattr(param, "values") else param[0]


def _case(name, kw, seed):
    """(spec, model, perturbed weights, input, outputs) of one architecture."""
    model = make_model(name, kw)
    sd = perturbed_state(model, seed)
    x = make_input(name, kw)
    return analysis(name, kw).spec, model, sd, x, _outputs(model, sd, x)


@pytest.mark.parametrize(
    "name,kw", arch_params(lambda n, k: n == "resnet50"), ids=IDS,
)
def test_random_full_group_element_preserves_function(name, kw):
    spec, model, sd, x, y = _case(name, kw, 1)
    for seed in range(1 if name in BIG else 3):
        g = sym.random_symmetry(spec, seed=seed)
        gsd = sym.apply_symmetry(sd, spec, g)
        for s in spec.scalings:  # the factors really moved weights
            ax = s.axes[0]
            assert not torch.equal(gsd[ax.param], sym.apply_symmetry(sd, spec, sym.Symmetry(g.perm, {}))[ax.param])
        assert _rel(_outputs(model, gsd, x), y) <= 1e-6, (name, seed)


def _kinds(spec):
    return sorted({s.kinds for s in spec.scalings})


@pytest.mark.parametrize(
    "name,kw,kinds,groups",
    [
        ("mlp", {}, [("scale",)], 2),
        ("mlp", {"activation": "leaky_relu"}, [("scale",)], 2),
        ("mlp", {"activation": "tanh"}, [("sign",)], 2),
        ("mlp", {"activation": "identity"}, [("scale", "sign")], 2),
        ("mlp", {"activation": "gelu"}, [], 0),
        ("mlp", {"activation": "silu"}, [], 0),
        ("mlp", {"activation": "sigmoid"}, [], 0),
        ("mlp", {"activation": "elu"}, [], 0),
        ("siren", {}, [("sign",)], 2),
        ("cnn_small", {}, [("scale",)], 3),
        ("cnn_small", {"activation": "tanh"}, [("sign",)], 3),
        ("cnn_small_tf", {"padding": "same"}, [("scale",)], 3),
    ],
)
def test_expected_scalings(name, kw, kinds, groups):
    spec = ws.permutation_spec(name, **kw)
    assert _kinds(spec) == kinds
    assert len(spec.scalings) == groups
    # one factor per unit of every hidden group of these plain chains
    assert sorted(s.group for s in spec.scalings) == sorted(g.name for g in spec.groups)[:groups]


def test_batchnorm_and_residual_scalings():
    spec = ws.permutation_spec("resnet20")
    by_role = {}
    for s in spec.scalings:
        roles = {(a.param.rsplit(".", 1)[-1], a.role) for a in s.axes}
        by_role.setdefault(s.kinds, []).append(roles)
    # conv -> BN: any nonzero factor, absorbed by (running_mean, weight); no bias moves
    conv_bn = by_role[("scale", "sign")]
    assert all(r == {("weight", "in"), ("weight", "out"), ("running_mean", "stat")} for r in conv_bn)
    # BN -> ReLU -> conv (and the residual streams): positive only
    assert all(("bias", "in") in r for r in by_role[("scale",)])
    assert not any(a.param.endswith("running_var") for s in spec.scalings for a in s.axes)
    # a residual stream: one factor for the stem BN and every block's last BN
    stream = spec.scalings[1]
    assert {a.param for a in stream.axes if a.param.endswith("bn2.weight")} == {
        f"layer1.{i}.bn2.weight" for i in range(3)
    }


def test_attention_and_layernorm_paths():
    vit = ws.permutation_spec("vit_tiny")
    # only LayerNorm outputs feeding a Linear (the LN affine absorbs the factor);
    # GELU units, attention and the residual stream get none
    assert vit.scalings
    for s in vit.scalings:
        ins = {a.param for a in s.axes if a.role == "in"}
        assert all(".norm" in p for p in ins)
    assert not any("fc1" in a.param and a.role == "in" for s in vit.scalings for a in s.axes)
    # post-LN transformer: every LN output also feeds nn.MultiheadAttention
    # (no rule) or a residual add: nothing
    assert ws.permutation_spec("token_transformer").scalings == ()


def test_wrong_direction_changes_function():
    cases = [("mlp", {}), ("mlp", {"activation": "tanh"}), ("siren", {}), ("cnn_small", {}),
             ("cnn_small", {"activation": "tanh"}), ("resnet20", {"width": 2})]
    for name, kw in cases:
        spec = ws.permutation_spec(name, **kw)
        model = make_model(name, kw)
        sd = perturbed_state(model, 2)
        x = make_input(name, kw)
        y = _outputs(model, sd, x)
        s = spec.scalings[0]
        d = torch.full((s.size,), 2.0 if s.has_scale else -1.0, dtype=torch.float64)
        # only the incoming side
        bad = dict(sd)
        for ax in s.axes:
            if ax.role == "in":
                t = bad[ax.param].clone()
                t.narrow(ax.axis, ax.start, s.size * ax.unit).mul_(d[0])
                bad[ax.param] = t
        assert _rel(_outputs(model, bad, x), y) > 1e-3, (name, "in only")
    # a negative factor through ReLU, a positive scale through tanh: rejected,
    # and (forced) they change the outputs
    for name, kw, f in [("mlp", {}, -1.0), ("mlp", {"activation": "tanh"}, 2.0)]:
        spec = ws.permutation_spec(name, **kw)
        model = make_model(name, kw)
        sd = perturbed_state(model, 2)
        x = make_input(name, kw)
        s = spec.scalings[0]
        with pytest.raises(SpecError, match="factors must be"):
            sym.apply_scaling(sd, spec, {s.name: torch.full((s.size,), f, dtype=torch.float64)})
        forced = sym.ScaleGroup(s.name, s.group, s.size, ("scale", "sign"), s.axes)
        fspec = type(spec)(spec.groups, spec.blocks, spec.param_axes, spec.param_shapes, spec.float_keys,
                           spec.extra_keys, spec.arch, (forced,))
        bad = sym.apply_scaling(sd, fspec, {s.name: torch.full((s.size,), f, dtype=torch.float64)})
        assert _rel(_outputs(model, bad, x), _outputs(model, sd, x)) > 1e-3, name


def test_gelu_units_have_no_symmetry_and_scaling_them_breaks_the_function():
    relu = ws.permutation_spec("mlp")
    gelu = ws.permutation_spec("mlp", activation="gelu")
    assert gelu.scalings == ()
    kw = {"activation": "gelu"}
    model = make_model("mlp", kw)
    sd = perturbed_state(model, 3)
    x = make_input("mlp", kw)
    s = relu.scalings[0]  # the ReLU net's scaling, same tensors
    d = torch.full((s.size,), 2.0, dtype=torch.float64)
    moved = sym.apply_scaling(sd, relu, {s.name: d})
    assert _rel(_outputs(model, moved, x), _outputs(model, sd, x)) > 1e-3


@pytest.mark.parametrize(
    "name,kw",
    # a Newton solve over every scaled unit: seconds for the wide ResNets
    # ResNet-50 is left out here: its balancing solve did not finish in 10 min on
    # 2 cores (ResNet-18: ~70 s). Its full-group function preservation is
    # tested above; canonicalize's claims are tested up to ResNet-18.
    [p for p in arch_params(lambda n, k: n in BIG or (n == "resnet20" and bool(k))) if _name(p) != "resnet50"],
    ids=[i for i in IDS if i != "resnet50"],
)
def test_canonicalize_is_orbit_invariant_and_idempotent(name, kw):
    spec, model, sd, x, y = _case(name, kw, 4)
    c, g = sym.canonicalize(sd, spec)
    assert _max_rel(sym.apply_symmetry(sd, spec, g), c) <= 1e-12
    assert _rel(_outputs(model, c, x), y) <= 1e-6
    assert _max_rel(sym.canonicalize(c, spec)[0], c) <= 1e-8
    for seed in range(2):
        c2, _ = sym.canonicalize(sym.apply_symmetry(sd, spec, sym.random_symmetry(spec, seed=seed)), spec)
        assert _max_rel(c2, c) <= 1e-8, (name, seed)


def test_canonical_scale_is_balanced_and_sign_rule_holds():
    spec = ws.permutation_spec("cnn_small")
    sd = perturbed_state(make_model("cnn_small", {}), 5)
    c, _ = sym.canonicalize(sd, spec, permute=False)
    for s in spec.scalings:
        norms = {}
        for ax in s.axes:
            t = c[ax.param].narrow(ax.axis, ax.start, s.size * ax.unit).movedim(ax.axis, 0)
            e = t.reshape(s.size, -1).pow(2).sum(1)
            norms[ax.role] = norms.get(ax.role, 0) + e
        torch.testing.assert_close(norms["in"], norms["out"], rtol=1e-9, atol=0)
    tspec = ws.permutation_spec("mlp", activation="tanh")
    sd = perturbed_state(make_model("mlp", {"activation": "tanh"}), 5)
    c, g = sym.canonicalize(sd, tspec, permute=False)
    first = tspec.scalings[0]  # layers.0: incoming = weight rows and bias
    rows = torch.cat([c["layers.0.weight"], c["layers.0.bias"][:, None]], dim=1)
    pick = rows.gather(1, rows.abs().argmax(1, keepdim=True))
    assert (pick > 0).all()
    assert set(g.scale[first.name].abs().tolist()) == {1.0}


def test_batched_canonicalize_matches_single():
    spec = ws.permutation_spec("cnn_small")
    nets = [perturbed_state(make_model("cnn_small", {}), s) for s in range(3)]
    nets[1] = sym.apply_symmetry(nets[1], spec, sym.random_symmetry(spec, seed=9))
    batch = {k: torch.stack([n[k] for n in nets]) for k in nets[0]}
    cb, gb = sym.canonicalize(batch, spec, batched=True)
    for i, n in enumerate(nets):
        c, g = sym.canonicalize(n, spec)
        assert _max_rel({k: v[i] for k, v in cb.items()}, c) <= 1e-12
        assert all(torch.equal(gb.perm[k][i], g.perm[k]) for k in g.perm)
    again = sym.apply_symmetry(batch, spec, gb, batched=True)
    assert _max_rel(again, cb) <= 1e-12


def test_symmetry_api_errors_and_purity():
    spec = ws.permutation_spec("mlp")
    sd = make_model("mlp", {}).state_dict()
    with pytest.raises(ValueError, match="seed"):
        sym.random_symmetry(spec)
    a, b = sym.random_symmetry(spec, seed=3), sym.random_symmetry(spec, seed=3)
    assert all(torch.equal(a.scale[k], b.scale[k]) for k in a.scale)
    s = spec.scalings[0]
    with pytest.raises(SpecError, match="unknown scale group"):
        sym.apply_scaling(sd, spec, {"nope": torch.ones(3)})
    with pytest.raises(SpecError, match="expected factors of shape"):
        sym.apply_scaling(sd, spec, {s.name: torch.ones(s.size + 1)})
    with pytest.raises(SpecError, match="finite and nonzero"):
        sym.apply_scaling(sd, spec, {s.name: torch.zeros(s.size)})
    with pytest.raises(SpecError, match="spec expects"):
        sym.apply_symmetry({**sd, s.axes[0].param: torch.zeros(3, 3)}, spec, sym.identity_symmetry(spec))
    with pytest.raises(SpecError, match="lacks"):
        sym.canonicalize({k: v for k, v in sd.items() if k != s.axes[0].param}, spec)
    copy = {k: v.clone() for k, v in sd.items()}
    sym.apply_symmetry(sd, spec, sym.random_symmetry(spec, seed=0))
    sym.canonicalize(sd, spec)
    assert all(torch.equal(copy[k], sd[k]) for k in sd)
    # a plain permutation dict is accepted as (P, 1)
    perm = sym.random_symmetry(spec, seed=1).perm
    assert all(torch.equal(sym.apply_symmetry(sd, spec, perm)[k], ws.apply_permutation(sd, spec, perm)[k]) for k in sd)
