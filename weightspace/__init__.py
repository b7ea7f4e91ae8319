"""weightspace: trained neural networks as data.

Any ``nn.Module`` becomes a :class:`~weightspace.graph.ParameterGraph`
(neurons as nodes, weights as edges, with an exact index back into every
tensor) and a :class:`~weightspace.symmetry.PermutationSpec` (which neuron
axes can be permuted without changing the function), both derived from a
``torch.fx`` trace.
"""

__version__ = "0.1.0"

from weightspace.core import (  # noqa: E402
    Analysis,
    analyze,
    graph_template,
    parameter_graph,
    permutation_spec,
)
from weightspace.errors import (  # noqa: E402
    ConfigError,
    InputFileError,
    MissingFileError,
    NonFiniteWeightsError,
    SpecError,
    StateDictError,
    TraceError,
    UnknownNameError,
    UnsupportedOperationError,
    WeightspaceError,
)
from weightspace.symmetry import (  # noqa: E402
    Symmetry,
    apply_permutation,
    apply_symmetry,
    canonicalize,
    compose_permutations,
    invert_permutation,
    random_permutation,
    random_symmetry,
)

__all__ = [
    "Analysis",
    "analyze",
    "graph_template",
    "parameter_graph",
    "permutation_spec",
    "Symmetry",
    "apply_permutation",
    "apply_symmetry",
    "canonicalize",
    "compose_permutations",
    "invert_permutation",
    "random_permutation",
    "random_symmetry",
    "ConfigError",
    "InputFileError",
    "MissingFileError",
    "NonFiniteWeightsError",
    "SpecError",
    "StateDictError",
    "TraceError",
    "UnknownNameError",
    "UnsupportedOperationError",
    "WeightspaceError",
]
