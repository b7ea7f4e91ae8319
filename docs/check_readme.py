"""Run the examples of README.md's capability sections against this checkout.

Every ```python block from "## Parameter graphs" up to "## Benchmarks" runs, in
document order, as its own ``python`` process in one scratch directory (so
later examples see the zoos earlier ones built: ``runs/tiny``, ``runs/pair``,
``runs/pred``, ...). A ```yaml block whose first line is ``# NAME.yaml`` is
written to ``NAME.yaml`` first; after the blocks, the merge config is run
through the CLI (``weightspace merge merge.yaml runs/merged.safetensors``).
The published-zoo loaders read synthetic directories written here in their
on-disk formats (``data/smallcnnzoo/mnist``, ``data/mnist-inrs``,
``data/siren_mnist_wts``, ``data/tune_zoo_mlp``); nothing is downloaded.

    python docs/check_readme.py                 # scratch dir in /tmp, removed afterwards
    python docs/check_readme.py --keep DIR      # keep the outputs in DIR
    python docs/check_readme.py -v              # also print what passing blocks print

About two minutes on two CPU cores. Exit status 1 if any block fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRST, LAST = "## Parameter graphs and permutation specs", "## Benchmarks"


def blocks(readme: Path) -> list[tuple[str, str, int]]:
    """``(language, code, line number)`` of the fenced blocks in the checked range."""
    text = readme.read_text()
    start, stop = text.index(FIRST), text.index(LAST)
    offset = text[:start].count("\n")
    out = []
    for m in re.finditer(r"^```(\w+)\n(.*?)^```", text[start:stop], flags=re.S | re.M):
        out.append((m.group(1), m.group(2), offset + text[start : start + m.start()].count("\n") + 1))
    return out


def write_fixtures(root: Path) -> None:
    """Tiny published-zoo directories in the formats ``zoo.loaders`` documents."""
    import torch
    from torch import nn

    sys.path.insert(0, str(ROOT / "tests" / "zoo"))
    from small_cnn_zoo_fixture import write_small_cnn_zoo

    write_small_cnn_zoo(root / "smallcnnzoo" / "mnist", runs=3, steps=(0, 1, 86))
    torch.manual_seed(0)
    d = root / "mnist-inrs"  # DWSNets: splits.json + torch.save'd seq.i.* state dicts
    splits = {s: {"path": [], "label": []} for s in ("train", "val", "test")}
    for i, split in enumerate(["train", "train", "val", "test"]):
        rel = f"mnist_png_{split}_{i}/checkpoints/model_final.pth"
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        seq = nn.Sequential(nn.Linear(2, 32), nn.Linear(32, 32), nn.Linear(32, 1))
        torch.save({f"seq.{k}": v for k, v in seq.state_dict().items()}, d / rel)
        splits[split]["path"].append(rel)
        splits[split]["label"].append(i % 10)
    (d / "splits.json").write_text(json.dumps(splits))
    d = root / "siren_mnist_wts"  # NFN: {prefix}_{label}s/net{idx}.pth
    for i in range(3):
        p = d / f"randinit_test_{i}s" / f"net{i}.pth"
        p.parent.mkdir(parents=True, exist_ok=True)
        net = nn.Sequential(nn.Linear(2, 32), nn.Linear(32, 32), nn.Linear(32, 1))
        sd = net.state_dict()
        torch.save({"net.0.linear.weight": sd["0.weight"], "net.0.linear.bias": sd["0.bias"],
                    "net.1.linear.weight": sd["1.weight"], "net.1.linear.bias": sd["1.bias"],
                    "net.2.weight": sd["2.weight"], "net.2.bias": sd["2.bias"]}, p)
    d = root / "tune_zoo_mlp"  # model-zoos: Ray Tune trial directories
    for t in range(2):
        trial = d / f"NN_tune_trainable_{t:05d}"
        trial.mkdir(parents=True, exist_ok=True)
        (trial / "params.json").write_text(json.dumps({"model::type": "MLP", "seed": t, "optim::lr": 1e-3}))
        net = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
        lines = []
        for it in (1, 2):
            lines.append(json.dumps({"test_acc": 0.5 + 0.1 * it, "train_acc": 0.6, "training_iteration": it}))
            ck = trial / f"checkpoint_{it:06d}"
            ck.mkdir(exist_ok=True)
            torch.save({f"module_list.{k}": v for k, v in net.state_dict().items()}, ck / "checkpoints")
        (trial / "result.json").write_text("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    ap.add_argument("--keep", type=Path, default=None, help="work in this directory and keep it")
    ap.add_argument("--verbose", "-v", action="store_true", help="show the output of passing blocks too")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="readme_check_"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    failures = 0
    steps: list[tuple[str, list[str]]] = []
    try:
        write_fixtures(work / "data")
        for lang, code, line in blocks(args.readme):
            first = code.splitlines()[0] if code.strip() else ""
            if lang == "yaml" and (m := re.match(r"#\s*([\w.-]+\.ya?ml)\b", first)):
                (work / m.group(1)).write_text(code)
            elif lang == "python":
                script = work / f"readme_line{line}.py"
                script.write_text(code)
                steps.append((f"python block at README.md:{line}", [sys.executable, script.name]))
        if (work / "merge.yaml").exists():
            steps.append(("weightspace merge merge.yaml",
                          [sys.executable, "-m", "weightspace.cli", "merge", "merge.yaml", "runs/merged.safetensors"]))
        for label, cmd in steps:
            t0 = time.perf_counter()
            r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
            dt = time.perf_counter() - t0
            print(f"{'ok  ' if r.returncode == 0 else 'FAIL'} {label} ({dt:.1f}s)", flush=True)
            if r.returncode != 0:
                failures += 1
                print(r.stdout[-3000:], r.stderr[-3000:], sep="\n")
            elif args.verbose:
                print(r.stdout[-3000:], end="")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{len(steps) - failures}/{len(steps)} passed" + (f"; outputs in {work}" if args.keep else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
