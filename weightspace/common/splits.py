"""The one train / validation / test *group* split.

Rows that share a group (a zoo member, a training seed, a hyperparameter
value) always land in the same part. :meth:`zoo.Zoo.split`,
:mod:`weightspace.predict.splits`, the validation split of
:class:`~weightspace.predict.MetaNetPredictor` and
:func:`weightspace.nn.train.split_dataset` all call :func:`group_split`, so
the same groups, fractions and seed give the same partition everywhere.
"""

from __future__ import annotations

import json
import math
from typing import Any, Hashable, Sequence

import numpy as np

__all__ = ["check_fractions", "group_key", "group_keys", "group_split", "resolve_column"]


def check_fractions(fractions: Sequence[float], *, parts: int | None = 3) -> tuple[float, ...]:
    """``fractions`` as floats, checked: non-negative, summing to 1, and
    ``parts`` of them (``None``: at least one)."""
    fr = tuple(fractions)
    n_ok = len(fr) >= 1 if parts is None else len(fr) == parts
    if not n_ok or any(f < 0 for f in fr) or not math.isclose(sum(fr), 1.0):
        count = "" if parts is None else {3: "three ", 2: "two "}.get(parts, f"{parts} ")
        raise ValueError(f"fractions must be {count}non-negative numbers summing to 1, got {fr}")
    return tuple(float(f) for f in fr)


def group_key(value: Any) -> str:
    """A value as a group key: its JSON (dict keys sorted; non-JSON values by
    ``str``), so ``1`` and ``1.0`` differ but equal dicts group together."""
    return json.dumps(value, default=str, sort_keys=True)


def group_keys(values: Sequence[Any]) -> np.ndarray:
    """``[n]`` :func:`group_key` strings of ``values``."""
    return np.array([group_key(v) for v in values])


def group_split(groups: Sequence[Hashable] | np.ndarray, fractions: Sequence[float], *, seed: int) -> tuple[np.ndarray, ...]:
    """Row indices of each part of a seeded split of *groups*.

    The distinct groups are sorted, shuffled with
    ``numpy.random.default_rng(seed).permutation`` and dealt out in order:
    part ``i < k-1`` gets ``round(fractions[i] * G)`` groups (fewer when
    too few remain), the last part the rest.

    Args:
        groups: ``[n]`` group label of each row (orderable: ints or strings;
            see :func:`group_keys` for arbitrary values).
        fractions: ``k >= 1`` non-negative fractions of the *groups*, summing to 1.
        seed: shuffling seed.

    Returns:
        ``k`` sorted, disjoint ``int64`` index arrays covering ``range(n)``.
    """
    fr = check_fractions(fractions, parts=None)
    g = list(groups.tolist() if isinstance(groups, np.ndarray) else groups)
    distinct = sorted(set(g))
    order = np.random.default_rng(int(seed)).permutation(len(distinct))
    sizes, left = [], len(distinct)
    for f in fr[:-1]:
        sizes.append(min(left, int(round(f * len(distinct)))))
        left -= sizes[-1]
    part_of_rank = np.repeat(np.arange(len(fr)), [*sizes, left])
    part = {distinct[gi]: int(part_of_rank[rank]) for rank, gi in enumerate(order)}
    assign = np.array([part[x] for x in g], dtype=np.int64)
    return tuple(np.flatnonzero(assign == s) for s in range(len(fr)))


def resolve_column(meta: Any, column: str, *, where: str = "") -> str:
    """``column`` or the unique column ending in ``.<column>``
    (``lr`` -> ``config.train.lr``). ``meta`` is a DataFrame or a sequence
    of column names; ``where`` is appended to the error message."""
    cols = list(meta.columns) if hasattr(meta, "columns") else list(meta)
    if column in cols:
        return column
    hits = [c for c in cols if c.endswith("." + column)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise KeyError(f"no column {column!r}{where}; columns: {cols}")
    raise KeyError(f"column {column!r} is ambiguous: {hits}; use the full name")
