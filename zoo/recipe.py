"""Zoo recipes: what to train, on what, with which hyperparameter search.

A recipe is a YAML (or TOML) file or the equivalent :class:`Recipe` object::

    name: digits_cnn_small
    arch: cnn_small                 # any name in the architecture registry
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

from weightspace.arch import get_model_info
from zoo.datasets import list_datasets
from zoo.errors import RecipeError

__all__ = [
    "Recipe",
    "MemberSpec",
    "load_recipe",
    "list_recipes",
    "recipes_dir",
    "TRAIN_DEFAULTS",
    "canonical_json",
    "config_hash",
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
            raise RecipeError(f"{source}: a recipe must be a mapping, got {type(d).__name__}")
        unknown = set(d) - _TOP_KEYS
        if unknown:
            raise RecipeError(
                f"{source}: unknown top-level key(s) {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}"
            )
        for req in ("name", "arch"):
            if req not in d:
                raise RecipeError(f"{source}: missing required field {req!r}")
        for sect in ("model", "data", "train", "search"):
            if sect in d and d[sect] is not None and not isinstance(d[sect], Mapping):
                raise RecipeError(f"{source}: field {sect!r} must be a mapping")
        r = cls(
            name=str(d["name"]),
            arch=str(d["arch"]),
            model=copy.deepcopy(dict(d.get("model") or {})),
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
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"{path}: recipe file not found")
        text = path.read_text()
        if path.suffix == ".toml":
            import tomllib

            try:
                d = tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:
                raise RecipeError(f"{path}: invalid TOML: {e}") from None
        else:
            import yaml

            try:
                d = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise RecipeError(f"{path}: invalid YAML: {e}") from None
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

    def validate(self) -> None:
        src = self.source
        try:
            info = get_model_info(self.arch)
        except KeyError as e:
            raise RecipeError(f"{src}: field 'arch': {e.args[0]}") from None
        unknown_s = set(self.search) - _SEARCH_KEYS
        if unknown_s:
            raise RecipeError(
                f"{src}: unknown key(s) in 'search': {sorted(unknown_s)}; allowed: {sorted(_SEARCH_KEYS)}"
            )
        if self.method not in ("grid", "random"):
            raise RecipeError(f"{src}: search.method must be 'grid' or 'random', got {self.method!r}")
        if self.method == "random" and int(self.search.get("num_members", 0)) <= 0:
            raise RecipeError(f"{src}: search.num_members must be a positive int for random search")
        if "name" not in self.data:
            raise RecipeError(f"{src}: field 'data.name' is required (one of {list_datasets()})")
        if self.data["name"] not in list_datasets():
            raise RecipeError(
                f"{src}: field 'data.name': unknown dataset {self.data['name']!r}; "
                f"registered: {list_datasets()}"
            )
        unknown_t = set(self.train) - set(TRAIN_DEFAULTS)
        if unknown_t:
            raise RecipeError(
                f"{src}: unknown key(s) in 'train': {sorted(unknown_t)}; allowed: {sorted(TRAIN_DEFAULTS)}"
            )
        space = self.search.get("space") or {}
        if not isinstance(space, Mapping):
            raise RecipeError(f"{src}: search.space must be a mapping")
        for key, spec in space.items():
            self._check_space_entry(key, spec)
        # Architecture kwargs: the fixed ones plus every model.* search key must be accepted.
        model_keys = dict(self.model)
        for key in space:
            if key.startswith("model."):
                model_keys[key[len("model.") :]] = None
        try:
            info.resolve_kwargs(**model_keys)
        except TypeError as e:
            raise RecipeError(f"{src}: field 'model': {e}") from None
        for key in space:
            if key.startswith("train.") and key[len("train.") :] not in TRAIN_DEFAULTS:
                raise RecipeError(
                    f"{src}: search.space key {key!r}: unknown training option; "
                    f"allowed: {sorted(TRAIN_DEFAULTS)}"
                )
        epochs = self._epochs_for_validation()
        self._checkpoint_epochs(epochs)  # raises on malformed
        if self.method == "grid":
            for key, spec in space.items():
                if isinstance(spec, Mapping) and next(iter(spec)) in ("uniform", "log_uniform", "int_uniform"):
                    raise RecipeError(
                        f"{src}: search.space key {key!r}: grid search needs a list of values, "
                        f"got a {next(iter(spec))} distribution"
                    )

    def _epochs_for_validation(self) -> int:
        return int(self.train.get("epochs", TRAIN_DEFAULTS["epochs"]))

    def _check_space_entry(self, key: str, spec: Any) -> None:
        src = self.source
        if key != "seed" and not key.startswith(("model.", "data.", "train.")):
            raise RecipeError(
                f"{src}: search.space key {key!r} must start with 'model.', 'data.' or 'train.' (or be 'seed')"
            )
        if key == "data.name":
            raise RecipeError(f"{src}: search.space cannot vary 'data.name'")
        if isinstance(spec, list):
            if not spec:
                raise RecipeError(f"{src}: search.space key {key!r}: empty list")
            return
        if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in _DIST_KEYS:
            raise RecipeError(
                f"{src}: search.space key {key!r}: expected a list or a one-key mapping with one of "
                f"{sorted(_DIST_KEYS)}, got {spec!r}"
            )
        kind, arg = next(iter(spec.items()))
        if kind in ("choice", "grid"):
            if not isinstance(arg, list) or not arg:
                raise RecipeError(f"{src}: search.space key {key!r}: {kind} needs a non-empty list")
        elif kind == "range":
            if not isinstance(arg, list) or len(arg) not in (2, 3):
                raise RecipeError(f"{src}: search.space key {key!r}: range needs [start, stop(, step)]")
        else:
            if not isinstance(arg, list) or len(arg) != 2 or not all(isinstance(a, (int, float)) for a in arg):
                raise RecipeError(f"{src}: search.space key {key!r}: {kind} needs [low, high]")
            lo, hi = arg
            if lo > hi or (kind == "log_uniform" and lo <= 0):
                raise RecipeError(f"{src}: search.space key {key!r}: bad bounds {arg} for {kind}")

    def _checkpoint_epochs(self, epochs: int) -> list[int]:
        """Sorted epochs to keep for a member trained ``epochs`` epochs."""
        ck = self.checkpoints
        src = self.source
        if ck in (None, "final"):
            out = {epochs}
        elif ck == "all":
            out = set(range(0, epochs + 1))
        elif isinstance(ck, Mapping):
            every = ck.get("every")
            if not isinstance(every, int) or every <= 0:
                raise RecipeError(f"{src}: checkpoints.every must be a positive int, got {every!r}")
            out = set(range(0 if ck.get("include_init", True) else every, epochs + 1, every))
            out.add(epochs)
        elif isinstance(ck, list) and all(isinstance(e, int) and not isinstance(e, bool) for e in ck):
            bad = [e for e in ck if e < 0 or e > epochs]
            if bad:
                raise RecipeError(f"{src}: checkpoints {bad} outside [0, epochs={epochs}]")
            out = set(ck) | {epochs}
        else:
            raise RecipeError(
                f"{src}: checkpoints must be 'final', 'all', a list of epochs or {{every: k}}, got {ck!r}"
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
