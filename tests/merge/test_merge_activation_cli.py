"""`weightspace merge` with `method: activation_matching` on Hugging Face
directories, out of core: the models given to activation matching as
loaders of modules whose tensors are mapped from their directories (one
model in memory at a time), B written permuted to a temporary directory
next to OUT, then averaged tensor by tensor. Bit for bit the in-memory
path; plan with --dry-run; bad input is one line, exit 2; the mapped build
holds no copy of the weights (tiny GPT-2s written with save_pretrained,
offline)."""

import copy
import gc
import json
import shutil
import sys
import textwrap
import weakref

import numpy as np
import pytest
import torch

T = pytest.importorskip("transformers")

from tests import peak_rss  # noqa: E402
from tests.merge.test_merge_rebasin_cli import (  # noqa: E402
    _gpt2, _link, _matching_record, _one_line_exit_2, _run, _save_pair, _streamed_and_in_memory, _write,
)
from weightspace.arch import HFCheckpoint  # noqa: E402
from weightspace.core import permutation_spec  # noqa: E402
from weightspace.merge import activation_matching  # noqa: E402


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """The weight-matching tests' pair (a in one file, b in 8 KB shards with
    an index) and token ids (y unused by an LM)."""
    root = tmp_path_factory.mktemp("activation_cli")
    a, b = _save_pair(root)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 50, (24, 8))
    np.savez(root / "tokens.npz", x=x, y=np.zeros(24, dtype=np.int64))
    return root, a, b, torch.as_tensor(x)


def _config(tmp_path, models=("a", "b"), **top):
    return _write(tmp_path, {"method": "activation_matching", "data": {"path": "tokens.npz"},
                             "models": [{"model": {"hf": m}} for m in models], **top})


def test_streamed_activation_matching_equals_the_in_memory_one(dirs, tmp_path):
    root, a, b, x = dirs
    _link(root, tmp_path, "a", "b")
    (tmp_path / "tokens.npz").symlink_to(root / "tokens.npz")
    # reference 1 (a), b weighted 0.6; a small max_bytes: several passes
    config = _write(tmp_path, {"method": "activation_matching", "reference": 1, "data": {"path": "tokens.npz"},
                               "options": {"batch_size": 8, "max_bytes": 6000},
                               "models": [{"model": {"hf": "b"}, "weight": 0.6}, {"model": {"hf": "a"}}]})
    (tmp_path / "mine.txt").write_text("the user's")
    streamed, _ = _streamed_and_in_memory(config, tmp_path, "activation_matching")
    spec = permutation_spec(a, torch.zeros(1, 8, dtype=torch.long))
    direct = activation_matching(a, b, x, spec, batch_size=8, max_bytes=6000)
    assert any(not torch.equal(p, torch.arange(len(p))) for p in direct.perm.values())
    m = _matching_record(tmp_path / "streamed")
    assert m["objective"] == pytest.approx(direct.objective, rel=1e-6)
    # as with loaders given to the library (the stored slabs count in max_bytes: more passes than with modules)
    loaded = activation_matching(lambda: copy.deepcopy(a), lambda: copy.deepcopy(b), x, spec, batch_size=8,
                                 max_bytes=6000)
    assert all(torch.equal(loaded.perm[g], direct.perm[g]) for g in direct.perm)
    assert m["passes"] == loaded.info["passes"] > 1 and m["loads"] == loaded.info["loads"] == m["passes"] + 1
    assert m["fallback_groups"] == []
    assert f"over {m['passes']} passes" in streamed.output
    merged = T.GPT2LMHeadModel.from_pretrained(str(tmp_path / "streamed"), local_files_only=True).eval()
    with torch.no_grad():
        assert torch.isfinite(merged(x[:2]).logits).all()
    # the temporary directory is gone; the user's files stay
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "memory", "merge.yaml", "mine.txt", "streamed",
                                                          "tokens.npz"]


def test_three_models_each_matched_to_the_reference(dirs, tmp_path):
    root, _, _, _ = dirs
    _gpt2(5).save_pretrained(tmp_path / "c")
    _link(root, tmp_path, "a", "b")
    (tmp_path / "tokens.npz").symlink_to(root / "tokens.npz")
    config = _config(tmp_path, ("a", "b", "c"), options={"batch_size": 8})
    _streamed_and_in_memory(config, tmp_path, "activation_matching")
    rec = json.loads((tmp_path / "streamed" / "weightspace_merge.json").read_text())
    assert [m["model"] for m in rec["matching"]] == ["models[1]", "models[2]"]


def test_dry_run_prints_groups_and_memory_and_writes_nothing(dirs, tmp_path):
    root, _, _, _ = dirs
    _link(root, tmp_path, "a", "b")
    (tmp_path / "tokens.npz").symlink_to(root / "tokens.npz")
    res = _run(_config(tmp_path), tmp_path / "out", "--dry-run")
    assert res.exit_code == 0, res.output
    assert "matching   5 groups, 148 neurons/heads" in res.output
    assert "estimated peak memory" in res.output and "nothing written" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "merge.yaml", "tokens.npz"]


@pytest.mark.parametrize("bad, words", [
    ("missing_data", "tokens.npz"),
    ("token_out_of_vocabulary", "cannot run on samples"),
    ("missing_shard", "models[1]"),
    ("no_data_key", "needs 'data'"),
])
def test_bad_input_is_one_line_and_nothing_is_left(dirs, tmp_path, bad, words):
    root, _, _, _ = dirs
    _link(root, tmp_path, "a")
    if bad == "missing_shard":
        shutil.copytree(root / "b", tmp_path / "b")
        index = json.loads((tmp_path / "b" / "model.safetensors.index.json").read_text())
        (tmp_path / "b" / sorted(set(index["weight_map"].values()))[-1]).unlink()
    else:
        _link(root, tmp_path, "b")
    if bad == "token_out_of_vocabulary":
        np.savez(tmp_path / "tokens.npz", x=np.full((4, 8), 99), y=np.zeros(4, dtype=np.int64))
    elif bad != "missing_data":
        (tmp_path / "tokens.npz").symlink_to(root / "tokens.npz")
    top = {"data": None} if bad == "no_data_key" else {}
    config = _config(tmp_path, **top)
    before = sorted(p.name for p in tmp_path.iterdir())
    res = _run(config, tmp_path / "out")
    _one_line_exit_2(res)
    assert words in res.output, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_mapped_build_equals_the_copied_one(tmp_path):
    """GPT-2 (built on the meta device, then its stored tensors assigned) and
    Llama (unsaved rotary buffers: built on the CPU, then assigned)."""
    llama = T.LlamaConfig(num_hidden_layers=1, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                          num_key_value_heads=2, vocab_size=50)
    for name, model in (("gpt2", _gpt2(3)), ("llama", T.LlamaForCausalLM(llama).eval())):
        model.save_pretrained(tmp_path / name)
        ck = HFCheckpoint.open(tmp_path / name)
        copied, mapped = ck.build(), ck.build(mapped=True)
        assert not mapped.training
        assert all(not t.is_meta for t in (*mapped.parameters(), *mapped.buffers()))
        x = torch.randint(0, 50, (2, 8))
        with torch.no_grad():
            assert torch.equal(mapped(x).logits, copied(x).logits)
            assert torch.equal(mapped(x).logits, model(x).logits)


def test_a_built_module_is_not_kept_alive_by_its_checkpoint(tmp_path):
    """HFCheckpoint remembers the last module's tensor names, not the module:
    a mapped model freed by its user unmaps its files (one model resident
    while activation matching takes turns)."""
    _gpt2(0).save_pretrained(tmp_path / "m")
    ck = HFCheckpoint.open(tmp_path / "m")
    for mapped in (False, True):
        m = ck.build(mapped=mapped)
        assert ck.key_map(m)["transformer.wte.weight"] == "transformer.wte.weight"
        ref = weakref.ref(m)
        del m
        gc.collect()
        assert ref() is None


_MAPPED = textwrap.dedent("""
    import json, sys, torch
    from weightspace.arch import HFCheckpoint
    ck = HFCheckpoint.open(sys.argv[1])
    x = torch.zeros(1, 8, dtype=torch.long)
    with torch.no_grad():
        ck.build(mapped=True)(x)  # warm-up: imports, the first forward's buffers
        base, anon0 = reset(), anon()
        ck.build(mapped=True)(x)
    print(json.dumps({"peak": peak() - base, "anon": anon() - anon0}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_mapped_build_holds_no_copy_of_the_weights(tmp_path):
    """A ~16 MB GPT-2 built mapped and run: its anonymous memory grows by
    less than a tenth of the model (the tensors are the file's pages)."""
    m = _gpt2(0, vocab_size=8192, n_embd=128, n_layer=4, n_head=4)
    model_bytes = sum(v.numel() * v.element_size() for k, v in m.state_dict().items() if k != "lm_head.weight")
    m.save_pretrained(tmp_path / "m")
    r = peak_rss.run(_MAPPED, [tmp_path / "m"])
    assert r["anon"] < 0.1 * model_bytes, (r, model_bytes)


_YAML = textwrap.dedent("""
    import json, sys, torch
    from weightspace.merge.config import load_config, run_config, run_config_streamed
    torch.set_num_threads(1)
    d, mode = sys.argv[1], sys.argv[2]
    # warm-up on the tiny pair: imports, tracing, one-time buffers
    run_config_streamed(load_config(d + "/tiny.yaml"), d + "/tiny_out")
    cfg = load_config(d + "/merge.yaml")
    base = reset()
    if mode == "memory":
        run_config(cfg)
    else:
        run_config_streamed(cfg, d + "/out")
    print(json.dumps({"base": base, "peak": peak()}))
""")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_streamed_activation_matching_holds_one_model(dirs, tmp_path):
    """A ~34 MB GPT-2 pair merged by a YAML's activation matching in a fresh
    process (``tests.peak_rss``; ``max_bytes`` 8 MiB, a quarter of the
    model, as the 128 MiB default is of GPT-2 small): out of core, the peak
    above the baseline stays below 2.5x one model, and at least one model
    below the in-memory path's (which holds both models, their modules and
    the result)."""
    import yaml

    root, _, _, _ = dirs
    model_bytes = peak_rss.save_gpt2_pair(tmp_path)
    rng = np.random.default_rng(0)
    for name, models, vocab in (("merge", ("a", "b"), 8192), ("tiny", (root / "a", root / "b"), 50)):
        np.savez(tmp_path / f"{name}.npz", x=rng.integers(0, vocab, (16, 16)), y=np.zeros(16, dtype=np.int64))
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({
            "method": "activation_matching", "data": {"path": str(tmp_path / f"{name}.npz")},
            "options": {"batch_size": 8, "max_bytes": 8 * 2**20},
            "models": [{"model": {"hf": str(tmp_path / m)}} for m in models]}))
    out = {mode: peak_rss.run(_YAML, [tmp_path, mode]) for mode in ("stream", "memory")}
    grow = {m: (r["peak"] - r["base"]) / model_bytes for m, r in out.items()}
    print("peak growth / model", grow)
    assert grow["stream"] < 2.5, grow
    assert grow["stream"] < grow["memory"] - 1, grow


def test_default_budget_grows_with_the_rows_up_to_one_model():
    from weightspace.merge.activations import STATS_BYTES
    from weightspace.merge.config import _stream_stats_bytes

    model = 475 * 2**20
    ids = torch.zeros(8, 128, dtype=torch.long)  # 1024 tokens
    assert _stream_stats_bytes(ids, model) == STATS_BYTES
    assert _stream_stats_bytes(torch.zeros(16, 128, dtype=torch.long), model) == 2 * STATS_BYTES
    assert _stream_stats_bytes(torch.zeros(64, 128, dtype=torch.long), model) == model  # 8192 tokens: capped
    assert _stream_stats_bytes(torch.zeros(64, 128, dtype=torch.long), 2**20) == STATS_BYTES  # never below
    assert _stream_stats_bytes(torch.zeros(4, 3, 32, 32), 2**30) == 4 * STATS_BYTES  # 4 x 1024 positions
    assert _stream_stats_bytes(torch.zeros(100, 64), model) == STATS_BYTES  # 100 feature rows
