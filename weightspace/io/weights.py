"""Weights on disk. Never unpickles code: safetensors, or ``torch.load`` with
``weights_only=True`` for ``.pt``/``.pth``/``.bin`` files."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Mapping

import torch

from weightspace.errors import InputFileError, MissingFileError, StateDictError
from weightspace.io.files import atomic_write, read_safetensors


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state_dict from ``.safetensors`` or a torch file (weights only).

    Torch files may hold a bare state_dict or a dict with a ``state_dict`` /
    ``model`` / ``model_state_dict`` entry (common checkpoint layouts).

    Raises:
        InputFileError: no such file, a directory, or a truncated/corrupt file.
        StateDictError: the file holds no tensor mapping, or would need to
            unpickle code (``weights_only`` refused it).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise MissingFileError("no weights file at this path", path=path)
    if path.is_dir():
        raise InputFileError("is a directory, expected a weights file (.safetensors or .pt)", path=path)
    if path.suffix == ".safetensors":
        return read_safetensors(path, what="weights file")
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of a file it then refuses;
            # the refusal below is the one message the user needs
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise StateDictError(
            f"torch.load(weights_only=True) refused the file ({type(exc).__name__}: {first}). "
            "weightspace never unpickles code; re-save the weights as a plain state_dict or safetensors.",
            path=path,
        ) from None
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
    raise StateDictError(f"expected a mapping of tensor names to tensors, got {type(obj).__name__}", path=path)


def save_state_dict(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``state_dict`` as safetensors, atomically (temp file + rename).

    Tied tensors (the same storage under two names) are saved as copies.
    """
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().clone() for k, v in state_dict.items()}
    meta = dict(metadata) if metadata else None
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def state_dict_hash(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and raw bytes, in sorted key order."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        v = state_dict[k].detach().contiguous().cpu()
        h.update(k.encode())
        h.update(str(v.dtype).encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()
