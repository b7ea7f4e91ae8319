"""Loaders for INR zoos (populations of SIRENs, one per image).

DWSNets style (Navon et al. 2023; also used by Neural Graphs)
    a dataset directory with ``splits.json`` = ``{"train": {"path": [...],
    "label": [...]}, "val": ..., "test": ...}``; each path (relative to the
    directory, or absolute) is a ``torch.save``-d state dict of an ``INR``:
    ``seq.0.weight, seq.0.bias, ..., seq.{L-1}.weight, seq.{L-1}.bias`` with
    ``sin(30 x)`` after every layer but the last, and ``+ 0.5`` added to the
    output. Without ``splits.json`` every ``*.pth`` under the directory is read.

NFN style (Zhou et al. 2023)
    SIREN archives: a directory (or a ``.tar``/``.tar.gz`` archive, read
    without extracting) of ``{prefix}_*/net{idx}.pth`` state dicts with keys
    ``net.0.linear.weight, net.0.linear.bias, net.1.linear.*, net.2.weight,
    net.2.bias`` (2 -> 32 -> 32 -> 1, ``sin(30 x)``, linear output); the digit
    label is parsed from the path (``_(\\d)s``).

Both become the registry's ``siren`` (``layers.i.*`` and ``out.*``) with
``w0 = w0_first = 30``; the DWSNets output offset is folded into
``out.bias`` (``output_offset``) so the torch ``siren`` computes exactly the
published function. Files are read with ``torch.load(weights_only=True)``.
Each INR becomes a member with one checkpoint (epoch 0: the training length
is not recorded in these zoos) and its ``label`` / ``split`` in ``extra``.

Coordinate convention
    DWSNets renders its INRs on ``make_coordinates`` (numpy ``meshgrid`` with
    ``indexing="xy"``): the network's first input runs along the image
    *columns*, ``(x, y) = (column, row)``. NFN's SIRENs and this project's
    grid (:func:`zoo.datasets.load_dataset` ``inr_*``) feed ``(row, column)``.
    Each imported member records its convention in ``extra["coord_order"]``
    (``"xy"`` or ``"yx"``; members without the field use the project's
    ``"yx"``), and :func:`render_inr` / :func:`inr_grid` take it, so an image
    rendered (or a network refitted) from a DWSNets INR is not transposed.
"""

from __future__ import annotations

import re
import tarfile
import zlib
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch

from weightspace.errors import ConfigError, WeightspaceError
from weightspace.io import did_you_mean, read_json
from zoo.datasets import _coords
from zoo.errors import ZooFormatError
from zoo.loaders._common import (
    ImportedMember, check_limit, check_state_dict, import_identity, import_members, load_weights_bytes,
    load_weights_file, short_hash,
)
from zoo.train import CheckpointResult

__all__ = [
    "COORD_ORDERS",
    "inr_grid",
    "render_inr",
    "member_coord_order",
    "inr_state_dict_to_siren",
    "load_dwsnets_inrs",
    "load_nfn_sirens",
    "import_inr_zoo",
]


#: ``"yx"``: inputs are ``(row, column)`` (this project, NFN); ``"xy"``:
#: ``(column, row)`` (DWSNets).
COORD_ORDERS = ("yx", "xy")
#: The convention each loader's networks were fitted with.
_STYLE_COORD_ORDER = {"dwsnets": "xy", "nfn": "yx"}


def _check_coord_order(coord_order: Any) -> str:
    if coord_order not in COORD_ORDERS:
        raise ValueError(f"coord_order must be 'yx' (row, column) or 'xy' (column, row), got {coord_order!r}")
    return coord_order


def inr_grid(height: int, width: int, coord_order: str = "yx") -> torch.Tensor:
    """Pixel-centre coordinates in ``[-1, 1]^2``, ``[height * width, 2]``, in
    row-major pixel order, as ``(row, column)`` (``"yx"``, the grid of the
    ``inr_*`` datasets) or ``(column, row)`` (``"xy"``, DWSNets')."""
    grid = _coords(int(height), int(width))
    return grid.flip(-1) if _check_coord_order(coord_order) == "xy" else grid


@torch.no_grad()
def render_inr(module: torch.nn.Module, height: int, width: int | None = None, *,
               coord_order: str = "yx") -> torch.Tensor:
    """The image of a 2-d INR: ``module`` on :func:`inr_grid`, reshaped to
    ``[height, width]`` (one output channel) or ``[C, height, width]``."""
    width = height if width is None else width
    out = module(inr_grid(height, width, coord_order))
    out = out.reshape(height, width, -1).permute(2, 0, 1)
    return out[0] if out.shape[0] == 1 else out


def member_coord_order(member: Any) -> str:
    """The coordinate convention a zoo member (or an imported member) was
    fitted with: its ``extra["coord_order"]``, ``"yx"`` when absent.

    Raises:
        ZooFormatError: the field holds something else.
    """
    order = dict(getattr(member, "extra", None) or {}).get("coord_order", "yx")
    if order not in COORD_ORDERS:
        raise ZooFormatError(f"unknown coordinate convention {order!r} (expected 'yx' or 'xy')",
                             path=getattr(member, "member_id", None), field="coord_order")
    return order


def inr_state_dict_to_siren(
    sd: Mapping[str, torch.Tensor],
    *,
    path: Any = None,
    output_offset: float = 0.0,
    w0: float = 30.0,
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Map an MLP-INR state dict (weights and biases in layer order) to the
    registry's ``siren``.

    Returns:
        ``(model_kwargs, state_dict)`` for ``zoo.create_model("siren", **model_kwargs)``.
    """
    weights = [(k, v) for k, v in sd.items() if k.endswith("weight")]
    biases = [(k, v) for k, v in sd.items() if k.endswith("bias")]
    other = [k for k in sd if not k.endswith(("weight", "bias"))]
    if other:
        raise ZooFormatError(f"unexpected tensor(s) {other[:4]} in an INR state dict", path=path, field=other[0])
    if len(weights) < 2:
        raise ZooFormatError(f"an INR needs at least 2 linear layers, found {len(weights)}", path=path,
                             field="weight")
    if len(biases) != len(weights):
        raise ZooFormatError(f"{len(weights)} weights but {len(biases)} biases", path=path, field="bias")
    prev = None
    for (kw, w), (kb, b) in zip(weights, biases):
        if w.dim() != 2:
            raise ZooFormatError(f"weight has shape {tuple(w.shape)}, expected 2-d", path=path, field=kw)
        if tuple(b.shape) != (w.shape[0],):
            raise ZooFormatError(f"bias has shape {tuple(b.shape)}, expected ({w.shape[0]},)", path=path, field=kb)
        if prev is not None and w.shape[1] != prev:
            raise ZooFormatError(f"weight takes {w.shape[1]} inputs but the previous layer has {prev} outputs",
                                 path=path, field=kw)
        prev = w.shape[0]
    kwargs = {
        "in_features": int(weights[0][1].shape[1]),
        "hidden": [int(w.shape[0]) for _, w in weights[:-1]],
        "out_features": int(weights[-1][1].shape[0]),
        "w0": float(w0),
        "w0_first": float(w0),
    }
    out: dict[str, torch.Tensor] = {}
    for i, ((_, w), (_, b)) in enumerate(zip(weights[:-1], biases[:-1])):
        out[f"layers.{i}.weight"] = w.detach().clone().float()
        out[f"layers.{i}.bias"] = b.detach().clone().float()
    out["out.weight"] = weights[-1][1].detach().clone().float()
    out["out.bias"] = biases[-1][1].detach().clone().float() + float(output_offset)
    check_state_dict("siren", kwargs, out, path=path)
    return kwargs, out


def _member(index: int, rel: str, kwargs: dict, sd: dict, label: Any, split: str | None, source: str):
    extra = {"file": rel, "coord_order": _STYLE_COORD_ORDER[source]}
    if label is not None:
        extra["label"] = int(label)
    if split is not None:
        extra["split"] = split
    return ImportedMember(
        member_id=f"{index:06d}-{short_hash(rel)}",
        index=index,
        config={"arch": "siren", "model": kwargs, "hparams": {"source": source}},
        checkpoints=[CheckpointResult(epoch=0, step=None, metrics={}, state_dict=sd)],
        seed=None,
        extra=extra,
    )


def _as_label(value: Any, *, path: Any, field: str) -> int:
    """An integer class label (ints, or strings of digits as DWSNets writes them)."""
    if isinstance(value, bool):
        ok = False
    elif isinstance(value, int):
        return value
    elif isinstance(value, float) and value.is_integer():
        return int(value)
    else:
        ok = isinstance(value, str) and value.strip().lstrip("-").isdigit()
    if not ok:
        raise ZooFormatError(f"expected an integer class label, got {value!r}", path=path, field=field)
    return int(value)


_KNOWN_SPLITS = ("train", "val", "test")


def _read_splits(spath: Path, splits: Sequence[str], root: Path) -> list[tuple[Path, int, str]]:
    """The ``(file, label, split)`` entries of a DWSNets ``splits.json``,
    every key and value checked (unknown keys get a did-you-mean)."""
    try:
        data = read_json(spath, what="splits file (JSON)")
    except WeightspaceError as e:
        raise ZooFormatError(e.message, path=spath) from None
    if not isinstance(data, dict):
        raise ZooFormatError(
            f"expected a JSON object {{split: {{'path': [...], 'label': [...]}}}}, got a {type(data).__name__}",
            path=spath,
        )
    known = list(dict.fromkeys([*_KNOWN_SPLITS, *splits]))
    for key in data:
        if key not in known:
            raise ZooFormatError(
                f"unknown split {key!r}{did_you_mean(str(key), known)} (known: {', '.join(known)}; "
                "pass splits=[...] to read other splits)",
                path=spath, field=str(key),
            )
    entries: list[tuple[Path, int, str]] = []
    for split in splits:
        if split not in data:
            continue
        part = data[split]
        if not isinstance(part, dict):
            raise ZooFormatError(f"split {split!r} must be an object with 'path' and 'label' lists, "
                                 f"got a {type(part).__name__}", path=spath, field=split)
        for key in part:
            if key not in ("path", "label"):
                raise ZooFormatError(
                    f"unknown key {key!r} in split {split!r}{did_you_mean(str(key), ['path', 'label'])} "
                    "(allowed: path, label)",
                    path=spath, field=f"{split}.{key}",
                )
        for fld in ("path", "label"):
            if fld not in part:
                raise ZooFormatError(f"split {split!r} lacks the {fld!r} list", path=spath, field=f"{split}.{fld}")
            if not isinstance(part[fld], list):
                raise ZooFormatError(f"split {split!r}: {fld!r} must be a list, got a {type(part[fld]).__name__}",
                                     path=spath, field=f"{split}.{fld}")
        if len(part["path"]) != len(part["label"]):
            raise ZooFormatError(f"split {split!r}: {len(part['path'])} paths but {len(part['label'])} labels",
                                 path=spath, field=f"{split}.label")
        for i, (p, lab) in enumerate(zip(part["path"], part["label"])):
            if not isinstance(p, str) or not p:
                raise ZooFormatError(f"expected a file path, got {p!r}", path=spath, field=f"{split}.path[{i}]")
            entries.append((root / p, _as_label(lab, path=spath, field=f"{split}.label[{i}]"), split))
    if not entries:
        raise ZooFormatError(
            f"no INR files listed for the split(s) {list(splits)} (the file has {sorted(data)})",
            path=spath,
        )
    return entries


def load_dwsnets_inrs(
    path: str | Path,
    *,
    splits_file: str | None = None,
    splits: Sequence[str] = _KNOWN_SPLITS,
    output_offset: float = 0.5,
    limit: int | None = None,
) -> Iterator[ImportedMember]:
    """Read a DWSNets-style INR dataset directory (see the module docstring).

    Args:
        splits_file: the splits file inside ``path``. Default: ``splits.json``
            if there is one, else every ``*.pth`` under ``path``. A file
            named here must exist.
        splits: the splits to read (the file may hold only these and
            ``train``/``val``/``test``: any other key is taken for a typo).
        output_offset: added to the output bias (DWSNets' INR adds 0.5 to its
            output); pass 0.0 to keep the stored bias unchanged.
        limit: stop after this many members (>= 1).

    Raises:
        ZooFormatError: missing/malformed splits file (naming the split and
            field; unknown keys with a did-you-mean), no INR listed, missing
            or unreadable INR file, or a state dict that is not an MLP INR.
    """
    check_limit(limit)
    if isinstance(splits, str) or not all(isinstance(s, str) for s in splits) or not list(splits):
        raise ConfigError(f"splits must be a non-empty list of split names, got {splits!r}", field="splits")
    path = Path(path).expanduser()
    if not path.exists():
        raise ZooFormatError("INR dataset directory not found", path=path)
    if not path.is_dir():
        raise ZooFormatError("is a file; expected an INR dataset directory", path=path)
    spath = path / (splits_file or "splits.json")
    if splits_file is not None and not spath.exists():
        raise ZooFormatError("splits file not found", path=spath)
    if spath.exists():
        entries: list[tuple[Path, Any, str | None]] = list(_read_splits(spath, splits, path))
    else:
        entries = [(p, None, None) for p in sorted(path.rglob("*.pth"))]
        if not entries:
            raise ZooFormatError("no splits.json and no *.pth files", path=path)
    for i, (f, label, split) in enumerate(entries):
        if limit is not None and i >= limit:
            return
        sd = load_weights_file(f)
        kwargs, out = inr_state_dict_to_siren(sd, path=f, output_offset=output_offset)
        try:
            rel = str(f.relative_to(path))
        except ValueError:
            rel = str(f)
        yield _member(i, rel, kwargs, out, label, split, "dwsnets")


def load_nfn_sirens(
    path: str | Path,
    *,
    prefix: str | None = None,
    index_pattern: str = r"net(\d+)\.pth?$",
    label_pattern: str = r"_(\d)s",
    limit: int | None = None,
) -> Iterator[ImportedMember]:
    """Read NFN-style SIREN state dicts from a directory or a tar archive.

    Args:
        path: directory, or ``.tar`` / ``.tar.gz`` / ``.tgz`` archive (read in place).
        prefix: only files under ``{prefix}_*/`` (e.g. ``"randinit_test"``).
        index_pattern / label_pattern: regexes applied to the file path; the
            index orders the members, the label goes to ``extra["label"]``.
        limit: stop after this many members (>= 1).

    Raises:
        ZooFormatError: no SIREN files, unreadable file or archive (truncated,
            corrupt), or not a SIREN state dict.
    """
    check_limit(limit)
    path = Path(path).expanduser()
    patterns = {}
    for name, pat in (("index_pattern", index_pattern), ("label_pattern", label_pattern)):
        try:
            patterns[name] = re.compile(pat)
        except (re.error, TypeError) as e:
            raise ConfigError(f"not a valid regular expression ({e})", field=name) from None
    idx_re, lab_re = patterns["index_pattern"], patterns["label_pattern"]
    pref_re = re.compile(rf"(^|/){re.escape(prefix)}_[^/]*/[^/]+$") if prefix else None

    def wanted(name: str) -> bool:
        return name.endswith((".pth", ".pt")) and (pref_re is None or bool(pref_re.search(name)))

    files: list[tuple[str, Any]] = []  # (relative name, loader)
    tar = None
    if path.is_dir():
        for f in sorted(path.rglob("*")):
            rel = str(f.relative_to(path))
            if f.is_file() and wanted(rel):
                files.append((rel, f))
    elif path.is_file() and tarfile.is_tarfile(path):
        try:
            tar = tarfile.open(path)
            members = tar.getmembers()
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise ZooFormatError(f"corrupt or truncated tar archive ({type(e).__name__}: {e})", path=path) from None
        for ti in members:
            if ti.isfile() and wanted(ti.name):
                files.append((ti.name, ti))
    elif not path.exists():
        raise ZooFormatError("not found: not a directory or a tar archive of SIRENs", path=path)
    else:
        raise ZooFormatError("not a directory or a tar archive of SIRENs", path=path)
    try:
        if not files:
            raise ZooFormatError(
                "no SIREN files found" + (f" under {prefix}_*/" if prefix else ""), path=path
            )

        def order(item):
            m = idx_re.search(item[0])
            return (int(m.group(1)) if m and m.group(1).isdigit() else 1 << 62, item[0])

        files.sort(key=order)
        for i, (rel, src) in enumerate(files):
            if limit is not None and i >= limit:
                return
            where = f"{path}/{rel}" if not isinstance(src, Path) else src
            if isinstance(src, tarfile.TarInfo):
                try:
                    data = tar.extractfile(src).read()  # bytes in memory; nothing written to disk
                except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
                    raise ZooFormatError(f"cannot be read from the archive ({type(e).__name__}: {e})",
                                         path=where) from None
                sd = load_weights_bytes(data, path=where)
            else:
                sd = load_weights_file(src)
            kwargs, out = inr_state_dict_to_siren(sd, path=where)
            m = idx_re.search(rel)
            lab = lab_re.search(rel)
            label = _as_label(lab.group(1), path=where, field="label_pattern") if lab else None
            index = int(m.group(1)) if m and m.group(1).isdigit() else i
            yield _member(index, rel, kwargs, out, label, None, "nfn")
    finally:
        if tar is not None:
            tar.close()


def import_inr_zoo(
    path: str | Path,
    out: str | Path,
    *,
    style: str,
    progress: bool = True,
    **options: Any,
):
    """Convert an INR zoo (``style="dwsnets"`` or ``"nfn"``) into a weightspace
    zoo at ``out``. ``options`` go to the matching ``load_*`` function.
    Nothing is written when the source is malformed or yields no INR; ``out``
    resumes only an import of the same directory with the same options."""
    path = Path(path).expanduser()
    if style == "dwsnets":
        members = load_dwsnets_inrs(path, **options)
    elif style == "nfn":
        members = load_nfn_sirens(path, **options)
    else:
        raise ConfigError(f"style must be 'dwsnets' or 'nfn', got {style!r}", field="style")
    import_options, _ = import_identity(options)
    info = {
        "name": f"inr_{style}:{path.name}",
        "source": f"inr_{style}",
        "source_path": str(path.resolve()),
        "import_options": import_options,
        "recipe": None,
        "recipe_hash": short_hash(repr(sorted((k, str(v)) for k, v in options.items())), 16),
    }
    return import_members(members, out, info=info, progress=progress)
