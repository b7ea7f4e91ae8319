"""``weightspace quickstart``: a short end-to-end tour that runs offline on a
laptop CPU. Returns results as data; the CLI prints and writes the report.

It grows as capabilities land; today it covers the foundation: parameter
graphs and permutation specs for every registered architecture, and a check
that a random permutation from each spec leaves the network's function
unchanged while permuting only one side of a group does not.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import torch

import zoo
from weightspace.core import analyze
from weightspace.symmetry import apply_permutation, random_permutation


def foundation_tour(
    archs: list[str] | None = None, seed: int = 0, progress: Callable[[str], None] | None = None
) -> list[dict]:
    """For each architecture: graph/spec sizes, build time, and the output
    difference under a random spec permutation (float64) and under a broken
    one (only the first tensor axis of the largest group permuted)."""
    rows = []
    for name in archs or zoo.list_models():
        if progress:
            progress(name)
        t0 = time.perf_counter()
        a = analyze(name)
        build = time.perf_counter() - t0
        model = a.module.double().eval()
        x = a.example_input.double() if a.example_input.is_floating_point() else a.example_input
        sd = model.state_dict()
        perm = random_permutation(a.spec, seed=seed)
        permuted = zoo.create_model(name).double().eval()
        permuted.load_state_dict(apply_permutation(sd, a.spec, perm))
        with torch.no_grad():
            y = model(x)
            diff = (permuted(x) - y).abs().max().item()
        broken_diff = float("nan")
        if len(a.spec):
            g = max(a.spec.groups, key=lambda g: g.size)
            p, axis, start, unit = g.axes[0]
            bad = dict(sd)
            t = bad[p]
            shift = torch.roll(torch.arange(g.size), 1)
            idx = torch.arange(t.shape[axis])
            block = idx[start : start + g.size * unit].view(g.size, unit)[shift].reshape(-1)
            idx[start : start + g.size * unit] = block
            bad[p] = t.index_select(axis, idx)
            permuted.load_state_dict(bad)
            with torch.no_grad():
                broken_diff = (permuted(x) - y).abs().max().item()
        s = a.template.summary()
        rows.append(
            {
                "arch": name,
                "parameters": sum(v.numel() for v in a.module.parameters()),
                "groups": len(a.spec),
                "head_groups": len(a.spec.head_groups),
                "nodes": s["nodes"],
                "edges": s["edges"],
                "build_seconds": round(build, 4),
                "max_abs_diff_permuted": diff,
                "max_abs_diff_broken": broken_diff,
            }
        )
    return rows


def run_quickstart(out: Path, small: bool = False, seed: int = 0, progress: Callable[[str], None] | None = None) -> dict:
    """Run the tour, write ``results.json`` and ``report.md`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    archs = ["mlp", "cnn_small", "resnet20", "vit_tiny", "token_transformer"] if small else None
    rows = foundation_tour(archs, seed=seed, progress=progress)
    results = {"foundation": rows}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    lines = [
        "# weightspace quickstart",
        "",
        "## Parameter graphs and permutation symmetries",
        "",
        "| arch | params | groups | heads | nodes | edges | build s | diff (spec perm) | diff (broken perm) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['arch']} | {r['parameters']} | {r['groups']} | {r['head_groups']} | {r['nodes']} | "
            f"{r['edges']} | {r['build_seconds']:.3f} | {r['max_abs_diff_permuted']:.1e} | {r['max_abs_diff_broken']:.1e} |"
        )
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return results
