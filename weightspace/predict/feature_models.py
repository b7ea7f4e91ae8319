"""Predictors on per-tensor weight-statistics features
(:func:`~weightspace.predict.features.weight_features`): gradient boosting
(``"gbm"``), ridge regression (``"linear"``), and the training mean
(``"mean"``, the reference to beat). One architecture per predictor.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np

from weightspace.io import Field, validate
from weightspace.errors import ConfigError, StateDictError
from weightspace.predict.base import (
    ArchitectureMismatchError,
    BasePredictor,
    Network,
    PredictorRefitWarning,
    _unpack_fit,
    register_predictor,
)
from weightspace.predict.canonical import CANONICALIZE_MODES, canonicalize_graphs
from weightspace.predict.features import feature_names, layout_signature, network_layout, weight_features
from weightspace.predict.persistence import checked_array, no_extra_arrays

__all__ = ["GBMPredictor", "LinearPredictor", "MeanPredictor"]


class _FeaturePredictor(BasePredictor):
    spectral: bool
    canonicalize: str = "none"

    def _features(self, nets: Sequence[Network], *, fitting: bool) -> np.ndarray:
        if not nets:
            raise ValueError("no networks given")
        if fitting:
            lays = {layout_signature(network_layout(n)) for n in nets}
            if len(lays) > 1:
                raise ArchitectureMismatchError(
                    f"the training networks have {len(lays)} different architectures; weight-statistics "
                    "features are per tensor, so a feature predictor needs one architecture "
                    "(filter the zoo, e.g. zoo.filter(width=16), or use a GMN predictor)"
                )
        else:
            nets = self._align(nets)
        self._check_finite(nets)
        nets = self._canonical(nets)
        X, _ = weight_features(nets, spectral=bool(self.spectral))
        return X

    def _canonical(self, nets: Sequence[Network]) -> Sequence[Network]:
        from weightspace.graph import ParameterGraph

        mode = self.canonicalize
        if mode not in CANONICALIZE_MODES:
            raise ConfigError(f"canonicalize must be one of {list(CANONICALIZE_MODES)}, got {mode!r}",
                              field="canonicalize")
        if mode == "none":
            return nets
        if not all(isinstance(n, ParameterGraph) for n in nets):
            raise TypeError(f"canonicalize={mode!r} needs each network's symmetries: pass ParameterGraphs "
                            "(weightspace.parameter_graph(state_dict, arch=NAME, ...)) or a WeightDataset, "
                            "not state_dicts")
        return canonicalize_graphs(nets, mode)

    @property
    def feature_names_(self) -> list[str]:
        self._check_fitted()
        return feature_names(self.layouts_[0], spectral=bool(self.spectral))


@register_predictor("gbm")
class GBMPredictor(_FeaturePredictor):
    """Gradient-boosted trees on per-tensor weight statistics (Unterthiner et al., 2020).

    Args:
        backend: ``"sklearn"`` (``HistGradientBoostingRegressor``, default)
            or ``"lightgbm"`` (optional dependency).
        max_iter: boosting rounds.
        learning_rate: shrinkage.
        max_leaf_nodes: leaves per tree.
        min_samples_leaf: minimum training rows per leaf.
        l2_regularization: L2 penalty on leaf values.
        spectral: add singular-value features.
        canonicalize: ``"none"``, ``"scale_sign"`` or ``"full"``: features
            of each network's canonical form under that part of its symmetry
            group (:mod:`weightspace.predict.canonical`; needs
            ParameterGraphs).
        seed: ``random_state`` of the booster.
        n_threads: OpenMP threads while fitting / predicting (default 1:
            the data are small, and on a shared machine more threads can be
            much slower; ``None`` = the library default).

    No early stopping and no subsampling, so a fit is a deterministic
    function of the data (which is what lets :meth:`save` store the data).
    """

    kind = "gbm"
    #: schema of the saved constructor parameters (:func:`load_predictor`)
    param_schema = {
        "backend": Field(str, choices=("sklearn", "lightgbm")), "max_iter": Field(int, min=1, max=100_000),
        "learning_rate": Field(float, min=0.0), "max_leaf_nodes": Field(int, min=2, max=2**16),
        "min_samples_leaf": Field(int, min=1, max=2**24), "l2_regularization": Field(float, min=0.0),
        "spectral": Field(bool), "canonicalize": Field(str, choices=tuple(CANONICALIZE_MODES)),
        "seed": Field(int, min=0, max=2**32 - 1), "n_threads": Field(int, min=1, max=4096, nullable=True),
    }

    def __init__(self, *, backend: str = "sklearn", max_iter: int = 300, learning_rate: float = 0.05,
                 max_leaf_nodes: int = 15, min_samples_leaf: int = 10, l2_regularization: float = 1.0,
                 spectral: bool = False, canonicalize: str = "none", seed: int = 0,
                 n_threads: int | None = 1) -> None:
        self.backend = backend
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.spectral = spectral
        self.canonicalize = canonicalize
        self.seed = seed
        self.n_threads = n_threads

    def _threads(self):
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=None if self.n_threads is None else int(self.n_threads))

    def _make(self):
        if self.backend == "sklearn":
            from sklearn.ensemble import HistGradientBoostingRegressor

            return HistGradientBoostingRegressor(
                max_iter=int(self.max_iter), learning_rate=float(self.learning_rate),
                max_leaf_nodes=int(self.max_leaf_nodes), min_samples_leaf=int(self.min_samples_leaf),
                l2_regularization=float(self.l2_regularization), early_stopping=False,
                random_state=int(self.seed),
            )
        if self.backend == "lightgbm":
            try:
                import lightgbm
            except ImportError:
                raise ImportError(
                    "backend='lightgbm' needs lightgbm: pip install lightgbm (or the weightspace[lightgbm] extra)"
                ) from None
            return lightgbm.LGBMRegressor(
                n_estimators=int(self.max_iter), learning_rate=float(self.learning_rate),
                num_leaves=int(self.max_leaf_nodes), min_child_samples=int(self.min_samples_leaf),
                reg_lambda=float(self.l2_regularization), random_state=int(self.seed),
                deterministic=True, force_row_wise=True, verbose=-1,
                n_jobs=-1 if self.n_threads is None else int(self.n_threads),
            )
        raise ValueError(f"backend must be 'sklearn' or 'lightgbm', got {self.backend!r}")

    def _fit_arrays(self, X: np.ndarray, y: np.ndarray) -> None:
        model = self._make()
        with self._threads():
            model.fit(X, y)
        self.model_ = model
        self._booster = None

    def fit(self, X: Any, y: Any = None) -> "GBMPredictor":
        """Fit on networks ``X`` (one architecture) and targets ``y`` ``[n]``."""
        nets, y, ds = _unpack_fit(X, y)
        feats = self._features(nets, fitting=True)
        self._fit_arrays(feats, y)
        if len(y) < 2 * int(self.min_samples_leaf):
            warnings.warn(
                f"GBMPredictor: {len(y)} training rows but min_samples_leaf={self.min_samples_leaf}: no tree can "
                "split, so every prediction is the training mean (rank correlation undefined). Pass a smaller "
                "min_samples_leaf, or use make_predictor('linear') on this few networks.",
                UserWarning, stacklevel=2,
            )
        self._X_train, self._y_train = feats, y
        return self._fitted(nets, ds)

    def _predict_arrays(self, X: np.ndarray) -> np.ndarray:
        with self._threads():
            if getattr(self, "_booster", None) is not None:
                return np.asarray(self._booster.predict(X), dtype=np.float64)
            return np.asarray(self.model_.predict(X), dtype=np.float64)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets ``[n]`` for networks ``X``."""
        nets = self._networks(X)
        return self._predict_arrays(self._features(nets, fitting=False))

    def _state(self):
        train_pred = self._predict_arrays(self._X_train)
        arrays = {"X_train": self._X_train, "y_train": self._y_train, "train_pred": train_pred}
        state: dict[str, Any] = {}
        if self.backend == "lightgbm":
            booster = self._booster if getattr(self, "_booster", None) is not None else self.model_.booster_
            state["lightgbm_model"] = booster.model_to_string()
        return state, arrays

    def _restore(self, state, arrays, path):
        state = validate(state, {"lightgbm_model": Field(str, required=self.backend == "lightgbm")},
                         path=path / "predictor.json", where="state")
        apath = path / "arrays.safetensors"
        n_feat = len(feature_names(self.layouts_[0], spectral=bool(self.spectral)))
        self._X_train = checked_array(arrays, "X_train", (None, n_feat), apath)
        n = self._X_train.shape[0]
        self._y_train = checked_array(arrays, "y_train", (n,), apath)
        train_pred = checked_array(arrays, "train_pred", (n,), apath)
        no_extra_arrays(arrays, ("X_train", "y_train", "train_pred"), apath)
        if n == 0:
            raise StateDictError("no training rows; the saved predictor is damaged", path=apath, field="X_train")
        if self.backend == "lightgbm":
            import lightgbm

            self.model_ = None
            self._booster = lightgbm.Booster(model_str=state["lightgbm_model"])
        else:
            self._fit_arrays(self._X_train, self._y_train)
        got = self._predict_arrays(self._X_train)
        diff = float(np.max(np.abs(got - train_pred))) if got.size else 0.0
        if not diff <= 1e-9:
            warnings.warn(
                f"{path}: the GBM refit on load differs from the saved one (max abs difference {diff:.3g} on "
                "the training networks), probably another scikit-learn version; predictions will differ slightly",
                PredictorRefitWarning, stacklevel=3,
            )


@register_predictor("linear")
class LinearPredictor(_FeaturePredictor):
    """Ridge regression on standardized per-tensor weight statistics.

    The ridge penalty is chosen from ``alphas`` by efficient leave-one-out
    cross-validation (sklearn ``RidgeCV``). The fitted model is plain arrays
    (feature mean/scale, coefficients, intercept), saved exactly.

    Args:
        alphas: candidate ridge penalties.
        spectral: add singular-value features.
        canonicalize: as for :class:`GBMPredictor`.
    """

    kind = "linear"
    param_schema = {"alphas": Field(list), "spectral": Field(bool),
                    "canonicalize": Field(str, choices=tuple(CANONICALIZE_MODES))}

    def __init__(self, *, alphas: Sequence[float] = tuple(float(a) for a in np.logspace(-3, 3, 13)),
                 spectral: bool = False, canonicalize: str = "none") -> None:
        self.alphas = alphas
        self.spectral = spectral
        self.canonicalize = canonicalize

    def fit(self, X: Any, y: Any = None) -> "LinearPredictor":
        """Fit on networks ``X`` (one architecture) and targets ``y`` ``[n]``."""
        from sklearn.linear_model import RidgeCV

        nets, y, ds = _unpack_fit(X, y)
        feats = self._features(nets, fitting=True)
        mean = feats.mean(0)
        scale = feats.std(0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        Z = (feats - mean) / scale
        model = RidgeCV(alphas=np.asarray(self.alphas, dtype=np.float64)).fit(Z, y)
        self.mean_, self.scale_ = mean, scale
        self.coef_ = np.asarray(model.coef_, dtype=np.float64)
        self.intercept_ = float(model.intercept_)
        self.alpha_ = float(model.alpha_)
        return self._fitted(nets, ds)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets ``[n]`` for networks ``X``."""
        nets = self._networks(X)
        Z = (self._features(nets, fitting=False) - self.mean_) / self.scale_
        return Z @ self.coef_ + self.intercept_

    def _state(self):
        return ({"intercept": self.intercept_, "alpha": self.alpha_},
                {"mean": self.mean_, "scale": self.scale_, "coef": self.coef_})

    def _restore(self, state, arrays, path):
        state = validate(state, {"intercept": Field(float, required=True), "alpha": Field(float, required=True, min=0.0)},
                         path=path / "predictor.json", where="state")
        apath = path / "arrays.safetensors"
        n_feat = len(feature_names(self.layouts_[0], spectral=bool(self.spectral)))
        self.mean_, self.scale_, self.coef_ = (checked_array(arrays, k, (n_feat,), apath) for k in ("mean", "scale", "coef"))
        no_extra_arrays(arrays, ("mean", "scale", "coef"), apath)
        self.intercept_, self.alpha_ = float(state["intercept"]), float(state["alpha"])


@register_predictor("mean")
class MeanPredictor(BasePredictor):
    """Predicts the training mean for every network (the reference a
    predictor must beat; its Kendall τ is undefined)."""

    kind = "mean"
    param_schema: dict = {}

    def __init__(self) -> None:
        pass

    def fit(self, X: Any, y: Any = None) -> "MeanPredictor":
        nets, y, ds = _unpack_fit(X, y)
        self.mean_ = float(np.mean(y))
        return self._fitted(nets, ds)

    def predict(self, X: Any) -> np.ndarray:
        nets = self._networks(X)
        nets = self._align(nets)
        return np.full(len(nets), self.mean_)

    def _state(self):
        return {"mean": self.mean_}, {}

    def _restore(self, state, arrays, path):
        state = validate(state, {"mean": Field(float, required=True)}, path=path / "predictor.json", where="state")
        no_extra_arrays(arrays, (), path / "arrays.safetensors")
        self.mean_ = float(state["mean"])
