"""Trainer: data handling, metrics, checkpoints, augmentation; and (slow)
learning on a real digits zoo."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import weightspace as ws
import zoo
from weightspace.nn import GMN, NFN, FlatMLP, StatNN
from weightspace.nn.train import (
    TrainConfig,
    classification_metrics,
    dataset_from_zoo,
    evaluate_metanetwork,
    fit,
    load_checkpoint,
    permute_sample,
    predict_metanetwork,
    regression_metrics,
    save_checkpoint,
    split_dataset,
)


def _toy_data(n: int = 12, arch: str = "cnn_small"):
    """Networks whose target is a known function of the weights (the norm
    of the last layer), so a short fit has something to find."""
    t = ws.graph_template(arch)
    out = []
    for i in range(n):
        sd = zoo.create_model(arch, seed=i).state_dict()
        scale = 0.5 + i / n
        sd = {k: v * scale if v.is_floating_point() else v for k, v in sd.items()}
        out.append((t.graph(sd), float(scale)))
    return out


def test_split_is_seeded_and_complete():
    items = list(range(20))
    a = split_dataset(items, (0.5, 0.25, 0.25), seed=3)
    b = split_dataset(items, (0.5, 0.25, 0.25), seed=3)
    c = split_dataset(items, (0.5, 0.25, 0.25), seed=4)
    assert a == b and a != c
    assert [len(p) for p in a] == [10, 5, 5]
    assert sorted(sum(a, [])) == items
    with pytest.raises(ValueError):
        split_dataset(items, (0.5, 0.6))


def test_regression_metrics_match_scipy():
    from scipy.stats import kendalltau

    rng = np.random.default_rng(0)
    y = rng.normal(size=30)
    p = y + 0.3 * rng.normal(size=30)
    m = regression_metrics(p, y)
    assert m["kendall_tau"] == pytest.approx(kendalltau(p, y).statistic)
    assert m["r2"] == pytest.approx(1 - np.sum((p - y) ** 2) / np.sum((y - y.mean()) ** 2))
    assert regression_metrics(y, y)["r2"] == pytest.approx(1.0)
    c = classification_metrics(np.eye(3)[[0, 1, 2, 1]], np.array([0, 1, 2, 0]))
    assert c["accuracy"] == pytest.approx(0.75)


def test_fit_reduces_loss_restores_best_and_is_reproducible():
    data = _toy_data(12)
    train, val = data[:9], data[9:]
    cfg = TrainConfig(epochs=6, batch_size=4, lr=3e-3, patience=0, seed=0)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        r = fit(GMN(out_dim=1, hidden=8, num_layers=1), train, val, cfg)
        runs.append(r)
    h = runs[0].history
    assert len(h) == 6 and h[-1]["train_loss"] < h[0]["train_loss"]
    assert runs[0].best_epoch == int(np.argmin([row["val_loss"] for row in h]))
    p0, p1 = predict_metanetwork(runs[0].model, val, runs[0]), predict_metanetwork(runs[1].model, val, runs[1])
    assert torch.allclose(p0, p1)
    assert set(evaluate_metanetwork(runs[0].model, val, runs[0])) >= {"kendall_tau", "r2", "mse"}


def test_early_stopping_stops():
    data = _toy_data(6)
    r = fit(StatNN.for_template(data[0][0].template, hidden=8), data[:4], data[4:],
            TrainConfig(epochs=500, patience=3, lr=0.5, seed=0))
    assert len(r.history) < 500
    assert len(r.history) - 1 - r.best_epoch <= 3


def test_checkpoint_round_trip(tmp_path):
    data = _toy_data(6)
    torch.manual_seed(0)
    r = fit(GMN(out_dim=1, hidden=8, num_layers=1, aggr="pna"), data[:4], data[4:],
            TrainConfig(epochs=2, batch_size=2, seed=0))
    path = save_checkpoint(r.model, tmp_path / "ckpt", result=r, extra={"note": "test"})
    assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()
    model, info = load_checkpoint(path)
    assert isinstance(model, GMN) and info["extra"] == {"note": "test"}
    assert info["target_mean"] == pytest.approx(r.target_mean)
    with torch.no_grad():
        assert torch.equal(model.predict([d[0] for d in data]), r.model.predict([d[0] for d in data]))


def test_permutation_augmentation_keeps_the_function():
    (g, y), = _toy_data(1)
    g2, y2 = permute_sample((g, y), torch.Generator().manual_seed(0))
    assert y2 == y and not torch.equal(g2.values, g.values)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    m1, m2 = zoo.create_model("cnn_small"), zoo.create_model("cnn_small")
    m1.load_state_dict(g.to_state_dict())
    m2.load_state_dict(g2.to_state_dict())
    with torch.no_grad():
        assert torch.allclose(m1(x), m2(x), atol=1e-5)
    # augmented training runs for the non-invariant baseline
    data = _toy_data(6)
    r = fit(FlatMLP.for_template(g.template, hidden=8), data[:4], data[4:],
            TrainConfig(epochs=2, augment=True, seed=0))
    assert len(r.history) == 2


def test_classification_and_nfn_on_mlps():
    t = ws.graph_template("mlp")
    data = [(t.graph(zoo.create_model("mlp", seed=i).state_dict()), i % 2) for i in range(8)]
    torch.manual_seed(0)
    r = fit(NFN.for_template(t, out_dim=2, hidden=4), data[:6], data[6:],
            TrainConfig(task="classification", epochs=2, seed=0))
    m = evaluate_metanetwork(r.model, data, r)
    assert set(m) >= {"accuracy", "cross_entropy"} and 0.0 <= m["accuracy"] <= 1.0


def test_dataset_from_zoo(tmp_path):
    """A zoo written in the on-disk format becomes (graph, target) samples."""
    from types import SimpleNamespace

    from zoo.store import ZooWriter

    sds = [zoo.create_model("cnn_small", seed=i).state_dict() for i in range(3)]
    with ZooWriter(tmp_path / "z", {"name": "tiny", "source": "test"}) as w:
        for i, sd in enumerate(sds):
            ck = SimpleNamespace(epoch=1, step=None, state_dict=sd, metrics={"test_acc": 0.1 * i})
            w.add_member(member_id=f"m{i}", index=i, seed=i, config={"arch": "cnn_small", "model": {}},
                         checkpoints=[ck], metrics={"test_acc": 0.1 * i})
    data = dataset_from_zoo(zoo.Zoo(tmp_path / "z"), "test_acc")
    assert [round(y, 6) for _, y in data] == [0.0, 0.1, 0.2]
    assert torch.equal(data[1][0].values, ws.graph_template("cnn_small").graph(sds[1]).values)


@pytest.mark.slow
def test_gmn_learns_accuracy_on_digits_zoo(tmp_path):
    """On a real zoo of cnn_small trained on sklearn digits (varied
    hyperparameters), the GMN ranks held-out networks by test accuracy
    (Kendall tau > 0.5) and beats predicting the training mean."""
    recipe = zoo.load_recipe("digits_cnn_small").with_members(96)
    zoo.build_zoo(recipe, tmp_path / "zoo", workers=1, progress=False)
    data = dataset_from_zoo(zoo.Zoo(tmp_path / "zoo"), "test_acc")
    train, val, test = split_dataset(data, (0.6, 0.15, 0.25), seed=0)
    torch.manual_seed(0)
    r = fit(GMN(out_dim=1, hidden=32, num_layers=3), train, val,
            TrainConfig(epochs=100, patience=25, lr=1e-3, weight_decay=1e-2, seed=0))
    m = evaluate_metanetwork(r.model, test, r)
    y = np.array([s[1] for s in test])
    mean_mse = float(np.mean((y - np.mean([s[1] for s in train])) ** 2))
    assert m["kendall_tau"] > 0.5
    assert m["mse"] < mean_mse


def test_gmn_edge_scale_is_the_rms_per_edge_type():
    from weightspace.graph import EDGE_TYPES

    data = _toy_data(3)
    m = GMN(out_dim=1, hidden=8).fit_normalization([d[0] for d in data])
    conv = torch.cat([torch.cat([v.reshape(-1) for k, v in d[0].to_state_dict().items()
                                 if k.endswith("weight") and v.dim() == 4]) for d in data])
    assert float(m.edge_scale[EDGE_TYPES.index("conv.weight")]) == pytest.approx(float(conv.pow(2).mean().sqrt()), rel=1e-5)
    assert float(m.edge_scale[EDGE_TYPES.index("tie")]) == 1.0


def test_regression_metrics_agree_with_the_prediction_metrics_and_stay_total():
    from weightspace.predict import kendall_tau, mae, r2, rmse, spearman

    rng = np.random.default_rng(1)
    y = rng.normal(size=25)
    p = y + 0.5 * rng.normal(size=25)
    m = regression_metrics(p[:, None], y)
    for name, fn in [("kendall_tau", kendall_tau), ("spearman", spearman), ("r2", r2), ("rmse", rmse), ("mae", mae)]:
        assert m[name] == pytest.approx(fn(y, p), abs=1e-12), name
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # degenerate input: NaN, no warning, no error
        one = regression_metrics(np.array([1.0]), np.array([2.0]))
        flat = regression_metrics(np.ones(5), y[:5])
        nonfinite = regression_metrics(np.array([np.nan, 1.0, 2.0]), np.array([0.0, 1.0, 3.0]))
    assert np.isnan(one["kendall_tau"]) and np.isnan(one["r2"]) and one["n"] == 1
    assert np.isnan(flat["kendall_tau"]) and np.isnan(flat["spearman"]) and np.isfinite(flat["r2"])
    assert np.isnan(nonfinite["kendall_tau"]) and np.isnan(nonfinite["mse"])


def test_split_dataset_groups_and_any_number_of_parts():
    items = list(range(12))
    groups = [i // 3 for i in items]  # 4 groups of 3
    for seed in range(5):
        parts = split_dataset(items, (0.5, 0.5), seed=seed, groups=groups)
        assert [len(p) for p in parts] == [6, 6] and sorted(sum(parts, [])) == items
        assert not {groups[i] for i in parts[0]} & {groups[i] for i in parts[1]}
    assert [len(p) for p in split_dataset(items, (1.0,), seed=0)] == [12]
    with pytest.raises(ValueError, match="groups has 3 entries for 12 items"):
        split_dataset(items, (0.5, 0.5), groups=[0, 1, 2])


def test_renamed_functions_and_their_deprecated_aliases():
    import weightspace.nn.train as nt

    data = _toy_data(4, "mlp")
    model = StatNN.for_template(data[0][0].template, hidden=4)
    r = fit(model, data, None, TrainConfig(epochs=1, seed=0))
    want = nt.evaluate_metanetwork(r.model, data, r)
    with pytest.warns(DeprecationWarning, match="evaluate_metanetwork"):
        assert nt.evaluate(r.model, data, r) == want
    with pytest.warns(DeprecationWarning, match="predict_metanetwork"):
        assert torch.equal(nt.predict(r.model, data, r), nt.predict_metanetwork(r.model, data, r))


def test_cosine_schedule_anneals_to_zero_and_bad_schedule_is_refused():
    data = _toy_data(6)
    runs = {}
    for sched in ("constant", "cosine"):
        torch.manual_seed(0)
        runs[sched] = fit(GMN(out_dim=1, hidden=8, num_layers=1), data[:4], data[4:],
                          TrainConfig(epochs=4, batch_size=2, lr=1e-2, patience=0, seed=0, lr_schedule=sched))
    assert [row["lr"] for row in runs["constant"].history] == [1e-2] * 4
    lrs = [row["lr"] for row in runs["cosine"].history]
    assert all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[0] < 1e-2 and lrs[-1] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="step")


def _toy_data_model_and_split():
    data = _toy_data(8)
    torch.manual_seed(0)
    return GMN(out_dim=1, hidden=8, num_layers=1, readout_norm="batch"), data[:6], data[6:]


def _ema_run(decay, *, epochs=2):
    """A tiny GMN (BatchNorm readout) fitted with ``ema_decay=decay``; the raw
    parameters after every optimizer step are recorded by a step hook."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    model, train, val = _toy_data_model_and_split()
    steps = []
    handle = register_optimizer_step_post_hook(
        lambda opt, args, kwargs: steps.append({k: v.detach().clone() for k, v in model.named_parameters()}))
    try:
        r = fit(model, train, val, TrainConfig(epochs=epochs, batch_size=2, lr=1e-2, patience=0, seed=0,
                                               ema_decay=decay))
    finally:
        handle.remove()
    return r, steps, val


def test_ema_restores_and_validates_the_hand_computed_average():
    d = 0.5
    r, steps, val = _ema_run(d)
    per_epoch = len(steps) // 2
    assert len(steps) == 2 * per_epoch == 6  # 6 training networks, batch 2, 2 epochs
    ema, at_epoch_end = None, []
    for i, w in enumerate(steps):  # torch's EMA: the first step copies, then avg = d * avg + (1 - d) * w
        ema = dict(w) if ema is None else {k: d * ema[k] + (1 - d) * w[k] for k in w}
        if (i + 1) % per_epoch == 0:
            at_epoch_end.append(ema)
    want = at_epoch_end[r.best_epoch]
    got = dict(r.model.named_parameters())
    for k in want:
        torch.testing.assert_close(got[k].detach(), want[k], rtol=1e-5, atol=1e-6)
    raw = steps[(r.best_epoch + 1) * per_epoch - 1]
    assert any(not torch.allclose(got[k], raw[k]) for k in raw)  # the average, not the raw weights
    # the logged validation loss is the restored average's (BatchNorm recalibrated for it)
    pred = predict_metanetwork(r.model, val)[:, 0]
    y = (torch.tensor([s[1] for s in val]) - r.target_mean) / r.target_std
    assert float(((pred - y) ** 2).mean()) == pytest.approx(r.history[r.best_epoch]["val_loss"], rel=1e-4)


def test_ema_leaves_training_alone_and_default_is_off():
    base, _, _ = _ema_run(None)
    again = fit(*_toy_data_model_and_split(), TrainConfig(epochs=2, batch_size=2, lr=1e-2, patience=0, seed=0))
    assert TrainConfig().ema_decay is None
    assert again.history == base.history  # default config == ema_decay=None
    ema, _, _ = _ema_run(0.5)
    # the raw weights follow the same path (same train losses); only what is validated differs
    assert [h["train_loss"] for h in ema.history] == [h["train_loss"] for h in base.history]
    assert [h["val_loss"] for h in ema.history] != [h["val_loss"] for h in base.history]


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5, float("nan"), True, "0.9"])
def test_bad_ema_decay_is_one_line_error(bad):
    with pytest.raises(ValueError, match="ema_decay must be a number in \\(0, 1\\)") as e:
        TrainConfig(ema_decay=bad)
    assert "\n" not in str(e.value) and e.value.field == "ema_decay"  # the one check the estimators share


def test_snapshots_keep_the_k_best_epochs_by_validation_loss():
    """``snapshots=k`` keeps the states of the k lowest validation losses,
    best first, each reproducing its logged loss; the restored model and the
    history are those of ``snapshots=1``."""
    cfg = dict(epochs=6, batch_size=2, lr=1e-2, patience=0, seed=0)
    one = fit(*_toy_data_model_and_split(), TrainConfig(**cfg))
    model, train, val = _toy_data_model_and_split()
    r = fit(model, train, val, TrainConfig(**cfg, snapshots=3))
    assert TrainConfig().snapshots == 1 and len(one.snapshots) == 1 and one.snapshot_epochs == [one.best_epoch]
    assert r.history == one.history and r.best_epoch == one.best_epoch
    losses = [h["val_loss"] for h in r.history]
    assert r.snapshot_epochs == sorted(range(len(losses)), key=lambda e: (losses[e], e))[:3]
    assert r.snapshot_epochs[0] == r.best_epoch
    for k, v in r.model.state_dict().items():
        torch.testing.assert_close(v, one.model.state_dict()[k])
    y = (torch.tensor([s[1] for s in val]) - r.target_mean) / r.target_std
    for epoch, state in zip(r.snapshot_epochs, r.snapshots):
        m, _, _ = _toy_data_model_and_split()
        m.load_state_dict(state)
        pred = predict_metanetwork(m, val)[:, 0]
        assert float(((pred - y) ** 2).mean()) == pytest.approx(losses[epoch], rel=1e-4)
    short = fit(*_toy_data_model_and_split(), TrainConfig(**{**cfg, "epochs": 2}, snapshots=5))
    assert len(short.snapshots) == 2  # fewer epochs than snapshots: all of them


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_bad_snapshots_is_one_line_error(bad):
    with pytest.raises(ValueError, match="snapshots must be an integer >= 1") as e:
        TrainConfig(snapshots=bad)
    assert "\n" not in str(e.value)


def test_pairwise_logistic_loss_by_hand():
    from weightspace.nn.train import pairwise_logistic_loss

    y = torch.tensor([[0.3], [0.1], [0.3], [0.9]])
    out = torch.tensor([[0.5], [-1.0], [2.0], [0.0]])
    pairs = [(i, j) for i in range(4) for j in range(4) if y[i, 0] > y[j, 0]]  # the tie (0, 2) is left out
    want = np.mean([np.log1p(np.exp(float(out[j, 0] - out[i, 0]))) for i, j in pairs])
    assert len(pairs) == 5
    assert float(pairwise_logistic_loss(out, y)) == pytest.approx(want, rel=1e-6)
    assert float(pairwise_logistic_loss(torch.zeros(4, 1), y)) == pytest.approx(np.log(2))
    assert float(pairwise_logistic_loss(out, torch.ones(4, 1))) == 0.0
    # the right order costs less than the reversed one
    assert pairwise_logistic_loss(y * 5, y) < pairwise_logistic_loss(-y * 5, y)


def test_rank_weight_adds_the_ranking_loss_to_training_and_validation():
    cfg = dict(epochs=2, batch_size=2, lr=1e-2, patience=0, seed=0)
    base = fit(*_toy_data_model_and_split(), TrainConfig(**cfg))
    zero = fit(*_toy_data_model_and_split(), TrainConfig(**cfg, rank_weight=0.0))
    assert TrainConfig().rank_weight == 0.0 and zero.history == base.history
    model, train, val = _toy_data_model_and_split()
    r = fit(model, train, val, TrainConfig(**cfg, rank_weight=2.0))
    assert [h["train_loss"] for h in r.history] != [h["train_loss"] for h in base.history]
    # the logged validation loss of the restored model is MSE + 2 * ranking loss on the standardized targets
    from weightspace.nn.train import pairwise_logistic_loss

    pred = predict_metanetwork(r.model, val)
    y = ((torch.tensor([s[1] for s in val]) - r.target_mean) / r.target_std)[:, None]
    want = float(((pred - y) ** 2).mean() + 2.0 * pairwise_logistic_loss(pred, y))  # len(val) <= batch_size
    assert len(val) <= 2 and r.history[r.best_epoch]["val_loss"] == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize("bad", [-0.5, float("inf"), float("nan"), True, "1"])
def test_bad_rank_weight_is_one_line_error(bad):
    with pytest.raises(ValueError, match="rank_weight must be a finite number >= 0") as e:
        TrainConfig(rank_weight=bad)
    assert "\n" not in str(e.value) and e.value.field == "rank_weight"
    with pytest.raises(ValueError, match="rank_weight is for regression"):
        TrainConfig(task="classification", rank_weight=1.0)
