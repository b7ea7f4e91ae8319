"""Channel rules (being split by op family; this step only moves the file so
that ``git log --follow`` keeps its history)."""

from weightspace.trace.rules.shapes import *  # noqa: F401,F403
