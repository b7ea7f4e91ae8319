"""MetaNetPredictor's ensembles: ``snapshot_ensemble=k`` (the k best epochs
of one training run) and ``ensemble=n`` (n seeds), both predicting the mean
of their models; seeded, saved and loaded like a single model, bad values
refused in one line."""

import json

import numpy as np
import pytest

from weightspace.errors import ConfigError, StateDictError
from weightspace.nn.train import predict_metanetwork
from weightspace.predict import load_predictor, make_predictor
from weightspace.predict.metanet_models import member_seed

SMALL = {"epochs": 4, "patience": 0, "model_kwargs": {"hidden": 8, "num_layers": 1}}


@pytest.fixture(scope="module")
def parts(tiny_dataset, tiny_split):
    return tiny_dataset.subset(tiny_split.train), tiny_dataset.subset(tiny_split.test)


def _model_preds(p, ds):
    """Each model's predictions ``[n_models, n]`` in target units."""
    samples = [(g, 0.0) for g in ds.graphs]
    return np.stack([predict_metanetwork(m, samples)[:, 0].double().numpy() * p.target_std_ + p.target_mean_
                     for m in p.models_])


def test_snapshot_ensemble_is_the_mean_of_the_k_best_epochs(parts):
    train, test = parts
    plain = make_predictor("gmn", **SMALL).fit(train)
    snap = make_predictor("gmn", **SMALL, snapshot_ensemble=3).fit(train)
    assert len(plain.models_) == 1 and len(snap.models_) == 3
    # same training run: snapshot 0 is the plain best-epoch model
    np.testing.assert_allclose(_model_preds(snap, test)[0], plain.predict(test), rtol=1e-6, atol=1e-7)
    per_model = _model_preds(snap, test)
    np.testing.assert_allclose(snap.predict(test), per_model.mean(axis=0), rtol=1e-6, atol=1e-7)
    assert not np.allclose(snap.predict(test), plain.predict(test))  # the other epochs change the prediction
    losses = [h["val_loss"] for h in snap.history_]
    assert snap.fit_result_.snapshot_epochs == sorted(range(len(losses)), key=lambda e: (losses[e], e))[:3]


def test_seed_ensemble_is_the_mean_of_seeded_members_and_reproducible(parts):
    train, test = parts
    plain = make_predictor("gmn", **SMALL, seed=5).fit(train)
    ens = make_predictor("gmn", **SMALL, seed=5, ensemble=2).fit(train)
    per_model = _model_preds(ens, test)
    assert len(ens.models_) == 2 and [r.config.seed for r in ens.fit_results_] == [5, member_seed(5, 1)]
    np.testing.assert_allclose(per_model[0], plain.predict(test), rtol=1e-6, atol=1e-7)  # member 0 = plain
    assert not np.allclose(per_model[1], per_model[0])  # member 1 is another init / batch order
    np.testing.assert_allclose(ens.predict(test), per_model.mean(axis=0), rtol=1e-6, atol=1e-7)
    again = make_predictor("gmn", **SMALL, seed=5, ensemble=2).fit(train)
    np.testing.assert_array_equal(again.predict(test), ens.predict(test))
    assert member_seed(5, 1) != member_seed(6, 0) and member_seed(5, 1) != member_seed(5, 2)


def test_ensemble_save_load_roundtrip_and_tampering(parts, tmp_path):
    train, test = parts
    p = make_predictor("gmn", **{**SMALL, "epochs": 2}, ensemble=2, snapshot_ensemble=2).fit(train)
    assert len(p.models_) == 4
    before = p.predict(test)
    p.save(tmp_path / "p")
    q = load_predictor(tmp_path / "p")
    assert len(q.models_) == 4 and q.get_params() == p.get_params()
    np.testing.assert_allclose(q.predict(test), before, rtol=1e-6, atol=1e-7)
    info_path = tmp_path / "p" / "predictor.json"
    info = json.loads(info_path.read_text())
    info["state"]["n_models"] = 3  # arrays of a 4th model the state does not account for
    info_path.write_text(json.dumps(info))
    with pytest.raises(StateDictError, match="unexpected array") as e:
        load_predictor(tmp_path / "p")
    assert e.value.field.startswith("model3.") and "\n" not in str(e.value)
    info["state"]["n_models"] = 5  # more than ensemble * snapshot_ensemble
    info_path.write_text(json.dumps(info))
    with pytest.raises(ConfigError, match="5 saved models, more than") as e:
        load_predictor(tmp_path / "p")
    assert e.value.field == "state.n_models"
    info["state"]["n_models"], info["params"]["ensemble"] = 5, 3  # a 5th model whose arrays are missing
    info_path.write_text(json.dumps(info))
    with pytest.raises(StateDictError):
        load_predictor(tmp_path / "p")


def test_single_model_files_without_n_models_still_load(parts, tmp_path):
    """Files saved before ensembles existed: no ``n_models``, no ensemble params."""
    train, test = parts
    p = make_predictor("gmn", **{**SMALL, "epochs": 1}).fit(train)
    p.save(tmp_path / "p")
    info_path = tmp_path / "p" / "predictor.json"
    info = json.loads(info_path.read_text())
    assert info["state"]["n_models"] == 1
    del info["state"]["n_models"], info["params"]["ensemble"], info["params"]["snapshot_ensemble"]
    info_path.write_text(json.dumps(info))
    q = load_predictor(tmp_path / "p")
    assert q.ensemble == 1 and q.snapshot_ensemble == 1 and len(q.models_) == 1
    np.testing.assert_allclose(q.predict(test), p.predict(test), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["ensemble", "snapshot_ensemble"])
@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "3", 10**6])
def test_bad_ensemble_sizes_are_one_line_errors(tiny_dataset, name, bad):
    graphs = tiny_dataset.graphs[:6]
    with pytest.raises(ConfigError, match=f"{name} must be an integer in \\[1, 1024\\]") as e:
        make_predictor("gmn", **{name: bad}).fit(graphs, np.arange(6.0))
    assert e.value.field == name and "\n" not in str(e.value)


def test_rank_weight_reaches_training_and_bad_values_are_one_line_errors(tiny_dataset):
    p = make_predictor("gmn", **{**SMALL, "epochs": 1}, rank_weight=0.5).fit(tiny_dataset)
    assert p.fit_result_.config.rank_weight == 0.5
    assert make_predictor("gmn", **{**SMALL, "epochs": 1}).fit(tiny_dataset).fit_result_.config.rank_weight == 0.0
    graphs = tiny_dataset.graphs[:6]
    for bad in (-1.0, float("inf"), True, "1"):
        with pytest.raises(ConfigError, match="rank_weight must be a finite number >= 0") as e:
            make_predictor("gmn", rank_weight=bad).fit(graphs, np.arange(6.0))
        assert e.value.field == "rank_weight" and "\n" not in str(e.value)
