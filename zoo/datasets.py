"""Datasets for zoo training that need no internet.

Every dataset is built from data that ships inside installed packages or is
generated procedurally, and every train/validation/test split is fixed by an
explicit ``split_seed`` (the same for all members of a zoo, so their metrics
are comparable).

Built-in datasets (``load_dataset(name, **options)``):

``digits``
    ``sklearn.datasets.load_digits``: 1797 8x8 grey images in 10 classes,
    scaled to [0, 1], shape ``(N, 1, 8, 8)``. Stratified split.
``mnist1d``
    MNIST-1D generated with ``mnist1d.data.make_dataset`` (never its URL):
    sequences of shape ``(N, 1, 40)``, 10 classes. The generator's own 80/20
    train/test split is the test split; validation is carved out of train.
``inr_digits``
    One ``load_digits`` image (``index``) as an INR target: coordinates in
    [-1, 1]^2, shape ``(P, 2)``, grey values in [0, 1], shape ``(P, 1)``;
    optionally upsampled to ``size`` x ``size``.
``inr_sample_image``
    A ``size`` x ``size`` grey crop of one of ``load_sample_images`` (china,
    flower) after downscaling by ``scale``; the crop position is drawn from
    ``index``.
``inr_signal``
    A procedural 2-d signal (sum of random sinusoids or Gaussian blobs)
    drawn from ``index``.

INR datasets fit all pixels by default; with ``val_fraction`` /
``test_fraction`` > 0 those fractions of pixels are held out (interpolation
test). With 0 the val/test sets are the full grid.

Datasets are registered with :func:`register_dataset`, so recipes can say
``data: {name: my_data}`` for a user loader. The registry is
:mod:`weightspace.data`'s (the library reads datasets by name through it,
without importing ``zoo``): importing this module registers the built-ins
there, and the ``weightspace.datasets`` entry point names this module.
"""

from __future__ import annotations

import functools
import inspect
import math
import random
from typing import Any, Callable

import numpy as np
import torch

from weightspace import data as _data
from weightspace.data import register_dataset
from weightspace.errors import ConfigError, UnknownNameError
from zoo.errors import RecipeError

__all__ = [
    "Dataset",
    "load_dataset",
    "list_datasets",
    "register_dataset",
    "MEMBER_LEVEL_DATA_KEYS",
]

#: Data options applied per member (with the member's seed) by the trainer,
#: not by the loader: they never change the shared splits.
MEMBER_LEVEL_DATA_KEYS = ("train_fraction", "label_noise")


class Dataset(_data.Dataset):
    """Tensors of one dataset, already split: :class:`weightspace.data.Dataset`
    (its fields ``name``, ``task``, ``x_train`` ... ``y_test``,
    ``num_classes``, ``meta``) with the helpers below. Classification targets
    are class ids, int64 ``(N,)``; INR targets are signal values, float32
    ``(N, C)``; ``meta`` holds e.g. the digit ``label`` of an INR image and
    the grid shape.
    """

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input (without the batch dimension)."""
        return tuple(self.x_train.shape[1:])

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of split ``"train"``, ``"val"`` or ``"test"``."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}; use 'train', 'val' or 'test'")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def sizes(self) -> dict[str, int]:
        return {s: int(self.split(s)[0].shape[0]) for s in ("train", "val", "test")}


def list_datasets() -> list[str]:
    """Sorted names of the registered datasets."""
    return _data.list_datasets()


def load_dataset(name: str, **options: Any) -> Dataset:
    """Load registered dataset ``name`` with ``options`` (cached per process).

    Member-level options (``train_fraction``, ``label_noise``) are ignored
    here; the trainer applies them with each member's seed.

    Raises:
        RecipeError: unknown dataset or option.
    """
    opts = {k: v for k, v in options.items() if k not in MEMBER_LEVEL_DATA_KEYS}
    try:
        return _data.load_dataset(name, **opts)
    except RecipeError:
        raise
    except (UnknownNameError, ConfigError) as e:
        raise RecipeError(e.message, path=e.path, field=e.field) from None


# --------------------------------------------------------------------------- helpers


def _split_indices(
    n: int, val_fraction: float, test_fraction: float, seed: int, stratify: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded (stratified) train/val/test index split."""
    from sklearn.model_selection import train_test_split

    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise RecipeError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) "
            "and sum to less than 1"
        )
    idx = np.arange(n)
    rest, test = (idx, idx[:0])
    if test_fraction > 0:
        rest, test = train_test_split(
            idx, test_size=test_fraction, random_state=seed, stratify=stratify
        )
    train, val = rest, rest[:0]
    if val_fraction > 0:
        strat = None if stratify is None else stratify[rest]
        train, val = train_test_split(
            rest, test_size=val_fraction / (1 - test_fraction), random_state=seed + 1, stratify=strat
        )
    return np.sort(train), np.sort(val), np.sort(test)


def _coords(h: int, w: int) -> torch.Tensor:
    """Pixel-centre coordinates in [-1, 1]^2, shape ``(h*w, 2)``, row-major (y, x)."""
    ys = torch.linspace(-1, 1, h)
    xs = torch.linspace(-1, 1, w)
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1)
    return grid.reshape(-1, 2)


def _inr_dataset(
    name: str, image: torch.Tensor, val_fraction: float, test_fraction: float, split_seed: int, meta: dict
) -> Dataset:
    """Coordinates -> values dataset of one grey image ``(H, W)`` in [0, 1]."""
    h, w = image.shape
    coords = _coords(h, w)
    values = image.reshape(-1, 1).to(torch.float32)
    meta = dict(meta, height=h, width=w)
    if val_fraction == 0 and test_fraction == 0:
        return Dataset(name, "inr", coords, values, coords, values, coords, values, 1, meta)
    tr, va, te = _split_indices(len(values), val_fraction, test_fraction, split_seed, None)
    full = (coords, values)
    va_xy = (coords[va], values[va]) if len(va) else full
    te_xy = (coords[te], values[te]) if len(te) else full
    return Dataset(name, "inr", coords[tr], values[tr], *va_xy, *te_xy, 1, meta)


def _inr_loader(name: str) -> Callable[[Callable[..., tuple[torch.Tensor, dict]]], Callable[..., Dataset]]:
    """Register ``image_fn(**options) -> (image (H, W) in [0, 1], meta)`` as
    the INR dataset ``name``. The loader takes ``image_fn``'s options plus
    ``split_seed``, ``val_fraction`` and ``test_fraction`` (0: all pixels)."""

    def register(image_fn: Callable[..., tuple[torch.Tensor, dict]]) -> Callable[..., Dataset]:
        def load(*args: Any, split_seed: int = 0, val_fraction: float = 0.0, test_fraction: float = 0.0,
                 **options: Any) -> Dataset:
            image, meta = image_fn(*args, **options)
            return _inr_dataset(name, image, val_fraction, test_fraction, split_seed, meta)

        own = list(inspect.signature(image_fn).parameters.values())
        splits = list(inspect.signature(load).parameters.values())[1:4]
        load = functools.wraps(image_fn)(load)
        load.__signature__ = inspect.Signature(own + splits, return_annotation="Dataset")  # type: ignore[attr-defined]
        return register_dataset(name)(load)

    return register


# --------------------------------------------------------------------------- built-ins


@register_dataset("digits")
def _digits(split_seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.25) -> Dataset:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    x = torch.tensor(X, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    yt = torch.tensor(y, dtype=torch.int64)
    tr, va, te = _split_indices(len(y), val_fraction, test_fraction, split_seed, y)
    return Dataset(
        "digits", "classification", x[tr], yt[tr], x[va], yt[va], x[te], yt[te], 10,
        {"split_seed": split_seed},
    )


@register_dataset("mnist1d")
def _mnist1d(
    split_seed: int = 0,
    val_fraction: float = 0.1,
    num_samples: int = 5000,
    data_seed: int = 42,
) -> Dataset:
    """MNIST-1D via ``make_dataset`` with an explicit ``data_seed``.

    ``make_dataset`` seeds and uses the *global* numpy / ``random`` RNGs; we
    save and restore both around the call so callers' RNG state is untouched.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = int(num_samples)
    args.seed = int(data_seed)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x_all = torch.tensor(np.asarray(data["x"]), dtype=torch.float32).unsqueeze(1)
    y_all = torch.tensor(np.asarray(data["y"]), dtype=torch.int64)
    x_te = torch.tensor(np.asarray(data["x_test"]), dtype=torch.float32).unsqueeze(1)
    y_te = torch.tensor(np.asarray(data["y_test"]), dtype=torch.int64)
    tr, va, _ = _split_indices(len(y_all), val_fraction, 0.0, split_seed, y_all.numpy())
    return Dataset(
        "mnist1d", "classification", x_all[tr], y_all[tr], x_all[va], y_all[va], x_te, y_te, 10,
        {"split_seed": split_seed, "data_seed": data_seed, "num_samples": num_samples},
    )


@_inr_loader("inr_digits")
def _inr_digits(index: int = 0, size: int = 8) -> tuple[torch.Tensor, dict]:
    from sklearn.datasets import load_digits

    d = load_digits()
    if not 0 <= index < len(d.images):
        raise RecipeError(f"inr_digits: index {index} out of range [0, {len(d.images)})")
    img = torch.tensor(d.images[index], dtype=torch.float32) / 16.0
    if size != img.shape[0]:
        img = torch.nn.functional.interpolate(
            img[None, None], size=(size, size), mode="bilinear", align_corners=True
        )[0, 0].clamp(0, 1)
    return img, {"index": index, "label": int(d.target[index])}


@_inr_loader("inr_sample_image")
def _inr_sample_image(index: int = 0, image: str = "china", size: int = 32, scale: float = 0.125) -> tuple[torch.Tensor, dict]:
    from sklearn.datasets import load_sample_images

    names = {"china": 0, "flower": 1}
    if image not in names:
        raise RecipeError(f"inr_sample_image: image must be one of {sorted(names)}, got {image!r}")
    arr = load_sample_images().images[names[image]].astype(np.float32).mean(-1) / 255.0
    full = torch.tensor(arr)[None, None]
    h, w = max(size, round(arr.shape[0] * scale)), max(size, round(arr.shape[1] * scale))
    small = torch.nn.functional.interpolate(full, size=(h, w), mode="bilinear", antialias=True)[0, 0]
    rng = np.random.default_rng([int(index), 7919])
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    crop = small[top : top + size, left : left + size].clamp(0, 1)
    return crop, {"index": index, "image": image, "top": top, "left": left}


@_inr_loader("inr_signal")
def _inr_signal(index: int = 0, kind: str = "sines", size: int = 16, components: int = 3) -> tuple[torch.Tensor, dict]:
    rng = np.random.default_rng([int(index), 104729])
    c = _coords(size, size).numpy()
    y, x = c[:, 0], c[:, 1]
    if kind == "sines":
        v = np.zeros_like(x)
        for _ in range(components):
            fx, fy = rng.uniform(0.5, 3.0, size=2)
            phase = rng.uniform(0, 2 * math.pi)
            v += rng.uniform(0.5, 1.0) * np.sin(math.pi * (fx * x + fy * y) + phase)
    elif kind == "blobs":
        v = np.zeros_like(x)
        for _ in range(components):
            cx, cy = rng.uniform(-0.8, 0.8, size=2)
            s = rng.uniform(0.15, 0.5)
            v += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s * s))
    else:
        raise RecipeError(f"inr_signal: kind must be 'sines' or 'blobs', got {kind!r}")
    v = (v - v.min()) / max(v.max() - v.min(), 1e-8)
    img = torch.tensor(v, dtype=torch.float32).reshape(size, size)
    return img, {"index": index, "kind": kind}
