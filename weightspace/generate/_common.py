"""Helpers shared by the generators: architectures by name, task data,
training/evaluation of a network from a given state_dict."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from weightspace import arch as _arch
from weightspace import data as _data
from weightspace.common.batchnorm import recalibrate_batchnorm_
from weightspace.core import analyze, graph_template
from weightspace.errors import ConfigError, InputFileError, NonFiniteWeightsError
from weightspace.io import read_safetensors, read_safetensors_metadata, save_state_dict, validate
from weightspace.graph import GraphTemplate

__all__ = ["ArchSpec", "RefArch", "TaskData", "as_arch", "load_task", "fit_steps", "accuracy", "has_batchnorm",
           "read_saved_model", "save_generator_file", "read_generator_file", "check_finite_state_dict",
           "AsDictMixin", "deprecated_names"]


class _InputView:
    """``view``: data reshaped to an architecture's input (needs ``input_shape()`` and ``label``)."""

    def view(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, ...]`` reshaped to this architecture's input shape
        ``[B, *input_shape]`` (e.g. 8x8 digits as a 64-vector for an MLP or
        a 1x64 sequence for a 1-d CNN). Raises ``ValueError`` when the sizes
        differ."""
        shape = self.input_shape()
        if math.prod(shape) != math.prod(x.shape[1:]):
            raise ValueError(
                f"{self.label} expects inputs of shape {shape} ({math.prod(shape)} values); the data has "
                f"{tuple(x.shape[1:])}. Pass architecture arguments that match the data (e.g. in_features, length)."
            )
        return x.reshape(x.shape[0], *shape)


class ArchSpec(_InputView, _arch.ArchSpec):
    """:class:`weightspace.arch.ArchSpec` (a registered architecture with all
    of its arguments, canonical and hashable) plus what the generators need:
    its graph template, a module by seed and reshaping data to its input.
    Build with ``ArchSpec.of(name, **kwargs)``; equal to the plain
    :class:`weightspace.arch.ArchSpec` of the same architecture."""

    def template(self) -> GraphTemplate:
        """The (cached) :class:`~weightspace.graph.GraphTemplate`."""
        return graph_template(self)

    def module(self, seed: int = 0) -> nn.Module:
        """A freshly initialised module (PyTorch default init under ``seed``)."""
        return self.build(seed=int(seed))


class RefArch(_InputView):
    """Any other model reference as a generator architecture: a local
    Hugging Face directory, a ``"pkg.mod:factory"`` string plus arguments, a
    factory callable or an ``nn.Module`` (see :class:`weightspace.arch.ModelRef`).
    It offers what the generators use of an :class:`ArchSpec`: ``template()``,
    ``module(seed)``, ``view(x)``, ``label``, ``to_dict()``; equal references
    are equal (a module only to itself).

    Args:
        ref: the reference (not a registry name: that is an :class:`ArchSpec`).
        example_input: the input to trace with (default: the reference's own;
            a Hugging Face model's comes from its config).
    """

    def __init__(self, ref: _arch.ModelRef, example_input: Any = None) -> None:
        self.ref = ref
        self._example = example_input
        self._resolved: _arch.ResolvedModel | None = None
        self._template: GraphTemplate | None = None

    def resolved(self) -> "_arch.ResolvedModel":
        """The reference, built once (a Hugging Face directory's weights are not read)."""
        if self._resolved is None:
            self._resolved = _arch.resolve_model(self.ref, seed=0, example_input=self._example, load_weights=False)
        return self._resolved

    @property
    def label(self) -> str:
        return self.ref.identity

    name = label

    @property
    def arch_kwargs(self) -> dict[str, Any]:
        return dict(self.ref.kwargs)

    def template(self) -> GraphTemplate:
        """The :class:`~weightspace.graph.GraphTemplate` (cached)."""
        if self._template is None:
            if self.ref.kind == "module" or self._example is not None:
                r = self.resolved()
                self._template = analyze(r.module, r.example_input).template
            else:
                self._template = graph_template(self.ref)
        return self._template

    def module(self, seed: int = 0) -> nn.Module:
        """A module of this architecture: built under ``seed`` (a Hugging Face
        directory from its config, never its weights), or a copy of the given module."""
        if self.ref.kind == "module":
            return copy.deepcopy(self.ref.target)
        return _arch.resolve_model(self.ref, seed=int(seed), example_input=self.resolved().example_input,
                                   load_weights=False).module

    def input_shape(self) -> tuple[int, ...]:
        """The example input's shape without the batch dimension."""
        x = self.resolved().example_input
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{self.label} takes {type(x).__name__} inputs, not one tensor")
        return tuple(x.shape[1:])

    def difference(self, other: Any) -> tuple[str, Any, Any] | None:
        """``("arch", mine, theirs)`` when ``other`` is another architecture, else ``None``."""
        return None if other == self else ("arch", self.label, getattr(other, "label", str(other)))

    def to_dict(self) -> dict[str, Any]:
        """``{"hf": DIR}`` or ``{"factory": "pkg.mod:fn", "kwargs": {...}}`` (what
        :meth:`ModelRef.parse` reads back); a module or callable given in
        Python has no such form: ``{"module": label}``, which cannot be loaded."""
        if self.ref.kind == "hf":
            return {"hf": str(Path(self.ref.target).resolve())}
        if self.ref.kind == "factory" and isinstance(self.ref.target, str):
            return {"factory": self.ref.target, "kwargs": dict(self.ref.kwargs)}
        return {"module": self.label}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RefArch) and self.ref == other.ref

    def __hash__(self) -> int:
        return hash(self.ref)

    def __repr__(self) -> str:
        return f"RefArch({self.label})"


def as_arch(arch: Any, *, example_input: Any = None, **kwargs: Any) -> "ArchSpec | RefArch":
    """The architecture a generator works on, from any way of naming one:

    * a registered name (plus ``kwargs``), an :class:`ArchSpec`, a
      ``{"name", "kwargs"}`` dict or a ``(name, kwargs)`` pair -> :class:`ArchSpec`;
    * ``"hf:DIR"``, ``"pkg.mod:factory"`` (plus ``kwargs``), ``{"hf": DIR}``,
      ``{"factory": ..., "kwargs": ...}``, a :class:`~weightspace.arch.ModelRef`,
      an ``nn.Module`` or a factory callable -> :class:`RefArch`
      (``example_input`` to trace a module that carries none).

    Raises:
        ArchitectureRefError: a value of another type (one line, never its repr).
        ModelRefError / UnknownNameError: a bad reference (one line).
    """
    if isinstance(arch, RefArch):
        if kwargs:
            raise ArchitectureRefError(f"{arch.label} is already built; it takes no arguments (got {sorted(kwargs)})")
        return arch
    if isinstance(arch, _arch.ArchSpec):
        if kwargs:
            return ArchSpec.of(arch.name, **{**arch.arch_kwargs, **kwargs})
        return arch if isinstance(arch, ArchSpec) else ArchSpec(arch.name, arch.kwargs)
    if isinstance(arch, Mapping) and "name" in arch:
        return ArchSpec.of(arch["name"], **{**dict(arch.get("kwargs", {})), **kwargs})
    if isinstance(arch, tuple) and len(arch) == 2 and isinstance(arch[0], str):
        return ArchSpec.of(arch[0], **{**dict(arch[1]), **kwargs})
    if isinstance(arch, (str, Mapping, _arch.ModelRef, nn.Module)) or callable(arch):
        ref = _arch.ModelRef.parse(arch, **kwargs)
        if ref.kind == "registry":
            return ArchSpec.of(str(ref.target), **dict(ref.kwargs))
        return RefArch(ref, example_input)
    raise ArchitectureRefError(
        f"cannot make an architecture from {_describe(arch)}; generators take a registered name, ArchSpec, "
        "'hf:DIR', 'package.module:factory', an nn.Module or a factory callable"
    )


class ArchitectureRefError(ConfigError, TypeError):
    """A value that names no registered architecture (one line; never the value's repr)."""


def _describe(value: Any) -> str:
    """One short line for any value: a module by its class, a string quoted."""
    if isinstance(value, torch.nn.Module):
        return f"a {type(value).__name__} module"
    if isinstance(value, str):
        return repr(value[:80])
    return f"a {type(value).__name__}"


@dataclass(frozen=True)
class TaskData:
    """A classification task: train and test tensors.

    Attributes:
        x_train ``[N, ...]``, y_train ``[N]`` (int64), x_test, y_test.
        num_classes: number of classes.
        name: dataset name.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    name: str = ""


def load_task(name: str = "digits", **options: Any) -> TaskData:
    """A :class:`TaskData` from :func:`weightspace.data.load_dataset` (the
    datasets of ``zoo``, for one; train split for fitting, test split for
    accuracy)."""
    ds = _data.load_dataset(name, **options)
    if ds.task != "classification":
        raise ValueError(f"dataset {name!r} is a {ds.task} task; a classification dataset is needed")
    return TaskData(ds.x_train, ds.y_train, ds.x_test, ds.y_test, int(ds.num_classes), name)


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def _recalibrate_bn_(module: nn.Module, x: torch.Tensor, batch_size: int = 256) -> None:
    """Re-estimate BatchNorm running statistics of ``module`` on ``x`` in place
    (cumulative average over the whole of ``x``)."""
    recalibrate_batchnorm_(module, (x[i : i + batch_size] for i in range(0, len(x), batch_size)))


@torch.no_grad()
def accuracy(module: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``module`` (eval mode) on ``(x [N, ...], y [N])``."""
    was = module.training
    module.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += int((module(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
    module.train(was)
    return correct / max(len(x), 1)


@torch.no_grad()
def predictions(module: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Predicted classes ``[N]`` (eval mode)."""
    was = module.training
    module.eval()
    out = torch.cat([module(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
    module.train(was)
    return out


def fit_steps(
    arch: ArchSpec,
    state_dict: Mapping[str, torch.Tensor],
    data: TaskData,
    *,
    steps: Sequence[int] = (0, 1, 5, 50),
    lr: float = 0.05,
    momentum: float = 0.9,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[int, float]:
    """Test accuracy of ``arch`` started from ``state_dict`` after each number
    of SGD steps in ``steps``.

    The network is trained with SGD (cross-entropy, minibatches of
    ``batch_size`` drawn with ``seed``), and evaluated at every ``k`` in
    ``steps``; BatchNorm statistics are re-estimated on the training inputs
    before each evaluation (predicted weights carry no statistics), the same
    for every initialisation.

    Returns:
        ``{k: test accuracy}``. A run that diverges (non-finite loss) keeps
        its last weights and scores them as they are.
    """
    module = arch.module(seed=0)
    module.load_state_dict({k: v.detach().clone() for k, v in state_dict.items()})
    x_tr, x_te = arch.view(data.x_train), arch.view(data.x_test)
    bn = has_batchnorm(module)
    opt = torch.optim.SGD(module.parameters(), lr=lr, momentum=momentum)
    gen = torch.Generator().manual_seed(int(seed))
    wanted = sorted(set(int(k) for k in steps))
    out: dict[int, float] = {}
    step = 0
    diverged = False
    while True:
        if step in wanted:
            if bn:
                _recalibrate_bn_(module, x_tr)
            out[step] = accuracy(module, x_te, data.y_test)
        if step >= wanted[-1]:
            break
        if not diverged:
            idx = torch.randint(0, len(x_tr), (batch_size,), generator=gen)
            module.train()
            loss = F.cross_entropy(module(x_tr[idx]), data.y_train[idx])
            if torch.isfinite(loss):
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            else:
                diverged = True
        step += 1
    return out


def read_saved_model(path: Any, kind: str, keys: Sequence[str]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(metadata, tensors)`` of a generator saved as one safetensors file
    with JSON entries in its metadata (:meth:`GraphHyperNetwork.save`,
    :meth:`CheckpointFlow.save`).

    Args:
        path: the file.
        kind: the expected ``kind`` metadata entry.
        keys: metadata entries holding JSON, returned decoded (absent ones are
            left out).

    Raises:
        MissingFileError / InputFileError: missing, a directory, empty,
            truncated or corrupt, another kind of file, or invalid JSON in an
            entry (``field`` names it).
    """
    from pathlib import Path


    path = Path(path).expanduser()
    meta = read_safetensors_metadata(path, what=f"saved {kind} (.safetensors)")
    if meta.get("kind") != kind:
        raise InputFileError(f"not a saved {kind} (metadata kind={meta.get('kind')!r})", path=path, field="kind")
    out: dict[str, Any] = {}
    for k in keys:
        if k in meta:
            try:
                out[k] = json.loads(meta[k])
            except json.JSONDecodeError as exc:
                raise InputFileError(f"invalid JSON in the file's metadata: {exc.msg}", path=path, field=k) from None
    return out, read_safetensors(path, what=f"saved {kind} (.safetensors)")


def save_generator_file(model: nn.Module, path: Any, kind: str, entries: Mapping[str, Any],
                        metadata: Mapping[str, Any] | None = None) -> Any:
    """Write ``model``'s state_dict as one safetensors file whose metadata holds
    ``kind``, each of ``entries`` as JSON (e.g. ``{"config": model.config()}``)
    and the caller's ``metadata`` (JSON, non-JSON values as strings); the
    format :func:`read_generator_file` reads. Returns the path written."""

    meta = {"kind": kind, **{k: json.dumps(v) for k, v in entries.items()}}
    if metadata:
        meta["metadata"] = json.dumps(dict(metadata), default=str)
    return save_state_dict({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, path, meta)


def read_generator_file(path: Any, kind: str, schema: Mapping[str, Any], keys: Sequence[str] = ()
                        ) -> tuple[Any, dict[str, Any], dict[str, Any], dict[str, torch.Tensor]]:
    """``(path, config, metadata, tensors)`` of a generator written by
    :func:`save_generator_file`: the ``config`` entry checked against
    ``schema`` (:func:`weightspace.io.validate`: types, ranges, unknown
    keys), ``metadata`` the decoded JSON entries ``("config", *keys)``,
    ``path`` expanded. Build the model with
    :func:`weightspace.io.build_checked` (nothing is allocated before its
    size and tensor shapes are checked).

    Raises:
        MissingFileError / InputFileError: as :func:`read_saved_model`.
        ConfigError: a wrong type, out-of-range value or unknown key in the
            config (``field`` names it).
    """
    from pathlib import Path


    path = Path(path).expanduser()
    meta, tensors = read_saved_model(path, kind, ("config", *keys))
    cfg = validate(meta.get("config"), schema, path=path, where="config")
    return path, cfg, meta, tensors


def deprecated_names(module: str, aliases: Mapping[str, str]) -> Any:
    """A module ``__getattr__`` for renamed or moved public names:
    ``aliases[old] = "package.module.new_name"``. Each access to ``old``
    warns (``DeprecationWarning``, naming the new place) and returns the
    object found there; any other unknown name raises ``AttributeError``."""

    def __getattr__(name: str) -> Any:
        if name not in aliases:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        import importlib
        import warnings

        where, _, attr = aliases[name].rpartition(".")
        warnings.warn(f"{module}.{name} is now {aliases[name]}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(where), attr)

    return __getattr__


class AsDictMixin:
    """Mixin for training-record dataclasses: :meth:`to_dict` maps each
    field name to its value (the lists themselves, not copies)."""

    def to_dict(self) -> dict:
        from dataclasses import fields

        return {f.name: getattr(self, f.name) for f in fields(self)}


def check_finite_state_dict(state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise :class:`~weightspace.errors.NonFiniteWeightsError` naming the
    first floating-point tensor of ``state_dict`` with a NaN or Inf value
    (``what`` says where the values came from)."""

    for k, v in state_dict.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            bad = int((~torch.isfinite(v)).sum())
            raise NonFiniteWeightsError(f"{what} has {bad} NaN/Inf value(s) in this tensor; refusing to return it",
                                        field=k)


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)
