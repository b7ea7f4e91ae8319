"""Weights on disk. Never unpickles code: safetensors, or ``torch.load`` with
``weights_only=True`` for ``.pt``/``.pth``/``.bin`` files."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from weightspace.errors import ConfigError, InputFileError, MissingFileError, StateDictError, WeightspaceError
from weightspace.io.files import MAX_NUMEL, _one_line, atomic_write, read_safetensors


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
    return unwrap_checkpoint(obj, path=path)


#: Keys under which common training checkpoints nest the model's state_dict.
CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model")


def unwrap_checkpoint(obj: object, *, path: object = None) -> dict[str, torch.Tensor]:
    """The state_dict inside a loaded torch checkpoint: ``obj`` itself, or its
    ``state_dict`` / ``model_state_dict`` / ``model`` entry (the first that is
    a mapping).

    Raises:
        StateDictError: naming ``path``, when what is found is not a mapping
            of names to tensors.
    """
    if isinstance(obj, Mapping):
        for key in CHECKPOINT_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {str(k): v for k, v in obj.items()}
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


def match_state_dict(expected: Mapping[str, Any], got: Mapping[str, torch.Tensor], *,
                     path: object = None, what: str = "the model its config builds") -> None:
    """Check that the tensors ``got`` (read from ``path``) are exactly the
    tensors ``expected`` (name -> tensor or shape): same names, same shapes.

    Raises:
        StateDictError: naming the file and the first missing, unexpected or
            mis-shaped tensor.
    """
    shapes = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else tuple(v) for k, v in expected.items()}
    missing = [k for k in shapes if k not in got]
    if missing:
        more = f" ({len(missing)} missing in all)" if len(missing) > 1 else ""
        raise StateDictError(f"tensor missing from the file{more}: {what} needs it with shape {list(shapes[missing[0]])}; "
                             "the file is damaged or belongs to another model", path=path, field=missing[0])
    extra = [k for k in got if k not in shapes]
    if extra:
        raise StateDictError(f"unexpected tensor in the file: {what} has no such tensor; the file is damaged or "
                             "belongs to another model", path=path, field=extra[0])
    for k, shape in shapes.items():
        if tuple(got[k].shape) != shape:
            raise StateDictError(f"shape {list(got[k].shape)} in the file, but {what} needs {list(shape)}; the file "
                                 "is damaged or belongs to another model", path=path, field=k)


def build_checked(factory: Callable[[], "torch.nn.Module"], tensors: Mapping[str, torch.Tensor], *,
                  path: object = None, field: str | None = "config", limit: int = MAX_NUMEL,
                  config_path: object = None) -> "torch.nn.Module":
    """Build a module from a config read from ``path`` and load ``tensors`` into it,
    allocating nothing a damaged or tampered config asks for.

    ``factory()`` is first run on the ``meta`` device (no memory): its total
    size is bounded by ``limit`` elements and its state_dict names and shapes
    must equal ``tensors`` (:func:`match_state_dict`). Only then is it built
    for real and ``tensors`` loaded (strict).

    Args:
        factory: builds the module from the (already schema-checked) config.
        tensors: the state_dict read from the file ``path``.
        path, field: named in errors (``field``: the config as a whole).
        config_path: the file the config came from, when it is not ``path``
            (named in config and size errors).

    Raises:
        ConfigError: the constructor refused the config (``TypeError`` /
            ``ValueError`` / ``KeyError``).
        InputFileError: the config asks for more than ``limit`` elements.
        StateDictError: the stored tensors do not match the model.
    """
    cpath = path if config_path is None else config_path

    def build(device: str | None):
        try:
            if device is None:
                return factory()
            with torch.device(device):
                return factory()
        except WeightspaceError:
            raise
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"cannot build the model from this config ({_one_line(exc)})", path=cpath, field=field) from None

    try:
        meta = build("meta")
    except WeightspaceError:
        raise
    except Exception:  # an op without a meta kernel: rely on the file check after the real build
        meta = None
    if meta is not None:
        sd = meta.state_dict()
        total = sum(t.numel() for t in sd.values())
        if total > limit:
            big = max(sd, key=lambda k: sd[k].numel())
            raise InputFileError(
                f"the config asks for a model of {total} values (limit {limit}; largest tensor {big!r} "
                f"{list(sd[big].shape)}); the file is damaged or tampered with", path=cpath, field=field)
        match_state_dict(sd, tensors, path=path)
    model = build(None)
    match_state_dict(model.state_dict(), tensors, path=path)
    model.load_state_dict(dict(tensors))
    return model
