"""Files at the library's boundary: weights (safetensors; ``torch.load(weights_only=True)``),
atomic writes, guarded readers that name the file on any failure, and a
schema checker for configs."""

from weightspace.io import files as _files
from weightspace.io import schema as _schema
from weightspace.io.files import *  # noqa: F401,F403
from weightspace.io.schema import *  # noqa: F401,F403
from weightspace.io.weights import (
    build_checked, load_state_dict, match_state_dict, save_state_dict, state_dict_hash, unwrap_checkpoint,
)

__all__ = [
    "load_state_dict", "save_state_dict", "state_dict_hash", "match_state_dict", "build_checked", "unwrap_checkpoint",
    *_files.__all__, *_schema.__all__,
]
