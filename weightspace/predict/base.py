"""Shared plumbing of the predictors of a network's performance from its weights, scikit-learn style.

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

Layout of the package: this module (:class:`BasePredictor`, parameter
plumbing, architecture bookkeeping, the :func:`register_predictor` registry
and :func:`make_predictor`); :mod:`~weightspace.predict.persistence` (the
saved format, :func:`~weightspace.predict.persistence.load_predictor`);
:mod:`~weightspace.predict.feature_models` (GBM, linear, mean);
:mod:`~weightspace.predict.metanet_models` (metanetworks).
:mod:`weightspace.predict.predictors` re-exports all of it for old imports.

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
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from weightspace.errors import NonFiniteWeightsError, WeightspaceError
from weightspace.graph import ParameterGraph
from weightspace.predict.data import WeightDataset
from weightspace.predict.features import TensorLayout, layout_difference, layout_signature, network_layout, network_tensors
from weightspace.predict.metrics import METRICS

__all__ = [
    "ArchitectureMismatchError",
    "PredictorRefitWarning",
    "BasePredictor",
    "Network",
    "PREDICTOR_REGISTRY",
    "register_predictor",
    "predictor_classes",
    "make_predictor",
]

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


def _layout_to_json(layout: TensorLayout) -> list:
    return [[k, list(s)] for k, s in layout]


def _layout_from_json(obj: list) -> TensorLayout:
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
    :data:`~weightspace.predict.features.TensorLayout`), ``architectures_`` (list of
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
        layouts: list[TensorLayout] = []
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

    def _fitted(self, nets: Sequence[Network], ds: WeightDataset | None):
        """Record what a fit saw (architectures, target, ``n_train_``); returns ``self``."""
        self._record_architectures(nets, ds)
        self.n_train_ = len(nets)
        return self

    def _networks(self, X: Any) -> list:
        """The networks of ``X`` for ``predict`` (a fitted predictor is required)."""
        self._check_fitted()
        nets, _, _ = _unpack(X)
        return nets

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
                seen = " / ".join(self.architecture_labels())
                raise ArchitectureMismatchError(
                    f"network {i} does not have the architecture this {self.kind or type(self).__name__} predictor "
                    f"was fit on ({seen}){more}: {diff}.{hint}"
                )
            out.append(n)
        return out

    def architecture_labels(self) -> list[str]:
        """The architectures the predictor was fit on, as short labels:
        ``name(kwargs)`` when the fit data came from a zoo, else the size of
        each tensor layout (``"a network of 6 tensors"``)."""
        self._check_fitted()
        archs = getattr(self, "architectures_", [])
        if archs:
            return [a["arch"] + (f"({','.join(f'{k}={v}' for k, v in sorted(a['kwargs'].items()))})"
                                 if a["kwargs"] else "") for a in archs]
        return [f"a network of {len(lay)} tensors" for lay in self.layouts_]

    def check_architecture(self, label: str, layout: TensorLayout, *, name: str | None = None,
                           kwargs: Mapping[str, Any] | None = None) -> None:
        """Refuse an architecture the predictor was not fit on, naming both.

        Args:
            label: how the caller names the architecture (e.g. ``"hf:/runs/gpt2"``).
            layout: its :data:`~weightspace.predict.features.TensorLayout`.
            name, kwargs: its registry name and arguments, when it has one: then
                it must also be a recorded architecture (a ReLU and a Tanh MLP
                share their shapes but are different architectures).

        Raises:
            ArchitectureMismatchError: one line naming ``label`` and the
                recorded architectures (unless new architectures are allowed).
        """
        self._check_fitted()
        if self._allow_new():
            return
        seen = " / ".join(self.architecture_labels())
        what = f"this {self.kind or type(self).__name__} predictor was fit on {seen}"
        known = {layout_signature(lay) for lay in self.layouts_}
        if layout_signature(layout) not in known and dict(layout) not in [dict(lay) for lay in self.layouts_]:
            diff = layout_difference(self.layouts_[0], layout)
            raise ArchitectureMismatchError(f"the checkpoints' architecture {label} is not the architecture {what}: "
                                            f"{diff}", field="arch")
        archs = getattr(self, "architectures_", [])
        if name is not None and archs and all(":" not in a["arch"] for a in archs):
            from weightspace.arch import ArchSpec

            mine = ArchSpec.of(name, **dict(kwargs or {}))
            if not any(ArchSpec.of(a["arch"], **a["kwargs"]) == mine for a in archs):
                raise ArchitectureMismatchError(
                    f"the checkpoints' architecture {mine.label} is not the architecture {what} (same tensor "
                    "shapes, another network)", field="arch")

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

    @classmethod
    def _from_kind(cls, kind: str, **params: Any) -> "BasePredictor":
        """An instance for registry ``kind`` (classes registered under several kinds override this)."""
        return cls(**params)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted predictor to directory ``path`` (created; files
        replaced atomically; format: :mod:`weightspace.predict.persistence`).
        Returns ``path``.

        Raises:
            InputFileError: ``path`` is an existing file.
        """
        from weightspace.predict.persistence import save_predictor

        return save_predictor(self, path)


# ============================================================ registry
#: ``kind -> predictor class``: the one table of predictors, filled by
#: :func:`register_predictor` (the built-in ones in
#: :mod:`~weightspace.predict.feature_models` and
#: :mod:`~weightspace.predict.metanet_models`).
PREDICTOR_REGISTRY: dict[str, type[BasePredictor]] = {}


def register_predictor(*kinds: str):
    """Class decorator: register a :class:`BasePredictor` subclass under one
    or more ``kinds`` (the names :func:`make_predictor` and the CLI accept).
    The class name must be unique too (saved predictors record it)."""
    if not kinds:
        raise ValueError("register_predictor needs at least one kind")

    def deco(cls: type[BasePredictor]) -> type[BasePredictor]:
        for k in kinds:
            if k in PREDICTOR_REGISTRY and PREDICTOR_REGISTRY[k] is not cls:
                raise ValueError(f"predictor kind {k!r} is already registered to {PREDICTOR_REGISTRY[k].__name__}")
        other = [c for c in PREDICTOR_REGISTRY.values() if c.__name__ == cls.__name__ and c is not cls]
        if other:
            raise ValueError(f"a predictor class named {cls.__name__!r} is already registered")
        for k in kinds:
            PREDICTOR_REGISTRY[k] = cls
        return cls

    return deco


def _builtin() -> dict[str, type[BasePredictor]]:
    """:data:`PREDICTOR_REGISTRY` with the built-in predictors registered."""
    import weightspace.predict.feature_models  # noqa: F401  (registers gbm, linear, mean)
    import weightspace.predict.metanet_models  # noqa: F401  (registers gmn, statnn, flatmlp, nfn)

    return PREDICTOR_REGISTRY


def predictor_classes() -> dict[str, type[BasePredictor]]:
    """``class name -> class`` of the registered predictors (what a saved
    predictor's ``"class"`` may name)."""
    return {c.__name__: c for c in _builtin().values()}


def make_predictor(kind: str, **params: Any) -> BasePredictor:
    """A predictor by short name (see the module docstring).

    ``make_predictor("gbm", max_iter=500)``, ``make_predictor("gmn", epochs=100,
    model_kwargs={"hidden": 64})``.
    """
    k = kind.lower().replace("-", "").replace("_", "")
    reg = _builtin()
    if k not in reg:
        raise ValueError(f"unknown predictor {kind!r}; choose one of {list(reg)}")
    return reg[k]._from_kind(k, **params)
