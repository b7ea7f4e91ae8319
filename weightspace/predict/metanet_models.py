"""Predictors that train a metanetwork of :mod:`weightspace.nn` (GMN,
StatNN, FlatMLP, NFN) to regress the target: kinds ``"gmn"``, ``"statnn"``,
``"flatmlp"``, ``"nfn"``, all :class:`MetaNetPredictor`.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from weightspace.common.splits import group_split
from weightspace.errors import ConfigError, StateDictError
from weightspace.graph import ParameterGraph
from weightspace.io import Field, validate
from weightspace.predict.base import (
    ArchitectureMismatchError,
    BasePredictor,
    Network,
    _layout_from_json,
    _unpack_fit,
    register_predictor,
)
from weightspace.predict.canonical import CANONICALIZE_MODES, canonicalize_graphs
from weightspace.predict.features import network_layout
from weightspace.runtime import torch_threads

__all__ = ["METANETWORKS", "MetaNetPredictor"]

#: ``kind -> weightspace.nn class name``
METANETWORKS = {"gmn": "GMN", "statnn": "StatNN", "flatmlp": "FlatMLP", "nfn": "NFN"}
#: upper limit of ``ensemble`` and ``snapshot_ensemble`` (each is a model to train or keep)
MAX_ENSEMBLE = 1024


def member_seed(seed: int, member: int) -> int:
    """Seed of ensemble member ``member``: ``seed`` itself for member 0 (so
    ``ensemble=1`` is the plain predictor), else one drawn from
    ``numpy.random.SeedSequence((seed, member))``."""
    if member == 0:
        return int(seed)
    return int(np.random.SeedSequence((int(seed), int(member))).generate_state(1, np.uint64)[0] & (2**63 - 1))


@register_predictor(*METANETWORKS)
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
        augment_group: what augmentation draws: ``"permute"`` (random spec
            permutations) or ``"full"`` (random elements of the full group:
            permutation, per-unit scale and sign; same function).
        canonicalize: ``"none"``, ``"scale_sign"`` or ``"full"``: replace
            every network (at fit and at predict) by its canonical form under
            that part of its symmetry group
            (:mod:`weightspace.predict.canonical`), so the predictor is
            invariant to it.
        stats_readout: GMN only: the hybrid readout that also sees the
            per-tensor weight statistics (``GMN(stats_dim=...)``, sized for
            the widest training architecture); still permutation invariant.
        lr_schedule: ``"constant"`` or ``"cosine"`` (to 0 over ``epochs``).
        ema_decay: validate and keep an exponential moving average of the
            weights, updated every optimizer step with this decay (in (0, 1);
            time constant ``1 / (1 - ema_decay)`` steps), instead of the raw
            weights (:class:`weightspace.nn.train.TrainConfig`); ``None``: off.
        rank_weight: add this weight times a pairwise logistic ranking loss
            on the standardized targets to the MSE (training and early
            stopping; ``TrainConfig.rank_weight``); ``0`` (default): MSE only.
        snapshot_ensemble: keep the states of the ``k`` best epochs by
            validation loss (``TrainConfig.snapshots``) and predict the mean
            of their predictions; no extra training. ``1`` (default): the
            best epoch only.
        ensemble: train ``n`` metanetworks and predict the mean of their
            predictions (with ``snapshot_ensemble``: of all ``n * k``
            states). Member 0 uses ``seed``, member ``i > 0`` a seed derived
            from ``(seed, i)`` (``numpy.random.SeedSequence``) for its
            initialization and batch order; all share the early-stopping
            hold-out drawn with ``seed``. ``n`` times the training cost.
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
        "augment_group": Field(str, choices=("permute", "full")),
        "canonicalize": Field(str, choices=tuple(CANONICALIZE_MODES)),
        "seed": Field(int, min=0, max=2**63 - 1), "allow_new_architectures": Field(bool), "device": Field(str),
        "progress": Field(bool), "num_threads": Field(int, min=1, max=4096, nullable=True),
        "stats_readout": Field(bool), "lr_schedule": Field(str, choices=("constant", "cosine")),
        "ema_decay": Field(float, nullable=True, min=0.0, max=1.0),
        "rank_weight": Field(float, min=0.0), "snapshot_ensemble": Field(int, min=1, max=MAX_ENSEMBLE),
        "ensemble": Field(int, min=1, max=MAX_ENSEMBLE),
    }

    def __init__(self, model: str = "gmn", *, model_kwargs: Mapping[str, Any] | None = None, epochs: int = 200,
                 batch_size: int = 32, lr: float = 1e-3, weight_decay: float = 1e-4, patience: int = 40,
                 val_fraction: float = 0.15, augment: bool | None = None,
                 augment_group: str = "permute", canonicalize: str = "none", seed: int = 0,
                 allow_new_architectures: bool = False, device: str = "cpu", progress: bool = False,
                 num_threads: int | None = 1, stats_readout: bool = False, lr_schedule: str = "constant",
                 ema_decay: float | None = None, rank_weight: float = 0.0, snapshot_ensemble: int = 1,
                 ensemble: int = 1) -> None:
        self.model = model
        self.model_kwargs = model_kwargs
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.val_fraction = val_fraction
        self.augment = augment
        self.augment_group = augment_group
        self.canonicalize = canonicalize
        self.seed = seed
        self.allow_new_architectures = allow_new_architectures
        self.device = device
        self.progress = progress
        self.num_threads = num_threads
        self.stats_readout = stats_readout
        self.lr_schedule = lr_schedule
        self.ema_decay = ema_decay
        self.rank_weight = rank_weight
        self.snapshot_ensemble = snapshot_ensemble
        self.ensemble = ensemble

    @classmethod
    def _from_kind(cls, kind: str, **params: Any) -> "MetaNetPredictor":
        return cls(kind, **params)

    @property
    def kind(self) -> str:  # type: ignore[override]
        return str(self.model)

    def _allow_new(self) -> bool:
        return bool(self.allow_new_architectures)

    def _build(self, graphs: Sequence[ParameterGraph]):
        from weightspace.nn import build_metanetwork

        if self.model not in METANETWORKS:
            raise ValueError(f"model must be one of {sorted(METANETWORKS)}, got {self.model!r}")
        cls_name = METANETWORKS[self.model]
        kw = dict(self.model_kwargs or {})
        kw["out_dim"] = 1
        t = graphs[0].template
        if cls_name == "GMN":
            kw.setdefault("edge_dim", max(64, max(g.template.max_width for g in graphs)))
            if self.stats_readout:
                from weightspace.nn import GMN

                kw.setdefault("stats_dim", max(GMN.stats_width(g.template) for g in graphs))
        elif cls_name == "StatNN":
            from weightspace.nn.baselines import NUM_STATS

            kw.setdefault("in_features", NUM_STATS * max(len(g.template.keys) for g in graphs))
        elif cls_name == "FlatMLP":
            kw.setdefault("in_features", max(g.template.num_values for g in graphs))
        elif cls_name == "NFN":
            from weightspace.nn import NFN

            return NFN.for_template(t, **kw)
        return build_metanetwork(cls_name, kw)

    def _check_options(self) -> None:
        if self.canonicalize not in CANONICALIZE_MODES:
            raise ConfigError(f"canonicalize must be one of {list(CANONICALIZE_MODES)}, got {self.canonicalize!r}",
                              field="canonicalize")
        if self.stats_readout and self.model != "gmn":
            raise ConfigError(f"stats_readout is a GMN option, not one of model={self.model!r}", field="stats_readout")
        from weightspace.nn.train import check_train_options

        check_train_options(augment_group=self.augment_group, lr_schedule=self.lr_schedule,
                            ema_decay=self.ema_decay, rank_weight=self.rank_weight)
        for name in ("snapshot_ensemble", "ensemble"):
            n = getattr(self, name)
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_ENSEMBLE:
                raise ConfigError(f"{name} must be an integer in [1, {MAX_ENSEMBLE}], got {n!r}", field=name)

    def _graphs(self, nets: Sequence[Network]) -> list[ParameterGraph]:
        """ParameterGraphs of ``nets``; state_dicts are matched to a known
        architecture by their tensor names and shapes."""
        from weightspace.core import graph_template

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
        from weightspace.nn.train import TrainConfig, fit

        nets, y, ds = _unpack_fit(X, y)
        if not all(isinstance(n, ParameterGraph) for n in nets):
            raise TypeError("fit a metanetwork predictor on ParameterGraphs or a WeightDataset, not state_dicts")
        self._check_finite(nets)
        self._check_options()
        nets = canonicalize_graphs(nets, self.canonicalize)
        groups = ds.groups if ds is not None else np.arange(len(nets))
        vf = float(self.val_fraction) if len(np.unique(groups)) > 2 else 0.0
        val_idx, train_idx = group_split(groups, (vf, 1.0 - vf), seed=int(self.seed))
        train = [(nets[i], float(y[i])) for i in train_idx]
        val = [(nets[i], float(y[i])) for i in val_idx]
        augment = (self.model == "flatmlp") if self.augment is None else bool(self.augment)
        results, models = [], []
        for member in range(int(self.ensemble)):
            seed = member_seed(int(self.seed), member)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = self._build(nets)
            cfg = TrainConfig(epochs=int(self.epochs), batch_size=int(self.batch_size), lr=float(self.lr),
                              weight_decay=float(self.weight_decay), patience=int(self.patience) if val else 0,
                              seed=seed, augment=augment,
                              augment_group=str(self.augment_group), lr_schedule=str(self.lr_schedule),
                              ema_decay=None if self.ema_decay is None else float(self.ema_decay),
                              rank_weight=float(self.rank_weight), snapshots=int(self.snapshot_ensemble),
                              progress=bool(self.progress), device=self.device)
            with torch_threads(self.num_threads):
                r = fit(model, train, val or None, cfg)
            results.append(r)
            models.append(r.model)
            for state in r.snapshots[1:]:  # the first snapshot is r.model's state
                snap = copy.deepcopy(r.model)
                snap.load_state_dict(state)
                models.append(snap.eval())
            r.snapshots = []  # the states live on in ``models``
        self.fit_result_ = results[0]
        self.fit_results_ = results
        self.models_ = models
        self.model_ = models[0]
        self.target_mean_ = float(self.fit_result_.target_mean)
        self.target_std_ = float(self.fit_result_.target_std)
        return self._fitted(nets, ds)

    def predict(self, X: Any, *, batch_size: int = 64) -> np.ndarray:
        """Predicted targets ``[n]`` for networks ``X`` (ParameterGraphs, or
        state_dicts of an architecture seen in training)."""
        from weightspace.nn.train import predict_metanetwork

        nets = self._networks(X)
        graphs = self._align(self._graphs(nets))
        self._check_finite(graphs)
        graphs = canonicalize_graphs(graphs, self.canonicalize)
        samples = [(g, 0.0) for g in graphs]
        with torch_threads(self.num_threads):
            outs = [predict_metanetwork(m, samples, None, batch_size=batch_size)[:, 0].double().numpy()
                    for m in self.models_]
        return np.mean(outs, axis=0) * self.target_std_ + self.target_mean_

    @property
    def history_(self) -> list[dict]:
        """Per-epoch training / validation losses."""
        return list(self.fit_result_.history)

    def _state(self):
        # the first model's arrays are ``model.*`` (as before ensembles existed), model j's ``model{j}.*``
        sd = {f"{_prefix(j)}{k}": v.detach().cpu().numpy()
              for j, m in enumerate(self.models_) for k, v in m.state_dict().items()}
        state = {
            "class": type(self.model_).__name__, "config": self.model_.config(),
            "target_mean": self.target_mean_, "target_std": self.target_std_,
            "best_epoch": int(self.fit_result_.best_epoch), "history": self.fit_result_.history,
            "n_models": len(self.models_),
        }
        return state, sd

    def _restore(self, state, arrays, path):
        from weightspace.nn.train import FitResult, TrainConfig, load_metanetwork

        ipath = path / "predictor.json"
        state = validate(state, {
            "class": Field(str, required=True), "config": Field(dict, required=True),
            "target_mean": Field(float, required=True), "target_std": Field(float, required=True, min=0.0),
            "best_epoch": Field(int, required=True, min=-1), "history": Field(list, required=True),
            "n_models": Field(int, min=1, max=MAX_ENSEMBLE**2),
        }, path=ipath, where="state")
        if state["class"] != METANETWORKS.get(self.model):
            raise ConfigError(f"saved metanetwork class {state['class']!r} does not match model={self.model!r}",
                              path=ipath, field="state.class")
        n = int(state.get("n_models", 1))  # files saved before ensembles hold one model
        if n > int(self.ensemble) * int(self.snapshot_ensemble):
            raise ConfigError(f"{n} saved models, more than ensemble * snapshot_ensemble = "
                              f"{int(self.ensemble) * int(self.snapshot_ensemble)}", path=ipath, field="state.n_models")
        tensors: list[dict] = [{} for _ in range(n)]
        prefixes = {_prefix(j): j for j in range(n)}
        for k, v in arrays.items():
            pre, dot, rest = k.partition(".")
            if not dot or f"{pre}." not in prefixes:
                raise StateDictError(f"unexpected array in the file (the weights of {n} metanetwork(s) are named "
                                     f"{', '.join(list(prefixes)[:3])}{'...' if n > 3 else ''}*)",
                                     path=path / "arrays.safetensors", field=k)
            tensors[prefixes[f"{pre}."]][rest] = torch.from_numpy(np.array(v))
        models = [load_metanetwork(state["class"], state["config"], t, path=path / "arrays.safetensors",
                                   config_path=ipath, where="state.config") for t in tensors]
        model = models[0]
        self.models_ = models
        self.model_ = model
        self.target_mean_, self.target_std_ = float(state["target_mean"]), float(state["target_std"])
        self.fit_result_ = FitResult(model=model, config=TrainConfig(), target_mean=self.target_mean_,
                                     target_std=self.target_std_, best_epoch=int(state["best_epoch"]),
                                     history=list(state["history"]))


def _prefix(j: int) -> str:
    """Name prefix of model ``j``'s arrays in ``arrays.safetensors``."""
    return "model." if j == 0 else f"model{j}."
