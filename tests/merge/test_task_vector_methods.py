"""TIES, DARE, model breadcrumbs, SLERP and task arithmetic with density:
each against an independent numpy implementation of its paper's equation,
each mergekit-convention option on a hand-computed example, seeds, inputs
left alone, and bad options as one-line ConfigErrors naming the option."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml

from weightspace.errors import ConfigError
from weightspace.io import save_state_dict
from weightspace.merge import MergeConfigError, MergeError, breadcrumbs, dare, slerp, task_arithmetic, ties
from weightspace.merge.config import load_config, run_config
from weightspace.merge.sparsify import breadcrumbs_mask, magnitude_mask, rescale_kept, trim_masks
from weightspace.merge.task_vectors import layer_index, slerp_tensor

SHAPES = {"layers.0.weight": (5, 4), "layers.0.bias": (5,), "layers.1.weight": (3, 5)}


def _models(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = {k: torch.randn(s, generator=g, dtype=torch.float64) for k, s in SHAPES.items()}
    base["step"] = torch.tensor(7)
    fts = []
    for _ in range(n):
        ft = {k: v + torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in base.items() if k != "step"}
        ft["step"] = torch.tensor(7)
        fts.append(ft)
    return base, fts


def _np(sd):
    return {k: v.numpy().astype(np.float64) for k, v in sd.items() if v.is_floating_point()}


def _close(out, want):
    for k, w in want.items():
        np.testing.assert_allclose(out[k].numpy(), w, atol=1e-10, err_msg=k)


# ----------------------------------------------- numpy reference (the papers)
def _ref_ties(base, fts, density, lam, weights=None, trim="global", sign="sum"):
    """Yadav et al. 2023, Alg. 1: trim top-k% |tau|, elect sgn(sum tau^), disjoint mean."""
    b, taus = _np(base), [{k: v - _np(base)[k] for k, v in _np(ft).items()} for ft in fts]
    keys = list(b)
    w = np.ones(len(fts)) if weights is None else np.asarray(weights, float)
    trimmed = []
    for tau in taus:
        if trim == "global":
            flat = np.concatenate([np.abs(tau[k]).ravel() for k in keys])
            k = int(density * flat.size)
            thr = np.sort(flat)[::-1][k - 1] if k > 0 else np.inf
            trimmed.append({key: np.where(np.abs(tau[key]) >= thr, tau[key], 0.0) for key in keys})
        else:
            t = {}
            for key in keys:
                flat = np.abs(tau[key]).ravel()
                keep = np.zeros(flat.size, bool)
                keep[np.argsort(-flat, kind="stable")[: int(density * flat.size)]] = True
                t[key] = np.where(keep.reshape(tau[key].shape), tau[key], 0.0)
            trimmed.append(t)
    out = {}
    for key in keys:
        st = np.stack([t[key] for t in trimmed])
        wt = w.reshape(-1, *[1] * (st.ndim - 1))
        s = st.sum(0) if sign == "sum" else (wt * st).sum(0)
        gamma = np.where(s >= 0, 1.0, -1.0)
        agree = np.sign(st) == gamma
        num, den = (wt * st * agree).sum(0), (wt * agree).sum(0)
        out[key] = b[key] + lam * np.where(den == 0, 0.0, num / np.where(den == 0, 1, den))
    return out


def test_ties_equals_the_paper_equation():
    base, fts = _models()
    _close(ties(base, fts, density=0.3, lam=0.7), _ref_ties(base, fts, 0.3, 0.7))


def test_ties_mergekit_options_equal_the_reference():
    base, fts = _models(seed=1)
    out = ties(base, fts, [1.0, 2.0, 0.5], density=0.4, trim="per_tensor", sign="weighted_sum")
    _close(out, _ref_ties(base, fts, 0.4, 1.0, [1.0, 2.0, 0.5], "per_tensor", "weighted_sum"))


def test_per_tensor_trim_keeps_exactly_k_entries_ties_broken_by_order():
    assert magnitude_mask(torch.tensor([3.0, -1.0, 2.0, 2.0]), 0.5).tolist() == [True, False, True, False]
    assert magnitude_mask(torch.ones(4), 0.5).tolist() == [True, True, False, False]
    assert int(magnitude_mask(torch.randn(7, 9), 0.3).sum()) == int(0.3 * 63)
    # the paper's global trim keeps every entry at the threshold
    assert trim_masks({"a": torch.ones(4)}, 0.5, "global")["a"].tolist() == [True] * 4
    m = trim_masks({"a": torch.tensor([4.0, 0.1]), "b": torch.tensor([-3.0, 0.2])}, 0.5, "global")
    assert m["a"].tolist() == [True, False] and m["b"].tolist() == [True, False]


def test_ties_sign_sum_versus_weighted_sum_by_hand():
    base = {"w": torch.zeros(1)}
    fts = [{"w": torch.tensor([1.0])}, {"w": torch.tensor([-0.6])}]
    # sum: 1 - 0.6 > 0 -> +, only model 0 agrees: disjoint mean 1.0
    assert ties(base, fts, [1.0, 3.0], density=1.0)["w"].item() == pytest.approx(1.0)
    # weighted: 1 - 1.8 < 0 -> -, only model 1: 3 * -0.6 / 3
    assert ties(base, fts, [1.0, 3.0], density=1.0, sign="weighted_sum")["w"].item() == pytest.approx(-0.6)
    # normalize=False sums the agreeing weighted entries
    assert ties(base, fts, [1.0, 3.0], density=1.0, sign="weighted_sum", normalize=False)["w"].item() == \
        pytest.approx(-1.8)


# --------------------------------------------------------------------- DARE
def _contribution(base, fts, i, **kw):
    """Model i's sparsified task vector, the other task vectors set to zero."""
    only = [ft if j == i else base for j, ft in enumerate(fts)]
    out = dare(base, only, **kw)
    return {k: out[k].numpy() - v for k, v in _np(base).items()}


def test_dare_equals_the_paper_equation():
    """Yu et al. 2024: tau~ = m * tau / (1 - p), m ~ Bernoulli(1 - p); theta = base + lam sum_i w_i tau~_i."""
    base, fts = _models()
    d, w, lam = [0.3, 0.5, 0.8], [1.0, 2.0, 0.5], 0.9
    out = dare(base, fts, w, density=d, lam=lam, seed=3)
    b, want = _np(base), {k: v.copy() for k, v in _np(base).items()}
    for i, ft in enumerate(fts):
        got = _contribution(base, fts, i, density=d, lam=1.0, seed=3)
        for k in b:
            tau = _np(ft)[k] - b[k]
            kept = got[k] != 0
            np.testing.assert_allclose(got[k][kept], tau[kept] / d[i], atol=1e-10)  # rescaled by 1/(1-p)
            want[k] += lam * w[i] * np.where(kept, tau / d[i], 0.0)
    _close(out, want)


def test_dare_keeps_about_density_of_the_entries():
    base = {"w": torch.zeros(20000, dtype=torch.float64)}
    ft = {"w": torch.ones(20000, dtype=torch.float64)}
    kept = (dare(base, [ft], density=0.3)["w"] != 0).double().mean().item()
    assert abs(kept - 0.3) < 0.02


def test_dare_l1_rescale_keeps_each_tensors_l1_norm():
    tau, mask = torch.tensor([1.0, -2.0, 3.0, 4.0]), torch.tensor([True, False, True, False])
    assert rescale_kept(tau, mask, 0.5, "l1").tolist() == [2.5, 0.0, 7.5, 0.0]  # 10 / 4
    assert rescale_kept(tau, mask, 0.5, "inverse_density").tolist() == [2.0, 0.0, 6.0, 0.0]
    base, fts = _models(n=1)
    out = dare(base, fts, density=0.5, rescale="l1", seed=1)
    for k in SHAPES:
        tau = fts[0][k] - base[k]
        assert (out[k] - base[k]).abs().sum().item() == pytest.approx(tau.abs().sum().item())


def test_dare_ties_equals_ties_on_the_dropped_task_vectors():
    base, fts = _models()
    out = dare(base, fts, density=0.5, combine="ties", normalize=True, seed=5)  # the disjoint mean
    b = _np(base)
    sparse = [{k: b[k] + v for k, v in _contribution(base, fts, i, density=0.5, seed=5).items()}
              for i in range(len(fts))]
    want = _ref_ties(base, [{k: torch.from_numpy(v) for k, v in s.items()} for s in sparse], 1.0, 1.0)
    _close(out, want)


def test_dare_is_deterministic_given_the_seed_in_any_tensor_order():
    base, fts = _models()
    a, b = dare(base, fts, density=0.5, seed=11), dare(base, fts, density=0.5, seed=11)
    assert all(torch.equal(a[k], b[k]) for k in a)
    rev = lambda sd: dict(reversed(list(sd.items())))  # noqa: E731
    c = dare(rev(base), [rev(ft) for ft in fts], density=0.5, seed=11)
    assert all(torch.equal(a[k], c[k]) for k in a)
    d = dare(base, fts, density=0.5, seed=12)
    assert not all(torch.equal(a[k], d[k]) for k in SHAPES)


# -------------------------------------------------------------- breadcrumbs
def test_breadcrumbs_equals_the_paper_equation():
    """Davari & Belilovsky 2024: per layer, mask the top beta and the bottom |tau|, keep density."""
    base, fts = _models()
    w, d, beta, lam = [1.0, 0.5, 2.0], 0.5, 0.1, 0.8
    out = breadcrumbs(base, fts, w, density=d, beta=beta, lam=lam)
    b = _np(base)
    want = {k: v.copy() for k, v in b.items()}
    for wi, ft in zip(w, fts):
        for k in b:
            tau = _np(ft)[k] - b[k]
            flat = np.abs(tau).ravel()
            n = flat.size
            order = np.argsort(-flat, kind="stable")
            keep = np.zeros(n, bool)
            keep[order[int(beta * n): int(beta * n) + int(d * n)]] = True
            want[k] += lam * wi * np.where(keep.reshape(tau.shape), tau, 0.0)
    _close(out, want)


def test_breadcrumbs_mask_by_hand():
    tau = torch.tensor([5.0, -1.0, 3.0, 0.5, 2.0])
    # drop the top 1 (5) and the bottom 2 (-1, 0.5), keep 2
    assert breadcrumbs_mask(tau, 0.4, 0.2).tolist() == [False, False, True, False, True]
    # density + beta > 1: the k smallest are kept
    assert breadcrumbs_mask(tau, 0.8, 0.4).tolist() == [False, True, True, True, True]


# -------------------------------------------------------------------- SLERP
def _ref_slerp(t, a, b):
    a, b = a.ravel(), b.ravel()
    cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    om = math.acos(cos)
    return (math.sin((1 - t) * om) * a + math.sin(t * om) * b) / math.sin(om)


def test_slerp_equals_the_formula_and_its_endpoints_are_the_models():
    _, (a, b) = _models(n=2)
    out = slerp(a, b, 0.3)
    for k in SHAPES:
        np.testing.assert_allclose(out[k].numpy().ravel(), _ref_slerp(0.3, a[k].numpy(), b[k].numpy()), atol=1e-10)
    for t, want in ((0.0, a), (1.0, b)):
        o = slerp(a, b, t)
        for k in SHAPES:
            torch.testing.assert_close(o[k], want[k], atol=1e-12, rtol=0)
    assert torch.equal(out["step"], a["step"])


def test_slerp_falls_back_to_lerp_when_nearly_parallel():
    a = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    b = 2 * a + torch.tensor([1e-4, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(slerp_tensor(0.25, a, b), 0.75 * a + 0.25 * b, atol=0, rtol=0)
    torch.testing.assert_close(slerp_tensor(0.25, a, -b), 0.75 * a - 0.25 * b, atol=0, rtol=0)


def test_slerp_treats_a_near_zero_tensor_as_orthogonal():
    a = torch.full((3,), 1e-12, dtype=torch.float64)
    b = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    t = 0.4
    want = math.cos(math.pi * t / 2) * a + math.sin(math.pi * t / 2) * b
    torch.testing.assert_close(slerp_tensor(t, a, b), want, atol=1e-12, rtol=0)


def test_slerp_schedule_interpolates_anchors_over_the_layer_index():
    g = torch.Generator().manual_seed(0)
    names = [f"model.layers.{i}.w" for i in range(5)] + ["lm_head.weight"]
    a = {k: torch.randn(6, generator=g, dtype=torch.float64) for k in names}
    b = {k: torch.randn(6, generator=g, dtype=torch.float64) for k in names}
    assert layer_index("model.layers.3.mlp.weight") == 3 and layer_index("lm_head.weight") is None
    out = slerp(a, b, [0.0, 1.0, 0.0])
    for i, t in enumerate([0.0, 0.5, 1.0, 0.5, 0.0]):  # anchors at layers 0, 2, 4
        k = f"model.layers.{i}.w"
        np.testing.assert_allclose(out[k].numpy(), _ref_slerp(t, a[k].numpy(), b[k].numpy()), atol=1e-10)
    k = "lm_head.weight"  # no layer index: the anchors' mean, 1/3
    np.testing.assert_allclose(out[k].numpy(), _ref_slerp(1 / 3, a[k].numpy(), b[k].numpy()), atol=1e-10)
    out = slerp(a, b, [0.0, 1.0], t_default=0.0)
    torch.testing.assert_close(out["lm_head.weight"], a["lm_head.weight"], atol=1e-12, rtol=0)


# ---------------------------------------------------------- task arithmetic
def test_task_arithmetic_with_density_equals_the_reference():
    base, fts = _models()
    out = task_arithmetic(base, fts, [0.5, 1.0, 2.0], density=[0.3, 1.0, 0.6])
    b = _np(base)
    want = {k: v.copy() for k, v in b.items()}
    for s, d, ft in zip([0.5, 1.0, 2.0], [0.3, 1.0, 0.6], fts):
        tau = {k: _np(ft)[k] - b[k] for k in b}
        flat = np.concatenate([np.abs(v).ravel() for v in tau.values()])
        thr = np.sort(flat)[::-1][int(d * flat.size) - 1]
        for k in b:
            want[k] += s * np.where(np.abs(tau[k]) >= thr, tau[k], 0.0)
    _close(out, want)
    plain = task_arithmetic(base, fts, 0.5)  # density 1: the old behaviour
    _close(plain, {k: b[k] + 0.5 * sum(_np(ft)[k] - b[k] for ft in fts) for k in b})


# -------------------------------------------------------- shared behaviour
CALLS = {
    "ties": lambda base, fts: ties(base, fts, density=0.5),
    "dare": lambda base, fts: dare(base, fts, density=0.5),
    "breadcrumbs": lambda base, fts: breadcrumbs(base, fts, density=0.5),
    "task_arithmetic": lambda base, fts: task_arithmetic(base, fts, density=0.5),
    "slerp": lambda base, fts: slerp(fts[0], fts[1], [0.2, 0.8]),
}


@pytest.mark.parametrize("method", CALLS)
def test_inputs_are_not_mutated_and_dtypes_kept(method):
    base, fts = _models()
    base = {k: v.float() if v.is_floating_point() else v for k, v in base.items()}
    fts = [{k: v.float() if v.is_floating_point() else v for k, v in ft.items()} for ft in fts]
    copies = [{k: v.clone() for k, v in sd.items()} for sd in (base, *fts)]
    out = CALLS[method](base, fts)
    for sd, c in zip((base, *fts), copies):
        assert all(torch.equal(sd[k], c[k]) for k in c)
    assert out["layers.0.weight"].dtype == torch.float32 and torch.equal(out["step"], torch.tensor(7))


@pytest.mark.parametrize("method", CALLS)
def test_differing_integer_buffers_are_a_merge_error(method):
    base, fts = _models()
    fts[1]["layers.0.weight_idx"] = torch.tensor([1, 2])
    for sd in (base, fts[0], fts[2]):
        sd["layers.0.weight_idx"] = torch.tensor([1, 3])
    with pytest.raises(MergeError, match="layers.0.weight_idx"):
        CALLS[method](base, fts)


@pytest.mark.parametrize("call, field", [
    (lambda b, f: ties(b, f, trim="per-tensor"), "trim"),
    (lambda b, f: ties(b, f, sign="count"), "sign"),
    (lambda b, f: ties(b, f, density=1.5), "density"),
    (lambda b, f: ties(b, f, density=[0.5, 0.5]), "density"),
    (lambda b, f: ties(b, f, [1.0]), "weights"),
    (lambda b, f: dare(b, f, rescale="l2"), "rescale"),
    (lambda b, f: dare(b, f, combine="mean"), "combine"),
    (lambda b, f: breadcrumbs(b, f, beta=-0.1), "beta"),
    (lambda b, f: task_arithmetic(b, f, density=2.0), "density"),
    (lambda b, f: task_arithmetic(b, f, density=0.5, trim="local"), "trim"),
    (lambda b, f: slerp(f[0], f[1], [0.0, 1.5]), "t"),
    (lambda b, f: slerp(f[0], f[1], []), "t"),
])
def test_bad_options_are_one_line_config_errors_naming_the_option(call, field):
    base, fts = _models()
    with pytest.raises(ConfigError) as exc:
        call(base, fts)
    assert exc.value.field == field and f"[{field}]" in str(exc.value) and "\n" not in str(exc.value)


# --------------------------------------------------------------- YAML errors
@pytest.fixture
def yaml_setup(tmp_path):
    from weightspace.arch import create_model

    paths = []
    for seed in range(3):
        p = tmp_path / f"m{seed}.safetensors"
        save_state_dict(create_model("mlp", seed=seed, hidden=[6]).state_dict(), p)
        paths.append(p.name)
    return tmp_path


def _cfg(root, **over):
    cfg = {"arch": "mlp", "arch_kwargs": {"hidden": [6]}, "models": ["m1.safetensors", "m2.safetensors"],
           "base": {"path": "m0.safetensors"}, "method": "ties"}
    cfg.update(over)
    p = root / "merge.yaml"
    p.write_text(yaml.safe_dump({k: v for k, v in cfg.items() if v is not None}))
    return p


@pytest.mark.parametrize("over, field, message", [
    ({"options": {"trim": "per_tensr"}}, "options.trim", "did you mean 'per_tensor'"),
    ({"options": {"density": 1.5}}, "options.density", r"\[0, 1\]"),
    ({"options": {"density": [0.5, 2.0]}}, "options.density[1]", r"\[0, 1\]"),
    ({"options": {"density": [0.5]}}, "options.density", "1 entries for 2 models"),
    ({"options": {"densty": 0.5}}, "options.densty", "did you mean 'density'"),
    ({"method": "dare", "options": {"rescale": "L1"}}, "options.rescale", "not one of"),
    ({"method": "breadcrumbs", "base": None}, "base", "needs 'base"),
    ({"method": "slerp"}, "base", "only used by method task_arithmetic"),
    ({"method": "slerp", "base": None, "models": ["m0.safetensors"]}, "models", "exactly 2 models"),
    ({"method": "slerp", "base": None, "options": {"t": [0.0, 1.2]}}, "options.t[1]", r"\[0, 1\]"),
    ({"method": "ties", "repair": "repair"}, "repair", "not defined for ties"),
])
def test_bad_task_vector_configs_name_the_key(yaml_setup, over, field, message):
    path = _cfg(yaml_setup, **over)
    with pytest.raises(MergeConfigError, match=message) as exc:
        load_config(path)
    assert exc.value.field == field and str(exc.value.path) == str(path)


def test_yaml_ties_with_mergekit_options_equals_the_direct_call(yaml_setup):
    from weightspace.io import load_state_dict

    path = _cfg(yaml_setup, models=[{"path": "m1.safetensors", "weight": 0.5}, {"path": "m2.safetensors"}],
                options={"density": [0.5, 0.3], "trim": "per_tensor", "sign": "weighted_sum", "lam": 0.8})
    out = run_config(load_config(path))
    sd = [load_state_dict(yaml_setup / f"m{i}.safetensors") for i in range(3)]
    want = ties(sd[0], sd[1:], [0.5, 1.0], density=[0.5, 0.3], trim="per_tensor", sign="weighted_sum", lam=0.8)
    assert all(torch.allclose(out.state_dict[k], want[k], atol=1e-7) for k in want)
    assert out.summary["method"] == "ties"


@pytest.mark.parametrize("density", [0.0, 0.13, 0.5, 0.99, 1.0])
def test_magnitude_mask_equals_a_stable_descending_sort_with_many_ties(density):
    """Exactly ``int(density * n)`` entries; among equal magnitudes the earlier index wins."""
    g = torch.Generator().manual_seed(0)
    tau = torch.randint(-4, 5, (7, 13), generator=g).double()  # magnitudes 0..4: ties everywhere
    flat = tau.reshape(-1).abs()
    k = int(density * flat.numel())
    want = torch.zeros(flat.numel(), dtype=torch.bool)
    want[torch.argsort(flat, descending=True, stable=True)[:k]] = True
    got = magnitude_mask(tau, density)
    assert got.shape == tau.shape and int(got.sum()) == k
    assert torch.equal(got.reshape(-1), want)


@pytest.mark.parametrize("combine", ["linear", "ties"])
def test_chunked_combine_is_bit_identical_and_leaves_inputs_alone(monkeypatch, combine):
    import weightspace.merge.task_vectors as tv

    g = torch.Generator().manual_seed(1)
    base = {"w": torch.randn(9, 11, generator=g, dtype=torch.float64)}
    fts = [{"w": base["w"] + torch.randn(9, 11, generator=g, dtype=torch.float64)} for _ in range(3)]
    copies = [{k: v.clone() for k, v in sd.items()} for sd in [base, *fts]]
    whole = dare(base, fts, [1.0, 0.5, 2.0], density=0.6, combine=combine, sign="weighted_sum", normalize=True, seed=2)
    monkeypatch.setattr(tv, "_CHUNK", 7)  # 99 entries in 15 chunks
    chunked = dare(base, fts, [1.0, 0.5, 2.0], density=0.6, combine=combine, sign="weighted_sum", normalize=True, seed=2)
    assert torch.equal(whole["w"], chunked["w"])
    assert all(torch.equal(a[k], b[k]) for a, b in zip(copies, [base, *fts]) for k in a)


def test_slerp_over_several_dot_blocks_matches_whole_float64_vectors():
    import weightspace.merge.task_vectors as tv

    g = torch.Generator().manual_seed(4)
    n = 2 * tv.DOT_BLOCK + 123  # three partial sums, the last one short
    a = torch.randn(n, generator=g, dtype=torch.float64)
    b = 0.6 * a + torch.randn(n, generator=g, dtype=torch.float64)

    def whole(a, b):
        om = math.acos(float(a @ b / (a.norm() * b.norm())))
        return (math.sin(0.7 * om) * a + math.sin(0.3 * om) * b) / math.sin(om)

    # float64 rounding of the sums only: relative to the entries' scale (~1), not to entries near 0
    torch.testing.assert_close(slerp_tensor(0.3, a, b), whole(a, b), atol=1e-14, rtol=1e-12)
    a32, b32 = a.float(), b.float()
    got32 = slerp_tensor(0.3, a32, b32, dtype=torch.float32)
    torch.testing.assert_close(got32, whole(a32.double(), b32.double()).float(), atol=0, rtol=2**-23)  # <= 1 ulp
