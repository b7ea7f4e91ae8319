""":class:`ArchSpec`: a registered architecture with all of its arguments.

Two specs are equal exactly when they build the same network: the arguments
are checked against the registry, the defaults are filled in and sequences
are normalised, so ``ArchSpec.of("mlp", hidden=[32])``,
``ArchSpec.of("mlp", hidden=(32,), activation="relu")`` and
``ArchSpec("mlp", {"hidden": [32]})`` are one (hashable) spec. It is the key
of every per-architecture cache (``weightspace.graph_template``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from weightspace.arch.registry import create_model, example_input, get_model_info
from weightspace.errors import ConfigError

__all__ = ["ArchSpec"]


class _FrozenDict(tuple):
    """A dict argument inside an :class:`ArchSpec`: sorted ``(key, value)`` pairs."""


def _freeze(v: Any, key: str) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x, key) for x in v)
    if isinstance(v, Mapping):
        return _FrozenDict(sorted((str(k), _freeze(x, key)) for k, x in v.items()))
    try:
        if isinstance(v, torch.Tensor):  # hashed by identity, compared elementwise: no identity
            raise TypeError
        hash(v)
    except TypeError:
        raise TypeError(
            f"architecture argument {key}={v!r} is not hashable; pass numbers, strings, lists or dicts"
        ) from None
    return v


def _thaw(v: Any) -> Any:
    if isinstance(v, _FrozenDict):
        return {k: _thaw(x) for k, x in v}
    if isinstance(v, tuple):
        return [_thaw(x) for x in v]
    return v


def _fmt(v: Any) -> str:
    if isinstance(v, _FrozenDict):
        return "{" + ",".join(f"{k}:{_fmt(x)}" for k, x in v) + "}"
    if isinstance(v, tuple):
        return "x".join(_fmt(x) for x in v)
    return str(v)


@dataclass(frozen=True, eq=False)
class ArchSpec:
    """A registered architecture and its arguments, canonical and hashable.

    Attributes:
        name: registry name (see :func:`~weightspace.arch.list_models`).
        kwargs: every argument of the architecture, defaults included, as
            sorted ``(key, value)`` pairs with lists turned into tuples (and
            dicts into sorted pairs). Pass a mapping or pairs; it is
            canonicalised on construction. :attr:`resolved_kwargs` gives a dict.

    Raises (on construction):
        UnknownNameError: ``name`` is not registered (also a ``KeyError``).
        TypeError: an argument the architecture does not take, or an
            unhashable value.
    """

    name: str
    kwargs: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        info = get_model_info(self.name)
        given = dict(self.kwargs.items() if isinstance(self.kwargs, Mapping) else self.kwargs)
        resolved = info.resolve_kwargs(**{k: _thaw(v) for k, v in given.items()})
        object.__setattr__(self, "kwargs", tuple(sorted((k, _freeze(v, k)) for k, v in resolved.items())))

    @classmethod
    def of(cls, name: str, **kwargs: Any) -> "ArchSpec":
        """``ArchSpec.of("cnn_small", width=8)``: validates the name and arguments."""
        return cls(name, kwargs)

    # Equal to any ArchSpec (subclasses too) with the same name and arguments.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ArchSpec):
            return NotImplemented
        return (self.name, self.kwargs) == (other.name, other.kwargs)

    def __hash__(self) -> int:
        return hash((self.name, self.kwargs))

    @property
    def resolved_kwargs(self) -> dict[str, Any]:
        """Every argument (defaults included), lists as lists: ``create_model(name, **resolved_kwargs)``."""
        return {k: _thaw(v) for k, v in self.kwargs}

    @property
    def arch_kwargs(self) -> dict[str, Any]:
        """The arguments that differ from the architecture's defaults."""
        defaults = dict(ArchSpec(self.name).kwargs)
        return {k: _thaw(v) for k, v in self.kwargs if k not in defaults or defaults[k] != v}

    def difference(self, other: "ArchSpec") -> tuple[str, Any, Any] | None:
        """``(field, mine, theirs)`` for the first way ``other`` differs
        (``"arch"`` for the name, else an argument name), or ``None``."""
        if self.name != other.name:
            return "arch", self.name, other.name
        a, b = self.resolved_kwargs, other.resolved_kwargs
        for k in sorted(set(a) | set(b)):
            if _freeze(a.get(k), k) != _freeze(b.get(k), k):
                return k, a.get(k), b.get(k)
        return None

    @property
    def label(self) -> str:
        """Short human-readable id, e.g. ``cnn_small(depth=2,width=8)`` (non-default arguments only)."""
        changed = self.arch_kwargs
        if not changed:
            return self.name
        return f"{self.name}(" + ",".join(f"{k}={_fmt(_freeze(v, k))}" for k, v in sorted(changed.items())) + ")"

    def build(self, seed: int | None = None) -> nn.Module:
        """A freshly initialised module (PyTorch default init; under ``seed``
        in a forked RNG when given, see :func:`~weightspace.arch.create_model`)."""
        return create_model(self.name, seed=seed, **self.resolved_kwargs)

    def input_shape(self) -> tuple[int, ...]:
        """Example input shape without the batch dimension."""
        return tuple(get_model_info(self.name).example_input_shape(1, **self.resolved_kwargs)[1:])

    def example_input(self, batch_size: int = 2, seed: int = 0) -> torch.Tensor:
        """A deterministic example input ``[batch_size, *input_shape]``."""
        return example_input(self.name, batch_size=batch_size, seed=seed, **self.resolved_kwargs)

    def to_dict(self) -> dict[str, Any]:
        """``{"name", "kwargs"}`` with every argument (JSON-ready when the arguments are)."""
        return {"name": self.name, "kwargs": self.resolved_kwargs}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ArchSpec":
        """Inverse of :meth:`to_dict`; missing arguments take their defaults.

        Raises:
            ConfigError: ``d`` is not ``{"name": str, "kwargs": mapping}``.
        """
        if not isinstance(d, Mapping) or not isinstance(d.get("name"), str):
            raise ConfigError(f"an architecture needs {{'name': str, 'kwargs': {{...}}}}, got {d!r}", field="name")
        kwargs = d.get("kwargs") or {}
        if not isinstance(kwargs, Mapping):
            raise ConfigError(f"architecture kwargs must be a mapping, got {kwargs!r}", field="kwargs")
        unknown = sorted(set(d) - {"name", "kwargs"})
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown} in an architecture; allowed: name, kwargs", field=unknown[0])
        return cls(d["name"], dict(kwargs))

    def to_json(self) -> str:
        """:meth:`to_dict` as canonical JSON (sorted keys)."""
        try:
            return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{self.label} has an argument JSON cannot hold: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> "ArchSpec":
        """Inverse of :meth:`to_json`.

        Raises:
            ConfigError: ``text`` is not JSON of ``{"name", "kwargs"}``.
        """
        try:
            d = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"an architecture JSON cannot be parsed: {exc}") from None
        return cls.from_dict(d)

    def __repr__(self) -> str:
        return f"ArchSpec({self.label})"
