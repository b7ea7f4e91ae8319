"""Metanetwork layers, one per file (PyG ``nn/conv`` style)."""

from weightspace.nn.conv.gmn_conv import GMNConv, PyGContext
from weightspace.nn.conv.np_linear import NPLinear

__all__ = ["GMNConv", "NPLinear", "PyGContext"]
