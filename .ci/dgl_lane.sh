#!/usr/bin/env bash
# DGL lane: dgl==2.1.0 loads only beside torch 2.0-2.2, while the project pins
# a newer torch, so DGL gets its own fresh virtual environment (.venv-dgl,
# git-ignored) with torch 2.2.1. The package is installed with --no-deps (its
# torch pin does not apply here); the test dependencies are listed below.
# Runs every test marked `dgl` (PyG <-> DGL parity on every registered
# architecture except the two ImageNet ResNets, which are `slow` too).
# Note: torch 2.2.1 from PyPI brings its CUDA libraries (~2.5 GB download).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .venv-dgl
python3 -m venv .venv-dgl
# shellcheck disable=SC1091
. .venv-dgl/bin/activate
python -m pip install -q \
  "torch==2.2.1" "torchdata==0.7.1" "numpy<2" "dgl==2.1.0" pandas pyyaml pydantic \
  "torch-geometric==2.5.3" scipy safetensors typer tqdm scikit-learn pot mnist1d matplotlib \
  pytest hypothesis
python -m pip install -q --no-deps -e .
export DGLBACKEND=pytorch MPLBACKEND=Agg
# fail here (not as skipped tests) when dgl does not load
python -c "import dgl, torch; print('DGL lane: dgl', dgl.__version__, 'torch', torch.__version__)"
pytest -q -m "dgl and not slow" tests/nn
