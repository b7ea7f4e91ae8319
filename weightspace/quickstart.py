"""Deprecated location: the quickstart moved to :mod:`weightspace.cli.quickstart`."""

import warnings

from weightspace.cli.quickstart import run_quickstart  # noqa: F401

warnings.warn("weightspace.quickstart moved to weightspace.cli.quickstart", DeprecationWarning, stacklevel=2)
