"""``weightspace generate ...``: graph-hypernetwork inits, checkpoint
generation with a novelty report, and meta-learned INR inits.

Subcommands call :mod:`weightspace.generate`; this module only parses
arguments and prints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn, Optional

import typer

from weightspace.cli.common import ArchArgs, Progress, Seed, Steps, Threads, parse_kv
from weightspace.io import check_output_path
from weightspace.cli.common import fail as _fail

app = typer.Typer(
    name="generate",
    help="Generate weights: graph-hypernetwork inits, checkpoints from a zoo-trained generator, INR inits.",
    no_args_is_help=True,
    add_completion=False,
)


def _refused(exc: Exception) -> NoReturn:
    """Exit 2 with the library's message for a refused argument (a KeyError's
    message without the quotes its ``str`` adds)."""
    _fail(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)


def _threads(n: Optional[int]) -> None:
    if n:
        import torch

        torch.set_num_threads(int(n))


@app.command("hypernet-train")
def hypernet_train(
    out: Path = typer.Argument(..., help="where to save the hypernetwork (.safetensors)"),
    steps: Steps = 1000,
    archs_per_step: int = typer.Option(4, min=1, help="architectures per step"),
    small: bool = typer.Option(False, "--small", help="train without the ResNet (faster)"),
    seed: Seed = 0,
    threads: Threads = None,
    progress: Progress = True,
) -> None:
    """Train a graph hypernetwork on the default digits architectures.

    Example: weightspace generate hypernet-train hn.safetensors --steps 300 --small
    """
    from weightspace.generate import default_archs, load_task, train_hypernet

    check_output_path(out, field="OUT")
    _threads(threads)
    train, held = default_archs(small=small)
    hn, hist = train_hypernet(train, load_task("digits"), steps=steps, archs_per_step=archs_per_step,
                              seed=seed, progress=progress)
    hn.save(out, metadata={"train_archs": [a.label for a in train], "steps": steps, "seed": seed})
    k = max(1, len(hist.loss) // 10)
    typer.echo(f"trained on {len(train)} architectures for {steps} steps; "
               f"last-10% mean loss {sum(hist.loss[-k:]) / k:.3f}, batch accuracy {sum(hist.acc[-k:]) / k:.3f}")
    typer.echo(f"held-out architectures for evaluation: {', '.join(a.label for a in held)}")
    typer.echo(f"wrote {out}")


@app.command("init")
def init(
    arch: str = typer.Argument(..., help="the architecture: a registered name (see `weightspace models`), hf:DIR "
                                         "(a local Hugging Face directory) or package.module:factory"),
    hypernet: Path = typer.Option(..., "--hypernet", help="trained hypernetwork (.safetensors)"),
    out: Path = typer.Option(..., "--out", "-o", help="output state_dict (.safetensors)"),
    arg: ArchArgs = [],
    seed: Seed = 0,
) -> None:
    """Predict all weights of ARCH with a trained graph hypernetwork.

    BatchNorm running statistics are written as 0 / 1: re-estimate them on
    data before evaluating in eval mode. Predicted NaN/Inf weights (e.g. from
    a diverged hypernetwork) are refused, never written.

    Examples:

      weightspace generate init cnn_small -a width=24 -a depth=4 --hypernet hn.safetensors -o init.safetensors

      weightspace generate init hf:runs/gpt2-tiny --hypernet hn.safetensors -o init.safetensors
    """
    from weightspace.generate import GraphHyperNetwork, as_arch
    from weightspace.io import save_state_dict

    check_output_path(out, field="--out")
    try:
        a = as_arch(arch, **parse_kv(arg, "--arg"))
        sd = GraphHyperNetwork.load(hypernet).predict(a, seed=seed)
    except (KeyError, TypeError, ValueError, FileNotFoundError) as e:
        _refused(e)
    save_state_dict(sd, out, metadata={"arch": json.dumps(a.to_dict()), "generator": "GraphHyperNetwork"})
    n = sum(v.numel() for v in sd.values() if v.is_floating_point())
    typer.echo(f"{a.label}: {len(sd)} tensors, {n} values -> {out}")


@app.command("flow-train")
def flow_train(
    zoo_dir: Path = typer.Argument(..., help="zoo directory (one architecture)"),
    out: Path = typer.Argument(..., help="where to save the generator (.safetensors)"),
    metric: str = typer.Option("test_acc", help="checkpoint metric to condition on"),
    steps: Steps = 4000,
    augment: bool = typer.Option(True, "--augment/--no-augment", help="random permutation augmentation"),
    seed: Seed = 0,
    threads: Threads = None,
    progress: Progress = True,
) -> None:
    """Train a conditional checkpoint generator (flow matching) on every
    checkpoint of a zoo. All members must share one architecture (name and
    arguments, e.g. the activation); filter the zoo first otherwise.

    Example: weightspace generate flow-train runs/digits_mlp flow.safetensors --steps 2000
    """
    import zoo
    from weightspace.generate import collect_checkpoints, train_checkpoint_flow

    check_output_path(out, field="OUT")
    _threads(threads)
    try:
        cs = collect_checkpoints(zoo.Zoo(zoo_dir), metric=metric)
        model, hist = train_checkpoint_flow(cs, steps=steps, augment=augment, seed=seed, progress=progress)
    except (ValueError, KeyError) as e:
        _refused(e)
    model.save(out, metadata={"zoo": str(zoo_dir), "checkpoints": len(cs), "augment": augment})
    lo, hi = model.cond_range
    typer.echo(f"{cs.arch.label}: {len(cs)} checkpoints, {metric} in [{lo:.3f}, {hi:.3f}], final loss {hist.loss[-1]:.4f}")
    typer.echo(f"wrote {out}")


@app.command("samples")
def samples(
    generator: Path = typer.Argument(..., help="trained checkpoint generator (.safetensors)"),
    zoo_dir: Path = typer.Argument(..., help="the zoo it was trained on (for the novelty report)"),
    out: Path = typer.Option(..., "--out", "-o", help="output directory"),
    n: int = typer.Option(8, "--n", min=1, help="number of samples"),
    condition: float = typer.Option(..., help="target metric (within the training range)"),
    seed: Seed = 0,
    guidance: float = typer.Option(1.0, help="classifier-free guidance weight"),
    metric: str = typer.Option("test_acc", help="the metric the generator was trained on"),
) -> None:
    """Sample N checkpoints and write them with a novelty report (flag
    thresholds printed; see weightspace.generate.checkpoint_novelty). Samples
    with NaN/Inf weights are refused and nothing is written.

    Example: weightspace generate samples flow.safetensors runs/digits_mlp --condition 0.9 -o samples/
    """
    import zoo
    from weightspace.generate import CheckpointFlow, collect_checkpoints, load_task, novelty_report
    from weightspace.io import atomic_write, save_state_dict

    check_output_path(out, kind="dir", field="--out")
    model = CheckpointFlow.load(generator)
    z = zoo.Zoo(zoo_dir)
    try:
        cs = collect_checkpoints(z, metric=metric)
        if cs.arch != model.arch:
            _fail(f"{zoo_dir}: its checkpoints are {cs.arch.label}, the generator {generator} makes {model.arch.label}; "
                  "give the zoo it was trained on")
        sds = model.generate(model.arch, n, condition=condition, seed=seed, guidance=guidance)
    except (ValueError, KeyError) as e:
        _refused(e)
    data_cfg = dict((z.recipe.data if z.recipe is not None else {}) or {"name": "digits"})
    data = load_task(**data_cfg)
    rep = novelty_report(sds, cs, data, conditions=[condition] * n, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    for i, sd in enumerate(sds):
        save_state_dict(sd, out / f"sample_{i:03d}.safetensors",
                        metadata={"arch": json.dumps(model.arch.to_dict()), "condition": str(condition)})
    atomic_write(out / "novelty.json", json.dumps(rep.to_dict(), indent=2, default=str))
    typer.echo(f"{'#':>3s} {'acc':>6s} {'rel.dist':>8s} {'ratio':>6s} {'agree':>6s}  nearest")
    for i, r in enumerate(rep.rows):
        flag = " COPY" if r["copy"] else (" near-copy" if r["near_copy"] else "")
        nn = r["nearest"]
        typer.echo(f"{i:3d} {r['accuracy']:6.3f} {r['rel_distance']:8.3f} {r['ratio']:6.2f} {r['agreement']:6.3f}  "
                   f"{nn['member_id']}@{nn['epoch']}{flag}")
    s = rep.summary
    typer.echo(f"mean accuracy {s['accuracy_mean']:.3f} for condition {condition}; copies {s['copies']}/{s['n']}, "
               f"near-copies {s['near_copies']}; between-runs relative distance {rep.reference['between_runs_median']:.3f}")
    typer.echo(f"flags: {rep.thresholds_text()}")
    typer.echo(f"wrote {n} samples and novelty.json to {out}")


@app.command("inr-init")
def inr_init(
    out: Path = typer.Argument(..., help="output state_dict (.safetensors) of the learned SIREN init"),
    family: str = typer.Option("digits", help="digits | sample_crops | sines | blobs"),
    first: int = typer.Option(0, min=0, help="first training signal index"),
    count: int = typer.Option(200, min=1, help="number of training signals"),
    outer_steps: int = typer.Option(500, min=1, help="Reptile steps"),
    inner_steps: int = typer.Option(10, min=1, help="inner Adam steps"),
    seed: Seed = 0,
    threads: Threads = None,
    progress: Progress = True,
) -> None:
    """Meta-learn a SIREN initialisation with Reptile on a signal family.

    Example: weightspace generate inr-init siren_digits.safetensors --family digits --outer-steps 300
    """
    from weightspace.generate import load_signals, reptile
    from weightspace.io import save_state_dict

    check_output_path(out, field="OUT")
    _threads(threads)
    try:
        sig = load_signals(family, range(first, first + count))
    except ValueError as e:
        _fail(e)
    theta, hist = reptile(sig, outer_steps=outer_steps, inner_steps=inner_steps, seed=seed, progress=progress)
    save_state_dict(theta, out, metadata={"arch": "siren", "family": family, "outer_steps": str(outer_steps)})
    typer.echo(f"Reptile on {len(sig)} {family} signals: inner-loop PSNR {hist.inner_psnr[0]:.2f} -> "
               f"{hist.inner_psnr[-1]:.2f} dB after {inner_steps} steps; wrote {out}")
