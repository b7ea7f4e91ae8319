"""The zoo reader and writer on damaged input: zoo.json read through the
guarded readers and its schema, index rows decoded per member, checkpoint
paths that leave the zoo never followed, swapped checkpoint files named, and
nothing created in a directory the writer refuses."""

from __future__ import annotations

import json

import pytest

from tests.robustness._fixtures import sql
from weightspace.errors import StateDictError
from zoo.errors import ZooFormatError
from zoo.store import Zoo, ZooWriter, save_safetensors

from .safety_helpers import fake_member, write_fake_zoo


@pytest.fixture
def fz(tmp_path):
    return write_fake_zoo(tmp_path / "fz", n=2)


@pytest.mark.parametrize("text, field", [
    (b"\x82\xff\x00garbage", None),
    (b"[1, 2, 3]", None),
    (None, "version"),
])
def test_damaged_zoo_json_names_the_file(fz, text, field):
    info = fz / "zoo.json"
    if text is None:
        obj = json.loads(info.read_text())
        obj["version"] = "abc"
        info.write_text(json.dumps(obj))
    else:
        info.write_bytes(text)
    with pytest.raises(ZooFormatError) as e:
        Zoo(fz)
    assert e.value.path == str(info) and "\n" not in str(e.value)
    if field:
        assert e.value.field == field


@pytest.mark.parametrize("stmt, column", [
    ("UPDATE members SET config='{not json' WHERE member_id='m001'", "members.config"),
    ("UPDATE members SET extra='[1]' WHERE member_id='m001'", "members.extra"),
    ("UPDATE checkpoints SET metrics='[1, 2' WHERE member_id='m001'", "checkpoints.metrics"),
])
def test_tampered_index_row_names_index_member_and_column(fz, stmt, column):
    sql(fz, stmt)
    with pytest.raises(ZooFormatError) as e:
        Zoo(fz)
    assert e.value.path == str(fz / "index.sqlite") and e.value.field == column
    assert "m001" in str(e.value) and "weightspace zoo repair" in str(e.value)


@pytest.mark.parametrize("bad", ["../../../../etc/passwd", "/etc/passwd"])
def test_checkpoint_path_outside_the_zoo_is_never_read(fz, bad):
    sql(fz, f"UPDATE checkpoints SET path='{bad}' WHERE member_id='m001' AND epoch=5")
    z = Zoo(fz)  # the rest of the zoo stays usable
    assert len(z) == 2 and z["m000"].state_dict() is not None
    with pytest.raises(ZooFormatError) as e:
        z["m001"].state_dict()
    assert e.value.path == str(fz / "index.sqlite") and e.value.field == "checkpoints.path"
    assert "m001" in str(e.value) and bad in str(e.value)
    for quick in (True, False):
        problems = z.verify(quick=quick)
        assert len(problems) == 1 and "m001" in problems[0] and "index.sqlite" in problems[0]


def test_swapped_checkpoint_names_the_file(fz):
    other = fake_member(9)["checkpoints"][0].state_dict
    other = {k: (v[:2] if v.ndim else v) for k, v in other.items()}  # other shapes
    ck = fz / "weights" / "m001" / "epoch_00005.safetensors"
    save_safetensors(ck, other)
    z = Zoo(fz)
    for read in (lambda: z["m001"].state_dict(), lambda: z["m001"].module(),
                 lambda: list(z.iter_members(as_module=True))):
        with pytest.raises(StateDictError) as e:
            read()
        assert e.value.path == str(ck), str(e.value)


def test_writer_refuses_before_creating_anything(tmp_path, fz):
    user = tmp_path / "thesis"
    user.mkdir()
    (user / "thesis.tex").write_text("keep me")
    with pytest.raises(ZooFormatError, match="not a zoo"):
        ZooWriter(user, {"name": "x", "source": "test"})
    assert sorted(p.name for p in user.iterdir()) == ["thesis.tex"]  # no .lock
    before = sorted(p.name for p in fz.iterdir())
    with pytest.raises(ZooFormatError, match="different zoo"):
        ZooWriter(fz, {"name": "x", "source": "another"})
    (fz / "index.sqlite").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ZooFormatError) as e:
        ZooWriter(fz, {"name": "fake", "source": "test"})
    assert e.value.path == str(fz / "index.sqlite")
    assert sorted(p.name for p in fz.iterdir()) == before  # no .lock either
