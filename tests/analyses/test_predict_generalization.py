"""The prediction study's settings: ``gmn_best`` is the plain GMN plus the
swept settings, and the sweep never draws a member of either test set."""

import numpy as np
import pandas as pd

from analyses.predict_generalization import run as study
from analyses.predict_generalization import sweep_gmn
from weightspace.predict import WeightDataset


def test_gmn_best_is_the_plain_gmn_plus_the_swept_settings(monkeypatch):
    monkeypatch.setattr(study, "GMN_BEST", {"stats_readout": True, "model_kwargs": {"hidden": 64}})
    plain = study.method_params("gmn", False, 0, None, gmn_epochs=15)
    best = study.method_params("gmn_best", False, 0, None, gmn_epochs=15)
    assert best == {**plain, "stats_readout": True, "model_kwargs": {"hidden": 64, "num_layers": 3}}
    assert study.GMN_BEST["model_kwargs"] == {"hidden": 64}  # not consumed by the call
    assert study.KINDS["gmn_best"] == "gmn" and "gmn_best" in study.METHODS


def test_sweep_pool_excludes_both_test_sets():
    acts = ["relu", "gelu", "silu", "tanh"]
    members = np.repeat(np.arange(80), 2)
    meta = pd.DataFrame({"member_id": members, "epoch": np.tile([1, 2], 80),
                         "config.model.activation": [acts[m % 4] for m in members]})
    ds = WeightDataset([None] * len(meta), np.linspace(0, 1, len(meta)), meta)
    tasks, pool = sweep_gmn.pool_and_tasks(ds, members=40, seed=0)
    rnd_test = set(ds.groups[study.random_split(ds, (0.8, 0.0, 0.2), seed=0).test])
    used = set()
    for tr, va in tasks.values():
        assert len(tr) and len(va) and not set(ds.groups[tr]) & set(ds.groups[va])
        used |= set(ds.groups[tr]) | set(ds.groups[va])
    assert not used & rnd_test
    assert not {m for m in used if acts[m % 4] == "tanh"}
    assert pool == len(set(range(80)) - rnd_test - {m for m in range(80) if m % 4 == 3})
    assert set(meta["config.model.activation"].to_numpy()[tasks["ood_proxy"][1]]) == {"silu"}


def test_paired_differences_against_the_reference(tmp_path):
    from analyses.predict_generalization import paired

    rng = np.random.default_rng(0)
    y = rng.random(120)
    df = pd.DataFrame({"member_id": np.repeat(np.arange(40), 3), "epoch": np.tile([1, 2, 5], 40), "true": y,
                       "pred_mean": np.full(120, y.mean()), "pred_gbm": y + rng.normal(0, 0.3, 120),
                       "pred_exact": y, "pred_noise": rng.random(120)})
    df.to_csv(tmp_path / "p.csv", index=False)
    res = paired.paired_table(tmp_path / "p.csv", "gbm")
    assert set(res) == {"exact", "noise"}  # not the reference, not the constant mean
    assert res["exact"]["low"] > 0 and res["noise"]["high"] < 0
    assert res["exact"]["low"] <= res["exact"]["value"] <= res["exact"]["high"]
