"""One way to name a model everywhere a model goes in: :class:`ModelRef` and
:func:`resolve_model`.

A model reference is one of

* a **registry name** (``"resnet20"``) plus architecture arguments;
* an **``nn.Module`` instance** or a **factory callable** (Python API);
* a **factory string** ``"package.module:factory"`` plus keyword arguments
  (imported with :mod:`importlib`; never a file path, never ``eval``);
* a **local Hugging Face directory** (``"hf:DIR"``, ``{"hf": DIR}`` or
  :meth:`ModelRef.hf`): ``config.json`` plus ``model.safetensors`` or a sharded
  ``model.safetensors.index.json``. The model is built with
  ``AutoConfig.from_pretrained(DIR, local_files_only=True)`` and the
  ``transformers`` class named in ``config.architectures`` (never remote
  code); the weights are read shard by shard with
  :func:`weightspace.io.read_safetensors`.

::

    from weightspace.arch import ModelRef, resolve_model

    r = resolve_model("hf:runs/gpt2-tiny")             # or ModelRef.parse({"hf": "runs/gpt2-tiny"})
    module, x, identity = r                            # x: token ids [1, 8]
    resolve_model("mypkg.models:make_mlp", width=64)   # a factory string
    resolve_model("resnet20", width=2)                 # a registry name

Every bad reference is one line: an unknown name (:class:`UnknownNameError`),
a broken import or factory (:class:`ConfigError` naming the string), a
missing directory, config or shard (:class:`MissingFileError` naming the
path), a config ``transformers`` cannot read (:class:`ConfigError` naming
``config.json`` and the field). ``transformers`` is optional
(``pip install 'weightspace[hf]'``): only Hugging Face references need it.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn

from weightspace.arch.registry import create_model, get_model_info
from weightspace.arch.registry import example_input as _registry_example_input
from weightspace.errors import ConfigError, MissingFileError, StateDictError, WeightspaceError
from weightspace.io import atomic_write, did_you_mean, read_json, read_safetensors

__all__ = ["HFCheckpoint", "ModelRef", "ModelRefError", "ResolvedModel", "config_example_input", "module_example_input",
           "resolve_model", "save_hf_checkpoint", "tied_names"]

_FACTORY_RE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def tied_names(module: nn.Module, stored: set[str]) -> dict[str, str]:
    """Parameter names a checkpoint does not store -> the stored name of the
    parameter they are tied to (the first of its names in ``stored``, in
    ``named_parameters`` order; e.g. GPT-2's ``lm_head.weight`` ->
    ``transformer.wte.weight``). Untied missing names are left out."""
    by_id: dict[int, list[str]] = {}
    for n, p in module.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), []).append(n)
    tied = {}
    for names in by_id.values():
        kept = next((n for n in names if n in stored), None)
        if kept is not None:
            tied.update({n: kept for n in names if n not in stored})
    return tied
TOKEN_LENGTH = 8


class ModelRefError(ConfigError):
    """A model reference that names nothing this library can build."""


@dataclass(frozen=True, eq=False)
class ModelRef:
    """A reference to a model (see the module docstring).

    Attributes:
        kind: ``"registry"``, ``"factory"`` (a ``pkg.mod:fn`` string or a
            callable), ``"module"`` (an instance) or ``"hf"``.
        target: the name, the string or callable, the module, or the
            Hugging Face directory (a :class:`~pathlib.Path`).
        kwargs: architecture / factory arguments.
    """

    kind: str
    target: Any
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------ constructors
    @classmethod
    def hf(cls, directory: str | os.PathLike) -> "ModelRef":
        return cls("hf", Path(os.path.expanduser(str(directory))))

    @classmethod
    def parse(cls, value: Any, *, root: str | os.PathLike | None = None, **kwargs: Any) -> "ModelRef":
        """A :class:`ModelRef` from any accepted form.

        ``value``: a :class:`ModelRef`; an ``nn.Module``; a callable; a string
        ``"hf:DIR"``, ``"pkg.mod:factory"`` or a registry name; or a mapping
        ``{"hf": DIR}``, ``{"factory": "pkg.mod:fn", "kwargs": {...}}`` or
        ``{"arch": name, "arch_kwargs": {...}}``. Relative directories are
        resolved against ``root`` (default: the working directory).

        Raises:
            ModelRefError: (a :class:`ConfigError`) a value of another type or
                a mapping with unknown or conflicting keys.
        """
        if isinstance(value, ModelRef):
            return ModelRef(value.kind, value.target, {**dict(value.kwargs), **kwargs}) if kwargs else value
        if isinstance(value, nn.Module):
            if kwargs:
                raise ModelRefError(f"a {type(value).__name__} module takes no arguments; got {sorted(kwargs)}")
            return cls("module", value)
        if isinstance(value, Mapping):
            return cls._from_mapping(value, root, kwargs)
        if isinstance(value, os.PathLike):
            return cls("hf", _under(value, root), {})
        if isinstance(value, str):
            if value.startswith("hf:"):
                if kwargs:
                    raise ModelRefError(f"{value!r}: a Hugging Face directory takes no arguments; got {sorted(kwargs)}"
                                        " (its config.json says everything)")
                if not value[3:]:
                    raise ModelRefError("'hf:' needs a directory, e.g. hf:runs/gpt2")
                return cls("hf", _under(value[3:], root))
            if ":" in value:
                if not _FACTORY_RE.match(value):
                    raise ModelRefError(f"{value!r} is not a factory reference 'package.module:function' "
                                        "(nor 'hf:DIR' or a registered architecture name)")
                return cls("factory", value, dict(kwargs))
            return cls("registry", value, dict(kwargs))
        if callable(value):
            return cls("factory", value, dict(kwargs))
        raise ModelRefError(
            f"cannot name a model with a {type(value).__name__}; pass a registered name, 'hf:DIR', "
            "'package.module:factory', an nn.Module or a factory callable"
        )

    @classmethod
    def _from_mapping(cls, value: Mapping, root: Any, kwargs: Mapping) -> "ModelRef":
        keys = set(value)
        forms = {"hf": {"hf"}, "factory": {"factory", "kwargs"}, "arch": {"arch", "arch_kwargs"}}
        kinds = [k for k in forms if k in keys]
        if len(kinds) != 1:
            raise ModelRefError(
                "a model needs exactly one of 'hf' (a Hugging Face directory), 'factory' ('pkg.mod:fn') or "
                f"'arch' (a registered name); got {sorted(keys) or 'none'}", field=kinds[1] if len(kinds) > 1 else None,
            )
        kind = kinds[0]
        unknown = sorted(keys - forms[kind])
        if unknown:
            raise ModelRefError(f"unknown key with '{kind}'{did_you_mean(unknown[0], sorted(forms[kind]))}; "
                                f"a '{kind}' model takes {sorted(forms[kind])}", field=unknown[0])
        target = value[kind]
        if not isinstance(target, (str, os.PathLike)) or not str(target):
            raise ModelRefError(f"expected a non-empty string, got {type(target).__name__}", field=kind)
        extra_key = {"hf": None, "factory": "kwargs", "arch": "arch_kwargs"}[kind]
        extra = value.get(extra_key) if extra_key else None
        if extra is not None and not isinstance(extra, Mapping):
            raise ModelRefError(f"expected a mapping of arguments, got {type(extra).__name__}", field=extra_key)
        kw = {**dict(extra or {}), **dict(kwargs)}
        if kind == "hf":
            return cls.parse(f"hf:{target}", root=root, **kw)
        if kind == "factory":
            if not _FACTORY_RE.match(str(target)):
                raise ModelRefError(f"{target!r} is not 'package.module:function'", field="factory")
            return cls("factory", str(target), kw)
        if ":" in str(target):
            raise ModelRefError(f"{target!r} is not a registered name; use 'factory: {target}' for a "
                                "package.module:function", field="arch")
        return cls("registry", str(target), kw)

    # ------------------------------------------------------------ identity
    @property
    def identity(self) -> str:
        """A short, stable name: ``resnet20(width=2)``, ``hf:/abs/dir``,
        ``mypkg.models:make(width=4)``, ``module:GPT2LMHeadModel``."""
        kw = ",".join(f"{k}={v}" for k, v in sorted(dict(self.kwargs).items()))
        args = f"({kw})" if kw else ""
        if self.kind == "hf":
            return f"hf:{Path(self.target).resolve()}"
        if self.kind == "module":
            return f"module:{type(self.target).__name__}"
        if self.kind == "factory" and not isinstance(self.target, str):
            t = self.target
            return f"{getattr(t, '__module__', '?')}:{getattr(t, '__qualname__', type(t).__name__)}{args}"
        return f"{self.target}{args}"

    @property
    def name(self) -> str:
        """The reference as one string that :meth:`parse` reads back (together
        with :attr:`kwargs`): the registry name, ``"pkg.mod:factory"`` or
        ``"hf:/absolute/dir"``. A module or callable given in Python has no
        such string: its :attr:`identity`."""
        if self.kind == "hf":
            return f"hf:{Path(self.target).resolve()}"
        if self.kind in ("registry", "factory") and isinstance(self.target, str):
            return str(self.target)
        return self.identity

    def resolve_kwargs(self, **kwargs: Any) -> dict[str, Any]:
        """``kwargs`` checked against the arguments the reference takes, with
        the defaults filled in where they are known: a registered
        architecture's (:meth:`ModelInfo.resolve_kwargs`), a factory's
        signature (its module is imported); a Hugging Face directory or a
        module takes none.

        Raises:
            TypeError: an argument it does not take.
            ModelRefError / UnknownNameError: the reference itself is bad.
        """
        if self.kind == "registry":
            return get_model_info(str(self.target)).resolve_kwargs(**kwargs)
        if self.kind in ("hf", "module"):
            if kwargs:
                what = "a Hugging Face directory (its config.json says everything)" if self.kind == "hf" else \
                    "a module given in Python"
                raise TypeError(f"{self.identity} is {what} and takes no arguments; got {sorted(kwargs)}")
            return {}
        import inspect

        fn = _import_factory(self.target) if isinstance(self.target, str) else self.target
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):  # a builtin without a signature: nothing to check
            return dict(kwargs)
        try:
            sig.bind_partial(**kwargs)
        except TypeError as exc:
            raise TypeError(f"factory {self.name!r} does not take these arguments ({exc})") from None
        out = {k: p.default for k, p in sig.parameters.items()
               if p.default is not inspect.Parameter.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        out.update(kwargs)
        return out

    def __repr__(self) -> str:  # never the module repr
        return f"ModelRef({self.identity})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ModelRef):
            return NotImplemented
        if self.kind == "module" or other.kind == "module":
            return self.target is other.target
        return self.identity == other.identity

    def __hash__(self) -> int:
        return hash(id(self.target)) if self.kind == "module" else hash(self.identity)


def _under(p: str | os.PathLike, root: Any) -> Path:
    path = Path(os.path.expanduser(str(p)))
    return path if path.is_absolute() or root is None else Path(root) / path


@dataclass
class ResolvedModel:
    """What :func:`resolve_model` returns; unpacks as ``module, example_input, identity``.

    Attributes:
        module: the built model (eval mode for Hugging Face models).
        example_input: a tensor the model runs on (batch 1 for HF models).
        identity: :attr:`ModelRef.identity`.
        ref: the reference.
        arch: the registry name for registry references, else ``None``.
        hf: the :class:`HFCheckpoint` of a Hugging Face directory, else ``None``.
    """

    module: nn.Module
    example_input: Any
    identity: str
    ref: ModelRef
    arch: str | None = None
    hf: "HFCheckpoint | None" = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.module, self.example_input, self.identity))


def resolve_model(ref: Any, *, seed: int | None = 0, example_input: Any = None, root: str | os.PathLike | None = None,
                  load_weights: bool = True, require_input: bool = True, **kwargs: Any) -> ResolvedModel:
    """Build the model ``ref`` names (any form :meth:`ModelRef.parse` takes).

    Args:
        seed: parameter initialisation seed (forked RNG; the global RNG is untouched).
        example_input: overrides the example input; required for a module or
            factory whose output is not registered (a factory may return
            ``(module, example_input)`` instead).
        root: folder relative Hugging Face directories are resolved against.
        load_weights: for a Hugging Face directory, load its safetensors
            (otherwise only the config is read and the weights are the
            seeded initialisation).
        require_input: ``False`` when only the module is wanted (building,
            training): a module or factory without an example input then
            resolves with ``example_input=None`` instead of raising.

    Raises:
        UnknownNameError: an unknown registry name (did-you-mean).
        ModelRefError / ConfigError: a broken factory string, a factory that
            fails or returns no module, a config ``transformers`` refuses,
            no ``transformers`` installed.
        MissingFileError: a missing Hugging Face directory, config or shard.
        InputFileError / StateDictError: a corrupt shard, a missing or
            mis-shaped tensor (naming the file and tensor).
    """
    r = ModelRef.parse(ref, root=root, **kwargs)
    if r.kind == "registry":
        info = get_model_info(str(r.target))  # UnknownNameError with did-you-mean
        try:
            module = create_model(info.name, seed=seed, **dict(r.kwargs))
        except WeightspaceError:
            raise
        except Exception as exc:  # the factory's own TypeError/ValueError on an argument
            raise ModelRefError(f"cannot build architecture {info.name!r} with {dict(r.kwargs)} ({_one(exc)})",
                                field="arch_kwargs") from None
        x = example_input if example_input is not None else _registry_example_input(info.name, **dict(r.kwargs))
        return ResolvedModel(module, x, r.identity, r, arch=info.name)
    if r.kind == "module":
        x = example_input if example_input is not None else module_example_input(r.target, seed=seed)
        if x is None and require_input:
            raise ModelRefError(f"an example input is needed to trace a {type(r.target).__name__} module; "
                                "pass example_input=... (or give the module an example_input attribute)")
        return ResolvedModel(r.target, x, r.identity, r)
    if r.kind == "factory":
        fn = _import_factory(r.target) if isinstance(r.target, str) else r.target
        what = r.target if isinstance(r.target, str) else r.identity
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(int(seed))
            try:
                out = fn(**dict(r.kwargs))
            except WeightspaceError:
                raise
            except Exception as exc:
                raise ModelRefError(f"factory {what!r} failed with arguments {dict(r.kwargs)} ({_one(exc)})",
                                    field="factory") from None
        x = example_input
        if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], nn.Module):
            out, x = out[0], (x if x is not None else out[1])
        if not isinstance(out, nn.Module):
            raise ModelRefError(f"factory {what!r} returned a {type(out).__name__}, not an nn.Module "
                                "(or a (module, example_input) pair)", field="factory")
        if x is None:
            x = module_example_input(out, seed=seed)
        if x is None and require_input:
            raise ModelRefError(f"factory {what!r} gives no example input; return (module, example_input), give the "
                                "module an example_input attribute, or pass example_input=...", field="factory")
        return ResolvedModel(out, x, r.identity, r)
    ckpt = HFCheckpoint.open(r.target)
    module = ckpt.build(seed=seed, load_weights=load_weights)
    x = example_input if example_input is not None else ckpt.example_input(seed=0 if seed is None else int(seed))
    return ResolvedModel(module, x, r.identity, r, hf=ckpt)


def _one(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:200]}"


def _import_factory(spec: str) -> Callable[..., Any]:
    mod_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(mod_name)
    except Exception as exc:  # ModuleNotFoundError, or the module's own import-time error
        raise ModelRefError(f"cannot import module {mod_name!r} of factory {spec!r} ({_one(exc)})",
                            field="factory") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            raise ModelRefError(f"factory {spec!r}: {mod_name} has no {part!r}{did_you_mean(part, names) or ''}",
                                field="factory")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelRefError(f"factory {spec!r} is a {type(obj).__name__}, not a callable", field="factory")
    return obj


# ------------------------------------------------------------ Hugging Face
def _transformers():
    try:
        import transformers
    except ImportError:
        raise ConfigError("Hugging Face models need the transformers package: pip install 'weightspace[hf]'") from None
    return transformers


@dataclass
class HFCheckpoint:
    """A local Hugging Face directory: its config and its safetensors files.

    Attributes:
        directory: the folder.
        config: the ``transformers`` config (``use_cache=False``).
        model_class: the ``transformers`` class that builds it.
        weight_map: tensor name -> shard file name (one file: every name ->
            ``model.safetensors``).
        sharded: whether the directory holds ``model.safetensors.index.json``.
        dtypes: tensor name -> stored dtype (filled by :meth:`read_weights`).
    """

    directory: Path
    config: Any
    model_class: Any
    weight_map: dict[str, str]
    sharded: bool
    dtypes: dict[str, torch.dtype] = field(default_factory=dict)

    @classmethod
    def open(cls, directory: str | os.PathLike) -> "HFCheckpoint":
        d = Path(directory)
        if not d.is_dir():
            what = "is a file, not a directory" if d.exists() else "no such directory"
            raise MissingFileError(f"{what}; a Hugging Face model directory holds config.json and "
                                   "model.safetensors (save_pretrained writes one)", path=d)
        cfg_path = d / "config.json"
        if not cfg_path.is_file():
            raise MissingFileError("no config.json in the Hugging Face model directory", path=cfg_path)
        raw = read_json(cfg_path, what="Hugging Face config")
        if not isinstance(raw, Mapping):
            raise ConfigError(f"expected a JSON object, got {type(raw).__name__}", path=cfg_path)
        T = _transformers()
        try:
            config = T.AutoConfig.from_pretrained(str(d), local_files_only=True)
        except Exception as exc:  # unknown model_type, bad values
            fld = "model_type" if "model_type" in str(exc) or "model_type" not in raw else None
            raise ConfigError(f"transformers cannot read this config ({_one(exc)})", path=cfg_path,
                              field=fld) from None
        model_class = _model_class(T, config, raw, cfg_path)
        if getattr(config, "use_cache", None) is not None:
            config.use_cache = False
        index = d / INDEX_FILE
        single = d / SINGLE_FILE
        if index.is_file():
            weight_map = _read_index(index)
            sharded = True
        elif single.is_file():
            weight_map, sharded = {}, False
        else:
            raise MissingFileError(f"no {SINGLE_FILE} or {INDEX_FILE} in the Hugging Face model directory "
                                   "(only safetensors weights are read)", path=single)
        return cls(d, config, model_class, weight_map, sharded)

    @property
    def files(self) -> list[str]:
        """The weight files, in order."""
        return sorted(set(self.weight_map.values())) if self.sharded else [SINGLE_FILE]

    def read_weights(self) -> dict[str, torch.Tensor]:
        """Every stored tensor, shard by shard (each file read with
        :func:`weightspace.io.read_safetensors`)."""
        out: dict[str, torch.Tensor] = {}
        for name in self.files:
            p = self.directory / name
            if not p.is_file():
                raise MissingFileError(f"shard listed in {INDEX_FILE} is missing", path=p, field="weight_map")
            tensors = read_safetensors(p, what="Hugging Face weights shard")
            if self.sharded:
                listed = {k for k, f in self.weight_map.items() if f == name}
                missing = sorted(listed - set(tensors))
                if missing:
                    raise StateDictError(f"tensor listed in {INDEX_FILE} is not in the shard", path=p,
                                         field=missing[0])
            out.update(tensors)
        if not self.sharded:
            self.weight_map = {k: SINGLE_FILE for k in out}
        self.dtypes = {k: v.dtype for k, v in out.items()}
        return out

    def build(self, *, seed: int | None = 0, load_weights: bool = True, mapped: bool = False) -> nn.Module:
        """The model, built from the config (seeded) and, with ``load_weights``,
        carrying the directory's weights; eval mode.

        ``mapped``: the module's tensors are the stored ones, mapped from the
        safetensors files (copy-on-write; pages are read from the page cache
        when touched), not copies: the module costs no memory of its own
        beyond what is converted (a stored dtype other than the module's).
        It is built on the meta device and the tensors assigned; a module
        with tensors the checkpoint does not store (e.g. rotary frequencies)
        is built on the CPU instead (``seed``), then assigned. Writes to its
        tensors stay private to the process. Implies ``load_weights``."""
        if mapped:
            tensors = self.read_weights()
            with torch.device("meta"):
                module = self._new(None)
            self._assign(module, tensors)
            if any(t.is_meta for t in (*module.parameters(), *module.buffers())):
                # a tensor that is not stored (an unsaved buffer): only a real build has its value
                module = self._new(seed)
                self._assign(module, tensors)
            return module
        module = self._new(seed)
        if load_weights:
            self.load_into(module, self.read_weights())
        return module

    def _assign(self, module: nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
        """``module``'s tensors replaced by ``tensors`` (checked as in :meth:`complete`; converted where
        the stored dtype is not the module's)."""
        full = self.complete(module, tensors)
        want = module.state_dict(keep_vars=True)
        full = {k: v if v.dtype == want[k].dtype else v.to(want[k].dtype) for k, v in full.items()}
        module.load_state_dict(full, strict=False, assign=True)

    def _new(self, seed: int | None) -> nn.Module:
        """``model_class(config)`` in eval mode, initialised with ``seed`` (``None``: the global RNG)."""
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(int(seed))
            try:
                module = self.model_class(self.config)
            except Exception as exc:
                raise ConfigError(f"{self.model_class.__name__} cannot be built from this config ({_one(exc)})",
                                  path=self.directory / "config.json") from None
        return module.eval()

    def complete(self, module: nn.Module, tensors: Mapping[str, torch.Tensor], *, path: object = None
                 ) -> dict[str, torch.Tensor]:
        """``module``'s full state_dict with the stored ``tensors``: every
        parameter must be stored (or tied to a stored one) with its shape,
        nothing extra may be stored; tied names get their partner's tensor,
        unstored buffers keep the module's values.

        Raises:
            StateDictError: naming the directory and the tensor.
        """
        path = path or self.directory
        expected = module.state_dict(keep_vars=True)
        what = type(module).__name__
        km = self.key_map(module)
        to_module = {v: k for k, v in km.items()}
        tensors = {to_module.get(k, k): v for k, v in tensors.items()}
        prefix = f"{getattr(module, 'base_model_prefix', '') or ''}."
        if prefix != "." and tensors and all(k.startswith(prefix) and k not in expected for k in tensors):
            # a base model (no config.architectures: AutoModel) reading a checkpoint saved with a head
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
            for k in expected:
                km[k] = prefix + km.get(k, k)
        unexpected = [k for k in tensors if k not in expected]
        if unexpected:
            raise StateDictError(f"unexpected tensor: {what} has no such tensor; the weights belong to another model",
                                 path=path, field=unexpected[0])
        for k, v in tensors.items():
            if tuple(v.shape) != tuple(expected[k].shape):
                raise StateDictError(f"shape {list(v.shape)} stored, but {what} needs {list(expected[k].shape)}",
                                     path=path, field=k)
        tied = tied_names(module, set(tensors))
        out: dict[str, torch.Tensor] = {}
        for n, v in expected.items():
            if n in tensors:
                out[n] = tensors[n]
            elif isinstance(v, nn.Parameter):
                if n not in tied:
                    raise StateDictError(f"parameter missing from the weights: {what} needs it with shape "
                                         f"{list(v.shape)}", path=path, field=n)
                out[n] = tensors[tied[n]]
            else:
                out[n] = v.detach()
        return out

    def key_map(self, module: nn.Module) -> dict[str, str]:
        """Module tensor name -> stored name. ``transformers`` 5 renames some
        tensors on load (e.g. ViT's ``attention.attention.query`` ->
        ``attention.q_proj``) and back on save; only one-to-one renamings are
        followed (a model whose stored tensors are split or fused on load is
        a :class:`ConfigError`)."""
        if getattr(self, "_key_map", None) is not None and self._key_map[0]() is module:
            return self._key_map[1]
        T = _transformers()
        revert = getattr(getattr(T, "modeling_utils", None), "revert_weight_conversion", None)
        out: dict[str, str] = {}
        if revert is not None:
            for k, v in module.state_dict().items():
                try:
                    back = revert(module, {k: v})
                except Exception as exc:
                    raise ConfigError(f"{type(module).__name__}: transformers cannot map tensor {k!r} to its stored "
                                      f"name ({_one(exc)})", path=self.directory / "config.json") from None
                if len(back) != 1 or tuple(next(iter(back.values())).shape) != tuple(v.shape):
                    raise ConfigError(f"{type(module).__name__} stores tensor {k!r} split or fused "
                                      f"({sorted(back)[:3]}); such checkpoints are not supported yet",
                                      path=self.directory / "config.json")
                out[k] = next(iter(back))
        self._key_map = (weakref.ref(module), out)  # not keeping the module (its weights) alive
        return out

    def load_into(self, module: nn.Module, tensors: Mapping[str, torch.Tensor], *, path: object = None) -> None:
        """Load ``tensors`` (stored names) into ``module`` (checked as in :meth:`complete`)."""
        full = self.complete(module, tensors, path=path)
        with torch.no_grad():
            module.load_state_dict(full, strict=False)

    def to_stored(self, module: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state_dict`` (``module``'s names) under the stored names."""
        km = self.key_map(module)
        return {km.get(k, k): v for k, v in state_dict.items()}

    def example_input(self, *, seed: int = 0) -> torch.Tensor:
        """:func:`config_example_input` of this directory's config."""
        return config_example_input(self.config, seed=seed, path=self.directory / "config.json")


def config_example_input(config: Any, *, seed: int = 0, path: object = None) -> torch.Tensor:
    """An example input from a ``transformers`` config: token ids ``[1, 8]``
    for a text model, pixel values ``[1, num_channels, image_size,
    image_size]`` for a vision model (seeded).

    Raises:
        ConfigError: the config has neither ``vocab_size`` nor ``num_channels``.
    """
    c = config
    gen = torch.Generator().manual_seed(int(seed))
    vocab = getattr(c, "vocab_size", None)
    if isinstance(vocab, int) and vocab > 0:
        n = min(TOKEN_LENGTH, int(getattr(c, "max_position_embeddings", None) or getattr(c, "n_positions", None)
                                  or TOKEN_LENGTH))
        return torch.randint(0, vocab, (1, n), generator=gen)
    channels = getattr(c, "num_channels", None)
    if isinstance(channels, int):
        size = getattr(c, "image_size", None) or 224
        h, w = (size, size) if isinstance(size, int) else tuple(size)[:2]
        return torch.randn(1, channels, int(h), int(w), generator=gen)
    raise ConfigError("cannot make an example input: the config has neither vocab_size (text) nor "
                      "num_channels (vision); pass example_input=...", path=path)


def module_example_input(module: nn.Module, *, seed: int | None = 0) -> Any:
    """The example input a module carries: its ``example_input`` attribute
    (a value, or a method called with no arguments), else one made from a
    ``transformers`` model's ``config`` (:func:`config_example_input`);
    ``None`` when it has neither."""
    x = getattr(module, "example_input", None)
    if x is not None:
        return x() if callable(x) else x
    config = getattr(module, "config", None)
    if config is not None and type(config).__module__.startswith("transformers"):
        return config_example_input(config, seed=0 if seed is None else int(seed))
    return None

def _model_class(T: Any, config: Any, raw: Mapping, cfg_path: Path) -> Any:
    """The ``transformers`` class named in ``config.architectures`` (else the
    ``AutoModel`` class of the model type); never remote code."""
    names = raw.get("architectures") or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError("expected a list of class names", path=cfg_path, field="architectures")
    base = getattr(T, "PreTrainedModel")
    for name in names:
        cls = getattr(T, name, None)
        if isinstance(cls, type) and issubclass(cls, base):
            return cls
    if names:
        raise ConfigError(f"{names[0]!r} is not a transformers model class (remote code is never run)",
                          path=cfg_path, field="architectures")
    try:
        return T.AutoModel._model_mapping[type(config)]
    except Exception as exc:
        raise ConfigError(f"no transformers model class for model_type {raw.get('model_type')!r} ({_one(exc)})",
                          path=cfg_path, field="architectures") from None


def _read_index(index: Path) -> dict[str, str]:
    raw = read_json(index, what="safetensors index")
    wm = raw.get("weight_map") if isinstance(raw, Mapping) else None
    if not isinstance(wm, Mapping) or not wm:
        raise ConfigError("expected a non-empty mapping of tensor names to shard files", path=index, field="weight_map")
    for k, f in wm.items():
        if not isinstance(f, str) or Path(f).name != f or not f.endswith(".safetensors"):
            raise ConfigError(f"expected a .safetensors file name in the same folder, got {f!r}", path=index,
                              field=f"weight_map.{k}")
    return {str(k): str(f) for k, f in wm.items()}


def save_hf_checkpoint(state_dict: Mapping[str, torch.Tensor], source: HFCheckpoint, out: str | os.PathLike, *,
                       metadata: Mapping[str, str] | None = None, extra_files: Mapping[str, str] | None = None,
                       module: nn.Module | None = None) -> Path:
    """Write ``state_dict`` as a Hugging Face directory shaped like ``source``.

    ``config.json`` (and ``generation_config.json`` if present) are copied;
    the tensors ``source`` stores are written with their stored dtypes and
    names (tied copies once), in one ``model.safetensors`` or -- when the
    source was sharded -- in the same shards plus ``model.safetensors.index.json``.
    ``metadata`` goes into every safetensors header (with ``format: pt``);
    ``extra_files`` are written as text. Every file via :func:`atomic_write`.
    ``module``: the model ``state_dict`` belongs to, when its names differ
    from the stored ones (see :meth:`HFCheckpoint.key_map`).
    """
    from safetensors.torch import save_file

    out = Path(out)
    if module is not None:
        state_dict = source.to_stored(module, state_dict)
    elif getattr(source, "_key_map", None) is not None:  # the names of the module it was last read into
        state_dict = {source._key_map[1].get(k, k): v for k, v in state_dict.items()}
    names = list(source.weight_map)
    missing = [k for k in names if k not in state_dict]
    if missing:
        raise StateDictError("the merged weights lack a tensor the source directory stores", path=out,
                             field=missing[0])
    meta = {"format": "pt", **{str(k): str(v) for k, v in dict(metadata or {}).items()}}
    for fname in ("config.json", "generation_config.json"):
        src = source.directory / fname
        if src.is_file():
            atomic_write(out / fname, src.read_bytes())
    shards: dict[str, dict[str, torch.Tensor]] = {}
    total = 0
    for k in names:
        v = state_dict[k].detach().to(source.dtypes.get(k, state_dict[k].dtype)).contiguous().clone()
        shards.setdefault(source.weight_map[k], {})[k] = v
        total += v.numel() * v.element_size()
    for fname, tensors in shards.items():
        atomic_write(out / fname, lambda tmp, t=tensors: save_file(t, str(tmp), metadata=meta))
    if source.sharded:
        index = {"metadata": {"total_size": total, **meta}, "weight_map": dict(sorted(source.weight_map.items()))}
        atomic_write(out / INDEX_FILE, json.dumps(index, indent=2))
    for fname, text in dict(extra_files or {}).items():
        atomic_write(out / fname, text)
    return out
