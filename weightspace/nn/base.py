"""The interface every metanetwork shares (GMN and the baselines), so one
trainer (:mod:`weightspace.nn.train`) fits any of them."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from weightspace.graph import ParameterGraph

__all__ = ["MetaNetwork", "MODEL_REGISTRY", "register_metanetwork", "build_metanetwork"]

MODEL_REGISTRY: dict[str, type["MetaNetwork"]] = {}


def register_metanetwork(cls: type["MetaNetwork"]) -> type["MetaNetwork"]:
    """Class decorator: make ``cls`` loadable from a checkpoint config by name."""
    MODEL_REGISTRY[cls.__name__] = cls
    return cls


def build_metanetwork(name: str, config: dict) -> "MetaNetwork":
    """A metanetwork from its class name and :meth:`MetaNetwork.config`."""
    if name not in MODEL_REGISTRY:
        raise KeyError(f"unknown metanetwork {name!r}; known: {sorted(MODEL_REGISTRY)}")
    return MODEL_REGISTRY[name](**config)


class MetaNetwork(nn.Module):
    """Base class: a network that reads networks.

    Subclasses implement

    * :meth:`collate` ``(graphs, node_extra=None) -> batch``: a pure function
      turning :class:`~weightspace.graph.ParameterGraph` s into the model's
      input (a :class:`~weightspace.nn.GraphBatch`, or a tensor for the
      baselines);
    * ``forward(batch)``;
    * :meth:`predict` ``(batch) -> [B, out_dim]``: the graph-level output.

    The constructor only stores hyperparameters (kept in ``self.hparams`` so
    :meth:`config` can rebuild the model from a checkpoint).
    """

    hparams: dict[str, Any]

    def collate(self, graphs: Sequence[ParameterGraph], node_extra: Sequence[Tensor] | None = None) -> Any:
        raise NotImplementedError

    def predict(self, batch: Any) -> Tensor:
        """Graph-level prediction ``[B, out_dim]``."""
        return self(batch)

    def fit_normalization(self, graphs: Sequence[ParameterGraph]) -> "MetaNetwork":
        """Set input-normalization buffers from training graphs (no-op unless
        the model has such buffers). Returns ``self``."""
        return self

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serializable)."""
        return dict(self.hparams)

    @property
    def device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")
