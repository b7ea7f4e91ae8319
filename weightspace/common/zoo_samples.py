"""The one loop from a zoo-like object to its checkpoints.

:meth:`zoo.Zoo.parameter_graphs`, :func:`weightspace.nn.train.dataset_from_zoo`
and :func:`weightspace.predict.zoo_dataset` all read a zoo through
:func:`zoo_checkpoints`: the same member order, checkpoint selection and
graph templates (traced once per architecture and model config). A zoo-like
object is anything with ``members()`` yielding members with ``member_id``,
``arch``, ``model_kwargs``, ``metrics``, ``extra`` and ``checkpoints``
(each with ``epoch``, ``metrics`` and ``state_dict()``) and
``checkpoint(epoch)`` (``None``: the final one) -- e.g. ``zoo.Zoo`` and its
``filter``/``split`` views.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from weightspace.core import graph_template

__all__ = ["ZooCheckpoint", "zoo_checkpoints"]


@dataclass(frozen=True)
class ZooCheckpoint:
    """One checkpoint of one member, with the member's graph template.

    Attributes:
        member: the zoo member.
        checkpoint: its checkpoint.
        template: the :class:`~weightspace.graph.GraphTemplate` of the
            member's architecture.
    """

    member: Any
    checkpoint: Any
    template: Any

    @property
    def epoch(self) -> int:
        return int(self.checkpoint.epoch)

    @property
    def metrics(self) -> dict:
        """The member's final metrics overridden by this checkpoint's."""
        return {**self.member.metrics, **self.checkpoint.metrics}

    @property
    def facts(self) -> dict:
        """:attr:`metrics` over the member's extra facts (``member.extra``)."""
        return {**self.member.extra, **self.metrics}

    def graph(self, *, allow_nonfinite: bool = False):
        """The checkpoint's :class:`~weightspace.graph.ParameterGraph` (reads
        the weights; ``NonFiniteWeightsError`` for NaN/Inf unless allowed)."""
        return self.template.graph(self.checkpoint.state_dict(), allow_nonfinite=allow_nonfinite)


def zoo_checkpoints(zoo: Any, checkpoints: str | int | Sequence[int] | None = "final") -> Iterator[ZooCheckpoint]:
    """The selected checkpoints of every member of ``zoo``, in member order
    (then epoch order). Weights are read only by :meth:`ZooCheckpoint.graph`.

    Args:
        zoo: a zoo-like object (see the module docstring).
        checkpoints: ``"final"`` or ``None`` (each member's final
            checkpoint), ``"all"`` (every stored one), an epoch (each
            member's checkpoint at that epoch: ``KeyError`` if one lacks it)
            or a list of epochs (members lacking one are skipped for it).
    """

    if isinstance(checkpoints, str) and checkpoints not in ("all", "final"):
        raise ValueError(f"checkpoints must be 'all', 'final', an epoch or a list of epochs, got {checkpoints!r}")
    wanted = None
    if checkpoints is not None and not isinstance(checkpoints, (str, numbers.Integral)):
        wanted = {int(e) for e in checkpoints}
    for m in zoo.members():
        template = graph_template(m.arch, **m.model_kwargs)
        if checkpoints == "all":
            cks = list(m.checkpoints)
        elif wanted is not None:
            cks = [c for c in m.checkpoints if c.epoch in wanted]
        else:
            cks = [m.checkpoint(None if checkpoints in (None, "final") else int(checkpoints))]
        for ck in cks:
            yield ZooCheckpoint(m, ck, template)
