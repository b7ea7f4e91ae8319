"""Probe features: what each neuron computes on fixed probe inputs (Neural
Graphs, Kofinas et al., 2024), as extra node features for :class:`GMN`.

A permuted network computes the same function with its neurons relabelled,
so these features move with the neurons: node features stay equivariant and
the GMN stays invariant/equivariant.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from weightspace.graph import ParameterGraph

__all__ = ["probe_features", "PROBED_OPS"]

#: block producers whose output is captured (one output tensor, channels = block neurons)
PROBED_OPS = ("Linear", "Conv1d", "Conv2d", "Conv3d", "Embedding")


def _per_neuron(act: Tensor, size: int, channel_first: bool) -> Tensor | None:
    """``[P, ...] -> [P, size]`` by averaging over every non-channel axis."""
    if not act.is_floating_point() or act.dim() < 2:
        return None
    if channel_first and act.dim() >= 3 and act.shape[1] == size:
        return act.flatten(2).mean(2)
    if act.shape[-1] == size:
        return act.reshape(act.shape[0], -1, size).mean(1)
    return None


def probe_features(graph: ParameterGraph, module: nn.Module, probes: Tensor) -> Tensor:
    """Activations of ``graph``'s network on ``probes``, one row per node.

    The network is ``module`` (the architecture; its own weights are not
    used) run with ``graph``'s weights through :func:`torch.func.functional_call`
    in eval mode under ``no_grad``; ``module`` is left unchanged. A block
    created by a Linear / Conv / Embedding module gets that module's output
    averaged over every non-channel axis; input blocks get the probe inputs
    themselves; every other node (module nodes, blocks without a capturable
    producer) gets zeros.

    Args:
        graph: the network's parameter graph.
        module: an instance of its architecture.
        probes: ``[P, *input_shape]`` fixed probe inputs (same for every graph).

    Returns:
        ``[N, P]`` float32 node features (pass a list of them to
        :func:`weightspace.nn.collate` as ``node_extra``; ``GMN(extra_dim=P)``).
    """
    t = graph.template
    blocks = t.spec.blocks
    mods = dict(module.named_modules())
    captured: dict[str, Tensor] = {}
    hooks = []

    def hook(name):
        def fn(_m, _inp, out):
            if isinstance(out, Tensor) and name not in captured:
                captured[name] = out.detach()
        return fn

    for b in blocks:
        if b.op in PROBED_OPS and b.producer in mods and b.producer not in {h[0] for h in hooks}:
            hooks.append((b.producer, mods[b.producer].register_forward_hook(hook(b.producer))))
    training = {m: m.training for m in module.modules()}
    module.eval()
    try:
        with torch.no_grad():
            functional_call(module, graph.to_state_dict(), (probes,))
    finally:
        for _, h in hooks:
            h.remove()
        for m, flag in training.items():
            m.training = flag
    P = probes.shape[0]
    feats = torch.zeros(t.num_nodes, P)
    for i, b in enumerate(blocks):
        if b.kind == "input":
            act = probes
            per = _per_neuron(act, b.size, channel_first=act.dim() >= 3)
        elif b.op in PROBED_OPS and b.producer in captured:
            per = _per_neuron(captured[b.producer], b.size, channel_first=b.op.startswith("Conv"))
        else:
            per = None
        if per is None:
            continue
        off = int(t.block_offset[i])
        feats[off : off + b.size] = per.T.to(torch.float32)
    return feats
