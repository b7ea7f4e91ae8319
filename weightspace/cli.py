"""The ``weightspace`` command line. Subcommands call the library; no logic here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(
    name="weightspace",
    help="Trained neural networks as data: graphs, symmetries, merging, prediction, generation.",
    no_args_is_help=True,
    add_completion=False,
)


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _parse_kwargs(items: List[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            _fail(f"--arg expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


@app.command()
def models() -> None:
    """List the registered architectures.

    Example: weightspace models
    """
    import zoo

    for name in zoo.list_models():
        info = zoo.get_model_info(name)
        typer.echo(f"{name:20s} {info.description}")


@app.command()
def graph(
    model: str = typer.Argument(..., help="registered architecture name (see `weightspace models`)"),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="state_dict file (.safetensors, or .pt loaded with weights_only)"),
    arg: List[str] = typer.Option([], "--arg", "-a", help="architecture argument key=value (repeatable), e.g. -a width=2"),
    groups: bool = typer.Option(True, help="list every permutation group"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the spec and graph summary as JSON"),
) -> None:
    """Show the parameter graph and permutation spec of an architecture.

    Examples:

      weightspace graph resnet20 -a width=2

      weightspace graph cnn_small --weights member.safetensors --json spec.json
    """
    import zoo
    from weightspace.core import analyze
    from weightspace.errors import WeightspaceError
    from weightspace.io import load_state_dict

    kwargs = _parse_kwargs(arg)
    try:
        zoo.get_model_info(model)
    except KeyError as exc:
        _fail(str(exc.args[0]))
    try:
        a = analyze(model, arch_kwargs=kwargs)
        g = a.template.graph(load_state_dict(weights) if weights else a.module.state_dict())
    except (WeightspaceError, FileNotFoundError, TypeError, ValueError) as exc:
        _fail(str(exc))
    s, t = a.spec.summary(), a.template.summary()
    typer.echo(f"architecture   {model} {kwargs if kwargs else ''}".rstrip())
    typer.echo(f"weights        {weights if weights else 'default init (seed 0)'}")
    typer.echo(f"tensors        {s['tensors']} ({t['values']} values), {s['tensors_permuted']} with neuron axes")
    typer.echo(f"graph          {t['nodes']} nodes ({t['neurons']} neurons, {t['module_nodes']} module, {t['virtual_nodes']} virtual)")
    typer.echo(f"               {t['edges']} edges ({t['weight_edges']} weight, {t['tie_edges']} tie), edge width <= {t['max_edge_width']}")
    typer.echo(f"permutations   {s['neuron_groups']} neuron groups, {s['head_groups']} head groups; "
               f"{s['fixed_neurons']} of {s['neurons']} neurons fixed (inputs/outputs)")
    if groups:
        typer.echo("")
        typer.echo(f"{'group':40s} {'kind':6s} {'size':>5s} {'tensors':>7s}")
        for grp in a.spec.groups:
            size = f"{grp.size}" if grp.kind == "neuron" else f"{grp.size}x{grp.unit}"
            typer.echo(f"{grp.name:40s} {grp.kind:6s} {size:>5s} {len({p for p, *_ in grp.axes}):>7d}")
    if json_out:
        json_out.write_text(json.dumps({"spec": a.spec.to_dict(), "graph": t}, indent=2))
        typer.echo(f"\nwrote {json_out}")
    del g


@app.command()
def quickstart(
    out: Path = typer.Option(Path("weightspace-quickstart"), "--out", "-o", help="output directory"),
    small: bool = typer.Option(False, "--small", help="a faster tour on fewer architectures"),
    seed: int = typer.Option(0, help="random seed"),
) -> None:
    """Run the end-to-end tour offline and write a report.

    Example: weightspace quickstart --small --out /tmp/ws
    """
    from weightspace.quickstart import run_quickstart

    results = run_quickstart(out, small=small, seed=seed, progress=lambda name: typer.echo(f"  tracing {name} ..."))
    typer.echo("")
    typer.echo(f"{'arch':20s} {'groups':>6s} {'nodes':>8s} {'edges':>10s} {'build s':>8s} {'perm diff':>10s} {'broken':>10s}")
    for r in results["foundation"]:
        typer.echo(
            f"{r['arch']:20s} {r['groups']:6d} {r['nodes']:8d} {r['edges']:10d} {r['build_seconds']:8.3f} "
            f"{r['max_abs_diff_permuted']:10.1e} {r['max_abs_diff_broken']:10.1e}"
        )
    typer.echo(f"\nreport: {out / 'report.md'}\nresults: {out / 'results.json'}")


from weightspace.cli_similarity import similarity  # noqa: E402
app.command("similarity")(similarity)

from weightspace.cli_zoo import app as zoo_app  # noqa: E402
app.add_typer(zoo_app, name="zoo")

from weightspace.cli_predict import app as predict_app  # noqa: E402
app.add_typer(predict_app, name="predict")

from weightspace.cli_merge import merge  # noqa: E402
app.command("merge")(merge)


if __name__ == "__main__":  # pragma: no cover
    app()
