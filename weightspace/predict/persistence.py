"""The saved format of predictors: a directory with ``predictor.json``
(format name and version, class, constructor parameters, architectures,
fitted state) and ``arrays.safetensors`` (fitted arrays). Never pickle.

:func:`save_predictor` (what :meth:`BasePredictor.save` calls) writes it;
:func:`load_predictor` reads it back, validating everything it reads before
anything is allocated; :func:`checked_array` / :func:`no_extra_arrays` are the
checks predictors' ``_restore`` use on their arrays.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from weightspace.errors import ConfigError, InputFileError, MissingFileError, NonFiniteWeightsError, StateDictError
from weightspace.io import Field, atomic_write, check_numel, did_you_mean, read_json, read_safetensors, validate
from weightspace.predict.base import BasePredictor, _layout_to_json, predictor_classes
from weightspace.predict.features import TensorLayout

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "save_predictor", "load_predictor", "checked_array", "no_extra_arrays"]

FORMAT_NAME = "weightspace-predictor"
FORMAT_VERSION = 1


def save_predictor(predictor: BasePredictor, path: str | os.PathLike) -> Path:
    """Write the fitted ``predictor`` to directory ``path`` (created; files
    replaced atomically). Returns ``path``.

    Raises:
        InputFileError: ``path`` is an existing file.
    """
    from safetensors.numpy import save_file

    predictor._check_fitted()
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputFileError("is a file; a predictor is saved as a directory (predictor.json + arrays.safetensors)",
                             path=path)
    state, arrays = predictor._state()
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in predictor.get_params().items()}
    info = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "class": type(predictor).__name__,
        "kind": predictor.kind,
        "params": params,
        "target": predictor.target_,
        "n_train": int(predictor.n_train_),
        "layouts": [_layout_to_json(lay) for lay in predictor.layouts_],
        "architectures": predictor.architectures_,
        "state": state,
    }
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    atomic_write(path / "arrays.safetensors", lambda tmp: save_file(arrays, str(tmp)))
    atomic_write(path / "predictor.json", json.dumps(info, indent=2, default=_json_default))
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {o!r}")


def checked_array(arrays: Mapping[str, np.ndarray], name: str, shape: tuple, path: Path) -> np.ndarray:
    """``arrays[name]`` from ``arrays.safetensors``, checked: present, of
    ``shape`` (``None`` entries = any size), finite. Errors name the file and array."""
    if name not in arrays:
        raise StateDictError("array missing from the file; the saved predictor is damaged", path=path, field=name)
    a = arrays[name]
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
        want = "[" + ", ".join("n" if s is None else str(s) for s in shape) + "]"
        raise StateDictError(f"shape {list(a.shape)} in the file, expected {want}; the saved predictor is damaged",
                             path=path, field=name)
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise NonFiniteWeightsError("NaN/Inf values; the saved predictor is damaged", path=path, field=name)
    return a


def no_extra_arrays(arrays: Mapping[str, np.ndarray], names: Sequence[str], path: Path) -> None:
    extra = [k for k in arrays if k not in names]
    if extra:
        raise StateDictError("unexpected array in the file; the saved predictor is damaged or was written by "
                             "another predictor", path=path, field=extra[0])


_INFO_SCHEMA = {
    "format": Field(str, required=True), "version": Field(int, required=True, min=1), "class": Field(str, required=True),
    "kind": Field(str), "params": Field(dict, required=True), "target": Field(str, nullable=True),
    "n_train": Field(int, min=0), "layouts": Field(list, required=True), "architectures": Field(list),
    "state": Field(dict),
}
_ARCH_SCHEMA = {"arch": Field(str, required=True), "kwargs": Field(dict, required=True), "layout": Field(list, required=True)}


def _check_layout(obj: Any, path: Path, where: str) -> TensorLayout:
    """A saved layout ``[[name, shape], ...]``, every shape bounded (:func:`weightspace.io.check_numel`)."""
    if not isinstance(obj, list) or not obj:
        raise ConfigError("expected a non-empty list of [tensor name, shape] pairs", path=path, field=where)
    out = []
    for j, item in enumerate(obj):
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            raise ConfigError(f"expected a [tensor name, shape] pair, got {item!r}"[:200], path=path, field=f"{where}[{j}]")
        out.append((item[0], check_numel(item[1], path=path, field=f"{where}[{j}]")))
    return tuple(out)


def load_predictor(path: str | os.PathLike) -> BasePredictor:
    """A predictor saved with :meth:`BasePredictor.save` (JSON + safetensors;
    nothing is unpickled, no code is imported by name: the class must be one
    registered with :func:`~weightspace.predict.base.register_predictor`).

    ``predictor.json`` is checked against a schema (the predictor class's
    ``param_schema`` for its parameters; types, ranges, unknown keys), every
    size read from it is bounded before anything is allocated, and the arrays
    in ``arrays.safetensors`` must be exactly the ones the predictor needs.

    Raises:
        MissingFileError: ``path`` or one of its files does not exist.
        InputFileError: a file is empty, truncated, not JSON / safetensors, or
            not a saved predictor.
        ConfigError: a wrong type, out-of-range value or unknown key in
            ``predictor.json`` (``field`` names it).
        StateDictError: a missing, unexpected or mis-shaped array (named).
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        if not path.exists():
            raise MissingFileError("not a saved predictor (no such directory)", path=path)
        raise InputFileError("is a file; a saved predictor is a directory (predictor.json + arrays.safetensors)",
                             path=path)
    info_path = path / "predictor.json"
    if not info_path.exists():
        raise MissingFileError("not a saved predictor (predictor.json is missing)", path=info_path)
    info = read_json(info_path, what="saved predictor description (predictor.json)")
    if not isinstance(info, dict) or info.get("format") != FORMAT_NAME:
        raise InputFileError(f"not a {FORMAT_NAME} file", path=info_path, field="format")
    info = validate(info, _INFO_SCHEMA, path=info_path)
    if info["version"] > FORMAT_VERSION:
        raise ConfigError(f"format version {info['version']} is newer than this library ({FORMAT_VERSION}); "
                          "upgrade weightspace", path=info_path, field="version")
    classes = predictor_classes()
    cls = classes.get(info["class"])
    if cls is None:
        raise ConfigError(f"unknown predictor class {info['class']!r}{did_you_mean(info['class'], list(classes))}; "
                          f"known: {sorted(classes)}", path=info_path, field="class")
    params = validate(info["params"], cls.param_schema, path=info_path, where="params")
    defaults = {k: v.default for k, v in inspect.signature(cls.__init__).parameters.items()}
    for k, v in params.items():  # JSON has no tuples
        if isinstance(defaults.get(k), tuple) and isinstance(v, list):
            params[k] = tuple(v)
    if "alphas" in params:
        for i, a in enumerate(params["alphas"]):
            validate({"alpha": a}, {"alpha": Field(float, min=0.0)}, path=info_path, where=f"params.alphas[{i}]")
    layouts = [_check_layout(lay, info_path, f"layouts[{i}]") for i, lay in enumerate(info["layouts"])]
    if not layouts:
        raise ConfigError("no architecture recorded; the saved predictor is damaged", path=info_path, field="layouts")
    archs = []
    for i, a in enumerate(info.get("architectures", [])):
        a = validate(a, _ARCH_SCHEMA, path=info_path, where=f"architectures[{i}]")
        _check_layout(a["layout"], info_path, f"architectures[{i}].layout")
        archs.append(a)
    try:
        obj = cls(**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot build the predictor ({exc})", path=info_path, field="params") from None
    arrays = {k: v.numpy() for k, v in read_safetensors(path / "arrays.safetensors",
                                                         what="saved predictor arrays (arrays.safetensors)").items()}
    obj.layouts_ = layouts
    obj.architectures_ = archs
    obj.target_ = info.get("target")
    obj.n_train_ = int(info.get("n_train", 0))
    obj._restore(info.get("state", {}), arrays, path)
    return obj
