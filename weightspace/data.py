"""What the library needs of data it does not own: datasets by name, and zoos.

The library ships no datasets and does not import ``zoo``. Functions that
take a dataset *name* (``load_task("digits")``, a merge config's
``data: {dataset: digits}``, ``load_signals``) ask this module's registry,
which others fill:

- ``zoo.datasets`` registers its datasets here when it is imported (``import
  zoo`` does it);
- installed packages are found through the entry point group
  ``weightspace.datasets`` (this project's ``pyproject.toml`` points it at
  ``zoo.datasets``), loaded the first time a name is not registered, so
  library code finds the zoo datasets without importing ``zoo``;
- a program names a module to import on the first unknown name with
  :func:`register_dataset_source` (what an entry point does, for a
  development install whose metadata predates the entry point: the CLI names
  ``zoo.datasets`` so);
- users register their own: ``@register_dataset("my_data")`` on a loader
  ``(**options) -> Dataset``.

Zoos are passed in as objects: anything with the members interface
(:class:`ZooLike`, e.g. ``zoo.Zoo``) works where the library reads a zoo.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
import json
import importlib
from importlib import metadata
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence, runtime_checkable

from weightspace.errors import ConfigError, UnknownNameError
from weightspace.io import did_you_mean

if TYPE_CHECKING:  # annotations only: this module stays light to import
    import torch

__all__ = [
    "Dataset",
    "ENTRY_POINT_GROUP",
    "register_dataset",
    "register_dataset_source",
    "list_datasets",
    "load_dataset",
    "ZooLike",
    "MemberLike",
    "CheckpointLike",
]

#: Entry point group naming modules (or no-argument callables) that register datasets.
ENTRY_POINT_GROUP = "weightspace.datasets"


@dataclass
class Dataset:
    """A dataset, already split: the one definition of its fields.
    ``zoo.datasets.Dataset`` subclasses it (adding helpers); a user's loader
    returns either, or any object with these attributes.

    Attributes:
        name: dataset name.
        task: ``"classification"`` (targets int64 ``[N]``) or ``"inr"``
            (coordinates ``[P, d]`` -> values ``[P, C]``).
        x_train, y_train, x_val, y_val, x_test, y_test: the splits.
        num_classes: classes (classification) or output channels (INR).
        meta: extra facts (e.g. an INR image's grid ``height``/``width``,
            its digit ``label``); defaults to ``{}``.
    """

    name: str
    task: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    meta: dict = field(default_factory=dict)


_LOADERS: dict[str, Callable[..., Dataset]] = {}
_SOURCES: dict[str, bool] = {}  # module[:callable] -> loaded yet
_ENTRY_POINTS_LOADED = False
_BROKEN: dict[str, str] = {}  # source -> why it failed to load


def register_dataset(name: str, *, overwrite: bool = False) -> Callable[[Callable[..., Dataset]], Callable[..., Dataset]]:
    """Decorator registering a dataset loader ``(**options) -> Dataset``.

    Loaders must be pure: the same options give the same tensors (results
    are cached per process). Use an explicit seed option for any randomness.
    """

    def deco(fn: Callable[..., Dataset]) -> Callable[..., Dataset]:
        if name in _LOADERS and _LOADERS[name] is not fn and not overwrite:
            raise ValueError(f"dataset {name!r} is already registered; pass overwrite=True")
        _LOADERS[name] = fn
        _load_cached.cache_clear()
        return fn

    return deco


def register_dataset_source(target: str) -> None:
    """Name a module (``"pkg.mod"``) or a no-argument registering function
    (``"pkg.mod:func"``) to load the first time a dataset name is unknown,
    like an entry point of group ``weightspace.datasets``. Nothing is
    imported now."""
    _SOURCES.setdefault(str(target), False)


def _load_source(target: str) -> None:
    try:
        module, _, attr = target.partition(":")
        obj = importlib.import_module(module)
        for part in attr.split(".") if attr else ():
            obj = getattr(obj, part)
        if attr and callable(obj):
            obj()
    except Exception as exc:  # a broken source must not hide the others
        _BROKEN[target] = f"{type(exc).__name__}: {exc}"


def _discover() -> None:
    """Load the ``weightspace.datasets`` entry points (once per process) and
    the sources named since the last call."""
    global _ENTRY_POINTS_LOADED
    if not _ENTRY_POINTS_LOADED:
        _ENTRY_POINTS_LOADED = True
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            _SOURCES.setdefault(ep.value, False)
    for target, loaded in list(_SOURCES.items()):
        if not loaded:
            _SOURCES[target] = True
            _load_source(target)


def list_datasets() -> list[str]:
    """Sorted names of the registered datasets (entry points included)."""
    _discover()
    return sorted(_LOADERS)


def load_dataset(name: str, **options: Any) -> Dataset:
    """Load registered dataset ``name`` with ``options`` (cached per process).

    Raises:
        UnknownNameError: no loader is registered under ``name`` (one line
            with the closest name; also a ``KeyError``).
        ConfigError: the loader does not take one of ``options``.
    """
    if name not in _LOADERS:
        _discover()
    if name not in _LOADERS:
        known = sorted(_LOADERS)
        hint = (
            f"registered: {', '.join(known)}" if known else
            f"none is registered; `import zoo` registers the zoo datasets (or reinstall the package "
            f"so its {ENTRY_POINT_GROUP!r} entry point is found)"
        )
        broken = f" (entry points that failed to load: {_BROKEN})" if _BROKEN else ""
        raise UnknownNameError(f"unknown dataset {name!r}{did_you_mean(str(name), known) or ';'} {hint}{broken}")
    key = json.dumps(options, sort_keys=True, default=str)
    return _load_cached(name, key)


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, key: str) -> Dataset:
    opts = json.loads(key)
    try:
        return _LOADERS[name](**opts)
    except TypeError as e:
        raise ConfigError(f"dataset {name!r}: {e}") from None


# ------------------------------------------------------------------------ zoos
@runtime_checkable
class CheckpointLike(Protocol):
    """One stored checkpoint of a zoo member (``zoo.Checkpoint`` is one)."""

    epoch: int
    metrics: Mapping[str, Any]

    def state_dict(self) -> Mapping[str, torch.Tensor]: ...


@runtime_checkable
class MemberLike(Protocol):
    """One network of a zoo (``zoo.Member`` is one): architecture, config,
    metrics and checkpoints."""

    member_id: str
    arch: str
    model_kwargs: Mapping[str, Any]
    seed: int
    metrics: Mapping[str, Any]
    extra: Mapping[str, Any]
    checkpoints: Sequence[CheckpointLike]

    def checkpoint(self, epoch: int | None = None) -> CheckpointLike: ...


@runtime_checkable
class ZooLike(Protocol):
    """A collection of trained networks, read through its members
    (``zoo.Zoo`` and its ``filter``/``split`` views are ones).

    ``to_pandas()`` gives one row per member with a ``member_id`` column and
    ``config.*`` columns; ``members()`` yields :class:`MemberLike` objects.
    """

    def members(self) -> Iterable[MemberLike] | Iterator[MemberLike]: ...

    def to_pandas(self) -> Any: ...
