"""Loader for the Small CNN Zoo (Unterthiner et al. 2020, "Predicting Neural
Network Accuracy from Weights").

The published dataset directory (one per image dataset: ``mnist``,
``fashion_mnist``, ``cifar10``, ``svhn_cropped``) holds:

``weights.npy``
    float32 matrix, one row per checkpoint, each row the 4970 parameters of
    the network flattened in TF layout (read memory-mapped, ``allow_pickle=False``).
``metrics.csv.gz``
    one row per weights row: ``config.*`` hyperparameters (``config.activation``,
    ``config.learning_rate``, ``config.num_layers``, ``config.num_units``,
    ``config.dataset``, ...), ``modeldir`` (the run), ``step`` (checkpoint
    epoch: 0, 1, 2, 3, 20, 40, 60, 80, 86) and ``test_accuracy``,
    ``test_loss``, ``train_accuracy``, ``train_loss``.
``layout.csv``
    ``varname,start_idx,end_idx,shape`` of each variable in a row (e.g.
    ``sequential/conv2d/kernel:0``).

Layout conversion: Keras conv kernels are ``(kh, kw, in, out)`` (HWIO) and
become torch ``(out, in, kh, kw)`` by ``transpose(3, 2, 0, 1)``; dense kernels
``(in, out)`` are transposed. Both frameworks compute cross-correlation, so
no flip is needed. Variables are matched to the torch modules by order of
layer (``start_idx``), whatever their names.

Padding: the zoo was trained with Keras' default ``padding="valid"``; members
are imported as ``cnn_small_tf`` (:mod:`zoo.tf_compat`) which reproduces that
exactly (``padding="same"`` emulates TF's asymmetric SAME padding instead). With
``padding="torch"`` they are imported as plain ``cnn_small`` (symmetric
``padding=1``): same weights, different function -- fine for weight-space
learning, not for evaluating the networks.

The usual filter (as in the paper's notebook): one checkpoint per run, the
last ``step`` (``steps="final"``), and runs whose weights are not all finite
dropped (``drop_nonfinite=True``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from weightspace.arch import create_model
from zoo.errors import ZooFormatError
from zoo.loaders._common import ImportedMember, add_gaps, check_state_dict, finite, import_members, short_hash
from zoo.train import CheckpointResult

__all__ = [
    "LayoutEntry",
    "read_layout",
    "tf_vector_to_state_dict",
    "load_small_cnn_zoo",
    "import_small_cnn_zoo",
    "SMALL_CNN_ZOO_FILES",
]

SMALL_CNN_ZOO_FILES = ("weights.npy", "metrics.csv.gz", "layout.csv")
_METRIC_RENAME = {
    "test_accuracy": "test_acc",
    "train_accuracy": "train_acc",
    "test_loss": "test_loss",
    "train_loss": "train_loss",
}
_IMAGE_SIZE = {"mnist": 28, "fashion_mnist": 28, "cifar10": 32, "svhn_cropped": 32}
_ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "elu": "elu", "gelu": "gelu",
                "linear": "identity", "swish": "silu", "silu": "silu"}


@dataclass(frozen=True)
class LayoutEntry:
    """One variable of ``layout.csv``."""

    varname: str
    start: int
    end: int
    shape: tuple[int, ...]

    @property
    def scope(self) -> str:
        """The layer the variable belongs to (``sequential/conv2d_1``)."""
        return self.varname.rsplit("/", 1)[0] if "/" in self.varname else self.varname

    @property
    def kind(self) -> str:
        base = self.varname.rsplit("/", 1)[-1].split(":")[0]
        return "bias" if base.startswith("bias") or len(self.shape) == 1 else "kernel"


def _read_csv(path: Path, required: Sequence[str]):
    import pandas as pd

    if not path.is_file():
        raise ZooFormatError("file not found", path=path)
    try:
        df = pd.read_csv(path)
    except Exception as e:
        raise ZooFormatError(f"cannot be read as CSV ({type(e).__name__}: {e})", path=path) from None
    for col in required:
        if col not in df.columns:
            raise ZooFormatError(
                f"missing column {col!r} (columns: {list(df.columns)[:12]})", path=path, field=col
            )
    return df


def read_layout(path: str | Path) -> list[LayoutEntry]:
    """Parse ``layout.csv`` (sorted by ``start_idx``; checked to tile the row)."""
    path = Path(path).expanduser()
    df = _read_csv(path, ("varname", "start_idx", "end_idx", "shape"))
    entries = []
    for i, row in df.iterrows():
        shape = tuple(int(s) for s in re.findall(r"\d+", str(row["shape"])))
        start, end = int(row["start_idx"]), int(row["end_idx"])
        if not shape or end - start != int(np.prod(shape)):
            raise ZooFormatError(
                f"row {i} ({row['varname']}): end_idx - start_idx = {end - start} does not match shape {row['shape']}",
                path=path, field="shape",
            )
        entries.append(LayoutEntry(str(row["varname"]), start, end, shape))
    entries.sort(key=lambda e: e.start)
    pos = 0
    for e in entries:
        if e.start != pos:
            raise ZooFormatError(
                f"variable {e.varname} starts at {e.start}, expected {pos} (gap or overlap)",
                path=path, field="start_idx",
            )
        pos = e.end
    return entries


def _layers(layout: Sequence[LayoutEntry], path: Any) -> list[dict[str, LayoutEntry]]:
    """Group variables into layers (``{"kernel": e, "bias": e}``) in row order."""
    layers: dict[str, dict[str, LayoutEntry]] = {}
    for e in layout:
        slot = layers.setdefault(e.scope, {})
        if e.kind in slot:
            raise ZooFormatError(f"layer {e.scope} has two {e.kind} variables", path=path, field="varname")
        slot[e.kind] = e
    out = sorted(layers.values(), key=lambda d: min(v.start for v in d.values()))
    for d in out:
        if "kernel" not in d:
            raise ZooFormatError(f"layer of {next(iter(d.values())).varname} has no kernel", path=path, field="varname")
    return out


def tf_vector_to_state_dict(
    vector: np.ndarray,
    layout: Sequence[LayoutEntry],
    template: dict,
    *,
    path: Any = "layout.csv",
) -> dict[str, np.ndarray]:
    """Convert one flat TF-layout row into a torch state dict.

    Args:
        vector: ``(n,)`` flat parameters (``n`` = last ``end_idx``).
        layout: from :func:`read_layout`.
        template: the target torch ``state_dict`` (names and shapes; e.g.
            ``create_model("cnn_small").state_dict()``). Its conv / linear
            weights are filled, in order, from the layout's 4-d / 2-d kernels.

    Returns:
        ``{name: float32 array}`` with the template's names and shapes.
    """
    vector = np.asarray(vector)
    layers = _layers(layout, path)
    weight_names = [k for k, v in template.items() if k.endswith("weight") and v.dim() in (2, 4)]
    if len(weight_names) != len(layers):
        raise ZooFormatError(
            f"layout has {len(layers)} layers but the torch network has {len(weight_names)} "
            f"({weight_names})", path=path, field="varname",
        )
    sd: dict[str, np.ndarray] = {}
    for name, layer in zip(weight_names, layers):
        k = layer["kernel"]
        arr = vector[k.start : k.end].reshape(k.shape)
        if arr.ndim == 4:  # HWIO -> OIHW
            arr = arr.transpose(3, 2, 0, 1)
        elif arr.ndim == 2:  # (in, out) -> (out, in)
            arr = arr.T
        else:
            raise ZooFormatError(f"kernel {k.varname} has unsupported rank {arr.ndim}", path=path, field="shape")
        want = tuple(template[name].shape)
        if arr.shape != want:
            raise ZooFormatError(
                f"{k.varname} with shape {k.shape} does not fit torch tensor {name} {want}",
                path=path, field="shape",
            )
        sd[name] = np.array(arr, dtype=np.float32, order="C", copy=True)  # own, writable memory
        bname = name[: -len("weight")] + "bias"
        if bname in template:
            if "bias" not in layer:
                raise ZooFormatError(f"layer {k.scope} has no bias but {bname} needs one", path=path, field="varname")
            b = layer["bias"]
            barr = vector[b.start : b.end].reshape(b.shape)
            if barr.shape != tuple(template[bname].shape):
                raise ZooFormatError(
                    f"{b.varname} with shape {b.shape} does not fit {bname} {tuple(template[bname].shape)}",
                    path=path, field="shape",
                )
            sd[bname] = np.array(barr, dtype=np.float32, order="C", copy=True)
    missing = [k for k in template if k not in sd]
    if missing:
        raise ZooFormatError(f"torch tensors {missing} have no variable in the layout", path=path, field="varname")
    return sd


def _arch_for(cfg: dict, padding: str, image_size: int | None, metrics_path: Path) -> tuple[str, dict]:
    arch_name = str(cfg.get("dnn_architecture", "cnn"))
    if arch_name != "cnn":
        raise ZooFormatError(
            f"unknown architecture {arch_name!r}: only the 'cnn' networks of the Small CNN Zoo are supported",
            path=metrics_path, field="config.dnn_architecture",
        )
    if "activation" not in cfg:
        raise ZooFormatError("missing column 'config.activation'", path=metrics_path, field="config.activation")
    act = str(cfg["activation"])
    if act not in _ACTIVATIONS:
        raise ZooFormatError(
            f"unknown activation {act!r}; supported: {sorted(_ACTIVATIONS)}",
            path=metrics_path, field="config.activation",
        )
    kwargs: dict[str, Any] = {
        "in_channels": 1,
        "num_classes": 10,
        "width": int(cfg.get("num_units", 16)),
        "depth": int(cfg.get("num_layers", 3)),
        "activation": _ACTIVATIONS[act],
    }
    if padding == "torch":
        return "cnn_small", kwargs
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid', 'same' or 'torch', got {padding!r}")
    size = image_size or _IMAGE_SIZE.get(str(cfg.get("dataset", "mnist")), 28)
    return "cnn_small_tf", dict(kwargs, padding=padding, image_size=int(size))


def load_small_cnn_zoo(
    path: str | Path,
    *,
    steps: str | Sequence[int] = "final",
    drop_nonfinite: bool = True,
    padding: str = "valid",
    image_size: int | None = None,
    limit: int | None = None,
) -> Iterator[ImportedMember]:
    """Read a Small CNN Zoo directory as :class:`ImportedMember` s (lazily).

    Args:
        path: directory with ``weights.npy``, ``metrics.csv.gz``, ``layout.csv``.
        steps: ``"final"`` (last step of each run -- the usual filter),
            ``"all"`` (every step becomes a checkpoint), or a list of steps.
        drop_nonfinite: skip runs whose kept weights have NaN/Inf.
        padding: ``"valid"`` (default; what the zoo was trained with),
            ``"same"`` or ``"torch"`` -- see the module docstring.
        image_size: input size for ``cnn_small_tf`` (default from ``config.dataset``).
        limit: stop after this many members.

    Raises:
        ZooFormatError: a file is missing or malformed; the message names the
            file and the column / field.
    """
    import pandas as pd

    path = Path(path).expanduser()
    if not path.is_dir():
        raise ZooFormatError("Small CNN Zoo directory not found", path=path)
    layout = read_layout(path / "layout.csv")
    n_params = layout[-1].end
    wpath = path / "weights.npy"
    if not wpath.is_file():
        raise ZooFormatError("file not found", path=wpath)
    try:
        weights = np.load(wpath, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise ZooFormatError(f"not a plain numeric .npy array ({e})", path=wpath) from None
    if weights.ndim != 2:
        raise ZooFormatError(f"expected a 2-d array (rows x {n_params}), got shape {weights.shape}",
                             path=wpath, field="shape")
    if weights.shape[1] != n_params:
        raise ZooFormatError(
            f"rows have {weights.shape[1]} values but layout.csv describes {n_params} parameters",
            path=wpath, field="shape",
        )
    mpath = path / "metrics.csv.gz"
    metrics = _read_csv(mpath, ("step",))
    if len(metrics) != weights.shape[0]:
        raise ZooFormatError(
            f"has {len(metrics)} rows but weights.npy has {weights.shape[0]}", path=mpath, field="rows"
        )
    cfg_cols = [c for c in metrics.columns if c.startswith("config.")]
    metric_cols = [c for c in metrics.columns if c not in cfg_cols and c not in ("step", "modeldir")
                   and not c.startswith("Unnamed")]
    if "modeldir" in metrics.columns:
        run_col = metrics["modeldir"].astype(str)
    elif len(metrics.columns) and str(metrics.columns[0]).startswith("Unnamed") and metrics.iloc[:, 0].astype(str).str.contains("/").all():
        # Written with the checkpoint path as index (".../<run>/permanent_ckpt-<step>"): the run is its parent.
        run_col = metrics.iloc[:, 0].astype(str).str.rsplit("/", n=1).str[0]
    else:  # no run information: every row is its own member
        run_col = pd.Series([str(i) for i in range(len(metrics))])
    groups: dict[str, list[int]] = {}
    for row, run in enumerate(run_col.tolist()):
        groups.setdefault(str(run), []).append(row)
    templates: dict[str, dict] = {}
    count = 0
    for run_idx, (run, rows) in enumerate(groups.items()):
        rows = sorted(rows, key=lambda r: int(metrics.at[r, "step"]))
        if steps == "final":
            rows = rows[-1:]
        elif steps != "all":
            wanted = {int(s) for s in steps}
            rows = [r for r in rows if int(metrics.at[r, "step"]) in wanted]
        if not rows:
            continue
        first = metrics.iloc[rows[0]]
        cfg = {c[len("config."):]: _py(first[c]) for c in cfg_cols}
        arch, kwargs = _arch_for(cfg, padding, image_size, mpath)
        key = repr((arch, sorted(kwargs.items())))
        if key not in templates:
            templates[key] = create_model(arch, **kwargs).state_dict()
            n_torch = sum(v.numel() for v in templates[key].values())
            if n_torch != n_params:
                raise ZooFormatError(
                    f"rows have {n_params} parameters but {arch}({kwargs}) has {n_torch}",
                    path=wpath, field="shape",
                )
        cks = []
        for r in rows:
            sd = tf_vector_to_state_dict(np.asarray(weights[r], dtype=np.float32), layout, templates[key],
                                         path=path / "layout.csv")
            m = {}
            for c in metric_cols:
                v = _py(metrics.at[r, c])
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    m[_METRIC_RENAME.get(c, c)] = float(v)
            step = int(metrics.at[r, "step"])
            cks.append(CheckpointResult(epoch=step, step=step, metrics=add_gaps(m), state_dict=sd))
        if drop_nonfinite and not all(finite(c.state_dict) for c in cks):
            continue
        cfg_full = {"arch": arch, "model": kwargs, "hparams": cfg}
        yield ImportedMember(
            member_id=f"{run_idx:06d}-{short_hash(run)}",
            index=run_idx,
            config=cfg_full,
            checkpoints=cks,
            seed=None,
            extra={"modeldir": run},
        )
        count += 1
        if limit is not None and count >= limit:
            return


def _py(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v != v:
        return None
    return v


def import_small_cnn_zoo(
    path: str | Path,
    out: str | Path,
    *,
    steps: str | Sequence[int] = "final",
    drop_nonfinite: bool = True,
    padding: str = "valid",
    image_size: int | None = None,
    limit: int | None = None,
    progress: bool = True,
):
    """Convert a Small CNN Zoo directory into a weightspace zoo at ``out``
    (resumable). Returns the :class:`~zoo.store.Zoo`. Options as in
    :func:`load_small_cnn_zoo`."""
    path = Path(path).expanduser()
    opts = {"steps": steps if isinstance(steps, str) else list(steps), "drop_nonfinite": drop_nonfinite,
            "padding": padding, "image_size": image_size, "limit": limit}
    info = {
        "name": f"small_cnn_zoo:{path.name}",
        "source": "small_cnn_zoo",
        "source_path": str(path.resolve()),
        "import_options": opts,
        "recipe": None,
        "recipe_hash": short_hash(repr(sorted(opts.items())), 16),
    }
    members = load_small_cnn_zoo(path, steps=steps, drop_nonfinite=drop_nonfinite, padding=padding,
                                 image_size=image_size, limit=limit)
    return import_members(members, out, info=info, progress=progress)
