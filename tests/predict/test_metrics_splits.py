"""Metrics (against scipy / closed forms, CI behaviour) and splits (disjoint,
grouped, OOD semantics, errors)."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau, spearmanr

from weightspace.predict import (
    WeightDataset,
    bootstrap_ci,
    evaluate_predictions,
    hyperparameter_split,
    kendall_tau,
    r2,
    random_split,
    seed_split,
    spearman,
)


def _data(n=60, noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.uniform(size=n)
    return y, y + noise * rng.normal(size=n)


def test_rank_correlations_match_scipy_and_closed_forms():
    y, p = _data()
    assert kendall_tau(y, p) == pytest.approx(kendalltau(y, p).statistic)
    assert spearman(y, p) == pytest.approx(spearmanr(y, p).statistic)
    assert kendall_tau(y, y) == pytest.approx(1.0)
    assert kendall_tau(y, -y) == pytest.approx(-1.0)
    assert r2(y, y) == pytest.approx(1.0)
    assert r2(y, np.full_like(y, y.mean())) == pytest.approx(0.0)
    assert r2(y, p) == pytest.approx(1 - ((y - p) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def test_bootstrap_ci_brackets_the_estimate_and_narrows_with_n():
    y, p = _data(40)
    small = bootstrap_ci(y, p, "kendall_tau", n_resamples=300, seed=0)
    assert small.low <= small.value <= small.high
    y, p = _data(400)
    big = bootstrap_ci(y, p, "kendall_tau", n_resamples=300, seed=0)
    assert big.low <= big.value <= big.high
    assert big.high - big.low < small.high - small.low
    assert bootstrap_ci(y, p, "r2", n_resamples=100, seed=3) == bootstrap_ci(y, p, "r2", n_resamples=100, seed=3)


def test_grouped_bootstrap_resamples_groups():
    y, p = _data(60)
    groups = np.repeat(np.arange(20), 3)
    res = evaluate_predictions(y, p, ("kendall_tau", "r2"), groups=groups, n_resamples=200)
    assert res["kendall_tau"].n == 60 and res["kendall_tau"].n_groups == 20
    assert res["r2"].low <= res["r2"].value <= res["r2"].high


def test_metric_errors():
    with pytest.raises(ValueError, match="same length"):
        kendall_tau([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        r2([1, 2, np.nan], [1, 2, 3])
    with pytest.raises(ValueError, match="unknown metric"):
        bootstrap_ci([1, 2, 3], [1, 2, 3], "accuracy")
    with pytest.raises(ValueError, match="groups"):
        bootstrap_ci([1, 2, 3], [1, 2, 3], groups=[0, 1])


def _dataset(n_members=20, ckpts=3):
    rows = []
    for m in range(n_members):
        for e in range(ckpts):
            rows.append({"member_id": f"m{m:02d}", "epoch": e, "seed": m // 2,
                         "config.model.activation": ["relu", "tanh", "gelu"][m % 3],
                         "config.train.lr": 10 ** (-4 + 3 * m / n_members), "arch": "x", "arch_kwargs": "{}"})
    meta = pd.DataFrame(rows)
    return WeightDataset([None] * len(meta), np.arange(len(meta), dtype=float), meta, "t")


def _check_partition(sp, n):
    allidx = np.concatenate([sp.train, sp.val, sp.test])
    assert len(allidx) == len(set(allidx.tolist()))
    return set(allidx.tolist()) <= set(range(n))


def test_random_split_keeps_members_together():
    ds = _dataset()
    sp = random_split(ds, (0.6, 0.2, 0.2), seed=1)
    assert _check_partition(sp, len(ds)) and len(np.concatenate(sp)) == len(ds)
    mem = [set(ds.meta.member_id.iloc[idx]) for idx in sp]
    assert not (mem[0] & mem[1]) and not (mem[0] & mem[2]) and not (mem[1] & mem[2])
    assert [len(m) for m in mem] == [12, 4, 4]
    assert not np.array_equal(random_split(ds, seed=2).test, random_split(ds, seed=1).test)


def test_seed_split_keeps_seeds_together():
    ds = _dataset()
    sp = seed_split(ds, (0.5, 0.0, 0.5), seed=0)
    assert not set(ds.meta.seed.iloc[sp.train]) & set(ds.meta.seed.iloc[sp.test])


def test_ood_split_by_values_and_threshold():
    ds = _dataset()
    sp = hyperparameter_split(ds, "activation", train=["relu", "tanh"], test=["gelu"], val_fraction=0.25)
    assert set(ds.meta["config.model.activation"].iloc[sp.test]) == {"gelu"}
    assert set(ds.meta["config.model.activation"].iloc[np.concatenate([sp.train, sp.val])]) == {"relu", "tanh"}
    assert len(sp.val) > 0 and not set(ds.meta.member_id.iloc[sp.val]) & set(ds.meta.member_id.iloc[sp.train])
    sp = hyperparameter_split(ds, "lr", threshold=1e-2)
    lr = ds.meta["config.train.lr"].to_numpy()
    assert (lr[sp.test] > 1e-2).all() and (lr[np.concatenate([sp.train, sp.val])] <= 1e-2).all()


def test_split_errors():
    ds = _dataset()
    with pytest.raises(ValueError, match="fractions"):
        random_split(ds, (0.5, 0.5, 0.5))
    with pytest.raises(KeyError, match="no column"):
        hyperparameter_split(ds, "momentum", threshold=0.5)
    with pytest.raises(ValueError, match="both train and test"):
        hyperparameter_split(ds, "activation", train=["relu"], test=["relu", "gelu"])
    with pytest.raises(ValueError, match="leaves"):
        hyperparameter_split(ds, "lr", threshold=10.0)
    with pytest.raises(ValueError, match="numeric"):
        hyperparameter_split(ds, "activation", threshold=0.5)


def test_rank_correlation_of_a_constant_prediction_is_nan_without_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(kendall_tau([0.1, 0.5, 0.9], [0.3, 0.3, 0.3]))
        assert np.isnan(spearman([0.2, 0.2, 0.2], [0.1, 0.5, 0.9]))
    assert kendall_tau([0.1, 0.5, 0.9], [0.1, 0.4, 0.2]) == pytest.approx(kendalltau([0.1, 0.5, 0.9], [0.1, 0.4, 0.2]).statistic)


def test_resolve_column_accepts_a_frame_or_names_and_names_the_problem():
    from weightspace.predict.splits import resolve_column

    cols = ["config.train.lr", "config.model.lr", "config.data.seed", "test_acc"]
    assert resolve_column(pd.DataFrame(columns=cols), "seed") == "config.data.seed"
    assert resolve_column(cols, "test_acc") == "test_acc"
    with pytest.raises(KeyError, match="ambiguous"):
        resolve_column(cols, "lr")
    with pytest.raises(KeyError, match="no column 'width' in zoo /z"):
        resolve_column(cols, "width", where=" in zoo /z")


def test_bootstrap_ci_drops_a_few_degenerate_resamples():
    from weightspace.predict import bootstrap_ci

    # 4 members: about 1 resample in 64 draws one member 4 times (tau NaN),
    # which used to make the whole interval NaN
    y = np.array([0.1, 0.1, 0.4, 0.4, 0.8, 0.8, 0.9, 0.9])
    p = np.array([0.2, 0.1, 0.5, 0.3, 0.7, 0.6, 0.95, 0.9])
    groups = np.repeat(np.arange(4), 2)
    ci = bootstrap_ci(y, p, "kendall_tau", groups=groups, n_resamples=400, seed=0)
    assert np.isfinite(ci.low) and np.isfinite(ci.high) and ci.low <= ci.value <= ci.high


def _historical_group_split(keys, fractions, seed):
    """The split Zoo.split and predict.splits used before they shared group_split."""
    groups = np.array(sorted(set(keys)))
    order = np.random.default_rng(int(seed)).permutation(len(groups))
    g = len(groups)
    n_tr = int(round(fractions[0] * g))
    n_va = min(g - n_tr, int(round(fractions[1] * g)))
    where = {groups[gi]: 0 if r < n_tr else 1 if r < n_tr + n_va else 2 for r, gi in enumerate(order)}
    part = np.array([where[k] for k in keys])
    return [np.flatnonzero(part == s) for s in range(3)]


def _historical_metanet_val(groups, val_fraction, seed):
    """MetaNetPredictor's validation groups before it used group_split."""
    rng = np.random.default_rng(int(seed))
    uniq = np.unique(groups)
    n_val = int(round(float(val_fraction) * len(uniq))) if len(uniq) > 2 else 0
    val = set(rng.permutation(uniq)[:n_val].tolist())
    return np.flatnonzero([g in val for g in groups])


def test_group_split_reproduces_the_historical_splits():
    from weightspace.common.splits import group_split

    rng = np.random.default_rng(0)
    for trial in range(60):
        n_groups = int(rng.integers(1, 30))
        keys = [f"m{int(k):03d}" for k in rng.integers(0, n_groups, size=int(rng.integers(1, 60)))]
        fr = tuple(rng.dirichlet([1, 1, 1]))
        fr = (fr[0], fr[1], 1.0 - fr[0] - fr[1])
        for got, want in zip(group_split(keys, fr, seed=trial), _historical_group_split(keys, fr, trial)):
            np.testing.assert_array_equal(got, want)
        vf = float(rng.uniform(0, 0.5))
        ints = rng.integers(0, n_groups, size=len(keys))
        for groups in (np.array(keys, dtype=object), ints):
            eff = vf if len(np.unique(groups)) > 2 else 0.0
            np.testing.assert_array_equal(group_split(groups, (eff, 1 - eff), seed=trial)[0],
                                          _historical_metanet_val(groups, vf, trial))


def test_evaluate_is_a_deprecated_alias_of_evaluate_predictions():
    import weightspace.common.metrics as common
    import weightspace.predict as wp
    import weightspace.predict.metrics as pm

    assert pm.kendall_tau is common.kendall_tau and wp.evaluate_predictions is common.evaluate_predictions
    y, p = np.arange(8.0), np.arange(8.0) ** 2
    want = evaluate_predictions(y, p, ("kendall_tau",), n_resamples=20)
    with pytest.warns(DeprecationWarning, match="evaluate_predictions"):
        assert wp.evaluate(y, p, ("kendall_tau",), n_resamples=20) == want
