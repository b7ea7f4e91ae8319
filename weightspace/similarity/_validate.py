"""Input conversion and validation shared by every similarity measure.

All measures accept ``numpy.ndarray`` or ``torch.Tensor`` (any device, any
real dtype) and compute in float64 numpy. Validation happens once, here, so
every public function fails the same way on the same bad input.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from weightspace.errors import WeightspaceError


class SimilarityInputError(WeightspaceError, ValueError):
    """Activations that no similarity measure can use: wrong number of
    dimensions, mismatched sample counts, too few samples, NaN/Inf."""


class DegenerateRepresentationWarning(UserWarning):
    """A representation (or a neuron) has zero variance over the samples, so a
    similarity that normalises by its variance is undefined. The measure
    returns its documented fallback value (e.g. CKA = 0) instead of NaN."""


def to_numpy(x: Any, name: str = "X", keep_float: bool = False) -> np.ndarray:
    """``x`` (torch tensor, numpy array or nested sequence) as a float64 numpy
    array -- or, with ``keep_float``, float32/float64 arrays as they are (no
    copy; :func:`center` converts while centring). Tensors are detached and
    moved to the CPU; the input is never modified."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        torch = None
    if torch is not None and isinstance(x, torch.Tensor):
        if x.is_complex():
            raise SimilarityInputError(f"{name} is complex ({x.dtype}); pass real activations")
        keep = keep_float and x.dtype in (torch.float32, torch.float64)
        x = x.detach().to("cpu", None if keep else torch.float64).numpy()
    arr = np.asarray(x)
    if arr.dtype == object:
        raise SimilarityInputError(f"{name} could not be converted to a numeric array")
    if np.iscomplexobj(arr):
        raise SimilarityInputError(f"{name} is complex ({arr.dtype}); pass real activations")
    if keep_float and arr.dtype in (np.float32, np.float64):
        return arr
    return arr.astype(np.float64, copy=False)


def as_activations(
    x: Any, name: str = "X", min_samples: int = 2, keep_float: bool = False
) -> np.ndarray:
    """Validate one activation matrix.

    Args:
        x: activations, shape ``(n_samples, n_features)``.
        name: how the argument is named in error messages.
        min_samples: fewest samples the caller's estimator is defined for.
        keep_float: return float32 input as float32 (the caller centres it
            with :func:`center`, which converts to float64 in the same pass).

    Returns:
        float64 array of shape ``(n_samples, n_features)`` (a view of ``x``
        when it already is float64 numpy; never written to).

    Raises:
        SimilarityInputError: not 2-D, fewer than ``min_samples`` rows, no
            columns, or non-finite values.
    """
    arr = to_numpy(x, name, keep_float)
    if arr.ndim != 2:
        hint = ""
        if arr.ndim > 2:
            hint = (
                f"; flatten per-sample features first, e.g. X.reshape({arr.shape[0]}, -1), "
                "or average conv maps over space"
            )
        elif arr.ndim == 1:
            hint = "; a single feature must be a column, e.g. X.reshape(-1, 1)"
        raise SimilarityInputError(
            f"{name} must be 2-D (n_samples, n_features), got shape {tuple(arr.shape)}{hint}"
        )
    n, p = arr.shape
    if n < min_samples:
        raise SimilarityInputError(
            f"{name} has {n} sample(s); this measure needs at least {min_samples}"
        )
    if p < 1:
        raise SimilarityInputError(f"{name} has no features (shape {tuple(arr.shape)})")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise SimilarityInputError(
            f"{name} contains {bad} non-finite value(s) (NaN or Inf); "
            "check the model or data that produced it"
        )
    return arr


def as_activation_pair(
    x: Any,
    y: Any,
    min_samples: int = 2,
    names: tuple[str, str] = ("X", "Y"),
    keep_float: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Validate two activation matrices over the same samples.

    Shapes: ``x`` is ``(n, p)``, ``y`` is ``(n, q)``; feature counts may
    differ, sample counts may not.
    """
    a = as_activations(x, names[0], min_samples, keep_float)
    b = as_activations(y, names[1], min_samples, keep_float)
    if a.shape[0] != b.shape[0]:
        raise SimilarityInputError(
            f"{names[0]} and {names[1]} must hold the same samples in the same order: "
            f"{names[0]} has {a.shape[0]} rows, {names[1]} has {b.shape[0]}"
        )
    return a, b


def center(x: np.ndarray) -> np.ndarray:
    """Column-centred float64 copy of ``x`` (shape ``(n, p)``, any real dtype).

    The first row is subtracted before the mean so that an exactly constant
    column becomes exactly zero (plain ``x - x.mean(0)`` can leave rounding
    noise of order 1e-17 that would otherwise turn "no variance" into an
    arbitrary similarity), and so large offsets do not cost precision.
    """
    shifted = np.subtract(x, x[:1], dtype=np.float64)
    shifted -= shifted.mean(axis=0, keepdims=True)
    return shifted


def warn_degenerate(what: str, value: str, stacklevel: int = 3) -> None:
    """Issue the one warning used for zero-variance representations."""
    warnings.warn(
        f"{what}: zero variance over the samples; returning {value}",
        DegenerateRepresentationWarning,
        stacklevel=stacklevel,
    )
