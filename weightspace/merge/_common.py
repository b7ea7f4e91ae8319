"""Helpers several :mod:`weightspace.merge` modules share: the merge errors,
validation at the boundary, spec resolution, the matchers' coordinates,
tensor slicing, batching data and running a state_dict through a module
template. Structure of a spec (axis indexing, head layouts) lives in
:mod:`weightspace.symmetry`."""

from __future__ import annotations

import copy
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from weightspace.core import permutation_spec
from weightspace.errors import ConfigError, NonFiniteWeightsError, StateDictError, WeightspaceError
from weightspace.graph import validate_state_dict
from weightspace.symmetry import HeadLayout, PermGroup, PermutationSpec, split_groups

#: entries per block of the merges' blockwise passes (float64 working
#: buffers of the elementwise merges, mask passes): 1 MiB of float64, stays
#: in cache. Elementwise work, so the results do not depend on it.
BLOCK = 1 << 17

class MergeError(WeightspaceError, ValueError):
    """Models cannot be merged as asked (different architectures, wrong
    weights, missing data, unknown method, ...)."""


class MergeConfigError(MergeError, ConfigError):
    """A merge config holds a wrong type, an out-of-range value, an unknown
    key, method, option or architecture. ``path`` names the config file and
    ``field`` the dotted key (``models[1].weight``)."""


# ----------------------------------------------------------------- validation
def model_label(i: int, names: Sequence[str] | None) -> str:
    if names is not None and i < len(names) and names[i]:
        return f"model {i} ({names[i]})"
    return f"model {i}"


def check_state_dict(
    sd: Mapping[str, torch.Tensor], spec: PermutationSpec, label: str = "model"
) -> None:
    """Raise a clear error unless ``sd`` fits ``spec`` exactly.

    Raises:
        StateDictError: missing (e.g. BatchNorm running statistics) or
            unexpected keys, or a tensor of the wrong shape -- naming it.
        NonFiniteWeightsError: NaN/Inf in a floating tensor, naming it.
    """

    if not isinstance(sd, Mapping):
        raise MergeError(f"{label}: expected a state_dict (mapping of names to tensors), got {type(sd).__name__}")
    try:
        validate_state_dict(sd, spec.param_shapes, list(spec.float_keys) + list(spec.extra_keys))
    except StateDictError as exc:
        missing_stats = [k for k in spec.float_keys if k not in sd and is_running_stat(k)]
        hint = ""
        if missing_stats:
            hint = (
                f" BatchNorm running statistics are missing ({missing_stats[:4]}); save the model's full "
                "state_dict() (buffers included), or re-estimate them with reset_bn_stats on the full state_dict."
            )
        raise StateDictError(f"{label}: {exc}{hint}") from None
    except NonFiniteWeightsError as exc:
        raise NonFiniteWeightsError(f"{label}: {exc}") from None


def check_state_dicts(
    sds: Sequence[Mapping[str, torch.Tensor]],
    spec: PermutationSpec,
    names: Sequence[str] | None = None,
    *,
    min_models: int = 1,
) -> None:
    """:func:`check_state_dict` for every model, plus a count check. Two
    models of different architectures fail here with the keys that differ."""
    if len(sds) < min_models:
        raise MergeError(f"need at least {min_models} model(s), got {len(sds)}")
    for i, sd in enumerate(sds):
        check_state_dict(sd, spec, model_label(i, names))


def resolve_spec(spec: PermutationSpec | str, **arch_kwargs: Any) -> PermutationSpec:
    """A :class:`PermutationSpec`, or the spec of registered architecture ``spec``."""
    if isinstance(spec, PermutationSpec):
        return spec
    if isinstance(spec, str):

        return permutation_spec(spec, **arch_kwargs)
    raise TypeError(f"spec must be a PermutationSpec or an architecture name, got {type(spec).__name__}")


def is_running_stat(key: str) -> bool:
    """BatchNorm running statistics: buffers, not learned weights."""
    return key.endswith(".running_mean") or key.endswith(".running_var")


def coordinates(spec: PermutationSpec) -> list[tuple[str, PermGroup | HeadLayout]]:
    """The coordinates the matchers and OT fusion solve one at a time:
    ``("neuron", group)`` for every neuron group outside attention heads, then
    ``("head", layout)`` for every head group with its nested groups
    (:func:`weightspace.symmetry.split_groups`, which raises
    :class:`~weightspace.errors.SpecError` on heads it cannot split)."""
    free, heads = split_groups(spec)
    return [("neuron", g) for g in free] + [("head", L) for L in heads]


# -------------------------------------------------------------- tensor slices
def unit_rows(t: torch.Tensor, axis: int, start: int, n: int, u: int) -> torch.Tensor:
    """Positions ``start + i*u + r`` of ``axis`` as rows: ``[n, u * rest]``."""
    return t.narrow(axis, start, n * u).movedim(axis, 0).reshape(n, -1)


def nested_rows(
    t: torch.Tensor, axis: int, groups: Sequence[PermGroup], entry: int, n: int, u: int
) -> torch.Tensor:
    """:func:`unit_rows` of nested groups (one per head, ``n`` units each) at
    their axis entry ``groups[j].axes[entry]``, stacked head after head:
    ``[len(groups) * n, u * rest]``."""
    return torch.cat([unit_rows(t, axis, g.axes[entry][2], n, u) for g in groups])


def masked_unit_rows(
    t: torch.Tensor, axis: int, start: int, n: int, u: int, keep: torch.Tensor
) -> torch.Tensor:
    """:func:`unit_rows` keeping only the within-unit positions where the bool
    mask ``keep [u]`` is set: ``[n, keep.sum() * rest]``."""
    return unit_rows(t, axis, start, n, u).view(n, u, -1)[:, keep].reshape(n, -1)


# ----------------------------------------------------------- running a model
def instantiate(model: nn.Module, sd: Mapping[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` holding ``sd`` (``model`` is not modified)."""
    m = copy.deepcopy(model)
    try:
        m.load_state_dict(dict(sd), strict=True)
    except RuntimeError as exc:
        raise StateDictError(f"state_dict does not fit {type(model).__name__}: {exc}") from None
    return m


def iter_batches(
    data: Any, batch_size: int, max_samples: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """``(x, y or None)`` batches from ``(x, y)`` tensors, an ``x`` tensor, or
    an iterable of such batches (e.g. a ``DataLoader``); with
    ``max_samples``, stop after that many samples (the last batch is cut)."""
    if max_samples is None:
        yield from _iter_batches(data, batch_size)
        return
    seen = 0
    for x, y in _iter_batches(data, batch_size):
        if seen >= max_samples:
            return
        x, y = x[: max_samples - seen], (None if y is None else y[: max_samples - seen])
        seen += x.shape[0]
        yield x, y


def _iter_batches(data: Any, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    if isinstance(data, torch.Tensor):
        for i in range(0, data.shape[0], batch_size):
            yield data[i : i + batch_size], None
        return
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(d, torch.Tensor) for d in data):
        x, y = data
        if x.shape[0] != y.shape[0]:
            raise MergeError(f"data: x has {x.shape[0]} samples but y has {y.shape[0]}")
        for i in range(0, x.shape[0], batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]
        return
    if data is None:
        raise MergeError("this step needs data: pass (x, y) tensors, an x tensor or an iterable of batches")
    for batch in data:
        if isinstance(batch, torch.Tensor):
            yield batch, None
        elif isinstance(batch, (tuple, list)) and len(batch) >= 1:
            yield batch[0], (batch[1] if len(batch) > 1 else None)
        else:
            raise MergeError(f"data yielded a {type(batch).__name__}; yield x or (x, y) tensors")


def check_finite_data(x: torch.Tensor, what: str = "data") -> None:
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise NonFiniteWeightsError(f"{what} contains NaN/Inf values")


def channel_axis(module: nn.Module | None) -> int:
    """Which axis of a module's output holds its neurons: 1 for convolutions
    and norms over ``(B, C, *S)``, the last axis otherwise (Linear, Embedding)."""
    conv_like = (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.GroupNorm)
    return 1 if isinstance(module, conv_like) else -1


def as_samples(t: torch.Tensor, axis: int) -> torch.Tensor:
    """``(B, ..., C, ...)`` activations -> ``(samples, C)``: positions and
    tokens count as samples (a neuron is the same function at every position)."""
    return t.movedim(axis, -1).reshape(-1, t.shape[axis])

