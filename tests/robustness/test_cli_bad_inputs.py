"""Every ``weightspace`` command against bad input: exit code 2, one line
``error: ...`` naming the file or field, no traceback, nothing outside the
output touched. The cases are in ``cases.py``; the contract is checked by
``_harness.check``."""

from __future__ import annotations

import pytest

from tests.robustness._harness import CaseCtx, ReachedRealWork, check, describe
from tests.robustness.cases import CASES


def _no_quickstart(*args, **kwargs):
    raise ReachedRealWork("a bad quickstart option reached run_quickstart instead of being refused")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, assets, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative default outputs land in the snapshot
    if case.command == "quickstart":
        import weightspace.cli.quickstart

        monkeypatch.setattr(weightspace.cli.quickstart, "run_quickstart", _no_quickstart)
    ctx = CaseCtx(tmp=tmp_path / "case", assets=assets)
    ctx.tmp.mkdir()
    outcome = check(case, ctx, roots=[tmp_path, assets.root])
    if outcome.problems:
        pytest.fail(describe(case, outcome), pytrace=False)


def test_real_process_prints_one_line(assets, tmp_path):
    """The same contract through a real process (real stderr, no CliRunner,
    Python's default warning filters): exit code 2, one line, no traceback."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.robustness import _fixtures as F

    bad = F.truncated(assets.weights, tmp_path / "truncated.safetensors")
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k not in ("WEIGHTSPACE_DEBUG", "PYTHONWARNINGS")}
    env["PYTHONPATH"] = str(root)
    p = subprocess.run(
        [sys.executable, "-c", "from weightspace.cli import app; app(prog_name='weightspace')",
         "graph", "mlp", "-a", "hidden=[8]", "--weights", str(bad)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and "truncated.safetensors" in lines[0], p.stderr
    assert "Traceback" not in p.stdout + p.stderr
