"""Weights on disk. Never unpickles code: safetensors, or ``torch.load`` with
``weights_only=True`` for ``.pt``/``.pth``/``.bin`` files."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Mapping

import torch

from weightspace.errors import StateDictError


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state_dict from ``.safetensors`` or a torch file (weights only).

    Torch files may hold a bare state_dict or a dict with a ``state_dict`` /
    ``model`` / ``model_state_dict`` entry (common checkpoint layouts).

    Raises:
        FileNotFoundError: no such file.
        StateDictError: the file holds no tensor mapping, or would need to
            unpickle code (``weights_only`` refused it).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no weights file at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise StateDictError(
            f"{path}: torch.load(weights_only=True) refused the file ({type(exc).__name__}: {exc}). "
            "weightspace never unpickles code; re-save the weights as a plain state_dict or safetensors."
        ) from exc
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
    raise StateDictError(f"{path}: expected a mapping of tensor names to tensors, got {type(obj).__name__}")


def save_state_dict(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``state_dict`` as safetensors, atomically (temp file + rename).

    Tied tensors (the same storage under two names) are saved as copies.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().clone() for k, v in state_dict.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=dict(metadata) if metadata else None)
        # mkstemp creates 0600; give the file the usual umask-based mode
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


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
