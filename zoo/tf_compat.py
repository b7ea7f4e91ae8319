"""Deprecated: ``cnn_small_tf`` (the Small CNN Zoo network with Keras padding)
moved to :mod:`weightspace.arch.models.tf_compat`."""

import warnings

from weightspace.arch.models.tf_compat import KerasSmallCNN, tf_same_pads  # noqa: F401

warnings.warn(
    "zoo.tf_compat is deprecated; import from weightspace.arch.models.tf_compat instead",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["KerasSmallCNN", "tf_same_pads"]
