"""A small schema checker for configs and saved-model descriptions.

YAML configs, recipes and the JSON written beside saved models are checked
field by field before anything is built from them: types, ranges, choices, and
unknown keys (named, with a did-you-mean). Errors are
:class:`~weightspace.errors.ConfigError` carrying the file and the dotted key.

Example::

    SCHEMA = {
        "method": Field(str, required=True, choices=("average", "ties")),
        "weight": Field((int, float), default=1.0, min=0.0),
        "options": Field(dict, default={}),
    }
    cfg = validate(raw, SCHEMA, path="merge.yaml", where="models[0]")
"""

from __future__ import annotations

import difflib
import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from weightspace.errors import ConfigError

__all__ = ["Field", "validate", "check_type", "check_count", "did_you_mean"]

_MISSING = object()

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               dict: "a mapping", list: "a list", type(None): "null"}


@dataclass(frozen=True)
class Field:
    """One key of a schema.

    Args:
        type: accepted Python type or tuple of types (``int`` never accepts
            ``bool``; ``float`` accepts ints and converts them).
        required: the key must be present.
        default: value used when the key is absent (``None`` = leave absent).
        min, max: inclusive numeric bounds.
        choices: accepted values.
        nullable: ``None`` is accepted as well.
    """

    type: type | tuple[type, ...]
    required: bool = False
    default: Any = None
    min: float | None = None
    max: float | None = None
    choices: Sequence[Any] | None = None
    nullable: bool = False


def did_you_mean(name: str, options: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest option, or ``""``."""
    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _describe(types: tuple[type, ...]) -> str:
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)


def check_type(value: Any, types: type | tuple[type, ...], *, path: object = None, field: str | None = None,
               nullable: bool = False) -> Any:
    """Return ``value`` if it is one of ``types`` (ints count as floats, bools
    never as ints, and floats must be finite); else raise :class:`ConfigError`."""
    types = types if isinstance(types, tuple) else (types,)
    if value is None and nullable:
        return None
    ok = False
    for t in types:
        if t is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif t is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok and not math.isfinite(float(value)):
                raise ConfigError(f"expected a finite number, got {value!r}", path=path, field=field)
        else:
            ok = isinstance(value, t)
        if ok:
            break
    if not ok:
        raise ConfigError(f"expected {_describe(types)}, got {type(value).__name__} {value!r}"[:200],
                          path=path, field=field)
    return value


def check_count(value: Any, name: str, *, min: int = 1, nullable: bool = True) -> int | None:
    """Return ``value`` if it is an int ``>= min`` (``None`` too when
    ``nullable``); else raise :class:`ConfigError` naming the argument ``name``.
    For counts given to library functions (``limit=``, ``workers=``, ...)."""
    if value is None and nullable:
        return None
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer >= {min}, got {type(value).__name__} {value!r}"[:200],
                          field=name)
    if value < min:
        raise ConfigError(f"{name} must be >= {min}, got {value}", field=name)
    return int(value)


def validate(value: Any, schema: Mapping[str, Field], *, path: object = None, where: str = "",
             allow_unknown: bool = False) -> dict:
    """Check a mapping against ``schema`` and return a new dict with defaults
    filled in.

    Args:
        value: the parsed mapping (from YAML/JSON).
        schema: key -> :class:`Field`.
        path: the file it came from (named in errors).
        where: dotted prefix of the keys, e.g. ``"models[1]"`` (named in errors).
        allow_unknown: keep keys the schema does not name instead of refusing them.

    Raises:
        ConfigError: naming the file and the dotted key.
    """
    dotted = (lambda k: f"{where}.{k}" if where else str(k))
    if not isinstance(value, Mapping):
        raise ConfigError(f"expected a mapping, got {type(value).__name__}", path=path, field=where or None)
    out: dict = {}
    for key in value:
        if key not in schema and not allow_unknown:
            raise ConfigError(
                f"unknown key{did_you_mean(key, list(schema))} (allowed: {', '.join(map(str, schema))})",
                path=path, field=dotted(key),
            )
    for key, f in schema.items():
        v = value.get(key, _MISSING)
        if v is _MISSING:
            if f.required:
                raise ConfigError("missing required key", path=path, field=dotted(key))
            if f.default is not None:
                out[key] = f.default
            continue
        check_type(v, f.type, path=path, field=dotted(key), nullable=f.nullable)
        if v is not None:
            if f.choices is not None and v not in f.choices:
                raise ConfigError(
                    f"{v!r} is not one of {', '.join(map(repr, f.choices))}{did_you_mean(str(v), [str(c) for c in f.choices])}",
                    path=path, field=dotted(key),
                )
            if f.min is not None and v < f.min:
                raise ConfigError(f"must be >= {f.min}, got {v!r}", path=path, field=dotted(key))
            if f.max is not None and v > f.max:
                raise ConfigError(f"must be <= {f.max}, got {v!r}", path=path, field=dotted(key))
        out[key] = float(v) if (f.type is float and v is not None) else v
    for key in value:
        if key not in schema:
            out[key] = value[key]
    return out
