"""The ``weightspace`` command line (Typer), the top layer.

``app`` (:mod:`weightspace.cli.app`) is the root command with the one error
boundary (:class:`weightspace.cli.common.ErrorBoundary`); each command group
lives in its own module (:mod:`~weightspace.cli.zoo`, :mod:`~weightspace.cli.merge`,
:mod:`~weightspace.cli.predict`, :mod:`~weightspace.cli.generate`,
:mod:`~weightspace.cli.similarity`) and :mod:`~weightspace.cli.quickstart`
runs the end-to-end tour. Commands parse arguments, call the library and
print; no logic here.
"""

from weightspace.cli.app import app

__all__ = ["app"]
