"""Out-of-core weight matching on checkpoint directories: the same
permutation as the in-memory path, the planted permutation recovered, the
permuted model written shard by shard (and loadable by ``from_pretrained``),
clear errors for a broken directory, and peak RSS (measured in a subprocess)
below three models' worth over the process's baseline."""

import json
import sys
import textwrap

import pytest
import torch

T = pytest.importorskip("transformers")

from tests import peak_rss  # noqa: E402
from tests.hf_models import analysis, perturbed_model  # noqa: E402
from weightspace.errors import MissingFileError, StateDictError  # noqa: E402
from weightspace.merge import match_objective, weight_matching  # noqa: E402
from weightspace.merge.matching import permute_directory  # noqa: E402
from weightspace.symmetry import apply_permutation, invert_permutation, random_permutation  # noqa: E402

TIED = {"lm_head.weight": "transformer.wte.weight"}


def _model(seed):
    """A tiny GPT-2 (tests.hf_models: vocabulary 100, width 32, 2 layers),
    every parameter perturbed (float32)."""
    return perturbed_model("gpt2", seed, dtype=torch.float32)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two independently initialised tiny GPT-2s saved sharded (several files)."""
    d = tmp_path_factory.mktemp("rebasin_ooc")
    a, b = _model(1), _model(2)
    a.save_pretrained(d / "a", max_shard_size="40KB")
    b.save_pretrained(d / "b", max_shard_size="40KB")
    assert (d / "a" / "model.safetensors.index.json").is_file()
    return d, a, b, analysis("gpt2").spec


def test_directories_give_the_in_memory_permutation(pair):
    d, a, b, spec = pair
    mem = weight_matching(a.state_dict(), b.state_dict(), spec, seed=3, rtol=0)
    ooc = weight_matching(d / "a", d / "b", spec, seed=3, rtol=0, tied=TIED)
    assert any(not torch.equal(p, torch.arange(len(p))) for p in mem.perm.values())  # not the identity
    assert ooc.perm.keys() == mem.perm.keys()
    assert all(torch.equal(ooc.perm[g], mem.perm[g]) for g in mem.perm)
    assert ooc.objective == mem.objective
    assert [h["objective"] for h in ooc.info["history"]] == [h["objective"] for h in mem.info["history"]]


def test_directories_without_cache_give_the_same_permutation(pair):
    d, a, b, spec = pair
    mem = weight_matching(a.state_dict(), b.state_dict(), spec, seed=1)
    ooc = weight_matching(str(d / "a"), str(d / "b"), spec, seed=1, tied=TIED, cache=False)
    assert all(torch.equal(ooc.perm[g], mem.perm[g]) for g in mem.perm)


def test_planted_permutation_recovered_and_written(pair, tmp_path):
    d, a, _, spec = pair
    perm = random_permutation(spec, seed=5)
    permute_directory(d / "a", tmp_path / "p", spec, perm)
    # the written shards are the in-memory permutation, under the stored names
    m = T.GPT2LMHeadModel.from_pretrained(tmp_path / "p").eval()
    want = apply_permutation(a.state_dict(), spec, perm)
    assert all(torch.equal(m.state_dict()[k], want[k]) for k in want)
    assert json.loads((tmp_path / "p" / "model.safetensors.index.json").read_text())["weight_map"] == \
        json.loads((d / "a" / "model.safetensors.index.json").read_text())["weight_map"]
    res = weight_matching(d / "a", tmp_path / "p", spec, tied=TIED)
    inv = invert_permutation(spec, perm)
    assert all(torch.equal(res.perm[g], inv[g]) for g in inv)
    res.apply_to_directory(tmp_path / "p", tmp_path / "back")
    back = T.GPT2LMHeadModel.from_pretrained(tmp_path / "back").eval().state_dict()
    assert all(torch.equal(back[k], v) for k, v in a.state_dict().items())
    assert match_objective(a.state_dict(), back, spec) == match_objective(a.state_dict(), a.state_dict(), spec)


def test_untied_name_missing_from_directory_is_an_error(pair):
    d, _, _, spec = pair
    with pytest.raises(StateDictError, match="lm_head.weight"):
        weight_matching(d / "a", d / "b", spec)


def test_tied_to_a_name_not_stored_is_an_error(pair):
    d, _, _, spec = pair
    with pytest.raises(StateDictError, match="not stored"):
        weight_matching(d / "a", d / "b", spec, tied={"lm_head.weight": "nope.weight"})


def test_missing_directory_is_an_error(pair, tmp_path):
    d, _, _, spec = pair
    with pytest.raises(MissingFileError, match="no such model directory"):
        weight_matching(d / "a", tmp_path / "absent", spec, tied=TIED)


def test_nonfinite_tensor_in_directory_is_an_error(pair, tmp_path):
    from weightspace.errors import NonFiniteWeightsError

    d, a, _, spec = pair
    m = _model(1)
    with torch.no_grad():
        m.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")
    m.save_pretrained(tmp_path / "nan")
    with pytest.raises(NonFiniteWeightsError, match="c_fc.weight"):
        weight_matching(d / "a", tmp_path / "nan", spec, tied=TIED)


_CHILD = textwrap.dedent(r"""
    import json, sys, torch
    import transformers as T
    from weightspace.core import permutation_spec
    from weightspace.merge import weight_matching
    torch.set_num_threads(1)
    d, mode = sys.argv[1], sys.argv[2]
    tied = {"lm_head.weight": "transformer.wte.weight"}

    def spec_of(path):
        with torch.device("meta"):
            meta = T.GPT2LMHeadModel(T.GPT2Config.from_pretrained(path)).eval()
            return permutation_spec(meta, (torch.zeros(1, 8, dtype=torch.long),), tracer="auto")

    # warm-up on the tiny pair: lazy imports and one-time buffers are not the matcher's memory
    weight_matching(d + "/tiny_a", d + "/tiny_b", spec_of(d + "/tiny_a"), tied=tied).apply_to_directory(
        d + "/tiny_b", d + "/tiny_out")
    spec = spec_of(d + "/a")
    base = reset()  # the tracing may have set the high-water mark higher
    if mode == "memory":
        sa, sb = (T.GPT2LMHeadModel.from_pretrained(d + x).state_dict() for x in ("/a", "/b"))
        res = weight_matching(sa, sb, spec, seed=0, cache=False)
        print(json.dumps({"base": base, "match": peak()}))
    else:
        res = weight_matching(d + "/a", d + "/b", spec, seed=0, tied=tied, cache=False)
        match = peak()
        res.apply_to_directory(d + "/b", d + "/out")
        print(json.dumps({"base": base, "match": match, "write": peak()}))
""")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_out_of_core_peak_rss_below_target(pair, tmp_path):
    """A ~34 MB GPT-2 (the embedding a quarter of it, as in GPT-2 small)
    matched from its directories in a fresh process, after a warm-up run on
    the tiny pair, then the permuted model written. Peak RSS
    (``VmHWM``, reset before the matching) above the resident set then: the whole
    matching and writing stay below 3x one model (the issue's target), and the matching
    takes at least one model less than the in-memory path measured the same
    way on the same pair (which holds both models: >= 2x). Not a bound on
    the matching alone: the LAP's [n, n] float64 work arrays (n = 1024 here)
    do not shrink with the model. No product cache in either (its 128 MiB
    default is more than this model). Measured as ``tests.peak_rss`` says, with
    glibc's malloc pinned: 1.4x one model (directory) and 3.0x (memory) on
    every run here; unpinned, glibc's retained heap made it 2.2x-3.1x."""
    model_bytes = peak_rss.save_gpt2_pair(tmp_path)
    d = pair[0]
    for x in ("a", "b"):
        (tmp_path / f"tiny_{x}").symlink_to(d / x)
    out = {mode: peak_rss.run(_CHILD, [tmp_path, mode]) for mode in ("directory", "memory")}
    grow = {f"{m} {k}": (r[k] - r["base"]) / model_bytes for m, r in out.items() for k in r if k != "base"}
    assert grow["memory match"] >= 2, grow  # the measurement sees two resident models
    assert grow["directory write"] < 3, grow
    assert grow["directory match"] < grow["memory match"] - 1, grow  # at least one model less resident
