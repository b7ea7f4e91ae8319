"""One-call entry points: a module (or a registered architecture name) to its
ComputationGraph, PermutationSpec and ParameterGraph."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from weightspace import arch as _arch
from weightspace.arch import ArchSpec
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
    model: nn.Module | str,
    example_input: torch.Tensor | Sequence[torch.Tensor] | None = None,
    arch_kwargs: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, Any, str | None]:
    """``(module, example input, arch name)`` from a module or a registry name."""
    if isinstance(model, str):
        module = _arch.create_model(model, seed=0, **dict(arch_kwargs or {}))
        if example_input is None:
            example_input = _arch.example_input(model, **dict(arch_kwargs or {}))
        return module, example_input, model
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module or an architecture name, got {type(model).__name__}")
    if example_input is None:
        raise ValueError(
            f"an example input is needed to trace {type(model).__name__}; pass example_input=... "
            "(or register the architecture with an input_shape)"
        )
    return model, example_input, None


def analyze(
    model: nn.Module | str,
    example_input: torch.Tensor | Sequence[torch.Tensor] | None = None,
    *,
    arch_kwargs: Mapping[str, Any] | None = None,
    tracer: str = "auto",
) -> Analysis:
    """Trace ``model`` and derive its structure, spec and graph template.

    ``tracer``: ``"auto"`` (torch.fx, then torch.export), ``"fx"`` or ``"export"``."""
    module, x, name = resolve_model(model, example_input, arch_kwargs)
    cg = trace_module(module, x, arch=name, tracer=tracer)
    structure = resolve(cg)
    spec = build_spec(cg, structure)
    template = build_template(cg, spec, structure)
    return Analysis(module, x, cg, structure, spec, template)


def permutation_spec(
    model: nn.Module | str,
    example_input: torch.Tensor | Sequence[torch.Tensor] | None = None,
    *,
    tracer: str = "auto",
    **arch_kwargs: Any,
) -> PermutationSpec:
    """The :class:`PermutationSpec` of a module or registered architecture
    (``tracer``: ``"auto"``, ``"fx"`` or ``"export"``)."""
    module, x, name = resolve_model(model, example_input, arch_kwargs)
    cg = trace_module(module, x, arch=name, tracer=tracer)
    return build_spec(cg)


_TEMPLATES: dict[tuple[ArchSpec, str], GraphTemplate] = {}


def graph_template(arch: str | ArchSpec, *, tracer: str = "auto", **arch_kwargs: Any) -> GraphTemplate:
    """The (cached) :class:`GraphTemplate` of a registered architecture.

    One template per (:class:`~weightspace.arch.ArchSpec`, ``tracer``):
    arguments equal to the defaults, or lists vs tuples (``hidden=[32]`` /
    ``hidden=(32,)``), share one trace.
    """
    if isinstance(arch, ArchSpec):
        spec = ArchSpec(arch.name, {**arch.resolved_kwargs, **arch_kwargs}) if arch_kwargs else arch
    else:
        spec = ArchSpec.of(arch, **arch_kwargs)
    key = (spec, tracer)
    if key not in _TEMPLATES:
        _TEMPLATES[key] = analyze(spec.name, arch_kwargs=spec.resolved_kwargs, tracer=tracer).template
    return _TEMPLATES[key]


def parameter_graph(
    model: nn.Module | Mapping[str, torch.Tensor] | str,
    example_input: torch.Tensor | Sequence[torch.Tensor] | None = None,
    *,
    arch: str | None = None,
    allow_nonfinite: bool = False,
    tracer: str = "auto",
    **arch_kwargs: Any,
) -> ParameterGraph:
    """The :class:`ParameterGraph` of a module, or of a state_dict plus ``arch``.

    Examples::

        g = parameter_graph(my_module, torch.randn(2, 3, 32, 32))
        g = parameter_graph(state_dict, arch="cnn_small")
        g = parameter_graph("resnet20", width=2)     # default init
    """
    if isinstance(model, Mapping):
        if arch is None:
            raise ValueError("a state_dict needs arch=<registered architecture name>")
        return graph_template(arch, tracer=tracer, **arch_kwargs).graph(model, allow_nonfinite=allow_nonfinite)
    if isinstance(model, str):
        return graph_template(model, tracer=tracer, **arch_kwargs).graph(
            resolve_model(model, None, arch_kwargs)[0].state_dict(), allow_nonfinite=allow_nonfinite
        )
    a = analyze(model, example_input, tracer=tracer)
    return a.template.graph(model.state_dict(), allow_nonfinite=allow_nonfinite)
