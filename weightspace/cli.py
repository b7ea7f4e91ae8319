"""The ``weightspace`` command line. Subcommands call the library; no logic here."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="weightspace",
    help="Trained neural networks as data: graphs, symmetries, merging, prediction, generation.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def models() -> None:
    """List the registered architectures.

    Example: weightspace models
    """
    import zoo

    for name in zoo.list_models():
        info = zoo.get_model_info(name)
        typer.echo(f"{name:20s} {info.description}")


if __name__ == "__main__":  # pragma: no cover
    app()
