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

Models other than registered architectures (``model:`` on an entry, or at
the top as the default of every entry; see :mod:`weightspace.arch.ref`)::

    models:                             # two local Hugging Face directories
      - model: {hf: runs/gpt2-a}        # config.json + model.safetensors (or sharded)
      - model: {hf: runs/gpt2-b}        # (no path: the directory holds the weights)
    method: average

    model: {factory: "mypkg.models:make_mlp", kwargs: {width: 64}}
    models: [a.safetensors, b.safetensors]

Methods (``METHODS``): ``average``, ``weight_matching``, ``merge_many``,
``activation_matching``, ``ste``, ``ot_fusion`` (widths may differ),
``fisher``, ``task_arithmetic``, ``ties``, ``dare``, ``breadcrumbs`` (these
four need ``base: {path: ...}``; ``models[i].weight`` is the task's weight),
``slerp`` (two models); each is one
adapter registered with :func:`~weightspace.merge.methods.merge_method`.

Validation happens before anything runs: every key is checked for its type
and range, unknown keys, methods, architectures, architecture arguments and
method options (against the method function's signature) are refused with a
did-you-mean, and every error is a :class:`MergeConfigError` naming the config
file and the dotted key (``models[1].weight``). Relative paths (``models``,
``base``, ``data.path``) are resolved against the config file's folder.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from weightspace.arch import HFCheckpoint, ModelRef, create_model, get_model_info, list_models, resolve_model
from weightspace.arch.ref import INDEX_FILE, _import_factory, _one, tied_names
from weightspace.core import permutation_spec
from weightspace.data import load_dataset
from weightspace.errors import ConfigError, InputFileError, MissingFileError, TraceError, WeightspaceError
from weightspace.io import Field, check_type, did_you_mean, load_state_dict, read_npy, read_yaml, validate
from weightspace.merge._common import MergeConfigError, MergeError, check_state_dict, coordinates
from weightspace.merge.barrier import linear_path, loss_and_accuracy
from weightspace.merge.activations import STATS_BYTES
from weightspace.merge.matching import (
    CACHE_BYTES, _coord_name, _coord_tensors, _first_then, activation_matching, weight_matching,
)
from weightspace.merge.methods import METHODS, MethodInputs, get_method
from weightspace.merge.repair import repair, reset_bn_stats
from weightspace.merge.stream import _DTYPES, NO_BASE, WEIGHTED, StreamPlan, _check_options, merge_directories

__all__ = [
    "METHODS", "MergeConfig", "MergeConfigError", "MergeOutcome", "ModelEntry", "load_config", "run_config",
    "run_config_streamed", "streaming_blocker", "AlignedStreamPlan", "ALIGNED_STREAMED",
]

_REPAIR = ("none", "reset_bn", "repair")
_SPLITS = ("train", "val", "test")

_TOP_SCHEMA = {
    "method": Field(str, required=True, choices=METHODS),
    "models": Field(list, required=True),
    "arch": Field(str, nullable=True),
    "arch_kwargs": Field(dict, nullable=True),
    "model": Field((dict, str), nullable=True),
    "reference": Field(int, default=0, min=0),
    "options": Field(dict, nullable=True),
    "data": Field(dict, nullable=True),
    "repair": Field(str, nullable=True, choices=_REPAIR),
    "barrier": Field((dict, bool), nullable=True),
    "base": Field((dict, str), nullable=True),
    "seed": Field(int, default=0),
}
_MODEL_SCHEMA = {
    "path": Field(str),
    "model": Field((dict, str), nullable=True),
    "arch": Field(str, nullable=True),
    "arch_kwargs": Field(dict, nullable=True),
    "weight": Field(float, default=1.0, min=0.0),
}
_DATA_SCHEMA = {
    "dataset": Field(str),
    "path": Field(str),
    "options": Field(dict, nullable=True),
    "split": Field(str, choices=_SPLITS),
    "eval_split": Field(str, choices=_SPLITS),
    "max_samples": Field(int, min=1, nullable=True),
}


@dataclass
class ModelEntry:
    """One model of a config: weights file, architecture, averaging weight.

    ``key`` is the entry's dotted key in the config (``models[1]``, ``base``)
    and ``kwargs_key`` the key its ``arch_kwargs`` came from; both are named
    in errors."""

    path: Path
    arch: str
    arch_kwargs: dict = field(default_factory=dict)
    weight: float = 1.0
    key: str = "models[0]"
    kwargs_key: str = "arch_kwargs"
    ref: ModelRef | None = None  # a Hugging Face directory or a factory (``model:``); None for ``arch:``
    ref_key: str = "model"

    @property
    def arch_key(self) -> tuple:
        """Entries with equal keys share one module and spec."""
        if self.ref is not None and self.ref.kind == "hf":
            return ("hf", str(Path(self.ref.target).resolve()))
        return (self.arch, repr(sorted(self.arch_kwargs.items())))


@dataclass
class MergeConfig:
    """A validated merge config (see module docstring). ``source`` is the
    config file (``None`` for a config given as a mapping)."""

    models: list[ModelEntry]
    method: str
    reference: int = 0
    options: dict = field(default_factory=dict)
    data: dict | None = None
    repair: str = "none"
    barrier: dict | None = None
    base: ModelEntry | None = None
    seed: int = 0
    source: Path | None = None


def _check(value: Any, schema: Mapping[str, Field], source: Path | None, where: str) -> dict:
    """:func:`weightspace.io.validate`, raising :class:`MergeConfigError`."""
    try:
        return validate(value, schema, path=source, where=where)
    except ConfigError as exc:
        raise MergeConfigError(exc.message, path=exc.path, field=exc.field) from None


def _resolve(p: str, root: Path) -> Path:
    path = Path(os.path.expanduser(p))
    return path if path.is_absolute() else root / path


# ------------------------------------------------------- option signatures
def _option_targets(method: str) -> list[tuple[Callable, frozenset[str]]]:
    """The functions whose keyword arguments are a method's ``options``, and
    per function the arguments the runner sets itself (or that YAML cannot
    carry: modules, tensors, callables, dtypes) -- as registered with
    :func:`~weightspace.merge.methods.merge_method`."""
    return list(get_method(method).options)


def _split_top(text: str, sep: str) -> list[str]:
    """``text`` split at ``sep`` outside brackets."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == sep and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return parts + [cur]


_SIMPLE_TYPES = {"int": int, "float": float, "bool": bool, "str": str}
_SEQUENCE_TYPES = ("Sequence", "list", "tuple")
# ranges and choices of option names the methods share
_POSITIVE = {"batch_size", "max_samples", "max_bytes", "max_sweeps", "max_rounds", "num_itermax", "steps", "num_lambdas"}
_NON_NEGATIVE = {"lr", "reg", "eps", "tol", "rtol", "lam"}
_CHOICES = {
    "fallback": ("weights", "error"),
    "labels": ("sampled", "argmax", "given"),
    "solver": ("emd", "sinkhorn"),
    "ground": ("weights", "activations"),
    "trim": ("global", "per_tensor"),
    "sign": ("sum", "weighted_sum"),
    "rescale": ("inverse_density", "l1", "none"),
    "combine": ("linear", "ties"),
}
_UNIT = {"density", "beta", "t", "t_default", "dot_threshold"}  # fractions: in [0, 1] (list elements too)


def _parse_annotation(ann: Any) -> tuple[list[type], bool, type | None]:
    """``(types, nullable, list element type)`` of an annotation string such as
    ``"int"``, ``"int | None"``, ``"float | Sequence[float]"``; ``[object]``
    (anything) for an annotation it does not understand."""
    types: list[type] = []
    nullable, element = False, None
    for part in (p.strip() for p in _split_top(ann if isinstance(ann, str) else "", "|")):
        if part == "None":
            nullable = True
        elif part in _SIMPLE_TYPES:
            types.append(_SIMPLE_TYPES[part])
        elif part.split("[")[0] in _SEQUENCE_TYPES:
            types.append(list)
            element = _SIMPLE_TYPES.get(part.partition("[")[2].rstrip("]").strip())
        else:
            return [object], True, None
    return types or [object], nullable, element


def _field_of(name: str, param: inspect.Parameter) -> Field:
    """A schema :class:`Field` from a keyword argument's annotation."""
    types, nullable, _ = _parse_annotation(param.annotation)
    if list in types and name in _UNIT:  # ranges of "float | list" options: checked per value
        return Field(tuple(types) if len(types) > 1 else types[0], nullable=nullable or param.default is None)
    return Field(
        tuple(types) if len(types) > 1 else types[0],
        nullable=nullable or param.default is None,
        min=1 if name in _POSITIVE else (0.0 if name in _NON_NEGATIVE or name in _UNIT else None),
        max=1.0 if name in _UNIT else None,
        choices=_CHOICES.get(name),
    )


def _signature_params(targets: list[tuple[Callable, set[str]]]) -> dict[str, inspect.Parameter]:
    """The keyword arguments with defaults of ``targets`` the config may set."""
    params: dict[str, inspect.Parameter] = {}
    for fn, skip in targets:
        for name, p in inspect.signature(fn).parameters.items():
            if p.default is inspect.Parameter.empty or name in skip:
                continue
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                params[name] = p
    return params


def _signature_schema(targets: list[tuple[Callable, set[str]]]) -> dict[str, Field]:
    return {name: _field_of(name, p) for name, p in _signature_params(targets).items()}


def _check_signature_options(values: Any, targets: list[tuple[Callable, set[str]]], source: Path | None,
                             where: str) -> dict:
    """``values`` checked against the keyword arguments of ``targets``:
    unknown names (did-you-mean), types, ranges, choices and list elements."""
    params = _signature_params(targets)
    out = _check(values, {name: _field_of(name, p) for name, p in params.items()}, source, where)
    for name, v in out.items():
        if name in _UNIT and isinstance(v, (int, float)) and not 0 <= v <= 1:
            raise MergeConfigError(f"must lie in [0, 1], got {v}", path=source, field=f"{where}.{name}")
        element = _parse_annotation(params[name].annotation)[2]
        if isinstance(v, list) and element is not None:
            for i, item in enumerate(v):
                try:
                    check_type(item, element, path=source, field=f"{where}.{name}[{i}]")
                except ConfigError as exc:
                    raise MergeConfigError(exc.message, path=exc.path, field=exc.field) from None
                if name in _UNIT and not 0 <= item <= 1:
                    raise MergeConfigError(f"must lie in [0, 1], got {item}", path=source,
                                           field=f"{where}.{name}[{i}]")
    return out


def option_schema(method: str) -> dict[str, Field]:
    """The ``options`` a method accepts (name -> :class:`Field`), derived from
    the signature of the function(s) that run it."""
    return _signature_schema(_option_targets(method))


def _barrier_targets() -> list[tuple[Callable, set[str]]]:

    return [(linear_path, {"correction", "correction_data", "loss_fn", "spec", "progress"})]


# ------------------------------------------------------------- architectures
def _check_arch(arch: str, kw: Mapping, own_kw: Mapping, arch_key: str, kw_key: str, source: Path | None) -> None:
    """``arch`` is registered and ``kw`` names only its arguments."""
    names = list_models()
    if arch not in names:
        raise MergeConfigError(
            f"unknown architecture {arch!r}{did_you_mean(arch, names)} (registered: {', '.join(names)})",
            path=source, field=arch_key,
        )
    params = inspect.signature(get_model_info(arch).factory).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    for k in kw:
        if k not in params:
            where = kw_key if k in own_kw else "arch_kwargs"
            raise MergeConfigError(
                f"architecture {arch!r} has no argument {k!r}{did_you_mean(k, list(params))} "
                f"(it accepts: {', '.join(params)})",
                path=source, field=f"{where}.{k}",
            )


def _model_ref(raw: Any, key: str, root: Path, source: Path | None) -> ModelRef:
    """``raw`` (a ``model:`` value) as a checked :class:`ModelRef`: a factory
    string imports, a Hugging Face directory exists."""
    try:
        ref = ModelRef.parse(raw, root=root)
    except ConfigError as exc:
        raise MergeConfigError(exc.message, path=source, field=f"{key}.{exc.field}" if exc.field else key) from None
    if ref.kind == "factory":
        try:
            _import_factory(ref.target)
        except ConfigError as exc:
            raise MergeConfigError(exc.message, path=source, field=f"{key}.factory") from None
    if ref.kind == "hf":
        d = Path(ref.target)
        if not d.is_dir():
            raise MissingFileError(f"no Hugging Face model directory here ({key}.hf"
                                   + (f" of {source})" if source else ")"), path=d, field=f"{key}.hf")
    return ref


def _entry(raw: Any, key: str, default_arch: str | None, default_kw: Mapping, root: Path,
           source: Path | None, default_model: ModelRef | None = None) -> ModelEntry:
    if isinstance(raw, str):
        raw = {"path": raw}
    e = _check(raw, _MODEL_SCHEMA, source, key)
    if e.get("model") is not None and (e.get("arch") or e.get("arch_kwargs")):
        raise MergeConfigError("give either 'model' or 'arch'/'arch_kwargs', not both", path=source,
                               field=f"{key}.model")
    ref, ref_key = default_model, "model"
    if e.get("model") is not None:
        ref, ref_key = _model_ref(e["model"], f"{key}.model", root, source), f"{key}.model"
    elif e.get("arch"):
        ref = None
    if ref is not None and ref.kind == "registry":  # model: {arch: ..., arch_kwargs: ...}
        e = {**e, "arch": ref.target, "arch_kwargs": dict(ref.kwargs)}
        ref = None
    if ref is not None:
        if ref.kind == "hf":
            if "path" in e:
                raise MergeConfigError("a Hugging Face directory holds its own weights; drop 'path'", path=source,
                                       field=f"{key}.path")
            return ModelEntry(Path(ref.target), f"hf:{ref.target}", {}, float(e["weight"]), key, ref_key, ref,
                              ref_key)
        if "path" not in e:
            raise MergeConfigError("missing required key (the weights file of this model)", path=source,
                                   field=f"{key}.path")
        return ModelEntry(_resolve(e["path"], root), str(ref.target), dict(ref.kwargs), float(e["weight"]), key,
                          f"{ref_key}.kwargs", ref, ref_key)
    if "path" not in e:
        raise MergeConfigError("missing required key (the weights file; or give 'model: {hf: DIR}')", path=source,
                               field=f"{key}.path")
    arch = e.get("arch") or default_arch
    if not arch:
        raise MergeConfigError("has no 'arch' and the config has no default 'arch'", path=source, field=f"{key}.arch")
    own_kw = dict(e.get("arch_kwargs") or {})
    kw = dict(default_kw)
    kw.update(own_kw)
    kw_key = f"{key}.arch_kwargs" if own_kw else "arch_kwargs"
    _check_arch(str(arch), kw, own_kw, f"{key}.arch" if e.get("arch") else "arch", kw_key, source)
    return ModelEntry(_resolve(e["path"], root), str(arch), kw, float(e["weight"]), key, kw_key)


def _check_data(raw: Mapping, root: Path, source: Path | None) -> dict:
    d = _check(raw, _DATA_SCHEMA, source, "data")
    has = [k for k in ("dataset", "path") if k in d]
    if len(has) != 1:
        raise MergeConfigError(
            "needs exactly one of 'dataset' (a zoo dataset name) or 'path' (.npz with arrays x, y, "
            f"optionally x_test, y_test); got {has or 'neither'}",
            path=source, field="data",
        )
    if "path" in d:
        for k in ("options", "split", "eval_split"):
            if k in d:
                raise MergeConfigError(
                    "only applies to data.dataset; a data file holds x, y (and optionally x_test, y_test)",
                    path=source, field=f"data.{k}",
                )
        d["path"] = _resolve(d["path"], root)
    else:
        d["options"] = dict(d.get("options") or {})
        d.setdefault("split", "train")
        d.setdefault("eval_split", "test")
    return d


def load_config(path_or_dict: str | os.PathLike | Mapping) -> MergeConfig:
    """Parse and validate a YAML config file (or an already-loaded mapping).

    Every key is checked before anything runs. Relative paths (models, base,
    ``data.path``) are resolved against the config file's folder (the working
    directory for a mapping).

    Raises:
        MergeConfigError: a wrong type or range, an unknown key, method,
            option, architecture or architecture argument -- naming the file
            and the dotted key.
        InputFileError: the config file is missing, unreadable or not YAML.
    """
    if isinstance(path_or_dict, Mapping):
        raw, root, source = dict(path_or_dict), Path.cwd(), None
    else:
        source = Path(path_or_dict).expanduser()
        raw = read_yaml(source, what="merge config")
        root = source.resolve().parent
    if raw is None:
        raise MergeConfigError("the config is empty; it needs at least 'method' and 'models'", path=source)
    top = _check(raw, _TOP_SCHEMA, source, "")
    method = top["method"]
    models_raw = top["models"]
    if not models_raw:
        raise MergeConfigError("must list at least one model", path=source, field="models")
    arch, kw = top.get("arch"), dict(top.get("arch_kwargs") or {})
    default_model = None
    if top.get("model") is not None:
        if arch or top.get("arch_kwargs"):
            raise MergeConfigError("give either 'model' or 'arch'/'arch_kwargs', not both", path=source, field="model")
        default_model = _model_ref(top["model"], "model", root, source)
    models = [_entry(m, f"models[{i}]", arch, kw, root, source, default_model) for i, m in enumerate(models_raw)]
    if sum(m.weight for m in models) <= 0:
        raise MergeConfigError("the models' weights sum to 0; give at least one a positive weight",
                               path=source, field="models[0].weight")
    base = None
    if top.get("base") is not None:
        base = _entry(top["base"], "base", arch, kw, root, source, default_model)
        if not get_method(method).needs_base:
            first, *more = [m for m in METHODS if get_method(m).needs_base]
            raise MergeConfigError(f"'base' is only used by method {first} (and {', '.join(more)}), not {method!r}",
                                   path=source, field="base")
    if get_method(method).needs_base and base is None:
        raise MergeConfigError(f"method {method} needs 'base: {{path: ...}}' (the pre-trained model)",
                               path=source, field="base")
    if (get_method(method).needs_base or method == "slerp") and top.get("repair") == "repair":
        raise MergeConfigError(f"REPAIR needs endpoint models; it is not defined for {method} "
                               "(use reset_bn or none)", path=source, field="repair")
    count = get_method(method).num_models
    if count is not None and len(models) != count:
        raise MergeConfigError(f"method {method} merges exactly {count} models, got {len(models)}",
                               path=source, field="models")
    ref = top["reference"]
    if ref >= len(models):
        raise MergeConfigError(f"reference {ref} is out of range for {len(models)} models (0..{len(models) - 1})",
                               path=source, field="reference")
    opts = dict(top.get("options") or {})
    if opts and not option_schema(method):
        names = sorted(map(str, opts))
        raise MergeConfigError(f"method {method!r} takes no options, got {names}",
                               path=source, field=f"options.{names[0]}")
    opts = _check_signature_options(opts, _option_targets(method), source, "options")
    for per_model in ("scale", "density"):  # one value, or one per model
        if isinstance(opts.get(per_model), list) and len(opts[per_model]) != len(models):
            raise MergeConfigError(f"has {len(opts[per_model])} entries for {len(models)} models",
                                   path=source, field=f"options.{per_model}")
    data = _check_data(top["data"], root, source) if top.get("data") is not None else None
    if opts.get("ground") == "activations" and data is None:
        raise MergeConfigError("ground: activations needs 'data' in the config", path=source, field="options.ground")
    barrier = top.get("barrier")
    if barrier is True:
        barrier = {}
    elif barrier is False:
        barrier = None
    if barrier is not None:
        barrier = _check_signature_options(barrier, _barrier_targets(), source, "barrier")
    return MergeConfig(
        models, method, ref, opts, data, top.get("repair") or "none", barrier, base, top["seed"], source,
    )


# -------------------------------------------------------------------- data
def _read_arrays(path: Path) -> dict[str, Any]:
    """The arrays of a data file (``.npz``; ``.pt``/``.pth`` read with
    ``weights_only``), never unpickling anything."""
    if path.suffix == ".npz":
        arrays = read_npy(path, what="data file (.npz)")
        if not isinstance(arrays, dict):  # pragma: no cover - read_npy returns a dict for .npz
            raise InputFileError("expected an .npz archive of arrays", path=path)
        return arrays
    if path.suffix in (".pt", ".pth"):
        if not path.exists():
            raise MissingFileError("no data file at this path", path=path)
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            raise InputFileError(
                f"cannot read as a data file ({type(exc).__name__}: {first}); save a dict of tensors x, y",
                path=path,
            ) from None
        if not isinstance(obj, Mapping):
            raise InputFileError(f"expected a dict of tensors x, y, got {type(obj).__name__}", path=path)
        return dict(obj)
    raise InputFileError("expected an .npz file with arrays x, y (optionally x_test, y_test)", path=path)


def _as_tensor(arrays: Mapping[str, Any], name: str, path: Path) -> torch.Tensor:
    import numpy as np

    a = arrays[name]
    if isinstance(a, np.ndarray):
        if a.dtype.kind not in "biuf":
            raise InputFileError(f"holds {a.dtype} values; expected numbers", path=path, field=name)
        t = torch.from_numpy(a.astype(np.int64) if a.dtype.kind in "biu" else a.astype(np.float32))
    elif isinstance(a, torch.Tensor):
        if a.is_complex():
            raise InputFileError(f"holds {a.dtype} values; expected real numbers", path=path, field=name)
        t = a.detach().float() if a.is_floating_point() else a.detach().long()
    else:
        raise InputFileError(f"expected an array, got {type(a).__name__}", path=path, field=name)
    if t.dim() == 0 or t.shape[0] == 0:
        raise InputFileError(f"expected (samples, ...) with at least one sample, got shape {tuple(t.shape)}",
                             path=path, field=name)
    return t


def _xy(arrays: Mapping[str, Any], xk: str, yk: str, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _as_tensor(arrays, xk, path), _as_tensor(arrays, yk, path)
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise InputFileError("contains NaN/Inf values", path=path, field=xk)
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise InputFileError(
            f"expected one class label per sample, shape ({x.shape[0]},) like {xk}; got {tuple(y.shape)}",
            path=path, field=yk,
        )
    if y.is_floating_point():
        if not torch.isfinite(y).all() or not torch.equal(y, y.round()):
            raise InputFileError("expected integer class labels, got fractional or NaN values", path=path, field=yk)
        y = y.long()
    if int(y.min()) < 0:
        raise InputFileError(f"class labels must be >= 0, got {int(y.min())}", path=path, field=yk)
    return x, y


def load_data(data: Mapping, *, source: Path | None = None) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``((x, y) for matching/statistics, (x, y) for evaluation)`` from a
    validated config's ``data`` (``x`` float32 or int64 token ids, ``y`` int64).

    Raises:
        InputFileError: the data file is missing or unreadable, lacks ``x``/``y``,
            holds non-numeric arrays or mismatched shapes (naming file and array).
        MergeConfigError: an unknown dataset or dataset option.
    """
    n = data.get("max_samples")
    if "dataset" in data:
        try:
            ds = load_dataset(data["dataset"], **dict(data.get("options") or {}))
        except WeightspaceError as exc:
            raise MergeConfigError(exc.message, path=source, field="data.dataset") from None
        split, ev = data.get("split", "train"), data.get("eval_split", "test")
        fit = (getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}"))
        evl = (getattr(ds, f"x_{ev}"), getattr(ds, f"y_{ev}"))
        fit = (fit[0].float() if fit[0].is_floating_point() else fit[0], fit[1].long())
        evl = (evl[0].float() if evl[0].is_floating_point() else evl[0], evl[1].long())
    else:
        path = Path(data["path"])
        try:
            arrays = _read_arrays(path)
        except MissingFileError as exc:
            where = f" (data.path of {source})" if source else " (data.path)"
            raise MissingFileError(exc.message + where, path=path, field="data.path") from None
        for k in ("x", "y"):
            if k not in arrays:
                raise InputFileError(
                    f"no array {k!r}{did_you_mean(k, list(arrays))} (the file has: {', '.join(arrays) or 'none'}); "
                    "a data file needs x, y (optionally x_test, y_test)",
                    path=path, field=k,
                )
        if ("x_test" in arrays) != ("y_test" in arrays):
            missing = "y_test" if "x_test" in arrays else "x_test"
            raise InputFileError("missing: x_test and y_test come together", path=path, field=missing)
        fit = _xy(arrays, "x", "y", path)
        evl = _xy(arrays, "x_test", "y_test", path) if "x_test" in arrays else fit
        if tuple(evl[0].shape[1:]) != tuple(fit[0].shape[1:]):
            raise InputFileError(
                f"samples of shape {tuple(evl[0].shape[1:])}, but x has {tuple(fit[0].shape[1:])}",
                path=path, field="x_test",
            )
    x, y = fit
    if n is not None:
        x, y = x[: int(n)], y[: int(n)]
    return (x, y), evl


def _check_data_fits(module: torch.nn.Module, fit: tuple, evl: tuple, data: Mapping, source: Path | None) -> bool:
    """The model runs on the data and has an output for every class label.
    Returns whether its output is a tensor of class scores (a Hugging Face
    model returns a ``ModelOutput``: token ids feed activation statistics,
    but there is no classifier to evaluate)."""
    scores = True
    if "path" in data:
        where = [(data["path"], "x", "y", fit), (data["path"], "x_test", "y_test", evl)]
    else:
        where = [(source, "data.split", "data.split", fit), (source, "data.eval_split", "data.eval_split", evl)]
    # a module in eval mode runs as it is (no copy of a model mapped from its directory)
    m = module if not module.training else copy.deepcopy(module).eval()
    for path, xk, yk, (x, y) in where:
        try:
            with torch.no_grad():
                out = m(x[:2])
        except Exception as exc:  # the model's own shape/dtype errors
            first = (str(exc).strip().splitlines() or [""])[0]
            raise InputFileError(
                f"the model cannot run on samples of shape {tuple(x.shape[1:])} ({type(exc).__name__}: {first[:200]})",
                path=path, field=xk,
            ) from None
        if not isinstance(out, torch.Tensor):
            scores = False
            continue
        if out.dim() == 2 and int(y.max()) >= out.shape[1]:
            raise InputFileError(
                f"class label {int(y.max())} is out of range for a model with {out.shape[1]} outputs",
                path=path, field=yk,
            )
    return scores


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
    hf: HFCheckpoint | None = None  # the reference model's Hugging Face directory (its config is the result's)
    model: str | None = None  # the reference model's ModelRef identity (``None`` for ``arch:`` models)


_HF_NAME_KEYS = ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "use_cache")


def _open_hf(entry: ModelEntry, source: Path | None) -> HFCheckpoint:
    try:
        return HFCheckpoint.open(entry.ref.target)
    except WeightspaceError as exc:
        where = f" ({entry.ref_key}.hf" + (f" of {source})" if source else ")")
        raise type(exc)(exc.message + where, path=exc.path, field=exc.field or f"{entry.ref_key}.hf") from None


def _arch_id(entry: ModelEntry, hf: Mapping[str, HFCheckpoint]) -> tuple[str, str]:
    """``(family, arguments)``: models merge when the family matches and (but
    for ot_fusion) the arguments too. A Hugging Face model's family is its
    class, its arguments its config (names and versions left out)."""
    if entry.key in hf:
        ck = hf[entry.key]
        cfg = {k: v for k, v in ck.config.to_dict().items() if k not in _HF_NAME_KEYS}
        return f"hf:{ck.model_class.__name__}", json.dumps(cfg, sort_keys=True, default=str)
    return entry.arch, repr(sorted(entry.arch_kwargs.items()))


def _at_key(exc: WeightspaceError, entry: ModelEntry, source: Path | None) -> WeightspaceError:
    """``exc`` (from loading/checking ``entry``'s weights) re-raised naming the
    weights file and the config key it came from."""
    where = f" ({entry.key}.path" + (f" of {source})" if source else ")")
    try:
        return type(exc)(exc.message + where, path=exc.path or entry.path, field=f"{entry.key}.path")
    except TypeError:  # pragma: no cover - an error class with another constructor
        return MergeError(str(exc) + where, path=entry.path, field=f"{entry.key}.path")


def _load_weights(entry: ModelEntry, spec: Any, source: Path | None, hf: HFCheckpoint | None = None,
                  module: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    if hf is not None:  # the directory's shards, tied names filled in from the (matching) module
        try:
            sd = hf.complete(module, hf.read_weights())
            check_state_dict(sd, spec, f"weights of {entry.ref_key}.hf")
        except WeightspaceError as exc:
            where = f" ({entry.ref_key}.hf" + (f" of {source})" if source else ")")
            raise type(exc)(exc.message + where, path=exc.path or entry.path, field=exc.field) from None
        return sd
    try:
        sd = load_state_dict(entry.path)
        check_state_dict(sd, spec, f"weights for architecture {entry.arch!r} {entry.arch_kwargs or ''}".rstrip())
    except WeightspaceError as exc:
        raise _at_key(exc, entry, source) from None
    return sd


def _build(entry: ModelEntry, source: Path | None, hf: HFCheckpoint | None = None) -> tuple[torch.nn.Module, Any]:
    """The module of ``entry``'s architecture and its spec; bad ``arch_kwargs``
    values (or a failing factory) are a :class:`MergeConfigError` naming the key."""
    if hf is not None:
        module = hf.build(seed=0, load_weights=False)
        return module, permutation_spec(module, hf.example_input())
    if entry.ref is not None:
        try:
            r = resolve_model(entry.ref, seed=0)
        except WeightspaceError as exc:
            raise MergeConfigError(exc.message, path=source, field=entry.ref_key) from None
        return r.module, permutation_spec(r.module, r.example_input)
    return _build_registry(entry, source), permutation_spec(entry.arch, **entry.arch_kwargs)


def _build_registry(entry: ModelEntry, source: Path | None) -> torch.nn.Module:
    try:
        return create_model(entry.arch, seed=0, **entry.arch_kwargs)
    except WeightspaceError:
        raise
    except Exception as exc:  # the factory's own TypeError/ValueError on a bad argument value
        first = (str(exc).strip().splitlines() or [""])[0]
        raise MergeConfigError(
            f"cannot build architecture {entry.arch!r} with {entry.arch_kwargs} ({type(exc).__name__}: {first[:200]})",
            path=source, field=entry.kwargs_key,
        ) from None


def _check_architectures(cfg: MergeConfig, mixed_widths: bool) -> tuple[dict, dict, set]:
    """Open every Hugging Face directory and check the models are of one
    architecture (and one width unless ``mixed_widths``): ``(hf, ids, arch_keys)``."""
    src = cfg.source
    everyone = [*cfg.models, *([cfg.base] if cfg.base is not None else [])]
    hf = {m.key: _open_hf(m, src) for m in everyone if m.ref is not None and m.ref.kind == "hf"}
    ids = {m.key: _arch_id(m, hf) for m in everyone}
    arch_keys = {ids[m.key] for m in cfg.models}
    if len({a for a, _ in arch_keys}) > 1:
        raise MergeConfigError(
            f"models have different architectures {sorted({ids[m.key][0] for m in cfg.models})}; "
            "only models of one architecture (family) can be merged", path=src, field="models",
        )
    if len(arch_keys) > 1 and not mixed_widths:
        if hf:
            a, b = (json.loads(ids[m.key][1]) for m in (cfg.models[0], next(m for m in cfg.models
                                                                          if ids[m.key] != ids[cfg.models[0].key])))
            k = next(k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
            raise MergeConfigError(
                f"the Hugging Face configs differ in {k!r} ({a.get(k)!r} vs {b.get(k)!r}); only method ot_fusion "
                "merges different widths", path=src, field="models",
            )
        raise MergeConfigError(
            f"models have different architecture arguments ({[m.arch_kwargs for m in cfg.models]}); "
            "only method ot_fusion merges different widths", path=src, field="method",
        )
    return hf, ids, arch_keys


def run_config(cfg: MergeConfig, *, progress: bool = False) -> MergeOutcome:
    """Load the models of ``cfg``, merge them, optionally REPAIR and measure
    the barrier. Never prints.

    Everything is checked before the merge starts: the architectures build,
    every weights file exists and fits its architecture, the data file holds
    usable ``x``/``y`` arrays the model runs on.

    Raises:
        MergeConfigError: the config asks for something impossible (naming
            the config file and key).
        MissingFileError, InputFileError, StateDictError, NonFiniteWeightsError:
            a weights or data file at fault (naming it and the config key).
        MergeError: the merge itself failed.
    """

    src = cfg.source
    try:
        method = get_method(cfg.method)
    except KeyError:  # pragma: no cover - validated in load_config
        raise MergeConfigError(f"unknown method {cfg.method!r}", path=src, field="method") from None
    if cfg.data is None and (method.needs_data or cfg.repair != "none"):
        what = f"repair {cfg.repair!r}" if cfg.repair != "none" else f"method {cfg.method!r}"
        raise MergeConfigError(f"{what} needs 'data' in the config (data: {{path: data.npz}} or {{dataset: ...}})",
                               path=src, field="data")
    if method.needs_base and cfg.base is None:
        raise MergeConfigError(f"method {cfg.method} needs 'base: {{path: ...}}'", path=src, field="base")
    ref = cfg.models[cfg.reference]
    everyone = [*cfg.models, *([cfg.base] if cfg.base is not None else [])]
    hf, ids, arch_keys = _check_architectures(cfg, method.mixed_widths)
    # one module and spec per distinct architecture (several only for ot_fusion)
    built: dict[tuple, tuple[torch.nn.Module, Any]] = {}
    for m in everyone:
        if ids[m.key] not in built:
            built[ids[m.key]] = _build(m, src, hf.get(m.key))
    of = lambda m: built[ids[m.key]]  # noqa: E731
    module, spec = of(ref)

    names = [str(m.path) for m in cfg.models]
    sds = [_load_weights(m, of(m)[1], src, hf.get(m.key), of(m)[0]) for m in cfg.models]
    base_sd = (_load_weights(cfg.base, of(cfg.base)[1], src, hf.get(cfg.base.key), of(cfg.base)[0])
               if method.needs_base else None)
    fit = evl = None
    scores = True
    if cfg.data is not None:
        fit, evl = load_data(cfg.data, source=src)
        for mod in {id(b[0]): b[0] for b in built.values()}.values():
            scores = _check_data_fits(mod, fit, evl, cfg.data, src) and scores
    if not scores and cfg.barrier is not None:
        raise MergeConfigError("the barrier evaluates a classifier's loss and accuracy; these models do not return "
                               "class scores (e.g. a Hugging Face language model): drop 'barrier'",
                               path=src, field="barrier")
    weights = [m.weight for m in cfg.models]
    summary: dict = {"method": cfg.method, "models": names, "arch": ref.arch, "arch_kwargs": ref.arch_kwargs}
    n = len(sds)
    out = method.run(MethodInputs(
        sds, weights, names, cfg.reference, cfg.seed, dict(cfg.options), module, spec,
        [of(m)[0] for m in cfg.models], [of(m)[1] for m in cfg.models], fit, base_sd, progress,
    ))
    merged, aligned = out.state_dict, out.aligned
    summary.update(out.summary)

    try:
        if cfg.repair == "reset_bn":
            merged = reset_bn_stats(module, merged, fit[0])
        elif cfg.repair == "repair":
            if aligned is None:
                raise MergeError("repair needs endpoint models; it is not defined for task_arithmetic")
            merged = repair(module, merged, aligned, fit[0], weights=weights, spec=spec)
    except MergeError as exc:
        if exc.path is not None:
            raise
        raise MergeConfigError(f"{exc.message} (repair: {cfg.repair})", path=src, field="repair") from None
    summary["repair"] = cfg.repair

    path = path_naive = None
    if evl is not None and not scores:
        summary["eval_skipped"] = "the models do not return class scores (the data only feeds activation statistics)"
    elif evl is not None:
        summary["eval"] = {}
        if len(arch_keys) == 1:
            for i, sd in enumerate(sds):
                loss, acc = loss_and_accuracy(module, sd, evl)
                summary["eval"][f"model{i}"] = {"loss": loss, "accuracy": acc}
        loss, acc = loss_and_accuracy(module, merged, evl)
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
    if ref.ref is not None:
        summary["model"] = ref.ref.identity
    return MergeOutcome(merged, ref.arch, dict(ref.arch_kwargs), summary, path, path_naive, hf.get(ref.key),
                        ref.ref.identity if ref.ref is not None else None)


# ------------------------------------------------------------ out of core
#: config method -> :func:`~weightspace.merge.stream.merge_directories` method
#: (the elementwise methods)
STREAMED = {"average": "linear", "task_arithmetic": "task_arithmetic", "ties": "ties", "dare": "dare",
            "breadcrumbs": "breadcrumbs", "slerp": "slerp"}
#: config methods that align the models first: out of core, every model is
#: matched to the reference (weight matching from its directory, activation
#: matching with one model mapped at a time) and written permuted to a
#: temporary directory, then the directories are averaged (``linear``)
ALIGNED_STREAMED = {"weight_matching": "linear", "activation_matching": "linear"}


@dataclass
class AlignedStreamPlan(StreamPlan):
    """The :class:`~weightspace.merge.stream.StreamPlan` of an aligning merge
    out of core (:data:`ALIGNED_STREAMED`), with the matching's part.

    Attributes:
        groups: the matching coordinates, ``(name, kind, size)``: a neuron
            group and its neurons, or a head group (its nested groups solved
            with it) and its heads.
        matching: per model matched to the reference (empty for a dry run):
            ``model`` (config key), ``reference``, ``objective``, ``seconds``;
            weight matching: ``initial_objective``, ``objective_per_sweep``,
            ``sweeps``, ``stop``, ``converged``; activation matching
            (``objective``: summed correlation of the matched neurons):
            ``passes``, ``loads``, ``samples``, ``fallback_groups``.
        matching_peak_bytes: estimated (upper) peak memory of the matching
            above the process's baseline. Weight matching: for the
            coordinate reading the most, its tensors in both models and its
            ``[n, n]`` float64 work arrays, plus the product cache.
            Activation matching: one model (its tensors mapped from its
            directory; a model built on the CPU first, see
            :meth:`~weightspace.arch.HFCheckpoint.build`, holds a second
            while it loads) plus ``max_bytes`` (statistics and stored
            slabs), not counting one batch's forward activations, the
            swap of two passes' stored slabs, nor freed memory the
            allocator keeps (GPT-2 small measured 861 MiB above the imports
            at 1024 tokens against 1077 estimated, 1698 MiB at 8192
            against 1424).
        permute_peak_bytes: estimated peak of writing a model permuted: its
            largest shard (built in memory before it is written) and the
            largest tensor.
        merge_peak_bytes: the averaging's estimate (``peak_bytes`` is the
            largest of the three: the steps run one after the other).
    """

    groups: list[tuple[str, str, int]] = field(default_factory=list)
    matching: list[dict] = field(default_factory=list)
    matching_peak_bytes: int = 0
    permute_peak_bytes: int = 0
    merge_peak_bytes: int = 0


def streaming_blocker(cfg: MergeConfig) -> str | None:
    """Why ``cfg`` cannot merge out of core (``None``: it can).

    A config streams when every model (and the base) is a Hugging Face
    directory, its method is elementwise (:data:`STREAMED`) or weight or
    activation matching (:data:`ALIGNED_STREAMED`), its options stream (TIES
    needs ``trim: per_tensor``) and it has no ``repair`` or ``barrier``, nor
    ``data`` other than activation matching's (they run the models). The
    matchings also need the reference's
    stored tensor names to be the module's (``transformers`` renames some
    on load, e.g. ViT's attention): its config is read and the model built
    on the meta device (no weights) to check."""
    if cfg.method not in STREAMED and cfg.method not in ALIGNED_STREAMED:
        return f"method {cfg.method} needs whole models (out of core: {', '.join([*STREAMED, *ALIGNED_STREAMED])})"
    entries = [*cfg.models, *([cfg.base] if cfg.base is not None else [])]
    bad = next((m for m in entries if m.ref is None or m.ref.kind != "hf"), None)
    if bad is not None:
        return f"{bad.key} is not a Hugging Face directory (model: {{hf: DIR}})"
    for key, value in (("data", cfg.data), ("barrier", cfg.barrier)):
        if value is not None and not (key == "data" and cfg.method == "activation_matching"):
            return f"'{key}' runs the models, which needs them in memory"
    if cfg.repair != "none":
        return "'repair' runs the models, which needs them in memory"
    if cfg.method in ALIGNED_STREAMED:
        ref = cfg.models[cfg.reference]
        ck = _open_hf(ref, cfg.source)
        renamed = _renamed_tensors(ck, _meta_module(ref, ck, cfg.source))
        if renamed:
            k, v = next(iter(renamed.items()))
            return (f"{cfg.method}: the checkpoint stores tensors under other names than the module "
                    f"(e.g. {k!r} as {v!r}); the directory permutation needs them equal")
        return None
    try:
        _check_options(STREAMED[cfg.method], cfg.options)
    except MergeConfigError as exc:
        return exc.message
    return None


def _meta_module(entry: ModelEntry, hf: HFCheckpoint, source: Path | None) -> torch.nn.Module:
    """``entry``'s model built from its config on the meta device (no weights)."""
    with torch.device("meta"):
        try:
            return hf.build(seed=None, load_weights=False)
        except WeightspaceError as exc:
            where = f" ({entry.ref_key}.hf" + (f" of {source})" if source else ")")
            raise type(exc)(exc.message + where, path=exc.path, field=exc.field or f"{entry.ref_key}.hf") from None


def _renamed_tensors(hf: HFCheckpoint, module: torch.nn.Module) -> dict[str, str]:
    """Module tensor name -> its other stored name (:meth:`HFCheckpoint.key_map`)."""
    try:
        km = hf.key_map(module)
    except ConfigError as exc:  # split or fused on load
        return {"(split or fused)": exc.message}
    return {k: v for k, v in km.items() if k != v}


def _meta_spec(entry: ModelEntry, hf: HFCheckpoint, source: Path | None) -> tuple[torch.nn.Module, Any]:
    """The meta-device module of ``entry`` and its spec, traced on the meta
    device (the in-memory path's spec: same module class, config and example
    input). Any tracing failure is one :class:`~weightspace.errors.TraceError` line."""
    module = _meta_module(entry, hf, source)
    where = f"{entry.ref_key}.hf" + (f" of {source}" if source else "")
    try:
        return module, permutation_spec(module, hf.example_input().to("meta"))
    except Exception as exc:
        msg = exc.message if isinstance(exc, WeightspaceError) else _one(exc)
        raise TraceError(f"cannot trace {type(module).__name__} for weight matching ({where}): {msg}; "
                         "weight matching needs the permutation spec", path=hf.directory / "config.json",
                         field=f"{entry.ref_key}.hf") from None


def _matching_peak_bytes(spec: Any, coords: list, itemsize: Mapping[str, int], tied: Mapping[str, str],
                         cache: int) -> int:
    """Estimated peak of weight matching from directories, above the
    process's baseline (an upper estimate: the tensors are mapped from the
    page cache one at a time, and those already used may be dropped): the
    coordinate whose stored tensors are the most bytes (``tied`` names
    counted once), those tensors of both models resident, its cost matrix
    with the LAP's float64 copies (three ``[n, n]``), plus the product
    cache: at most its bound, and at most one float32 ``[n, n]`` per tensor
    of every coordinate."""
    worst = products = 0
    for kind, g in coords:
        n = g.size if kind == "neuron" else max([g.group.size, *(s.size for subs in g.subs for s in subs)])
        touched = _coord_tensors((kind, g))
        stored = {tied.get(p, p): p for p in touched}
        tensors = sum(itemsize.get(s, 4) * int(torch.Size(spec.param_shapes[p]).numel()) for s, p in stored.items())
        worst = max(worst, 2 * tensors + 3 * 8 * n * n)
        products += 4 * n * n * len(touched)
    return worst + min(cache, products)


def _default_shard_size(cfg: MergeConfig) -> int:
    """The reference directory's largest shard (one file when it has one)."""
    ref = Path(cfg.models[cfg.reference].path)
    shards = list(ref.glob("*.safetensors")) if (ref / INDEX_FILE).is_file() else []
    return max((f.stat().st_size for f in shards), default=2**62)


def _merge_dirs(cfg: MergeConfig, method: str, dirs: list, out: Any, *, base: Any = None, weights: Any = None,
                options: Mapping[str, Any], **kw: Any) -> StreamPlan:
    """:func:`merge_directories`, its option errors naming the config file and key."""
    try:
        return merge_directories(method, dirs, out, base=base, weights=weights, options=options, **kw)
    except MergeConfigError as exc:
        if exc.path is not None:
            raise
        key = exc.field if exc.field in (None, "models", "base", "weights", "out") else f"options.{exc.field}"
        raise MergeConfigError(exc.message, path=cfg.source, field=key) from None


def run_config_streamed(cfg: MergeConfig, out: str | os.PathLike | None, *, dry_run: bool = False,
                        progress: bool = False, max_shard_size: int | None = None,
                        metadata: Mapping[str, str] | None = None) -> StreamPlan:
    """Merge ``cfg`` out of core with :func:`~weightspace.merge.stream.merge_directories`:
    tensor by tensor from the directories' safetensors, never a whole model
    in memory; the result equals :func:`run_config`'s. ``dry_run`` returns
    the plan (tensors, shapes, method per tensor, estimated peak memory)
    and writes nothing.

    ``max_shard_size`` defaults to the reference directory's largest shard
    (one file when it has one), so the result is sharded like the source;
    ``metadata`` goes into every shard's header.

    ``models[i].weight`` is the per-model weight (``average``, ``ties``,
    ``dare``, ``breadcrumbs``, ``weight_matching``); ``dare`` takes the
    config's ``seed`` unless its options give one; the base is read only
    by the methods that use it.

    ``weight_matching`` (Re-Basin): the spec is traced on the reference's
    model built on the meta device; every other model is matched to the
    reference from the directories
    (:func:`~weightspace.merge.matching.weight_matching` out of core, the
    config's options, ``seed`` defaulting to the config's), written
    permuted (:meth:`~weightspace.merge.matching.MatchResult.apply_to_directory`)
    into a temporary directory next to ``out`` (removed afterwards, also
    on failure), and the directories are averaged with the models' weights
    (``linear``). Returns an :class:`AlignedStreamPlan`.

    ``activation_matching``: the same, the permutation found by
    :func:`~weightspace.merge.matching.activation_matching` on the config's
    ``data`` (fit split) with the models given as loaders, each built with
    its tensors mapped from its directory
    (:meth:`~weightspace.arch.HFCheckpoint.build` ``mapped=True``): one
    model resident at a time, the same permutation as with both in memory.
    ``max_bytes`` (statistics plus the slabs stored between the models'
    turns) defaults to 128 MiB per 1024 rows of the data, at most one
    model's bytes (``_stream_stats_bytes``).

    Raises:
        MergeConfigError: the config cannot stream (:func:`streaming_blocker`
            says why) or an option is bad, naming the config file and key.
        MissingFileError, InputFileError, StateDictError: a directory at fault.
        TraceError: weight matching cannot trace the model.
    """
    why = streaming_blocker(cfg)
    if why is not None:
        raise MergeConfigError(f"cannot merge out of core: {why}", path=cfg.source, field="method")
    hf = _check_architectures(cfg, False)[0]
    if max_shard_size is None:
        max_shard_size = _default_shard_size(cfg)
    kw = dict(max_shard_size=max_shard_size, progress=progress, metadata=metadata)
    if cfg.method in ALIGNED_STREAMED:
        return _run_aligned_streamed(cfg, hf, out, dry_run=dry_run, **kw)
    method = STREAMED[cfg.method]
    opts = dict(cfg.options)
    if method == "dare":
        opts.setdefault("seed", cfg.seed)
    weights = [m.weight for m in cfg.models] if method in WEIGHTED else None
    base = cfg.base.path if cfg.base is not None and method not in NO_BASE else None
    return _merge_dirs(cfg, method, [m.path for m in cfg.models], out, base=base, weights=weights, options=opts,
                       dry_run=dry_run, **kw)


def _run_aligned_streamed(cfg: MergeConfig, hf: Mapping[str, HFCheckpoint], out: Any, *, dry_run: bool,
                          max_shard_size: int, progress: bool, metadata: Mapping[str, str] | None
                          ) -> AlignedStreamPlan:
    method = ALIGNED_STREAMED[cfg.method]
    src = cfg.source
    ref = cfg.models[cfg.reference]
    dirs = [m.path for m in cfg.models]
    weights = [m.weight for m in cfg.models]
    activations = cfg.method == "activation_matching"
    if activations and cfg.data is None:
        raise MergeConfigError("method activation_matching needs 'data' in the config (data: {path: data.npz} "
                               "or {dataset: ...})", path=src, field="data")
    # every directory read (headers), names and shapes compared, before any matching
    plan = _merge_dirs(cfg, method, dirs, None, weights=weights, options={}, dry_run=True,
                       max_shard_size=max_shard_size)
    module, spec = _meta_spec(ref, hf[ref.key], src)
    stored = {t.name for t in plan.tensors}
    tied = tied_names(module, stored)
    opts = {"seed": cfg.seed, **cfg.options}
    coords = coordinates(spec)
    if not activations and opts.get("groups") is not None:
        coords = [c for c in coords if _coord_name(c) in set(opts["groups"])]
    itemsize = {t.name: _DTYPES[t.dtype].itemsize for t in plan.tensors}
    fit = None
    if activations:
        fit, evl = load_data(cfg.data, source=src)  # a bad data file fails a dry run too
        opts.setdefault("max_bytes", _stream_stats_bytes(fit[0], plan.model_bytes))
        stats = opts["max_bytes"]
        matching_peak = 2 * plan.model_bytes + (0 if stats is None else int(stats))
    else:
        cache = opts.get("cache", True)
        matching_peak = _matching_peak_bytes(spec, coords, itemsize, tied,
                                             0 if cache is False else CACHE_BYTES if cache is True else int(cache))
    largest = max((int(torch.Size(t.shape).numel()) * itemsize[t.name] for t in plan.tensors), default=0)
    permute_peak = largest + max((f.stat().st_size for i, m in enumerate(cfg.models) if i != cfg.reference
                                  for f in Path(m.path).glob("*.safetensors")), default=0)
    result = AlignedStreamPlan(
        **{f.name: getattr(plan, f.name) for f in dataclasses.fields(StreamPlan)},
        groups=[(_coord_name(c), c[0], c[1].size if c[0] == "neuron" else c[1].group.size) for c in coords],
        matching_peak_bytes=matching_peak, permute_peak_bytes=permute_peak, merge_peak_bytes=plan.peak_bytes,
    )
    result.peak_bytes = max(plan.peak_bytes, matching_peak, permute_peak)
    if dry_run:
        return result
    if out is None:
        raise MergeConfigError("give an output directory (or dry_run=True)", field="out")
    if activations:
        first = _mapped_loader(ref, hf[ref.key], src)()
        _check_data_fits(first, fit, evl, cfg.data, src)
        ref_source = _first_then(first, _mapped_loader(ref, hf[ref.key], src))
        del first
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # a new directory of ours next to the output (same disk), whatever happens removed again
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{cfg.method}-", dir=out.parent))
    try:
        inputs: list[Any] = []
        for i, m in enumerate(cfg.models):
            if i == cfg.reference:
                inputs.append(m.path)
                continue
            t0 = time.perf_counter()
            try:
                if activations:
                    res = activation_matching(ref_source, _mapped_loader(m, hf[m.key], src), fit[0], spec,
                                              progress=progress, **opts)
                    ref_source = _mapped_loader(ref, hf[ref.key], src)
                else:
                    res = weight_matching(ref.path, m.path, spec, tied=tied, progress=progress, **opts)
            except WeightspaceError as exc:
                where = f" (matching {m.key} to {ref.key}" + (f" of {src})" if src else ")")
                raise type(exc)(exc.message + where, path=exc.path, field=exc.field) from None
            inputs.append(res.apply_to_directory(m.path, tmp / f"models{i}", progress=progress))
            record = {"model": m.key, "reference": ref.key, "objective": res.objective}
            if activations:
                record.update({k: res.info[k] for k in ("passes", "loads", "samples", "fallback_groups")})
            else:
                record.update({
                    "initial_objective": res.info["initial_objective"],
                    "objective_per_sweep": [h["objective"] for h in res.info["history"]],
                    "sweeps": res.sweeps, "stop": res.info["stop"], "converged": res.converged,
                })
            record["seconds"] = time.perf_counter() - t0
            result.matching.append(record)
        _merge_dirs(cfg, method, inputs, out, weights=weights, options={}, max_shard_size=max_shard_size,
                    progress=progress, metadata=metadata)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def _stream_stats_bytes(x: torch.Tensor, model_bytes: int) -> int:
    """Default ``max_bytes`` of activation matching with loaders: 128 MiB
    (:data:`~weightspace.merge.activations.STATS_BYTES`) per 1024 rows of
    activations, at most one model's bytes (what the in-memory path spends
    on the second model). The slabs stored between the models' turns grow
    with the rows, and a small budget then means many passes, each a run of
    both models (GPT-2 small, 8192 tokens: 37 passes at 128 MiB, 8 at one
    model). Rows: the tokens of integer ids ``(N, T)``, else the positions
    of each channel (``x.numel() / x.shape[1]``, an upper bound for a
    convolution or patch embedding)."""
    rows = x.numel() if not x.is_floating_point() or x.dim() < 2 else x.numel() // max(1, x.shape[1])
    return int(min(max(STATS_BYTES, model_bytes), STATS_BYTES * max(1, -(-rows // 1024))))


def _mapped_loader(entry: ModelEntry, hf: HFCheckpoint, source: Path | None) -> Callable[[], torch.nn.Module]:
    """A loader of ``entry``'s model with its tensors mapped from its directory
    (:meth:`HFCheckpoint.build` ``mapped=True``), errors naming the config key."""

    def load() -> torch.nn.Module:
        try:
            return hf.build(seed=None, mapped=True)
        except WeightspaceError as exc:
            raise _at_key(exc, entry, source) from None

    return load
