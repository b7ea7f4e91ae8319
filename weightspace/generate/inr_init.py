"""Meta-learned initialisations for SIREN INRs (Tancik et al. 2021,
"Learned Initializations for Optimizing Coordinate-Based Neural
Representations"), learned with Reptile (Nichol et al. 2018).

A *signal family* is a set of grey images on a shared coordinate grid
(:func:`load_signals`: sklearn digits upsampled, crops of the sklearn sample
photos, or procedural signals, all through :func:`weightspace.data.load_dataset`). Reptile
starts from the standard SIREN init (``create_model("siren")``) and
repeats: draw ``meta_batch`` signals, fit each with ``inner_steps`` Adam
steps from the current init, move the init towards the mean of the fitted
weights, ``theta <- theta + eps (mean(phi) - theta)`` with ``eps`` annealed
linearly to 0. Fits of many signals run at once with ``torch.func.vmap``.

:func:`fit_curve` measures PSNR after ``k`` Adam steps from any init, so
the meta-learned and the standard init are compared with the same
optimiser on held-out signals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from weightspace.data import load_dataset
from weightspace.generate._common import ArchSpec, AsDictMixin, as_arch

__all__ = ["SignalSet", "load_signals", "fit_curve", "fit_signals", "reptile", "ReptileHistory", "psnr"]

FAMILIES = ("digits", "sample_crops", "sines", "blobs")


@dataclass
class SignalSet:
    """Signals on one coordinate grid.

    Attributes:
        coords: ``[P, 2]`` coordinates in ``[-1, 1]^2``.
        values: ``[S, P, 1]`` grey values in ``[0, 1]``.
        family: family name; ``indices``: the loader index of each signal.
        shape: ``(H, W)`` of the grid.
    """

    coords: Tensor
    values: Tensor
    family: str
    indices: list[int]
    shape: tuple[int, int]

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def subset(self, idx: Sequence[int]) -> "SignalSet":
        idx = list(idx)
        return SignalSet(self.coords, self.values[idx], self.family, [self.indices[i] for i in idx], self.shape)


def load_signals(family: str, indices: Sequence[int], *, size: int | None = None) -> SignalSet:
    """A :class:`SignalSet` of ``family`` (one of :data:`FAMILIES`).

    ``digits``: ``inr_digits`` images ``indices`` (default ``size`` 28);
    ``sample_crops``: ``inr_sample_image`` crops, even indices from the
    ``china`` photo and odd ones from ``flower`` (default ``size`` 32);
    ``sines`` / ``blobs``: ``inr_signal`` procedural signals (default 16).
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown signal family {family!r}; choose one of {FAMILIES}")
    if len(indices) == 0:
        raise ValueError("no signal indices given")
    coords, vals, shape = None, [], None
    for i in indices:
        if family == "digits":
            ds = load_dataset("inr_digits", index=int(i), size=size or 28)
        elif family == "sample_crops":
            ds = load_dataset("inr_sample_image", index=int(i) // 2, image=("china", "flower")[int(i) % 2],
                                  size=size or 32)
        else:
            ds = load_dataset("inr_signal", index=int(i), kind=family, size=size or 16)
        if coords is None:
            coords, shape = ds.x_train, (int(ds.meta["height"]), int(ds.meta["width"]))
        vals.append(ds.y_train)
    return SignalSet(coords, torch.stack(vals), family, [int(i) for i in indices], shape)


def psnr(mse: Tensor) -> Tensor:
    """PSNR (peak 1) of mean squared errors: ``10 log10(1 / mse)``."""
    return -10.0 * torch.log10(mse.clamp(min=1e-12))


def _functional(arch: ArchSpec):
    from torch.func import functional_call

    module = arch.module(seed=0)

    def mse(params: Mapping[str, Tensor], coords: Tensor, target: Tensor) -> Tensor:
        return ((functional_call(module, dict(params), (coords,)) - target) ** 2).mean()

    return mse


def fit_signals(
    arch: ArchSpec,
    init: Mapping[str, Tensor],
    coords: Tensor,
    targets: Tensor,
    steps: int,
    lr: float,
    record: Sequence[int] = (),
) -> tuple[dict[str, Tensor], dict[int, Tensor]]:
    """Fit ``S`` signals at once from ``init`` with ``steps`` Adam steps
    (vmapped over signals; public because the INR study fits its zoos with it).

    Returns ``(fitted params {name: [S, ...]}, {k: mse [S]} for k in record)``.
    """
    from torch.func import grad, vmap

    mse = _functional(arch)
    S = targets.shape[0]
    params = {k: v.detach().unsqueeze(0).expand(S, *v.shape).clone() for k, v in init.items()}
    m = {k: torch.zeros_like(v) for k, v in params.items()}
    v2 = {k: torch.zeros_like(v) for k, v in params.items()}
    b1, b2, eps = 0.9, 0.999, 1e-8
    per_loss = vmap(mse, in_dims=(0, None, 0))
    per_grad = vmap(grad(mse), in_dims=(0, None, 0))
    out: dict[int, Tensor] = {}
    want = set(int(k) for k in record)
    for s in range(steps + 1):
        if s in want:
            with torch.no_grad():
                out[s] = per_loss(params, coords, targets)
        if s == steps:
            break
        g = per_grad(params, coords, targets)
        t = s + 1
        for k in params:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v2[k] = b2 * v2[k] + (1 - b2) * g[k] ** 2
            params[k] = params[k] - lr * (m[k] / (1 - b1**t)) / ((v2[k] / (1 - b2**t)).sqrt() + eps)
    return params, out


def fit_curve(
    init: Mapping[str, Tensor],
    signals: SignalSet,
    *,
    ks: Sequence[int] = (0, 1, 2, 5, 10, 25, 50, 100),
    lr: float = 1e-3,
    arch: ArchSpec | str = "siren",
    chunk: int = 64,
) -> dict[int, Tensor]:
    """PSNR ``[S]`` of every signal after ``k`` Adam steps from ``init``, for
    each ``k`` in ``ks`` (one fit per signal, run in chunks of ``chunk``)."""
    a = as_arch(arch)
    ks = sorted(set(int(k) for k in ks))
    res: dict[int, list[Tensor]] = {k: [] for k in ks}
    for i in range(0, len(signals), chunk):
        _, mses = fit_signals(a, init, signals.coords, signals.values[i : i + chunk], ks[-1], lr, ks)
        for k in ks:
            res[k].append(psnr(mses[k]))
    return {k: torch.cat(v) for k, v in res.items()}


@dataclass
class ReptileHistory(AsDictMixin):
    """Per outer step: mean PSNR of the meta-batch after the inner loop."""

    inner_psnr: list[float] = field(default_factory=list)


def reptile(
    signals: SignalSet,
    *,
    arch: ArchSpec | str = "siren",
    outer_steps: int = 500,
    inner_steps: int = 10,
    meta_batch: int = 8,
    inner_lr: float = 1e-3,
    outer_lr: float = 1.0,
    seed: int = 0,
    progress: bool = False,
    callback: Callable[[int, float], None] | None = None,
    **arch_kwargs: Any,
) -> tuple[dict[str, Tensor], ReptileHistory]:
    """Meta-learn a SIREN initialisation for ``signals`` with Reptile.

    Args:
        arch: an INR architecture mapping ``[P, 2]`` coordinates to
            ``[P, 1]`` values (default the registry's ``siren``).
        outer_steps: Reptile updates; ``meta_batch`` signals each.
        inner_steps, inner_lr: the inner Adam fit.
        outer_lr: initial ``eps`` (annealed linearly to 0).
        seed: initial weights (``create_model(seed=seed)``) and signal draws.

    Returns:
        ``(initial state_dict, ReptileHistory)``.
    """
    from tqdm.auto import tqdm

    a = as_arch(arch, **arch_kwargs)
    if signals.coords.shape[1] != a.input_shape()[0]:
        raise ValueError(f"{a.label} takes {a.input_shape()[0]}-d coordinates, the signals have {signals.coords.shape[1]}")
    theta = {k: v.detach().clone() for k, v in a.module(seed=seed).state_dict().items()}
    gen = torch.Generator().manual_seed(int(seed) + 1)
    hist = ReptileHistory()
    S = len(signals)
    for step in tqdm(range(int(outer_steps)), disable=not progress, desc="reptile"):
        idx = torch.randperm(S, generator=gen)[: min(meta_batch, S)]
        phi, mses = fit_signals(a, theta, signals.coords, signals.values[idx], inner_steps, inner_lr, [inner_steps])
        eps = outer_lr * (1.0 - step / max(1, outer_steps))
        theta = {k: theta[k] + eps * (phi[k].mean(0) - theta[k]) for k in theta}
        hist.inner_psnr.append(float(psnr(mses[inner_steps]).mean()))
        if callback is not None:
            callback(step, hist.inner_psnr[-1])
    return theta, hist
