"""Model zoos: the architecture registry, recipes, training, storage and loaders.

Quick tour::

    import zoo

    report = zoo.build_zoo("digits_cnn_small", "runs/digits", workers=2)  # resumable
    z = zoo.Zoo("runs/digits")
    df = z.to_pandas()                                   # configs, metrics, hashes, paths
    good = z.filter("test_acc > 0.5", activation="tanh")
    train, val, test = z.split((0.8, 0.1, 0.1), by="seed", seed=0)
    ood = z.split(by="activation", values={"train": ["relu", "tanh"], "test": ["gelu"]})
    for state_dict, metrics in train:                    # or train.iter_members(as_module=True)
        ...

    from zoo.loaders import import_small_cnn_zoo       # published zoos, from a local path
    scz = import_small_cnn_zoo("~/data/smallcnnzoo/mnist", "runs/scz-mnist")

Modules: :mod:`zoo.recipe` (recipes, search spaces), :mod:`zoo.datasets`
(offline datasets), :mod:`zoo.train` (one member), :mod:`zoo.build`
(parallel builds, resume), :mod:`zoo.store` (on-disk format, :class:`Zoo`),
:mod:`zoo.repair` (rebuild a lost index from the checkpoint files),
:mod:`zoo.loaders` (Small CNN Zoo, model-zoos, INR zoos). The architecture
registry (``create_model``, ``register_model``, ...) and the built-in
models, ``cnn_small_tf`` included, live in :mod:`weightspace.arch`; ``zoo``
re-exports its names (``zoo.registry``, ``zoo.models`` and ``zoo.tf_compat``
are deprecated aliases).
"""

# The architecture registry lives in weightspace.arch; zoo re-exports its names.
from weightspace.arch import registry as _registry
from weightspace.arch.registry import *  # noqa: F401,F403

from zoo.build import BuildReport, build_zoo  # noqa: E402
from zoo.datasets import Dataset, list_datasets, load_dataset, register_dataset  # noqa: E402
from zoo.errors import RecipeError, ZooError, ZooFormatError, ZooLockedError  # noqa: E402
from zoo.recipe import MemberSpec, Recipe, list_recipes, load_recipe  # noqa: E402
from zoo.repair import RepairReport, repair_zoo  # noqa: E402
from zoo.store import Checkpoint, Member, Zoo, ZooWriter, state_dict_sha256  # noqa: E402
from zoo.train import MemberResult, train_member  # noqa: E402

__all__ = [
    *_registry.__all__,
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
    "repair_zoo",
    "RepairReport",
    # errors
    "ZooError",
    "RecipeError",
    "ZooFormatError",
    "ZooLockedError",
]
