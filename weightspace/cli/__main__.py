"""``python -m weightspace.cli ...`` == ``weightspace ...``."""

from weightspace.cli.app import app

app(prog_name="weightspace")
