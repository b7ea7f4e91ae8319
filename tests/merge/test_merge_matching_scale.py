"""Weight matching at scale: the bounded product cache, the per-sweep
objective and the stop on relative objective change; exact recovery of a
planted permutation plus small noise on a tiny GPT-2 with the defaults
(float32 products, bounded cache). The 124M run is in
``benchmarks/bench_merge_llm.py``."""

import pytest
import torch

import zoo
from tests.merge.helpers import analysis
from weightspace.merge import CACHE_BYTES, match_objective, weight_matching
from weightspace.symmetry import invert_permutation


def _pair(arch="mlp"):
    a = analysis(arch)
    return a.spec, zoo.create_model(arch, seed=1).state_dict(), zoo.create_model(arch, seed=2).state_dict()


def test_history_reports_the_objective_of_every_sweep():
    spec, sd_a, sd_b = _pair("cnn_small")
    res = weight_matching(sd_a, sd_b, spec, seed=0, rtol=0)
    hist = res.info["history"]
    assert len(hist) == res.sweeps and res.info["stop"] == "converged" and res.converged
    objs = [h["objective"] for h in hist]
    assert res.info["initial_objective"] == pytest.approx(match_objective(sd_a, sd_b, spec))
    # non-decreasing; sweeps before the last may be previous + gains (cost matrices in float32)
    tol = 1e-6 * abs(res.objective) if res.info["objective_per_sweep"] == "gains" else 1e-9
    assert all(b >= a - tol for a, b in zip([res.info["initial_objective"]] + objs, objs))
    assert objs[-1] == res.objective == pytest.approx(match_objective(sd_a, sd_b, spec, res.perm), rel=1e-12)


def test_objective_per_sweep_from_the_gains_matches_the_exact_one():
    """An MLP-like spec (neuron groups, one axis per tensor each): the sweeps'
    objectives are the previous plus the gains, equal to the exact ones."""
    spec, sd_a, sd_b = _pair("cnn_small")
    two = weight_matching(sd_a, sd_b, spec, seed=0, rtol=0, max_sweeps=2)
    one = weight_matching(sd_a, sd_b, spec, seed=0, rtol=0, max_sweeps=1)
    assert two.info["objective_per_sweep"] == "gains" and two.sweeps == 2
    est = two.info["history"][0]["objective"]
    assert est == pytest.approx(one.objective, rel=1e-6) and est != pytest.approx(one.info["initial_objective"])
    assert one.objective == match_objective(sd_a, sd_b, spec, one.perm)


def test_rtol_stops_on_small_relative_objective_change():
    spec, sd_a, sd_b = _pair("cnn_small")
    full = weight_matching(sd_a, sd_b, spec, seed=0, rtol=0)
    assert full.sweeps >= 3  # else this pair cannot show an early stop
    early = weight_matching(sd_a, sd_b, spec, seed=0, rtol=0.5)
    assert early.info["stop"] == "rtol" and not early.converged
    assert early.sweeps == 2  # the second sweep's gain is below half the objective
    hist = early.info["history"]
    assert hist[-1]["objective"] - hist[-2]["objective"] <= 0.5 * abs(hist[-1]["objective"])
    assert early.objective == pytest.approx(match_objective(sd_a, sd_b, spec, early.perm), rel=1e-12)


@pytest.mark.parametrize("cache", [False, 20_000, True])
def test_cache_bound_is_kept_and_does_not_change_the_result(cache):
    spec, sd_a, sd_b = _pair("mlp")
    ref = weight_matching(sd_a, sd_b, spec, seed=0, cache=False)
    res = weight_matching(sd_a, sd_b, spec, seed=0, cache=cache)
    budget = 0 if cache is False else CACHE_BYTES if cache is True else cache
    assert res.info["cache_peak_bytes"] <= budget
    if cache is not False:
        assert res.info["cache_peak_bytes"] > 0
    assert all(torch.equal(res.perm[k], ref.perm[k]) for k in ref.perm)
    assert res.objective == ref.objective


def test_tiny_gpt2_planted_permutation_with_noise_is_recovered_with_defaults():
    pytest.importorskip("transformers")
    from tests.hf_models import planted

    a, sd, perm, sd_p = planted("gpt2")
    sd = {k: v.float() for k, v in sd.items()}
    g = torch.Generator().manual_seed(3)
    noisy = {k: (v.float() + 1e-3 * v.float().std() * torch.randn(v.shape, generator=g)) if v.is_floating_point()
             else v for k, v in sd_p.items()}
    res = weight_matching(sd, noisy, a.spec, seed=0)
    want = invert_permutation(a.spec, perm)
    wrong = [g for g in want if not torch.equal(res.perm[g], want[g])]
    assert not wrong, f"groups not recovered: {wrong[:5]}"
    assert res.info["stop"] in ("converged", "rtol")
    assert [h["objective"] for h in res.info["history"]][-1] == res.objective


def test_cache_evicts_what_is_cheapest_to_recompute_per_byte():
    from weightspace.merge.matching import _Cache

    c = _Cache(200)
    c.put("embedding", "E", 100, worth=50.0)   # a product over many rows: dear to recompute
    c.put("mlp1", "M1", 100, worth=2.0)
    c.put("mlp2", "M2", 100, worth=2.0)        # full: the cheaper mlp1 goes, not the older embedding
    assert c.get("embedding") == "E" and c.get("mlp1") is None and c.get("mlp2") == "M2"
    c.put("cheap", "C", 100, worth=1.0)        # worth less than all it would evict: not kept
    assert c.get("cheap") is None and c.get("mlp2") == "M2"
    c.put("huge", "H", 300, worth=99.0)        # over the budget: never kept
    assert c.get("huge") is None and c.bytes == 200 and c.peak == 200
