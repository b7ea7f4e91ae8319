"""Writes small fixtures in the exact on-disk format of the Small CNN Zoo
(Unterthiner et al. 2020): ``weights.npy`` (rows x 4970, TF layout),
``metrics.csv.gz`` and ``layout.csv``. The flat order (bias before kernel
within each layer) is the one of the published files, as documented by the
boundaries in the paper's notebook: (0,16) bias, (16,160) kernel of conv 1 ...
(4800,4810) dense bias, (4810,4970) dense kernel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

# (varname, shape) in flat order
VARIABLES = [
    ("sequential/conv2d/bias:0", (16,)),
    ("sequential/conv2d/kernel:0", (3, 3, 1, 16)),
    ("sequential/conv2d_1/bias:0", (16,)),
    ("sequential/conv2d_1/kernel:0", (3, 3, 16, 16)),
    ("sequential/conv2d_2/bias:0", (16,)),
    ("sequential/conv2d_2/kernel:0", (3, 3, 16, 16)),
    ("sequential/dense/bias:0", (10,)),
    ("sequential/dense/kernel:0", (16, 10)),
]
STEPS = (0, 1, 2, 3, 20, 40, 60, 80, 86)


def layout_rows():
    rows, pos = [], 0
    for name, shape in VARIABLES:
        n = int(np.prod(shape))
        rows.append({"varname": name, "start_idx": pos, "end_idx": pos + n, "shape": str(shape)})
        pos += n
    return rows


def unflatten(vector: np.ndarray) -> dict[str, np.ndarray]:
    """TF-layout arrays of one flat row (independent of the loader's code)."""
    out = {}
    for r in layout_rows():
        shape = tuple(int(s) for s in r["shape"].strip("()").split(",") if s.strip())
        out[r["varname"]] = vector[r["start_idx"] : r["end_idx"]].reshape(shape)
    return out


def write_small_cnn_zoo(
    path: Path,
    *,
    runs: int = 3,
    steps=(0, 1, 86),
    activation=("relu", "tanh"),
    dataset: str = "mnist",
    seed: int = 0,
) -> tuple[np.ndarray, pd.DataFrame]:
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    weights, rows = [], []
    for r in range(runs):
        cfg = {
            "config.activation": activation[r % len(activation)],
            "config.b_init": "zeros",
            "config.dataset": dataset,
            "config.dnn_architecture": "cnn",
            "config.dropout": [0.0, 0.2][r % 2],
            "config.epochs": 86,
            "config.epochs_between_checkpoints": 20,
            "config.init_std": 0.05,
            "config.l2reg": 1e-4 * (r + 1),
            "config.learning_rate": 10 ** -(r + 2),
            "config.num_layers": 3,
            "config.num_units": 16,
            "config.optimizer": "adam",
            "config.random_seed": 42,
            "config.train_fraction": [0.1, 0.25, 0.5, 1.0][r % 4],
            "config.w_init": "he_normal",
        }
        for step in steps:
            weights.append(rng.normal(0, 0.3, size=4970).astype(np.float32))
            rows.append({**cfg, "modeldir": f"/cns/zoo/{dataset}/run_{r:05d}", "step": step,
                         "test_accuracy": 0.1 + 0.8 * step / 86 - 0.01 * r, "test_loss": 2.3 - step / 50,
                         "train_accuracy": 0.1 + 0.85 * step / 86, "train_loss": 2.3 - step / 45})
    w = np.stack(weights)
    df = pd.DataFrame(rows)
    np.save(path / "weights.npy", w)
    df.to_csv(path / "metrics.csv.gz", index=False, compression="gzip")
    pd.DataFrame(layout_rows()).to_csv(path / "layout.csv", index=False)
    return w, df
