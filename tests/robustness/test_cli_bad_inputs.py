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
        import weightspace.quickstart

        monkeypatch.setattr(weightspace.quickstart, "run_quickstart", _no_quickstart)
    ctx = CaseCtx(tmp=tmp_path / "case", assets=assets)
    ctx.tmp.mkdir()
    outcome = check(case, ctx, roots=[tmp_path, assets.root])
    if outcome.problems:
        pytest.fail(describe(case, outcome), pytrace=False)
