"""The Python API on bad input: every reader raises a
:class:`~weightspace.errors.WeightspaceError` whose ``.path`` names the file
at fault (and ``.field`` the key, where there is one) -- never a foreign
exception, never a silent result, never code run from the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.robustness import _fixtures as F
from tests.robustness._harness import CaseCtx
from tests.robustness.cases import WEIGHTS, ZOOS
from weightspace.errors import InputFileError, WeightspaceError


def _ctx(tmp_path, assets) -> CaseCtx:
    c = CaseCtx(tmp=tmp_path / "case", assets=assets)
    c.tmp.mkdir()
    return c


def _assert_names(exc: WeightspaceError, path, field: str | None = None) -> None:
    assert isinstance(exc, WeightspaceError), f"{type(exc).__name__}: {exc}"
    assert exc.path is not None, f"{type(exc).__name__} without .path: {exc}"
    assert Path(path).name in exc.path, f".path {exc.path!r} does not name {Path(path).name!r}"
    assert "\n" not in str(exc)
    if field is not None:
        assert field in (exc.field or "") or field in str(exc), f"{exc!r} does not name {field!r}"


# ----------------------------------------------------------------- io


def test_check_output_path(tmp_path):
    from weightspace.io import check_output_path

    d = F.directory(tmp_path / "d")
    f = F.text(tmp_path / "f", "x")
    assert check_output_path(tmp_path / "new.json") == tmp_path / "new.json"
    assert check_output_path(d, kind="dir") == d
    assert check_output_path(tmp_path / "a" / "b", kind="dir") == tmp_path / "a" / "b"
    with pytest.raises(InputFileError) as e:
        check_output_path(d, field="--json")
    assert e.value.path == str(d) and e.value.field == "--json" and "directory" in str(e.value)
    with pytest.raises(InputFileError) as e:
        check_output_path(f, kind="dir", field="--out")
    assert e.value.path == str(f) and "not a directory" in str(e.value)
    with pytest.raises(InputFileError) as e:
        check_output_path(f / "x" / "y.json")
    assert str(f) in str(e.value)
    assert not (tmp_path / "a").exists()  # nothing created
