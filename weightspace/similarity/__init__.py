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

from weightspace.similarity import cca as _cca
from weightspace.similarity import cka as _cka
from weightspace.similarity import compare as _compare
from weightspace.similarity import matching as _matching
from weightspace.similarity import procrustes as _procrustes
from weightspace.similarity import relative as _relative
from weightspace.similarity import streaming as _streaming
from weightspace.similarity._validate import DegenerateRepresentationWarning, SimilarityInputError
from weightspace.similarity.capture import ActivationCapture, capturable_layers, capture_activations, iter_activations
from weightspace.similarity.cca import *  # noqa: F403 - re-exports, listed by the module's __all__
from weightspace.similarity.cka import *  # noqa: F403
from weightspace.similarity.compare import *  # noqa: F403
from weightspace.similarity.matching import *  # noqa: F403
from weightspace.similarity.procrustes import *  # noqa: F403
from weightspace.similarity.relative import *  # noqa: F403
from weightspace.similarity.streaming import *  # noqa: F403

# ``capture.batches`` stays in its module; everything else each module lists is public here.
__all__ = sorted(
    [
        "ActivationCapture",
        "DegenerateRepresentationWarning",
        "SimilarityInputError",
        "capturable_layers",
        "capture_activations",
        "iter_activations",
        *_cca.__all__,
        *_cka.__all__,
        *_compare.__all__,
        *_matching.__all__,
        *_procrustes.__all__,
        *_relative.__all__,
        *_streaming.__all__,
    ]
)
