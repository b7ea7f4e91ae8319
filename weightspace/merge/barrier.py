"""Loss and accuracy along the linear path between two models, and the
barrier (Frankle et al. 2020; Entezari et al. 2022):

``barrier = max_lam [ L((1 - lam) a + lam b) - ((1 - lam) L(a) + lam L(b)) ]``

for the loss, and the same for the error rate (``1 - accuracy``). Results are
returned as data (:class:`PathResult`); plotting is the caller's business.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from weightspace.core import permutation_spec
from weightspace.merge._common import MergeError, check_finite_data, instantiate, iter_batches
from weightspace.merge.average import interpolate
from weightspace.merge.repair import endpoint_stats, repair, repair_plan, reset_bn_stats

__all__ = ["PathResult", "barrier", "evaluate", "linear_path", "loss_and_accuracy"]


def barrier(lambdas: Sequence[float], values: Sequence[float]) -> float:
    """``max_i [values_i - linear interpolation of the endpoint values]``.

    Args:
        lambdas: ``[K]`` path positions, the first 0 and the last 1 (sorted).
        values: ``[K]`` loss (or error) at each position.
    """
    lam = torch.as_tensor(list(lambdas), dtype=torch.float64)
    v = torch.as_tensor(list(values), dtype=torch.float64)
    if lam.numel() < 2 or lam.shape != v.shape:
        raise MergeError(f"barrier needs >= 2 matching lambdas/values, got {lam.numel()} and {v.numel()}")
    if float(lam[0]) != 0.0 or float(lam[-1]) != 1.0:
        raise MergeError("barrier: lambdas must start at 0 and end at 1")
    line = (1 - lam) * v[0] + lam * v[-1]
    return float((v - line).max())


def loss_and_accuracy(
    model: nn.Module,
    sd: Mapping[str, torch.Tensor],
    data: Any,
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 512,
) -> tuple[float, float]:
    """Mean loss and accuracy of ``sd`` (eval mode) on labelled ``data``.

    (Named ``evaluate`` before; :func:`evaluate` remains as a deprecated alias.)

    Args:
        data: ``(x (N, ...), y (N,))`` or an iterable of ``(x, y)`` batches.
        loss_fn: ``(logits, y) -> per-batch mean``; default cross-entropy.

    Returns:
        ``(loss, accuracy)``; accuracy is NaN when outputs are not class scores.
    """
    loss_fn = loss_fn or nn.functional.cross_entropy
    m = instantiate(model, sd).eval()
    tot, correct, n = 0.0, 0, 0
    classify = True
    with torch.no_grad():
        for x, y in iter_batches(data, batch_size):
            if y is None:
                raise MergeError("loss_and_accuracy needs labelled data (x, y)")
            check_finite_data(x)
            out = m(x)
            tot += float(loss_fn(out, y)) * x.shape[0]
            if classify and out.dim() == 2 and y.dim() == 1 and not y.is_floating_point():
                correct += int((out.argmax(-1) == y).sum())
            else:
                classify = False
            n += x.shape[0]
    if n == 0:
        raise MergeError("loss_and_accuracy: data yielded no samples")
    return tot / n, (correct / n if classify else float("nan"))


def evaluate(*args: Any, **kwargs: Any) -> tuple[float, float]:
    """Deprecated alias of :func:`loss_and_accuracy` (same arguments; the
    name collided with ``nn.train.evaluate``, ``predict.metrics.evaluate``
    and ``zoo.train.evaluate``)."""
    warnings.warn(
        "weightspace.merge.evaluate is deprecated; use weightspace.merge.loss_and_accuracy",
        DeprecationWarning,
        stacklevel=2,
    )
    return loss_and_accuracy(*args, **kwargs)


@dataclass
class PathResult:
    """Loss/accuracy along ``(1 - lam) * a + lam * b``.

    Attributes:
        lambdas, loss, accuracy: ``[K]`` lists.
        loss_barrier: max over lambda of loss minus the endpoints' line.
        error_barrier: the same for the error rate ``1 - accuracy``.
        correction: ``None``, ``"reset_bn"`` or ``"repair"`` (applied at every lambda).
    """

    lambdas: list[float]
    loss: list[float]
    accuracy: list[float]
    loss_barrier: float
    error_barrier: float
    correction: str | None = None
    meta: dict = field(default_factory=dict)

    @property
    def midpoint(self) -> tuple[float, float]:
        """``(loss, accuracy)`` at the lambda closest to 0.5."""
        i = min(range(len(self.lambdas)), key=lambda k: abs(self.lambdas[k] - 0.5))
        return self.loss[i], self.accuracy[i]

    def to_dict(self) -> dict:
        return asdict(self)


def linear_path(
    model: nn.Module,
    sd_a: Mapping[str, torch.Tensor],
    sd_b: Mapping[str, torch.Tensor],
    data: Any,
    *,
    num_lambdas: int = 25,
    lambdas: Sequence[float] | None = None,
    correction: str | None = None,
    correction_data: Any = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 512,
    spec=None,
    progress: bool = False,
) -> PathResult:
    """Evaluate every model on the linear path from ``a`` to ``b``.

    Args:
        model: module template of the architecture (not modified).
        sd_a, sd_b: endpoints; align ``b`` to ``a`` first to measure the
            barrier *modulo permutation*.
        data: labelled evaluation data ``(x, y)``.
        num_lambdas: evenly spaced positions in ``[0, 1]`` (default 25).
        lambdas: explicit sorted positions (must include 0 and 1).
        correction: ``None``; ``"reset_bn"`` re-estimates BatchNorm statistics
            at every lambda; ``"repair"`` applies REPAIR with endpoint
            weights ``[1 - lam, lam]`` at every lambda.
        correction_data: data for the correction (default: ``data``'s inputs).
        loss_fn: ``(logits, y) -> mean loss``; default cross-entropy.

    Returns:
        :class:`PathResult`.
    """
    from tqdm.auto import tqdm

    if lambdas is None:
        if num_lambdas < 2:
            raise MergeError(f"num_lambdas must be >= 2, got {num_lambdas}")
        lambdas = torch.linspace(0, 1, num_lambdas, dtype=torch.float64).tolist()
    lambdas = [float(v) for v in lambdas]
    if correction not in (None, "none", "reset_bn", "repair"):
        raise MergeError(f"correction must be None, 'reset_bn' or 'repair', got {correction!r}")
    correction = None if correction == "none" else correction
    cdata = correction_data
    if cdata is None and correction is not None:
        cdata = data[0] if isinstance(data, (tuple, list)) else data
    stats = None
    if correction == "repair":
        if spec is None:
            spec = permutation_spec(model, next(iter_batches(cdata, 2))[0][:2])
        stats = endpoint_stats(model, [sd_a, sd_b], cdata, repair_plan(model, spec), batch_size=batch_size)
    losses, accs = [], []
    for lam in tqdm(lambdas, disable=not progress, desc="linear path", leave=False):
        sd = interpolate(sd_a, sd_b, lam)
        if correction == "reset_bn":
            sd = reset_bn_stats(model, sd, cdata, batch_size=batch_size)
        elif correction == "repair":
            sd = repair(model, sd, [sd_a, sd_b], cdata, weights=[1 - lam, lam], spec=spec,
                        batch_size=batch_size, stats=stats)
        loss, acc = loss_and_accuracy(model, sd, data, loss_fn=loss_fn, batch_size=batch_size)
        losses.append(loss)
        accs.append(acc)
    err = [1.0 - a for a in accs]
    return PathResult(
        lambdas, losses, accs, barrier(lambdas, losses),
        barrier(lambdas, err) if all(a == a for a in accs) else float("nan"), correction,
    )
