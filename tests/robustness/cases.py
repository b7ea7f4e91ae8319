"""The table of bad-input CLI cases: every ``weightspace`` command against
empty, truncated, corrupt, wrong-type, tampered, pickled, missing and
misplaced inputs, bad counts and options, damaged zoos and malformed Small
CNN Zoo directories. See :mod:`tests.robustness._harness` for the contract
each case is checked against, and ``report.py`` for the counts.

Options that bound the work (``--steps 1``, ``--no-progress``, a linear
predictor, random data) are passed even where the case is about something
else, so that a case whose bad input is *not* refused fails fast instead of
training for minutes.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.robustness import _fixtures as F
from tests.robustness._harness import Case, CaseCtx

CASES: list[Case] = []


def add(id: str, command: str, kind: str, build, expect=()) -> None:
    CASES.append(Case(id, command, kind, build, tuple(expect)))


def add_option_cases(command: str, prefix: str, argv, table) -> None:
    """One case ``<prefix>-<id>`` per ``(id, extra, kind, expect)`` row of
    ``table``: the argv ``argv(c)`` followed by the bad options ``extra``."""
    for id_, extra, kind, expect in table:
        add(f"{prefix}-{id_}", command, kind, (lambda e: lambda c: argv(c) + e)(extra), expect)


def count_rows(option: str, expect, *values: str, name: str | None = None) -> list[tuple]:
    """:func:`add_option_cases` rows giving count option ``option`` each of
    ``values``: id ``<name>-zero`` for ``"0"``, else ``<name>-negative``
    (``name``: the option without its dashes), kind ``negative-count``, and
    ``expect`` the name the one-line error must give."""
    name = name or option.lstrip("-")
    return [(f"{name}-{'zero' if v == '0' else 'negative'}", [option, v], "negative-count", [expect]) for v in values]


# ------------------------------------------------------------- bad weights
# name -> (input class, file name, factory(ctx, path) -> path)
WEIGHTS = {
    "empty": ("empty", "empty.safetensors", lambda c, p: F.empty(p)),
    "truncated": ("truncated", "truncated.safetensors", lambda c, p: F.truncated(c.assets.weights, p)),
    "random-bytes": ("corrupt", "garbage.safetensors", lambda c, p: F.random_bytes(p)),
    "huge-header": ("tampered", "hugeheader.safetensors", lambda c, p: F.safetensors_huge_header(p)),
    "huge-shape": ("tampered", "hugeshape.safetensors", lambda c, p: F.safetensors_huge_shape(p)),
    "directory": ("dir-for-file", "adir.safetensors", lambda c, p: F.directory(p)),
    "missing": ("missing", "missing.safetensors", lambda c, p: p),
    "pickle-code": ("pickle", "evil.pt", lambda c, p: F.malicious_pt(p, c.marker())),
    "pickle-object": ("pickle", "object.pt", lambda c, p: F.pickled_pt(p)),
    "pt-random": ("corrupt", "garbage.pt", lambda c, p: F.random_bytes(p)),
    "pt-empty": ("empty", "empty.pt", lambda c, p: F.empty(p)),
    "pt-truncated": ("truncated", "truncated.pt", lambda c, p: F.truncated(c.assets.weights_pt, p)),
    "pt-list": ("wrong-type", "list.pt", lambda c, p: F.list_of_tensors_pt(p)),
    "npy": ("wrong-ext", "array.npy", lambda c, p: F.npy_file(p)),
    "text": ("wrong-ext", "notes.txt", lambda c, p: F.text(p, "hello\n")),
    "other-arch": ("wrong-type", "other_arch.safetensors", lambda c, p: F.copy(c.assets.other_arch, p)),
    "nan": ("non-finite", "nan.safetensors", lambda c, p: F.nan_weights(c.assets.weights, p)),
}


def weights_file(c: CaseCtx, variant: str) -> str:
    _, name, make = WEIGHTS[variant]
    return str(make(c, c.path(name)))


def add_weights_cases(command: str, prefix: str, variants, argv):
    """One case per bad weights variant; ``argv(c, path)`` builds the argv."""
    for v in variants:
        kind, name, _ = WEIGHTS[v]
        add(f"{prefix}-{v}", command, kind, (lambda v: lambda c: argv(c, weights_file(c, v)))(v), [name])


# ---------------------------------------------------------------- bad zoos
def _zoo_copy(c: CaseCtx, name: str = "dz") -> Path:
    return F.copy(c.assets.zoo, c.path(name))


def _z_missing_info(c):
    z = _zoo_copy(c); (z / "zoo.json").unlink(); return z


def _z_garbage_info(c):
    z = _zoo_copy(c); F.random_bytes(z / "zoo.json"); return z


def _z_list_info(c):
    z = _zoo_copy(c); F.text(z / "zoo.json", "[1, 2, 3]"); return z


def _z_format_info(c):
    z = _zoo_copy(c); F.edit_json(z / "zoo.json", format="something-else"); return z


def _z_newer_info(c):
    z = _zoo_copy(c); F.edit_json(z / "zoo.json", version=99); return z


def _z_version_str(c):
    z = _zoo_copy(c); F.edit_json(z / "zoo.json", version="abc"); return z


def _z_empty_index(c):
    z = _zoo_copy(c); F.empty(z / "index.sqlite"); return z


def _z_garbage_index(c):
    z = _zoo_copy(c); F.random_bytes(z / "index.sqlite", 8192); return z


def _z_missing_index(c):
    z = _zoo_copy(c); (z / "index.sqlite").unlink(); return z


def _z_tampered_config(c):
    z = _zoo_copy(c); F.sql(z, "UPDATE members SET config='{not json' WHERE member_id='m3'"); return z


def _z_tampered_metrics(c):
    z = _zoo_copy(c); F.sql(z, "UPDATE checkpoints SET metrics='[1, 2' WHERE member_id='m3'"); return z


def _z_escape_path(c):
    """A checkpoint path in the index pointing outside the zoo."""
    z = _zoo_copy(c)
    F.sql(z, "UPDATE checkpoints SET path='../../../../../../etc/passwd' WHERE member_id='m3' AND epoch=1")
    return z


def _z_truncated_ck(c):
    z = _zoo_copy(c); ck = z / "weights" / "m3" / "epoch_00001.safetensors"; F.truncated(ck, ck); return z


def _z_missing_ck(c):
    z = _zoo_copy(c); (z / "weights" / "m3" / "epoch_00001.safetensors").unlink(); return z


def _z_swapped_ck(c):
    z = _zoo_copy(c)
    F.copy(c.assets.other_arch, z / "weights" / "m3" / "epoch_00001.safetensors.new")
    (z / "weights" / "m3" / "epoch_00001.safetensors.new").replace(z / "weights" / "m3" / "epoch_00001.safetensors")
    return z


def _z_missing_dir(c):
    return c.path("nozoo")


def _z_file(c):
    return F.text(c.path("zoofile"), "not a zoo\n")


def _z_empty_dir(c):
    p = c.path("emptydir"); p.mkdir(); return p


def _z_no_members(c):
    return F.copy(c.assets.empty_zoo, c.path("nomembers"))


CK = "m3/epoch_00001.safetensors"
# name -> (input class, factory, expected substrings)
ZOOS = {
    "missing-zoo-json": ("damaged-zoo", _z_missing_info, ["zoo.json"]),
    "garbage-zoo-json": ("damaged-zoo", _z_garbage_info, ["zoo.json"]),
    "list-zoo-json": ("damaged-zoo", _z_list_info, ["zoo.json"]),
    "wrong-format": ("damaged-zoo", _z_format_info, ["zoo.json"]),
    "newer-version": ("damaged-zoo", _z_newer_info, ["zoo.json"]),
    "version-not-int": ("damaged-zoo", _z_version_str, ["zoo.json", "version"]),
    "empty-index": ("damaged-zoo", _z_empty_index, ["index.sqlite"]),
    "garbage-index": ("damaged-zoo", _z_garbage_index, ["index.sqlite"]),
    "missing-index": ("damaged-zoo", _z_missing_index, ["index.sqlite"]),
    "tampered-config": ("damaged-zoo", _z_tampered_config, ["index.sqlite", "m3"]),
    "tampered-metrics": ("damaged-zoo", _z_tampered_metrics, ["index.sqlite", "m3"]),
    "path-escape": ("damaged-zoo", _z_escape_path, [("m3", "etc/passwd")]),
    "truncated-checkpoint": ("damaged-zoo", _z_truncated_ck, [CK]),
    "missing-checkpoint": ("damaged-zoo", _z_missing_ck, [CK]),
    "swapped-checkpoint": ("damaged-zoo", _z_swapped_ck, [("m3", CK)]),
    "missing-dir": ("missing", _z_missing_dir, ["nozoo"]),
    "file": ("file-for-dir", _z_file, ["zoofile"]),
    "empty-dir": ("file-for-dir", _z_empty_dir, ["emptydir"]),
    "no-members": ("empty", _z_no_members, ["nomembers"]),
}

#: zoo variants visible without reading weights (index/info level)
ZOO_META = ["missing-zoo-json", "garbage-zoo-json", "list-zoo-json", "wrong-format", "newer-version",
            "version-not-int", "empty-index", "garbage-index", "missing-index", "tampered-config",
            "tampered-metrics", "missing-dir", "file", "empty-dir"]
#: variants that only a command reading every checkpoint can notice
ZOO_WEIGHTS = ["truncated-checkpoint", "missing-checkpoint", "swapped-checkpoint", "path-escape"]


def add_zoo_cases(command: str, prefix: str, variants, argv):
    for v in variants:
        kind, make, expect = ZOOS[v]
        add(f"{prefix}-{v}", command, kind, (lambda make: lambda c: argv(c, str(make(c))))(make), expect)


#: output directories a zoo writer must refuse: id -> (input class, name, factory(ctx, path) -> path)
ZOO_OUTS = {
    "out-is-file": ("file-for-dir", "outfile", lambda c, p: F.text(p, "keep me\n")),
    "out-user-dir": ("existing-output", "mythesis", lambda c, p: F.user_dir(p)),
    "out-other-zoo": ("existing-output", "otherzoo", lambda c, p: F.copy(c.assets.zoo, p)),
}


def add_zoo_out_cases(command: str, prefix: str, argv):
    """One case per bad output zoo directory; ``argv(c, out)`` builds the argv."""
    for v, (kind, name, make) in ZOO_OUTS.items():
        add(f"{prefix}-{v}", command, kind, (lambda n, m: lambda c: argv(c, str(m(c, c.path(n)))))(name, make), [name])


# =================================================================== models
add("models-extra-arg", "models", "bad-option", lambda c: ["models", "extra"], ["extra"])
add("models-unknown-option", "models", "bad-option", lambda c: ["models", "--bogus"], ["--bogus"])
add("cli-unknown-command", "models", "bad-option", lambda c: ["no-such-command"], ["no-such-command"])

# ==================================================================== graph
add_weights_cases("graph", "graph-weights", list(WEIGHTS),
                  lambda c, w: ["graph", "mlp", "-a", "hidden=[8]", "--no-groups", "--weights", w])
for _id, _arg, _exp in [
    ("no-equals", "width", "--arg"),
    ("unknown-key", "wdith=3", "wdith"),
    ("wrong-type", "hidden=\"abc\"", "hidden"),
    ("negative", "hidden=[-1]", "hidden"),
    ("zero", "hidden=[0]", "hidden"),
    ("huge", "hidden=[2000000,2000000]", "hidden"),
]:
    add(f"graph-arg-{_id}", "graph", "bad-option" if _id in ("no-equals", "unknown-key") else
        ("negative-count" if _id in ("negative", "zero") else "wrong-type"),
        (lambda a: lambda c: ["graph", "mlp", "--no-groups", "-a", a])(_arg), [_exp])
add("graph-unknown-arch", "graph", "bad-option", lambda c: ["graph", "no_such_arch"], ["no_such_arch"])
add("graph-json-is-dir", "graph", "dir-for-file",
    lambda c: ["graph", "mlp", "--no-groups", "--json", str(F.directory(c.path("spec_dir")))], ["spec_dir"])
add("graph-json-parent-is-file", "graph", "file-for-dir",
    lambda c: ["graph", "mlp", "--no-groups", "--json", str(F.text(c.path("afile"), "x") / "spec.json")], ["afile"])


# =============================================================== similarity
def _sim(c, *extra, a="mlp", b="mlp"):
    return ["similarity", a, b, "--data", "random", "--max-samples", "64", "--no-match",
            "--out", c.out("sim_out"), *extra]


add_weights_cases("similarity", "similarity-weights",
                  ["empty", "truncated", "random-bytes", "huge-shape", "directory", "missing", "pickle-code",
                   "pt-list", "other-arch", "nan"],
                  lambda c, w: _sim(c, "--arg-a", "hidden=[8]", a=f"mlp:{w}"))
add("similarity-unknown-arch", "similarity", "bad-option", lambda c: _sim(c, a="no_such_arch"), ["no_such_arch"])
add("similarity-bad-data", "similarity", "bad-option", lambda c: _sim(c, "--data", "bogusdata"), ["bogusdata"])
add("similarity-bad-method", "similarity", "bad-option", lambda c: _sim(c, "--method", "bogusmethod"), ["bogusmethod"])
add("similarity-bad-reduction", "similarity", "bad-option", lambda c: _sim(c, "--reduction", "bogusred"), ["bogusred"])
add_option_cases("similarity", "similarity", _sim,
                 count_rows("--batch-size", "batch", "0", "-4") + count_rows("--max-samples", "max", "0", "-5"))
add("similarity-unknown-layer", "similarity", "bad-option",
    lambda c: _sim(c, "--layers-a", "no_such_layer"), ["no_such_layer"])
add("similarity-out-is-file", "similarity", "file-for-dir",
    lambda c: ["similarity", "mlp", "mlp", "--data", "random", "--max-samples", "64", "--no-match",
               "--out", str(F.text(c.path("outfile"), "keep me\n"))], ["outfile"])
add("similarity-arg-no-equals", "similarity", "bad-option", lambda c: _sim(c, "--arg-a", "width"), ["--arg-a"])
add("similarity-arg-unknown-key", "similarity", "bad-option", lambda c: _sim(c, "--arg-b", "wdith=3"), ["wdith"])


# ==================================================================== merge
def _merge_cfg(c: CaseCtx, **changes) -> dict:
    a = F.copy(c.assets.weights, c.path("a.safetensors"))
    b = F.copy(c.assets.weights, c.path("b.safetensors"))
    cfg = {"arch": "mlp", "arch_kwargs": {"hidden": [8]}, "models": [{"path": str(a)}, {"path": str(b)}],
           "method": "weight_matching"}
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    return cfg


def _merge(c: CaseCtx, cfg_path: Path | str, out: str | None = None):
    return ["merge", str(cfg_path), out or c.out("merged.safetensors")]


def _write_merge_yaml(c: CaseCtx, **changes) -> Path:
    p = c.path("merge.yaml")
    p.write_text(yaml.safe_dump(_merge_cfg(c, **changes)))
    return p


def _merge_yaml(**changes):
    return lambda c: _merge(c, _write_merge_yaml(c, **changes))


def _merge_with_model(c: CaseCtx, w: str):
    """A valid config whose second model is the bad weights file ``w``."""
    cfg = _merge_cfg(c)
    cfg["models"][1] = {"path": w}
    p = c.path("merge.yaml")
    p.write_text(yaml.safe_dump(cfg))
    return _merge(c, p)


add("merge-config-empty", "merge", "empty", lambda c: _merge(c, F.empty(c.path("empty.yaml"))), ["empty.yaml"])
add("merge-config-random-bytes", "merge", "corrupt", lambda c: _merge(c, F.random_bytes(c.path("garbage.yaml"))),
    ["garbage.yaml"])
add("merge-config-invalid-yaml", "merge", "corrupt",
    lambda c: _merge(c, F.text(c.path("broken.yaml"), "models: [a, b\nmethod: {")), ["broken.yaml"])
add("merge-config-directory", "merge", "dir-for-file", lambda c: _merge(c, F.directory(c.path("cfgdir.yaml"))),
    ["cfgdir.yaml"])
add("merge-config-missing", "merge", "missing", lambda c: _merge(c, c.path("missing.yaml")), ["missing.yaml"])
add("merge-config-python-tag", "merge", "pickle",
    lambda c: _merge(c, F.yaml_python_tag(c.path("evil.yaml"), c.marker())), ["evil.yaml"])
add("merge-config-top-list", "merge", "wrong-type", lambda c: _merge(c, F.text(c.path("list.yaml"), "- a\n- b\n")),
    ["list.yaml"])
add("merge-config-top-scalar", "merge", "wrong-type", lambda c: _merge(c, F.text(c.path("scalar.yaml"), "hello\n")),
    ["scalar.yaml"])
#: wrong fields in a merge config: name -> (top-level changes, expected names)
MERGE_FIELDS = {_id: (_changes, _exp) for _id, _changes, _exp in [
    ("models-not-list", {"models": 5}, ["models"]),
    ("models-empty", {"models": []}, ["models"]),
    ("models-missing", {"models": None}, ["models"]),
    ("model-not-mapping", {"models": [3, 4]}, ["models[0]"]),
    ("model-no-path", {"models": [{"weight": 1.0}, {"weight": 1.0}]}, ["models[0]"]),
    ("model-unknown-key", {"models": [{"path": "a.safetensors", "wieght": 1}, {"path": "b.safetensors"}]}, ["wieght"]),
    ("model-weight-string", {"models": [{"path": "a.safetensors", "weight": "heavy"}, {"path": "b.safetensors"}]},
     ["weight"]),
    ("model-weight-negative", {"models": [{"path": "a.safetensors", "weight": -1}, {"path": "b.safetensors"}]},
     ["weight"]),
    ("method-unknown", {"method": "bogus_method"}, ["method"]),
    ("method-not-string", {"method": 5}, ["method"]),
    ("method-missing", {"method": None}, ["method"]),
    ("unknown-top-key", {"metod": "average"}, ["metod"]),
    ("reference-out-of-range", {"reference": 5}, ["reference"]),
    ("reference-negative", {"reference": -1}, ["reference"]),
    ("reference-string", {"reference": "first"}, ["reference"]),
    ("options-not-mapping", {"options": [1, 2]}, ["options"]),
    ("arch-unknown", {"arch": "no_such_arch"}, ["no_such_arch"]),
    ("arch-kwargs-string", {"arch_kwargs": "wide"}, ["arch_kwargs"]),
    ("arch-kwargs-unknown", {"arch_kwargs": {"hidden": [8], "wdith": 3}}, ["wdith"]),
    ("repair-unknown", {"repair": "bogus_repair"}, ["repair"]),
    ("barrier-num-lambdas-zero", {"barrier": {"num_lambdas": 0}}, ["num_lambdas"]),
    ("barrier-num-lambdas-negative", {"barrier": {"num_lambdas": -5}}, ["num_lambdas"]),
    ("barrier-not-mapping", {"barrier": "yes please"}, ["barrier"]),
    ("data-max-samples-negative", {"data": {"dataset": "digits", "max_samples": -1}}, ["max_samples"]),
    ("data-unknown-dataset", {"data": {"dataset": "no_such_dataset"}}, ["no_such_dataset"]),
    ("data-missing-file", {"data": {"path": "nodata.npz"}}, ["nodata.npz"]),
    ("seed-string", {"seed": "abc"}, ["seed"]),
    ("options-negative-sweeps", {"method": "weight_matching", "options": {"max_sweeps": -1}}, ["max_sweeps"]),
    ("options-unknown", {"options": {"bogus_option": 1}}, ["bogus_option"]),
]}
for _id, (_changes, _exp) in MERGE_FIELDS.items():
    add(f"merge-field-{_id}", "merge", "wrong-type" if "negative" not in _id and "zero" not in _id else "negative-count",
        _merge_yaml(**_changes), _exp)
add_weights_cases("merge", "merge-model",
                  ["empty", "truncated", "random-bytes", "huge-shape", "directory", "missing", "pickle-code",
                   "pt-list", "other-arch", "nan"],
                  _merge_with_model)
add("merge-out-not-safetensors", "merge", "wrong-ext",
    lambda c: _merge(c, _write_merge_yaml(c), c.out("merged.txt")), ["merged.txt"])
add("merge-out-is-dir", "merge", "dir-for-file",
    lambda c: _merge(c, _write_merge_yaml(c), str(F.directory(c.path("outdir.safetensors")))),
    ["outdir.safetensors"])
add("merge-out-parent-is-file", "merge", "file-for-dir",
    lambda c: _merge(c, _write_merge_yaml(c), str(F.text(c.path("afile"), "x") / "m.safetensors")),
    ["afile"])


# =============================================================== quickstart
# run_quickstart is replaced by a stand-in that fails the test if reached.
add("quickstart-seed-not-int", "quickstart", "wrong-type", lambda c: ["quickstart", "--seed", "abc"], ["--seed"])
add("quickstart-seed-negative", "quickstart", "negative-count", lambda c: ["quickstart", "--seed", "-1"], ["--seed"])
add("quickstart-out-is-file", "quickstart", "file-for-dir",
    lambda c: ["quickstart", "--out", str(F.text(c.path("qs_file"), "keep me\n"))], ["qs_file"])
add("quickstart-out-parent-is-file", "quickstart", "file-for-dir",
    lambda c: ["quickstart", "--out", str(F.text(c.path("afile"), "x") / "qs")], ["afile"])
add("quickstart-unknown-option", "quickstart", "bad-option", lambda c: ["quickstart", "--fast"], ["--fast"])


# ================================================================ zoo build
def _recipe(c: CaseCtx, name="recipe.yaml", edit=None) -> str:
    r = json.loads(json.dumps(c.assets.recipe))
    if edit:
        edit(r)
    p = c.path(name)
    p.write_text(yaml.safe_dump(r))
    return str(p)


def _build(c, recipe, *extra, out=None):
    return ["zoo", "build", recipe, out or c.out("built"), "--backend", "serial", "--no-progress",
            "--max-members", "1", *extra]


def _set(dotted, value):
    def edit(r):
        d = r
        keys = dotted.split(".")
        for k in keys[:-1]:
            d = d.setdefault(k, {})
        if value is None:
            d.pop(keys[-1], None)
        else:
            d[keys[-1]] = value
    return edit


add("zoo-build-recipe-empty", "zoo build", "empty", lambda c: _build(c, str(F.empty(c.path("empty.yaml")))),
    ["empty.yaml"])
add("zoo-build-recipe-random-bytes", "zoo build", "corrupt",
    lambda c: _build(c, str(F.random_bytes(c.path("garbage.yaml")))), ["garbage.yaml"])
add("zoo-build-recipe-directory", "zoo build", "dir-for-file",
    lambda c: _build(c, str(F.directory(c.path("rdir.yaml")))), ["rdir.yaml"])
add("zoo-build-recipe-missing", "zoo build", "missing", lambda c: _build(c, str(c.path("missing.yaml"))),
    ["missing.yaml"])
add("zoo-build-recipe-unknown-name", "zoo build", "missing", lambda c: _build(c, "no_such_recipe"),
    ["no_such_recipe"])
add("zoo-build-recipe-python-tag", "zoo build", "pickle",
    lambda c: _build(c, str(F.yaml_python_tag(c.path("evil.yaml"), c.marker()))), ["evil.yaml"])
add("zoo-build-recipe-top-list", "zoo build", "wrong-type",
    lambda c: _build(c, str(F.text(c.path("list.yaml"), "- a\n- b\n"))), ["list.yaml"])
add("zoo-build-recipe-invalid-toml", "zoo build", "corrupt",
    lambda c: _build(c, str(F.text(c.path("bad.toml"), "name = [unclosed\n"))), ["bad.toml"])
#: wrong fields in a recipe: name -> (dotted key, value (None: delete), expected name)
RECIPE_FIELDS = {_id: (_dotted, _value, _exp) for _id, _dotted, _value, _exp in [
    ("epochs-string", "train.epochs", "ten", "epochs"),
    ("epochs-negative", "train.epochs", -1, "epochs"),
    ("batch-size-zero", "train.batch_size", 0, "batch_size"),
    ("lr-negative", "train.lr", -0.1, "lr"),
    ("lr-string", "train.lr", "fast", "lr"),
    ("num-members-zero", "search.num_members", 0, "num_members"),
    ("num-members-negative", "search.num_members", -3, "num_members"),
    ("arch-unknown", "arch", "no_such_arch", "no_such_arch"),
    ("model-unknown-kwarg", "model.wdith", 4, "wdith"),
    ("model-width-negative", "model.width", -4, "width"),
    ("unknown-top-key", "trian", {"epochs": 1}, "trian"),
    ("checkpoints-string", "checkpoints", "often", "checkpoints"),
    ("data-unknown", "data.name", "no_such_data", "no_such_data"),
    ("search-method-unknown", "search.method", "bogus_search", "bogus_search"),
    ("search-space-bad-key", "search.space", {"model.no_such_key": [1, 2]}, "no_such_key"),
    ("name-missing", "name", None, "name"),
]}
for _id, (_dotted, _value, _exp) in RECIPE_FIELDS.items():
    add(f"zoo-build-field-{_id}", "zoo build",
        "negative-count" if ("negative" in _id or "zero" in _id) else "wrong-type",
        (lambda d, v: lambda c: _build(c, _recipe(c, edit=_set(d, v))))(_dotted, _value), ["recipe.yaml", _exp])
add_option_cases("zoo build", "zoo-build", lambda c: _build(c, _recipe(c)), count_rows("--workers", "workers", "0", "-2"))
# without _build's own --max-members 1
add_option_cases("zoo build", "zoo-build",
                 lambda c: ["zoo", "build", _recipe(c), c.out("built"), "--backend", "serial", "--no-progress"],
                 count_rows("--max-members", ("--max-members", "max_members"), "-1", "0"))
add("zoo-build-backend-unknown", "zoo build", "bad-option",
    lambda c: ["zoo", "build", _recipe(c), c.out("built"), "--backend", "bogus_backend", "--no-progress",
               "--max-members", "1"], ["bogus_backend"])
add_zoo_out_cases("zoo build", "zoo-build", lambda c, out: _build(c, _recipe(c), out=out))


# ============================================================ zoo info/export
add_zoo_cases("zoo info", "zoo-info", ZOO_META, lambda c, z: ["zoo", "info", z])
add_zoo_cases("zoo export", "zoo-export",
              ["missing-zoo-json", "garbage-zoo-json", "empty-index", "garbage-index", "tampered-config",
               "missing-dir", "file"],
              lambda c, z: ["zoo", "export", z, c.out("table.parquet")])
add("zoo-export-out-is-dir", "zoo export", "dir-for-file",
    lambda c: ["zoo", "export", str(c.assets.zoo), str(F.directory(c.path("outdir.parquet")))], ["outdir.parquet"])
add("zoo-export-out-parent-is-file", "zoo export", "file-for-dir",
    lambda c: ["zoo", "export", str(c.assets.zoo), str(F.text(c.path("afile"), "x") / "t.parquet")], ["afile"])

# ====================================================== zoo verify / repair
# Added on another branch; a damaged or foreign directory must still be one line.
add_zoo_cases("zoo verify", "zoo-verify", ["missing-dir", "file", "empty-dir", "garbage-zoo-json"],
              lambda c, z: ["zoo", "verify", z])
add_zoo_cases("zoo repair", "zoo-repair", ["missing-dir", "file"], lambda c, z: ["zoo", "repair", z])
add("zoo-repair-user-dir", "zoo repair", "existing-output",
    lambda c: ["zoo", "repair", str(F.user_dir(c.path("mythesis")))], ["mythesis"])


# ===================================================== import-small-cnn-zoo
def _scz(c: CaseCtx, edit=None) -> str:
    d = F.copy(c.assets.scz, c.path("scz"))
    if edit:
        edit(d)
    return str(d)


def _imp(c, src, *extra, out=None):
    return ["zoo", "import-small-cnn-zoo", src, out or c.out("imported"), "--no-progress", *extra]


def _scz_weights_wrong_width(d):
    import numpy as np

    np.save(d / "weights.npy", np.zeros((4, 100), dtype=np.float32))


def _scz_weights_1d(d):
    import numpy as np

    np.save(d / "weights.npy", np.zeros(4970, dtype=np.float32))


def _scz_weights_int(d):
    import numpy as np

    np.save(d / "weights.npy", np.zeros((4, 4970), dtype=np.int64))


def _scz_layout_past_end(d):
    text = (d / "layout.csv").read_text().replace("4810,4970", "4810,9999")
    (d / "layout.csv").write_text(text)


def _scz_layout_bad_shape(d):
    text = (d / "layout.csv").read_text().replace('"(16, 10)"', '"(16, 11)"')
    (d / "layout.csv").write_text(text)


def _scz_metrics_fewer_rows(d):
    import pandas as pd

    df = pd.read_csv(d / "metrics.csv.gz")
    df.iloc[:-1].to_csv(d / "metrics.csv.gz", index=False, compression="gzip")


def _scz_metrics_header_only(d):
    import pandas as pd

    df = pd.read_csv(d / "metrics.csv.gz")
    df.iloc[:0].to_csv(d / "metrics.csv.gz", index=False, compression="gzip")


def _scz_metrics_no_step(d):
    import pandas as pd

    df = pd.read_csv(d / "metrics.csv.gz")
    df.drop(columns=["step"]).to_csv(d / "metrics.csv.gz", index=False, compression="gzip")


def _scz_metrics_bad_activation(d):
    import pandas as pd

    df = pd.read_csv(d / "metrics.csv.gz")
    df["config.activation"] = "bogus_act"
    df.to_csv(d / "metrics.csv.gz", index=False, compression="gzip")


def _scz_metrics_bad_num_layers(d):
    import pandas as pd

    df = pd.read_csv(d / "metrics.csv.gz")
    df["config.num_layers"] = -3
    df.to_csv(d / "metrics.csv.gz", index=False, compression="gzip")


def _unlink(name):
    return lambda d: (d / name).unlink()


#: malformed Small CNN Zoo directories: name -> (edit(dir), input class, expected name)
SCZ_EDITS = {_id: (_edit, _kind, _exp) for _id, _edit, _kind, _exp in [
    ("weights-missing", _unlink("weights.npy"), "missing", "weights.npy"),
    ("weights-empty", lambda d: F.empty(d / "weights.npy"), "empty", "weights.npy"),
    ("weights-random-bytes", lambda d: F.random_bytes(d / "weights.npy"), "corrupt", "weights.npy"),
    ("weights-truncated", lambda d: F.truncated(d / "weights.npy", d / "weights.npy", 0.6), "truncated", "weights.npy"),
    ("weights-pickle-code", None, "pickle", "weights.npy"),
    ("weights-directory", lambda d: ((d / "weights.npy").unlink(), F.directory(d / "weights.npy")), "dir-for-file",
     "weights.npy"),
    ("weights-wrong-width", _scz_weights_wrong_width, "wrong-type", "weights.npy"),
    ("weights-1d", _scz_weights_1d, "wrong-type", "weights.npy"),
    ("weights-int", _scz_weights_int, "wrong-type", "weights.npy"),
    ("layout-missing", _unlink("layout.csv"), "missing", "layout.csv"),
    ("layout-header-only", lambda d: F.text(d / "layout.csv", "varname,start_idx,end_idx,shape\n"), "malformed-scz",
     "layout.csv"),
    ("layout-empty", lambda d: F.empty(d / "layout.csv"), "empty", "layout.csv"),
    ("layout-random-bytes", lambda d: F.random_bytes(d / "layout.csv"), "corrupt", "layout.csv"),
    ("layout-past-end", _scz_layout_past_end, "tampered", "layout.csv"),
    ("layout-bad-shape", _scz_layout_bad_shape, "tampered", "layout.csv"),
    ("metrics-missing", _unlink("metrics.csv.gz"), "missing", "metrics.csv.gz"),
    ("metrics-not-gzip", lambda d: F.text(d / "metrics.csv.gz", "step\n0\n"), "corrupt", "metrics.csv.gz"),
    ("metrics-empty", lambda d: F.empty(d / "metrics.csv.gz"), "empty", "metrics.csv.gz"),
    ("metrics-fewer-rows", _scz_metrics_fewer_rows, "malformed-scz", "metrics.csv.gz"),
    ("metrics-header-only", _scz_metrics_header_only, "malformed-scz", "metrics.csv.gz"),
    ("metrics-no-step", _scz_metrics_no_step, "malformed-scz", "step"),
    ("metrics-bad-activation", _scz_metrics_bad_activation, "malformed-scz", "bogus_act"),
    ("metrics-bad-num-layers", _scz_metrics_bad_num_layers, "malformed-scz", "num_layers"),
]}
for _id, (_edit, _kind, _exp) in SCZ_EDITS.items():
    if _id == "weights-pickle-code":
        add(f"zoo-import-{_id}", "zoo import-small-cnn-zoo", _kind,
            lambda c: _imp(c, _scz(c, lambda d: F.malicious_npy(d / "weights.npy", c.marker()))), [_exp])
    else:
        add(f"zoo-import-{_id}", "zoo import-small-cnn-zoo", _kind,
            (lambda e: lambda c: _imp(c, _scz(c, e)))(_edit), [_exp])
add("zoo-import-src-missing", "zoo import-small-cnn-zoo", "missing", lambda c: _imp(c, str(c.path("noscz"))),
    ["noscz"])
add("zoo-import-src-file", "zoo import-small-cnn-zoo", "file-for-dir",
    lambda c: _imp(c, str(F.text(c.path("sczfile"), "x"))), ["sczfile"])
add("zoo-import-src-empty-dir", "zoo import-small-cnn-zoo", "file-for-dir",
    lambda c: (c.path("emptyscz").mkdir(), _imp(c, str(c.path("emptyscz"))))[1], ["emptyscz"])
add("zoo-import-steps-string", "zoo import-small-cnn-zoo", "wrong-type", lambda c: _imp(c, _scz(c), "--steps", "abc"),
    ["--steps"])
add("zoo-import-steps-unknown", "zoo import-small-cnn-zoo", "bad-option", lambda c: _imp(c, _scz(c), "--steps", "999"),
    ["999"])
add_option_cases("zoo import-small-cnn-zoo", "zoo-import", lambda c: _imp(c, _scz(c)),
                 count_rows("--limit", "limit", "0", "-1"))
add("zoo-import-padding-unknown", "zoo import-small-cnn-zoo", "bad-option",
    lambda c: _imp(c, _scz(c), "--padding", "bogus_pad"), ["bogus_pad"])
add_zoo_out_cases("zoo import-small-cnn-zoo", "zoo-import", lambda c, out: _imp(c, _scz(c), out=out))


def _scz_zoo_damaged(c: CaseCtx, damage) -> str:
    """A copy of the zoo imported from the same Small CNN Zoo (so importing
    into it again is a resume), its index damaged: resuming must refuse it,
    not take every stored checkpoint for an orphan and delete it."""
    z = F.copy(c.assets.scz_zoo, c.path("myzoo"))
    damage(z / "index.sqlite")
    return str(z)


add("zoo-import-resume-empty-index", "zoo import-small-cnn-zoo", "existing-output",
    lambda c: _imp(c, _scz(c), out=_scz_zoo_damaged(c, F.empty)), ["index.sqlite"])
add("zoo-import-resume-garbage-index", "zoo import-small-cnn-zoo", "existing-output",
    lambda c: _imp(c, _scz(c), out=_scz_zoo_damaged(c, lambda p: F.random_bytes(p, 8192))), ["index.sqlite"])
add("zoo-import-resume-tampered-members", "zoo import-small-cnn-zoo", "existing-output",
    lambda c: _imp(c, _scz(c), out=_scz_zoo_damaged(c, lambda p: F.sql(p.parent, "DROP TABLE members"))),
    ["index.sqlite"])


# ============================================================== predict fit
def _fit(c, zoo_dir, *extra):
    return ["predict", "fit", zoo_dir, "--model", "linear", *extra]


add_zoo_cases("predict fit", "predict-fit-zoo", ZOO_META + ZOO_WEIGHTS + ["no-members"],
              lambda c, z: _fit(c, z))
add_option_cases("predict fit", "predict-fit", lambda c: _fit(c, str(c.assets.zoo)), [
    ("target-unknown", ["--target", "bogus_metric"], "bad-option", ["bogus_metric"]),
    ("model-unknown", ["--model", "bogus_model"], "bad-option", ["bogus_model"]),
    ("checkpoints-string", ["--checkpoints", "abc"], "wrong-type", ["--checkpoints"]),
    ("checkpoints-unknown-epoch", ["--checkpoints", "99"], "bad-option", ["99"]),
    *count_rows("--checkpoints", "-1", "-1"),
    ("test-fraction-negative", ["--test-fraction", "-0.5"], "negative-count", [("--test-fraction", "test_fraction")]),
    ("test-fraction-above-one", ["--test-fraction", "1.5"], "negative-count", [("--test-fraction", "test_fraction")]),
    ("test-fraction-nan", ["--test-fraction", "nan"], "non-finite", [("--test-fraction", "test_fraction")]),
    ("split-unknown", ["--split", "bogus_split"], "bad-option", ["bogus_split"]),
    ("split-ood-no-column", ["--split", "ood"], "bad-option", [("--ood-column", "ood_column")]),
    ("ood-column-unknown", ["--split", "ood", "--ood-column", "no_such_col", "--ood-train", "1"], "bad-option",
     ["no_such_col"]),
    ("epochs-zero", ["--model", "statnn", "--epochs", "0"], "negative-count", ["epochs"]),
    ("epochs-negative", ["--model", "statnn", "--epochs", "-3"], "negative-count", ["epochs"]),
    ("param-no-equals", ["-p", "alphas"], "bad-option", ["--param"]),
    ("param-unknown", ["-p", "no_such_param=1"], "bad-option", ["no_such_param"]),
    ("param-wrong-type", ["-p", "alphas=\"many\""], "wrong-type", ["alphas"]),
    *count_rows("--seed", "seed", "-1"),
])
add("predict-fit-gbm-param-wrong-type", "predict fit", "wrong-type",
    lambda c: ["predict", "fit", str(c.assets.zoo), "--model", "gbm", "-p", "max_iter=\"abc\""], ["max_iter"])
add("predict-fit-out-is-file", "predict fit", "file-for-dir",
    lambda c: _fit(c, str(c.assets.zoo), "--out", str(F.text(c.path("outfile"), "keep me\n"))), ["outfile"])
add("predict-fit-json-is-dir", "predict fit", "dir-for-file",
    lambda c: _fit(c, str(c.assets.zoo), "--json", str(F.directory(c.path("report.json")))), ["report.json"])


# ============================================================= predict rank
def _rank(c, ckpts, predictor=None, *extra):
    return ["predict", "rank", *ckpts, "--predictor", predictor or str(c.assets.predictor), *extra]


add_weights_cases("predict rank", "predict-rank-checkpoint",
                  ["empty", "truncated", "random-bytes", "huge-header", "huge-shape", "directory", "missing",
                   "pickle-code", "pickle-object", "pt-list", "text", "other-arch", "nan"],
                  lambda c, w: _rank(c, [str(c.assets.weights), w]))


def _pred_copy(c, edit=None) -> str:
    d = F.copy(c.assets.predictor, c.path("pred"))
    if edit:
        edit(d)
    return str(d)


def _pj(**changes):
    return lambda d: F.edit_json(d / "predictor.json", **changes)


def _pj_params(**changes):
    def edit(d):
        obj = json.loads((d / "predictor.json").read_text())
        obj["params"].update(changes)
        (d / "predictor.json").write_text(json.dumps(obj))
    return edit


#: damaged saved predictors: name -> (edit(dir), input class, expected names)
PREDICTOR_EDITS = {_id: (_edit, _kind, _exp) for _id, _edit, _kind, _exp in [
    ("json-missing", _unlink("predictor.json"), "missing", ["predictor.json"]),
    ("json-empty", lambda d: F.empty(d / "predictor.json"), "empty", ["predictor.json"]),
    ("json-random-bytes", lambda d: F.random_bytes(d / "predictor.json"), "corrupt", ["predictor.json"]),
    ("json-truncated", lambda d: F.truncated(d / "predictor.json", d / "predictor.json"), "truncated",
     ["predictor.json"]),
    ("json-list", lambda d: F.text(d / "predictor.json", "[1, 2]"), "wrong-type", ["predictor.json"]),
    ("json-directory", lambda d: ((d / "predictor.json").unlink(), F.directory(d / "predictor.json")), "dir-for-file",
     ["predictor.json"]),
    ("wrong-format", _pj(format="something-else"), "tampered", ["predictor.json"]),
    ("newer-version", _pj(version=99), "tampered", ["predictor.json"]),
    ("version-not-int", _pj(version="abc"), "wrong-type", ["predictor.json", "version"]),
    ("unknown-class", _pj(**{"class": "os.system"}), "tampered", ["predictor.json", "os.system"]),
    ("params-missing", _pj(params=None), "tampered", ["predictor.json", "params"]),
    ("params-not-mapping", _pj(params=[1, 2]), "wrong-type", ["predictor.json", "params"]),
    ("params-unknown-key", _pj_params(no_such_param=1), "tampered", ["predictor.json", "no_such_param"]),
    ("params-wrong-type", _pj_params(alphas="many"), "wrong-type", ["predictor.json", "alphas"]),
    ("layouts-missing", _pj(layouts=None), "tampered", ["predictor.json", "layouts"]),
    ("layouts-not-list", _pj(layouts=5), "wrong-type", ["predictor.json", "layouts"]),
    ("layouts-huge-shape", _pj(layouts=[[["layers.0.weight", F.HUGE], ["layers.0.bias", [8]],
                                         ["layers.2.weight", [10, 8]], ["layers.2.bias", [10]]]]),
     "tampered", ["predictor.json", "layouts"]),
    ("layouts-negative-shape", _pj(layouts=[[["layers.0.weight", [-8, 64]]]]), "tampered",
     ["predictor.json", "layouts"]),
    ("n-train-string", _pj(n_train="many"), "wrong-type", ["predictor.json", "n_train"]),
    ("state-not-mapping", _pj(state=[1]), "wrong-type", ["predictor.json", "state"]),
    ("state-intercept-string", _pj(state={"intercept": "x", "alpha": 1.0}), "wrong-type",
     ["predictor.json", "intercept"]),
    ("arrays-missing", _unlink("arrays.safetensors"), "missing", ["arrays.safetensors"]),
    ("arrays-truncated", lambda d: F.truncated(d / "arrays.safetensors", d / "arrays.safetensors"), "truncated",
     ["arrays.safetensors"]),
    ("arrays-random-bytes", lambda d: F.random_bytes(d / "arrays.safetensors"), "corrupt", ["arrays.safetensors"]),
    ("arrays-huge-shape", lambda d: F.safetensors_huge_shape(d / "arrays.safetensors"), "tampered",
     ["arrays.safetensors"]),
]}
for _id, (_edit, _kind, _exp) in PREDICTOR_EDITS.items():
    add(f"predict-rank-predictor-{_id}", "predict rank", _kind,
        (lambda e: lambda c: _rank(c, [str(c.assets.weights)], _pred_copy(c, e)))(_edit), _exp)
add("predict-rank-predictor-missing", "predict rank", "missing",
    lambda c: _rank(c, [str(c.assets.weights)], str(c.path("nopred"))), ["nopred"])
add("predict-rank-predictor-is-file", "predict rank", "file-for-dir",
    lambda c: _rank(c, [str(c.assets.weights)], str(F.text(c.path("predfile"), "x"))), ["predfile"])
add("predict-rank-order-unknown", "predict rank", "bad-option",
    lambda c: _rank(c, [str(c.assets.weights)], None, "--order", "sideways"), ["sideways"])
add_option_cases("predict rank", "predict-rank", lambda c: _rank(c, [str(c.assets.weights)]),
                 count_rows("--top", "--top", "-1", "0"))
add("predict-rank-json-is-dir", "predict rank", "dir-for-file",
    lambda c: _rank(c, [str(c.assets.weights)], None, "--json", str(F.directory(c.path("rank.json")))), ["rank.json"])
add("predict-rank-arch-unknown", "predict rank", "bad-option",
    lambda c: _rank(c, [str(c.assets.weights)], None, "--arch", "no_such_arch"), ["no_such_arch"])


# ================================================================= generate
def _hn_train(c, *extra, out=None):
    return ["generate", "hypernet-train", out or c.out("hn.safetensors"), "--steps", "1", "--small",
            "--no-progress", *extra]


add_option_cases("generate hypernet-train", "generate-hypernet-train", _hn_train, [
    *count_rows("--steps", "steps", "0", "-5"),
    *count_rows("--archs-per-step", ("--archs-per-step", "archs_per_step"), "0", "-1", name="archs"),
    *count_rows("--threads", "threads", "-1"),
])
add("generate-hypernet-train-out-is-dir", "generate hypernet-train", "dir-for-file",
    lambda c: _hn_train(c, out=str(F.directory(c.path("hndir.safetensors")))), ["hndir.safetensors"])
add("generate-hypernet-train-out-parent-is-file", "generate hypernet-train", "file-for-dir",
    lambda c: _hn_train(c, out=str(F.text(c.path("afile"), "x") / "hn.safetensors")), ["afile"])


def _init(c, hypernet=None, *extra, arch="mlp", out=None):
    return ["generate", "init", arch, "-a", "hidden=[8]", "--hypernet", hypernet or str(c.assets.hypernet),
            "-o", out or c.out("init.safetensors"), *extra]


add_weights_cases("generate init", "generate-init-hypernet",
                  ["empty", "truncated", "random-bytes", "huge-header", "huge-shape", "directory", "missing",
                   "pickle-code", "pt-random", "text"],
                  lambda c, w: _init(c, w))
#: tampered saved hypernetworks: name -> (metadata changes for F.retag, input class, expected names)
HYPERNET_TAMPER = {_id: (_changes, _kind, _exp) for _id, _changes, _kind, _exp in [
    ("plain-weights", {"kind": None, "config": None}, "wrong-type", ["hn.safetensors"]),
    ("kind-other", {"kind": "CheckpointFlow"}, "wrong-type", ["hn.safetensors"]),
    ("config-missing", {"config": None}, "tampered", ["hn.safetensors", "config"]),
    ("config-not-json", {"config": "{oops"}, "tampered", ["hn.safetensors", "config"]),
    ("config-hidden-string", {"config": {"hidden": "wide"}}, "wrong-type", ["hn.safetensors", "hidden"]),
    ("config-hidden-huge", {"config": {"hidden": 10**12}}, "tampered", ["hn.safetensors", "hidden"]),
    ("config-hidden-negative", {"config": {"hidden": -8}}, "tampered", ["hn.safetensors", "hidden"]),
    ("config-unknown-key", {"config": {"no_such_key": 1}}, "tampered", ["hn.safetensors", "no_such_key"]),
    ("probe-shape-huge", {"probe_shape": F.HUGE}, "tampered", ["hn.safetensors", "probe_shape"]),
    ("probe-shape-string", {"probe_shape": "\"big\""}, "tampered", ["hn.safetensors", "probe_shape"]),
]}
for _id, (_changes, _kind, _exp) in HYPERNET_TAMPER.items():
    add(f"generate-init-hypernet-{_id}", "generate init", _kind,
        (lambda ch: lambda c: _init(c, str(F.retag(c.assets.hypernet, c.path("hn.safetensors"), **ch))))(_changes),
        _exp)
add("generate-init-arch-unknown", "generate init", "bad-option", lambda c: _init(c, None, arch="no_such_arch"),
    ["no_such_arch"])
add("generate-init-arg-unknown", "generate init", "bad-option", lambda c: _init(c, None, "-a", "wdith=3"), ["wdith"])
add("generate-init-arg-no-equals", "generate init", "bad-option", lambda c: _init(c, None, "-a", "width"), ["--arg"])
add("generate-init-out-is-dir", "generate init", "dir-for-file",
    lambda c: _init(c, None, out=str(F.directory(c.path("initdir.safetensors")))), ["initdir.safetensors"])


def _flow_train(c, zoo_dir, *extra, out=None):
    return ["generate", "flow-train", zoo_dir, out or c.out("flow.safetensors"), "--steps", "1", "--no-progress",
            *extra]


add_zoo_cases("generate flow-train", "generate-flow-train-zoo",
              ["missing-zoo-json", "empty-index", "missing-dir", "file", "no-members"] + ZOO_WEIGHTS,
              lambda c, z: _flow_train(c, z))
add_option_cases("generate flow-train", "generate-flow-train", lambda c: _flow_train(c, str(c.assets.zoo)), [
    *count_rows("--steps", "steps", "0", "-1"),
    ("metric-unknown", ["--metric", "bogus_metric"], "bad-option", ["bogus_metric"]),
    *count_rows("--threads", "threads", "-2"),
])
add("generate-flow-train-out-is-dir", "generate flow-train", "dir-for-file",
    lambda c: _flow_train(c, str(c.assets.zoo), out=str(F.directory(c.path("flowdir.safetensors")))),
    ["flowdir.safetensors"])


def _samples(c, gen=None, zoo_dir=None, *extra, out=None):
    return ["generate", "samples", gen or str(c.assets.flow), zoo_dir or str(c.assets.zoo),
            "-o", out or c.out("samples"), "--n", "2", "--condition", "0.5", *extra]


add_weights_cases("generate samples", "generate-samples-generator",
                  ["empty", "truncated", "random-bytes", "huge-shape", "directory", "missing", "pickle-code", "text"],
                  lambda c, w: _samples(c, w))
#: tampered saved checkpoint flows: name -> (metadata changes for F.retag, input class, expected names)
FLOW_TAMPER = {_id: (_changes, _kind, _exp) for _id, _changes, _kind, _exp in [
    ("plain-weights", {"kind": None, "config": None}, "wrong-type", ["gen.safetensors"]),
    ("kind-other", {"kind": "GraphHyperNetwork"}, "wrong-type", ["gen.safetensors"]),
    ("config-not-json", {"config": "{oops"}, "tampered", ["gen.safetensors", "config"]),
    ("config-hidden-huge", {"config": {"hidden": 10**12}}, "tampered", ["gen.safetensors", "hidden"]),
    ("config-arch-unknown", {"config": {"arch": {"name": "no_such_arch", "kwargs": {}}}}, "tampered",
     ["gen.safetensors", "arch"]),
    ("config-cond-range-string", {"config": {"cond_range": "wide"}}, "wrong-type", ["gen.safetensors", "cond_range"]),
]}
for _id, (_changes, _kind, _exp) in FLOW_TAMPER.items():
    add(f"generate-samples-generator-{_id}", "generate samples", _kind,
        (lambda ch: lambda c: _samples(c, str(F.retag(c.assets.flow, c.path("gen.safetensors"), **ch))))(_changes),
        _exp)
add_zoo_cases("generate samples", "generate-samples-zoo",
              ["missing-zoo-json", "empty-index", "missing-dir", "no-members", "truncated-checkpoint"],
              lambda c, z: _samples(c, None, z))
add_option_cases("generate samples", "generate-samples", _samples, [
    *count_rows("--n", "--n", "0", "-3"),
    ("condition-nan", ["--condition", "nan"], "non-finite", ["condition"]),
    ("condition-inf", ["--condition", "inf"], "non-finite", ["condition"]),
    ("guidance-nan", ["--guidance", "nan"], "non-finite", ["guidance"]),
    ("metric-unknown", ["--metric", "bogus_metric"], "bad-option", ["bogus_metric"]),
])
add("generate-samples-out-is-file", "generate samples", "file-for-dir",
    lambda c: _samples(c, out=str(F.text(c.path("outfile"), "keep me\n"))), ["outfile"])
add("generate-samples-arch-mismatch", "generate samples", "wrong-type",
    lambda c: _samples(c, str(F.retag(c.assets.flow, c.path("gen.safetensors"),
                                      config={"arch": {"name": "mlp", "kwargs": {"hidden": [16]}}}))),
    [("gen.safetensors", "hidden")])


def _inr(c, *extra, out=None):
    return ["generate", "inr-init", out or c.out("siren.safetensors"), "--family", "sines", "--count", "2",
            "--outer-steps", "1", "--inner-steps", "1", "--no-progress", *extra]


add_option_cases("generate inr-init", "generate-inr-init", _inr, [
    ("family-unknown", ["--family", "bogus_family"], "bad-option", ["bogus_family"]),
    *count_rows("--count", "count", "0", "-2"),
    *count_rows("--first", "first", "-1"),
    *count_rows("--outer-steps", ("--outer-steps", "outer_steps"), "0", "-1"),
    *count_rows("--inner-steps", ("--inner-steps", "inner_steps"), "-1"),
    *count_rows("--threads", "threads", "-1"),
])
add("generate-inr-init-out-is-dir", "generate inr-init", "dir-for-file",
    lambda c: _inr(c, out=str(F.directory(c.path("sirendir.safetensors")))), ["sirendir.safetensors"])


_ids = [c.id for c in CASES]
assert len(_ids) == len(set(_ids)), sorted({i for i in _ids if _ids.count(i) > 1})
