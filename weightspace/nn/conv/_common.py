"""Small building blocks shared by the metanetwork layers."""

from __future__ import annotations

from torch import nn

#: reducers behind each aggregation name, in concatenation order. ``var`` is
#: turned into a standard deviation by the layer (identically in every backend).
AGGRS: dict[str, tuple[str, ...]] = {
    "sum": ("sum",),
    "mean": ("mean",),
    "max": ("max",),
    "pna": ("mean", "min", "max", "var"),
}

NORMS = ("layer", "batch", "none")


def make_norm(kind: str, dim: int) -> nn.Module:
    """``LayerNorm`` / ``BatchNorm1d`` / ``Identity`` over the last dim ``[*, dim]``."""
    if kind == "layer":
        return nn.LayerNorm(dim)
    if kind == "batch":
        return nn.BatchNorm1d(dim)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


def mlp(d_in: int, d_hidden: int, d_out: int, act: type[nn.Module] = nn.SiLU, dropout: float = 0.0) -> nn.Sequential:
    """``Linear -> act -> Dropout -> Linear``: ``[*, d_in] -> [*, d_out]``."""
    return nn.Sequential(nn.Linear(d_in, d_hidden), act(), nn.Dropout(dropout), nn.Linear(d_hidden, d_out))


def activation(name: str) -> type[nn.Module]:
    """Activation class by name (``relu``, ``silu``, ``gelu``, ``tanh``)."""
    acts = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU, "tanh": nn.Tanh}
    if name not in acts:
        raise ValueError(f"act must be one of {sorted(acts)}, got {name!r}")
    return acts[name]
