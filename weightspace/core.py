"""One-call entry points: a module (or a registered architecture name) to its
ComputationGraph, PermutationSpec and ParameterGraph."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from weightspace import arch as _arch
from weightspace.arch import ArchSpec, ModelRef
from weightspace.errors import ConfigError
from weightspace.graph.parameter_graph import GraphTemplate, ParameterGraph, build_template
from weightspace.symmetry.spec import PermutationSpec, build_spec
from weightspace.trace.structure import Structure, resolve
from weightspace.trace.frontend import trace_module
from weightspace.trace.tracer import ComputationGraph


@dataclass
class Analysis:
    """Everything derived from one trace of an architecture."""

    module: nn.Module
    example_input: Any
    computation_graph: ComputationGraph
    structure: Structure
    spec: PermutationSpec
    template: GraphTemplate


def resolve_model(
    model: Any,
    example_input: torch.Tensor | Sequence[torch.Tensor] | None = None,
    arch_kwargs: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, Any, str | None]:
    """``(module, example input, registry name or None)`` from any model
    reference (:func:`weightspace.arch.resolve_model`: a registry name, an
    ``nn.Module``, ``"hf:DIR"``, ``"pkg.mod:factory"``, a factory callable,
    a :class:`~weightspace.arch.ModelRef`). A Hugging Face model's example
    input comes from its config.

    Raises:
        ModelRefError / UnknownNameError / MissingFileError: a bad reference (one line).
    """
    r = _arch.resolve_model(model, seed=0, example_input=example_input, **dict(arch_kwargs or {}))
    return r.module, r.example_input, r.arch


def analyze(
    model: nn.Module | str | ModelRef,
    example_input: torch.Tensor | Sequence[torch.Tensor] | None = None,
    *,
    arch_kwargs: Mapping[str, Any] | None = None,
    tracer: str = "auto",
) -> Analysis:
    """Trace ``model`` (any model reference, see :func:`resolve_model`:
    ``analyze("hf:runs/gpt2")``, ``analyze("resnet20", arch_kwargs={"width": 2})``,
    ``analyze(module, x)``) and derive its structure, spec and graph template.

    ``tracer``: ``"auto"`` (torch.fx, then torch.export), ``"fx"`` or ``"export"``."""
    module, x, name = resolve_model(model, example_input, arch_kwargs)
    cg = trace_module(module, x, arch=name, tracer=tracer)
    structure = resolve(cg)
    spec = build_spec(cg, structure)
    template = build_template(cg, spec, structure)
    return Analysis(module, x, cg, structure, spec, template)


def permutation_spec(
    model: nn.Module | str | ModelRef,
    example_input: torch.Tensor | Sequence[torch.Tensor] | None = None,
    *,
    tracer: str = "auto",
    **arch_kwargs: Any,
) -> PermutationSpec:
    """The :class:`PermutationSpec` of a module or any model reference
    (``permutation_spec("hf:runs/gpt2")``; ``tracer``: ``"auto"``, ``"fx"`` or ``"export"``)."""
    module, x, name = resolve_model(model, example_input, arch_kwargs)
    cg = trace_module(module, x, arch=name, tracer=tracer)
    return build_spec(cg)


_TEMPLATES: dict[tuple[Any, str], GraphTemplate] = {}


def graph_template(arch: Any, *, tracer: str = "auto", **arch_kwargs: Any) -> GraphTemplate:
    """The (cached) :class:`GraphTemplate` of an architecture: a registered
    name or :class:`~weightspace.arch.ArchSpec`, or any other model
    reference (``"hf:DIR"``, ``"pkg.mod:factory"`` plus ``arch_kwargs``, a
    :class:`~weightspace.arch.ModelRef`; an ``nn.Module`` is traced, not cached).

    One template per (:class:`~weightspace.arch.ArchSpec`, ``tracer``):
    arguments equal to the defaults, or lists vs tuples (``hidden=[32]`` /
    ``hidden=(32,)``), share one trace. Other references are cached by
    their :attr:`~weightspace.arch.ModelRef.identity` (a Hugging Face
    directory's config is read once; its weights are not read).
    """
    if isinstance(arch, ArchSpec):
        spec = ArchSpec(arch.name, {**arch.resolved_kwargs, **arch_kwargs}) if arch_kwargs else arch
    else:
        ref = ModelRef.parse(arch, **arch_kwargs)
        if ref.kind != "registry":
            if ref.kind == "module":
                return analyze(ref, tracer=tracer).template
            key: Any = (ref.identity, tracer)
            if key not in _TEMPLATES:
                r = _arch.resolve_model(ref, seed=0, load_weights=False)
                _TEMPLATES[key] = analyze(r.module, r.example_input, tracer=tracer).template
            return _TEMPLATES[key]
        spec = ArchSpec.of(str(ref.target), **dict(ref.kwargs))
    key = (spec, tracer)
    if key not in _TEMPLATES:
        _TEMPLATES[key] = analyze(spec.name, arch_kwargs=spec.resolved_kwargs, tracer=tracer).template
    return _TEMPLATES[key]


def parameter_graph(
    model: nn.Module | Mapping[str, torch.Tensor] | str | ModelRef,
    example_input: torch.Tensor | Sequence[torch.Tensor] | None = None,
    *,
    arch: Any = None,
    allow_nonfinite: bool = False,
    tracer: str = "auto",
    **arch_kwargs: Any,
) -> ParameterGraph:
    """The :class:`ParameterGraph` of a module or model reference, or of a
    state_dict plus ``arch`` (any model reference).

    Examples::

        g = parameter_graph(my_module, torch.randn(2, 3, 32, 32))
        g = parameter_graph(state_dict, arch="cnn_small")
        g = parameter_graph(state_dict, arch="hf:runs/gpt2")
        g = parameter_graph("resnet20", width=2)     # default init (seed 0)
        g = parameter_graph("hf:runs/gpt2")          # the directory's weights
    """
    if isinstance(model, Mapping) and not _is_ref_mapping(model):
        if arch is None:
            raise ConfigError("a state_dict needs arch=<registered name, 'hf:DIR' or 'package.module:factory'>",
                              field="arch")
        return graph_template(arch, tracer=tracer, **arch_kwargs).graph(model, allow_nonfinite=allow_nonfinite)
    if isinstance(model, nn.Module):
        a = analyze(model, example_input, tracer=tracer)
        return a.template.graph(model.state_dict(), allow_nonfinite=allow_nonfinite)
    r = _arch.resolve_model(model, seed=0, **arch_kwargs)
    return graph_template(r.ref, tracer=tracer).graph(r.module.state_dict(), allow_nonfinite=allow_nonfinite)


def _is_ref_mapping(value: Mapping) -> bool:
    """``{"hf": DIR}`` / ``{"factory": ...}`` / ``{"arch": ...}`` (a model reference, not a state_dict)."""
    return bool(value) and all(isinstance(k, str) and k in _REF_KEYS for k in value) and not any(
        isinstance(v, torch.Tensor) for v in value.values())


_REF_KEYS = {"hf", "factory", "kwargs", "arch", "arch_kwargs"}
