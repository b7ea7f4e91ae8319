"""Architecture identity: the registry of named architectures and the built-in models.

The lowest layer of weightspace besides :mod:`weightspace.trace` (it imports
only torch, :mod:`weightspace.errors` and :mod:`weightspace.io`), so every
other package may name architectures::

    from weightspace.arch import create_model, example_input, list_models, register_model

    model = create_model("resnet20", seed=0, width=2)
    x = example_input("resnet20", width=2)          # (2, 3, 32, 32)
    spec = ArchSpec.of("mlp", hidden=[32])          # canonical, hashable identity
    spec.to_json(), spec.build(seed=0)
    module, x, identity = resolve_model("hf:runs/gpt2")   # any model reference (see weightspace.arch.ref)

Importing any name from here registers the built-in architectures
(:mod:`weightspace.arch.models`).
"""

from weightspace.arch.registry import (
    ModelInfo,
    create_model,
    example_input,
    get_model_info,
    list_models,
    register_model,
)
from weightspace.arch.ref import HFCheckpoint, ModelRef, ModelRefError, ResolvedModel, resolve_model, save_hf_checkpoint
from weightspace.arch.spec import ArchSpec

__all__ = [
    "ArchSpec",
    "HFCheckpoint",
    "ModelRef",
    "ModelRefError",
    "ResolvedModel",
    "resolve_model",
    "save_hf_checkpoint",
    "ModelInfo",
    "create_model",
    "example_input",
    "get_model_info",
    "list_models",
    "register_model",
]
