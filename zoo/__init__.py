"""Model zoos: the architecture registry, recipes, training, storage and loaders."""

from zoo.registry import (
    ModelInfo,
    create_model,
    example_input,
    get_model_info,
    list_models,
    register_model,
)

__all__ = [
    "ModelInfo",
    "create_model",
    "example_input",
    "get_model_info",
    "list_models",
    "register_model",
]
