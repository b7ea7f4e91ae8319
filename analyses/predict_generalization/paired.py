"""Paired differences in Kendall τ against a reference method, from the
study's per-checkpoint predictions (``results/predictions_*.csv``): every
method and the reference see the same bootstrap resamples of test members,
so the interval is that of the difference, not two overlapping intervals.

    python analyses/predict_generalization/paired.py [--results DIR] [--reference gbm] [--join OTHER ...]

``--join OTHER`` adds the methods of another run on the same test
checkpoints (its ``predictions_*.csv`` of the same name; rows matched on
member and epoch, true values checked equal), e.g. an earlier run of the
same split and seed. Prints a markdown table and writes
``DIR/paired_vs_<reference>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from canonicalization import tau_difference  # noqa: E402


def joined(csv: Path, others: list[Path]) -> pd.DataFrame:
    """``csv``'s predictions with the methods of the same-named file in each
    of ``others`` that it lacks (same test checkpoints required)."""
    df = pd.read_csv(csv)
    for d in others:
        if not (d / csv.name).exists():
            raise SystemExit(f"{d / csv.name} is missing (--join needs the same split's predictions)")
        other = pd.read_csv(d / csv.name)
        new = [c for c in other.columns if c.startswith("pred_") and c not in df.columns]
        m = df.merge(other[["member_id", "epoch", "true", *new]], on=["member_id", "epoch"], suffixes=("", "_o"))
        if len(m) != len(df) or len(other) != len(df) or not np.allclose(m["true"], m["true_o"]):
            raise SystemExit(f"{d / csv.name} does not hold the same test checkpoints as {csv}")
        df = m.drop(columns="true_o")
    return df


def paired_table(csv: Path, reference: str, seed: int = 0, join: list[Path] = ()) -> dict:
    """``{method: {"value", "low", "high", ...}}``: τ(method) − τ(reference) on one split."""
    df = joined(csv, list(join))
    y, groups = df["true"].to_numpy(), df["member_id"].to_numpy()
    ref = df[f"pred_{reference}"].to_numpy()
    out = {}
    for col in df.columns:
        m = col.removeprefix("pred_")
        if not col.startswith("pred_") or m in (reference, "mean"):
            continue
        out[m] = tau_difference(y, df[col].to_numpy(), ref, groups, seed)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--reference", default="gbm")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--join", type=Path, nargs="*", default=[], help="other result folders of the same test split")
    args = ap.parse_args(argv)
    res = {}
    print(f"| zoo / split | method | Δτ vs {args.reference} [95 % CI, paired] |\n|---|---|---|")
    for csv in sorted(args.results.glob("predictions_*.csv")):
        key = csv.stem.removeprefix("predictions_")
        res[key] = paired_table(csv, args.reference, args.seed, args.join)
        for m, d in res[key].items():
            print(f"| {key} | {m} | {d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] |")
    (args.results / f"paired_vs_{args.reference}.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
