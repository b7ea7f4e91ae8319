"""Activation capture by layer name: through a ``torch.fx`` trace, or
through forward hooks on named submodules for models fx cannot trace.

Two capture paths, one API (``method=``):

* ``"fx"``: the model is symbolically traced once (standard ``torch.fx`` leaf
  rules: ``torch.nn`` modules are leaves, everything else is traced through).
  The requested nodes become the outputs of a new ``GraphModule`` that shares
  the model's parameters, and dead code after the last requested node is
  removed, so capturing an early layer does not run the rest of the network.
  No forward hooks, no copies of the weights, and the model is not modified.
* ``"hooks"``: works for any module (Hugging Face models, data-dependent
  control flow). A forward hook is put on each requested submodule for the
  duration of one call and removed afterwards (the model keeps no hooks);
  the whole forward runs, and each output is copied (so a later in-place
  operation cannot change it).
* ``"auto"`` (default): fx when the model traces and every requested name is
  an fx layer; forward hooks when fx cannot trace the model (e.g. every
  ``transformers`` model) or when a requested name is a submodule path that
  fx traced through (``"blocks.0"``, not an fx leaf).

Layer names of the fx path:

* a ``call_module`` node is named by its module path (``"layers.0"``,
  ``"blocks.1.attn.proj"``). A module called more than once is listed by its
  fx node names, one per call (``"act"``, ``"act_1"``); fx node names are
  accepted as aliases for every module call;
* any other node (``call_function`` / ``call_method``, e.g. ``torch.relu``
  in a ResNet, ``x.flatten(1)``) is named by its fx node name (``"relu_3"``,
  ``"flatten"``, ``"add_2"``). :func:`capturable_layers` lists them.

Layer names of the hooks path: the module paths of ``model.named_modules()``
(``"transformer.h.0.mlp.c_fc"``, ``"transformer.h.0"``), the model itself
excluded; a layer is the module's output. Outputs that are not a tensor are
reduced to their first tensor: a tuple / list -> its first tensor element
(an attention block returning ``(hidden, weights)`` gives ``hidden``), a
mapping (a ``ModelOutput``) -> its first tensor value. Functions called in
``forward`` (``torch.relu``, ``x + y``) are not capturable this way, and a
module must run exactly once per forward (a module run twice is refused with
a clear error; capture its parent or use the fx path).
:func:`capturable_layers` with an example input lists the modules that ran
once and returned a batch-first float tensor, in the order their outputs were
produced (children before their parent).

Activations are always batch-first: a captured tensor's first dimension must
be the batch size. ``reduction`` turns it into a ``(batch, features)`` matrix
(``"flatten"``, ``"pool_spatial"`` for ``(B, C, *S)`` maps, ``"pool_tokens"``
for ``(B, *T, D)`` token sequences, ``"none"``, or a callable).

The model runs in eval mode under ``torch.no_grad()``; every module's
``training`` flag is restored afterwards.

Memory: :func:`iter_activations` yields one batch at a time (feed a streaming
accumulator, :mod:`weightspace.similarity.streaming`); only
:func:`capture_activations` concatenates, up to ``max_samples`` samples.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import operator
from collections import Counter
from typing import Any, Callable, Iterable, Iterator, Sequence, Union

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from weightspace.errors import TraceError
from weightspace.similarity._validate import SimilarityInputError

__all__ = [
    "ActivationCapture",
    "batches",
    "capturable_layers",
    "capture_activations",
    "iter_activations",
]

Reduction = Union[str, Callable[[torch.Tensor], torch.Tensor]]
_REDUCTIONS = ("flatten", "pool_spatial", "pool_tokens", "none")
_METHODS = ("auto", "fx", "hooks")


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    """Eval mode + no_grad for the duration; restores every ``training`` flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, flag in flags:
            m.training = flag


def _trace(model: nn.Module) -> tuple[fx.Tracer, fx.Graph]:
    tracer = fx.Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, RuntimeError, ...
        raise TraceError(
            f"torch.fx could not trace {type(model).__name__} for activation capture: "
            f"{type(exc).__name__}: {exc}. Data-dependent Python control flow (e.g. "
            "`if x.dim() == 2:`) cannot be traced symbolically; move it out of forward() "
            "or wrap the offending submodule so fx treats it as a leaf"
        ) from exc
    return tracer, graph


def _layer_table(graph: fx.Graph) -> tuple[list[str], dict[str, fx.Node]]:
    """Canonical layer names in graph order, and every accepted name -> node."""
    nodes = [n for n in graph.nodes if n.op in ("call_module", "call_function", "call_method")]
    calls = Counter(n.target for n in nodes if n.op == "call_module")
    names: list[str] = []
    table: dict[str, fx.Node] = {}
    for n in nodes:
        if n.op == "call_module" and calls[n.target] == 1:
            names.append(str(n.target))
            table[str(n.target)] = n
        else:
            names.append(n.name)
        table[n.name] = n
    return names, table


def _first_tensor(batch: Any) -> Any:
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise SimilarityInputError("data yielded an empty tuple/list")
        return batch[0]
    if isinstance(batch, dict):
        raise SimilarityInputError(
            "data yielded a dict; yield the model input tensor or (input, target) tuples"
        )
    return batch


def batches(data: Any, batch_size: int = 256) -> Iterator[Any]:
    """The batches of ``data``.

    Args:
        data: a whole dataset as one tensor / array ``(N, ...)`` (split into
            chunks of ``batch_size``), or an iterable of batches (a
            ``DataLoader``, a list of tensors, a generator) yielding tensors,
            arrays or ``(input, target, ...)`` tuples.
        batch_size: chunk size when ``data`` is a single tensor/array.

    Yields:
        model inputs, ``(b, ...)`` (tensors or arrays, as given).
    """
    if isinstance(data, (torch.Tensor, np.ndarray)):
        if data.ndim == 0:
            raise SimilarityInputError("data is a scalar; pass a (N, ...) tensor or an iterable of batches")
        if batch_size < 1:
            raise SimilarityInputError(f"batch_size must be >= 1, got {batch_size}")
        for i in range(0, data.shape[0], batch_size):
            yield data[i : i + batch_size]
        return
    for batch in data:
        yield _first_tensor(batch)


def _reduce(t: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if callable(reduction):
        return reduction(t)
    if reduction == "flatten":
        return t.reshape(t.shape[0], -1)
    if reduction == "pool_spatial":
        return t.mean(dim=tuple(range(2, t.ndim))) if t.ndim > 2 else t
    if reduction == "pool_tokens":
        return t.mean(dim=tuple(range(1, t.ndim - 1))) if t.ndim > 2 else t
    if reduction == "none":
        return t
    raise SimilarityInputError(f"reduction must be one of {_REDUCTIONS} or a callable, got {reduction!r}")


def _check_method(method: str) -> None:
    if method not in _METHODS:
        raise SimilarityInputError(f"method must be one of {_METHODS}, got {method!r}")


def _module_table(model: nn.Module) -> tuple[list[str], dict[str, nn.Module]]:
    """Hook-path layer names (``named_modules`` order, each module once) and
    every accepted module path (a module registered under two paths answers
    to both) -> module. The model itself is not a layer."""
    names = [k for k, _ in model.named_modules() if k]
    table = {k: m for k, m in model.named_modules(remove_duplicate=False) if k}
    return names, table


def _output_tensor(output: Any) -> Any:
    """A module's output as one tensor: tuple / list -> first tensor element,
    mapping (``ModelOutput``) -> first tensor value; anything else as is."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        values: Iterable[Any] = output
    elif isinstance(output, dict):
        values = output.values()
    else:
        return output
    for v in values:
        if isinstance(v, torch.Tensor):
            return v
    return output


def _fx_or_none(model: nn.Module, method: str) -> tuple[Any, TraceError | None]:
    """``((tracer, graph), None)`` when fx traces ``model``; ``(None, error)``
    when it cannot and ``method == "auto"``; raises for ``method == "fx"``."""
    if method == "hooks":
        return None, None
    try:
        with _eval_mode(model):  # forwards may branch on self.training
            return _trace(model), None
    except TraceError as exc:
        if method == "fx":
            raise
        return None, exc


def _no_hook_layers(model: nn.Module, fx_error: TraceError | None) -> TraceError | SimilarityInputError:
    what = f"{type(model).__name__} has no submodules, so forward hooks cannot capture anything either"
    if fx_error is not None:
        return TraceError(f"{fx_error.message}; {what}")
    return SimilarityInputError(f"{what}; use method='fx'")


def _shown(names: Sequence[str], limit: int = 40) -> str:
    head = list(names[:limit])
    return f"{head}" + (f" ... ({len(names) - limit} more)" if len(names) > limit else "")


class ActivationCapture:
    """A view of ``model`` that returns the activations of ``layers``.

    Args:
        model: any ``nn.Module`` (not modified; parameters shared).
        layers: layer names (see module docstring); ``None`` = every
            capturable layer.
        method: ``"auto"`` (default), ``"fx"`` or ``"hooks"`` (see module
            docstring); ``self.method`` is the path taken (``"fx"`` /
            ``"hooks"``).

    Calling it (``cap(x)`` with a batch ``x`` of shape ``(b, ...)``) returns
    ``{layer: tensor}`` of raw, detached outputs in the order of ``layers``,
    computed in eval mode without gradients.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str] | None = None, *, method: str = "auto") -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        _check_method(method)
        self.model = model
        if isinstance(layers, str):
            layers = [layers]
        if layers is not None:
            layers = list(layers)
            if not layers:
                raise SimilarityInputError("layers is empty; pass at least one layer name")
            dup = [k for k, c in Counter(layers).items() if c > 1]
            if dup:
                raise SimilarityInputError(f"layer names given more than once: {dup}")
        traced, fx_error = _fx_or_none(model, method)
        if traced is not None:
            tracer, graph = traced
            all_names, table = _layer_table(graph)
            _, modules = _module_table(model)
            unknown = [k for k in layers or () if k not in table]
            if method == "fx" or not unknown or not all(k in modules for k in unknown):
                self._init_fx(tracer, graph, all_names, table, layers)
                return
        self._init_hooks(layers, fx_error)

    # ------------------------------------------------------------------ fx
    def _init_fx(self, tracer, graph, all_names, table, layers) -> None:
        model = self.model
        if layers is None:
            layers = all_names
        nodes = []
        for name in layers:
            if name not in table:
                close = difflib.get_close_matches(name, list(table), n=5)
                hint = f"; did you mean {close}?" if close else ""
                raise SimilarityInputError(
                    f"{type(model).__name__} has no capturable layer {name!r}{hint} "
                    f"Capturable layers: {all_names}"
                )
            nodes.append(table[name])
        self.method = "fx"
        self.layers: tuple[str, ...] = tuple(layers)
        # element nodes of tuple-valued layers (for the error message), read
        # before dead-code elimination removes the unused ones
        self._getitems = {
            name: [u.name for u in node.users if u.op == "call_function" and u.target is operator.getitem]
            for name, node in zip(layers, nodes)
        }
        output = next(n for n in graph.nodes if n.op == "output")
        output.args = (tuple(nodes),)
        gm = fx.GraphModule(tracer.root, graph)
        gm.graph.eliminate_dead_code()  # nothing after the last requested layer runs
        gm.graph.lint()
        gm.recompile()
        self._gm = gm

    # --------------------------------------------------------------- hooks
    def _init_hooks(self, layers, fx_error: TraceError | None) -> None:
        model = self.model
        all_names, table = _module_table(model)
        if layers is None:
            if not all_names:
                raise _no_hook_layers(model, fx_error)
            layers = all_names
        for name in layers:
            if name not in table:
                close = difflib.get_close_matches(name, list(table), n=5)
                hint = f"; did you mean {close}?" if close else ""
                why = " (torch.fx cannot trace it, so layers are submodule paths)" if fx_error is not None else ""
                raise SimilarityInputError(
                    f"{type(model).__name__} has no submodule {name!r}{why}{hint} "
                    f"Capturable layers: {_shown(all_names)}"
                )
        self.method = "hooks"
        self.layers = tuple(layers)
        self._getitems = {}
        self._hooked: dict[int, tuple[nn.Module, list[str]]] = {}
        for name in layers:
            mod = table[name]
            self._hooked.setdefault(id(mod), (mod, []))[1].append(name)

    def _call_hooks(self, x: torch.Tensor) -> dict[str, Any]:
        outs: dict[str, Any] = {}
        runs: Counter = Counter()

        def make_hook(names: list[str]):
            def hook(module, args, output):
                t = _output_tensor(output)
                if isinstance(t, torch.Tensor):
                    t = t.detach().clone()  # later in-place ops must not change it
                for n in names:
                    runs[n] += 1
                    outs[n] = t

            return hook

        handles = []
        try:
            for mod, names in self._hooked.values():
                handles.append(mod.register_forward_hook(make_hook(names)))
            with _eval_mode(self.model):
                self.model(x)
        finally:
            for h in handles:
                h.remove()
        cls = type(self.model).__name__
        for n in self.layers:
            if runs[n] == 0:
                raise SimilarityInputError(
                    f"submodule {n!r} did not run in {cls}.forward on this input, so it has no activation"
                )
            if runs[n] > 1:
                raise SimilarityInputError(
                    f"submodule {n!r} ran {runs[n]} times in one {cls}.forward; forward hooks capture one "
                    "output per module: capture the module that calls it, or use method='fx' if the model "
                    "traces (it lists each call)"
                )
        return {n: outs[n] for n in self.layers}

    def __call__(self, x: torch.Tensor) -> dict[str, Any]:
        if self.method == "hooks":
            return self._call_hooks(x)
        with _eval_mode(self.model):
            outs = self._gm(x)
        return dict(zip(self.layers, outs))

    def activations(self, x: Any, reduction: Reduction = "flatten") -> dict[str, torch.Tensor]:
        """Reduced activations of one batch.

        Args:
            x: model input ``(b, ...)`` (tensor or array; floating inputs are
                cast to the model's parameter dtype, all moved to its device).
            reduction: see module docstring.

        Returns:
            ``{layer: (b, d_layer)}`` CPU tensors (``(b, ...)`` for ``"none"``).
        """
        x = _to_model_input(self.model, x)
        b = x.shape[0]
        out = {}
        for name, t in self(x).items():
            if not isinstance(t, torch.Tensor):
                alt = self._getitems.get(name) or []
                hint = f"; capture its element node(s) {alt} instead" if alt else ""
                raise SimilarityInputError(
                    f"layer {name!r} returns {type(t).__name__}, not a tensor{hint}"
                )
            if t.ndim == 0 or t.shape[0] != b:
                raise SimilarityInputError(
                    f"layer {name!r} output has shape {tuple(t.shape)}, whose first dimension is "
                    f"not the batch size {b}: it is not a per-sample activation"
                )
            r = _reduce(t, reduction)
            if not isinstance(r, torch.Tensor) or r.shape[0] != b:
                raise SimilarityInputError(
                    f"reduction of layer {name!r} must return a ({b}, ...) tensor"
                )
            out[name] = r.detach().to("cpu")
        return out


def _model_param(model: nn.Module) -> torch.Tensor | None:
    for p in model.parameters():
        return p
    for b in model.buffers():
        return b
    return None


def _to_model_input(model: nn.Module, x: Any) -> torch.Tensor:
    t = torch.as_tensor(x)
    ref = _model_param(model)
    if ref is not None:
        dtype = ref.dtype if (t.is_floating_point() and ref.is_floating_point()) else t.dtype
        t = t.to(device=ref.device, dtype=dtype)
    return t


def capturable_layers(
    model: nn.Module, example_input: Any = None, *, modules_only: bool = False, method: str = "auto"
) -> list[str]:
    """Names of the layers whose activations can be captured, in graph order.

    Args:
        model: any module (see ``method``).
        example_input: optional input batch ``(b, ...)``. When given, the
            network is run once and only layers that produce a floating-point,
            batch-first tensor (first dim ``b``) are kept -- this drops shape
            arithmetic (``size``/``getattr``), tuple-valued modules such as
            ``nn.MultiheadAttention`` (fx) and head-major reshapes, and on
            the hooks path modules that did not run exactly once. Use an
            unusual batch size (e.g. 7) to avoid coincidental matches.
        modules_only: only ``call_module`` nodes (module outputs); every
            hooks-path layer is a module output.
        method: ``"auto"`` (fx when the model traces, else forward hooks),
            ``"fx"`` or ``"hooks"``.

    Returns:
        list of layer names accepted by :class:`ActivationCapture` (with the
        same ``method``). Hooks path: ``named_modules`` order without
        ``example_input``, the order the outputs were produced with it.
    """
    _check_method(method)
    traced, fx_error = _fx_or_none(model, method)
    if traced is None:
        return _hook_layers(model, example_input, fx_error)
    _, graph = traced
    names, table = _layer_table(graph)
    if modules_only:
        names = [k for k in names if table[k].op == "call_module"]
    if example_input is None or not names:
        return names
    cap = ActivationCapture(model, names, method="fx")
    x = _to_model_input(model, example_input)
    outs = cap(x)
    b = x.shape[0]
    return [
        k
        for k in names
        if isinstance(outs[k], torch.Tensor)
        and outs[k].is_floating_point()
        and outs[k].ndim >= 1
        and outs[k].shape[0] == b
    ]


def _hook_layers(model: nn.Module, example_input: Any, fx_error: TraceError | None) -> list[str]:
    names, _ = _module_table(model)
    if not names:
        raise _no_hook_layers(model, fx_error)
    if example_input is None:
        return names
    x = _to_model_input(model, example_input)
    b = x.shape[0]
    seen: dict[int, list] = {}  # id(module) -> [runs, ok]; insertion = output order
    name_of: dict[int, str] = {}
    for k, m in model.named_modules():
        if k:
            name_of[id(m)] = k

    def hook(module, args, output):
        t = _output_tensor(output)
        ok = (isinstance(t, torch.Tensor) and t.is_floating_point() and t.ndim >= 1 and t.shape[0] == b)
        entry = seen.setdefault(id(module), [0, ok])
        entry[0] += 1

    handles = []
    try:
        for k, m in model.named_modules():
            if k:
                handles.append(m.register_forward_hook(hook))
        with _eval_mode(model):
            model(x)
    finally:
        for h in handles:
            h.remove()
    return [name_of[i] for i, (runs, ok) in seen.items() if runs == 1 and ok and i in name_of]


def iter_activations(
    model: nn.Module,
    layers: Sequence[str] | None,
    data: Any,
    *,
    reduction: Reduction = "flatten",
    batch_size: int = 256,
    max_samples: int | None = None,
    method: str = "auto",
) -> Iterator[dict[str, torch.Tensor]]:
    """Stream activations batch by batch (memory: one batch).

    Args:
        model: any module.
        layers: layer names; ``None`` = all capturable.
        data: see :func:`batches`.
        reduction: ``"flatten"`` (default), ``"pool_spatial"``,
            ``"pool_tokens"``, ``"none"`` or a callable ``(b, ...) -> (b, d)``.
        batch_size: chunk size when ``data`` is one tensor/array.
        max_samples: stop after this many samples (the last batch is cut).
        method: capture path, ``"auto"`` | ``"fx"`` | ``"hooks"`` (see
            :class:`ActivationCapture`).

    Yields:
        ``{layer: (b, d_layer)}`` CPU tensors per batch.
    """
    cap = ActivationCapture(model, layers, method=method)
    seen = 0
    for x in batches(data, batch_size):
        if max_samples is not None:
            if seen >= max_samples:
                return
            x = x[: max_samples - seen]
        acts = cap.activations(x, reduction)
        seen += next(iter(acts.values())).shape[0]
        yield acts


def capture_activations(model: nn.Module, layers: Sequence[str] | None, data: Any, **options: Any) -> dict[str, torch.Tensor]:
    """All activations of ``layers`` over ``data``, concatenated.

    Holds ``N x sum(d_layer)`` values; bound it with ``max_samples`` or use
    :func:`iter_activations` with a streaming accumulator for large data.

    Args:
        as for :func:`iter_activations` (``reduction``, ``batch_size`` and
        ``max_samples`` keyword-only; the signature is declared there once).

    Returns:
        ``{layer: (N, d_layer)}`` CPU tensors in the activations' dtype.
    """
    chunks: dict[str, list[torch.Tensor]] = {}
    for acts in iter_activations(model, layers, data, **options):
        for k, v in acts.items():
            chunks.setdefault(k, []).append(v)
    if not chunks:
        raise SimilarityInputError("data yielded no batches")
    return {k: torch.cat(v) for k, v in chunks.items()}


capture_activations.__signature__ = inspect.signature(iter_activations).replace(  # type: ignore[attr-defined]
    return_annotation=capture_activations.__annotations__["return"]
)
