"""Metanetworks: networks that read (and write) networks.

* :class:`GMN`: Graph Metanetwork over parameter graphs of any architecture,
  invariant/equivariant to the permutation spec by construction; PyG
  (default) or DGL backend.
* Baselines: :class:`StatNN`, :class:`FlatMLP`, :class:`NFN` (MLPs only).
* :mod:`weightspace.nn.train`: one trainer for all of them.
"""

from weightspace.nn.base import MODEL_REGISTRY, MetaNetwork, build_metanetwork, register_metanetwork
from weightspace.nn.baselines import NFN, FlatMLP, StatNN, mlp_layers, weight_statistics
from weightspace.nn.batch import GraphBatch, collate, from_pyg
from weightspace.nn.conv import GMNConv, NPLinear
from weightspace.nn.gmn import BACKENDS, GMN, GMNOutput
from weightspace.nn.probes import probe_features

__all__ = [
    "BACKENDS",
    "GMN",
    "GMNConv",
    "GMNOutput",
    "GraphBatch",
    "FlatMLP",
    "MODEL_REGISTRY",
    "MetaNetwork",
    "NFN",
    "NPLinear",
    "StatNN",
    "build_metanetwork",
    "collate",
    "from_pyg",
    "mlp_layers",
    "probe_features",
    "register_metanetwork",
    "weight_statistics",
]
