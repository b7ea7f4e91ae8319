"""Counts of the bad-input suite, per command and per input class.

    python tests/robustness/report.py            # the table of cases
    python tests/robustness/report.py --run      # run every case, count passes, list failures
    python tests/robustness/report.py --run -k zoo   # only cases whose id contains 'zoo'

Run from the repository root (``PYTHONPATH=.``). ``--run`` checks each case
exactly as ``test_cli_bad_inputs.py`` does (same harness) and prints one line
per failing case: ``id -> what happens now``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.robustness.cases import CASES  # noqa: E402


def table(counts: dict, title: str, passed: dict | None = None) -> str:
    width = max(len(k) for k in counts) + 2
    head = f"{title:{width}s} {'cases':>6s}" + (f" {'pass':>6s}" if passed is not None else "")
    lines = [head, "-" * len(head)]
    for k in sorted(counts, key=lambda k: (-counts[k], k)):
        lines.append(f"{k:{width}s} {counts[k]:6d}" + (f" {passed.get(k, 0):6d}" if passed is not None else ""))
    total = sum(counts.values())
    lines.append(f"{'total':{width}s} {total:6d}" + (f" {sum(passed.values()):6d}" if passed is not None else ""))
    return "\n".join(lines)


def run(cases) -> dict[str, list[str]]:
    """``{case id: problems}`` for every case (empty list = passed)."""
    import torch

    import weightspace.cli.quickstart
    from tests.robustness._fixtures import build_assets
    from tests.robustness._harness import CaseCtx, ReachedRealWork, check

    def _no_quickstart(*a, **k):
        raise ReachedRealWork("a bad quickstart option reached run_quickstart")

    weightspace.cli.quickstart.run_quickstart = _no_quickstart
    torch.set_num_threads(1)
    results = {}
    with tempfile.TemporaryDirectory(prefix="ws-robustness-") as root:
        assets = build_assets(Path(root) / "assets")
        cwd = os.getcwd()
        for i, case in enumerate(cases):
            tmp = Path(root) / f"case{i:04d}"
            (tmp / "case").mkdir(parents=True)
            os.chdir(tmp)
            try:
                out = check(case, CaseCtx(tmp=tmp / "case", assets=assets), roots=[tmp, assets.root])
            finally:
                os.chdir(cwd)
            results[case.id] = out.problems + ([f"now: {out.error_line}"] if out.problems and out.error_line else [])
            print("." if not out.problems else "F", end="", flush=True, file=sys.stderr)
    print(file=sys.stderr)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="store_true", help="run every case and count passes")
    ap.add_argument("-k", default="", help="only cases whose id contains this")
    args = ap.parse_args()
    cases = [c for c in CASES if args.k in c.id]
    by_cmd, by_kind = Counter(c.command for c in cases), Counter(c.kind for c in cases)
    passed_cmd = passed_kind = None
    failures = {}
    if args.run:
        results = run(cases)
        failures = {k: v for k, v in results.items() if v}
        passed_cmd, passed_kind = defaultdict(int), defaultdict(int)
        for c in cases:
            if not results[c.id]:
                passed_cmd[c.command] += 1
                passed_kind[c.kind] += 1
    print(table(by_cmd, "command", passed_cmd))
    print()
    print(table(by_kind, "input class", passed_kind))
    if args.run:
        print(f"\n{len(cases)} bad inputs tried; {len(cases) - len(failures)} end in exit code 2 with one "
              "'error:' line naming the file or field, no traceback, nothing outside the output touched.")
        for cid, problems in failures.items():
            print(f"  {cid} -> {'; '.join(problems)}"[:400])


if __name__ == "__main__":
    main()
