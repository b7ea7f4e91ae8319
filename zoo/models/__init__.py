"""Deprecated: the built-in architectures moved to :mod:`weightspace.arch.models`.

``zoo.models.cnn`` etc. stay importable as aliases of the new modules.
"""

import sys
import warnings

from weightspace.arch.models import cnn, inr, mlp, resnet, transformer  # noqa: F401

warnings.warn(
    "zoo.models is deprecated; import from weightspace.arch.models instead", DeprecationWarning, stacklevel=2
)

for _m in (cnn, inr, mlp, resnet, transformer):
    sys.modules[f"{__name__}.{_m.__name__.rsplit('.', 1)[1]}"] = _m
del _m
