"""Inputs for the bad-input suite: small real assets (built once per session)
and factories that damage copies of them.

Assets (``build_assets``): a tiny MLP state_dict as safetensors and as a
weights-only ``.pt``; a 4-member zoo of tiny MLPs written directly with
:class:`zoo.store.ZooWriter` (no training); a fitted, saved linear predictor;
an untrained saved graph hypernetwork and checkpoint flow; a 2-run Small CNN
Zoo directory in the published format. Everything takes a few seconds.
"""

from __future__ import annotations

import json
import pickle
import shutil
import sqlite3
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

#: Architecture of every weights asset and zoo member.
ARCH = "mlp"
ARCH_KWARGS = {"hidden": [8]}

#: A shape asking for 4 * 10**12 float32 values (16 TB): what a tampered file
#: may claim. Readers must refuse it before allocating.
HUGE = [2_000_000, 2_000_000]


@dataclass(frozen=True)
class Assets:
    root: Path
    weights: Path  # mlp(hidden=[8]) state_dict, safetensors
    weights_pt: Path  # same, torch.save (weights only)
    weights_default: Path  # mlp() default architecture (for `graph mlp`)
    other_arch: Path  # mlp(hidden=[16]): does not fit ARCH_KWARGS
    zoo: Path  # 4 members x 2 checkpoints
    empty_zoo: Path  # a valid zoo with no members
    predictor: Path  # saved LinearPredictor
    hypernet: Path  # saved (untrained) GraphHyperNetwork
    flow: Path  # saved (untrained) CheckpointFlow on ARCH
    scz: Path  # Small CNN Zoo directory (2 runs x 2 steps)
    scz_zoo: Path  # the zoo imported from it
    recipe: dict  # tiny recipe (1 member, 1 epoch) for `zoo build`


@dataclass(frozen=True)
class _Ck:
    epoch: int
    step: int
    metrics: dict
    state_dict: dict


def _write_zoo(path: Path, members: int) -> None:
    import zoo
    from zoo.store import ZooWriter

    with ZooWriter(path, {"name": "fixture", "source": "robustness-fixture"}) as w:
        for i in range(members):
            cks = []
            for epoch in (0, 1):
                sd = zoo.create_model(ARCH, seed=10 * i + epoch, **ARCH_KWARGS).state_dict()
                acc = 0.1 + 0.2 * i + 0.05 * epoch
                cks.append(_Ck(epoch, epoch * 10, {"test_acc": acc, "test_loss": 2.0 - acc, "train_acc": acc}, sd))
            w.add_member(
                member_id=f"m{i}", index=i, seed=i,
                config={"arch": ARCH, "model": dict(ARCH_KWARGS), "seed": i,
                        "train": {"lr": [0.01, 0.03][i % 2], "epochs": 1},
                        "model_activation": ["relu", "tanh"][i % 2]},
                checkpoints=cks,
            )


def build_assets(root: Path) -> Assets:
    import zoo
    from weightspace.generate import ArchSpec, CheckpointFlow, GraphHyperNetwork
    from weightspace.io import save_state_dict
    from weightspace.predict import LinearPredictor

    from tests.zoo.conftest import tiny_recipe_dict
    from tests.zoo.small_cnn_zoo_fixture import write_small_cnn_zoo

    root.mkdir(parents=True, exist_ok=True)
    sd = zoo.create_model(ARCH, seed=0, **ARCH_KWARGS).state_dict()
    weights = save_state_dict(sd, root / "good.safetensors")
    weights_pt = root / "good.pt"
    torch.save(sd, weights_pt)
    weights_default = save_state_dict(zoo.create_model(ARCH, seed=0).state_dict(), root / "default.safetensors")
    other = save_state_dict(zoo.create_model(ARCH, seed=0, hidden=[16]).state_dict(), root / "other_arch.safetensors")

    _write_zoo(root / "zoo", members=4)
    _write_zoo(root / "empty_zoo", members=0)
    for z in ("zoo", "empty_zoo"):
        (root / z / ".lock").unlink(missing_ok=True)

    sds = [zoo.create_model(ARCH, seed=i, **ARCH_KWARGS).state_dict() for i in range(6)]
    LinearPredictor().fit(sds, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]).save(root / "predictor")

    GraphHyperNetwork(hidden=8, num_layers=1, kernel_grid=1, generic_width=2, rank=2).save(root / "hypernet.safetensors")
    CheckpointFlow(ArchSpec.of(ARCH, **ARCH_KWARGS), hidden=8, depth=1, cond_range=(0.1, 0.9),
                   metric_name="test_acc").save(root / "flow.safetensors")

    write_small_cnn_zoo(root / "scz", runs=2, steps=(0, 86))
    from zoo.loaders import import_small_cnn_zoo

    import_small_cnn_zoo(root / "scz", root / "scz_zoo", progress=False)
    (root / "scz_zoo" / ".lock").unlink(missing_ok=True)
    recipe = tiny_recipe_dict(num_members=1, epochs=1)
    recipe["search"]["num_members"] = 1
    return Assets(root, weights, weights_pt, weights_default, other, root / "zoo", root / "empty_zoo",
                  root / "predictor", root / "hypernet.safetensors", root / "flow.safetensors", root / "scz",
                  root / "scz_zoo", recipe)


# ------------------------------------------------------------------ factories


def empty(path: Path) -> Path:
    """A 0-byte file."""
    path.write_bytes(b"")
    return path


def random_bytes(path: Path, n: int = 4096, seed: int = 0) -> Path:
    path.write_bytes(np.random.default_rng(seed).bytes(n))
    return path


def text(path: Path, content: str) -> Path:
    path.write_text(content)
    return path


def truncated(src: Path, path: Path, keep: float = 0.5) -> Path:
    """The first ``keep`` fraction of ``src``."""
    data = Path(src).read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def copy(src: Path, path: Path) -> Path:
    if Path(src).is_dir():
        shutil.copytree(src, path)
    else:
        shutil.copyfile(src, path)
    return path


def directory(path: Path) -> Path:
    """A directory where a file is expected (it holds one unrelated file)."""
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("not weights\n")
    return path


def user_dir(path: Path) -> Path:
    """A directory of the user's own files (must survive any command)."""
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("\\documentclass{article}\n")
    (path / "data").mkdir()
    (path / "data" / "results.csv").write_text("a,b\n1,2\n")
    return path


def safetensors_bytes(header: dict, payload: bytes = b"") -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + payload


def safetensors_huge_shape(path: Path) -> Path:
    """A safetensors header that declares a 16 TB tensor (the data is absent)."""
    n = HUGE[0] * HUGE[1] * 4
    path.write_bytes(safetensors_bytes({"layers.0.weight": {"dtype": "F32", "shape": HUGE, "data_offsets": [0, n]}}))
    return path


def safetensors_huge_header(path: Path) -> Path:
    """A header length field of 2**62 bytes."""
    path.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    return path


def safetensors_with_meta(path: Path, tensors: dict, meta: dict) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta)
    return path


def _meta(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def _tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return dict(load_file(str(path)))


def retag(src: Path, path: Path, **changes) -> Path:
    """Copy of a saved model whose safetensors metadata is changed: a key set
    to a string replaces it, ``config={...}`` updates the JSON config, a
    value ``None`` deletes the key."""
    meta = _meta(src)
    for k, v in changes.items():
        if v is None:
            meta.pop(k, None)
        elif isinstance(v, dict) and k in meta:
            cfg = json.loads(meta[k])
            cfg.update(v)
            meta[k] = json.dumps(cfg)
        else:
            meta[k] = v if isinstance(v, str) else json.dumps(v)
    return safetensors_with_meta(path, _tensors(src), meta)


class _WriteMarker:
    """Unpickling this object runs ``open(marker, 'w')`` -- what a malicious
    checkpoint does. ``weights_only`` / ``allow_pickle=False`` must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def malicious_pt(path: Path, marker: Path) -> Path:
    """A ``.pt`` whose unpickling would create ``marker``."""
    torch.save({"layers.0.weight": torch.zeros(2, 2), "payload": _WriteMarker(marker)}, path)
    return path


def malicious_npy(path: Path, marker: Path) -> Path:
    """An object ``.npy`` whose unpickling would create ``marker``."""
    arr = np.empty(1, dtype=object)
    arr[0] = _WriteMarker(marker)
    np.save(path, arr, allow_pickle=True)
    return path


def pickled_pt(path: Path) -> Path:
    """A ``.pt`` holding a pickled (harmless) Python object that is not a tensor map."""
    with open(path, "wb") as f:
        pickle.dump({"model": _Plain()}, f)
    return path


class _Plain:
    pass


def yaml_python_tag(path: Path, marker: Path) -> Path:
    """YAML whose ``!!python/object/apply`` tag would create ``marker``."""
    path.write_text(
        f"arch: mlp\nmodels: !!python/object/apply:builtins.exec [\"open({str(marker)!r}, 'w').write('x')\"]\n"
        "method: average\n"
    )
    return path


def list_of_tensors_pt(path: Path) -> Path:
    torch.save([torch.zeros(3), torch.ones(2)], path)
    return path


def nan_weights(src: Path, path: Path) -> Path:
    from weightspace.io import load_state_dict, save_state_dict

    sd = load_state_dict(src)
    k = sorted(sd)[0]
    sd[k] = torch.full_like(sd[k], float("nan"))
    save_state_dict(sd, path)
    return path


def npy_file(path: Path) -> Path:
    np.save(path, np.zeros((3, 3), dtype=np.float32))
    return path


# --------------------------------------------------------------- zoo damage


def first_checkpoint(zoo_dir: Path) -> Path:
    return sorted((zoo_dir / "weights").rglob("*.safetensors"))[-1]


def sql(zoo_dir: Path, statement: str) -> None:
    conn = sqlite3.connect(zoo_dir / "index.sqlite")
    try:
        conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


def edit_json(path: Path, **changes) -> Path:
    obj = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            obj.pop(k, None)
        else:
            obj[k] = v
    path.write_text(json.dumps(obj))
    return path
