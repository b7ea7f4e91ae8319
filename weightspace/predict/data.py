"""Datasets for performance prediction: networks, targets and what is known
about each one (member, checkpoint epoch, seed, hyperparameters).

:func:`zoo_dataset` reads a :class:`zoo.Zoo` into a :class:`WeightDataset`:
one row per kept checkpoint, the network as a
:class:`~weightspace.graph.ParameterGraph`, the target from the checkpoint's
metrics (falling back to the member's final metrics and extra facts), and a
``meta`` DataFrame with ``member_id``, ``epoch``, ``seed``, ``arch``,
``arch_kwargs`` (JSON) and every ``config.*`` column of
:meth:`zoo.Zoo.to_pandas` -- which is what the splits in
:mod:`weightspace.predict.splits` group and filter on.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from weightspace.common.zoo_samples import zoo_checkpoints
from weightspace.errors import NonFiniteWeightsError
from weightspace.graph import ParameterGraph

__all__ = ["WeightDataset", "zoo_dataset", "TARGET_ALIASES", "resolve_target"]

#: accepted spellings of the zoo's metric names (the Small CNN Zoo and the
#: issue say ``test_accuracy``; weightspace zoos store ``test_acc``)
TARGET_ALIASES = {
    "test_accuracy": "test_acc",
    "train_accuracy": "train_acc",
    "val_accuracy": "val_acc",
    "generalization_gap": "gap_acc",
    "gap": "gap_acc",
}


def resolve_target(target: str, available: Sequence[str]) -> str:
    """``target`` or its alias (:data:`TARGET_ALIASES`) if that is what the
    zoo has; a clear ``KeyError`` listing the metrics otherwise."""
    if target in available:
        return target
    alias = TARGET_ALIASES.get(target)
    if alias is not None and alias in available:
        return alias
    raise KeyError(f"no metric {target!r} in the zoo; available: {sorted(available)}")


@dataclass
class WeightDataset:
    """Networks with a regression target.

    Attributes:
        graphs: ``N`` parameter graphs (any mix of architectures).
        y: ``[N]`` float64 targets.
        meta: pandas DataFrame with ``N`` rows (``member_id``, ``epoch``,
            ``seed``, ``arch``, ``arch_kwargs`` (JSON), ``config.*``, ...).
        target: name of the target metric.
        dropped: rows left out when loading, with the reason
            (``{"nonfinite_weights": k, "nonfinite_target": k}``).
    """

    graphs: list[ParameterGraph]
    y: np.ndarray
    meta: Any
    target: str = "target"
    dropped: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.y = np.asarray(self.y, dtype=np.float64).reshape(-1)
        if len(self.graphs) != self.y.size or len(self.meta) != self.y.size:
            raise ValueError(
                f"graphs ({len(self.graphs)}), y ({self.y.size}) and meta ({len(self.meta)}) must have the same length"
            )

    def __len__(self) -> int:
        return self.y.size

    def subset(self, idx: Sequence[int] | np.ndarray) -> "WeightDataset":
        """Rows ``idx`` (a new dataset; graphs are shared, not copied)."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        return WeightDataset(
            [self.graphs[i] for i in idx], self.y[idx], self.meta.iloc[idx].reset_index(drop=True),
            self.target, dict(self.dropped),
        )

    @property
    def groups(self) -> np.ndarray:
        """``[N]`` member ids (rows of one network share one)."""
        return self.meta["member_id"].to_numpy()

    def architectures(self) -> list[dict]:
        """Distinct ``{"arch": name, "kwargs": {...}}`` of the rows, in first-seen order."""
        seen, out = set(), []
        for a, kw in zip(self.meta["arch"], self.meta["arch_kwargs"]):
            if (a, kw) not in seen:
                seen.add((a, kw))
                out.append({"arch": a, "kwargs": json.loads(kw)})
        return out


def zoo_dataset(
    zoo: Any,
    target: str | Callable[[dict], float] = "test_acc",
    *,
    checkpoints: str | Sequence[int] = "all",
    drop_nonfinite: bool = True,
) -> WeightDataset:
    """A :class:`WeightDataset` from a :class:`zoo.Zoo` (or a view of one).

    Args:
        zoo: the zoo (``zoo.Zoo``; ``filter``/``split`` views work too).
        target: a metric name (``"test_acc"``, ``"gap_acc"``, ``"test_loss"``,
            ...; aliases in :data:`TARGET_ALIASES`) looked up in each
            checkpoint's metrics, then the member's final metrics, then its
            extra facts; or a function of that merged dict.
        checkpoints: ``"all"`` (every stored checkpoint), ``"final"`` (each
            member's last) or a list of epochs (members lacking one are
            skipped for that epoch).
        drop_nonfinite: leave out networks with NaN/Inf weights and rows
            with a non-finite target (counted in ``dataset.dropped``).
            With ``False`` a NaN target is an error.

    Returns:
        :class:`WeightDataset` (``meta`` also holds every metric of the row).
    """
    import pandas as pd

    if isinstance(checkpoints, str) and checkpoints not in ("all", "final"):
        raise ValueError(f"checkpoints must be 'all', 'final' or a list of epochs, got {checkpoints!r}")
    table = zoo.to_pandas()
    cfg_cols = [c for c in table.columns if c.startswith("config.")]
    cfg_by_id = {r["member_id"]: {c: r[c] for c in cfg_cols} for r in table.to_dict("records")} if len(table) else {}
    graphs, ys, rows = [], [], []
    dropped = {"nonfinite_weights": 0, "nonfinite_target": 0}
    name = target if isinstance(target, str) else getattr(target, "__name__", "target")
    resolved: str | None = None
    for ck in zoo_checkpoints(zoo, checkpoints):
        m = ck.member
        metrics = ck.facts
        if callable(target):
            y = target(metrics)
        else:
            if resolved is None:
                resolved = resolve_target(target, list(metrics))
                name = resolved
            if resolved not in metrics:
                raise KeyError(f"member {m.member_id} epoch {ck.epoch} has no metric {resolved!r}; it has {sorted(metrics)}")
            y = metrics[resolved]
        y = math.nan if y is None else float(y)
        if not math.isfinite(y):
            if not drop_nonfinite:
                raise ValueError(f"member {m.member_id} epoch {ck.epoch}: target {name!r} is {y}")
            dropped["nonfinite_target"] += 1
            continue
        try:
            g = ck.graph()
        except NonFiniteWeightsError:
            if not drop_nonfinite:
                raise
            dropped["nonfinite_weights"] += 1
            continue
        graphs.append(g)
        ys.append(y)
        rows.append({
            "member_id": m.member_id, "epoch": ck.epoch, "seed": m.seed, "arch": m.arch,
            "arch_kwargs": json.dumps(m.model_kwargs, sort_keys=True),
            **cfg_by_id.get(m.member_id, {}),
            **{f"metric.{k}": v for k, v in ck.checkpoint.metrics.items() if isinstance(v, (int, float))},
        })
    meta = pd.DataFrame(rows)
    if meta.empty:
        meta = pd.DataFrame(columns=["member_id", "epoch", "seed", "arch", "arch_kwargs"])
    return WeightDataset(graphs, np.asarray(ys, dtype=np.float64), meta, name, dropped)
