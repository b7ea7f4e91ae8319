"""Activation capture by layer name through a ``torch.fx`` trace.

The model is symbolically traced once (standard ``torch.fx`` leaf rules:
``torch.nn`` modules are leaves, everything else is traced through). The
requested nodes become the outputs of a new ``GraphModule`` that shares the
model's parameters, and dead code after the last requested node is removed,
so capturing an early layer does not run the rest of the network. No forward
hooks, no copies of the weights, and the model is not modified.

Layer names:

* a ``call_module`` node is named by its module path (``"layers.0"``,
  ``"blocks.1.attn.proj"``). A module called more than once is listed by its
  fx node names, one per call (``"act"``, ``"act_1"``); fx node names are
  accepted as aliases for every module call;
* any other node (``call_function`` / ``call_method``, e.g. ``torch.relu``
  in a ResNet, ``x.flatten(1)``) is named by its fx node name (``"relu_3"``,
  ``"flatten"``, ``"add_2"``). :func:`capturable_layers` lists them.

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


class ActivationCapture:
    """A traced view of ``model`` that returns the activations of ``layers``.

    Args:
        model: any fx-traceable ``nn.Module`` (not modified; parameters shared).
        layers: layer names (see module docstring); ``None`` = every
            capturable layer.

    Calling it (``cap(x)`` with a batch ``x`` of shape ``(b, ...)``) returns
    ``{layer: tensor}`` of raw, detached outputs in the order of ``layers``,
    computed in eval mode without gradients.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str] | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.model = model
        with _eval_mode(model):  # forwards may branch on self.training
            tracer, graph = _trace(model)
        all_names, table = _layer_table(graph)
        if layers is None:
            layers = all_names
        if isinstance(layers, str):
            layers = [layers]
        layers = list(layers)
        if not layers:
            raise SimilarityInputError("layers is empty; pass at least one layer name")
        dup = [k for k, c in Counter(layers).items() if c > 1]
        if dup:
            raise SimilarityInputError(f"layer names given more than once: {dup}")
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

    def __call__(self, x: torch.Tensor) -> dict[str, Any]:
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
    model: nn.Module, example_input: Any = None, *, modules_only: bool = False
) -> list[str]:
    """Names of the layers whose activations can be captured, in graph order.

    Args:
        model: an fx-traceable module.
        example_input: optional input batch ``(b, ...)``. When given, the
            network is run once and only nodes that produce a floating-point,
            batch-first tensor (first dim ``b``) are kept -- this drops shape
            arithmetic (``size``/``getattr``), tuple-valued modules such as
            ``nn.MultiheadAttention`` and head-major reshapes. Use an
            unusual batch size (e.g. 7) to avoid coincidental matches.
        modules_only: only ``call_module`` nodes (module outputs).

    Returns:
        list of layer names accepted by :class:`ActivationCapture`.
    """
    with _eval_mode(model):
        _, graph = _trace(model)
    names, table = _layer_table(graph)
    if modules_only:
        names = [k for k in names if table[k].op == "call_module"]
    if example_input is None or not names:
        return names
    cap = ActivationCapture(model, names)
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


def iter_activations(
    model: nn.Module,
    layers: Sequence[str] | None,
    data: Any,
    *,
    reduction: Reduction = "flatten",
    batch_size: int = 256,
    max_samples: int | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Stream activations batch by batch (memory: one batch).

    Args:
        model: fx-traceable module.
        layers: layer names; ``None`` = all capturable.
        data: see :func:`batches`.
        reduction: ``"flatten"`` (default), ``"pool_spatial"``,
            ``"pool_tokens"``, ``"none"`` or a callable ``(b, ...) -> (b, d)``.
        batch_size: chunk size when ``data`` is one tensor/array.
        max_samples: stop after this many samples (the last batch is cut).

    Yields:
        ``{layer: (b, d_layer)}`` CPU tensors per batch.
    """
    cap = ActivationCapture(model, layers)
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
