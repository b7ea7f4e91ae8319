"""Activation matching one model at a time: either model given as a loader
(a zero-argument callable returning a fresh module) gives the permutation
of the in-memory path, never has two loaded modules alive at once, keeps
what a pass holds (statistics + the stored slabs of the model that runs
first) within ``max_bytes``, and refuses data it cannot replay."""

import gc
import weakref

import pytest
import torch

pytest.importorskip("transformers")

from tests.hf_models import build, make_inputs, perturbed_model, planted  # noqa: E402
from weightspace.errors import StateDictError  # noqa: E402
from weightspace.merge import MergeError, activation_matching  # noqa: E402
from weightspace.merge.activations import matching_slabs  # noqa: E402
from weightspace.merge.matching import _activation_slabs  # noqa: E402
from weightspace.symmetry import invert_permutation  # noqa: E402


@pytest.fixture(scope="module")
def pair():
    a, sd, perm, sd_p = planted("gpt2")
    make, _ = build("gpt2")
    return a.spec, sd, sd_p, make, invert_permutation(a.spec, perm)


class Track:
    """What the loaders of one call built: weak references, and at each load
    how many modules built before were still alive."""

    def __init__(self):
        self.refs, self.alive = [], []


class Loader:
    """Builds a fresh float64 GPT-2 from ``sd`` on every call."""

    def __init__(self, make, sd, track):
        self.make, self.sd, self.track = make, sd, track

    def __call__(self):
        self.track.alive.append(sum(r() is not None for r in self.track.refs))
        m = self.make(0).double().eval()
        m.load_state_dict(self.sd)
        self.track.refs.append(weakref.ref(m))
        return m


def _modules(pair):
    spec, sd, sd_p, make, _ = pair
    model = perturbed_model("gpt2")
    permuted = make(0).double().eval()
    permuted.load_state_dict(sd_p)
    return model, permuted


@pytest.mark.parametrize("max_bytes", [None, 30_000])
def test_loaders_give_the_in_memory_permutation_one_model_at_a_time(pair, max_bytes):
    spec, sd, sd_p, make, want = pair
    x = make_inputs("gpt2", 16, seed=5)
    model, permuted = _modules(pair)
    ref = activation_matching(model, permuted, x, spec, batch_size=4, max_bytes=max_bytes)
    del model, permuted
    t = Track()
    res = activation_matching(Loader(make, sd, t), Loader(make, sd_p, t), x, spec, batch_size=4,
                              max_bytes=max_bytes)
    assert all(torch.equal(res.perm[g], ref.perm[g]) for g in want)
    assert all(torch.equal(res.perm[g], want[g]) for g in want)
    if max_bytes is None:  # one pass each: the same sums in the same order
        assert res.objective == ref.objective and res.info["passes"] == ref.info["passes"] == 1
    else:  # passes split differently (the store counts too): sums of correlations in another order
        assert res.info["passes"] > 1
        assert res.objective == pytest.approx(ref.objective, rel=1e-12)
    # every load found no earlier module alive: one model at a time
    assert t.alive == [0] * len(t.alive)
    # a loads once to be probed, then each pass loads the model that did not run last
    assert len(t.alive) == res.info["loads"] == res.info["passes"] + 1
    assert ref.info["loads"] == 0 and ref.info["store_bytes"] == 0 and res.info["store_bytes"] > 0
    gc.collect()
    assert all(r() is None for r in t.refs)  # nothing kept after the call


def test_one_loader_and_one_module(pair):
    spec, sd, sd_p, make, want = pair
    x = make_inputs("gpt2", 8, seed=5)
    model, _ = _modules(pair)
    res = activation_matching(model, Loader(make, sd_p, Track()), x, spec, batch_size=4, max_bytes=30_000)
    assert res.info["passes"] > 1
    assert all(torch.equal(res.perm[g], want[g]) for g in want)
    # the module is the caller's: never dropped, so only b loads (once per two passes, alternating)
    assert res.info["loads"] == (res.info["passes"] + 1) // 2


def test_budget_bounds_statistics_plus_store(pair):
    """Smaller max_bytes: more passes, each holding at most max_bytes of
    statistics and stored slabs (a pass of one module may hold more); the
    permutation does not change."""
    spec, sd, sd_p, make, want = pair
    n, tokens = 8, 8
    x = make_inputs("gpt2", n, seed=5)
    slabs = _activation_slabs(make(0), spec, matching_slabs(spec))
    # the documented need of a module: per slab of width w, (w^2 + 6w) float32 sums + rows x w stored floats,
    # rows counted as tokens (an upper bound: the position embedding's output has T rows per batch, not B x T)
    sums: dict = {}
    kept: dict = {}
    for s in slabs.values():
        w = s.a[1] - s.a[0]
        sums[s.module] = sums.get(s.module, 0) + 4 * (w * w + 6 * w)
        kept[s.module] = kept.get(s.module, 0) + 4 * n * tokens * w
    need = {m: sums[m] + kept[m] for m in sums}
    runs = {}
    for mb in (None, sum(need.values()) // 2, sum(need.values()) // 5, 1):
        t = Track()
        runs[mb] = activation_matching(Loader(make, sd, t), Loader(make, sd_p, t), x, spec, batch_size=4,
                                       max_bytes=mb)
    whole = runs[None].info
    w_wpe = next(s.a[1] - s.a[0] for s in slabs.values() if s.module.endswith("wpe"))
    wpe = 4 * (n * tokens - (n // 4) * tokens) * w_wpe  # it stores one (1, T, w) output per batch of 4
    assert whole["passes"] == 1 and whole["held_bytes"] == sum(need.values()) - wpe
    passes = [r.info["passes"] for r in runs.values()]
    assert passes == sorted(passes) and passes[-1] > passes[1] > 1
    assert passes[-1] == len(need)  # max_bytes=1: one module per pass
    for mb, r in runs.items():
        assert all(torch.equal(r.perm[g], want[g]) for g in want)
        if mb is not None:  # a pass of one module may exceed max_bytes, by its sums and a store beside them
            assert r.info["held_bytes"] <= max(mb, max(sums.values()) + max(kept.values()))
    # in memory the same budget holds fewer bytes per pass (no store), so fewer passes
    model, permuted = _modules(pair)
    mb = sum(need.values()) // 5
    mem = activation_matching(model, permuted, x, spec, batch_size=4, max_bytes=mb)
    assert mem.info["passes"] < runs[mb].info["passes"]


def test_data_replayed_differently_is_refused(pair):
    spec, sd, sd_p, make, _ = pair
    x = make_inputs("gpt2", 8, seed=5)

    class Shuffled:  # a new order on every iteration, like a shuffling DataLoader
        def __init__(self):
            self.g = torch.Generator().manual_seed(0)

        def __iter__(self):
            return iter(x[torch.randperm(8, generator=self.g)].split(4))

    with pytest.raises(MergeError, match="other batches than the first time"):
        activation_matching(Loader(make, sd, Track()), Loader(make, sd_p, Track()), Shuffled(), spec, max_bytes=None)
    # a one-shot iterator cannot be replayed even for one pass
    with pytest.raises(MergeError, match="one-shot iterator"):
        activation_matching(Loader(make, sd, Track()), Loader(make, sd_p, Track()), (b for b in x.split(4)), spec,
                            max_bytes=None)


def test_bad_loaders_get_one_line_errors(pair):
    spec, sd, sd_p, make, _ = pair
    x = make_inputs("gpt2", 4, seed=5)
    model, _ = _modules(pair)
    with pytest.raises(MergeError, match="model_b: expected an nn.Module or a zero-argument loader"):
        activation_matching(model, "not a model", x, spec)
    with pytest.raises(MergeError, match="the loader of model_a returned a dict"):
        activation_matching(lambda: dict(sd), model, x, spec)
    with pytest.raises(MergeError, match="the loader of model_b returned a NoneType"):
        activation_matching(model, lambda: None, x, spec)
    # a module that does not fit the spec: refused at its first load, naming the model
    with pytest.raises(StateDictError, match="model 1"):
        activation_matching(model, lambda: torch.nn.Linear(2, 2), x, spec)


def test_spec_traced_from_the_first_load():
    """Without a spec, it is traced from a's first load (reused for the first
    pass, not loaded again): the in-memory permutation, passes + 1 loads."""
    _, sd, perm, sd_p = planted("nanogpt")
    make, _ = build("nanogpt")
    x = make_inputs("nanogpt", 8, seed=5)

    def fresh(s):
        m = make(0).double().eval()
        m.load_state_dict(s)
        return m

    ref = activation_matching(fresh(sd), fresh(sd_p), x, batch_size=4, max_bytes=None)
    t = Track()
    res = activation_matching(Loader(make, sd, t), Loader(make, sd_p, t), x, batch_size=4, max_bytes=None)
    assert all(torch.equal(res.perm[g], ref.perm[g]) for g in ref.perm)
    assert res.objective == ref.objective
    assert res.info["passes"] == 1 and len(t.alive) == res.info["loads"] == 2 and t.alive == [0, 0]


def test_runs_stop_before_the_lm_head(pair):
    """Only the probes (one sample per model) run the output layer: every
    run of a loaded model stops after the last module it reads."""
    spec, sd, sd_p, make, _ = pair
    calls = []

    class Hooked(Loader):
        def __call__(self):
            m = super().__call__()
            m.lm_head.register_forward_hook(lambda mod, args, out: calls.append(out.shape[0]))
            return m

    t = Track()
    res = activation_matching(Hooked(make, sd, t), Hooked(make, sd_p, t), make_inputs("gpt2", 16, seed=5), spec,
                              batch_size=4, max_bytes=30_000)
    assert res.info["passes"] > 1
    assert calls == [1, 1]
