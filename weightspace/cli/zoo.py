"""``weightspace zoo ...``: build, inspect, export and import model zoos.

Subcommands call :mod:`zoo`; this module only parses arguments and prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    name="zoo",
    help="Build, inspect, export and import model zoos (populations of trained networks).",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def build(
    recipe: str = typer.Argument(..., help="recipe file (.yaml/.toml) or the name of a shipped recipe"),
    out: Path = typer.Argument(..., help="zoo directory (created, or resumed if it holds this recipe's zoo)"),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", min=1, help="parallel workers (default: all CPUs)"),
    backend: str = typer.Option("local", help="local (process pool), serial, or ray"),
    address: Optional[str] = typer.Option(None, help="Ray cluster address (with --backend ray)"),
    max_members: Optional[int] = typer.Option(None, min=1, help="only the first N members of the recipe"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bar with ETA"),
) -> None:
    """Train a zoo from RECIPE into OUT; re-running resumes an interrupted build.

    Example: weightspace zoo build digits_cnn_small runs/digits --workers 2
    """
    import zoo

    from weightspace.cli.common import fail
    from weightspace.errors import WeightspaceError

    try:
        report = zoo.build_zoo(
            recipe, out, workers=workers, backend=backend, address=address,
            max_members=max_members, progress=progress,
        )
    except (ValueError, KeyError) as e:  # bad arguments; zoo errors reach the CLI's error boundary (exit 2)
        if isinstance(e, WeightspaceError):
            raise
        fail(e)
    typer.echo(
        f"zoo {out}: {report.total} members ({report.trained} trained now, {report.skipped} already done"
        + (f", {len(report.removed)} unfinished leftovers removed" if report.removed else "")
        + f") in {report.wall_time:.1f}s"
        + (f" = {report.members_per_minute:.1f} members/min" if report.trained else "")
    )
    if report.unknown:
        typer.echo(f"left alone: {len(report.unknown)} entr{'y' if len(report.unknown) == 1 else 'ies'} under "
                   f"weights/ that this zoo did not write: " + ", ".join(report.unknown[:5])
                   + (" ..." if len(report.unknown) > 5 else ""))


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@app.command()
def info(zoo_dir: Path = typer.Argument(..., metavar="ZOO", help="zoo directory")) -> None:
    """Summarise a zoo: source, members, architectures, metrics.

    Example: weightspace zoo info runs/digits
    """
    import zoo

    z = zoo.Zoo(zoo_dir)  # a damaged zoo: ZooFormatError -> one line, exit 2 (the CLI's error boundary)
    df = z.to_pandas()
    typer.echo(f"zoo        {z.name}")
    typer.echo(f"path       {z.path}")
    typer.echo(f"source     {z.info.get('source')}" + (f" ({z.info['source_path']})" if z.info.get("source_path") else ""))
    typer.echo(f"members    {len(z)}")
    if len(z) == 0:
        return
    typer.echo("archs      " + ", ".join(f"{a} x{n}" for a, n in df["arch"].value_counts().items()))
    typer.echo("status     " + ", ".join(f"{s} x{n}" for s, n in df["status"].value_counts().items()))
    n_ck = int(df["n_checkpoints"].sum())
    typer.echo(f"checkpoints {n_ck} ({_size(z.path) / 1e6:.1f} MB on disk)")
    recipe = z.info.get("recipe")
    if recipe:
        s = recipe.get("search", {})
        typer.echo(f"recipe     {recipe.get('name')} (data {recipe.get('data', {}).get('name')}, "
                   f"search {s.get('method', 'grid')}, epochs {recipe.get('train', {}).get('epochs')})")
    problems = z.verify(quick=True)  # headers and sizes only; `zoo verify` re-hashes
    if problems:
        typer.echo(f"damaged    {len(problems)} checkpoint file(s); `weightspace zoo verify {zoo_dir}` lists all:")
        for p in problems[:5]:
            typer.echo(f"  {p}")
    metric_cols = [c for c in ("test_acc", "val_acc", "train_acc", "gap_acc", "test_psnr", "train_psnr",
                               "test_loss", "wall_time") if c in df.columns]
    if metric_cols:
        typer.echo(f"{'metric':12s} {'mean':>9s} {'min':>9s} {'max':>9s}")
        for c in metric_cols:
            col = df[c].astype(float)
            typer.echo(f"{c:12s} {col.mean():9.4f} {col.min():9.4f} {col.max():9.4f}")


@app.command()
def verify(
    zoo_dir: Path = typer.Argument(..., metavar="ZOO", help="zoo directory"),
    quick: bool = typer.Option(False, "--quick", help="check file headers and sizes only, do not re-hash"),
) -> None:
    """Re-hash every checkpoint against the index; list missing, truncated,
    corrupt or altered files. Exit 0 when intact, 2 when something is damaged.

    Example: weightspace zoo verify runs/digits
    """
    import zoo

    from weightspace.cli.common import fail

    z = zoo.Zoo(zoo_dir)
    n = sum(len(m.checkpoints) for m in z.members())
    problems = z.verify(quick=quick)
    for p in problems:
        typer.echo(p)
    if problems:
        fail(f"{z.path}: {len(problems)} of {n} checkpoint file(s) are missing or damaged (listed above); "
             "restore them from a copy")
    typer.echo(f"zoo {z.path}: {n} checkpoints of {len(z)} members intact"
               + (" (headers and sizes; without --quick every file is re-hashed)" if quick else ""))


@app.command()
def repair(zoo_dir: Path = typer.Argument(..., metavar="ZOO", help="zoo directory")) -> None:
    """Rebuild ZOO/index.sqlite from the checkpoint files (after the index was
    lost, emptied or damaged). Nothing is deleted: the old index is moved to
    index.sqlite.broken-<time>; files that cannot be placed are listed and left.

    Example: weightspace zoo repair runs/digits
    """
    import zoo

    rep = zoo.repair_zoo(zoo_dir)
    typer.echo(f"zoo {rep.path}: index rebuilt with {len(rep.members)} members, {rep.checkpoints} checkpoints")
    if rep.moved_index is not None:
        typer.echo(f"old index moved to {rep.moved_index}"
                   + (f" (it was unreadable: {rep.old_index_error})" if rep.old_index_error else ""))
    if rep.from_old_index:
        typer.echo(f"{len(rep.from_old_index)} member(s) of files without metadata restored from the old index")
    if rep.unplaced:
        typer.echo(f"{len(rep.unplaced)} file(s) could not be placed (left where they are):")
        for rel, why in rep.unplaced:
            typer.echo(f"  {rel}: {why}")
    if rep.missing:
        typer.echo(f"{len(rep.missing)} member(s) of the old index are not restored: " + ", ".join(rep.missing[:10])
                   + (" ..." if len(rep.missing) > 10 else ""))
    if rep.unknown:
        typer.echo("left alone under weights/ (not member directories): " + ", ".join(rep.unknown[:10])
                   + (" ..." if len(rep.unknown) > 10 else ""))


@app.command()
def export(
    zoo_dir: Path = typer.Argument(..., metavar="ZOO", help="zoo directory"),
    out: Path = typer.Argument(..., help="output .parquet file"),
    checkpoints: bool = typer.Option(False, "--checkpoints", help="one row per checkpoint instead of per member"),
) -> None:
    """Write the zoo's table (configs, metrics, hashes, paths) to Parquet.

    Example: weightspace zoo export runs/digits digits.parquet
    """
    import zoo

    from weightspace.cli.common import fail

    # A damaged or missing zoo: ZooFormatError -> one line, exit 2 (the CLI's error boundary).
    z = zoo.Zoo(zoo_dir)
    try:
        path = z.export_parquet(out, checkpoints=checkpoints)
    except ImportError as e:  # no Parquet engine installed
        fail(f"writing Parquet needs pyarrow or fastparquet ({e})")
    typer.echo(f"wrote {path} ({len(z.to_pandas(checkpoints=checkpoints))} rows)")


def _member_count(path: Path) -> int:
    """Members already in the zoo at ``path`` (0 when there is none yet)."""
    from zoo.errors import ZooError
    from zoo.store import Zoo

    try:
        return len(Zoo(path))
    except (ZooError, OSError):
        return 0


def _parse_steps(steps: str):
    """``--steps``: 'final', 'all' or comma-separated non-negative integers."""
    if steps in ("final", "all"):
        return steps
    items = [s.strip() for s in steps.split(",") if s.strip()]
    if not items or not all(s.isdigit() for s in items):
        raise typer.BadParameter(f"expected 'final', 'all' or comma-separated steps like 0,20,86; got {steps!r}",
                                 param_hint="--steps")
    return [int(s) for s in items]


@app.command("import-small-cnn-zoo")
def import_small_cnn_zoo(
    path: Path = typer.Argument(..., help="directory with weights.npy, metrics.csv.gz, layout.csv"),
    out: Path = typer.Argument(..., help="zoo directory to write"),
    steps: str = typer.Option("final", help="'final' (last step per run), 'all', or comma-separated steps"),
    padding: str = typer.Option("valid", help="valid (as trained), same (TF SAME emulation) or torch (cnn_small)"),
    image_size: Optional[int] = typer.Option(
        None, "--image-size", min=1,
        help="input image size (default from config.dataset; required for other datasets)",
    ),
    limit: Optional[int] = typer.Option(None, min=1, help="import at most N members"),
    keep_nonfinite: bool = typer.Option(False, help="keep runs with NaN/Inf weights"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Convert a Small CNN Zoo (Unterthiner et al. 2020) directory into a zoo.

    Example: weightspace zoo import-small-cnn-zoo ~/data/smallcnnzoo/mnist runs/scz-mnist
    """
    from zoo.loaders import import_small_cnn_zoo as _import

    if padding not in ("valid", "same", "torch"):
        raise typer.BadParameter(f"expected valid, same or torch; got {padding!r}", param_hint="--padding")
    step_sel = _parse_steps(steps)
    before = _member_count(out)
    # Errors (malformed files, unknown dataset ...) reach the CLI's error boundary: one line, exit 2.
    z = _import(path, out, steps=step_sel, padding=padding, image_size=image_size, limit=limit,
                drop_nonfinite=not keep_nonfinite, progress=progress)
    new = len(z) - before
    typer.echo(f"imported {new} new members from {path} into {out} "
               f"({len(z)} in the zoo; {before} were already there)")
