"""Deprecated: the architecture registry moved to :mod:`weightspace.arch`.

``from zoo import create_model, register_model, ...`` keeps working (the
names are re-exported by :mod:`zoo`); import from :mod:`weightspace.arch` in
new code.
"""

import warnings

from weightspace.arch.registry import (  # noqa: F401
    ModelInfo,
    ShapeSpec,
    create_model,
    example_input,
    get_model_info,
    list_models,
    register_model,
)

warnings.warn(
    "zoo.registry is deprecated; import from weightspace.arch instead", DeprecationWarning, stacklevel=2
)

__all__ = ["ModelInfo", "create_model", "example_input", "get_model_info", "list_models", "register_model"]
