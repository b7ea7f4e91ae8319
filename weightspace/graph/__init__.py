"""ParameterGraph: neurons as nodes, weights as edges, exact write-back."""

from weightspace.graph.parameter_graph import (
    EDGE_TYPES,
    NODE_TYPES,
    EdgeSet,
    GraphTemplate,
    ParameterGraph,
    all_finite,
    build_template,
    pad_edge_values,
    to_pyg_batch,
    validate_state_dict,
)

__all__ = [
    "EDGE_TYPES",
    "NODE_TYPES",
    "EdgeSet",
    "GraphTemplate",
    "ParameterGraph",
    "all_finite",
    "build_template",
    "pad_edge_values",
    "to_pyg_batch",
    "validate_state_dict",
]
