"""Averaging family, multi-model merging, REPAIR / BatchNorm reset, barriers."""

import pytest
import torch

import zoo
from tests.merge.helpers import analysis, digits, init_sd as _sd, perturbed
from weightspace.merge import (
    MergeError,
    align_to_reference,
    average,
    barrier,
    diagonal_fisher,
    evaluate,
    fisher_average,
    interpolate,
    linear_path,
    merge_many,
    repair,
    reset_bn_stats,
    task_arithmetic,
)
from weightspace.merge.repair import repair_plan
from weightspace.symmetry import apply_permutation, random_permutation


def test_weighted_average_and_interpolation():
    a, b = _sd("mlp", 1), _sd("mlp", 2)
    w = average([a, b], [3.0, 1.0])
    k = "layers.0.weight"
    assert torch.allclose(w[k], 0.75 * a[k] + 0.25 * b[k], atol=1e-7)
    assert torch.equal(interpolate(a, b, 0.0)[k], a[k]) and torch.equal(interpolate(a, b, 1.0)[k], b[k])
    with pytest.raises(MergeError, match="weights"):
        average([a, b], [1.0, -1.0])


def test_task_arithmetic():
    base, ft1, ft2 = _sd("mlp", 1), _sd("mlp", 2), _sd("mlp", 3)
    k = "layers.2.weight"
    out = task_arithmetic(base, [ft1, ft2], [1.0, 0.0])
    assert torch.allclose(out[k], ft1[k], atol=1e-6)
    out = task_arithmetic(base, [ft1, ft2], 0.5)
    assert torch.allclose(out[k], base[k] + 0.5 * (ft1[k] - base[k]) + 0.5 * (ft2[k] - base[k]), atol=1e-6)


def test_fisher_average_weights_by_information():
    a, b = _sd("mlp", 1), _sd("mlp", 2)
    ones = {k: torch.ones_like(v) for k, v in a.items()}
    assert all(torch.allclose(fisher_average([a, b], [ones, ones])[k], average([a, b])[k], atol=1e-6) for k in a)
    big = {k: 1e6 * torch.ones_like(v) for k, v in a.items()}
    out = fisher_average([a, b], [big, ones])
    assert torch.allclose(out["layers.0.weight"], a["layers.0.weight"], atol=1e-4)


def test_diagonal_fisher_shapes_and_sign():
    m = zoo.create_model("mlp", seed=0)
    xtr, ytr, _, _ = digits()
    f = diagonal_fisher(m, m.state_dict(), (xtr[:64], ytr[:64]), batch_size=32, seed=0)
    assert set(f) == {k for k, _ in m.named_parameters()}
    assert all(v.shape == m.state_dict()[k].shape and (v >= 0).all() for k, v in f.items())
    assert float(f["layers.4.bias"].sum()) > 0
    f_emp = diagonal_fisher(m, m.state_dict(), (xtr[:64], ytr[:64]), labels="given")
    assert not torch.allclose(f_emp["layers.4.bias"], f["layers.4.bias"])


@pytest.mark.parametrize("how", ["reference", "merge_many"])
def test_multi_model_merge_of_permuted_copies_is_the_model(how):
    a = analysis("resnet20")
    sd = perturbed(a.module.state_dict(), 1)
    sds = [sd] + [apply_permutation(sd, a.spec, random_permutation(a.spec, seed=s)) for s in (2, 3)]
    if how == "reference":
        res = align_to_reference(sds, a.spec, reference=1)
        ref = sds[1]
    else:
        res = merge_many(sds, a.spec, seed=0)
        ref = res.aligned[0]
        assert res.converged
    assert all(torch.allclose(res.state_dict[k].double(), ref[k].double(), atol=1e-6) for k in ref)
    assert all(torch.equal(al[k], ref[k]) for al in res.aligned for k in ref)


def test_reset_bn_stats_matches_the_data_statistics():
    m = zoo.create_model("resnet20", seed=0, in_channels=1, image_size=8)
    x = digits()[0][:300]
    sd = reset_bn_stats(m, m.state_dict(), x, batch_size=300)
    with torch.no_grad():
        h = m.conv1(x)
    assert torch.allclose(sd["bn1.running_mean"], h.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(sd["bn1.running_var"], h.var((0, 2, 3)), rtol=1e-3)
    with pytest.raises(MergeError, match="no BatchNorm"):
        reset_bn_stats(zoo.create_model("mlp"), _sd("mlp", 0), x)


def test_repair_matches_interpolated_statistics():
    """After REPAIR every corrected block's mean/std equal the endpoints' average."""
    a = analysis("mlp")
    x = digits()[0][:400]
    sd_a, sd_b = _sd("mlp", 1), _sd("mlp", 2)
    merged = average([sd_a, sd_b])
    out = repair(a.module, merged, [sd_a, sd_b], x, spec=a.spec)
    plan = repair_plan(a.module, a.spec)
    assert [p for _, p, _ in plan.blocks] == ["layers.0", "layers.2"]

    def stats(sd, layer):
        m = zoo.create_model("mlp")
        m.load_state_dict(sd)
        h = x.flatten(1)
        for mod in m.layers:
            h = mod(h)
            if mod is getattr(m.layers, layer.split(".")[1]):
                return h.mean(0), h.std(0, unbiased=False)

    for layer in ("layers.0", "layers.2"):
        mu = 0.5 * (stats(sd_a, layer)[0] + stats(sd_b, layer)[0])
        sd = 0.5 * (stats(sd_a, layer)[1] + stats(sd_b, layer)[1])
        mu_r, sd_r = stats(out, layer)
        assert torch.allclose(mu_r, mu, atol=1e-4) and torch.allclose(sd_r, sd, atol=1e-4)
        assert not torch.allclose(stats(merged, layer)[1], sd, atol=1e-2)  # merging did collapse them


def test_barrier_formula():
    lam = [0.0, 0.25, 0.5, 0.75, 1.0]
    assert barrier(lam, [1.0, 2.0, 3.0, 2.0, 1.0]) == pytest.approx(2.0)
    assert barrier(lam, [1.0, 1.5, 2.0, 2.5, 3.0]) == pytest.approx(0.0)  # the line itself
    assert barrier(lam, [0.0, 0.0, 0.5, 1.0, 2.0]) == pytest.approx(0.0)  # below the line: max is 0 at the ends
    with pytest.raises(MergeError):
        barrier([0.1, 1.0], [1.0, 1.0])


def test_linear_path_of_a_model_with_itself_is_flat():
    m = zoo.create_model("cnn_small", seed=0)
    _, _, xte, yte = digits()
    p = linear_path(m, m.state_dict(), m.state_dict(), (xte, yte))
    assert len(p.lambdas) == 25 and p.lambdas[0] == 0.0 and p.lambdas[-1] == 1.0
    assert p.loss_barrier == pytest.approx(0.0, abs=1e-6) and p.error_barrier == pytest.approx(0.0, abs=1e-9)
    loss, acc = evaluate(m, m.state_dict(), (xte, yte))
    assert p.loss[12] == pytest.approx(loss, rel=1e-6) and p.accuracy[0] == acc
    d = p.to_dict()
    assert set(d) >= {"lambdas", "loss", "accuracy", "loss_barrier", "error_barrier"}
