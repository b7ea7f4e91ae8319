"""Files at the library's boundary: weights (safetensors; ``torch.load(weights_only=True)``),
atomic writes, guarded readers that name the file on any failure, and a
schema checker for configs."""

from weightspace.io.files import (
    MAX_NUMEL,
    atomic_write,
    check_numel,
    check_output_path,
    read_json,
    read_npy,
    read_safetensors,
    read_safetensors_metadata,
    read_text,
    read_yaml,
)
from weightspace.io.schema import Field, check_type, did_you_mean, validate
from weightspace.io.weights import load_state_dict, save_state_dict, state_dict_hash

__all__ = [
    "load_state_dict",
    "save_state_dict",
    "state_dict_hash",
    "atomic_write",
    "read_text",
    "read_json",
    "read_yaml",
    "read_safetensors",
    "read_safetensors_metadata",
    "read_npy",
    "check_numel",
    "check_output_path",
    "MAX_NUMEL",
    "Field",
    "validate",
    "check_type",
    "did_you_mean",
]
