"""Shared pieces of the published-zoo loaders."""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from weightspace.arch import ModelRef, resolve_model
from weightspace.errors import MissingFileError, StateDictError, WeightspaceError
from weightspace.io import check_count, load_state_dict, read_json, unwrap_checkpoint

from zoo.errors import ZooFormatError
from zoo.store import Zoo, ZooWriter
from zoo.train import CheckpointResult

__all__ = [
    "ImportedMember", "import_members", "check_state_dict", "load_weights_file", "load_weights_bytes", "add_gaps",
    "check_limit", "import_identity", "describe_option", "reference_state_dict", "resolve_arch", "build_arch",
    "loader_options", "import_source",
]

@dataclass
class ImportedMember:
    """One member read from a published zoo, in the shape :class:`~zoo.store.ZooWriter` takes."""

    member_id: str
    index: int
    config: dict
    checkpoints: list[CheckpointResult]
    seed: int | None = None
    status: str = "ok"
    extra: dict = field(default_factory=dict)

    @property
    def metrics(self) -> dict:
        return dict(self.checkpoints[-1].metrics)

    def module(self, epoch: int | None = None) -> torch.nn.Module:
        """The network with the (final, or ``epoch``) weights loaded, eval mode."""
        ck = self.checkpoints[-1] if epoch is None else next(c for c in self.checkpoints if c.epoch == epoch)
        model = build_arch(self.config["arch"], self.config["model"], path=None)
        model.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in ck.state_dict.items()})
        return model.eval()

def short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]

def add_gaps(metrics: dict) -> dict:
    """Add ``gap_acc`` / ``gap_loss`` when train and test values are present."""
    m = dict(metrics)
    if "train_acc" in m and "test_acc" in m:
        m["gap_acc"] = float(m["train_acc"]) - float(m["test_acc"])
    if "train_loss" in m and "test_loss" in m:
        m["gap_loss"] = float(m["test_loss"]) - float(m["train_loss"])
    return m

def resolve_arch(arch: Any, model_kwargs: Mapping[str, Any], *, path: Any, field: str = "arch"
                 ) -> tuple[str, dict]:
    """``(name, kwargs)`` of the architecture a loader's ``arch=`` names: a
    registered name (its arguments checked, defaults filled in) or any model
    reference (:class:`weightspace.arch.ModelRef`: ``"pkg.mod:factory"``,
    ``"hf:DIR"``, a ``ModelRef``), as one string ``ModelRef.parse`` reads
    back. A bad one is a :class:`ZooFormatError` naming ``path`` and ``field``."""
    try:
        ref = ModelRef.parse(arch, **dict(model_kwargs))
        kwargs = ref.resolve_kwargs(**dict(ref.kwargs)) if ref.kind == "registry" else dict(ref.kwargs)
        if ref.kind != "registry":
            ref.resolve_kwargs(**kwargs)  # arguments a factory does not take
    except KeyError as e:
        raise ZooFormatError(f"unknown architecture: {e.args[0]}", path=path, field=field) from None
    except (TypeError, WeightspaceError) as e:
        raise ZooFormatError(str(e), path=path, field=field) from None
    if ref.kind == "module" or (ref.kind == "factory" and not isinstance(ref.target, str)):
        raise ZooFormatError(f"{ref.identity} is given in Python; a zoo records architectures by name: register it, "
                             "or name it 'package.module:factory' or hf:DIR", path=path, field=field)
    return ref.name, {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}


def build_arch(arch: str, model_kwargs: Mapping[str, Any], *, path: Any) -> torch.nn.Module:
    """The module ``arch(**model_kwargs)`` (any model reference; a Hugging
    Face directory from its config, not its weights). An unknown
    architecture or arguments it refuses (e.g. a negative width) are a
    :class:`ZooFormatError` naming ``path``."""
    try:
        return resolve_model(arch, seed=None, load_weights=False, require_input=False, **dict(model_kwargs)).module
    except KeyError as e:
        raise ZooFormatError(f"unknown architecture: {e.args[0]}", path=path, field="arch") from None
    except WeightspaceError as e:
        raise ZooFormatError(f"cannot build {arch}({dict(model_kwargs)}): {e.message}", path=path,
                             field="model_kwargs") from None


def reference_state_dict(arch: str, model_kwargs: Mapping[str, Any], *, path: Any) -> dict[str, torch.Tensor]:
    """The state dict of :func:`build_arch` ``(arch, model_kwargs)``."""
    return build_arch(arch, model_kwargs, path=path).state_dict()

def check_state_dict(arch: str, model_kwargs: Mapping[str, Any], sd: Mapping[str, Any], *, path: Any) -> None:
    """Raise :class:`ZooFormatError` (naming ``path`` and the tensor) unless
    ``sd`` has exactly the tensors of ``arch(**model_kwargs)``."""
    ref = reference_state_dict(arch, model_kwargs, path=path)
    missing = [k for k in ref if k not in sd]
    extra = [k for k in sd if k not in ref]
    if missing:
        raise ZooFormatError(
            f"state dict lacks tensor(s) {missing[:4]} of architecture {arch!r}"
            + (f"; it has unexpected {extra[:4]} (pass key_map=...)" if extra else ""),
            path=path, field=missing[0],
        )
    if extra:
        raise ZooFormatError(
            f"state dict has tensor(s) {extra[:4]} that architecture {arch!r} does not have",
            path=path, field=extra[0],
        )
    for k, v in ref.items():
        shape = tuple(np.asarray(sd[k]).shape) if not isinstance(sd[k], torch.Tensor) else tuple(sd[k].shape)
        if shape != tuple(v.shape):
            raise ZooFormatError(
                f"tensor has shape {shape}, architecture {arch!r} expects {tuple(v.shape)}",
                path=path, field=k,
            )

def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` or torch file, via
    :func:`weightspace.io.load_state_dict` (``torch.load(weights_only=True)``:
    never runs pickled code). Any failure (missing, a directory, empty,
    truncated, corrupt, not a state dict) is a :class:`ZooFormatError` naming
    the file."""
    try:
        return load_state_dict(path)
    except MissingFileError:
        raise ZooFormatError("file not found", path=path) from None
    except WeightspaceError as e:  # InputFileError, StateDictError
        raise ZooFormatError(e.message, path=path, field=e.field) from None

def load_weights_bytes(data: bytes, *, path: Any) -> dict[str, torch.Tensor]:
    """Like :func:`load_weights_file` for in-memory bytes (e.g. a tar member)."""
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for payloads that are not plain weights, corrupt data...
        raise ZooFormatError(
            f"torch.load(weights_only=True) refused it ({type(e).__name__}: {str(e)[:200]})", path=path
        ) from None
    try:
        return unwrap_checkpoint(obj, path=path)
    except StateDictError:
        raise ZooFormatError("does not hold a state dict (a mapping of names to tensors)", path=path) from None

def finite(sd: Mapping[str, Any]) -> bool:
    return all(np.isfinite(np.asarray(v, dtype=np.float64)).all() for v in sd.values()
               if np.asarray(v).dtype.kind == "f")

def check_limit(limit: Any) -> int | None:
    """``limit`` (``None`` or an int >= 1); else :class:`~weightspace.errors.ConfigError` naming it."""
    return check_count(limit, "limit")

def describe_option(value: Any) -> Any:
    """A JSON-able description of an import option (callables by their
    qualified name), as stored in ``zoo.json`` and compared on resume."""
    if callable(value) and not isinstance(value, (str, Mapping)):
        return f"<callable {getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', type(value).__name__)}>"
    if isinstance(value, Mapping):
        return {str(k): describe_option(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [describe_option(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)

def import_identity(options: Mapping[str, Any]) -> tuple[dict, str]:
    """``(import_options, recipe_hash)`` of an import: the options as stored
    in ``zoo.json`` (JSON round-tripped, so they compare equal to what a
    later run reads back) and their hash, which decides whether a later
    import may resume into the same directory."""
    import json

    opts = json.loads(json.dumps({k: describe_option(v) for k, v in options.items()}, sort_keys=True))
    return opts, short_hash(json.dumps(opts, sort_keys=True, separators=(",", ":")), 16)

def _check_resume(out: Path, info: Mapping[str, Any]) -> None:
    """Refuse (before anything is written) to resume an import into a zoo
    made from another source directory or with other options, naming the
    option and both values."""
    zpath = out / "zoo.json"
    if not zpath.is_file():
        return
    try:
        old = read_json(zpath)
    except WeightspaceError:
        return  # the zoo writer reports a damaged zoo.json
    if not isinstance(old, Mapping) or old.get("source") != info.get("source"):
        return  # a different kind of zoo: the zoo writer refuses it
    hint = "use a new output directory (or the same options to resume)"
    if old.get("name") != info.get("name"):
        raise ZooFormatError(
            f"this directory holds the import {old.get('name')!r}, not {info.get('name')!r}; {hint}",
            path=zpath, field="name",
        )
    if old.get("recipe_hash") == info.get("recipe_hash"):
        return
    old_opts, new_opts = old.get("import_options"), info.get("import_options") or {}
    if not isinstance(old_opts, Mapping):
        raise ZooFormatError(
            f"this directory holds an import made with other (unrecorded) options; {hint}", path=zpath,
        )
    for key in sorted(set(old_opts) | set(new_opts)):
        if old_opts.get(key) != new_opts.get(key):
            raise ZooFormatError(
                f"this directory holds an import made with {key}={old_opts.get(key)!r}, "
                f"this import has {key}={new_opts.get(key)!r}; {hint}",
                path=zpath, field=f"import_options.{key}",
            )
    raise ZooFormatError(f"this directory holds an import made with other options; {hint}", path=zpath)

def loader_options(load: Any, path: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` of an ``import_*`` function bound to its loader's keyword
    parameters, defaults filled in: a loader's signature is the one
    definition of its options. An unknown or missing one is a
    :class:`~weightspace.errors.ConfigError` naming it."""
    import inspect

    from weightspace.errors import ConfigError
    from weightspace.io import did_you_mean

    sig = inspect.signature(load)
    names = [n for n in sig.parameters if n != "path"]
    for k in options:
        if k not in names:
            raise ConfigError(f"unknown option {k!r}{did_you_mean(k, names)}; {load.__name__} takes {names}",
                              field=k)
    try:
        bound = sig.bind(path, **options)
    except TypeError as e:  # a required option left out
        raise ConfigError(f"{load.__name__}: {e}", field="options") from None
    bound.apply_defaults()
    return {k: v for k, v in bound.arguments.items() if k != "path"}


def import_source(load: Any, source: str, path: Any, out: Any, options: Mapping[str, Any], *, progress: bool,
                  identity: Mapping[str, Any] | None = None, recipe_hash: str | None = None):
    """Import what ``load(path, **options)`` reads into a zoo at ``out``
    (resumable only with the same source and options). ``identity``: the
    options as recorded in ``zoo.json`` (default ``options``); ``recipe_hash``
    overrides their hash (to keep resuming zoos of an earlier format).
    Returns the :class:`~zoo.store.Zoo`."""
    path = Path(path).expanduser()
    recorded, h = import_identity(identity if identity is not None else options)
    info = {
        "name": f"{source}:{path.name}",
        "source": source,
        "source_path": str(path.resolve()),
        "import_options": recorded,
        "recipe": None,
        "recipe_hash": recipe_hash or h,
    }
    return import_members(load(path, **options), out, info=info, progress=progress)


def import_members(
    members: Iterable[ImportedMember],
    out: str | Path,
    *,
    info: Mapping[str, Any],
    progress: bool = True,
    total: int | None = None,
    batch: int = 256,
):
    """Write imported members into a zoo directory (resumable: members already
    in the index are skipped). Returns the :class:`~zoo.store.Zoo`.

    Raises:
        ZooFormatError: ``out`` holds an import from another source or with
            other options (naming the option and both values), or ``members``
            is empty (nothing is written then).
    """
    import itertools

    from tqdm.auto import tqdm

    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ZooFormatError("exists and is not a directory; give a directory for the zoo", path=out)
    _check_resume(out, info)
    it = iter(members)
    first = next(it, None)  # reads (and checks) the source before anything is written
    if first is None:
        raise ZooFormatError("no members to import (the source holds none that match the options)",
                             path=info.get("source_path"))
    with ZooWriter(out, info) as w:
        have = w.member_ids()
        buf: list[dict] = []
        bar = tqdm(total=total, desc=f"import {info.get('name', '')}", unit="member", disable=not progress)
        try:
            for m in itertools.chain([first], it):
                bar.update(1)
                if m.member_id in have:
                    continue
                buf.append(
                    dict(member_id=m.member_id, index=m.index, config=m.config, checkpoints=m.checkpoints,
                         seed=m.seed, status=m.status, metrics=m.metrics, extra=m.extra,
                         source=str(info.get("source", "import")))
                )
                if len(buf) >= batch:
                    w.add_members(buf)
                    buf = []
            w.add_members(buf)
        finally:
            bar.close()
    return Zoo(out)

def nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    return x
