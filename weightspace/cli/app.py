"""The ``weightspace`` command line. Subcommands call the library; no logic here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from weightspace.cli.common import ErrorBoundary, parse_kv
from weightspace.data import register_dataset_source

# Commands take dataset names (merge configs, generate): they are zoo's.
# Normally found through the `weightspace.datasets` entry point; named here
# too so a development install with older metadata finds them. Imports nothing now.
register_dataset_source("zoo.datasets")

app = typer.Typer(
    name="weightspace",
    help="Trained neural networks as data: graphs, symmetries, merging, prediction, generation.",
    no_args_is_help=True,
    add_completion=False,
    cls=ErrorBoundary,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="show the Python traceback of an error instead of one line"),
) -> None:
    """Trained neural networks as data: graphs, symmetries, merging, prediction, generation.

    Errors print one line `error: ...` and exit with code 2 (bad input) or 1
    (a bug); `--debug` shows the traceback.
    """


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
    model: str = typer.Argument(..., help="registered architecture name (see `weightspace models`), "
                                          "hf:DIR (a local Hugging Face directory) or package.module:factory"),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="state_dict file (.safetensors, or .pt loaded with weights_only)"),
    arg: List[str] = typer.Option([], "--arg", "-a", help="architecture argument key=value (repeatable), e.g. -a width=2"),
    groups: bool = typer.Option(True, help="list every permutation group"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the spec and graph summary as JSON"),
) -> None:
    """Show the parameter graph and permutation spec of an architecture.

    Examples:

      weightspace graph resnet20 -a width=2

      weightspace graph hf:runs/gpt2-tiny

      weightspace graph mypkg.models:make_mlp -a width=64

      weightspace graph cnn_small --weights member.safetensors --json spec.json
    """
    from weightspace.cli.common import check_arch, name_path
    from weightspace.core import analyze
    from weightspace.errors import WeightspaceError
    from weightspace.io import atomic_write, check_output_path, load_state_dict

    from weightspace.arch import ModelRef, resolve_model

    kwargs = parse_kv(arg, "--arg")
    ref = ModelRef.parse(model, **kwargs)
    if ref.kind == "registry":
        check_arch(model, kwargs, "--arg")
    if json_out:
        check_output_path(json_out, field="--json")
    sd = load_state_dict(weights) if weights else None
    if ref.kind == "registry":
        a = analyze(model, arch_kwargs=kwargs)
    else:
        r = resolve_model(ref, seed=0)
        a = analyze(r.module, r.example_input)
    try:
        g = a.template.graph(sd if sd is not None else a.module.state_dict())
    except WeightspaceError as exc:  # the weights do not fit: name the file
        raise (name_path(exc, weights) if weights else exc) from None
    s, t = a.spec.summary(), a.template.summary()
    typer.echo(f"architecture   {model} {kwargs if kwargs else ''}".rstrip())
    default_weights = "the directory's safetensors" if ref.kind == "hf" else "default init (seed 0)"
    typer.echo(f"weights        {weights if weights else default_weights}")
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
        atomic_write(json_out, json.dumps({"spec": a.spec.to_dict(), "graph": t}, indent=2))
        typer.echo(f"\nwrote {json_out}")
    del g


@app.command()
def quickstart(
    out: Path = typer.Option(Path("weightspace-quickstart"), "--out", "-o", help="output directory"),
    small: bool = typer.Option(False, "--small", help="a ~3 minute tour (fewer architectures, smaller zoo)"),
    seed: int = typer.Option(0, min=0, help="random seed"),
) -> None:
    """Run the whole toolkit end to end, offline, and write a report.

    Builds small zoos on digits and MNIST-1D, fits performance predictors,
    merges two MLPs (weight matching, REPAIR, OT fusion), compares them with
    CKA, trains a tiny graph hypernetwork and a checkpoint generator (with
    its novelty report). Re-running resumes the zoos.

    Example: weightspace quickstart --small --out /tmp/ws
    """
    from weightspace.io import check_output_path
    from weightspace.cli.quickstart import run_quickstart

    check_output_path(out, kind="dir", field="--out")
    r = run_quickstart(out, small=small, seed=seed, log=lambda m: typer.echo(f"  {m} ..."), progress=True)
    typer.echo("")
    typer.echo(f"{'arch':20s} {'groups':>6s} {'nodes':>8s} {'edges':>10s} {'perm diff':>10s} {'broken':>10s}")
    for g in r["graphs"]:
        typer.echo(f"{g['arch']:20s} {g['groups']:6d} {g['nodes']:8d} {g['edges']:10d} "
                   f"{g['max_abs_diff_permuted']:10.1e} {g['max_abs_diff_broken']:10.1e}")
    typer.echo(f"\nzoo: {r['zoo']['members']} members at {r['zoo']['path']}, "
               f"{r['zoo']['mnist1d']['members']} at {r['zoo']['mnist1d']['path']}")
    typer.echo(f"\n{'predictor':10s} {'kendall tau':>12s} {'R2':>8s}")
    for m, v in r["predict"]["methods"].items():
        typer.echo(f"{m:10s} {v['kendall_tau']['value']:12.3f} {v['r2']['value']:8.3f}")
    typer.echo(f"\n{'merge':24s} {'loss barrier':>12s} {'error barrier':>13s}")
    for name in ("naive", "weight_matching", "weight_matching+repair"):
        p = r["merge"][name]
        typer.echo(f"{name:24s} {p['loss_barrier']:12.3f} {p['error_barrier']:13.3f}")
    typer.echo(f"{'OT fusion accuracy':24s} {r['merge']['ot_fusion']['accuracy']:12.3f}")
    sim = r["similarity"]["same_index_correlation"]
    typer.echo("\nsame-index neuron correlation before -> after alignment: " + ", ".join(
        f"{k} {sim['before'][k]:.2f} -> {sim['after'][k]:.2f}" for k in sim["before"]))
    hn = r["generate"]["hypernet"]
    ks = hn["sgd_steps"]
    typer.echo(f"\ngraph hypernetwork ({hn['steps']} steps on {len(hn['train_archs'])} architectures): "
               "test accuracy on unseen architectures after k SGD steps")
    typer.echo(f"{'architecture':30s} {'init':9s} " + " ".join(f"{'k=' + str(k):>6s}" for k in ks))
    for arch, inits in hn["accuracy"].items():
        for ini, accs in inits.items():
            typer.echo(f"{arch:30s} {ini:9s} " + " ".join(f"{a:6.3f}" for a in accs))
    cf = r["generate"].get("checkpoint_flow")
    if cf:
        sm = cf["summary"]
        typer.echo(f"\ncheckpoint flow: {cf['samples']} samples for test_acc {cf['condition']:.3f} reach "
                   f"{sm.get('accuracy_mean', float('nan')):.3f}; nearest training checkpoint at "
                   f"{sm['ratio_median']:.2f}x the between-runs distance, {sm['copies']} copies")
    typer.echo(f"\nreport: {out / 'report.md'}\nresults: {out / 'results.json'}")


# Subcommands owned by their modules, mounted here.
from weightspace.cli.similarity import similarity  # noqa: E402

app.command("similarity")(similarity)

from weightspace.cli.zoo import app as zoo_app  # noqa: E402

app.add_typer(zoo_app, name="zoo")

from weightspace.cli.predict import app as predict_app  # noqa: E402

app.add_typer(predict_app, name="predict")

from weightspace.cli.merge import merge  # noqa: E402

app.command("merge")(merge)


from weightspace.cli.generate import app as generate_app  # noqa: E402

app.add_typer(generate_app, name="generate")


if __name__ == "__main__":  # pragma: no cover
    app()
