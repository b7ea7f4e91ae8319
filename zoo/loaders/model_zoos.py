"""Loader for model-zoos.cc style zoos (Schürholt et al. 2022, "Model Zoos: A
Dataset of Diverse Populations of Neural Network Models").

These zoos are Ray Tune experiment directories: one trial directory per
network, each with

``params.json``
    the trial's config (``"model::type"``, ``"optim::lr"``, ``"seed"``, ...).
``result.json``
    JSON lines, one per training iteration (``train_loss``, ``train_acc``,
    ``test_loss``, ``test_acc``, ``training_iteration``, Ray bookkeeping ...).
``checkpoint_000NNN/checkpoints``
    the model's ``state_dict`` saved with ``torch.save`` after iteration NNN
    (loaded here with ``torch.load(weights_only=True)``, never unpickled; a
    ``*.safetensors`` file there is read as well).

The metrics of ``checkpoint_N`` are those of the result line whose
``training_iteration`` is N (or, without that field, line N-1); checkpoint 0
(the initialisation, when present) gets the line with ``training_iteration``
0 if any.

The networks of these zoos are defined in their own code base, so the
caller says which architecture to build (``arch``: a registered name or any
model reference, e.g. ``"mypkg.models:make_cnn"``) and, when the parameter
names differ, how to rename them (``key_map``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, Union

from weightspace.arch import ModelRef
from weightspace.errors import ConfigError, WeightspaceError
from weightspace.io import check_count, read_json, read_text
from zoo.errors import ZooFormatError
from zoo.loaders._common import (
    ImportedMember, add_gaps, check_limit, check_state_dict, import_source, load_weights_file, loader_options,
    reference_state_dict, resolve_arch, short_hash,
)
from zoo.train import CheckpointResult

__all__ = ["load_model_zoos", "import_model_zoos", "read_result_json"]

ArchSpec = Union[str, Mapping[str, str], Callable[[dict], "tuple[str, dict]"]]
KeyMap = Union[None, str, Mapping[str, str], Callable[[str], str]]

_CKPT_RE = re.compile(r"^checkpoint_(\d+)$")
_CKPT_FILES = ("checkpoints", "checkpoint", "model_state_dict", "model.pt", "state_dict.pt")
_RAY_KEYS = {
    "training_iteration", "time_this_iter_s", "time_total_s", "timestamp", "time_since_restore",
    "timesteps_since_restore", "iterations_since_restore", "timesteps_total", "episodes_total",
    "pid", "node_ip", "hostname", "date", "trial_id", "experiment_id", "done", "episodes_this_iter",
    "timesteps_this_iter", "experiment_tag", "should_checkpoint", "warmup_time", "checkpoint_dir_name",
}
_RENAME = {"train_accuracy": "train_acc", "test_accuracy": "test_acc", "val_accuracy": "val_acc",
           "validation_acc": "val_acc", "validation_loss": "val_loss"}


def read_result_json(path: Path) -> list[dict]:
    """The JSON lines of a Ray Tune ``result.json`` (errors name the line)."""
    path = Path(path)
    if not path.exists():
        raise ZooFormatError("file not found", path=path)
    try:
        text = read_text(path, what="Ray Tune result.json")
    except WeightspaceError as e:
        raise ZooFormatError(e.message, path=path) from None
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ZooFormatError(f"line {i} is not valid JSON ({e.msg})", path=path, field=f"line {i}") from None
        if not isinstance(row, dict):
            raise ZooFormatError(f"line {i} is a JSON {type(row).__name__}, expected an object", path=path,
                                 field=f"line {i}")
        rows.append(row)
    return rows


def _read_params(path: Path) -> dict:
    try:
        params = read_json(path, what="Ray Tune params.json")
    except WeightspaceError as e:
        raise ZooFormatError(e.message, path=path) from None
    if not isinstance(params, dict):
        raise ZooFormatError(f"expected a JSON object, got a {type(params).__name__}", path=path)
    return params


def _resolve_arch(arch: ArchSpec, params: dict, model_kwargs: Mapping[str, Any] | None, ppath: Path):
    if callable(arch) and not isinstance(arch, str):
        res = arch(params)
        if not (isinstance(res, tuple) and len(res) == 2 and isinstance(res[0], str) and isinstance(res[1], Mapping)):
            raise ConfigError(f"the arch callable must return (name, kwargs), got {res!r}"[:200], field="arch")
        name, kwargs = res[0], dict(res[1])
    elif isinstance(arch, Mapping):
        mtype = params.get("model::type")
        if mtype is None:
            raise ZooFormatError("missing field 'model::type'", path=ppath, field="model::type")
        if mtype not in arch:
            raise ZooFormatError(
                f"unknown architecture {mtype!r}; the arch mapping knows {sorted(arch)}",
                path=ppath, field="model::type",
            )
        name, kwargs = arch[mtype], {}
    else:
        name, kwargs = arch, {}
    kwargs.update(model_kwargs or {})
    return resolve_arch(name, kwargs, path=ppath, field="model::type")


def _apply_key_map(sd: dict, key_map: KeyMap, arch: str, kwargs: dict, fpath: Path) -> dict:
    if key_map is None:
        return sd
    if key_map == "by_order":
        ref = reference_state_dict(arch, kwargs, path=fpath)
        if len(ref) != len(sd):
            raise ZooFormatError(
                f"has {len(sd)} tensors but {arch!r} has {len(ref)}; cannot map by order",
                path=fpath, field="key_map",
            )
        return {new: v for new, v in zip(ref, sd.values())}
    if isinstance(key_map, Mapping):
        return {key_map.get(k, k): v for k, v in sd.items()}
    if callable(key_map):
        return {key_map(k): v for k, v in sd.items()}
    raise ConfigError(f"key_map must be None, 'by_order', a mapping or a callable, got {key_map!r}", field="key_map")


def _checkpoint_file(d: Path) -> Path:
    for name in _CKPT_FILES:
        if (d / name).is_file():
            return d / name
    pts = sorted(d.glob("*.pt")) + sorted(d.glob("*.pth")) + sorted(d.glob("*.safetensors"))
    pts = [p for p in pts if p.is_file()]
    if pts:
        return pts[0]
    raise ZooFormatError(
        f"no state dict file found (looked for {list(_CKPT_FILES)}, *.pt, *.pth and *.safetensors)", path=d
    )


def _metrics_for(iteration: int, rows: list[dict]) -> dict:
    row = None
    if any("training_iteration" in r for r in rows):
        row = next((r for r in rows if r.get("training_iteration") == iteration), None)
    elif 1 <= iteration <= len(rows):
        row = rows[iteration - 1]
    if row is None:
        return {}
    m = {}
    for k, v in row.items():
        if k in _RAY_KEYS or k.startswith("config") or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        m[_RENAME.get(k, k)] = float(v)
    return add_gaps(m)


def _check_options(arch: Any, model_kwargs: Any, key_map: Any, epochs: Any, limit: Any) -> None:
    if not (isinstance(arch, (str, Mapping, ModelRef)) or callable(arch)):
        raise ConfigError(f"arch must be a name or model reference, a mapping or a callable, got {arch!r}",
                          field="arch")
    if model_kwargs is not None and not isinstance(model_kwargs, Mapping):
        raise ConfigError(f"model_kwargs must be a mapping, got {type(model_kwargs).__name__}", field="model_kwargs")
    if not (key_map is None or key_map == "by_order" or isinstance(key_map, Mapping)
            or (callable(key_map) and not isinstance(key_map, str))):
        raise ConfigError(f"key_map must be None, 'by_order', a mapping or a callable, got {key_map!r}",
                          field="key_map")
    if isinstance(epochs, str):
        if epochs not in ("all", "final"):
            raise ConfigError(f"epochs must be 'all', 'final' or a list of iterations, got {epochs!r}",
                              field="epochs")
    else:
        try:
            vals = list(epochs)
        except TypeError:
            raise ConfigError(f"epochs must be 'all', 'final' or a list of iterations, got {epochs!r}",
                              field="epochs") from None
        if not vals:
            raise ConfigError("epochs is an empty list; give at least one iteration", field="epochs")
        for v in vals:
            check_count(v, "epochs", min=0, nullable=False)
    check_limit(limit)


def load_model_zoos(
    path: str | Path,
    *,
    arch: ArchSpec,
    model_kwargs: Mapping[str, Any] | None = None,
    key_map: KeyMap = None,
    epochs: str | Sequence[int] = "all",
    limit: int | None = None,
) -> Iterator[ImportedMember]:
    """Read a model-zoos style Ray Tune directory as :class:`ImportedMember` s.

    Args:
        path: the experiment directory (its sub-directories holding
            ``params.json`` are the trials), or one trial directory.
        arch: the architecture: a registered name or any model reference
            (``"pkg.mod:factory"``, ``"hf:DIR"``, a
            :class:`~weightspace.arch.ModelRef`); or a mapping from
            ``params["model::type"]`` to one; or ``params -> (name, kwargs)``.
        model_kwargs: extra architecture kwargs (override those from ``arch``).
        key_map: how checkpoint tensor names become the architecture's:
            ``None`` (identical), ``"by_order"`` (positional, shapes checked),
            a mapping ``{old: new}`` or a callable ``old -> new``.
        epochs: ``"all"`` checkpoints, ``"final"`` (highest), or a list of iterations.
        limit: stop after this many members (>= 1).

    Raises:
        ZooFormatError: missing or malformed ``params.json`` / ``result.json``
            / checkpoint file (truncated, corrupt, not a state dict), unknown
            architecture, tensors that do not fit, or no checkpoint matching
            ``epochs``; the message names the file.
        ConfigError: an option has the wrong type or range (names it).
    """
    _check_options(arch, model_kwargs, key_map, epochs, limit)
    path = Path(path).expanduser()
    if not path.exists():
        raise ZooFormatError("model zoo directory not found", path=path)
    if not path.is_dir():
        raise ZooFormatError("is a file; expected a model zoo directory (Ray Tune trial directories)", path=path)
    trials = [path] if (path / "params.json").is_file() else sorted(
        d for d in path.iterdir() if d.is_dir() and (d / "params.json").is_file()
    )
    if not trials:
        candidates = [d for d in path.iterdir() if d.is_dir() and any(d.glob("checkpoint_*"))]
        if candidates:
            raise ZooFormatError("missing file params.json", path=candidates[0] / "params.json", field="params.json")
        raise ZooFormatError("no trial directories (with params.json) found", path=path)
    count = 0
    for index, trial in enumerate(trials):
        ppath = trial / "params.json"
        params = _read_params(ppath)
        rows = read_result_json(trial / "result.json")
        name, kwargs = _resolve_arch(arch, params, model_kwargs, ppath)
        ck_dirs = sorted(
            (int(m.group(1)), d) for d in trial.iterdir()
            if d.is_dir() and (m := _CKPT_RE.match(d.name))
        )
        if not ck_dirs:
            raise ZooFormatError("no checkpoint_* directories", path=trial, field="checkpoint_*")
        if epochs == "final":
            ck_dirs = ck_dirs[-1:]
        elif epochs != "all":
            wanted = {int(e) for e in epochs}
            ck_dirs = [c for c in ck_dirs if c[0] in wanted]
        cks = []
        for it, d in ck_dirs:
            fpath = _checkpoint_file(d)
            sd = load_weights_file(fpath)
            sd = _apply_key_map(sd, key_map, name, kwargs, fpath)
            check_state_dict(name, kwargs, sd, path=fpath)
            cks.append(CheckpointResult(epoch=it, step=it, metrics=_metrics_for(it, rows),
                                        state_dict={k: v.detach().clone() for k, v in sd.items()}))
        if not cks:
            continue
        seed = params.get("seed")
        yield ImportedMember(
            member_id=f"{index:06d}-{short_hash(trial.name)}",
            index=index,
            config={"arch": name, "model": kwargs, "hparams": params},
            checkpoints=cks,
            seed=int(seed) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else None,
            extra={"trial": trial.name},
        )
        count += 1
        if limit is not None and count >= limit:
            return
    if count == 0:
        raise ZooFormatError(
            f"none of the {len(trials)} trial(s) has a checkpoint at iterations {sorted(int(e) for e in epochs)}",
            path=path, field="epochs",
        )


def import_model_zoos(path: str | Path, out: str | Path, *, progress: bool = True, **options: Any):
    """Convert a model-zoos style directory into a weightspace zoo at ``out``.
    Returns the :class:`~zoo.store.Zoo`; ``options`` (``arch`` required,
    ``model_kwargs``, ``key_map``, ``epochs``, ``limit``) as in
    :func:`load_model_zoos`.

    ``out`` resumes only an import of the same directory with the same
    options (callables compare by qualified name); otherwise a
    :class:`ZooFormatError` names the option and both values."""
    opts = loader_options(load_model_zoos, path, options)
    _check_options(**opts)
    epochs = opts["epochs"]
    identity = {**opts, "model_kwargs": dict(opts["model_kwargs"] or {}),
                "epochs": epochs if isinstance(epochs, str) else [int(e) for e in epochs]}
    return import_source(load_model_zoos, "model_zoos", path, out, opts, identity=identity, progress=progress)
