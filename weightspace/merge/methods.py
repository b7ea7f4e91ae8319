"""The merge methods a config (:mod:`weightspace.merge.config`) can name.

Each method is one small adapter function registered with
:func:`merge_method`: it takes the loaded models (:class:`MethodInputs`),
calls the library function(s) and returns a :class:`MethodOutput`. The
registration also says which functions' keyword arguments make up the
method's ``options`` (validated against their signatures), whether it needs
``data`` or a ``base`` model, and whether the models may differ in width.
:data:`METHODS` lists the registered names in registration order. Adding a
method is one decorated function in this module::

    @merge_method("my_method", options=[(my_merge, {"names"})])
    def _my_method(m: MethodInputs) -> MethodOutput:
        return MethodOutput(my_merge(m.sds, names=m.names, **m.options), aligned=m.sds)
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import nn

from weightspace.merge._common import instantiate
from weightspace.merge.average import average, diagonal_fisher, fisher_average, task_arithmetic
from weightspace.merge.matching import activation_matching, ste_matching, weight_matching
from weightspace.merge.multi import align_to_reference, merge_many
from weightspace.merge.ot_fusion import ot_fusion
from weightspace.merge.task_vectors import breadcrumbs, dare, slerp, ties
from weightspace.symmetry import PermutationSpec

__all__ = ["METHODS", "MergeMethod", "MethodInputs", "MethodOutput", "get_method", "merge_method"]

StateDict = dict[str, torch.Tensor]


@dataclass
class MethodInputs:
    """What the config runner hands a method: models loaded and checked.

    Attributes:
        sds: one state_dict per model, in config order.
        weights: ``[N]`` averaging weights (``models[i].weight``).
        names: ``[N]`` model labels (their weights files) for messages.
        reference: index of the model whose basis/widths the result takes.
        seed: the config's ``seed`` (default of a method's ``seed`` option).
        options: the validated ``options`` (a copy the adapter may change).
        module, spec: the reference architecture's module template and spec.
        modules, specs: per model (they differ only for width-mixing methods).
        fit: ``(x, y)`` data for matching and statistics, or ``None``.
        base: the ``base`` model's state_dict (methods registered with
            ``needs_base``), else ``None``.
        progress: show progress bars.
    """

    sds: list[StateDict]
    weights: list[float]
    names: list[str]
    reference: int
    seed: int
    options: dict
    module: nn.Module
    spec: PermutationSpec
    modules: list[nn.Module]
    specs: list[PermutationSpec]
    fit: tuple[torch.Tensor, torch.Tensor] | None = None
    base: StateDict | None = None
    progress: bool = False


@dataclass
class MethodOutput:
    """What a method returns to the config runner.

    Attributes:
        state_dict: the merged weights.
        aligned: the models in one basis (REPAIR and the barrier use them),
            or ``None`` where that is not defined (task arithmetic).
        summary: extra JSON-friendly facts for the run's summary.
    """

    state_dict: StateDict
    aligned: list[StateDict] | None
    summary: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MergeMethod:
    """A registered method (see :func:`merge_method`)."""

    name: str
    run: Callable[[MethodInputs], MethodOutput]
    options: tuple[tuple[Callable, frozenset[str]], ...] = ()
    needs_data: bool = False
    needs_base: bool = False
    mixed_widths: bool = False
    num_models: int | None = None


_REGISTRY: dict[str, MergeMethod] = {}


def merge_method(
    name: str,
    *,
    options: Iterable[tuple[Callable, Iterable[str]]] = (),
    needs_data: bool = False,
    needs_base: bool = False,
    mixed_widths: bool = False,
    num_models: int | None = None,
) -> Callable[[Callable[[MethodInputs], MethodOutput]], Callable[[MethodInputs], MethodOutput]]:
    """Register the decorated adapter as config method ``name``.

    Args:
        name: the config's ``method`` value.
        options: ``(function, skip)`` pairs: the keyword arguments with
            defaults of each function, except the names in ``skip`` (set by
            the adapter itself, or not expressible in YAML), are the method's
            ``options``.
        needs_data: the method cannot run without the config's ``data``.
        needs_base: the method needs ``base: {path: ...}`` (a base model).
        mixed_widths: the models may differ in width (architecture arguments).
        num_models: the method merges exactly this many models (``None``: any).

    Raises:
        ValueError: ``name`` is registered already.
    """

    def register(fn: Callable[[MethodInputs], MethodOutput]) -> Callable[[MethodInputs], MethodOutput]:
        if name in _REGISTRY:
            raise ValueError(f"merge method {name!r} is registered twice")
        _REGISTRY[name] = MergeMethod(
            name, fn, tuple((f, frozenset(skip)) for f, skip in options), needs_data, needs_base, mixed_widths,
            num_models,
        )
        return fn

    return register


def get_method(name: str) -> MergeMethod:
    """The registered method ``name`` (``KeyError`` when there is none)."""
    return _REGISTRY[name]


# ------------------------------------------------------------------ methods
def _aligned_average(m: MethodInputs, matcher: Callable) -> MethodOutput:
    """Every model permuted into the reference's basis by ``matcher(a, b)``, then averaged."""
    res = align_to_reference(
        m.sds, m.spec, reference=m.reference, weights=m.weights, names=m.names, matcher=matcher
    )
    return MethodOutput(res.state_dict, res.aligned)


@merge_method("average")
def _average(m: MethodInputs) -> MethodOutput:
    return MethodOutput(average(m.sds, m.weights, names=m.names), m.sds)


@merge_method("weight_matching", options=[(weight_matching, {"init", "dtype", "progress", "validate"})])
def _weight_matching(m: MethodInputs) -> MethodOutput:
    opts = {"seed": m.seed, **m.options}
    return _aligned_average(
        m, lambda a, b: weight_matching(a, b, m.spec, validate=False, progress=m.progress, **opts).perm
    )


@merge_method("merge_many", options=[(merge_many, {"weights", "names"})])
def _merge_many(m: MethodInputs) -> MethodOutput:
    opts = {"seed": m.seed, **m.options}
    res = merge_many(m.sds, m.spec, weights=m.weights, names=m.names, **opts)
    return MethodOutput(res.state_dict, res.aligned, {"rounds": res.rounds})


@merge_method("activation_matching", options=[(activation_matching, {"spec", "example_input", "dtype", "progress"})],
              needs_data=True)
def _activation_matching(m: MethodInputs) -> MethodOutput:
    opts = {"seed": m.seed, "progress": m.progress, **m.options}
    mods = [instantiate(m.module, sd) for sd in m.sds]
    return _aligned_average(
        m,
        lambda a, b: activation_matching(mods[m.reference], instantiate(m.module, b), m.fit[0], m.spec, **opts).perm,
    )


@merge_method("ste", options=[(ste_matching, {"loss_fn", "init", "progress"})], needs_data=True)
def _ste(m: MethodInputs) -> MethodOutput:
    opts = {"seed": m.seed, **m.options}
    return _aligned_average(
        m, lambda a, b: ste_matching(m.module, a, b, m.fit, m.spec, progress=m.progress, **opts).perm
    )


@merge_method(
    "ot_fusion", options=[(ot_fusion, {"target", "weights", "models", "data", "names"})], mixed_widths=True
)
def _ot_fusion(m: MethodInputs) -> MethodOutput:
    opts: dict[str, Any] = dict(m.options)
    if opts.get("ground") == "activations":
        opts["models"] = [instantiate(mod, sd) for mod, sd in zip(m.modules, m.sds)]
        opts["data"] = m.fit[0]
    res = ot_fusion(m.sds, m.specs, target=m.reference, weights=m.weights, names=m.names, **opts)
    return MethodOutput(res.state_dict, res.aligned)


@merge_method("fisher", options=[(diagonal_fisher, set()), (fisher_average, {"weights", "names"})], needs_data=True)
def _fisher(m: MethodInputs) -> MethodOutput:
    fisher_params = inspect.signature(diagonal_fisher).parameters
    fopts = {k: v for k, v in m.options.items() if k in fisher_params}
    fopts.setdefault("seed", m.seed)
    fishers = [diagonal_fisher(m.module, sd, m.fit, **fopts) for sd in m.sds]
    eps = {k: v for k, v in m.options.items() if k not in fisher_params}
    return MethodOutput(fisher_average(m.sds, fishers, m.weights, names=m.names, **eps), m.sds)


@merge_method("task_arithmetic", options=[(task_arithmetic, set())], needs_base=True)
def _task_arithmetic(m: MethodInputs) -> MethodOutput:
    return MethodOutput(task_arithmetic(m.base, m.sds, **m.options), None)


# Task-vector methods: ``models[i].weight`` is the per-model weight w_i (as in
# mergekit); ``density`` may be one value or one per model.
@merge_method("ties", options=[(ties, {"weights", "names"})], needs_base=True)
def _ties(m: MethodInputs) -> MethodOutput:
    return MethodOutput(ties(m.base, m.sds, m.weights, names=m.names, **m.options), None)


@merge_method("dare", options=[(dare, {"weights", "names"})], needs_base=True)
def _dare(m: MethodInputs) -> MethodOutput:
    opts = {"seed": m.seed, **m.options}
    return MethodOutput(dare(m.base, m.sds, m.weights, names=m.names, **opts), None)


@merge_method("breadcrumbs", options=[(breadcrumbs, {"weights", "names"})], needs_base=True)
def _breadcrumbs(m: MethodInputs) -> MethodOutput:
    return MethodOutput(breadcrumbs(m.base, m.sds, m.weights, names=m.names, **m.options), None)


@merge_method("slerp", options=[(slerp, {"names", "n_layers"})], num_models=2)
def _slerp(m: MethodInputs) -> MethodOutput:
    """``t = 0`` is ``models[0]``, ``t = 1`` is ``models[1]`` (their weights are not used)."""
    return MethodOutput(slerp(m.sds[0], m.sds[1], names=m.names, **m.options), None)


METHODS: tuple[str, ...] = tuple(_REGISTRY)
