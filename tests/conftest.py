import os

os.environ.setdefault("MPLBACKEND", "Agg")

# Library functions that take dataset names find zoo's datasets through the
# `weightspace.datasets` entry point; a development install whose metadata
# predates it (pip install -e . refreshes it) finds them through this source.
from weightspace.data import register_dataset_source  # noqa: E402

register_dataset_source("zoo.datasets")
