"""``weightspace merge CONFIG OUT``: merge models as a YAML config says
(OUT is a ``.safetensors`` file, or a directory when the models are Hugging
Face directories) (see :mod:`weightspace.merge.config`). The work is done by
:func:`weightspace.merge.config.run_config`; this file prints and plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer


def _plot_paths(outcome, png: Path) -> list[Path]:
    """Loss/accuracy along the linear path, aligned vs naive (PNG + SVG)."""
    import matplotlib

    from weightspace.io import atomic_write

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for p, label, style in ((outcome.path_naive, "naive", "--"), (outcome.path, outcome.summary["method"], "-")):
        if p is None:
            continue
        axes[0].plot(p.lambdas, p.loss, style, label=f"{label} (barrier {p.loss_barrier:.3f})")
        axes[1].plot(p.lambdas, p.accuracy, style, label=f"{label} (barrier {p.error_barrier:.3f})")
    axes[0].set(xlabel="lambda", ylabel="loss", title="loss along the linear path")
    axes[1].set(xlabel="lambda", ylabel="accuracy", title="accuracy along the linear path")
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    svg = png.with_suffix(".svg")
    try:
        atomic_write(png, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
        atomic_write(svg, lambda tmp: fig.savefig(tmp, format="svg"))
    finally:
        plt.close(fig)
    return [png, svg]


def _merge_record(cfg, config: Path, models: list, repair: str, **extra) -> dict:
    """What OUT/weightspace_merge.json records of a Hugging Face merge."""
    return {"method": cfg.method, "options": cfg.options, "reference": cfg.reference, "models": models,
            "repair": repair, "config": str(config), **extra}


def _echo_plan(cfg, plan, out: Path, dry_run: bool) -> None:
    """The out-of-core plan: one line per tensor (and, for weight matching,
    per matching group), then the totals and the matching's results."""
    from weightspace.merge.config import AlignedStreamPlan
    from weightspace.merge.stream import NO_BASE

    mib = 2**20
    groups = plan.groups if isinstance(plan, AlignedStreamPlan) else None  # weight matching first
    if dry_run:
        typer.echo(f"{'tensor':48s} {'shape':>18s} {'dtype':>5s} {'method':>15s}  shard")
        for t in plan.tensors:
            typer.echo(f"{t.name[:48]:48s} {str(tuple(t.shape)):>18s} {t.dtype:>5s} {t.method:>15s}  {t.shard}")
        if groups is not None:
            typer.echo(f"{'matching group':48s} {'kind':>18s} {'size':>5s}")
            for name, kind, size in groups:
                typer.echo(f"{name[:48]:48s} {kind:>18s} {size:>5d}")
    what = f"{cfg.method} then {plan.method}" if groups is not None else plan.method
    typer.echo(f"method     {cfg.method} (out of core: {what})")
    for i, m in enumerate(cfg.models):
        typer.echo(f"model {i}    {m.path}" + ("  (reference)" if groups is not None and i == cfg.reference else ""))
    if cfg.base is not None and plan.method not in NO_BASE:
        typer.echo(f"base       {cfg.base.path}")
    typer.echo(f"tensors    {len(plan.tensors)} in {len(plan.shards)} shard(s), {plan.model_bytes / mib:.1f} MiB "
               f"per model; estimated peak memory {plan.peak_bytes / mib:.1f} MiB")
    if groups is not None:
        typer.echo(f"matching   {len(groups)} groups, {sum(s for *_, s in groups)} neurons/heads; estimated peak "
                   f"memory {plan.matching_peak_bytes / mib:.1f} MiB (permuting "
                   f"{plan.permute_peak_bytes / mib:.1f} MiB, averaging {plan.merge_peak_bytes / mib:.1f} MiB)")
        for r in plan.matching:
            if "sweeps" in r:  # weight matching
                typer.echo(f"matched    {r['model']} to {r['reference']}: objective {r['initial_objective']:.6g} -> "
                           f"{r['objective']:.6g} in {r['sweeps']} sweeps ({r['stop']}, {r['seconds']:.1f} s)")
            else:
                by_weights = f"; by weights: {', '.join(r['fallback_groups'])}" if r["fallback_groups"] else ""
                typer.echo(f"matched    {r['model']} to {r['reference']}: summed correlation {r['objective']:.6g} "
                           f"over {r['passes']} passes, {r['loads']} loads ({r['seconds']:.1f} s{by_weights})")
    typer.echo("dry run    nothing written" if dry_run else f"wrote      {out}")


def merge(
    config: Annotated[Path, typer.Argument(help="YAML merge config (models, method, options, data)")],
    out: Annotated[Path, typer.Argument(help="where to write the merged weights: a .safetensors file, or a "
                                              "directory for Hugging Face models")],
    progress: Annotated[bool, typer.Option("--progress/--quiet", help="show progress bars")] = False,
    stream: Annotated[Optional[bool], typer.Option(
        "--stream/--in-memory",
        help="out of core, tensor by tensor (default where the config allows: Hugging Face directories, an "
             "elementwise method, weight_matching or activation_matching, no repair/barrier) or with the models "
             "loaded")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="print the out-of-core plan (tensors, shapes, method per tensor, matching groups, "
                          "estimated memory); write nothing")] = False,
) -> None:
    """Merge models as a YAML config describes (mergekit-style).

    Writes OUT (safetensors, architecture in its metadata); with `data` and
    `barrier` in the config also OUT.barrier.json and OUT.barrier.png/.svg.
    Models given as Hugging Face directories (`model: {hf: DIR}`) merge into
    a directory OUT that `transformers` loads with `from_pretrained`
    (config.json copied, safetensors sharded like the source, method and
    options in the metadata and in OUT/weightspace_merge.json). With an
    elementwise method (average, task_arithmetic, ties, dare, breadcrumbs,
    slerp) and no data, they merge out of core: tensor by tensor, never a
    whole model in memory (`--in-memory` loads them instead). So does
    weight_matching (Re-Basin): each model is matched to the reference
    from its directory, written permuted to a temporary directory next to
    OUT (removed afterwards), then averaged; the matching's objective per
    sweep goes into OUT/weightspace_merge.json. activation_matching does
    the same with the config's data, one model in memory at a time (its
    tensors mapped from its directory).

    Examples:

      weightspace merge merge.yaml merged.safetensors

      weightspace merge merge-gpt2.yaml merged-gpt2/

      weightspace merge ties-gpt2.yaml merged-ties/ --dry-run

      weightspace merge rebasin-gpt2.yaml merged-rebasin/ --dry-run
    """
    from weightspace.arch import save_hf_checkpoint
    from weightspace.errors import InputFileError
    from weightspace.io import atomic_write, save_state_dict
    from weightspace.merge.config import (
        AlignedStreamPlan, MergeConfigError, load_config, run_config, run_config_streamed, streaming_blocker,
    )

    # Bad configs, weights and data files raise WeightspaceError subclasses
    # naming the file and key; the app's ErrorBoundary prints them (exit 2).
    cfg = load_config(config)
    ref = cfg.models[cfg.reference].ref
    to_dir = ref is not None and ref.kind == "hf"
    if dry_run:  # nothing is written: OUT is not checked
        pass
    elif to_dir:
        if out.exists() and not out.is_dir():
            raise InputFileError("OUT is a file; Hugging Face models merge into a directory", path=out)
        if out.is_dir() and any(out.iterdir()) and not (out / "weightspace_merge.json").exists():
            raise InputFileError("OUT is a directory that is not empty (and not an earlier merge); "
                                 "give a new directory", path=out)
    else:
        if out.is_dir():
            raise InputFileError(f"OUT is a directory; give a file name such as {out / 'merged.safetensors'}",
                                 path=out)
        if out.suffix != ".safetensors":
            raise typer.BadParameter(f"OUT must end in .safetensors, got {out}")
    why = streaming_blocker(cfg)
    if (stream or dry_run) and why is not None:
        what = "--dry-run shows the out-of-core plan, but" if dry_run else "--stream:"
        raise MergeConfigError(f"{what} this config cannot merge out of core: {why}", path=config, field="method")
    if dry_run or (to_dir and why is None and stream is not False):
        meta = {"method": cfg.method, "options": json.dumps(cfg.options, sort_keys=True)}
        plan = run_config_streamed(cfg, None if dry_run else out, dry_run=dry_run, progress=progress, metadata=meta)
        _echo_plan(cfg, plan, out, dry_run)
        if not dry_run:
            extra = {"matching": plan.matching} if isinstance(plan, AlignedStreamPlan) else {}
            record = _merge_record(cfg, config, [str(m.path) for m in cfg.models], "none", out_of_core=True, **extra)
            atomic_write(out / "weightspace_merge.json", json.dumps(record, indent=2, default=str))
        return
    outcome = run_config(cfg, progress=progress)
    s = outcome.summary
    meta = {"arch": outcome.arch, "arch_kwargs": json.dumps(outcome.arch_kwargs), "method": s["method"],
            "options": json.dumps(cfg.options, sort_keys=True)}
    if outcome.model is not None:
        meta["model"] = outcome.model
    if to_dir:
        record = _merge_record(cfg, config, s["models"], s.get("repair", "none"))
        save_hf_checkpoint(outcome.state_dict, outcome.hf, out, metadata=meta,
                           extra_files={"weightspace_merge.json": json.dumps(record, indent=2, default=str)})
    else:
        save_state_dict(outcome.state_dict, out, metadata=meta)
    typer.echo(f"method     {s['method']}" + (f" + {s['repair']}" if s.get("repair", "none") != "none" else ""))
    typer.echo(f"arch       {outcome.arch} {outcome.arch_kwargs or ''}".rstrip())
    for i, m in enumerate(s["models"]):
        typer.echo(f"model {i}    {m}")
    for name, ev in s.get("eval", {}).items():
        typer.echo(f"{name:10s} loss {ev['loss']:.4f}  accuracy {ev['accuracy']:.4f}")
    if "eval_skipped" in s:
        typer.echo(f"eval       skipped: {s['eval_skipped']}")
    if "barrier" in s:
        b = s["barrier"]
        typer.echo(
            f"barrier    aligned loss {b['aligned']['loss']:.4f} error {b['aligned']['error']:.4f} | "
            f"naive loss {b['naive']['loss']:.4f} error {b['naive']['error']:.4f}"
        )
    typer.echo(f"wrote      {out}")
    if outcome.path is not None:
        stem = out / "merge" if to_dir else out.with_suffix("")
        jpath = Path(f"{stem}.barrier.json")
        atomic_write(jpath, json.dumps({
            "summary": s,
            "aligned": outcome.path.to_dict(),
            "naive": outcome.path_naive.to_dict() if outcome.path_naive else None,
        }, indent=2))
        files = _plot_paths(outcome, Path(f"{stem}.barrier.png"))
        typer.echo(f"wrote      {jpath}, {', '.join(str(f) for f in files)}")
