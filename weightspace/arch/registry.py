"""Architecture registry (timm style).

Architectures are registered by name with :func:`register_model`, so zoo
recipes can say ``arch: cnn_small`` and users can add their own with one
decorator::

    from weightspace.arch import register_model

    @register_model("my_mlp", input_shape=lambda kw: (2, kw["in_features"]))
    def my_mlp(in_features: int = 16, width: int = 32) -> nn.Module:
        return nn.Sequential(nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, 1))

Every entry knows how to build an *example input* (used by the tracer to
propagate shapes), so ``weightspace graph my_mlp`` works without extra
arguments.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, Union

import torch
from torch import nn

ShapeSpec = Union[Sequence[int], Callable[[dict], Sequence[int]]]


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one architecture.

    Attributes:
        name: registry name.
        factory: callable ``(**kwargs) -> nn.Module``.
        input_shape: example input shape (batch first) or a callable taking the
            resolved factory kwargs and returning it.
        input_dtype: ``torch.float32`` for real inputs, ``torch.long`` for token ids.
        input_high: for integer inputs, the exclusive upper bound of the ids
            (an int or a callable of the kwargs).
        description: one line shown by ``weightspace models``.
        tags: free-form tags (``"cnn"``, ``"transformer"``, ``"inr"``, ...).
    """

    name: str
    factory: Callable[..., nn.Module]
    input_shape: ShapeSpec
    input_dtype: torch.dtype = torch.float32
    input_high: Union[int, Callable[[dict], int], None] = None
    description: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)

    def resolve_kwargs(self, **kwargs: Any) -> dict:
        """Factory defaults overridden by ``kwargs`` (unknown keys are an error)."""
        sig = inspect.signature(self.factory)
        params = sig.parameters
        accepts_var = any(p.kind is p.VAR_KEYWORD for p in params.values())
        unknown = [k for k in kwargs if k not in params]
        if unknown and not accepts_var:
            raise TypeError(
                f"architecture {self.name!r} got unknown argument(s) {unknown}; "
                f"it accepts {[k for k in params]}"
            )
        resolved = {
            k: p.default
            for k, p in params.items()
            if p.default is not inspect.Parameter.empty
        }
        resolved.update(kwargs)
        return resolved

    def example_input_shape(self, batch_size: int = 2, **kwargs: Any) -> tuple[int, ...]:
        kw = self.resolve_kwargs(**kwargs)
        shape = self.input_shape(kw) if callable(self.input_shape) else self.input_shape
        shape = tuple(int(s) for s in shape)
        return (int(batch_size),) + shape[1:]


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
    overwrite: bool = False,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering an architecture factory under ``name``.

    Args:
        name: registry name; defaults to the function name.
        input_shape: example input shape including a batch dimension, or a
            callable ``kwargs -> shape`` when it depends on the factory arguments.
        input_dtype: dtype of the example input.
        input_high: exclusive upper bound for integer (token id) inputs.
        description: one-line description.
        tags: free-form tags.
        overwrite: allow replacing an existing entry (otherwise a clear error).
    """

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        if key in _REGISTRY and not overwrite:
            raise ValueError(
                f"architecture {key!r} is already registered; pass overwrite=True to replace it"
            )
        _REGISTRY[key] = ModelInfo(
            name=key,
            factory=fn,
            input_shape=input_shape,
            input_dtype=input_dtype,
            input_high=input_high,
            description=description or _first_line(fn.__doc__),
            tags=tuple(tags),
        )
        return fn

    return decorator


def _ensure_builtin() -> None:
    # Importing the model modules registers the built-in architectures.
    import weightspace.arch.models  # noqa: F401


def list_models(tag: str | None = None) -> list[str]:
    """Sorted names of registered architectures (optionally with ``tag``)."""
    _ensure_builtin()
    return sorted(k for k, v in _REGISTRY.items() if tag is None or tag in v.tags)


def get_model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of ``name``; unknown names list the known ones."""
    _ensure_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown architecture {name!r}; registered: {', '.join(sorted(_REGISTRY))}. "
            "Register your own with @weightspace.arch.register_model(...)."
        ) from None


def create_model(name: str, *, seed: int | None = None, **kwargs: Any) -> nn.Module:
    """Instantiate architecture ``name`` with ``kwargs``.

    Args:
        seed: if given, parameters are initialised under ``torch.manual_seed``
            inside a forked RNG state, so the global RNG is left untouched.
    """
    info = get_model_info(name)
    kw = info.resolve_kwargs(**kwargs)
    if seed is None:
        return info.factory(**kw)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return info.factory(**kw)


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
