"""Zoo recipes: what to train, on what, with which hyperparameter search.

A recipe is a YAML (or TOML) file or the equivalent :class:`Recipe` object::

    name: digits_cnn_small
    arch: cnn_small                 # a registered name, or a model reference (below)
    model: {width: 16, depth: 3}    # fixed architecture kwargs
    data: {name: digits, split_seed: 0}
    train: {epochs: 8, batch_size: 32, optimizer: adam, lr: 0.003}
    checkpoints: [0, 1, 2, 4, 8]    # epochs to keep (0 = init); the final epoch is always kept
    search:
      method: random                # or grid
      num_members: 100              # random only
      seed: 0                       # sampling seed
      space:
        model.activation: [relu, tanh, gelu]       # a list = choose one
        train.lr: {log_uniform: [0.0003, 0.01]}
        train.weight_decay: {choice: [0.0, 0.0001, 0.001]}
        data.train_fraction: {uniform: [0.5, 1.0]}

Search-space keys are ``model.<kwarg>``, ``data.<option>``, ``train.<option>``
or ``seed``. Values are a list (choices), or a one-key mapping:
``choice``/``grid`` (list), ``uniform`` / ``log_uniform`` ([low, high]),
``int_uniform`` ([low, high] inclusive), ``range`` ([start, stop) or
[start, stop, step], expanded to a list).

``method: grid`` takes the Cartesian product of the (list-valued) space and
repeats it for each of ``seeds`` (an int n = seeds 0..n-1, or a list).
``method: random`` draws member ``i``'s values from
``numpy.random.default_rng([seed, i])``, so member ``i`` does not depend on
``num_members`` (a zoo can be grown by raising it) and its training seed is
``base_seed + i``.

``arch`` may also name any model reference, in the forms of the merge YAML
(:meth:`weightspace.arch.ModelRef.parse`): ``"mypkg.models:make_mlp"`` or
``{factory: mypkg.models:make_mlp, kwargs: {width: 16}}`` (the kwargs join
``model``), or a local Hugging Face directory ``"hf:runs/vit-tiny"`` /
``{hf: runs/vit-tiny}`` (relative to the recipe file; only the architecture
is taken: members start from the seeded initialisation built from its
``config.json``, not from its weights). The recipe stores the reference as
one string (``ModelRef.name``: the factory string, ``hf:/absolute/dir``).

Each member gets a full, explicit config (``arch``, ``model``, ``data``,
``train``, ``seed``, ``checkpoints``) and a ``member_id`` derived from its
index and the config hash, which is what resuming keys on.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from weightspace.arch import HFCheckpoint, ModelRef, get_model_info
from weightspace.errors import ConfigError, WeightspaceError
from weightspace.io import Field, check_type, did_you_mean
from weightspace.io import validate as _validate_fields
from zoo.datasets import list_datasets
from zoo.errors import RecipeError, read_text_as

__all__ = [
    "Recipe",
    "MemberSpec",
    "load_recipe",
    "list_recipes",
    "recipes_dir",
    "TRAIN_DEFAULTS",
    "canonical_json",
    "config_hash",
    "MAX_MEMBERS",
]

#: Training options and their defaults (a recipe may override any of them).
TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 32,
    "optimizer": "adam",  # adam | adamw | sgd | rmsprop
    "lr": 1e-3,
    "momentum": 0.9,  # sgd / rmsprop
    "weight_decay": 0.0,
    "init_scale": 1.0,  # every parameter is multiplied by this after init
    "lr_schedule": "constant",  # constant | cosine
    "grad_clip": None,  # max global grad norm, or None
    "eval_batch_size": 1024,
}

#: Most members a recipe may expand to (grid size, ``num_members``, a
#: ``range``): larger numbers are a typo, and expanding them would hang.
MAX_MEMBERS = 1_000_000

#: Types and ranges of the training options (``lr``, ``init_scale`` and
#: ``grad_clip`` must moreover be > 0). The option names are not checked
#: here: a wrong optimizer fails the member that uses it, naming it.
_TRAIN_FIELDS: dict[str, Field] = {
    "epochs": Field(int, min=1),
    "batch_size": Field(int, min=1),
    "optimizer": Field(str),
    "lr": Field(float, min=0.0),
    "momentum": Field(float, min=0.0),
    "weight_decay": Field(float, min=0.0),
    "init_scale": Field(float, min=0.0),
    "lr_schedule": Field(str),
    "grad_clip": Field(float, min=0.0, nullable=True),
    "eval_batch_size": Field(int, min=1),
}
_STRICTLY_POSITIVE = {"lr", "init_scale", "grad_clip"}
#: Data options every dataset understands (the others are checked by the dataset).
_DATA_FIELDS: dict[str, Field] = {
    "train_fraction": Field(float, min=0.0, max=1.0),  # and > 0
    "label_noise": Field(float, min=0.0, max=1.0),
    "split_seed": Field(int, min=0),
}
#: Architecture arguments that are counts or sizes: when the factory's default
#: is a positive int (or a tuple of them), the recipe's value must be too.
_COUNT_KWARGS = {
    "in_channels", "num_classes", "width", "depth", "kernel_size", "length", "image_size", "in_features",
    "out_features", "hidden", "vocab_size", "seq_len", "dim", "num_heads", "patch_size",
}

_TOP_KEYS = {"name", "description", "arch", "model", "data", "train", "checkpoints", "search"}
_SEARCH_KEYS = {"method", "num_members", "seed", "seeds", "base_seed", "space"}
_DIST_KEYS = {"choice", "grid", "uniform", "log_uniform", "int_uniform", "range"}


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace) used for hashing."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (tuple, set)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {o!r}")


def config_hash(config: Mapping[str, Any]) -> str:
    """sha256 hex digest of the canonical JSON of ``config``."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


def recipes_dir() -> Path:
    """Directory of the recipes shipped with the package."""
    return Path(__file__).with_name("recipes")


def list_recipes() -> list[str]:
    """Names of the shipped recipes (usable wherever a recipe path is)."""
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


@dataclass(frozen=True)
class MemberSpec:
    """One member of a zoo, fully specified.

    Attributes:
        index: position in the recipe's member order.
        member_id: ``f"{index:05d}-{config_hash[:10]}"``; stable across runs.
        seed: training seed (init, data order, subset, label noise, dropout).
        config: ``{"arch", "model", "data", "train", "seed", "checkpoints"}``.
        config_hash: sha256 of the canonical config.
    """

    index: int
    member_id: str
    seed: int
    config: dict
    config_hash: str

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "member_id": self.member_id,
            "seed": self.seed,
            "config": self.config,
            "config_hash": self.config_hash,
        }


@dataclass(frozen=True)
class Recipe:
    """A zoo recipe (see the module docstring for the format).

    Build one with :meth:`from_dict`, :meth:`from_file` or :func:`load_recipe`;
    the constructor only stores values (validation happens in ``from_dict``).
    """

    name: str
    arch: str
    model: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    checkpoints: Any = "final"
    search: dict = field(default_factory=dict)
    description: str = ""
    source: str = "<dict>"

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "<dict>") -> "Recipe":
        """Validate ``d`` and build a recipe. Errors name ``source`` and the field."""
        if not isinstance(d, Mapping):
            raise RecipeError(f"a recipe must be a mapping, got {type(d).__name__}", path=source)
        for key in d:
            if key not in _TOP_KEYS:
                raise RecipeError(
                    f"unknown top-level key {key!r}{did_you_mean(str(key), sorted(_TOP_KEYS))} "
                    f"(allowed: {', '.join(sorted(_TOP_KEYS))})",
                    path=source, field=str(key),
                )
        for req in ("name", "arch"):
            if req not in d:
                raise RecipeError(f"missing required field {req!r}", path=source, field=req)
            if req == "arch" and isinstance(d[req], Mapping):
                continue  # {factory: ..., kwargs: ...} or {hf: DIR}: read by _arch_ref
            if not isinstance(d[req], str) or not d[req].strip():
                raise RecipeError(f"must be a non-empty string, got {d[req]!r}", path=source, field=req)
        for sect in ("model", "data", "train", "search"):
            if sect in d and d[sect] is not None and not isinstance(d[sect], Mapping):
                raise RecipeError(f"must be a mapping, got {type(d[sect]).__name__}", path=source, field=sect)
        arch, model = _arch_ref(d["arch"], dict(d.get("model") or {}), source)
        r = cls(
            name=str(d["name"]),
            arch=arch,
            model=copy.deepcopy(model),
            data=copy.deepcopy(dict(d.get("data") or {})),
            train=copy.deepcopy(dict(d.get("train") or {})),
            checkpoints=copy.deepcopy(d.get("checkpoints", "final")),
            search=copy.deepcopy(dict(d.get("search") or {})),
            description=str(d.get("description", "")),
            source=source,
        )
        r.validate()
        return r

    @classmethod
    def from_file(cls, path: str | Path) -> "Recipe":
        """Read a ``.yaml``/``.yml`` or ``.toml`` recipe."""
        path = Path(path).expanduser()
        text = read_text_as(RecipeError, path, what="recipe file (.yaml or .toml)", missing="recipe file not found")
        if path.suffix == ".toml":
            import tomllib

            try:
                d = tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:
                raise RecipeError(f"invalid TOML: {e}", path=path) from None
        else:
            import yaml

            try:
                d = yaml.safe_load(text)
            except yaml.YAMLError as e:
                mark = getattr(e, "problem_mark", None)
                where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
                problem = getattr(e, "problem", None) or str(e).splitlines()[0]
                raise RecipeError(f"invalid YAML{where}: {problem}", path=path) from None
        return cls.from_dict(d, source=str(path))

    def to_dict(self) -> dict:
        """Plain dict (round-trips through :meth:`from_dict`)."""
        return {
            "name": self.name,
            "description": self.description,
            "arch": self.arch,
            "model": copy.deepcopy(self.model),
            "data": copy.deepcopy(self.data),
            "train": copy.deepcopy(self.train),
            "checkpoints": copy.deepcopy(self.checkpoints),
            "search": copy.deepcopy(self.search),
        }

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **changes: Any) -> "Recipe":
        """A new validated recipe with top-level fields replaced."""
        d = self.to_dict()
        d.update(changes)
        return Recipe.from_dict(d, source=self.source)

    def with_members(self, num_members: int) -> "Recipe":
        """The same random-search recipe with ``num_members`` members."""
        s = dict(self.search)
        s["num_members"] = int(num_members)
        return self.replace(search=s)

    def hash(self, *, ignore_size: bool = False) -> str:
        """sha256 of the recipe; ``ignore_size`` drops ``search.num_members``
        (random members do not depend on it, so a zoo may grow)."""
        d = self.to_dict()
        d.pop("description", None)
        if ignore_size and self.method == "random":
            d["search"].pop("num_members", None)
        return config_hash(d)

    # ------------------------------------------------------------------ validation

    @property
    def method(self) -> str:
        default = "random" if "num_members" in self.search else "grid"
        return str(self.search.get("method", default))

    def _err(self, message: str, field: str | None = None) -> RecipeError:
        return RecipeError(message, path=self.source, field=field)

    def validate(self) -> None:
        """Check every field (types, ranges, counts, search space); raise
        :class:`RecipeError` naming :attr:`source` and the dotted field."""
        try:
            ref = ModelRef.parse(self.arch)
            if ref.kind == "registry":
                get_model_info(self.arch)
            elif ref.kind == "hf":
                HFCheckpoint.open(ref.target)  # config.json and weights present, transformers reads the config
        except KeyError as e:
            raise self._err(e.args[0], "arch") from None
        except WeightspaceError as e:
            raise self._err(str(e), "arch") from None
        self._validate_search()
        if "name" not in self.data:
            raise self._err(f"field 'data.name' is required (one of {list_datasets()})", "data.name")
        if self.data["name"] not in list_datasets():
            raise self._err(f"unknown dataset {self.data['name']!r}; registered: {list_datasets()}", "data.name")
        for key in self.train:
            if key not in TRAIN_DEFAULTS:
                raise self._err(
                    f"unknown key {key!r} in 'train'{did_you_mean(str(key), list(TRAIN_DEFAULTS))}; "
                    f"allowed: {sorted(TRAIN_DEFAULTS)}",
                    f"train.{key}",
                )
        for key, value in self.train.items():
            self._check_value(f"train.{key}", value, f"train.{key}")
        for key, value in self.data.items():
            if key in _DATA_FIELDS:
                self._check_value(f"data.{key}", value, f"data.{key}")
        space = self.search.get("space") or {}
        if not isinstance(space, Mapping):
            raise self._err(f"must be a mapping, got {type(space).__name__}", "search.space")
        for key, spec in space.items():
            self._check_space_entry(key, spec)
        # Architecture kwargs: the fixed ones plus every model.* search key must be accepted.
        model_keys = dict(self.model)
        for key in space:
            if key.startswith("model."):
                model_keys[key[len("model.") :]] = None
        try:
            ref.resolve_kwargs(**model_keys)
        except TypeError as e:
            raise self._err(str(e), "model") from None
        except WeightspaceError as e:  # a factory that cannot be imported
            raise self._err(str(e), "arch") from None
        for key, value in self.model.items():
            self._check_value(f"model.{key}", value, f"model.{key}")
        for key in space:
            if key.startswith("train.") and key[len("train.") :] not in TRAIN_DEFAULTS:
                sub = key[len("train.") :]
                raise self._err(
                    f"unknown training option {sub!r}{did_you_mean(sub, list(TRAIN_DEFAULTS))}; "
                    f"allowed: {sorted(TRAIN_DEFAULTS)}",
                    f"search.space.{key}",
                )
        for key, spec in space.items():
            for value, where in self._space_candidates(key, spec):
                self._check_value(key, value, where)
        for epochs in self._epochs_for_validation():
            self._checkpoint_epochs(epochs)  # raises on malformed
        if self.method == "grid":
            for key, spec in space.items():
                if isinstance(spec, Mapping) and next(iter(spec)) in ("uniform", "log_uniform", "int_uniform"):
                    raise self._err(
                        f"grid search needs a list of values, got a {next(iter(spec))} distribution",
                        f"search.space.{key}",
                    )
            size = self._grid_size(space)
            if size > MAX_MEMBERS:
                raise self._err(
                    f"the grid expands to {size} members (more than {MAX_MEMBERS}); shrink the search space",
                    "search.space",
                )

    def _validate_search(self) -> None:
        s = self.search
        for key in s:
            if key not in _SEARCH_KEYS:
                raise self._err(
                    f"unknown key {key!r} in 'search'{did_you_mean(str(key), sorted(_SEARCH_KEYS))}; "
                    f"allowed: {sorted(_SEARCH_KEYS)}",
                    f"search.{key}",
                )
        if self.method not in ("grid", "random"):
            raise self._err(f"must be 'grid' or 'random', got {self.method!r}", "search.method")
        if self.method == "random":
            if "num_members" not in s:
                raise self._err("random search needs num_members (a positive int)", "search.num_members")
            n = s["num_members"]
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise self._err(f"num_members must be a positive int for random search, got {n!r}",
                                "search.num_members")
            if n > MAX_MEMBERS:
                raise self._err(f"num_members must be at most {MAX_MEMBERS}, got {n}", "search.num_members")
        for key in ("seed", "base_seed"):
            if key in s:
                v = s[key]
                if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                    raise self._err(f"must be a non-negative int, got {v!r}", f"search.{key}")
        if "seeds" in s:
            seeds = s["seeds"]
            if isinstance(seeds, int) and not isinstance(seeds, bool):
                if not 1 <= seeds <= MAX_MEMBERS:
                    raise self._err(
                        f"must be a positive int (seeds 0..n-1) or a non-empty list of seeds, got {seeds!r}",
                        "search.seeds",
                    )
            elif isinstance(seeds, list) and seeds:
                for i, v in enumerate(seeds):
                    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                        raise self._err(f"seeds must be non-negative ints, got {v!r}", f"search.seeds[{i}]")
                dup = sorted({v for v in seeds if seeds.count(v) > 1})
                if dup:
                    raise self._err(f"repeated seed(s) {dup} would train identical members", "search.seeds")
            else:
                raise self._err(
                    f"must be a positive int (seeds 0..n-1) or a non-empty list of seeds, got {seeds!r}",
                    "search.seeds",
                )

    def _check_value(self, key: str, value: Any, where: str) -> None:
        """Check one value of option ``key`` (``train.lr``, ``data.label_noise``,
        ``model.width``, ``seed``) wherever it comes from (``where``)."""
        section, _, sub = key.partition(".")
        try:
            if key == "seed":
                check_type(value, int, path=self.source, field=where)
                if value < 0:
                    raise self._err(f"seeds must be non-negative, got {value!r}", where)
            elif section == "train" and sub in _TRAIN_FIELDS:
                _validate_fields({sub: value}, {sub: _TRAIN_FIELDS[sub]}, path=self.source)
                if sub in _STRICTLY_POSITIVE and value is not None and value <= 0:
                    raise self._err(f"must be > 0, got {value!r}", where)
            elif section == "data" and sub in _DATA_FIELDS:
                _validate_fields({sub: value}, {sub: _DATA_FIELDS[sub]}, path=self.source)
                if sub == "train_fraction" and value <= 0:
                    raise self._err(f"must be in (0, 1], got {value!r}", where)
            elif section == "model":
                self._check_model_value(sub, value, where)
        except RecipeError:
            raise
        except ConfigError as e:
            raise self._err(e.message, where) from None

    def _model_defaults(self) -> dict:
        return ModelRef.parse(self.arch).resolve_kwargs()

    def _check_model_value(self, name: str, value: Any, where: str) -> None:
        if name == "dropout" and isinstance(value, (int, float)) and not isinstance(value, bool):
            if not 0 <= value < 1:
                raise self._err(f"dropout must be in [0, 1), got {value!r}", where)
            return
        if name not in _COUNT_KWARGS:
            return
        default = self._model_defaults().get(name)
        positive_int = (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1)
        if positive_int(default):
            if not positive_int(value):
                raise self._err(f"{name} is a count and must be a positive int, got {value!r}", where)
        elif isinstance(default, (tuple, list)) and all(positive_int(v) for v in default):
            if not isinstance(value, (list, tuple)) or not all(positive_int(v) for v in value):
                raise self._err(f"{name} must be a list of positive ints, got {value!r}", where)

    def _space_candidates(self, key: str, spec: Any) -> list[tuple[Any, str]]:
        """The values (or bounds) a search-space entry can give, with where each is."""
        where = f"search.space.{key}"
        if isinstance(spec, list):
            return [(v, f"{where}[{i}]") for i, v in enumerate(spec)]
        kind, arg = next(iter(spec.items()))
        if kind in ("choice", "grid"):
            return [(v, f"{where}.{kind}[{i}]") for i, v in enumerate(arg)]
        if kind == "range":
            return [(v, f"{where}.range") for v in range(*arg)]
        if kind == "int_uniform":
            return [(arg[0], f"{where}.int_uniform[0]"), (arg[1], f"{where}.int_uniform[1]")]
        # uniform / log_uniform: continuous; an integer option cannot take them
        if key == "seed" or self._is_int_option(key):
            raise self._err(f"{kind} gives non-integer values; use int_uniform or a list", where)
        return [(float(arg[0]), f"{where}.{kind}[0]"), (float(arg[1]), f"{where}.{kind}[1]")]

    def _is_int_option(self, key: str) -> bool:
        section, _, sub = key.partition(".")
        if section == "train" and sub in _TRAIN_FIELDS:
            return _TRAIN_FIELDS[sub].type is int
        if section == "data" and sub in _DATA_FIELDS:
            return _DATA_FIELDS[sub].type is int
        if section == "model" and sub in _COUNT_KWARGS:
            default = self._model_defaults().get(sub)
            return isinstance(default, int) and not isinstance(default, bool)
        return False

    def _grid_size(self, space: Mapping[str, Any]) -> int:
        n = 1
        for spec in space.values():
            n *= len(_grid_values(spec))
            if n > MAX_MEMBERS:
                return n
        if "seed" not in space:
            seeds = self.search.get("seeds", 1)
            n *= seeds if isinstance(seeds, int) else len(seeds)
        return n

    def _epochs_for_validation(self) -> list[int]:
        """The fewest epochs a member may train (checkpoints must lie within)."""
        epochs = int(self.train.get("epochs", TRAIN_DEFAULTS["epochs"]))
        spec = (self.search.get("space") or {}).get("train.epochs")
        if spec is not None:
            candidates = [v for v, _ in self._space_candidates("train.epochs", spec)]
            return [min(int(v) for v in candidates)]
        return [epochs]

    def _check_space_entry(self, key: str, spec: Any) -> None:
        where = f"search.space.{key}"
        if not isinstance(key, str) or (key != "seed" and not key.startswith(("model.", "data.", "train."))):
            raise self._err(
                f"search.space key {key!r} must start with 'model.', 'data.' or 'train.' (or be 'seed')", where
            )
        if key == "data.name":
            raise self._err("search.space cannot vary 'data.name'", where)
        if isinstance(spec, list):
            if not spec:
                raise self._err("empty list", where)
            return
        if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in _DIST_KEYS:
            raise self._err(
                f"expected a list or a one-key mapping with one of {sorted(_DIST_KEYS)}, got {spec!r}", where
            )
        kind, arg = next(iter(spec.items()))
        if kind in ("choice", "grid"):
            if not isinstance(arg, list) or not arg:
                raise self._err(f"{kind} needs a non-empty list", where)
        elif kind == "range":
            if not isinstance(arg, list) or len(arg) not in (2, 3) or not all(
                isinstance(a, int) and not isinstance(a, bool) for a in arg
            ):
                raise self._err(f"range needs integers [start, stop(, step)], got {arg!r}", where)
            if len(arg) == 3 and arg[2] == 0:
                raise self._err("range step must not be 0", where)
            n = len(range(*arg))
            if n == 0:
                raise self._err(f"range {arg} is empty", where)
            if n > MAX_MEMBERS:
                raise self._err(f"range {arg} has {n} values (more than {MAX_MEMBERS})", where)
        else:
            if not isinstance(arg, list) or len(arg) != 2 or not all(
                isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) for a in arg
            ):
                raise self._err(f"{kind} needs finite numbers [low, high], got {arg!r}", where)
            lo, hi = arg
            if kind == "int_uniform" and not all(isinstance(a, int) for a in arg):
                raise self._err(f"int_uniform needs integer bounds, got {arg}", where)
            if lo > hi or (kind == "log_uniform" and lo <= 0):
                raise self._err(f"bad bounds {arg} for {kind}", where)

    def _checkpoint_epochs(self, epochs: int) -> list[int]:
        """Sorted epochs to keep for a member trained ``epochs`` epochs."""
        ck = self.checkpoints
        if ck in (None, "final"):
            out = {epochs}
        elif ck == "all":
            out = set(range(0, epochs + 1))
        elif isinstance(ck, Mapping):
            for key in ck:
                if key not in ("every", "include_init"):
                    raise self._err(
                        f"unknown key {key!r}{did_you_mean(str(key), ['every', 'include_init'])}; "
                        "allowed: every, include_init",
                        f"checkpoints.{key}",
                    )
            every = ck.get("every")
            if not isinstance(every, int) or isinstance(every, bool) or every <= 0:
                raise self._err(f"checkpoints.every must be a positive int, got {every!r}", "checkpoints.every")
            include_init = ck.get("include_init", True)
            if not isinstance(include_init, bool):
                raise self._err(f"must be true or false, got {include_init!r}", "checkpoints.include_init")
            out = set(range(0 if include_init else every, epochs + 1, every))
            out.add(epochs)
        elif isinstance(ck, list) and all(isinstance(e, int) and not isinstance(e, bool) for e in ck):
            bad = [e for e in ck if e < 0 or e > epochs]
            if bad:
                raise self._err(f"checkpoints {bad} outside [0, epochs={epochs}]", "checkpoints")
            out = set(ck) | {epochs}
        else:
            raise self._err(
                f"checkpoints must be 'final', 'all', a list of epochs or {{every: k}}, got {ck!r}", "checkpoints"
            )
        return sorted(out)

    # ------------------------------------------------------------------ expansion

    def members(self) -> list[MemberSpec]:
        """All members, in order, with fully resolved configs."""
        space = dict(self.search.get("space") or {})
        base_seed = int(self.search.get("base_seed", 0))
        if self.method == "grid":
            keys = list(space)
            values = [_grid_values(space[k]) for k in keys]
            seeds = self.search.get("seeds", 1)
            seed_list = list(range(int(seeds))) if isinstance(seeds, int) else [int(s) for s in seeds]
            if "seed" in space:
                seed_list = [None]
            assignments = []
            for combo in itertools.product(*values):
                for s in seed_list:
                    a = dict(zip(keys, combo))
                    if s is not None:
                        a["seed"] = base_seed + s
                    assignments.append(a)
        else:
            n = int(self.search["num_members"])
            sample_seed = int(self.search.get("seed", 0))
            assignments = []
            for i in range(n):
                rng = np.random.default_rng([sample_seed, i])
                a = {k: _sample(space[k], rng) for k in sorted(space)}
                a.setdefault("seed", base_seed + i)
                assignments.append(a)
        return [self._member(i, a) for i, a in enumerate(assignments)]

    def _member(self, index: int, assignment: dict) -> MemberSpec:
        model = dict(self.model)
        data = dict(self.data)
        train = dict(TRAIN_DEFAULTS)
        train.update(self.train)
        seed = int(assignment.get("seed", 0))
        for key, value in assignment.items():
            if key == "seed":
                continue
            section, sub = key.split(".", 1)
            {"model": model, "data": data, "train": train}[section][sub] = _plain(value)

        if ModelRef.parse(self.arch).kind == "registry":  # a factory's defaults need not be JSON: kept as given
            model = get_model_info(self.arch).resolve_kwargs(**model)
        model = {k: _plain(v) for k, v in model.items()}
        config = {
            "arch": self.arch,
            "model": model,
            "data": data,
            "train": train,
            "seed": seed,
            "checkpoints": self._checkpoint_epochs(int(train["epochs"])),
        }
        h = config_hash(config)
        return MemberSpec(index, f"{index:05d}-{h[:10]}", seed, config, h)


def _plain(v: Any) -> Any:
    """numpy scalars -> Python; tuples -> lists (configs must be JSON)."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _grid_values(spec: Any) -> list:
    if isinstance(spec, list):
        return spec
    kind, arg = next(iter(spec.items()))
    if kind in ("choice", "grid"):
        return list(arg)
    if kind == "range":
        return list(range(*[int(a) for a in arg]))
    raise AssertionError(kind)  # validated earlier


def _sample(spec: Any, rng: np.random.Generator) -> Any:
    if isinstance(spec, list):
        return spec[int(rng.integers(len(spec)))]
    kind, arg = next(iter(spec.items()))
    if kind in ("choice", "grid"):
        return arg[int(rng.integers(len(arg)))]
    if kind == "range":
        vals = list(range(*[int(a) for a in arg]))
        return vals[int(rng.integers(len(vals)))]
    lo, hi = arg
    if kind == "uniform":
        return float(rng.uniform(lo, hi))
    if kind == "log_uniform":
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    if kind == "int_uniform":
        return int(rng.integers(int(lo), int(hi) + 1))
    raise AssertionError(kind)


def load_recipe(recipe: "str | Path | Mapping | Recipe") -> Recipe:
    """A :class:`Recipe` from an object, a dict, a file path, or the name of a
    shipped recipe (``list_recipes()``)."""
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, Mapping):
        return Recipe.from_dict(recipe)
    p = Path(recipe)
    if p.is_file():
        return Recipe.from_file(p)
    shipped = recipes_dir() / f"{recipe}.yaml"
    if shipped.is_file():
        return Recipe.from_file(shipped)
    raise RecipeError(
        f"{recipe}: no such recipe file, and not a shipped recipe (shipped: {', '.join(list_recipes())})"
    )


def _arch_ref(value: Any, model: dict, source: str) -> tuple[str, dict]:
    """A recipe's ``arch`` (a registered name or any model reference, read by
    :meth:`ModelRef.parse` as the merge YAML's ``model:`` is; relative
    Hugging Face directories against the recipe's folder) as
    ``(one string, model kwargs)``: a factory's ``kwargs`` join ``model``."""
    root = Path(source).parent if source != "<dict>" else None
    try:
        ref = ModelRef.parse(value, root=root)
    except WeightspaceError as e:
        raise RecipeError(e.message, path=source, field="arch" if e.field is None else f"arch.{e.field}") from None
    if ref.kind == "registry":
        return str(ref.target), model
    both = sorted(set(ref.kwargs) & set(model))
    if both:
        raise RecipeError(f"argument {both[0]!r} is given both in arch.kwargs and in model; give it once",
                          path=source, field=f"model.{both[0]}")
    return ref.name, {**dict(ref.kwargs), **model}
