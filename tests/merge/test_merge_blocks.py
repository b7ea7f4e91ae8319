"""The elementwise merges work in cache-sized blocks: the result must not
depend on the block size (bit for bit) and the inputs must stay untouched."""

import importlib

import pytest
import torch

from weightspace.merge import average, interpolate, task_arithmetic
from weightspace.merge.task_vectors import dare, slerp, ties

# the modules (``weightspace.merge.average`` the attribute is the function)
avg = importlib.import_module("weightspace.merge.average")
sp = importlib.import_module("weightspace.merge.sparsify")
tv = importlib.import_module("weightspace.merge.task_vectors")


def _models(dtype):
    g = torch.Generator().manual_seed(3)
    base = {"w": torch.randn(9, 11, generator=g).to(dtype), "b": torch.randn(5, generator=g).to(dtype)}
    fts = [{k: v + 0.1 * torch.randn(v.shape, generator=g).to(dtype) for k, v in base.items()} for _ in range(2)]
    return base, fts


def _runs():
    return {
        "average": lambda base, fts: average([base, *fts], [1.0, 2.0, 0.5]),
        "interpolate": lambda base, fts: interpolate(fts[0], fts[1], 0.3),
        "task_arithmetic": lambda base, fts: task_arithmetic(base, fts, [1.0, 0.5]),
        "task_arithmetic_trim": lambda base, fts: task_arithmetic(base, fts, [1.0, 0.5], density=0.4,
                                                                  trim="per_tensor"),
        "slerp": lambda base, fts: slerp(fts[0], fts[1], 0.3),
        "ties": lambda base, fts: ties(base, fts, [1.0, 0.5], density=0.4, trim="per_tensor"),
        "dare_l1": lambda base, fts: dare(base, fts, [1.0, 0.5], density=0.6, rescale="l1", seed=1),
        "dare_ties": lambda base, fts: dare(base, fts, [1.0, 0.5], density=0.6, combine="ties", seed=1),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(_runs()))
def test_blocked_merges_do_not_depend_on_the_block_size_and_leave_inputs_alone(monkeypatch, dtype, name):
    base, fts = _models(dtype)
    copies = [{k: v.clone() for k, v in sd.items()} for sd in [base, *fts]]
    whole = _runs()[name](base, fts)
    for mod, attr in ((avg, "BLOCK"), (tv, "BLOCK"), (tv, "_CHUNK"), (sp, "BLOCK")):
        monkeypatch.setattr(mod, attr, 7)  # 99 entries in 15 blocks
    blocked = _runs()[name](base, fts)
    for k in whole:
        assert whole[k].dtype == dtype
        assert torch.equal(whole[k].view(-1).view(torch.int8), blocked[k].view(-1).view(torch.int8)), k
    assert all(torch.equal(a[k], b[k]) for a, b in zip(copies, [base, *fts]) for k in a)


def test_weighted_sum_equals_the_float64_sum():
    base, fts = _models(torch.float32)
    got = avg.weighted_sum([fts[0]["w"], fts[1]["w"]], [0.25, 0.75], torch.float32)
    want = (0.25 * fts[0]["w"].double() + 0.75 * fts[1]["w"].double()).float()
    assert torch.equal(got, want)


@pytest.mark.parametrize("density", [0.13, 0.5, 0.99])
def test_blocked_magnitude_mask_keeps_the_earliest_ties(monkeypatch, density):
    monkeypatch.setattr(sp, "BLOCK", 5)
    g = torch.Generator().manual_seed(0)
    tau = torch.randint(-2, 3, (7, 13), generator=g).float()  # magnitudes 0..2: ties span blocks
    flat = tau.reshape(-1).abs()
    k = int(density * flat.numel())
    want = torch.zeros(flat.numel(), dtype=torch.bool)
    want[torch.argsort(flat, descending=True, stable=True)[:k]] = True
    assert torch.equal(sp.magnitude_mask(tau, density).reshape(-1), want)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_inputs_are_found_by_the_output_check_even_at_weight_zero(bad):
    from weightspace.errors import NonFiniteWeightsError

    base, fts = _models(torch.float32)
    fts[1]["b"][2] = bad
    with pytest.raises(NonFiniteWeightsError, match=r"model 2.*'b'"):
        average([base, *fts], [1.0, 1.0, 0.0])  # 0 * Inf is NaN, 0 * NaN too
    with pytest.raises(NonFiniteWeightsError, match=r"finetuned 1.*'b'"):
        task_arithmetic(base, fts, [1.0, 0.0])


def test_an_overflowing_task_arithmetic_of_finite_models_is_no_input_error():
    base, fts = _models(torch.float32)
    out = task_arithmetic(base, fts, [1e40, 1e40])  # as before the output check: inf, not an error
    assert not torch.isfinite(out["w"]).all()


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "broadcast"])
def test_blocked_mask_product_equals_the_whole_product(monkeypatch, layout):
    monkeypatch.setattr(sp, "BLOCK", 5)
    g = torch.Generator().manual_seed(1)
    tau = torch.randn(7, 13, generator=g, dtype=torch.float64)
    tau[0, :3] = torch.tensor([-0.0, float("inf"), float("nan")])  # signed zero, inf * 0, nan
    mask = torch.rand(7, 13, generator=g) < 0.5
    if layout == "transposed":
        tau, mask = tau.t(), mask.t()
    elif layout == "broadcast":
        mask = mask[:1]
    want = tau * mask
    got = sp.mask_(tau.clone(), mask)
    assert torch.equal(got.contiguous().view(-1).view(torch.int64), want.contiguous().view(-1).view(torch.int64))
