"""Representation similarity: compare what networks (or layers) compute.

Activation capture by layer name through a ``torch.fx`` trace, or forward
hooks on named submodules for models fx cannot trace
(:mod:`~weightspace.similarity.capture`); CKA with linear and RBF kernels,
biased and unbiased HSIC, exact streaming and minibatch estimators
(:mod:`~.cka`, :mod:`~.streaming`, :func:`model_cka_matrix`); CCA, SVCCA,
PWCCA (:mod:`~.cca`); orthogonal Procrustes distance; neuron correlation
matching (:mod:`~.matching`); relative representations (:mod:`~.relative`).

Every measure takes activations as ``(n_samples, n_features)`` torch tensors
or numpy arrays, validates them (same ``n``, finite, 2-D) and computes in
float64. Zero-variance representations never produce NaN: each measure
documents its fallback value and emits :class:`DegenerateRepresentationWarning`.
"""

from weightspace.similarity._validate import (
    DegenerateRepresentationWarning,
    SimilarityInputError,
)
from weightspace.similarity.capture import (
    ActivationCapture,
    capturable_layers,
    capture_activations,
    iter_activations,
)
from weightspace.similarity.cca import CCAResult, cca, pwcca, svcca
from weightspace.similarity.cka import (
    CKAMatrix,
    center_gram,
    cka_from_grams,
    cka_matrix,
    gram_linear,
    gram_rbf,
    hsic,
    linear_cka,
    rbf_cka,
)
from weightspace.similarity.compare import model_cka_matrix
from weightspace.similarity.matching import (
    NeuronMatch,
    match_neurons,
    match_neurons_by_layer,
    neuron_correlation,
)
from weightspace.similarity.procrustes import procrustes_distance
from weightspace.similarity.relative import relative_representation, relative_similarity
from weightspace.similarity.streaming import (
    LinearCKAAccumulator,
    MinibatchCKAAccumulator,
    minibatch_cka,
)

__all__ = [
    "ActivationCapture",
    "CCAResult",
    "CKAMatrix",
    "DegenerateRepresentationWarning",
    "LinearCKAAccumulator",
    "MinibatchCKAAccumulator",
    "NeuronMatch",
    "SimilarityInputError",
    "capturable_layers",
    "capture_activations",
    "cca",
    "center_gram",
    "cka_from_grams",
    "cka_matrix",
    "gram_linear",
    "gram_rbf",
    "hsic",
    "iter_activations",
    "linear_cka",
    "match_neurons",
    "match_neurons_by_layer",
    "minibatch_cka",
    "model_cka_matrix",
    "neuron_correlation",
    "procrustes_distance",
    "pwcca",
    "rbf_cka",
    "relative_representation",
    "relative_similarity",
    "svcca",
]
