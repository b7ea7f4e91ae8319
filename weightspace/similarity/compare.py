"""Layer x layer CKA between two networks, streamed over a dataset.

Ties :mod:`~weightspace.similarity.capture` to the streaming accumulators:
each batch is pushed through both networks (traced once), reduced to
``(b, d)`` matrices and folded into the accumulator, so memory does not grow
with the number of samples.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any, Callable, Sequence

from torch import nn

from weightspace.similarity._validate import SimilarityInputError
from weightspace.similarity.capture import (
    ActivationCapture,
    Reduction,
    batches,
    capturable_layers,
)
from weightspace.similarity.cka import CKAMatrix
from weightspace.similarity.streaming import LinearCKAAccumulator, MinibatchCKAAccumulator

__all__ = ["model_cka_matrix"]

_METHODS = ("linear", "minibatch")


def model_cka_matrix(
    model_a: nn.Module,
    model_b: nn.Module | None,
    data: Any,
    *,
    layers_a: Sequence[str] | None = None,
    layers_b: Sequence[str] | None = None,
    method: str = "linear",
    reduction: Reduction = "flatten",
    batch_size: int = 256,
    max_samples: int | None = None,
    max_bytes: int = 2 * 1024**3,
    progress: Callable[[int], None] | None = None,
    capture: str = "auto",
) -> CKAMatrix:
    """CKA between every captured layer of ``model_a`` and of ``model_b``.

    Args:
        model_a: any module (rows of the matrix).
        model_b: second module (columns); ``None`` compares ``model_a`` with
            itself. Both receive the same input batches.
        data: one ``(N, ...)`` tensor/array or an iterable of batches (see
            :func:`~weightspace.similarity.capture.batches`).
        layers_a, layers_b: layer names; default: every module output that is
            a batch-first float tensor
            (``capturable_layers(model, first_batch, modules_only=True)``).
        method: ``"linear"`` -- exact full-data linear CKA
            (:class:`LinearCKAAccumulator`, memory ``O(sum widths^2)``);
            ``"minibatch"`` -- Nguyen et al.'s unbiased minibatch CKA
            (:class:`MinibatchCKAAccumulator`, memory ``O(batch^2)``; batches
            with fewer than 4 samples are skipped and counted in
            ``result.extra["skipped_samples"]``, with a warning).
        reduction: how ``(b, ...)`` activations become ``(b, d)`` (see capture).
        batch_size: chunk size when ``data`` is one tensor/array.
        max_samples: use at most this many samples.
        max_bytes: memory cap of the exact accumulator (clear error above).
        progress: optional callback called with the number of samples done
            after each batch (e.g. a ``tqdm.update``); the library never prints.
        capture: activation capture path of both models, ``"auto"`` (fx when
            a model traces, else forward hooks on its submodules), ``"fx"``
            or ``"hooks"`` (see :class:`ActivationCapture`).

    Returns:
        :class:`CKAMatrix` of shape ``(len(layers_a), len(layers_b))``.
    """
    if method not in _METHODS:
        raise SimilarityInputError(f"method must be one of {_METHODS}, got {method!r}")
    it = iter(batches(data, batch_size))
    try:
        first = next(it)
    except StopIteration:
        raise SimilarityInputError("data yielded no batches") from None
    it = itertools.chain([first], it)
    same = model_b is None or (model_b is model_a and layers_b == layers_a)
    if layers_a is None:
        layers_a = capturable_layers(model_a, first, modules_only=True, method=capture)
    cap_a = ActivationCapture(model_a, layers_a, method=capture)
    if same:
        cap_b = cap_a
    else:
        if layers_b is None:
            layers_b = capturable_layers(model_b, first, modules_only=True, method=capture)
        cap_b = ActivationCapture(model_b, layers_b, method=capture)
    acc = LinearCKAAccumulator(max_bytes=max_bytes) if method == "linear" else MinibatchCKAAccumulator()
    seen = skipped = 0
    for x in it:
        if max_samples is not None:
            if seen >= max_samples:
                break
            x = x[: max_samples - seen]
        acts_a = cap_a.activations(x, reduction)
        acts_b = None if same else cap_b.activations(x, reduction)
        b = next(iter(acts_a.values())).shape[0]
        seen += b
        if method == "minibatch" and b < MinibatchCKAAccumulator.min_batch:
            skipped += b
        else:
            acc.update(acts_a, acts_b)
        if progress is not None:
            progress(seen)
    if skipped:
        warnings.warn(
            f"skipped {skipped} sample(s) in batches smaller than 4 (unbiased HSIC needs n >= 4)",
            UserWarning,
            stacklevel=2,
        )
    res = acc.result()
    extra = dict(res.extra)
    extra["reduction"] = reduction if isinstance(reduction, str) else getattr(reduction, "__name__", "callable")
    if method == "minibatch":
        extra["skipped_samples"] = skipped
    return CKAMatrix(res.values, res.layers_a, res.layers_b, res.n_samples, res.method, res.unbiased, extra)
