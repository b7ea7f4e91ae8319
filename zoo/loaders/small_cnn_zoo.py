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

Image size: the networks pool globally, so the weights do not determine the
input size, yet TF's SAME padding depends on it. It comes from
``config.dataset`` for the four published datasets; for any other dataset
pass ``image_size=`` (CLI ``--image-size``) -- there is no silent default.
Input channels, classes, width and depth are read from ``layout.csv``.

The usual filter (as in the paper's notebook): one checkpoint per run, the
last ``step`` (``steps="final"``), and runs whose weights are not all finite
dropped (``drop_nonfinite=True``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from weightspace.arch import create_model
from weightspace.errors import ConfigError, InputFileError
from weightspace.io import check_count, check_numel, read_npy
from zoo.errors import ZooFormatError
from zoo.loaders._common import (
    ImportedMember, add_gaps, check_limit, finite, import_source, loader_options, short_hash,
)
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
_PADDINGS = ("valid", "same", "torch")
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

    if not path.exists():
        raise ZooFormatError("file not found", path=path)
    if not path.is_file():
        raise ZooFormatError("is a directory, expected a CSV file", path=path)
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ZooFormatError("is empty (no header row)", path=path) from None
    except Exception as e:  # ParserError, UnicodeDecodeError, BadGzipFile, EOFError (truncated .gz), OSError
        first = (str(e).strip().splitlines() or [""])[0]
        raise ZooFormatError(f"cannot be read as CSV ({type(e).__name__}: {first})", path=path) from None
    for col in required:
        if col not in df.columns:
            raise ZooFormatError(
                f"missing column {col!r} (columns: {list(df.columns)[:12]})", path=path, field=col
            )
    return df


def _int_column(df, col: str, path: Path, *, min_value: int = 0) -> list[int]:
    """The integer values of column ``col``; a blank, non-integer or too small
    value is a :class:`ZooFormatError` naming the file, column and row."""
    out = []
    for i, v in enumerate(df[col].tolist()):
        try:
            f = float(v)
            ok = math.isfinite(f) and f == int(f) and int(f) >= min_value
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ZooFormatError(
                f"row {i}: expected an integer >= {min_value}, got {v!r}", path=path, field=col
            )
        out.append(int(f))
    return out


def read_layout(path: str | Path) -> list[LayoutEntry]:
    """Parse ``layout.csv`` (sorted by ``start_idx``; checked to tile the row)."""
    path = Path(path).expanduser()
    df = _read_csv(path, ("varname", "start_idx", "end_idx", "shape"))
    if len(df) == 0:
        raise ZooFormatError("has no variables (only a header row)", path=path)
    starts = _int_column(df, "start_idx", path)
    ends = _int_column(df, "end_idx", path)
    entries = []
    for i, (name, raw_shape, start, end) in enumerate(zip(df["varname"].tolist(), df["shape"].tolist(), starts, ends)):
        if not isinstance(name, str) or not name:
            raise ZooFormatError(f"row {i}: empty variable name", path=path, field="varname")
        shape = tuple(int(s) for s in re.findall(r"\d+", str(raw_shape)))
        if not shape:
            raise ZooFormatError(f"row {i} ({name}): no shape in {raw_shape!r}", path=path, field="shape")
        check_numel(list(shape), path=path, field="shape")
        if end - start != int(np.prod(shape)):
            raise ZooFormatError(
                f"row {i} ({name}): end_idx - start_idx = {end - start} does not match shape {raw_shape}",
                path=path, field="shape",
            )
        entries.append(LayoutEntry(name, start, end, shape))
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


def _layout_arch(layout: Sequence[LayoutEntry], path: Any) -> dict[str, int]:
    """Architecture sizes the layout determines: input channels, classes,
    width and depth (from the conv kernels ``(kh, kw, in, out)`` and the
    output layer's bias). The input *image size* is not among them: the
    network pools globally, so its weights are the same for any image size."""
    layers = _layers(layout, path)
    convs = [d["kernel"].shape for d in layers if len(d["kernel"].shape) == 4]
    if not convs or len(layers[-1]["kernel"].shape) != 2:
        raise ZooFormatError(
            f"expected conv kernels (4-d) followed by a dense kernel (2-d), got kernel shapes "
            f"{[d['kernel'].shape for d in layers]}",
            path=path, field="shape",
        )
    last = layers[-1]
    num_classes = last["bias"].shape[0] if "bias" in last else last["kernel"].shape[1]
    return {"in_channels": int(convs[0][2]), "num_classes": int(num_classes),
            "width": int(convs[0][3]), "depth": len(convs)}


def _cfg_int(cfg: dict, key: str, default: int, metrics_path: Path) -> int:
    v = cfg.get(key)
    if v is None:
        return default
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ZooFormatError(f"expected a positive integer, got {v!r}", path=metrics_path, field=f"config.{key}")
    return v


def _image_size_for(cfg: dict, image_size: int | None, metrics_path: Path) -> int:
    if image_size is not None:
        return image_size
    dataset = cfg.get("dataset")
    if dataset in _IMAGE_SIZE:
        return _IMAGE_SIZE[dataset]
    raise ZooFormatError(
        f"unknown dataset {dataset!r} (known: {', '.join(sorted(_IMAGE_SIZE))}): its input image size cannot "
        "be read from the weights (the network pools globally); pass image_size=... "
        "(CLI: --image-size) or padding='torch'",
        path=metrics_path, field="config.dataset",
    )


def _arch_for(cfg: dict, padding: str, image_size: int | None, metrics_path: Path,
              sizes: dict[str, int]) -> tuple[str, dict]:
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
        "in_channels": sizes["in_channels"],
        "num_classes": sizes["num_classes"],
        "width": _cfg_int(cfg, "num_units", sizes["width"], metrics_path),
        "depth": _cfg_int(cfg, "num_layers", sizes["depth"], metrics_path),
        "activation": _ACTIVATIONS[act],
    }
    if padding == "torch":
        return "cnn_small", kwargs
    size = _image_size_for(cfg, image_size, metrics_path)
    return "cnn_small_tf", dict(kwargs, padding=padding, image_size=int(size))


def _check_options(steps: Any, padding: str, image_size: Any, limit: Any) -> None:
    if padding not in _PADDINGS:
        raise ConfigError(f"padding must be one of {', '.join(_PADDINGS)}, got {padding!r}", field="padding")
    check_count(image_size, "image_size")
    check_limit(limit)
    if isinstance(steps, str):
        if steps not in ("final", "all"):
            raise ConfigError(f"steps must be 'final', 'all' or a list of steps, got {steps!r}", field="steps")
        return
    try:
        vals = list(steps)
    except TypeError:
        raise ConfigError(f"steps must be 'final', 'all' or a list of steps, got {steps!r}", field="steps") from None
    if not vals:
        raise ConfigError("steps is an empty list; give at least one step", field="steps")
    for v in vals:
        check_count(v, "steps", min=0, nullable=False)


def _metrics_path(path: Path) -> Path:
    """``metrics.csv.gz`` as published, or an uncompressed ``metrics.csv``."""
    gz = path / "metrics.csv.gz"
    if not gz.exists() and (path / "metrics.csv").exists():
        return path / "metrics.csv"
    return gz


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
        path: directory with ``weights.npy``, ``metrics.csv.gz`` (or
            ``metrics.csv``), ``layout.csv``.
        steps: ``"final"`` (last step of each run -- the usual filter),
            ``"all"`` (every step becomes a checkpoint), or a list of steps.
        drop_nonfinite: skip runs whose kept weights have NaN/Inf.
        padding: ``"valid"`` (default; what the zoo was trained with),
            ``"same"`` or ``"torch"`` -- see the module docstring.
        image_size: input size for ``cnn_small_tf``. Default: from
            ``config.dataset`` (28 for mnist / fashion_mnist, 32 for cifar10 /
            svhn_cropped); the weights do not determine it (global pooling),
            so any other dataset needs it (not with ``padding="torch"``).
        limit: stop after this many members (>= 1).

    Raises:
        ZooFormatError: a file is missing or malformed, the dataset's image
            size is unknown, or no member matches the options; the message
            names the file and the column / field.
        ConfigError: an option is out of range (names the option).
    """
    import pandas as pd

    _check_options(steps, padding, image_size, limit)
    path = Path(path).expanduser()
    if not path.exists():
        raise ZooFormatError("Small CNN Zoo directory not found", path=path)
    if not path.is_dir():
        raise ZooFormatError(
            "is a file; expected the Small CNN Zoo directory (weights.npy, metrics.csv.gz, layout.csv)", path=path
        )
    lpath = path / "layout.csv"
    layout = read_layout(lpath)
    sizes = _layout_arch(layout, lpath)
    n_params = layout[-1].end
    wpath = path / "weights.npy"
    if not wpath.exists():
        raise ZooFormatError("file not found", path=wpath)
    try:
        weights = read_npy(wpath, what="weights.npy array", mmap_mode="r")
    except InputFileError as e:
        raise ZooFormatError(f"not a plain numeric .npy array: {e.message}", path=wpath) from None
    if not isinstance(weights, np.ndarray):
        raise ZooFormatError("is an .npz archive; expected a single .npy array", path=wpath)
    if weights.dtype.kind != "f":
        # the published zoos store float32 weights; integers are not weights (a wrong file, or tampered)
        raise ZooFormatError(f"expected a floating-point array of weights (float32), got dtype {weights.dtype}",
                             path=wpath, field="dtype")
    if weights.ndim != 2:
        raise ZooFormatError(f"expected a 2-d array (rows x {n_params}), got shape {weights.shape}",
                             path=wpath, field="shape")
    if weights.shape[1] != n_params:
        raise ZooFormatError(
            f"rows have {weights.shape[1]} values but layout.csv describes {n_params} parameters",
            path=wpath, field="shape",
        )
    if weights.shape[0] == 0:
        raise ZooFormatError("has no rows (no checkpoints to import)", path=wpath, field="shape")
    mpath = _metrics_path(path)
    metrics = _read_csv(mpath, ("step",))
    if len(metrics) != weights.shape[0]:
        raise ZooFormatError(
            f"has {len(metrics)} rows but weights.npy has {weights.shape[0]}", path=mpath, field="rows"
        )
    step_of = _int_column(metrics, "step", mpath)
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
    count = n_selected = n_nonfinite = 0
    for run_idx, (run, rows) in enumerate(groups.items()):
        rows = sorted(rows, key=lambda r: step_of[r])
        if steps == "final":
            rows = rows[-1:]
        elif steps != "all":
            wanted = {int(s) for s in steps}
            rows = [r for r in rows if step_of[r] in wanted]
        if not rows:
            continue
        n_selected += 1
        first = metrics.iloc[rows[0]]
        cfg = {c[len("config."):]: _py(first[c]) for c in cfg_cols}
        arch, kwargs = _arch_for(cfg, padding, image_size, mpath, sizes)
        key = repr((arch, sorted(kwargs.items())))
        if key not in templates:
            try:
                templates[key] = create_model(arch, **kwargs).state_dict()
            except (ValueError, TypeError, RuntimeError) as e:
                raise ZooFormatError(f"cannot build {arch}({kwargs}): {e}", path=mpath) from None
            n_torch = sum(v.numel() for v in templates[key].values())
            if n_torch != n_params:
                raise ZooFormatError(
                    f"rows have {n_params} parameters but {arch}({kwargs}) has {n_torch}",
                    path=wpath, field="shape",
                )
        cks = []
        for r in rows:
            sd = tf_vector_to_state_dict(np.asarray(weights[r], dtype=np.float32), layout, templates[key],
                                         path=lpath)
            m = {}
            for c in metric_cols:
                v = _py(metrics.at[r, c])
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    m[_METRIC_RENAME.get(c, c)] = float(v)
            step = step_of[r]
            cks.append(CheckpointResult(epoch=step, step=step, metrics=add_gaps(m), state_dict=sd))
        if drop_nonfinite and not all(finite(c.state_dict) for c in cks):
            n_nonfinite += 1
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
    if count == 0:
        if n_selected == 0:
            raise ZooFormatError(
                f"no run has a checkpoint at steps {sorted({int(s) for s in steps})} "
                f"(steps present: {sorted(set(step_of))[:20]})",
                path=mpath, field="step",
            )
        raise ZooFormatError(
            f"all {n_selected} runs have non-finite weights; pass drop_nonfinite=False "
            "(CLI: --keep-nonfinite) to import them anyway",
            path=wpath,
        )


def _py(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v != v:
        return None
    return v


def import_small_cnn_zoo(path: str | Path, out: str | Path, *, progress: bool = True, **options: Any):
    """Convert a Small CNN Zoo directory into a weightspace zoo at ``out``
    (resumable with the same options). Returns the :class:`~zoo.store.Zoo`.
    ``options`` (``steps``, ``drop_nonfinite``, ``padding``, ``image_size``,
    ``limit``) as in :func:`load_small_cnn_zoo`; nothing is written when the
    source is malformed or holds no member that matches them."""
    opts = loader_options(load_small_cnn_zoo, path, options)
    _check_options(opts["steps"], opts["padding"], opts["image_size"], opts["limit"])
    steps = opts["steps"]
    identity = {**opts, "steps": steps if isinstance(steps, str) else [int(s) for s in steps]}
    # the hash of earlier versions, so their zoos still resume
    legacy = short_hash(repr(sorted(identity.items())), 16)
    return import_source(load_small_cnn_zoo, "small_cnn_zoo", path, out, opts, identity=identity,
                         recipe_hash=legacy, progress=progress)
