import pandas as pd
import yaml
from typer.testing import CliRunner

from weightspace.cli import app
from zoo.store import Zoo

from .conftest import tiny_recipe_dict
from .small_cnn_zoo_fixture import write_small_cnn_zoo

runner = CliRunner()


def test_build_info_export(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(num_members=2)))
    out = tmp_path / "z"
    r = runner.invoke(app, ["zoo", "build", str(recipe), str(out), "--backend", "serial", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "2 members (2 trained now, 0 already done)" in r.output
    r = runner.invoke(app, ["zoo", "build", str(recipe), str(out), "--backend", "serial", "--no-progress"])
    assert r.exit_code == 0 and "(0 trained now, 2 already done)" in r.output
    r = runner.invoke(app, ["zoo", "info", str(out)])
    assert r.exit_code == 0, r.output
    assert "members    2" in r.output and "cnn_small x2" in r.output and "test_acc" in r.output
    r = runner.invoke(app, ["zoo", "export", str(out), str(tmp_path / "z.parquet"), "--checkpoints"])
    assert r.exit_code == 0, r.output
    df = pd.read_parquet(tmp_path / "z.parquet")
    assert len(df) == 4 and set(Zoo(out).member_ids) == set(df["member_id"])


def test_build_errors_are_reported_not_raised(tmp_path):
    r = runner.invoke(app, ["zoo", "build", str(tmp_path / "missing.yaml"), str(tmp_path / "z")])
    assert r.exit_code == 2 and "no such recipe" in r.output
    r = runner.invoke(app, ["zoo", "info", str(tmp_path)])
    assert r.exit_code == 2 and "zoo.json is missing" in r.output


def test_import_small_cnn_zoo(tmp_path):
    src = tmp_path / "mnist"
    write_small_cnn_zoo(src, runs=2)
    out = tmp_path / "scz"
    r = runner.invoke(app, ["zoo", "import-small-cnn-zoo", str(src), str(out), "--steps", "all", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "imported 2 new members" in r.output
    r = runner.invoke(app, ["zoo", "import-small-cnn-zoo", str(src), str(out), "--steps", "all", "--no-progress"])
    assert r.exit_code == 0 and "imported 0 new members" in r.output and "2 were already there" in r.output
    z = Zoo(out)
    assert [c.epoch for c in z.members()[0].checkpoints] == [0, 1, 86]
    (src / "layout.csv").unlink()
    r = runner.invoke(app, ["zoo", "import-small-cnn-zoo", str(src), str(tmp_path / "o2"), "--no-progress"])
    # the CLI's error boundary: one line, exit 2 (user error)
    assert r.exit_code == 2 and "layout.csv: file not found" in r.output and "Traceback" not in r.output
