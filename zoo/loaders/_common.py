"""Shared pieces of the published-zoo loaders."""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from weightspace.arch import create_model, get_model_info
from weightspace.errors import StateDictError
from weightspace.io import load_state_dict
from zoo.errors import ZooFormatError
from zoo.store import Zoo, ZooWriter
from zoo.train import CheckpointResult

__all__ = ["ImportedMember", "import_members", "check_state_dict", "load_weights_file", "load_weights_bytes", "add_gaps"]


@dataclass
class ImportedMember:
    """One member read from a published zoo, in the shape :class:`~zoo.store.ZooWriter` takes."""

    member_id: str
    index: int
    config: dict
    checkpoints: list[CheckpointResult]
    seed: int | None = None
    status: str = "ok"
    extra: dict = field(default_factory=dict)

    @property
    def metrics(self) -> dict:
        return dict(self.checkpoints[-1].metrics)

    def module(self, epoch: int | None = None) -> torch.nn.Module:
        """The network with the (final, or ``epoch``) weights loaded, eval mode."""
        ck = self.checkpoints[-1] if epoch is None else next(c for c in self.checkpoints if c.epoch == epoch)
        model = create_model(self.config["arch"], **self.config["model"])
        model.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in ck.state_dict.items()})
        return model.eval()


def short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def add_gaps(metrics: dict) -> dict:
    """Add ``gap_acc`` / ``gap_loss`` when train and test values are present."""
    m = dict(metrics)
    if "train_acc" in m and "test_acc" in m:
        m["gap_acc"] = float(m["train_acc"]) - float(m["test_acc"])
    if "train_loss" in m and "test_loss" in m:
        m["gap_loss"] = float(m["test_loss"]) - float(m["train_loss"])
    return m


def check_state_dict(arch: str, model_kwargs: Mapping[str, Any], sd: Mapping[str, Any], *, path: Any) -> None:
    """Raise :class:`ZooFormatError` (naming ``path`` and the tensor) unless
    ``sd`` has exactly the tensors of ``arch(**model_kwargs)``."""
    try:
        get_model_info(arch)
    except KeyError as e:
        raise ZooFormatError(f"unknown architecture: {e.args[0]}", path=path, field="arch") from None
    ref = create_model(arch, **model_kwargs).state_dict()
    missing = [k for k in ref if k not in sd]
    extra = [k for k in sd if k not in ref]
    if missing:
        raise ZooFormatError(
            f"state dict lacks tensor(s) {missing[:4]} of architecture {arch!r}"
            + (f"; it has unexpected {extra[:4]} (pass key_map=...)" if extra else ""),
            path=path, field=missing[0],
        )
    if extra:
        raise ZooFormatError(
            f"state dict has tensor(s) {extra[:4]} that architecture {arch!r} does not have",
            path=path, field=extra[0],
        )
    for k, v in ref.items():
        shape = tuple(np.asarray(sd[k]).shape) if not isinstance(sd[k], torch.Tensor) else tuple(sd[k].shape)
        if shape != tuple(v.shape):
            raise ZooFormatError(
                f"tensor has shape {shape}, architecture {arch!r} expects {tuple(v.shape)}",
                path=path, field=k,
            )


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` or torch file, via
    :func:`weightspace.io.load_state_dict` (``torch.load(weights_only=True)``:
    never runs pickled code), with errors that name the file."""
    try:
        return load_state_dict(path)
    except FileNotFoundError:
        raise ZooFormatError("file not found", path=path) from None
    except StateDictError as e:
        msg = str(e)
        prefix = f"{path}: "
        raise ZooFormatError(msg[len(prefix):] if msg.startswith(prefix) else msg, path=path) from None


def load_weights_bytes(data: bytes, *, path: Any) -> dict[str, torch.Tensor]:
    """Like :func:`load_weights_file` for in-memory bytes (e.g. a tar member)."""
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for payloads that are not plain weights, corrupt data...
        raise ZooFormatError(
            f"torch.load(weights_only=True) refused it ({type(e).__name__}: {str(e)[:200]})", path=path
        ) from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ZooFormatError("does not hold a state dict (a mapping of names to tensors)", path=path)
    return {str(k): v for k, v in obj.items()}


def finite(sd: Mapping[str, Any]) -> bool:
    return all(np.isfinite(np.asarray(v, dtype=np.float64)).all() for v in sd.values()
               if np.asarray(v).dtype.kind == "f")


def import_members(
    members: Iterable[ImportedMember],
    out: str | Path,
    *,
    info: Mapping[str, Any],
    progress: bool = True,
    total: int | None = None,
    batch: int = 256,
):
    """Write imported members into a zoo directory (resumable: members already
    in the index are skipped). Returns the :class:`~zoo.store.Zoo`."""
    from tqdm.auto import tqdm

    with ZooWriter(out, info) as w:
        have = w.member_ids()
        buf: list[dict] = []
        bar = tqdm(total=total, desc=f"import {info.get('name', '')}", unit="member", disable=not progress)
        try:
            for m in members:
                bar.update(1)
                if m.member_id in have:
                    continue
                buf.append(
                    dict(member_id=m.member_id, index=m.index, config=m.config, checkpoints=m.checkpoints,
                         seed=m.seed, status=m.status, metrics=m.metrics, extra=m.extra,
                         source=str(info.get("source", "import")))
                )
                if len(buf) >= batch:
                    w.add_members(buf)
                    buf = []
            w.add_members(buf)
        finally:
            bar.close()
    return Zoo(out)


def nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    return x
