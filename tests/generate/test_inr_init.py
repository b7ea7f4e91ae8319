"""Reptile INR initialisation: signal loading, the batched functional Adam
fit against torch.optim.Adam, PSNR curves and Reptile's update."""

import pytest
import torch

from weightspace.generate import ArchSpec, fit_curve, load_signals, reptile
from weightspace.generate.inr_init import fit_signals, psnr

SIREN = ArchSpec.of("siren", hidden=[8, 8])


@pytest.fixture(scope="module")
def sig():
    return load_signals("sines", range(3), size=8)


def test_load_signals_shapes_and_errors(sig):
    assert sig.coords.shape == (64, 2) and sig.values.shape == (3, 64, 1) and sig.shape == (8, 8)
    assert float(sig.values.min()) >= 0 and float(sig.values.max()) <= 1
    d = load_signals("digits", [0, 1], size=8)
    assert d.values.shape == (2, 64, 1) and not torch.equal(d.values[0], d.values[1])
    c = load_signals("sample_crops", [0, 1], size=8)
    assert c.values.shape == (2, 64, 1)
    with pytest.raises(ValueError, match="unknown signal family"):
        load_signals("cats", [0])
    with pytest.raises(ValueError, match="no signal indices"):
        load_signals("digits", [])


def test_batched_fit_matches_torch_adam(sig):
    init = SIREN.module(seed=0).state_dict()
    params, mses = fit_signals(SIREN, init, sig.coords, sig.values[1:2], 5, 1e-3, [0, 5])
    m = SIREN.module(seed=0)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    for _ in range(5):
        loss = ((m(sig.coords) - sig.values[1]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for k, v in m.state_dict().items():
        assert torch.allclose(params[k][0], v, atol=1e-5), k
    with torch.no_grad():
        assert torch.allclose(mses[5][0], ((m(sig.coords) - sig.values[1]) ** 2).mean(), atol=1e-6)


def test_fit_curve_starts_at_the_init_and_improves(sig):
    init = SIREN.module(seed=0).state_dict()
    curve = fit_curve(init, sig, ks=(0, 50), lr=1e-2, arch=SIREN)
    m = SIREN.module(seed=0)
    with torch.no_grad():
        p0 = psnr(((m(sig.coords)[None] - sig.values) ** 2).mean((1, 2)))
    assert torch.allclose(curve[0], p0, atol=1e-4)
    assert bool((curve[50] > curve[0]).all())


def test_reptile_update(sig):
    init = SIREN.module(seed=0).state_dict()
    same, hist = reptile(sig, arch=SIREN, outer_steps=2, inner_steps=2, meta_batch=2, outer_lr=0.0, seed=0)
    assert all(torch.equal(same[k], init[k]) for k in init) and len(hist.inner_psnr) == 2
    moved, _ = reptile(sig, arch=SIREN, outer_steps=2, inner_steps=2, meta_batch=2, outer_lr=1.0, seed=0)
    assert any(not torch.equal(moved[k], init[k]) for k in init)
    m = SIREN.module()
    m.load_state_dict(moved)
    with pytest.raises(ValueError, match="coordinates"):
        reptile(sig, arch=ArchSpec.of("siren", in_features=3), outer_steps=1)
