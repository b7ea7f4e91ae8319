"""Canonicalization of networks before a predictor sees them: every network
is replaced by the canonical representative of its orbit under (part of) its
architecture's symmetry group (:func:`weightspace.symmetry.canonicalize`), so
a predictor on the result is invariant to that part of the group.

Modes (the ``canonicalize=`` option of the predictors):

* ``"none"``: networks unchanged.
* ``"scale_sign"``: per-unit positive rescaling (ReLU: balanced incoming and
  outgoing norms) and sign flips (odd activations: largest incoming weight
  positive); the permutation is left alone (for models already invariant to
  it, such as GMN).
* ``"full"``: scale, sign, then a canonical neuron order.
"""

from __future__ import annotations

from typing import Sequence

import torch

from weightspace.graph import ParameterGraph
from weightspace.symmetry import canonicalize

__all__ = ["CANONICALIZE_MODES", "canonicalize_graphs"]

#: ``mode -> (scale, sign, permute)`` steps of :func:`weightspace.symmetry.canonicalize`
CANONICALIZE_MODES = {
    "none": None,
    "scale_sign": (True, True, False),
    "full": (True, True, True),
}


def canonicalize_graphs(graphs: Sequence[ParameterGraph], mode: str, *, chunk: int = 512) -> list[ParameterGraph]:
    """``graphs`` with their weights canonicalized under ``mode`` (module
    docstring); batched per architecture (``chunk`` networks at a time),
    order kept. Networks whose architecture has no symmetry of the mode are
    returned as they are."""
    if mode not in CANONICALIZE_MODES:
        raise ValueError(f"canonicalize must be one of {sorted(CANONICALIZE_MODES)}, got {mode!r}")
    steps = CANONICALIZE_MODES[mode]
    if steps is None:
        return list(graphs)
    scale, sign, permute = steps
    out: list[ParameterGraph | None] = [None] * len(graphs)
    by_template: dict[int, list[int]] = {}
    for i, g in enumerate(graphs):
        by_template.setdefault(id(g.template), []).append(i)
    for idx in by_template.values():
        t = graphs[idx[0]].template
        spec = t.spec
        if not spec.scalings and not (permute and spec.groups):
            for i in idx:
                out[i] = graphs[i]
            continue
        for lo in range(0, len(idx), chunk):
            part = idx[lo : lo + chunk]
            sds = [graphs[i].to_state_dict() for i in part]
            batch = {k: torch.stack([sd[k] for sd in sds]) for k in t.keys}
            canon, _ = canonicalize(batch, spec, scale=scale, sign=sign, permute=permute, batched=True)
            for j, i in enumerate(part):
                sd = {k: canon[k][j] for k in t.keys}
                sd.update(graphs[i].extras)
                out[i] = t.graph(sd)
    return out  # type: ignore[return-value]
