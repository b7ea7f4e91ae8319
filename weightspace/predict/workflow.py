"""End-to-end helpers behind ``weightspace predict``: fit a predictor on a
zoo with a held-out evaluation, and rank checkpoint files with a saved one."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from weightspace.arch import ModelRef, resolve_model
from weightspace.core import analyze, graph_template
from weightspace.data import ZooLike
from weightspace.errors import WeightspaceError
from weightspace.io import load_state_dict
from weightspace.predict.data import WeightDataset, zoo_dataset
from weightspace.predict.features import network_layout
from weightspace.predict.metrics import MetricCI, evaluate
from weightspace.predict.predictors import BasePredictor, load_predictor, make_predictor
from weightspace.predict.splits import Split, hyperparameter_split, random_split, seed_split

__all__ = ["FitReport", "fit_zoo", "make_split", "rank_checkpoints", "lower_is_better"]

SPLITS = ("random", "seed", "ood")


@dataclass
class FitReport:
    """What :func:`fit_zoo` did.

    Attributes:
        predictor: the fitted predictor (fit on the training part only).
        target: target metric name.
        model: predictor kind.
        split: split description.
        n_train, n_test: rows (checkpoints) in each part.
        metrics: held-out metrics with bootstrap CIs over members (empty if
            there is no test part).
        test_true, test_pred: ``[n_test]`` arrays.
        path: where the predictor was saved (or ``None``).
        dropped: rows the dataset left out (non-finite weights / targets).
    """

    predictor: BasePredictor
    target: str
    model: str
    split: str
    n_train: int
    n_test: int
    metrics: dict[str, MetricCI] = field(default_factory=dict)
    test_true: np.ndarray = field(default_factory=lambda: np.zeros(0))
    test_pred: np.ndarray = field(default_factory=lambda: np.zeros(0))
    path: Path | None = None
    dropped: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "target": self.target, "model": self.model, "split": self.split, "n_train": self.n_train,
            "n_test": self.n_test, "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
            "path": None if self.path is None else str(self.path), "dropped": dict(self.dropped),
            "params": {k: v for k, v in self.predictor.get_params().items()},
        }


def make_split(
    dataset: WeightDataset,
    split: str = "random",
    *,
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    seed: int = 0,
    ood_column: str | None = None,
    ood_train: Sequence[Any] | None = None,
    ood_test: Sequence[Any] | None = None,
    ood_threshold: float | None = None,
) -> Split:
    """One of the splits of :mod:`~weightspace.predict.splits` by name:
    ``"random"`` (members), ``"seed"`` (training seeds) or ``"ood"`` (by
    ``ood_column`` values or threshold)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "ood":
        if ood_column is None:
            raise ValueError("split='ood' needs ood_column (e.g. 'activation' or 'lr')")
        return hyperparameter_split(dataset, ood_column, train=ood_train, test=ood_test, threshold=ood_threshold,
                                    val_fraction=val_fraction, seed=seed)
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    fr = (1.0 - test_fraction - val_fraction, val_fraction, test_fraction)
    return (seed_split if split == "seed" else random_split)(dataset, fr, seed=seed)


def fit_zoo(
    zoo: ZooLike,
    target: str = "test_acc",
    model: str = "gbm",
    *,
    checkpoints: str | Sequence[int] = "all",
    params: Mapping[str, Any] | None = None,
    n_resamples: int = 1000,
    out: str | os.PathLike | None = None,
    **split_options: Any,
) -> FitReport:
    """Fit a predictor on a zoo, evaluate it on held-out members, save it.

    Args:
        zoo: the zoo: any :class:`~weightspace.data.ZooLike` (``zoo.Zoo(path)``
            or a ``filter``/``split`` view of one).
        target: metric to predict (see :func:`~weightspace.predict.zoo_dataset`).
        model: predictor kind (:func:`~weightspace.predict.make_predictor`).
        checkpoints: ``"all"``, ``"final"`` or a list of epochs.
        params: predictor constructor arguments.
        n_resamples: bootstrap resamples of the metrics' CIs.
        out: directory to save the fitted predictor to.
        split_options: how members are held out, the keywords of
            :func:`make_split`: ``split`` (``"random"``, ``"seed"`` or
            ``"ood"``), ``test_fraction`` (0.2; 0: fit on everything, no
            metrics), ``seed`` (0; also the predictor's seed unless
            ``params`` sets one, and the bootstrap's), ``ood_column``,
            ``ood_train``, ``ood_test``, ``ood_threshold``.

    Returns:
        :class:`FitReport`.
    """
    import inspect

    try:
        so = inspect.signature(make_split).bind(None, **split_options)
    except TypeError as exc:
        raise TypeError(f"fit_zoo: {exc} (split options are make_split's)") from None
    so.apply_defaults()
    so = {k: v for k, v in so.arguments.items() if k != "dataset"}
    split, test_fraction, seed = so["split"], so["test_fraction"], so["seed"]
    if not isinstance(zoo, ZooLike):
        raise TypeError(
            f"fit_zoo needs a zoo (an object with members() and to_pandas(), e.g. zoo.Zoo(path)), "
            f"got {type(zoo).__name__} {zoo!r}"
        )
    ds = zoo_dataset(zoo, target, checkpoints=checkpoints)
    if len(ds) < 4:
        raise ValueError(f"the zoo gives only {len(ds)} usable networks; need at least 4")
    kw = dict(params or {})
    if model.lower() != "linear" and model.lower() != "mean":
        kw.setdefault("seed", seed)
    predictor = make_predictor(model, **kw)
    if split != "ood" and test_fraction == 0:
        sp = Split(np.arange(len(ds)), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        desc = "none (fit on every network)"
    else:
        sp = make_split(ds, **so)
        desc = split if split != "ood" else f"ood on {so['ood_column']}"
    train_idx = np.sort(np.concatenate([sp.train, sp.val]))
    predictor.fit(ds.subset(train_idx))
    report = FitReport(predictor, ds.target, model, desc, int(train_idx.size), int(sp.test.size), dropped=ds.dropped)
    if sp.test.size >= 2:
        test = ds.subset(sp.test)
        pred = predictor.predict(test)
        report.test_true, report.test_pred = test.y, pred
        report.metrics = evaluate(test.y, pred, groups=test.groups, n_resamples=n_resamples, seed=seed)
    if out is not None:
        report.path = predictor.save(out)
    return report


def lower_is_better(target: str | None) -> bool:
    """Whether smaller values of ``target`` are better (losses, gaps)."""
    t = (target or "").lower()
    return "loss" in t or t.startswith("gap") or "error" in t


def rank_checkpoints(
    checkpoints: Sequence[str | os.PathLike | Mapping],
    predictor: BasePredictor | str | os.PathLike,
    *,
    arch: Any = None,
    arch_kwargs: Mapping[str, Any] | None = None,
    descending: bool | None = None,
) -> list[dict]:
    """Predict and rank checkpoints, best first.

    Args:
        checkpoints: checkpoint files (``.safetensors``, or torch files read
            with ``weights_only=True``) or state_dicts.
        predictor: a fitted predictor or the directory of a saved one.
        arch, arch_kwargs: the checkpoints' architecture, any model reference
            (:func:`weightspace.arch.resolve_model`: a registered name plus
            ``arch_kwargs``, ``"hf:DIR"`` -- checkpoints then hold the
            directory's tensor names --, ``"pkg.mod:factory"`` plus
            ``arch_kwargs``, an ``nn.Module``). Every checkpoint is checked
            against it, and it against the architectures the predictor was
            fit on; needed for a metanetwork predictor meeting an
            architecture it did not record (``allow_new_architectures``).
        descending: best = highest prediction; default from the target
            (:func:`lower_is_better`).

    Returns:
        ``[{"rank", "checkpoint", "prediction"}]`` sorted best first.

    Raises:
        ArchitectureMismatchError: ``arch`` (or a checkpoint) is not an
            architecture the predictor was fit on; one line naming both.
        StateDictError: a checkpoint does not fit ``arch`` (naming the file and tensor).
        ModelRefError / UnknownNameError / MissingFileError: a bad ``arch``.
    """
    p = predictor if isinstance(predictor, BasePredictor) else load_predictor(predictor)
    nets, names = [], []
    for c in checkpoints:
        if isinstance(c, Mapping):
            nets.append(dict(c))
            names.append(f"<state_dict {len(names)}>")
        else:
            nets.append(load_state_dict(c))
            names.append(str(c))
    if arch is not None:
        nets = _graphs_of(nets, names, p, arch, arch_kwargs)
    try:
        pred = p.predict(nets)
    except (ValueError, KeyError) as exc:  # name the file, not "network i"
        msg = str(exc)
        m = re.match(r"network (\d+) ", msg)
        if m is None or int(m.group(1)) >= len(names):
            raise
        new = type(exc)(f"checkpoint {names[int(m.group(1))]} " + msg[m.end():])
        raise new from exc
    if descending is None:
        descending = not lower_is_better(p.target_)
    order = np.argsort(-pred if descending else pred, kind="stable")
    return [{"rank": r + 1, "checkpoint": names[i], "prediction": float(pred[i])} for r, i in enumerate(order)]


def _graphs_of(nets: Sequence[Mapping], names: Sequence[str], predictor: BasePredictor, arch: Any,
               arch_kwargs: Mapping[str, Any] | None) -> list:
    """The ParameterGraphs of checkpoints of the architecture ``arch`` names,
    after checking it against the predictor's (one line naming both) and
    every checkpoint against it (naming the file)."""
    ref = ModelRef.parse(arch, **dict(arch_kwargs or {}))
    r = resolve_model(ref, seed=0, load_weights=False)
    template = graph_template(ref) if ref.kind != "module" else analyze(r.module, r.example_input).template
    predictor.check_architecture(ref.identity, network_layout(r.module.state_dict()),
                                 name=r.arch, kwargs=dict(ref.kwargs) if r.arch else None)
    out = []
    for sd, name in zip(nets, names):
        path = None if name.startswith("<") else name
        try:
            if r.hf is not None:  # the directory's tensor names (tied copies may be left out)
                sd = r.hf.complete(r.module, sd, path=path)
            out.append(template.graph(sd))
        except WeightspaceError as exc:
            if exc.path is not None or path is None:
                raise
            raise type(exc)(f"the checkpoint does not fit {ref.identity}: {exc.message}", path=path,
                            field=exc.field) from None
    return out
