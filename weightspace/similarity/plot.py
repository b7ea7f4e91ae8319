"""Heatmaps of layer x layer similarity matrices (matplotlib, Agg backend).

Figures are built on ``matplotlib.figure.Figure`` directly (no ``pyplot``
global state), so this is safe to call from library code, tests and servers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from weightspace.similarity.cka import CKAMatrix

__all__ = ["plot_similarity_heatmap"]


def plot_similarity_heatmap(
    matrix: CKAMatrix | np.ndarray,
    path_stem: str | Path,
    *,
    layers_a: Sequence[str] | None = None,
    layers_b: Sequence[str] | None = None,
    title: str = "",
    xlabel: str = "model b",
    ylabel: str = "model a",
    vmin: float = 0.0,
    vmax: float = 1.0,
    formats: Sequence[str] = ("png", "svg"),
    annotate: bool | None = None,
) -> list[Path]:
    """Write a heatmap of a ``(La, Lb)`` similarity matrix.

    Args:
        matrix: a :class:`CKAMatrix` or an array ``(La, Lb)``.
        path_stem: output path without extension (parents are created).
        layers_a, layers_b: tick labels (default: the CKAMatrix's layers).
        title, xlabel, ylabel: text.
        vmin, vmax: colour range.
        formats: file extensions to write.
        annotate: print values in the cells (default: when both sides <= 12).

    Returns:
        the written paths, one per format.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if isinstance(matrix, CKAMatrix):
        values = matrix.values
        layers_a = list(matrix.layers_a) if layers_a is None else list(layers_a)
        layers_b = list(matrix.layers_b) if layers_b is None else list(layers_b)
    else:
        values = np.asarray(matrix, dtype=np.float64)
        if values.ndim != 2:
            raise ValueError(f"matrix must be 2-D (La, Lb), got shape {values.shape}")
    la, lb = values.shape
    layers_a = [str(i) for i in range(la)] if layers_a is None else layers_a
    layers_b = [str(j) for j in range(lb)] if layers_b is None else layers_b
    if annotate is None:
        annotate = la <= 12 and lb <= 12
    fig = Figure(figsize=(1.6 + 0.45 * lb, 1.4 + 0.4 * la), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(values, vmin=vmin, vmax=vmax, cmap="magma", origin="lower", aspect="auto")
    ax.set_xticks(range(lb), layers_b, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(la), layers_a, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    if annotate:
        for i in range(la):
            for j in range(lb):
                v = values[i, j]
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if v > 0.6 * (vmax - vmin) + vmin else "white")
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        p = stem.with_name(stem.name + "." + fmt)
        fig.savefig(p, dpi=150)
        paths.append(p)
    return paths
