"""Train / validation / test splits of a :class:`~weightspace.predict.WeightDataset`.

Every split keeps the rows of one *group* together (by default a zoo member,
so checkpoints of one network never straddle train and test). They return
index arrays, so one dataset can be split many ways without reloading.

* :func:`random_split` -- groups shuffled with a seed.
* :func:`seed_split` -- groups = training seed (members sharing a seed stay together).
* :func:`hyperparameter_split` -- out of distribution: train on some values
  (or the low end) of a hyperparameter, test on others (the high end), as in
  the GMN paper's "train on narrow, test on wide" experiment.

(:meth:`zoo.Zoo.split` does the same for zoo views; these work on the
per-checkpoint rows of a dataset and add numeric thresholds. All of them
deal groups out with :func:`weightspace.common.splits.group_split`, so a
zoo split and a dataset split with the same seed and fractions agree.)
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

from weightspace.common.splits import check_fractions, group_keys, group_split, resolve_column

__all__ = ["Split", "random_split", "seed_split", "hyperparameter_split", "resolve_column"]


class Split(NamedTuple):
    """Row indices ``[n_train]``, ``[n_val]``, ``[n_test]`` (sorted, disjoint)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def _group_split(keys: np.ndarray, fractions: Sequence[float], seed: int) -> Split:
    return Split(*group_split(keys, check_fractions(fractions, parts=3), seed=seed))


def random_split(
    dataset: Any, fractions: Sequence[float] = (0.7, 0.15, 0.15), *, seed: int = 0, group: str = "member_id"
) -> Split:
    """Random split of groups (default: members) by ``fractions``.

    Args:
        dataset: a :class:`~weightspace.predict.WeightDataset`.
        fractions: train / val / test fractions of the *groups*.
        seed: shuffling seed (``numpy.random.default_rng``).
        group: meta column whose rows stay together.
    """
    col = resolve_column(dataset.meta, group)
    return _group_split(group_keys(dataset.meta[col].tolist()), fractions, seed)


def seed_split(dataset: Any, fractions: Sequence[float] = (0.7, 0.15, 0.15), *, seed: int = 0) -> Split:
    """Random split keeping members of one training seed together."""
    return random_split(dataset, fractions, seed=seed, group="seed")


def hyperparameter_split(
    dataset: Any,
    column: str,
    *,
    train: Sequence[Any] | None = None,
    test: Sequence[Any] | None = None,
    threshold: float | None = None,
    val_fraction: float = 0.15,
    seed: int = 0,
    group: str = "member_id",
) -> Split:
    """Out-of-distribution split on a hyperparameter.

    Either by values (``train=[...]``, ``test=[...]``; e.g. train on relu and
    tanh, test on gelu) or by ``threshold`` for a numeric column (train on
    ``value <= threshold``, test on ``value > threshold``; e.g. narrow vs
    wide, small vs large learning rates). Rows matching neither are left
    out. The validation set is ``val_fraction`` of the training groups,
    drawn with ``seed`` (so it is in-distribution, as model selection must be).

    Args:
        dataset: a :class:`~weightspace.predict.WeightDataset`.
        column: meta column (a unique suffix works: ``"activation"``).
        train, test: value lists (``test`` defaults to every other value).
        threshold: numeric cut instead of value lists.
        val_fraction: fraction of training groups held out for validation.
        seed: seed of the validation draw.
        group: meta column whose rows stay together.
    """
    meta = dataset.meta
    col = resolve_column(meta, column)
    vals = meta[col].tolist()
    if threshold is not None:
        if train is not None or test is not None:
            raise ValueError("give either threshold or train/test values, not both")
        try:
            num = np.asarray(vals, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"threshold split needs a numeric column; {col!r} has values like {vals[:3]}") from None
        in_train = num <= float(threshold)
        in_test = num > float(threshold)
    else:
        if train is None:
            raise ValueError("hyperparameter_split needs train=[values] (and optionally test=[values]) or threshold=")
        tr_keys = set(group_keys(list(train)).tolist())
        te_keys = set(group_keys(list(test)).tolist()) if test is not None else None
        both = tr_keys & te_keys if te_keys is not None else set()
        if both:
            raise ValueError(f"values {sorted(both)} are listed in both train and test")
        keys = group_keys(vals)
        in_train = np.array([k in tr_keys for k in keys])
        in_test = np.array([(k in te_keys) if te_keys is not None else (k not in tr_keys) for k in keys])
    if not in_train.any() or not in_test.any():
        raise ValueError(
            f"split on {col!r} leaves {int(in_train.sum())} training and {int(in_test.sum())} test rows; "
            f"values present: {sorted(set(map(str, vals)))[:10]}"
        )
    gcol = resolve_column(meta, group)
    tr_idx = np.flatnonzero(in_train)
    inner = _group_split(group_keys(meta[gcol].iloc[tr_idx].tolist()), (1.0 - val_fraction, val_fraction, 0.0), seed)
    return Split(np.sort(tr_idx[inner.train]), np.sort(tr_idx[inner.val]), np.flatnonzero(in_test))
