"""One plain training loop for every :class:`~weightspace.nn.MetaNetwork`.

Data is a list of ``(ParameterGraph, target)`` (or ``(graph, target,
node_extra)``) or a zoo (:func:`dataset_from_zoo`). Example::

    from weightspace.nn import GMN, StatNN
    from weightspace.nn.train import TrainConfig, dataset_from_zoo, split_dataset, fit, evaluate_metanetwork

    data = dataset_from_zoo(zoo, target="test_acc")
    train, val, test = split_dataset(data, (0.7, 0.15, 0.15), seed=0)
    result = fit(GMN(out_dim=1), train, val, TrainConfig(epochs=100, seed=0))
    metrics = evaluate_metanetwork(result.model, test, result)      # kendall_tau, r2, ...
    save_checkpoint(result.model, "runs/gmn", result=result)

Randomness (init is the caller's; shuffling, dropout, augmentation here) is
driven by ``TrainConfig.seed`` inside a forked RNG, so a run is reproducible
and the global RNG is left as it was.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from weightspace.common.batchnorm import recalibrate_batchnorm_
from weightspace.common.metrics import classification_metrics, regression_metrics
from weightspace.common.zoo_samples import zoo_checkpoints
from weightspace.graph import ParameterGraph
from weightspace.errors import ConfigError, InputFileError, MissingFileError
from weightspace.io import (
    Field, atomic_write, build_checked, check_type, did_you_mean, read_json, read_safetensors,
    save_state_dict, validate,
)
from weightspace.nn.base import MODEL_REGISTRY, MetaNetwork, build_metanetwork
from weightspace.symmetry import apply_permutation, apply_symmetry, random_permutation, random_symmetry

__all__ = [
    "TrainConfig",
    "check_train_options",
    "FitResult",
    "dataset_from_zoo",
    "split_dataset",
    "permute_sample",
    "pairwise_logistic_loss",
    "symmetry_sample",
    "fit",
    "evaluate_metanetwork",
    "predict_metanetwork",
    "evaluate",
    "predict",
    "regression_metrics",
    "classification_metrics",
    "save_checkpoint",
    "load_checkpoint",
]

Sample = tuple  # (ParameterGraph, target) or (ParameterGraph, target, node_extra [N, P])


@dataclass
class TrainConfig:
    """Hyperparameters of :func:`fit`.

    Attributes:
        task: ``"regression"`` (MSE on standardized targets) or
            ``"classification"`` (cross-entropy on integer labels).
        epochs: maximum number of epochs.
        batch_size: graphs per step.
        lr, weight_decay: AdamW.
        patience: stop after this many epochs without a better validation
            loss (the best model is restored); ``0`` disables early stopping.
        seed: shuffling, dropout and augmentation seed.
        augment: replace every training graph, every epoch, by a random
            spec permutation of itself (:func:`permute_sample`). Useless for
            invariant models, important for :class:`~weightspace.nn.FlatMLP`.
        augment_group: ``"permute"`` (:func:`permute_sample`) or ``"full"``
            (:func:`symmetry_sample`: permutation, per-unit scale and sign).
        lr_schedule: ``"constant"`` or ``"cosine"`` (per step, from ``lr``
            to 0 over ``epochs``; early stopping may end it sooner).
        normalize_targets: standardize regression targets with the training
            mean/std (predictions are mapped back).
        grad_clip: max gradient norm (``None``: off).
        ema_decay: keep an exponential moving average of the weights
            (``torch.optim.swa_utils.AveragedModel`` with
            ``get_ema_multi_avg_fn``, buffers included), updated after every
            optimizer step: ``avg = decay * avg + (1 - decay) * weights``
            (the first step copies). Its time constant is ``1 / (1 - decay)``
            steps. After each epoch the average's BatchNorm statistics are
            recomputed on the training data, the *average* is validated and
            early stopping keeps the best average, which is what the
            returned model carries (without validation data: the average
            at the epoch of lowest training loss). ``None`` (default): off.
        rank_weight: regression only: add ``rank_weight`` times a pairwise
            logistic ranking loss (RankNet: ``softplus(-(out_i - out_j))``
            averaged over the pairs of a batch with ``y_i > y_j``, per output
            column; :func:`pairwise_logistic_loss`) to the MSE, in training
            and in the early-stopping validation loss. It rewards ordering
            the targets rather than fitting their values. ``0`` (default): MSE.
        snapshots: also keep the states of the ``snapshots`` best epochs
            by validation loss (training loss without validation data),
            best first, in :attr:`FitResult.snapshots` (for a snapshot
            ensemble: average the predictions of these states). The
            restored model is the first of them either way; ``1`` (default)
            keeps only that one.
        progress: show a tqdm progress bar.
        device: torch device for the model and batches.
    """

    task: str = "regression"
    epochs: int = 200
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 30
    seed: int = 0
    augment: bool = False
    augment_group: str = "permute"
    lr_schedule: str = "constant"
    normalize_targets: bool = True
    grad_clip: float | None = 5.0
    ema_decay: float | None = None
    rank_weight: float = 0.0
    snapshots: int = 1
    progress: bool = False
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.task not in ("regression", "classification"):
            raise ValueError(f"task must be 'regression' or 'classification', got {self.task!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        check_train_options(augment_group=self.augment_group, lr_schedule=self.lr_schedule,
                            ema_decay=self.ema_decay, rank_weight=self.rank_weight)
        if self.rank_weight and self.task != "regression":
            raise ValueError(f"rank_weight is for regression; task is {self.task!r}")
        if isinstance(self.snapshots, bool) or not isinstance(self.snapshots, int) or self.snapshots < 1:
            raise ValueError(f"snapshots must be an integer >= 1, got {self.snapshots!r}")


def check_train_options(*, augment_group: str, lr_schedule: str, ema_decay: float | None,
                        rank_weight: float) -> None:
    """The training options :class:`TrainConfig` and the estimators that build
    one share, checked once: a :class:`~weightspace.errors.ConfigError` (a
    ``ValueError``) whose ``field`` names the option."""
    if augment_group not in ("permute", "full"):
        raise ConfigError(f"augment_group must be 'permute' or 'full', got {augment_group!r}", field="augment_group")
    if lr_schedule not in ("constant", "cosine"):
        raise ConfigError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}", field="lr_schedule")
    d = ema_decay
    if d is not None and (isinstance(d, bool) or not isinstance(d, (int, float)) or not 0.0 < d < 1.0):
        raise ConfigError(f"ema_decay must be a number in (0, 1) or None, got {d!r}", field="ema_decay")
    w = rank_weight
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 <= w < math.inf:
        raise ConfigError(f"rank_weight must be a finite number >= 0, got {w!r}", field="rank_weight")


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        model: the trained model (best validation state, eval mode; with
            ``ema_decay`` the best moving average of its weights).
        config: the :class:`TrainConfig`.
        target_mean, target_std: regression target standardization.
        best_epoch: epoch of the restored state (0-based).
        history: per epoch ``{"epoch", "train_loss", "val_loss", "lr"}``
            (``lr``: at the end of the epoch).
        snapshots: state dicts of the ``config.snapshots`` best epochs
            (fewer if fewer epochs ran), best first; the first is the
            restored model's.
        snapshot_epochs: their epochs (0-based), in the same order.
    """

    model: MetaNetwork
    config: TrainConfig
    target_mean: float = 0.0
    target_std: float = 1.0
    best_epoch: int = -1
    history: list[dict] = field(default_factory=list)
    snapshots: list[dict] = field(default_factory=list)
    snapshot_epochs: list[int] = field(default_factory=list)


# ------------------------------------------------------------------- data
def dataset_from_zoo(
    zoo: Any,
    target: str | Callable[[dict], float] = "test_acc",
    *,
    epoch: int | None = None,
    all_checkpoints: bool = False,
) -> list[tuple[ParameterGraph, float]]:
    """``(ParameterGraph, target)`` for every member (checkpoint) of a
    :class:`zoo.Zoo`.

    Args:
        zoo: a ``zoo.Zoo`` (or a view from ``filter``/``split``).
        target: a metric name of the checkpoint (``"test_acc"``) or a
            function of the checkpoint's metrics dict.
        epoch: which checkpoint (``None``: each member's final one).
        all_checkpoints: one sample per stored checkpoint instead.
    """
    out = []
    for ck in zoo_checkpoints(zoo, "all" if all_checkpoints else epoch):
        metrics = ck.metrics
        y = target(metrics) if callable(target) else metrics.get(target)
        if y is None:
            raise KeyError(f"member {ck.member.member_id} epoch {ck.epoch} has no metric {target!r}; it has {sorted(metrics)}")
        out.append((ck.graph(), float(y)))
    return out


def split_dataset(
    items: Sequence[Sample], fractions: Sequence[float] = (0.7, 0.15, 0.15), *, seed: int = 0,
    groups: Sequence[Any] | None = None,
) -> tuple[list[Sample], ...]:
    """Seeded split into parts of the given fractions (any number of parts;
    the last takes the rounding remainder), in item order within each part.

    Args:
        items: the samples.
        fractions: fraction of the groups in each part (non-negative, sum 1).
        seed: shuffling seed.
        groups: ``[n]`` group of each item (e.g. member ids, when there are
            several checkpoints per network): items of a group stay together.
            Default: every item its own group.

    The partition is :func:`weightspace.common.splits.group_split`'s, the
    one :meth:`zoo.Zoo.split` and :func:`weightspace.predict.random_split`
    use: the same groups, fractions and seed give the same parts.
    """
    from weightspace.common.splits import group_keys, group_split

    if groups is None:
        keys: Sequence[Any] = range(len(items))
    else:
        keys = group_keys(list(groups))
        if len(keys) != len(items):
            raise ValueError(f"groups has {len(keys)} entries for {len(items)} items")
    return tuple([items[int(j)] for j in idx] for idx in group_split(keys, fractions, seed=seed))


def permute_sample(sample: Sample, generator: torch.Generator) -> Sample:
    """The same network under a uniformly random spec permutation (same
    function, relabelled neurons); node extras are relabelled with it."""
    g = sample[0]
    t = g.template
    perm = random_permutation(t.spec, generator=generator)
    new = t.graph(apply_permutation(g.to_state_dict(), t.spec, perm))
    if len(sample) > 2 and sample[2] is not None:
        return (new, sample[1], sample[2][t.node_permutation(perm)])
    return (new, sample[1])


def symmetry_sample(sample: Sample, generator: torch.Generator) -> Sample:
    """The same network under a random element of its spec's full group
    (:func:`~weightspace.symmetry.random_symmetry`: permutation, per-unit
    scale and sign; same function); node extras are relabelled with the
    permutation."""
    g = sample[0]
    t = g.template
    sym = random_symmetry(t.spec, generator=generator)
    sd = apply_symmetry(g.to_state_dict(), t.spec, sym)
    new = t.graph(sd)
    if len(sample) > 2 and sample[2] is not None:
        return (new, sample[1], sample[2][t.node_permutation(sym.perm)])
    return (new, sample[1])


def _collate(model: MetaNetwork, samples: Sequence[Sample]):
    graphs = [s[0] for s in samples]
    extras = [s[2] for s in samples] if len(samples[0]) > 2 and samples[0][2] is not None else None
    return model.collate(graphs, node_extra=extras) if extras is not None else model.collate(graphs)


def _targets(samples: Sequence[Sample], task: str) -> Tensor:
    ys = [s[1] for s in samples]
    if task == "classification":
        return torch.as_tensor(ys, dtype=torch.long)
    return torch.as_tensor(np.asarray(ys, dtype=np.float32)).reshape(len(ys), -1)


# ------------------------------------------------------------------- loop
def _batches(n: int, size: int, generator: torch.Generator | None) -> Iterable[list[int]]:
    order = torch.randperm(n, generator=generator).tolist() if generator is not None else list(range(n))
    for i in range(0, n, size):
        yield order[i : i + size]


def pairwise_logistic_loss(out: Tensor, y: Tensor) -> Tensor:
    """RankNet's pairwise logistic loss of predictions ``out`` ``[n, d]``
    against targets ``y`` ``[n, d]``: the mean of ``softplus(out_j - out_i)``
    over the pairs with ``y_i > y_j`` (each unordered pair once; ties left
    out), averaged over the ``d`` columns. ``log 2`` when ``out`` is constant;
    0 when no pair differs in ``y``."""
    losses = []
    for c in range(y.shape[1]):
        higher = y[:, c, None] > y[None, :, c]  # [i, j]: y_i > y_j
        if higher.any():
            losses.append(torch.nn.functional.softplus(out[None, :, c] - out[:, c, None])[higher].mean())
    return torch.stack(losses).mean() if losses else out.sum() * 0.0


def _loss(out: Tensor, y: Tensor, task: str, rank_weight: float = 0.0) -> Tensor:
    if task == "classification":
        return torch.nn.functional.cross_entropy(out, y)
    loss = torch.nn.functional.mse_loss(out, y)
    return loss + rank_weight * pairwise_logistic_loss(out, y) if rank_weight else loss


@torch.no_grad()
def predict_metanetwork(model: MetaNetwork, samples: Sequence[Sample], result: FitResult | None = None,
            *, batch_size: int = 64) -> Tensor:
    """Graph-level predictions ``[n, out_dim]`` (regression outputs mapped
    back to target units with ``result``'s standardization)."""
    was = model.training
    model.eval()
    outs = []
    try:
        for idx in _batches(len(samples), batch_size, None):
            outs.append(model.predict(_collate(model, [samples[i] for i in idx])).float().cpu())
    finally:
        model.train(was)
    out = torch.cat(outs) if outs else torch.zeros(0, 1)
    if result is not None and result.config.task == "regression":
        out = out * result.target_std + result.target_mean
    return out


def evaluate_metanetwork(model: MetaNetwork, samples: Sequence[Sample], result: FitResult | None = None,
                         *, task: str | None = None) -> dict[str, float]:
    """Metrics of ``model`` on ``samples``: :func:`regression_metrics` or
    :func:`classification_metrics` (task from ``result`` or ``task``)."""
    task = task or (result.config.task if result is not None else "regression")
    pred = predict_metanetwork(model, samples, result).numpy()
    y = _targets(samples, task).numpy()
    return classification_metrics(pred, y) if task == "classification" else regression_metrics(pred, y)


def predict(model: MetaNetwork, samples: Sequence[Sample], result: FitResult | None = None,
            *, batch_size: int = 64) -> Tensor:
    """Deprecated alias of :func:`predict_metanetwork`."""
    warnings.warn("weightspace.nn.train.predict is deprecated; use weightspace.nn.train.predict_metanetwork",
                  DeprecationWarning, stacklevel=2)
    return predict_metanetwork(model, samples, result, batch_size=batch_size)


def evaluate(model: MetaNetwork, samples: Sequence[Sample], result: FitResult | None = None,
             *, task: str | None = None) -> dict[str, float]:
    """Deprecated alias of :func:`evaluate_metanetwork` (the name collided with
    ``predict.evaluate``, ``merge.evaluate`` and ``zoo.train.evaluate``)."""
    warnings.warn("weightspace.nn.train.evaluate is deprecated; use weightspace.nn.train.evaluate_metanetwork",
                  DeprecationWarning, stacklevel=2)
    return evaluate_metanetwork(model, samples, result, task=task)


def _recompute_batchnorm_(model: MetaNetwork, train: Sequence[Sample], batch_size: int) -> None:
    """Set the running statistics of ``model``'s BatchNorm layers to their
    exact average over ``train`` at the current weights (no-op without
    BatchNorm). The exponential running averages lag the weights: where a
    feature's spread across networks is far smaller than its drift per step
    (a GMN's graph readout, ``readout_norm="batch"``), the lagging statistics
    made the validation loss explode and early stopping keep the first epoch."""
    batches = (_collate(model, [train[i] for i in idx]) for idx in _batches(len(train), batch_size, None))
    recalibrate_batchnorm_(model, batches, model.predict)


def fit(model: MetaNetwork, train: Sequence[Sample], val: Sequence[Sample] | None = None,
        config: TrainConfig | None = None) -> FitResult:
    """Train ``model`` on ``train`` with early stopping on ``val``.

    Calls ``model.fit_normalization`` on the training graphs first, then
    AdamW with MSE (standardized targets) or cross-entropy. The model is
    trained in place (it is the thing being fitted) and returned in
    ``FitResult.model`` with its best-validation state, in eval mode.
    With ``config.ema_decay`` the validated, kept and restored state is the
    exponential moving average of the weights (see :class:`TrainConfig`).
    """
    from tqdm.auto import tqdm

    cfg = config or TrainConfig()
    if len(train) == 0:
        raise ValueError("fit needs at least one training sample")
    dev = torch.device(cfg.device)
    model.to(dev)
    result = FitResult(model=model, config=cfg)
    if cfg.task == "regression" and cfg.normalize_targets:
        y = _targets(train, "regression")
        result.target_mean = float(y.mean())
        result.target_std = float(y.std(unbiased=False).clamp(min=1e-8)) if len(train) > 1 else 1.0
    model.fit_normalization([s[0] for s in train])

    def norm_y(samples):
        y = _targets(samples, cfg.task)
        return (y - result.target_mean) / result.target_std if cfg.task == "regression" else y

    val_batches = None
    if val:
        val_batches = [(_collate(model, [val[i] for i in idx]), norm_y([val[i] for i in idx]).to(dev))
                       for idx in _batches(len(val), cfg.batch_size, None)]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = None
    if cfg.lr_schedule == "cosine":
        steps = cfg.epochs * math.ceil(len(train) / cfg.batch_size)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    ema = None
    if cfg.ema_decay is not None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    scored = model if ema is None else ema.module  # what is validated, kept and restored
    kept: list[tuple[float, int, dict]] = []  # the cfg.snapshots best (score, epoch, state), best first
    devices = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        aug_gen = torch.Generator().manual_seed(cfg.seed + 1)
        bar = tqdm(range(cfg.epochs), disable=not cfg.progress, desc=type(model).__name__, leave=False)
        for epoch in bar:
            model.train()
            total, count = 0.0, 0
            for idx in _batches(len(train), cfg.batch_size, gen):
                samples = [train[i] for i in idx]
                if cfg.augment:
                    move = symmetry_sample if cfg.augment_group == "full" else permute_sample
                    samples = [move(s, aug_gen) for s in samples]
                out = model.predict(_collate(model, samples))
                loss = _loss(out, norm_y(samples).to(dev), cfg.task, cfg.rank_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                if sched is not None:
                    sched.step()
                if ema is not None:
                    ema.update_parameters(model)
                total += float(loss.detach()) * len(idx)
                count += len(idx)
            row = {"epoch": epoch, "train_loss": total / count, "lr": float(opt.param_groups[0]["lr"])}
            _recompute_batchnorm_(scored, train, cfg.batch_size)
            if val_batches:
                scored.eval()
                with torch.no_grad():
                    vl = sum(float(_loss(scored.predict(b), y, cfg.task, cfg.rank_weight)) * len(y)
                             for b, y in val_batches)
                row["val_loss"] = vl / len(val)
            result.history.append(row)
            score = row.get("val_loss", row["train_loss"])
            if score < math.inf and (len(kept) < cfg.snapshots or score < kept[-1][0]):  # ties: earlier first
                at = next((i for i, item in enumerate(kept) if score < item[0]), len(kept))
                kept.insert(at, (score, epoch, {k: v.detach().clone() for k, v in scored.state_dict().items()}))
                del kept[cfg.snapshots:]
            bar.set_postfix(loss=f"{row['train_loss']:.4f}", val=f"{row.get('val_loss', float('nan')):.4f}")
            if cfg.patience and epoch - (kept[0][1] if kept else -1) >= cfg.patience:
                break
    if kept:
        model.load_state_dict(kept[0][2])
    result.best_epoch = kept[0][1] if kept else -1
    result.snapshots = [k[2] for k in kept]
    result.snapshot_epochs = [k[1] for k in kept]
    model.eval()
    return result


# ------------------------------------------------------------- checkpoint
#: Upper limit of any integer in a saved metanetwork config (widths, feature
#: counts, embedding sizes): far above any model this library trains, and it
#: keeps a tampered file from asking for absurd sizes. The model's total size
#: is bounded separately (:func:`weightspace.io.build_checked`).
CONFIG_INT_MAX = 2**24
#: Tighter limits for counts of repeated blocks (each one is a module to build).
CONFIG_COUNT_MAX = {"num_layers": 256, "depth": 256}


def _field_for(hint: Any, name: str, required: bool):
    """A :class:`~weightspace.io.Field` for a constructor argument annotated ``hint``."""
    import collections.abc
    import typing


    nullable = False
    args = typing.get_args(hint)
    if args and type(None) in args:  # Optional[X] / X | None
        nullable = True
        rest = [a for a in args if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else object
    origin = typing.get_origin(hint) or hint
    if hint is bool:
        return Field(bool, required=required, nullable=nullable)
    if hint is int:
        return Field(int, required=required, nullable=nullable, min=0, max=CONFIG_COUNT_MAX.get(name, CONFIG_INT_MAX))
    if hint is float:
        return Field(float, required=required, nullable=nullable)
    if hint is str:
        return Field(str, required=required, nullable=nullable)
    if origin in (list, tuple, collections.abc.Sequence):
        return Field(list, required=required, nullable=nullable)
    if origin in (dict, collections.abc.Mapping):
        return Field(dict, required=required, nullable=nullable)
    return Field(object, required=required, nullable=True)


def metanetwork_config_schema(cls: type) -> dict:
    """Schema (:func:`weightspace.io.validate`) of ``cls``'s constructor
    arguments, from its signature and annotations: types, ``>= 0`` and
    :data:`CONFIG_INT_MAX` for integers, no unknown keys."""
    import inspect
    import typing

    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # pragma: no cover - unresolvable annotations: types unchecked
        hints = {}
    schema = {}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        schema[name] = _field_for(hints.get(name, object), name, p.default is inspect.Parameter.empty)
    return schema


def check_metanetwork_config(name: Any, config: Any, *, path: object = None, where: str = "config") -> dict:
    """``config`` of metanetwork class ``name`` read from the file ``path``,
    checked against the class's constructor (:func:`metanetwork_config_schema`;
    integers in sequences too). Returns the checked config.

    Raises:
        ConfigError: unknown class, unknown key, wrong type or out-of-range
            value, naming ``path`` and the key.
    """

    check_type(name, str, path=path, field="class")
    if name not in MODEL_REGISTRY:
        raise ConfigError(f"unknown metanetwork class {name!r}{did_you_mean(name, list(MODEL_REGISTRY))} "
                          f"(known: {', '.join(sorted(MODEL_REGISTRY))})", path=path, field="class")
    schema = metanetwork_config_schema(MODEL_REGISTRY[name])
    cfg = validate(config, schema, path=path, where=where)
    for key, f in schema.items():
        if f.type is list and isinstance(cfg.get(key), list):
            for i, v in enumerate(cfg[key]):
                check_type(v, (int, float, str, bool), path=path, field=f"{where}.{key}[{i}]")
                if isinstance(v, int) and not isinstance(v, bool) and not 0 <= v <= CONFIG_INT_MAX:
                    raise ConfigError(f"must be in [0, {CONFIG_INT_MAX}], got {v}", path=path, field=f"{where}.{key}[{i}]")
    return cfg


def load_metanetwork(name: Any, config: Any, tensors: dict, *, path: object = None,
                     config_path: object = None, where: str = "config") -> MetaNetwork:
    """A metanetwork rebuilt from a saved ``(class name, config)`` and its
    stored ``tensors`` (read from ``path``): the config is checked
    (:func:`check_metanetwork_config`), the model's size bounded and its
    tensors matched by name and shape before anything is allocated
    (:func:`weightspace.io.build_checked`). Returns the model in eval mode."""

    cpath = path if config_path is None else config_path
    cfg = check_metanetwork_config(name, config, path=cpath, where=where)
    model = build_checked(lambda: build_metanetwork(name, cfg), tensors, path=path, field=where, config_path=cpath)
    return model.eval()


def save_checkpoint(model: MetaNetwork, path: str | os.PathLike, *, result: FitResult | None = None,
                    extra: dict | None = None) -> Path:
    """Write ``model.safetensors`` (weights) and ``config.json`` (class,
    constructor config, training config, target standardization, ``extra``)
    into directory ``path`` (each file replaced atomically); returns it.

    Raises:
        InputFileError: ``path`` is an existing file.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputFileError("is a file; save_checkpoint writes a directory (model.safetensors + config.json)", path=path)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_state_dict(sd, path / "model.safetensors")
    info: dict[str, Any] = {"class": type(model).__name__, "config": model.config(), "extra": extra or {}}
    if result is not None:
        info.update(train=asdict(result.config), target_mean=result.target_mean, target_std=result.target_std,
                    best_epoch=result.best_epoch, history=result.history)
    atomic_write(path / "config.json", json.dumps(info, indent=2, default=str))
    return path


def _checkpoint_schema() -> dict:

    return {
        "class": Field(str, required=True), "config": Field(dict, required=True), "extra": Field(dict),
        "train": Field(dict), "target_mean": Field(float), "target_std": Field(float, min=0.0),
        "best_epoch": Field(int, min=-1), "history": Field(list),
    }


def load_checkpoint(path: str | os.PathLike, **overrides: Any) -> tuple[MetaNetwork, dict]:
    """``(model, info)`` from :func:`save_checkpoint`'s directory; ``overrides``
    replace constructor arguments (e.g. ``backend="dgl"``).

    Nothing a damaged or tampered directory asks for is allocated before it is
    checked: ``config.json`` against a schema (:func:`check_metanetwork_config`),
    the model's size, and the names and shapes of the tensors in
    ``model.safetensors``.

    Raises:
        MissingFileError / InputFileError: a file is missing, a directory,
            empty, truncated or not JSON / safetensors.
        ConfigError: a wrong type, out-of-range value or unknown key in
            ``config.json`` (named).
        StateDictError: the stored tensors do not match the model (named).
    """
    path = Path(path)
    if not path.is_dir():
        if not path.exists():
            raise MissingFileError("no saved metanetwork here (a directory with config.json and model.safetensors)", path=path)
        raise InputFileError("is a file; a saved metanetwork is a directory with config.json and model.safetensors", path=path)
    cpath = path / "config.json"
    info = validate(read_json(cpath, what="metanetwork config (config.json)"), _checkpoint_schema(), path=cpath)
    tensors = read_safetensors(path / "model.safetensors", what="metanetwork weights (model.safetensors)")
    model = load_metanetwork(info["class"], {**info["config"], **overrides}, tensors,
                             path=path / "model.safetensors", config_path=cpath)
    return model, info
