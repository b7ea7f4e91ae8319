"""weightspace: trained neural networks as data.

Any ``nn.Module`` becomes a :class:`~weightspace.graph.ParameterGraph`
(neurons as nodes, weights as edges, with an exact index back into every
tensor) and a :class:`~weightspace.symmetry.PermutationSpec` (which neuron
axes can be permuted without changing the function), both derived from a
``torch.fx`` trace.
"""

__version__ = "0.1.0"
