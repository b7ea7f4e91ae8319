"""Training one zoo member: a pure function of its :class:`~zoo.recipe.MemberSpec`.

:func:`train_member` builds the architecture with the member's seed, trains it
on its dataset and returns a :class:`MemberResult` holding the kept
checkpoints (as numpy arrays, cheap to send between processes) and their
metrics. It never touches the global RNG state of the caller: all randomness
comes from ``numpy.random.SeedSequence(seed)`` streams and, for modules that
draw from torch's global RNG (dropout), from a forked and seeded RNG.

Metrics per checkpoint (classification): ``train_loss``, ``train_acc``,
``val_loss``, ``val_acc``, ``test_loss``, ``test_acc``, ``gap_acc``
(train - test accuracy) and ``gap_loss`` (test - train loss). INR members
report ``*_loss`` (MSE) and ``*_psnr`` (peak 1.0) with ``gap_psnr``. Train
metrics are measured on the member's training subset with the labels it was
trained on (noisy labels included), in eval mode.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zoo.datasets import Dataset, load_dataset
from zoo.errors import RecipeError
from zoo.recipe import MemberSpec
from weightspace.arch import resolve_model

__all__ = ["CheckpointResult", "MemberResult", "train_member", "evaluate_model", "member_streams"]


@dataclass
class CheckpointResult:
    """One kept checkpoint: ``state_dict`` maps names to numpy arrays."""

    epoch: int
    step: int
    metrics: dict[str, float]
    state_dict: dict[str, np.ndarray]


@dataclass
class MemberResult:
    """Everything a trained member produced.

    Attributes:
        status: ``"ok"``, or ``"diverged"`` when the loss became non-finite
            (training stops; the last checkpoint holds the weights at that point).
        metrics: final metrics (those of the last checkpoint) plus
            ``wall_time`` and ``epochs_trained``.
        extra: dataset facts worth keeping with the member (e.g. INR ``label``).
    """

    member_id: str
    index: int
    seed: int
    config: dict
    config_hash: str
    status: str
    checkpoints: list[CheckpointResult]
    metrics: dict[str, float]
    wall_time: float
    extra: dict = field(default_factory=dict)


def member_streams(seed: int) -> dict[str, int]:
    """Independent 63-bit seeds for each random choice of a member, derived
    from its training seed (init uses ``seed`` itself so that a member's init
    equals ``zoo.create_model(arch, seed=seed)``)."""
    ss = np.random.SeedSequence(int(seed))
    names = ("shuffle", "subset", "noise", "torch")
    vals = [int(s.generate_state(2, np.uint64)[0] >> np.uint64(1)) for s in ss.spawn(len(names))]
    return dict(zip(names, vals))


def _member_data(ds: Dataset, data_cfg: Mapping[str, Any], streams: dict[str, int]):
    x, y = ds.x_train, ds.y_train
    frac = float(data_cfg.get("train_fraction", 1.0))
    if not 0 < frac <= 1:
        raise RecipeError(f"data.train_fraction must be in (0, 1], got {frac}")
    if frac < 1:
        g = torch.Generator().manual_seed(streams["subset"])
        keep = max(1, int(round(frac * len(x))))
        idx = torch.randperm(len(x), generator=g)[:keep].sort().values
        x, y = x[idx], y[idx]
    noise = float(data_cfg.get("label_noise", 0.0))
    if noise:
        if ds.task != "classification":
            raise RecipeError(f"data.label_noise only applies to classification datasets, not {ds.name!r}")
        if not 0 <= noise <= 1:
            raise RecipeError(f"data.label_noise must be in [0, 1], got {noise}")
        g = torch.Generator().manual_seed(streams["noise"])
        flip = torch.rand(len(y), generator=g) < noise
        # Flipped labels go to a uniformly random *other* class, so the noise rate is exact.
        shift = torch.randint(1, ds.num_classes, (len(y),), generator=g)
        y = torch.where(flip, (y + shift) % ds.num_classes, y)
    return x, y


def _optimizer(params, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    name = str(cfg["optimizer"]).lower()
    lr, wd = float(cfg["lr"]), float(cfg["weight_decay"])
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(cfg["momentum"]), weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=float(cfg["momentum"]), weight_decay=wd)
    raise RecipeError(f"train.optimizer: unknown optimizer {name!r}; use adam, adamw, sgd or rmsprop")


def _loss(task: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if task == "classification":
        return F.cross_entropy(out, y)
    return F.mse_loss(out, y)


def _logits(out: Any) -> torch.Tensor:
    """A model's output tensor; a Hugging Face model's ``ModelOutput`` gives its ``logits``."""
    return out if isinstance(out, torch.Tensor) else getattr(out, "logits", out)


@torch.no_grad()
def evaluate_model(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str, batch_size: int = 1024
) -> dict[str, float]:
    """Mean loss and accuracy (classification) or PSNR (INR, peak 1.0) of
    ``model`` on ``(x, y)``, in eval mode. Returns NaNs for an empty set."""
    was_training = model.training
    model.eval()
    n = len(x)
    if n == 0:
        return {"loss": math.nan, "acc" if task == "classification" else "psnr": math.nan}
    total_loss, correct = 0.0, 0
    for i in range(0, n, batch_size):
        out = _logits(model(x[i : i + batch_size]))
        yb = y[i : i + batch_size]
        if task == "classification":
            total_loss += F.cross_entropy(out, yb, reduction="sum").item()
            correct += int((out.argmax(dim=1) == yb).sum())
        else:
            total_loss += F.mse_loss(out, yb, reduction="sum").item() / yb.shape[1]
    model.train(was_training)
    loss = total_loss / n
    if task == "classification":
        return {"loss": loss, "acc": correct / n}
    psnr = 10.0 * math.log10(1.0 / loss) if loss > 0 else math.inf
    return {"loss": loss, "psnr": psnr if math.isfinite(loss) else math.nan}


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str, batch_size: int = 1024) -> dict[str, float]:
    """Deprecated alias of :func:`evaluate_model` (the name collided with
    ``nn.train.evaluate``, ``predict.metrics.evaluate`` and ``merge.evaluate``)."""
    warnings.warn("zoo.train.evaluate is deprecated; use zoo.train.evaluate_model", DeprecationWarning, stacklevel=2)
    return evaluate_model(model, x, y, task, batch_size)


def _all_metrics(model, ds: Dataset, x_tr, y_tr, bs: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for split, (x, y) in (("train", (x_tr, y_tr)), ("val", ds.split("val")), ("test", ds.split("test"))):
        for k, v in evaluate_model(model, x, y, ds.task, bs).items():
            out[f"{split}_{k}"] = float(v)
    score = "acc" if ds.task == "classification" else "psnr"
    out[f"gap_{score}"] = out[f"train_{score}"] - out[f"test_{score}"]
    out["gap_loss"] = out["test_loss"] - out["train_loss"]
    return out


def _snapshot(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().clone().numpy() for k, v in model.state_dict().items()}


def train_member(
    spec: MemberSpec | Mapping[str, Any],
    *,
    dataset: Dataset | None = None,
    threads: int | None = 1,
) -> MemberResult:
    """Train one member and return its checkpoints and metrics.

    Args:
        spec: a :class:`MemberSpec` or its ``to_dict()``.
        dataset: the member's dataset if already loaded (otherwise
            ``load_dataset(**config["data"])``, cached per process).
        threads: torch intra-op threads while training (restored afterwards);
            1 keeps results identical across backends and avoids
            oversubscription in process pools. ``None`` leaves it alone.

    Returns:
        :class:`MemberResult`; deterministic given the spec (same weights,
        bit for bit, on the same machine and thread count).
    """
    if isinstance(spec, MemberSpec):
        spec = spec.to_dict()
    cfg = spec["config"]
    tcfg, dcfg = cfg["train"], cfg["data"]
    seed = int(cfg["seed"])
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        with torch.random.fork_rng(devices=[]):
            return _train(spec, cfg, tcfg, dcfg, seed, dataset)
    finally:
        if threads is not None:
            torch.set_num_threads(old_threads)


def _train(spec, cfg, tcfg, dcfg, seed, dataset) -> MemberResult:
    streams = member_streams(seed)
    ds = dataset if dataset is not None else load_dataset(**dcfg)
    # wall_time covers training and evaluation, not the (per-process, cached) dataset load.
    t0 = time.perf_counter()
    x_tr, y_tr = _member_data(ds, dcfg, streams)
    # any model reference a recipe names (a registered name, pkg.mod:factory, hf:DIR; seeded init)
    model = resolve_model(cfg["arch"], seed=seed, load_weights=False, require_input=False, **cfg["model"]).module
    scale = float(tcfg.get("init_scale", 1.0))
    if scale != 1.0:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(scale)
    # Dropout and other modules that use torch's global RNG draw from this
    # seeded (forked) state, so a member is reproducible in any process.
    torch.manual_seed(streams["torch"])
    opt = _optimizer(model.parameters(), tcfg)
    epochs, bs = int(tcfg["epochs"]), int(tcfg["batch_size"])
    if bs <= 0:
        raise RecipeError(f"train.batch_size must be positive, got {bs}")
    n = len(x_tr)
    steps_per_epoch = max(1, math.ceil(n / bs))
    sched = None
    if tcfg.get("lr_schedule", "constant") == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch))
    elif tcfg.get("lr_schedule", "constant") != "constant":
        raise RecipeError(f"train.lr_schedule must be 'constant' or 'cosine', got {tcfg['lr_schedule']!r}")
    clip = tcfg.get("grad_clip")
    keep = set(int(e) for e in cfg["checkpoints"])
    ebs = int(tcfg.get("eval_batch_size", 1024))
    gen = torch.Generator().manual_seed(streams["shuffle"])

    checkpoints: list[CheckpointResult] = []
    step = 0
    status = "ok"
    epoch = 0
    if 0 in keep:
        checkpoints.append(CheckpointResult(0, 0, _all_metrics(model, ds, x_tr, y_tr, ebs), _snapshot(model)))
    model.train()
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, bs):
            idx = perm[i : i + bs]
            loss = _loss(ds.task, _logits(model(x_tr[idx])), y_tr[idx])
            if not torch.isfinite(loss):
                status = "diverged"
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                nn.utils.clip_grad_norm_(model.parameters(), float(clip))
            opt.step()
            if sched is not None:
                sched.step()
            step += 1
        if status != "ok" or epoch in keep:
            checkpoints.append(
                CheckpointResult(epoch, step, _all_metrics(model, ds, x_tr, y_tr, ebs), _snapshot(model))
            )
        if status != "ok":
            break
    wall = time.perf_counter() - t0
    final = dict(checkpoints[-1].metrics)
    final["wall_time"] = wall
    final["epochs_trained"] = checkpoints[-1].epoch
    extra = {k: v for k, v in ds.meta.items() if k == "label"}
    return MemberResult(
        member_id=spec["member_id"],
        index=int(spec["index"]),
        seed=seed,
        config=cfg,
        config_hash=spec["config_hash"],
        status=status,
        checkpoints=checkpoints,
        metrics=final,
        wall_time=wall,
        extra=extra,
    )
