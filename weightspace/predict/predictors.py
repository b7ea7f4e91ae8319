"""Predictors of a network's performance from its weights, scikit-learn style.

Every predictor has ``fit(X, y) -> self``, ``predict(X) -> [n]``,
``score(X, y, metric="r2")``, ``save(path)`` and :func:`load_predictor`.
``X`` is a sequence of networks -- :class:`~weightspace.graph.ParameterGraph`
s or state_dicts -- or a :class:`~weightspace.predict.WeightDataset` (then
``y`` defaults to its targets, and its member ids group the metanetworks'
validation split).

=================  ==========================================================
``"gbm"``          :class:`GBMPredictor`: gradient boosting on
                   :func:`~weightspace.predict.weight_features`
                   (sklearn ``HistGradientBoostingRegressor``; ``lightgbm``
                   optional)
``"linear"``       :class:`LinearPredictor`: ridge regression on the same features
``"gmn"``          :class:`MetaNetPredictor` around :class:`~weightspace.nn.GMN`
``"statnn"``       ... around :class:`~weightspace.nn.StatNN`
``"flatmlp"``      ... around :class:`~weightspace.nn.FlatMLP` (trained with
                   permutation augmentation by default)
``"nfn"``          ... around :class:`~weightspace.nn.NFN` (plain MLPs only)
=================  ==========================================================

Architectures. A predictor records the architectures it was fit on (the
tensor names and shapes, and the registry name + arguments when the data
came from a zoo). Networks are compared by their tensor shapes in order
(:func:`~weightspace.predict.features.layout_signature`; names may differ,
e.g. a Dropout shifts ``nn.Sequential`` indices, or a TF import names
tensors its own way). Predicting on a network whose shapes differ raises
:class:`ArchitectureMismatchError`, naming the difference. The feature
predictors cannot do anything else (their features are per tensor). A
:class:`MetaNetPredictor` built with ``allow_new_architectures=True`` accepts
the ParameterGraph of any architecture instead -- the GMN reads any graph --
which is the documented generalization path; how well that transfers is an
empirical question the predictor does not answer for you.

Persistence, never pickle: :meth:`save` writes a directory with
``predictor.json`` (class, constructor parameters, fitted state) and
``arrays.safetensors``; metanetworks add their weights as safetensors
(:func:`weightspace.nn.train.save_checkpoint`). ``HistGradientBoostingRegressor``
has no pickle-free format, so a saved sklearn GBM stores its training
features and targets and is *refit* on load -- deterministic (no early
stopping, no subsampling, fixed ``random_state``); the training predictions
are stored too and compared after the refit (a mismatch, e.g. from another
scikit-learn version, raises :class:`PredictorRefitWarning`). The lightgbm
backend stores its own text model format instead.
"""

from __future__ import annotations

import inspect
import json
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from weightspace.core import graph_template
from weightspace.errors import ConfigError, InputFileError, MissingFileError, NonFiniteWeightsError, StateDictError, WeightspaceError
from weightspace.graph import ParameterGraph
from weightspace.io import Field, atomic_write, check_numel, did_you_mean, read_json, read_safetensors, validate
from weightspace.nn import NFN, build_metanetwork
from weightspace.nn.baselines import NUM_STATS
from weightspace.nn.train import FitResult, TrainConfig, fit, load_metanetwork, predict
from weightspace.predict.data import WeightDataset
from weightspace.predict.features import (
    Layout,
    feature_names,
    layout_difference,
    layout_signature,
    network_layout,
    network_tensors,
    weight_features,
)
from weightspace.predict.metrics import METRICS
from weightspace.runtime import torch_threads

__all__ = [
    "ArchitectureMismatchError",
    "PredictorRefitWarning",
    "BasePredictor",
    "GBMPredictor",
    "LinearPredictor",
    "MetaNetPredictor",
    "MeanPredictor",
    "PREDICTORS",
    "PREDICTOR_KINDS",
    "METANETWORKS",
    "make_predictor",
    "load_predictor",
    "FORMAT_NAME",
    "FORMAT_VERSION",
]

FORMAT_NAME = "weightspace-predictor"
FORMAT_VERSION = 1


class ArchitectureMismatchError(WeightspaceError, ValueError):
    """A network's architecture is not one the predictor was fit on."""


class PredictorRefitWarning(UserWarning):
    """A GBM refit on load does not reproduce the saved training predictions."""


Network = ParameterGraph | Mapping[str, torch.Tensor]


def _unpack(X: Any, y: Any = None) -> tuple[list, np.ndarray | None, WeightDataset | None]:
    if isinstance(X, WeightDataset):
        return list(X.graphs), (X.y if y is None else np.asarray(y, dtype=np.float64).reshape(-1)), X
    if isinstance(X, (ParameterGraph, Mapping)):
        raise TypeError("X must be a sequence of networks (ParameterGraphs or state_dicts); wrap a single one in a list")
    nets = list(X)
    if y is not None:
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if y.size != len(nets):
            raise ValueError(f"X has {len(nets)} networks but y has {y.size} targets")
    return nets, y, None


def _layout_to_json(layout: Layout) -> list:
    return [[k, list(s)] for k, s in layout]


def _layout_from_json(obj: list) -> Layout:
    return tuple((str(k), tuple(int(x) for x in s)) for k, s in obj)


def _unpack_fit(X: Any, y: Any) -> tuple[list, np.ndarray, WeightDataset | None]:
    """:func:`_unpack` for ``fit``: targets are required, non-empty and finite."""
    nets, y, ds = _unpack(X, y)
    if y is None:
        raise ValueError("fit needs targets y (or a WeightDataset)")
    if y.size == 0:
        raise ValueError("fit needs at least one network")
    if not np.isfinite(y).all():
        raise ValueError(f"y has {int((~np.isfinite(y)).sum())} non-finite target(s); drop them first")
    return nets, y, ds


class BasePredictor:
    """Shared behaviour: parameters, architecture checks, scoring, saving.

    Fitted attributes (trailing underscore): ``layouts_`` (list of
    :data:`~weightspace.predict.features.Layout`), ``architectures_`` (list of
    ``{"arch", "kwargs"}`` dicts when known), ``target_`` (name or ``None``),
    ``n_train_``.
    """

    #: short name used by :func:`make_predictor` and the CLI
    kind: str = ""

    # -- scikit-learn style parameters ------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters."""
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params: Any) -> "BasePredictor":
        names = self._param_names()
        for k, v in params.items():
            if k not in names:
                raise ValueError(f"{type(self).__name__} has no parameter {k!r}; parameters: {names}")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- fitted-ness and architectures ---------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "layouts_"):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet; call fit(X, y) first")

    def _record_architectures(self, nets: Sequence[Network], ds: WeightDataset | None) -> None:
        layouts: list[Layout] = []
        for n in nets:
            lay = network_layout(n)
            if lay not in layouts:
                layouts.append(lay)
        self.layouts_ = layouts
        archs: list[dict] = []
        if ds is not None and len(ds) and "arch" in ds.meta.columns:
            firsts: dict[str, int] = {}
            for i, (a, kw) in enumerate(zip(ds.meta["arch"], ds.meta["arch_kwargs"])):
                firsts.setdefault(json.dumps([a, kw]), i)
            for key, i in firsts.items():
                a, kw = json.loads(key)
                archs.append({"arch": a, "kwargs": json.loads(kw), "layout": _layout_to_json(network_layout(nets[i]))})
        self.architectures_ = archs
        self.target_ = ds.target if ds is not None else None

    def _allow_new(self) -> bool:
        return False

    def _align(self, nets: Sequence[Network]) -> list:
        """``nets`` checked against the fitted architectures.

        A state_dict holding exactly the tensors of a fitted layout in another
        order (e.g. read from safetensors, which sorts names) is reordered to
        that layout. A network whose tensor shapes match no fitted layout
        raises :class:`ArchitectureMismatchError` (unless new architectures
        are allowed).
        """
        self._check_fitted()
        known = {layout_signature(lay) for lay in self.layouts_}
        out = []
        for i, n in enumerate(nets):
            lay = network_layout(n)
            if isinstance(n, Mapping) and lay not in self.layouts_:
                for ref in self.layouts_:
                    if dict(lay) == dict(ref):
                        n = {**{k: n[k] for k, _ in ref}, **{k: v for k, v in n.items() if k not in dict(ref)}}
                        lay = ref
                        break
            if not self._allow_new() and layout_signature(lay) not in known:
                diff = layout_difference(self.layouts_[0], lay)
                more = f" (or any of {len(self.layouts_)} architectures it saw)" if len(self.layouts_) > 1 else ""
                hint = (" A GMN predictor built with allow_new_architectures=True accepts other architectures."
                        if self.kind != "gmn" else " Refit, or build the predictor with allow_new_architectures=True.")
                raise ArchitectureMismatchError(
                    f"network {i} does not have the architecture this {self.kind or type(self).__name__} predictor "
                    f"was fit on{more}: {diff}.{hint}"
                )
            out.append(n)
        return out

    @staticmethod
    def _check_finite(nets: Sequence[Network]) -> None:
        for i, n in enumerate(nets):
            if not np.isfinite(network_tensors(n)).all():
                raise NonFiniteWeightsError(
                    f"network {i} has NaN/Inf weights (a diverged run); its performance cannot be predicted "
                    "from statistics of its weights -- drop it (zoo_dataset does so by default)"
                )

    # -- API -------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> "BasePredictor":
        raise NotImplementedError

    def predict(self, X: Any) -> np.ndarray:
        raise NotImplementedError

    def score(self, X: Any, y: Any = None, metric: str = "r2") -> float:
        """``metric`` (default R², as scikit-learn regressors; or
        ``"kendall_tau"``, ``"spearman"``, ``"rmse"``, ``"mae"``) of the
        predictions on ``X`` against ``y``."""
        nets, y, _ = _unpack(X, y)
        if y is None:
            raise ValueError("score needs targets y (or a WeightDataset)")
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; known: {sorted(METRICS)}")
        return METRICS[metric](y, self.predict(nets))

    # -- persistence -----------------------------------------------------------
    def _state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """``(json-able fitted state, arrays)``."""
        return {}, {}

    def _restore(self, state: dict, arrays: dict[str, np.ndarray], path: Path) -> None:
        pass

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted predictor to directory ``path`` (created; files
        replaced atomically). Returns ``path``.

        Raises:
            InputFileError: ``path`` is an existing file.
        """
        from safetensors.numpy import save_file

        self._check_fitted()
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise InputFileError("is a file; a predictor is saved as a directory (predictor.json + arrays.safetensors)",
                                 path=path)
        state, arrays = self._state()
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params().items()}
        info = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "class": type(self).__name__,
            "kind": self.kind,
            "params": params,
            "target": self.target_,
            "n_train": int(self.n_train_),
            "layouts": [_layout_to_json(lay) for lay in self.layouts_],
            "architectures": self.architectures_,
            "state": state,
        }
        arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
        atomic_write(path / "arrays.safetensors", lambda tmp: save_file(arrays, str(tmp)))
        atomic_write(path / "predictor.json", json.dumps(info, indent=2, default=_json_default))
        return path


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {o!r}")


def _array(arrays: Mapping[str, np.ndarray], name: str, shape: tuple, path: Path) -> np.ndarray:
    """``arrays[name]`` from ``arrays.safetensors``, checked: present, of
    ``shape`` (``None`` entries = any size), finite. Errors name the file and array."""
    if name not in arrays:
        raise StateDictError("array missing from the file; the saved predictor is damaged", path=path, field=name)
    a = arrays[name]
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
        want = "[" + ", ".join("n" if s is None else str(s) for s in shape) + "]"
        raise StateDictError(f"shape {list(a.shape)} in the file, expected {want}; the saved predictor is damaged",
                             path=path, field=name)
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise NonFiniteWeightsError("NaN/Inf values; the saved predictor is damaged", path=path, field=name)
    return a


def _no_extra_arrays(arrays: Mapping[str, np.ndarray], names: Sequence[str], path: Path) -> None:
    extra = [k for k in arrays if k not in names]
    if extra:
        raise StateDictError("unexpected array in the file; the saved predictor is damaged or was written by "
                             "another predictor", path=path, field=extra[0])


# ============================================================ feature predictors
class _FeaturePredictor(BasePredictor):
    spectral: bool

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
        X, _ = weight_features(nets, spectral=bool(self.spectral))
        return X

    @property
    def feature_names_(self) -> list[str]:
        self._check_fitted()
        return feature_names(self.layouts_[0], spectral=bool(self.spectral))


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
        "spectral": Field(bool), "seed": Field(int, min=0, max=2**32 - 1), "n_threads": Field(int, min=1, max=4096, nullable=True),
    }

    def __init__(self, *, backend: str = "sklearn", max_iter: int = 300, learning_rate: float = 0.05,
                 max_leaf_nodes: int = 15, min_samples_leaf: int = 10, l2_regularization: float = 1.0,
                 spectral: bool = False, seed: int = 0, n_threads: int | None = 1) -> None:
        self.backend = backend
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.spectral = spectral
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
        self._record_architectures(nets, ds)
        self.n_train_ = len(nets)
        self._X_train, self._y_train = feats, y
        return self

    def _predict_arrays(self, X: np.ndarray) -> np.ndarray:
        with self._threads():
            if getattr(self, "_booster", None) is not None:
                return np.asarray(self._booster.predict(X), dtype=np.float64)
            return np.asarray(self.model_.predict(X), dtype=np.float64)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets ``[n]`` for networks ``X``."""
        self._check_fitted()
        nets, _, _ = _unpack(X)
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
        self._X_train = _array(arrays, "X_train", (None, n_feat), apath)
        n = self._X_train.shape[0]
        self._y_train = _array(arrays, "y_train", (n,), apath)
        train_pred = _array(arrays, "train_pred", (n,), apath)
        _no_extra_arrays(arrays, ("X_train", "y_train", "train_pred"), apath)
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


class LinearPredictor(_FeaturePredictor):
    """Ridge regression on standardized per-tensor weight statistics.

    The ridge penalty is chosen from ``alphas`` by efficient leave-one-out
    cross-validation (sklearn ``RidgeCV``). The fitted model is plain arrays
    (feature mean/scale, coefficients, intercept), saved exactly.

    Args:
        alphas: candidate ridge penalties.
        spectral: add singular-value features.
    """

    kind = "linear"
    param_schema = {"alphas": Field(list), "spectral": Field(bool)}

    def __init__(self, *, alphas: Sequence[float] = tuple(float(a) for a in np.logspace(-3, 3, 13)),
                 spectral: bool = False) -> None:
        self.alphas = alphas
        self.spectral = spectral

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
        self._record_architectures(nets, ds)
        self.n_train_ = len(nets)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets ``[n]`` for networks ``X``."""
        self._check_fitted()
        nets, _, _ = _unpack(X)
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
        self.mean_, self.scale_, self.coef_ = (_array(arrays, k, (n_feat,), apath) for k in ("mean", "scale", "coef"))
        _no_extra_arrays(arrays, ("mean", "scale", "coef"), apath)
        self.intercept_, self.alpha_ = float(state["intercept"]), float(state["alpha"])


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
        self._record_architectures(nets, ds)
        self.n_train_ = len(nets)
        return self

    def predict(self, X: Any) -> np.ndarray:
        self._check_fitted()
        nets, _, _ = _unpack(X)
        nets = self._align(nets)
        return np.full(len(nets), self.mean_)

    def _state(self):
        return {"mean": self.mean_}, {}

    def _restore(self, state, arrays, path):
        state = validate(state, {"mean": Field(float, required=True)}, path=path / "predictor.json", where="state")
        _no_extra_arrays(arrays, (), path / "arrays.safetensors")
        self.mean_ = float(state["mean"])


# ============================================================ metanetworks
#: ``kind -> weightspace.nn class name``
METANETWORKS = {"gmn": "GMN", "statnn": "StatNN", "flatmlp": "FlatMLP", "nfn": "NFN"}


class MetaNetPredictor(BasePredictor):
    """A metanetwork from :mod:`weightspace.nn` trained to regress the target.

    Training is :func:`weightspace.nn.train.fit` (AdamW, MSE on standardized
    targets, early stopping on a validation split carved from the training
    data, best state restored).

    Args:
        model: ``"gmn"``, ``"statnn"``, ``"flatmlp"`` or ``"nfn"``.
        model_kwargs: constructor arguments of the metanetwork (``hidden``,
            ``num_layers``, ...; ``out_dim`` is 1).
        epochs, batch_size, lr, weight_decay, patience: training
            (:class:`weightspace.nn.train.TrainConfig`).
        val_fraction: fraction of the training groups (members when ``X`` is
            a WeightDataset, else networks) held out for early stopping
            (0: none; train for ``epochs`` and keep the best training loss).
        augment: random spec permutations of the training networks each
            epoch; ``None`` = on for ``"flatmlp"`` only (the invariant
            models do not need it).
        seed: initialization, validation split, shuffling, augmentation.
        allow_new_architectures: accept networks of architectures not seen
            in training (graph-based models only; see the module docstring).
        device: torch device.
        progress: a tqdm bar during training.
        num_threads: torch CPU threads during fit / predict (restored
            afterwards; default 1: these graphs are small, and on a shared
            machine two threads measured 7x slower than one; ``None`` =
            leave torch's setting alone).
    """

    param_schema = {
        "model": Field(str, required=True, choices=tuple(METANETWORKS)), "model_kwargs": Field(dict, nullable=True),
        "epochs": Field(int, min=1, max=10**6), "batch_size": Field(int, min=1, max=2**24), "lr": Field(float, min=0.0),
        "weight_decay": Field(float, min=0.0), "patience": Field(int, min=0, max=10**6),
        "val_fraction": Field(float, min=0.0, max=1.0), "augment": Field(bool, nullable=True),
        "seed": Field(int, min=0, max=2**63 - 1), "allow_new_architectures": Field(bool), "device": Field(str),
        "progress": Field(bool), "num_threads": Field(int, min=1, max=4096, nullable=True),
    }

    def __init__(self, model: str = "gmn", *, model_kwargs: Mapping[str, Any] | None = None, epochs: int = 200,
                 batch_size: int = 32, lr: float = 1e-3, weight_decay: float = 1e-4, patience: int = 40,
                 val_fraction: float = 0.15, augment: bool | None = None, seed: int = 0,
                 allow_new_architectures: bool = False, device: str = "cpu", progress: bool = False,
                 num_threads: int | None = 1) -> None:
        self.model = model
        self.model_kwargs = model_kwargs
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.val_fraction = val_fraction
        self.augment = augment
        self.seed = seed
        self.allow_new_architectures = allow_new_architectures
        self.device = device
        self.progress = progress
        self.num_threads = num_threads

    @property
    def kind(self) -> str:  # type: ignore[override]
        return str(self.model)

    def _allow_new(self) -> bool:
        return bool(self.allow_new_architectures)

    def _build(self, graphs: Sequence[ParameterGraph]):
        if self.model not in METANETWORKS:
            raise ValueError(f"model must be one of {sorted(METANETWORKS)}, got {self.model!r}")
        cls_name = METANETWORKS[self.model]
        kw = dict(self.model_kwargs or {})
        kw["out_dim"] = 1
        t = graphs[0].template
        if cls_name == "GMN":
            kw.setdefault("edge_dim", max(64, max(g.template.max_width for g in graphs)))
        elif cls_name == "StatNN":
            kw.setdefault("in_features", NUM_STATS * max(len(g.template.keys) for g in graphs))
        elif cls_name == "FlatMLP":
            kw.setdefault("in_features", max(g.template.num_values for g in graphs))
        elif cls_name == "NFN":
            return NFN.for_template(t, **kw)
        return build_metanetwork(cls_name, kw)

    def _graphs(self, nets: Sequence[Network]) -> list[ParameterGraph]:
        """ParameterGraphs of ``nets``; state_dicts are matched to a known
        architecture by their tensor names and shapes."""
        out = []
        archs = getattr(self, "architectures_", [])
        for i, n in enumerate(nets):
            if isinstance(n, ParameterGraph):
                out.append(n)
                continue
            lay = network_layout(n)
            match = [a for a in archs if dict(_layout_from_json(a["layout"])) == dict(lay)]
            if match:
                a = match[0]
                out.append(graph_template(a["arch"], **a["kwargs"]).graph(n))
                continue
            if not self._allow_new():
                self._align([n])  # raises, naming the difference
            known = [f"{a['arch']}({a['kwargs']})" for a in archs]
            raise ArchitectureMismatchError(
                f"network {i} is a state_dict of an architecture this predictor cannot build a graph for "
                f"(architectures recorded at fit: {known or 'none'}); pass its ParameterGraph instead: "
                "weightspace.parameter_graph(state_dict, arch=NAME, **arch_kwargs)"
            )
        return out

    def fit(self, X: Any, y: Any = None) -> "MetaNetPredictor":
        """Train on networks ``X`` (ParameterGraphs or a WeightDataset) and targets ``y`` ``[n]``."""
        nets, y, ds = _unpack_fit(X, y)
        if not all(isinstance(n, ParameterGraph) for n in nets):
            raise TypeError("fit a metanetwork predictor on ParameterGraphs or a WeightDataset, not state_dicts")
        self._check_finite(nets)
        groups = ds.groups if ds is not None else np.arange(len(nets))
        rng = np.random.default_rng(int(self.seed))
        uniq = np.unique(groups)
        n_val = int(round(float(self.val_fraction) * len(uniq))) if len(uniq) > 2 else 0
        val_groups = set(rng.permutation(uniq)[:n_val].tolist())
        is_val = np.array([g in val_groups for g in groups], dtype=bool)
        train = [(nets[i], float(y[i])) for i in np.flatnonzero(~is_val)]
        val = [(nets[i], float(y[i])) for i in np.flatnonzero(is_val)]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.seed))
            model = self._build(nets)
        augment = (self.model == "flatmlp") if self.augment is None else bool(self.augment)
        cfg = TrainConfig(epochs=int(self.epochs), batch_size=int(self.batch_size), lr=float(self.lr),
                          weight_decay=float(self.weight_decay), patience=int(self.patience) if val else 0,
                          seed=int(self.seed), augment=augment, progress=bool(self.progress), device=self.device)
        with torch_threads(self.num_threads):
            self.fit_result_ = fit(model, train, val or None, cfg)
        self.model_ = self.fit_result_.model
        self.target_mean_ = float(self.fit_result_.target_mean)
        self.target_std_ = float(self.fit_result_.target_std)
        self._record_architectures(nets, ds)
        self.n_train_ = len(nets)
        return self

    def predict(self, X: Any, *, batch_size: int = 64) -> np.ndarray:
        """Predicted targets ``[n]`` for networks ``X`` (ParameterGraphs, or
        state_dicts of an architecture seen in training)."""
        self._check_fitted()
        nets, _, _ = _unpack(X)
        graphs = self._align(self._graphs(nets))
        self._check_finite(graphs)
        with torch_threads(self.num_threads):
            out = predict(self.model_, [(g, 0.0) for g in graphs], None, batch_size=batch_size)
        return out[:, 0].double().numpy() * self.target_std_ + self.target_mean_

    @property
    def history_(self) -> list[dict]:
        """Per-epoch training / validation losses."""
        return list(self.fit_result_.history)

    def _state(self):
        sd = {f"model.{k}": v.detach().cpu().numpy() for k, v in self.model_.state_dict().items()}
        state = {
            "class": type(self.model_).__name__, "config": self.model_.config(),
            "target_mean": self.target_mean_, "target_std": self.target_std_,
            "best_epoch": int(self.fit_result_.best_epoch), "history": self.fit_result_.history,
        }
        return state, sd

    def _restore(self, state, arrays, path):
        ipath = path / "predictor.json"
        state = validate(state, {
            "class": Field(str, required=True), "config": Field(dict, required=True),
            "target_mean": Field(float, required=True), "target_std": Field(float, required=True, min=0.0),
            "best_epoch": Field(int, required=True, min=-1), "history": Field(list, required=True),
        }, path=ipath, where="state")
        if state["class"] != METANETWORKS.get(self.model):
            raise ConfigError(f"saved metanetwork class {state['class']!r} does not match model={self.model!r}",
                              path=ipath, field="state.class")
        tensors = {}
        for k, v in arrays.items():
            if not k.startswith("model."):
                raise StateDictError("unexpected array in the file (metanetwork weights are named model.*)",
                                     path=path / "arrays.safetensors", field=k)
            tensors[k[len("model."):]] = torch.from_numpy(np.array(v))
        model = load_metanetwork(state["class"], state["config"], tensors, path=path / "arrays.safetensors",
                                 config_path=ipath, where="state.config")
        self.model_ = model
        self.target_mean_, self.target_std_ = float(state["target_mean"]), float(state["target_std"])
        self.fit_result_ = FitResult(model=model, config=TrainConfig(), target_mean=self.target_mean_,
                                     target_std=self.target_std_, best_epoch=int(state["best_epoch"]),
                                     history=list(state["history"]))


# ============================================================ registry / io
PREDICTORS: dict[str, type[BasePredictor]] = {
    "GBMPredictor": GBMPredictor,
    "LinearPredictor": LinearPredictor,
    "MetaNetPredictor": MetaNetPredictor,
    "MeanPredictor": MeanPredictor,
}

#: names accepted by :func:`make_predictor`
PREDICTOR_KINDS = ("gbm", "linear", "mean", *METANETWORKS)


def make_predictor(kind: str, **params: Any) -> BasePredictor:
    """A predictor by short name (see the module docstring).

    ``make_predictor("gbm", max_iter=500)``, ``make_predictor("gmn", epochs=100,
    model_kwargs={"hidden": 64})``.
    """
    k = kind.lower().replace("-", "").replace("_", "")
    if k == "gbm":
        return GBMPredictor(**params)
    if k == "linear":
        return LinearPredictor(**params)
    if k == "mean":
        return MeanPredictor(**params)
    if k in METANETWORKS:
        return MetaNetPredictor(k, **params)
    raise ValueError(f"unknown predictor {kind!r}; choose one of {list(PREDICTOR_KINDS)}")


_INFO_SCHEMA = {
    "format": Field(str, required=True), "version": Field(int, required=True, min=1), "class": Field(str, required=True),
    "kind": Field(str), "params": Field(dict, required=True), "target": Field(str, nullable=True),
    "n_train": Field(int, min=0), "layouts": Field(list, required=True), "architectures": Field(list),
    "state": Field(dict),
}
_ARCH_SCHEMA = {"arch": Field(str, required=True), "kwargs": Field(dict, required=True), "layout": Field(list, required=True)}


def _check_layout(obj: Any, path: Path, where: str) -> Layout:
    """A saved layout ``[[name, shape], ...]``, every shape bounded (:func:`weightspace.io.check_numel`)."""
    if not isinstance(obj, list) or not obj:
        raise ConfigError("expected a non-empty list of [tensor name, shape] pairs", path=path, field=where)
    out = []
    for j, item in enumerate(obj):
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            raise ConfigError(f"expected a [tensor name, shape] pair, got {item!r}"[:200], path=path, field=f"{where}[{j}]")
        out.append((item[0], check_numel(item[1], path=path, field=f"{where}[{j}]")))
    return tuple(out)


def load_predictor(path: str | os.PathLike) -> BasePredictor:
    """A predictor saved with :meth:`BasePredictor.save` (JSON + safetensors;
    nothing is unpickled, no code is imported by name beyond the fixed
    :data:`PREDICTORS` table).

    ``predictor.json`` is checked against a schema (the predictor class's
    ``param_schema`` for its parameters; types, ranges, unknown keys), every
    size read from it is bounded before anything is allocated, and the arrays
    in ``arrays.safetensors`` must be exactly the ones the predictor needs.

    Raises:
        MissingFileError: ``path`` or one of its files does not exist.
        InputFileError: a file is empty, truncated, not JSON / safetensors, or
            not a saved predictor.
        ConfigError: a wrong type, out-of-range value or unknown key in
            ``predictor.json`` (``field`` names it).
        StateDictError: a missing, unexpected or mis-shaped array (named).
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        if not path.exists():
            raise MissingFileError("not a saved predictor (no such directory)", path=path)
        raise InputFileError("is a file; a saved predictor is a directory (predictor.json + arrays.safetensors)",
                             path=path)
    info_path = path / "predictor.json"
    if not info_path.exists():
        raise MissingFileError("not a saved predictor (predictor.json is missing)", path=info_path)
    info = read_json(info_path, what="saved predictor description (predictor.json)")
    if not isinstance(info, dict) or info.get("format") != FORMAT_NAME:
        raise InputFileError(f"not a {FORMAT_NAME} file", path=info_path, field="format")
    info = validate(info, _INFO_SCHEMA, path=info_path)
    if info["version"] > FORMAT_VERSION:
        raise ConfigError(f"format version {info['version']} is newer than this library ({FORMAT_VERSION}); "
                          "upgrade weightspace", path=info_path, field="version")
    cls = PREDICTORS.get(info["class"])
    if cls is None:
        raise ConfigError(f"unknown predictor class {info['class']!r}{did_you_mean(info['class'], list(PREDICTORS))}; "
                          f"known: {sorted(PREDICTORS)}", path=info_path, field="class")
    params = validate(info["params"], cls.param_schema, path=info_path, where="params")
    defaults = {k: v.default for k, v in inspect.signature(cls.__init__).parameters.items()}
    for k, v in params.items():  # JSON has no tuples
        if isinstance(defaults.get(k), tuple) and isinstance(v, list):
            params[k] = tuple(v)
    if "alphas" in params:
        for i, a in enumerate(params["alphas"]):
            validate({"alpha": a}, {"alpha": Field(float, min=0.0)}, path=info_path, where=f"params.alphas[{i}]")
    layouts = [_check_layout(lay, info_path, f"layouts[{i}]") for i, lay in enumerate(info["layouts"])]
    if not layouts:
        raise ConfigError("no architecture recorded; the saved predictor is damaged", path=info_path, field="layouts")
    archs = []
    for i, a in enumerate(info.get("architectures", [])):
        a = validate(a, _ARCH_SCHEMA, path=info_path, where=f"architectures[{i}]")
        _check_layout(a["layout"], info_path, f"architectures[{i}].layout")
        archs.append(a)
    try:
        obj = cls(**params) if cls is not MetaNetPredictor else cls(params.pop("model"), **params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot build the predictor ({exc})", path=info_path, field="params") from None
    arrays = {k: v.numpy() for k, v in read_safetensors(path / "arrays.safetensors",
                                                         what="saved predictor arrays (arrays.safetensors)").items()}
    obj.layouts_ = layouts
    obj.architectures_ = archs
    obj.target_ = info.get("target")
    obj.n_train_ = int(info.get("n_train", 0))
    obj._restore(info.get("state", {}), arrays, path)
    return obj
