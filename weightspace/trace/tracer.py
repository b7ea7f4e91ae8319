"""``torch.fx`` trace of a module -> :class:`ComputationGraph`.

The module is traced symbolically, then the fx graph is executed once on the
example input; every node computes its real value (for shapes) and its axis
descriptors through the rules in :mod:`weightspace.trace.rules`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, Union

import torch
import torch.fx as fx
from torch import nn

from weightspace.errors import ConfigError, TraceError, UnsupportedOperationError
from weightspace.trace import rules as R
from weightspace.trace.axes import Ctx
from weightspace.trace.channels import ChannelState, Feat, Lazy, SplitAx


@dataclass
class ComputationGraph:
    """Channel structure of a traced module.

    Attributes:
        state: blocks (neuron sets), ties, cuts and attention splits recorded
            while tracing.
        param_refs: ``{state_dict key: {axis: Feat}}``: which neurons each
            parameter/buffer axis carries. Axes not listed are not neuron axes
            (kernel taps, positions, vocabulary, ...).
        param_shapes: shape of every state_dict entry.
        float_keys: state_dict keys holding floating-point tensors (weights,
            biases, running statistics) in state_dict order.
        extra_keys: other state_dict keys (e.g. ``num_batches_tracked``).
        aliases: ``{key: canonical key}`` for tied parameters (same tensor
            under two names).
        module_types: ``{module path: class name}`` of every call_module.
        ops: ``(module path, op name)`` of every traced node, in order.
        input_shapes: shapes of the example inputs.
    """

    state: ChannelState
    param_refs: dict[str, dict[int, Feat]]
    param_shapes: dict[str, tuple[int, ...]]
    param_dtypes: dict[str, torch.dtype]
    float_keys: list[str]
    extra_keys: list[str]
    aliases: dict[str, str]
    module_types: dict[str, str]
    ops: list[tuple[str, str]]
    input_shapes: list[tuple[int, ...]]
    arch: str | None = None
    fx_graph: fx.Graph | None = field(default=None, repr=False)

    @property
    def blocks(self):
        return self.state.blocks

    def summary(self) -> dict:
        """Counts for display: blocks, neurons, ties, parameters."""
        st = self.state
        return {
            "blocks": len(st.blocks),
            "neurons": sum(b.size for b in st.blocks),
            "fixed_neurons": sum(b.size for b in st.blocks if b.fixed),
            "ties": len(st.ties),
            "attention_splits": len(st.attention_splits),
            "parameters": len(self.float_keys),
            "ops": len(self.ops),
        }


class _Tracer(fx.Tracer):
    """fx tracer whose leaves are the modules we have rules for (plus every
    other ``torch.nn`` module, which then fails with a clear error)."""

    def __init__(self) -> None:
        super().__init__()
        self.record_stack_traces = False
        # buffers read in forward() (causal masks, rotary tables) become
        # get_attr nodes, so slicing them with traced sizes works
        self.proxy_buffer_attributes = True

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if type(m) in R.MODULE_RULES:
            return True
        return super().is_leaf_module(m, qualname)


def _fx_hint(exc: BaseException) -> str:
    """What to do about an exception raised by ``torch.fx`` symbolic tracing."""
    text = str(exc)
    if "control flow" in text or "cannot be iterated" in text or "bool" in text.lower() and "Proxy" in text:
        return ("data-dependent control flow (if/for on tensor values) cannot be traced by torch.fx; "
                "use tracer='export' (torch.export handles control flow on shapes), move it out of "
                "forward(), or wrap the offending submodule so it is a leaf with a rule "
                "(weightspace.trace.register_module_rule)")
    return ("a traced value (fx Proxy) reached code that needs a concrete value (a Python builtin, "
            "a non-torch function, an index or a size); use tracer='export', or wrap that call with "
            "torch.fx.wrap, or make the offending submodule a leaf with a rule "
            "(weightspace.trace.register_module_rule)")


def _holds_neurons(descs: Any) -> bool:
    """Whether any descriptor in a (nested) argument structure is a neuron,
    parameter or input axis (anything but ``None``)."""
    if descs is None:
        return False
    if isinstance(descs, (list, tuple)):
        return any(_holds_neurons(d) for d in descs)
    if isinstance(descs, dict):
        return any(_holds_neurons(d) for d in descs.values())
    return True


def _module_path(node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack")
    if stack:
        last = list(stack.values())[-1]
        return str(last[0]) if isinstance(last, tuple) else str(last)
    return ""


def _op_name(node: fx.Node, root: nn.Module) -> str:
    if node.op == "call_module":
        return type(root.get_submodule(node.target)).__name__
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    if node.op == "call_function":
        t = node.target
        mod = getattr(t, "__module__", None) or ""
        name = getattr(t, "__name__", repr(t))
        if mod.startswith("torch.nn.functional"):
            return f"F.{name}"
        if mod.startswith("torch") or mod == "" or "torch" in repr(t):
            return f"torch.{name}" if "built-in" not in repr(t) or "torch" in repr(t) else name
        if mod in ("_operator", "operator"):
            return f"operator.{name}"
        return f"{mod}.{name}"
    return str(node.target)


def _tensor_descs(x: Any, key_prefix: tuple) -> Any:
    if isinstance(x, torch.Tensor):
        return tuple(Lazy(key_prefix + (a,), int(s)) for a, s in enumerate(x.shape))
    if isinstance(x, (tuple, list)):
        return [_tensor_descs(v, key_prefix + (i,)) for i, v in enumerate(x)]
    return None


#: an example input: one tensor, a tuple/list of positional inputs, or a
#: mapping of keyword inputs (``{"input_ids": ids, "attention_mask": mask}``)
ExampleInputs = Union[torch.Tensor, Sequence[Any], Mapping[str, Any]]


def split_inputs(example_inputs: ExampleInputs) -> tuple[tuple, dict[str, Any]]:
    """``(args, kwargs)`` for ``forward``: a tensor is the one positional
    input, a tuple or list the positional inputs, a mapping (a dict, a Hugging
    Face ``BatchEncoding``) the keyword inputs.

    Raises:
        ConfigError: a mapping key that is not a string.
    """
    if isinstance(example_inputs, Mapping):
        bad = [k for k in example_inputs if not isinstance(k, str)]
        if bad:
            raise ConfigError(
                f"example input keys must be forward() argument names (strings), got {bad[0]!r}",
                field="example_input",
            )
        return (), dict(example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    return (example_inputs,), {}


def input_shapes(args: tuple, kwargs: Mapping[str, Any]) -> list[tuple[int, ...]]:
    """Shapes of the tensors among the example inputs (positional first,
    then keyword inputs in the given order)."""
    return [tuple(x.shape) for x in (*args, *kwargs.values()) if isinstance(x, torch.Tensor)]


def trace(
    module: nn.Module,
    example_inputs: ExampleInputs,
    *,
    arch: str | None = None,
) -> ComputationGraph:
    """Trace ``module`` on ``example_inputs`` and derive its channel structure.

    Args:
        module: any ``nn.Module`` that ``torch.fx.symbolic_trace`` can trace.
        example_inputs: one tensor, a tuple of positional inputs or a
            mapping of keyword inputs (tensors batch first); only their
            shapes and dtypes matter. The module is run once in eval
            mode under ``torch.no_grad`` (its training flags are restored and
            nothing else is modified).
        arch: optional registry name, kept for display.

    Returns:
        :class:`ComputationGraph`.

    Raises:
        TraceError: ``torch.fx`` cannot trace the module (names the cause).
        UnsupportedOperationError: an op whose channel semantics are unknown
            (names the op, the module path and a hint).
    """
    args, kwargs = split_inputs(example_inputs)
    tracer = _Tracer()
    try:
        graph = tracer.trace(module, concrete_args=_defaults_not_given(module, args, kwargs))
    except UnsupportedOperationError:
        raise
    except Exception as exc:  # fx raises many exception types
        raise TraceError(
            f"torch.fx could not trace {type(module).__name__}: {type(exc).__name__}: {exc}. "
            f"Hint: {_fx_hint(exc)}"
        ) from exc
    gm = fx.GraphModule(module, graph)

    # canonical names for tied parameters (one tensor under several names)
    sd = module.state_dict(keep_vars=True)
    by_id: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for k, v in sd.items():
        canon = by_id.setdefault(id(v), k)
        aliases[k] = canon

    # Shapes are all the rules need: run on the meta device first (no
    # arithmetic), and fall back to real tensors if an op has no meta kernel
    # or mixes in tensors created on the CPU inside forward().
    try:
        state, module_types, ops = _execute(module, gm, graph, args, kwargs, sd, aliases, meta=True)
    except (UnsupportedOperationError, TraceError):
        raise
    except Exception:
        state, module_types, ops = _execute(module, gm, graph, args, kwargs, sd, aliases, meta=False)

    return finish_graph(
        state, sd, aliases, module_types, ops,
        input_shapes(args, kwargs), arch, graph,
    )


def finish_graph(state, sd, aliases, module_types, ops, input_shapes, arch, graph) -> ComputationGraph:
    """The :class:`ComputationGraph` of an executed trace (shared by the fx
    and the ``torch.export`` front ends): parameter axes -> neurons under
    canonical names (tied parameters share one name)."""
    # parameter axis -> neurons, under canonical names
    refs: dict[str, dict[int, Feat]] = {}
    for key in list(state.lazy_parent):
        if key[0] != "param" or len(key) != 3:
            continue
        feat = state.lazy_binding.get(state.lazy_find(key))
        if feat is None:
            continue
        name, axis = aliases.get(key[1], key[1]), int(key[2])
        prev = refs.setdefault(name, {}).get(axis)
        if prev is None:
            refs[name][axis] = feat
        elif prev != feat:
            state.tie_feats(prev, feat, "elementwise", name)
    roles = {aliases.get(k, k): v for k, v in state.param_roles.items()}
    meta = {aliases.get(k, k): v for k, v in state.param_meta.items()}
    state.param_roles, state.param_meta = roles, meta
    float_keys = [k for k, v in sd.items() if v.is_floating_point()]
    extra_keys = [k for k, v in sd.items() if not v.is_floating_point()]
    for k in float_keys:  # tied names share their canonical refs
        c = aliases[k]
        if c != k and c in refs:
            refs[k] = refs[c]
    return ComputationGraph(
        state=state,
        param_refs=refs,
        param_shapes={k: tuple(v.shape) for k, v in sd.items()},
        param_dtypes={k: v.dtype for k, v in sd.items()},
        float_keys=float_keys,
        extra_keys=extra_keys,
        aliases=aliases,
        module_types=module_types,
        ops=ops,
        input_shapes=input_shapes,
        arch=arch,
        fx_graph=graph,
    )


def _to_meta(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to("meta")
    if isinstance(x, (tuple, list)):
        return type(x)(_to_meta(v) for v in x)
    return x


def _call_module(sub: nn.Module, args, kwargs, meta: bool):
    if not meta:
        return sub(*args, **kwargs)
    tensors = {k: v.to("meta") for k, v in sub.named_parameters()}
    tensors.update({k: v.to("meta") for k, v in sub.named_buffers()})
    return torch.func.functional_call(sub, tensors, tuple(args), dict(kwargs))


def _defaults_not_given(module: nn.Module, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any] | None:
    """forward() arguments that the example inputs leave out, at their
    defaults: fx then traces ``if mask is not None`` with the value forward()
    will really see, instead of a proxy."""
    import inspect

    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    out = {}
    for i, p in enumerate(params):
        if p.kind not in plain:
            return None  # *args / **kwargs: leave the signature to fx
        given = (i < len(args) and p.kind != inspect.Parameter.KEYWORD_ONLY) or p.name in kwargs
        if not given and p.default is not inspect.Parameter.empty:
            out[p.name] = p.default
    return out or None


def _execute(module, gm, graph, args, kwargs, sd, aliases, meta: bool):
    state = ChannelState()
    env: dict[fx.Node, tuple[Any, Any]] = {}
    inputs = iter(args)
    names = {n.target for n in graph.nodes if n.op == "placeholder"}
    unknown = [k for k in kwargs if k not in names]
    if unknown:
        raise TraceError(
            f"forward() of {type(module).__name__} has no argument {unknown[0]!r} "
            f"(example input keys must be among {sorted(str(n) for n in names)})"
        )
    module_types: dict[str, str] = {}
    ops: list[tuple[str, str]] = []
    training = {m: m.training for m in module.modules()}
    module.eval()
    try:
        with torch.no_grad():
            for node in graph.nodes:
                where = _module_path(node)
                if node.op == "placeholder":
                    try:
                        val = kwargs[node.target] if node.target in kwargs else next(inputs)
                        val = _to_meta(val) if meta else val
                    except StopIteration:
                        if node.args:
                            val = node.args[0]
                        else:
                            raise TraceError(
                                f"forward() of {type(module).__name__} takes more inputs than the "
                                f"{len(args) + len(kwargs)} example input(s) given (missing {node.target!r})"
                            ) from None
                    env[node] = (val, _tensor_descs(val, ("input", node.target)))
                    continue
                if node.op == "get_attr":
                    val = _fetch_attr(gm, node.target)
                    val = _to_meta(val) if meta else val
                    name = aliases.get(str(node.target), str(node.target))
                    if str(node.target) in sd:
                        desc = _tensor_descs(val, ("param", name))
                    else:
                        desc = R.untracked(val)
                    env[node] = (val, desc)
                    continue
                if node.op == "output":
                    _mark_outputs(state, fx.node.map_arg(node.args[0], lambda n: env[n][1]))
                    continue
                args = fx.node.map_arg(node.args, lambda n: env[n][0])
                kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n][0])
                dargs = fx.node.map_arg(node.args, lambda n: env[n][1])
                dkwargs = fx.node.map_arg(node.kwargs, lambda n: env[n][1])
                op = _op_name(node, module)
                ops.append((where, op))
                ctx = Ctx(state, where, op)
                if node.op == "call_module":
                    sub = module.get_submodule(node.target)
                    module_types[str(node.target)] = type(sub).__name__
                    val = _call_module(sub, args, kwargs, meta)
                    rule = R.MODULE_RULES.get(type(sub))
                    if rule is None:
                        raise UnsupportedOperationError(
                            type(sub).__name__, where,
                            hint="register a channel rule with weightspace.trace.register_module_rule, "
                                 "or rewrite it with supported layers",
                        )
                    desc = rule(ctx, sub, str(node.target), args, dargs, kwargs, dkwargs, val)
                elif node.op == "call_function":
                    val = node.target(*args, **kwargs)
                    rule = R.FUNCTION_RULES.get(node.target)
                    if rule is None and not any(_holds_neurons(env[n][1]) for n in node.all_input_nodes):
                        # tensor-free calls (torch.arange(T), math.sqrt(d),
                        # torch.ones(T, T)) and calls on constants only: the
                        # result carries no neurons
                        env[node] = (val, R.untracked(val))
                        continue
                    if rule is None:
                        raise UnsupportedOperationError(
                            op, where,
                            hint="register a channel rule with weightspace.trace.register_function_rule",
                        )
                    desc = rule(ctx, args, dargs, kwargs, dkwargs, val)
                elif node.op == "call_method":
                    self_obj = args[0]
                    val = getattr(self_obj, node.target)(*args[1:], **kwargs)
                    rule = R.METHOD_RULES.get(str(node.target))
                    if rule is None or not isinstance(self_obj, torch.Tensor):
                        if not isinstance(self_obj, torch.Tensor):
                            desc = R.untracked(val)
                            env[node] = (val, desc)
                            continue
                        raise UnsupportedOperationError(
                            op, where,
                            hint="register a channel rule with weightspace.trace.register_method_rule",
                        )
                    desc = rule(ctx, args, dargs, kwargs, dkwargs, val)
                else:  # pragma: no cover - fx has no other node kinds
                    raise TraceError(f"unexpected fx node kind {node.op!r}")
                env[node] = (val, desc)
    finally:
        for m, flag in training.items():
            m.training = flag

    return state, module_types, ops


def _fetch_attr(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for atom in target.split("."):
        obj = getattr(obj, atom)
    return obj


def _mark_outputs(state: ChannelState, descs: Any) -> None:
    """Model outputs are not permutable: fix every neuron axis they carry."""
    if isinstance(descs, tuple) and all(
        d is None or isinstance(d, (Feat, Lazy, SplitAx)) for d in descs
    ):
        for d in descs:
            if isinstance(d, Lazy):
                if d.kind == "param" and not d.opaque:
                    state.fix(state.materialize(d, d.name, "output", "output"))
                else:
                    state.fix(d)
            elif isinstance(d, SplitAx):
                state.fix(d)
                state.disable_heads(d.sid)
            elif d is not None:
                state.fix(d)
                for s in d.segs:
                    state.blocks[s.block].kind = "output" if state.blocks[s.block].kind == "hidden" else state.blocks[s.block].kind
        return
    if isinstance(descs, (list, tuple)):
        for d in descs:
            _mark_outputs(state, d)
    elif isinstance(descs, dict):
        for d in descs.values():
            _mark_outputs(state, d)
