"""``weightspace predict ...``: fit a performance predictor on a zoo, rank checkpoints.

* ``weightspace predict fit ZOO --target test_acc --model gbm --out P``
* ``weightspace predict rank CHECKPOINT... --predictor P``

The work is done by :mod:`weightspace.predict` (:func:`~weightspace.predict.fit_zoo`,
:func:`~weightspace.predict.rank_checkpoints`); this file parses and prints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from weightspace.io import check_output_path
from weightspace.cli.common import ArchArgs
from weightspace.cli.common import fail as _fail
from weightspace.cli.common import parse_kv as _kv

app = typer.Typer(
    name="predict",
    help="Predict a network's performance from its weights: fit a predictor on a zoo, rank checkpoints.",
    no_args_is_help=True,
    add_completion=False,
)


def _check_params(model: str, params: dict) -> None:
    """``--param`` values checked against the predictor's ``param_schema``
    (types and ranges) before the zoo is read; a wrong one exits 2 naming it.
    Unknown names are left to the predictor's constructor, which names them."""
    from weightspace.errors import ConfigError
    from weightspace.io import Field, validate
    from weightspace.predict import METANETWORKS, GBMPredictor, LinearPredictor, MeanPredictor, MetaNetPredictor

    k = model.lower().replace("-", "").replace("_", "")
    cls = {"gbm": GBMPredictor, "linear": LinearPredictor, "mean": MeanPredictor}.get(
        k, MetaNetPredictor if k in METANETWORKS else None)
    if cls is None:
        return  # an unknown --model is refused by make_predictor, naming it
    schema = {name: Field(f.type, min=f.min, max=f.max, choices=f.choices, nullable=f.nullable)
              for name, f in getattr(cls, "param_schema", {}).items()}
    try:
        validate(params, schema, allow_unknown=True)
    except ConfigError as exc:
        _fail(f"--param {exc.field}: {exc.message}")


def _epochs(text: str, zoo) -> list[int]:
    """``--checkpoints`` as a list of epochs, each >= 0 and stored for at least one member."""
    try:
        epochs = [int(e) for e in text.split(",")]
    except ValueError:
        _fail(f"--checkpoints must be all, final or comma-separated epochs, got {text!r}")
    bad = [e for e in epochs if e < 0]
    if bad:
        _fail(f"--checkpoints: epochs are >= 0, got {bad[0]}")
    stored = sorted({ck.epoch for m in zoo.members() for ck in m.checkpoints})
    unknown = [e for e in epochs if e not in stored]
    if unknown:
        shown = ", ".join(map(str, stored[:20])) + (" ..." if len(stored) > 20 else "")
        _fail(f"--checkpoints: no member of {zoo.path} has a checkpoint at epoch {unknown[0]}; stored epochs: {shown}")
    return epochs


def _values(text: Optional[str]) -> Optional[list]:
    if text is None:
        return None
    out = []
    for v in text.split(","):
        v = v.strip()
        try:
            out.append(json.loads(v))
        except json.JSONDecodeError:
            out.append(v)
    return out


@app.command()
def fit(
    zoo_dir: Path = typer.Argument(..., metavar="ZOO", help="zoo directory (built with `weightspace zoo build` or imported)"),
    target: str = typer.Option("test_acc", "--target", "-t", help="metric to predict (test_acc, gap_acc, test_loss, ...; test_accuracy is accepted)"),
    model: str = typer.Option("gbm", "--model", "-m", help="gbm | linear | gmn | statnn | flatmlp | nfn"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="directory to save the fitted predictor to"),
    checkpoints: str = typer.Option("all", help="all | final | comma-separated epochs (e.g. 5,10)"),
    split: str = typer.Option("random", help="random (by member) | seed (by training seed) | ood (by a hyperparameter)"),
    test_fraction: float = typer.Option(0.2, min=0.0, max=1.0, help="held-out fraction of members for the metrics (0: fit on everything)"),
    ood_column: Optional[str] = typer.Option(None, help="--split ood: hyperparameter column (e.g. activation, lr, config.model.width)"),
    ood_train: Optional[str] = typer.Option(None, help="--split ood: comma-separated training values"),
    ood_test: Optional[str] = typer.Option(None, help="--split ood: comma-separated test values (default: all others)"),
    ood_threshold: Optional[float] = typer.Option(None, help="--split ood: train on values <= threshold, test on the rest"),
    seed: int = typer.Option(0, min=0, help="split and predictor seed"),
    epochs: Optional[int] = typer.Option(None, min=1, help="training epochs (metanetworks)"),
    param: List[str] = typer.Option([], "--param", "-p", help="predictor argument key=value (repeatable, JSON values), e.g. -p max_iter=500"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the report as JSON"),
) -> None:
    """Fit a predictor on a zoo and report held-out Kendall tau / Spearman / R2 with 95% bootstrap CIs.

    Examples:

      weightspace predict fit runs/digits --target test_acc --model gbm --out predictors/gbm

      weightspace predict fit runs/digits --model gmn --epochs 100 -p 'model_kwargs={"hidden": 64}' --out predictors/gmn

      weightspace predict fit runs/digits --split ood --ood-column activation --ood-train relu,tanh --ood-test gelu
    """
    from weightspace.errors import WeightspaceError
    from weightspace.io import atomic_write
    from weightspace.predict import fit_zoo
    from zoo import Zoo
    from zoo.errors import ZooError

    if out is not None:
        check_output_path(out, kind="dir", field="--out")
    if json_out is not None:
        check_output_path(json_out, field="--json")
    params = _kv(param, "--param")
    if epochs is not None:
        params["epochs"] = epochs
    _check_params(model, params)
    if checkpoints not in ("all", "final") and not all(e.strip().lstrip("-").isdigit() for e in checkpoints.split(",")):
        _fail(f"--checkpoints must be all, final or comma-separated epochs, got {checkpoints!r}")
    # A damaged zoo: ZooFormatError naming the file -> one line, exit 2 (the CLI's error boundary).
    z = Zoo(zoo_dir)
    if len(z) == 0:
        _fail(f"{z.path}: the zoo has no members; build or import members into it first")
    ck: object = checkpoints if checkpoints in ("all", "final") else _epochs(checkpoints, z)
    try:
        rep = fit_zoo(z, target, model, checkpoints=ck, split=split, test_fraction=test_fraction, seed=seed,
                      ood_column=ood_column, ood_train=_values(ood_train), ood_test=_values(ood_test),
                      ood_threshold=ood_threshold, params=params, out=out)
    except (WeightspaceError, ZooError, KeyError, ValueError, TypeError, ImportError, FileNotFoundError) as exc:
        _fail(str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc))
    typer.echo(f"predictor  {model} ({type(rep.predictor).__name__})")
    typer.echo(f"target     {rep.target}")
    typer.echo(f"split      {rep.split}: {rep.n_train} training / {rep.n_test} test networks")
    if any(rep.dropped.values()):
        typer.echo(f"dropped    {rep.dropped}")
    if rep.metrics:
        typer.echo("")
        typer.echo(f"{'metric':12s} {'value':>8s}   95% CI (bootstrap over members)")
        for name, m in rep.metrics.items():
            typer.echo(f"{name:12s} {m.value:8.3f}   [{m.low:.3f}, {m.high:.3f}]")
    if rep.path is not None:
        typer.echo(f"\nsaved      {rep.path}")
    if json_out is not None:
        atomic_write(json_out, json.dumps(rep.to_dict(), indent=2, default=str))
        typer.echo(f"wrote      {json_out}")


@app.command()
def rank(
    checkpoints: List[Path] = typer.Argument(..., metavar="CHECKPOINT...", help="checkpoint files (.safetensors, or .pt read with weights_only)"),
    predictor: Path = typer.Option(..., "--predictor", "-P", help="directory of a predictor saved by `predict fit --out`"),
    arch: Optional[str] = typer.Option(None, help="the checkpoints' architecture: a registered name, hf:DIR (a local "
                                                  "Hugging Face directory) or package.module:factory; checked against "
                                                  "the predictor's and every checkpoint against it"),
    arg: ArchArgs = [],
    order: str = typer.Option("auto", help="auto (from the target: losses and gaps ascending) | desc | asc"),
    top: Optional[int] = typer.Option(None, min=1, help="show only the best N"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the ranking as JSON"),
) -> None:
    """Rank checkpoints by predicted performance, best first, without running any data through them.

    Examples:

      weightspace predict rank runs/*.safetensors --predictor predictors/gbm

      weightspace predict rank ft/*.safetensors --predictor predictors/gbm --arch hf:runs/gpt2-tiny

      weightspace predict rank ck/*.safetensors -P predictors/gbm --arch mypkg.models:make_mlp -a width=64
    """
    from weightspace.errors import WeightspaceError
    from weightspace.io import atomic_write
    from weightspace.predict import load_predictor, lower_is_better, rank_checkpoints

    if order not in ("auto", "desc", "asc"):
        _fail(f"--order must be auto, desc or asc, got {order!r}")
    if json_out is not None:
        check_output_path(json_out, field="--json")
    try:
        p = load_predictor(predictor)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        _fail(str(exc))
    descending = None if order == "auto" else order == "desc"
    try:
        ranking = rank_checkpoints(checkpoints, p, arch=arch, arch_kwargs=_kv(arg, "--arg") if arg else None,
                                   descending=descending)
    except (WeightspaceError, FileNotFoundError, ValueError, KeyError, TypeError) as exc:
        _fail(str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc))
    shown = ranking if top is None else ranking[:top]
    desc = not lower_is_better(p.target_) if descending is None else descending
    typer.echo(f"predictor  {predictor} ({p.kind}, target {p.target_ or '?'}, {'higher' if desc else 'lower'} is better)")
    typer.echo(f"{'rank':>4s} {'predicted':>10s}  checkpoint")
    for r in shown:
        typer.echo(f"{r['rank']:4d} {r['prediction']:10.4f}  {r['checkpoint']}")
    if json_out is not None:
        atomic_write(json_out, json.dumps({"predictor": str(predictor), "target": p.target_, "ranking": ranking}, indent=2))
        typer.echo(f"wrote {json_out}")
