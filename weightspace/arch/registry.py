"""Architecture registry (timm style).

Architectures are registered by name with :func:`register_model`, so zoo
recipes can say ``arch: cnn_small`` and users can add their own with one
decorator, on the ``nn.Module`` class itself (its ``__init__`` arguments are
the architecture's arguments) or on a factory function::

    from weightspace.arch import register_model

    @register_model("my_mlp", input_shape=lambda kw: (2, kw["in_features"]))
    class MyMLP(nn.Module):
        def __init__(self, in_features: int = 16, width: int = 32) -> None:
            ...

Every entry knows how to build an *example input* (used by the tracer to
propagate shapes), so ``weightspace graph my_mlp`` works without extra
arguments. Arguments that only shape the example input (``image_size`` of a
size-agnostic CNN) are declared with ``input_kwargs`` instead of being added to
the constructor.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, Union

import torch
from torch import nn

from weightspace.errors import UnknownNameError
from weightspace.io import did_you_mean

__all__ = ["ModelInfo", "create_model", "example_input", "get_model_info", "list_models", "register_model"]

ShapeSpec = Union[Sequence[int], Callable[[dict], Sequence[int]]]


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one architecture.

    Attributes:
        name: registry name.
        factory: an ``nn.Module`` class or a callable ``(**kwargs) -> nn.Module``.
        input_shape: example input shape (batch first) or a callable taking the
            resolved kwargs and returning it.
        input_dtype: ``torch.float32`` for real inputs, ``torch.long`` for token ids.
        input_high: for integer inputs, the exclusive upper bound of the ids
            (an int or a callable of the kwargs).
        description: one line shown by ``weightspace models``.
        tags: free-form tags (``"cnn"``, ``"transformer"``, ``"inr"``, ...).
        input_kwargs: ``(name, default)`` pairs of arguments that only shape the
            example input; accepted by :func:`create_model`, never passed to
            ``factory``.
    """

    name: str
    factory: Callable[..., nn.Module]
    input_shape: ShapeSpec
    input_dtype: torch.dtype = torch.float32
    input_high: Union[int, Callable[[dict], int], None] = None
    description: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    input_kwargs: tuple[tuple[str, Any], ...] = ()

    def resolve_kwargs(self, **kwargs: Any) -> dict:
        """Factory defaults (then ``input_kwargs`` defaults) overridden by
        ``kwargs``. Unknown keys are a ``TypeError`` naming the closest one."""
        params = _parameters(self.factory)
        accepts_var = any(p.kind is p.VAR_KEYWORD for p in params.values())
        known = [k for k, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        known += [k for k, _ in self.input_kwargs]
        unknown = [k for k in kwargs if k not in known]
        if unknown and not accepts_var:
            raise TypeError(
                f"architecture {self.name!r} got unknown argument(s) {unknown}"
                f"{did_you_mean(unknown[0], known) or ';'} it accepts {known}"
            )
        resolved = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
        resolved.update(self.input_kwargs)
        resolved.update(kwargs)
        return resolved

    def build(self, **kwargs: Any) -> nn.Module:
        """``factory(**kwargs)`` with defaults filled in and ``input_kwargs`` left out."""
        kw = self.resolve_kwargs(**kwargs)
        for k, _ in self.input_kwargs:
            kw.pop(k, None)
        return self.factory(**kw)

    def example_input_shape(self, batch_size: int = 2, **kwargs: Any) -> tuple[int, ...]:
        kw = self.resolve_kwargs(**kwargs)
        shape = self.input_shape(kw) if callable(self.input_shape) else self.input_shape
        shape = tuple(int(s) for s in shape)
        return (int(batch_size),) + shape[1:]


def _parameters(factory: Callable[..., Any]) -> Mapping[str, inspect.Parameter]:
    """The keyword parameters of a factory function or a class's ``__init__``."""
    return inspect.signature(factory).parameters


_REGISTRY: dict[str, ModelInfo] = {}


def _first_line(doc: str | None) -> str:
    lines = (doc or "").strip().splitlines()
    return lines[0] if lines else ""


def register_model(
    name: str | None = None,
    *,
    input_shape: ShapeSpec,
    input_dtype: torch.dtype = torch.float32,
    input_high: Union[int, Callable[[dict], int], None] = None,
    description: str = "",
    tags: Sequence[str] = (),
    input_kwargs: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering an ``nn.Module`` class or a factory under ``name``.

    The class (or function) is returned unchanged. Its keyword arguments, with
    their defaults, are the architecture's arguments: :func:`create_model`
    checks the keys against the signature and fills in the defaults.

    Args:
        name: registry name; defaults to the class or function name.
        input_shape: example input shape including a batch dimension, or a
            callable ``kwargs -> shape`` when it depends on the arguments.
        input_dtype: dtype of the example input.
        input_high: exclusive upper bound for integer (token id) inputs.
        description: one-line description (default: the docstring's first line).
        tags: free-form tags.
        input_kwargs: ``{name: default}`` of extra arguments that only shape the
            example input (e.g. ``{"image_size": 8}`` for a size-agnostic CNN);
            they must not be constructor arguments too.
        overwrite: allow replacing an existing entry (otherwise a clear error).
    """
    extra = tuple((str(k), v) for k, v in dict(input_kwargs or {}).items())

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        if key in _REGISTRY and not overwrite:
            raise ValueError(
                f"architecture {key!r} is already registered; pass overwrite=True to replace it"
            )
        clash = sorted(set(_parameters(fn)) & {k for k, _ in extra})
        if clash:
            raise ValueError(
                f"architecture {key!r}: input_kwargs {clash} are already arguments of {fn.__name__}; "
                "drop them from input_kwargs"
            )
        _REGISTRY[key] = ModelInfo(
            name=key,
            factory=fn,
            input_shape=input_shape,
            input_dtype=input_dtype,
            input_high=input_high,
            description=description or _first_line(fn.__doc__),
            tags=tuple(tags),
            input_kwargs=extra,
        )
        return fn

    return decorator


def _ensure_builtin() -> None:
    # The model modules import this one, so they cannot be imported above:
    # importing weightspace.arch.models registers the built-in architectures.
    import weightspace.arch.models  # noqa: F401


def list_models(tag: str | None = None) -> list[str]:
    """Sorted names of registered architectures (optionally with ``tag``)."""
    _ensure_builtin()
    return sorted(k for k, v in _REGISTRY.items() if tag is None or tag in v.tags)


def get_model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of ``name``.

    Raises:
        UnknownNameError: (a ``KeyError``) one line naming the closest
            registered name and listing them all.
    """
    _ensure_builtin()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        known = sorted(_REGISTRY)
        raise UnknownNameError(
            f"unknown architecture {name!r}{did_you_mean(str(name), known) or ';'} registered: {', '.join(known)}. "
            "Register your own with @weightspace.arch.register_model(...)."
        ) from None


def create_model(name: str, *, seed: int | None = None, **kwargs: Any) -> nn.Module:
    """Instantiate architecture ``name`` with ``kwargs``.

    Args:
        seed: if given, parameters are initialised under ``torch.manual_seed``
            inside a forked RNG state, so the global RNG is left untouched.
    """
    info = get_model_info(name)
    if seed is None:
        return info.build(**kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return info.build(**kwargs)


def example_input(
    name: str, *, batch_size: int = 2, seed: int = 0, **kwargs: Any
) -> torch.Tensor:
    """A deterministic example input for architecture ``name``.

    Shape ``(batch_size, *input_shape[1:])``; token models get ids in
    ``[0, input_high)``.
    """
    info = get_model_info(name)
    shape = info.example_input_shape(batch_size, **kwargs)
    gen = torch.Generator().manual_seed(int(seed))
    if info.input_dtype.is_floating_point:
        return torch.randn(shape, generator=gen, dtype=info.input_dtype)
    high = info.input_high
    if callable(high):
        high = high(info.resolve_kwargs(**kwargs))
    if high is None:
        raise ValueError(f"architecture {name!r} has integer inputs but no input_high")
    return torch.randint(0, int(high), shape, generator=gen, dtype=info.input_dtype)
