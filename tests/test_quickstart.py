"""End-to-end: `weightspace quickstart --small` writes a report and a
results.json with every section and finite numbers."""

import json
import math

import pytest
from typer.testing import CliRunner

from weightspace.cli import app


def _numbers(obj):
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)


@pytest.mark.slow
def test_quickstart_small(tmp_path):
    res = CliRunner().invoke(app, ["quickstart", "--small", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    results = json.loads((tmp_path / "results.json").read_text())
    for section in ("graphs", "zoo", "predict", "merge", "similarity", "generate"):
        assert section in results, section
    for g in results["graphs"]:
        assert g["max_abs_diff_permuted"] < 1e-9 < g["max_abs_diff_broken"]
    for name, m in results["predict"]["methods"].items():
        if name != "mean":
            assert math.isfinite(m["kendall_tau"]["value"]) and math.isfinite(m["r2"]["value"])
    merge = results["merge"]
    assert merge["weight_matching"]["loss_barrier"] < merge["naive"]["loss_barrier"]
    for key in ("naive", "weight_matching", "weight_matching+repair"):
        assert all(math.isfinite(x) for x in _numbers(merge[key]))
    assert all(math.isfinite(x) for x in _numbers(results["similarity"]))
    report = (tmp_path / "report.md").read_text()
    for heading in ("Parameter graphs", "Model zoo", "Predicting", "Merging", "similarity", "Generating"):
        assert heading in report
    gen = results["generate"]
    assert all(math.isfinite(x) for x in _numbers(gen["hypernet"]["accuracy"]))
    assert gen["checkpoint_flow"]["summary"]["copies"] >= 0 and math.isfinite(gen["checkpoint_flow"]["summary"]["ratio_median"])
    assert results["zoo"]["mnist1d"]["members"] > 0
    for fig in ("barriers", "prediction", "cka", "generate"):
        assert (tmp_path / f"{fig}.png").exists() and (tmp_path / f"{fig}.svg").exists()
