"""Merge configs in the spirit of mergekit: a YAML file lists the models
(weights file + architecture), the method and its options.

Example::

    arch: resnet20                      # default architecture of every model
    arch_kwargs: {width: 4, in_channels: 1, image_size: 8}
    models:
      - path: runs/a.safetensors        # .safetensors, or .pt/.pth (weights only)
      - path: runs/b.safetensors
        weight: 1.0                     # averaging weight (default 1)
    method: weight_matching             # see METHODS
    reference: 0                        # basis / width of the result
    options: {seed: 0, max_sweeps: 100} # keyword arguments of the method
    data:                               # optional: needed by activation_matching,
      dataset: digits                   #   ste, fisher, repair and the barrier
      options: {}                       #   (weightspace.data.load_dataset(dataset, **options))
      split: train                      # split used for matching / statistics
      eval_split: test                  # split the barrier is evaluated on
      max_samples: 2048
    # or  data: {path: data.npz}        # arrays x, y (+ x_test, y_test)
    repair: repair                      # none | reset_bn | repair
    barrier: {num_lambdas: 25}          # linear path between the two aligned models

Methods (``METHODS``): ``average``, ``weight_matching``, ``merge_many``,
``activation_matching``, ``ste``, ``ot_fusion`` (widths may differ),
``fisher``, ``task_arithmetic`` (needs ``base: {path: ...}``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from weightspace.arch import create_model
from weightspace.core import permutation_spec
from weightspace.data import load_dataset
from weightspace.io import load_state_dict
from weightspace.merge._common import MergeError, instantiate
from weightspace.merge.average import average, diagonal_fisher, fisher_average, task_arithmetic
from weightspace.merge.barrier import evaluate, linear_path
from weightspace.merge.matching import activation_matching, ste_matching, weight_matching
from weightspace.merge.multi import align_to_reference, merge_many
from weightspace.merge.ot_fusion import ot_fusion
from weightspace.merge.repair import repair, reset_bn_stats

__all__ = ["METHODS", "MergeConfig", "MergeOutcome", "ModelEntry", "load_config", "run_config"]

METHODS = (
    "average",
    "weight_matching",
    "merge_many",
    "activation_matching",
    "ste",
    "ot_fusion",
    "fisher",
    "task_arithmetic",
)
_REPAIR = ("none", "reset_bn", "repair")
_TOP_KEYS = {"arch", "arch_kwargs", "models", "method", "reference", "options", "data", "repair", "barrier", "base", "seed"}


@dataclass
class ModelEntry:
    """One model of a config: weights file, architecture, averaging weight."""

    path: Path
    arch: str
    arch_kwargs: dict = field(default_factory=dict)
    weight: float = 1.0


@dataclass
class MergeConfig:
    """A validated merge config (see module docstring)."""

    models: list[ModelEntry]
    method: str
    reference: int = 0
    options: dict = field(default_factory=dict)
    data: dict | None = None
    repair: str = "none"
    barrier: dict | None = None
    base: ModelEntry | None = None
    seed: int = 0


def _entry(raw: Any, i: str, default_arch: str | None, default_kw: Mapping, root: Path) -> ModelEntry:
    if isinstance(raw, str):
        raw = {"path": raw}
    if not isinstance(raw, Mapping) or "path" not in raw:
        raise MergeError(f"config: {i} must be a mapping with a 'path' (got {raw!r})")
    unknown = set(raw) - {"path", "arch", "arch_kwargs", "weight"}
    if unknown:
        raise MergeError(f"config: {i} has unknown keys {sorted(unknown)}")
    arch = raw.get("arch", default_arch)
    if not arch:
        raise MergeError(f"config: {i} has no 'arch' and the config has no default 'arch'")
    kw = dict(default_kw)
    kw.update(raw.get("arch_kwargs") or {})
    path = Path(os.path.expanduser(str(raw["path"])))
    if not path.is_absolute():
        path = root / path
    w = float(raw.get("weight", 1.0))
    return ModelEntry(path, str(arch), kw, w)


def load_config(path_or_dict: str | os.PathLike | Mapping) -> MergeConfig:
    """Parse and validate a YAML config file (or an already-loaded mapping).

    Relative model paths are resolved against the config file's folder.

    Raises:
        MergeError: unknown keys or method, missing paths/architectures.
        FileNotFoundError: the config file does not exist.
    """
    import yaml

    if isinstance(path_or_dict, Mapping):
        raw, root = dict(path_or_dict), Path.cwd()
    else:
        p = Path(path_or_dict)
        if not p.exists():
            raise FileNotFoundError(f"no merge config at {p}")
        raw = yaml.safe_load(p.read_text())
        root = p.resolve().parent
    if not isinstance(raw, Mapping):
        raise MergeError("config: the top level must be a mapping")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise MergeError(f"config: unknown keys {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")
    method = raw.get("method")
    if method not in METHODS:
        raise MergeError(f"config: method must be one of {list(METHODS)}, got {method!r}")
    models_raw = raw.get("models")
    if not isinstance(models_raw, list) or not models_raw:
        raise MergeError("config: 'models' must be a non-empty list")
    arch, kw = raw.get("arch"), raw.get("arch_kwargs") or {}
    models = [_entry(m, f"models[{i}]", arch, kw, root) for i, m in enumerate(models_raw)]
    base = _entry(raw["base"], "base", arch, kw, root) if raw.get("base") is not None else None
    if method == "task_arithmetic" and base is None:
        raise MergeError("config: method task_arithmetic needs 'base: {path: ...}'")
    ref = int(raw.get("reference", 0))
    if not 0 <= ref < len(models):
        raise MergeError(f"config: reference {ref} out of range for {len(models)} models")
    rep = str(raw.get("repair", "none") or "none")
    if rep not in _REPAIR:
        raise MergeError(f"config: repair must be one of {list(_REPAIR)}, got {rep!r}")
    data = raw.get("data")
    if data is not None and (not isinstance(data, Mapping) or not ({"dataset", "path"} & set(data))):
        raise MergeError("config: data needs 'dataset' (a zoo dataset name) or 'path' (.npz/.pt with x, y)")
    barrier = raw.get("barrier")
    if barrier is True:
        barrier = {}
    return MergeConfig(
        models, str(method), ref, dict(raw.get("options") or {}), dict(data) if data else None,
        rep, dict(barrier) if isinstance(barrier, Mapping) else None, base, int(raw.get("seed", 0)),
    )


# -------------------------------------------------------------------- data
def load_data(cfg: Mapping) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``((x, y) for matching/statistics, (x, y) for evaluation)`` from a config's ``data``."""
    n = cfg.get("max_samples")
    if "dataset" in cfg:
        ds = load_dataset(cfg["dataset"], **dict(cfg.get("options") or {}))
        split, ev = cfg.get("split", "train"), cfg.get("eval_split", "test")
        for s in (split, ev):
            if s not in ("train", "val", "test"):
                raise MergeError(f"config: data split must be train, val or test, got {s!r}")
        fit = (getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}"))
        evl = (getattr(ds, f"x_{ev}"), getattr(ds, f"y_{ev}"))
    else:
        path = Path(os.path.expanduser(str(cfg["path"])))
        if not path.exists():
            raise FileNotFoundError(f"no data file at {path}")
        if path.suffix == ".npz":
            import numpy as np

            with np.load(path) as z:
                arrays = {k: torch.as_tensor(z[k]) for k in z.files}
        else:
            arrays = dict(torch.load(path, map_location="cpu", weights_only=True))
        if "x" not in arrays or "y" not in arrays:
            raise MergeError(f"{path}: data file needs arrays 'x' and 'y' (optionally 'x_test', 'y_test')")
        fit = (arrays["x"], arrays["y"])
        evl = (arrays.get("x_test", arrays["x"]), arrays.get("y_test", arrays["y"]))
    x, y = fit
    if x.is_floating_point():
        x = x.float()
    ex, ey = evl
    if ex.is_floating_point():
        ex = ex.float()
    if n is not None:
        x, y = x[: int(n)], y[: int(n)]
    return (x, y.long()), (ex, ey.long())


# ------------------------------------------------------------------ running
@dataclass
class MergeOutcome:
    """What :func:`run_config` produced.

    Attributes:
        state_dict: the merged weights.
        arch, arch_kwargs: architecture of the merged model.
        summary: JSON-friendly facts (method, models, objective, evaluations).
        path: :class:`~weightspace.merge.barrier.PathResult` between the two
            aligned models (``None`` without data, with != 2 models, or
            different widths).
        path_naive: the same path before alignment (for comparison).
    """

    state_dict: dict[str, torch.Tensor]
    arch: str
    arch_kwargs: dict
    summary: dict
    path: Any = None
    path_naive: Any = None


def run_config(cfg: MergeConfig, *, progress: bool = False) -> MergeOutcome:
    """Load the models of ``cfg``, merge them, optionally REPAIR and measure
    the barrier. Never prints.

    Raises:
        MergeError, StateDictError, NonFiniteWeightsError: with the file and
        tensor at fault.
    """
    names = [str(m.path) for m in cfg.models]
    sds = []
    for m in cfg.models:
        try:
            sds.append(load_state_dict(m.path))
        except FileNotFoundError:
            raise FileNotFoundError(f"model weights not found: {m.path}") from None
    ref = cfg.models[cfg.reference]
    arch_keys = {(m.arch, repr(sorted(m.arch_kwargs.items()))) for m in cfg.models}
    if len({a for a, _ in arch_keys}) > 1:
        raise MergeError(
            f"models have different architectures {sorted({m.arch for m in cfg.models})}; "
            "only models of one architecture (family) can be merged"
        )
    if len(arch_keys) > 1 and cfg.method != "ot_fusion":
        raise MergeError(
            f"models have different architecture arguments ({[m.arch_kwargs for m in cfg.models]}); "
            "only method ot_fusion merges different widths"
        )
    module = create_model(ref.arch, seed=0, **ref.arch_kwargs)
    spec = permutation_spec(ref.arch, **ref.arch_kwargs)
    fit = evl = None
    if cfg.data is not None:
        fit, evl = load_data(cfg.data)
    needs_data = cfg.method in ("activation_matching", "ste", "fisher") or cfg.repair != "none"
    if needs_data and fit is None:
        raise MergeError(f"method {cfg.method!r} / repair {cfg.repair!r} needs 'data' in the config")
    opts = dict(cfg.options)
    weights = [m.weight for m in cfg.models]
    aligned = None
    summary: dict = {"method": cfg.method, "models": names, "arch": ref.arch, "arch_kwargs": ref.arch_kwargs}
    n = len(sds)
    if cfg.method == "average":
        merged = average(sds, weights, names=names)
        aligned = sds
    elif cfg.method == "weight_matching":
        opts.setdefault("seed", cfg.seed)
        res = align_to_reference(
            sds, spec, reference=cfg.reference, weights=weights, names=names,
            matcher=lambda a, b: weight_matching(a, b, spec, validate=False, progress=progress, **opts).perm,
        )
        merged, aligned = res.state_dict, res.aligned
    elif cfg.method == "merge_many":
        opts.setdefault("seed", cfg.seed)
        res = merge_many(sds, spec, weights=weights, names=names, **opts)
        merged, aligned = res.state_dict, res.aligned
        summary["rounds"] = res.rounds
    elif cfg.method == "activation_matching":
        mods = [instantiate(module, sd) for sd in sds]
        res = align_to_reference(
            sds, spec, reference=cfg.reference, weights=weights, names=names,
            matcher=lambda a, b: activation_matching(
                mods[cfg.reference], instantiate(module, b), fit[0], spec, **opts
            ).perm,
        )
        merged, aligned = res.state_dict, res.aligned
    elif cfg.method == "ste":
        opts.setdefault("seed", cfg.seed)
        res = align_to_reference(
            sds, spec, reference=cfg.reference, weights=weights, names=names,
            matcher=lambda a, b: ste_matching(module, a, b, fit, spec, progress=progress, **opts).perm,
        )
        merged, aligned = res.state_dict, res.aligned
    elif cfg.method == "ot_fusion":
        specs = [permutation_spec(m.arch, **m.arch_kwargs) for m in cfg.models]
        if opts.get("ground") == "activations":
            opts["models"] = [
                instantiate(create_model(m.arch, seed=0, **m.arch_kwargs), sd)
                for m, sd in zip(cfg.models, sds)
            ]
            opts["data"] = fit[0]
        res = ot_fusion(sds, specs, target=cfg.reference, weights=weights, names=names, **opts)
        merged, aligned = res.state_dict, res.aligned
    elif cfg.method == "fisher":
        fishers = [
            diagonal_fisher(module, sd, fit, seed=cfg.seed, **{k: v for k, v in opts.items() if k in ("labels", "max_samples", "batch_size")})
            for sd in sds
        ]
        merged = fisher_average(sds, fishers, weights, names=names, eps=float(opts.get("eps", 1e-8)))
        aligned = sds
    elif cfg.method == "task_arithmetic":
        base = load_state_dict(cfg.base.path)
        merged = task_arithmetic(base, sds, opts.get("scale", 1.0))
    else:  # pragma: no cover - validated in load_config
        raise MergeError(f"unknown method {cfg.method!r}")

    if cfg.repair == "reset_bn":
        merged = reset_bn_stats(module, merged, fit[0])
    elif cfg.repair == "repair":
        if aligned is None:
            raise MergeError("repair needs endpoint models; it is not defined for task_arithmetic")
        merged = repair(module, merged, aligned, fit[0], weights=weights, spec=spec)
    summary["repair"] = cfg.repair

    path = path_naive = None
    if evl is not None:
        summary["eval"] = {}
        if len(arch_keys) == 1:
            for i, sd in enumerate(sds):
                loss, acc = evaluate(module, sd, evl)
                summary["eval"][f"model{i}"] = {"loss": loss, "accuracy": acc}
        loss, acc = evaluate(module, merged, evl)
        summary["eval"]["merged"] = {"loss": loss, "accuracy": acc}
        if cfg.barrier is not None and n == 2 and aligned is not None and len(arch_keys) == 1:
            bopts = dict(cfg.barrier)
            corr = None if cfg.repair == "none" else cfg.repair
            a, b = aligned[cfg.reference], aligned[1 - cfg.reference]
            path = linear_path(module, a, b, evl, correction=corr, correction_data=fit[0], spec=spec, **bopts)
            path_naive = linear_path(
                module, sds[cfg.reference], sds[1 - cfg.reference], evl, correction=corr,
                correction_data=fit[0], spec=spec, **bopts,
            )
            summary["barrier"] = {
                "aligned": {"loss": path.loss_barrier, "error": path.error_barrier},
                "naive": {"loss": path_naive.loss_barrier, "error": path_naive.error_barrier},
            }
    return MergeOutcome(merged, ref.arch, dict(ref.arch_kwargs), summary, path, path_naive)
