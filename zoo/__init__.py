"""Model zoos: the architecture registry, recipes, training, storage and loaders."""

from zoo.registry import (
    ModelInfo,
    create_model,
    example_input,
    get_model_info,
    list_models,
    register_model,
)

# Registers ``cnn_small_tf`` (Small CNN Zoo network with Keras padding).
import zoo.tf_compat  # noqa: E402,F401  (import for its side effect)
from zoo.build import BuildReport, build_zoo  # noqa: E402
from zoo.datasets import Dataset, list_datasets, load_dataset, register_dataset  # noqa: E402
from zoo.errors import RecipeError, ZooError, ZooFormatError, ZooLockedError  # noqa: E402
from zoo.recipe import MemberSpec, Recipe, list_recipes, load_recipe  # noqa: E402
from zoo.store import Checkpoint, Member, Zoo, ZooWriter, state_dict_sha256  # noqa: E402
from zoo.train import MemberResult, train_member  # noqa: E402

__all__ = [
    "ModelInfo",
    "create_model",
    "example_input",
    "get_model_info",
    "list_models",
    "register_model",
    # recipes, datasets, training
    "Recipe",
    "MemberSpec",
    "load_recipe",
    "list_recipes",
    "Dataset",
    "load_dataset",
    "list_datasets",
    "register_dataset",
    "train_member",
    "MemberResult",
    "build_zoo",
    "BuildReport",
    # storage
    "Zoo",
    "Member",
    "Checkpoint",
    "ZooWriter",
    "state_dict_sha256",
    # errors
    "ZooError",
    "RecipeError",
    "ZooFormatError",
    "ZooLockedError",
]
