"""Checkpoint generator: permutation bank, shapes, conditioning errors,
save/load, collection from a zoo and the novelty report's copy flags."""

import math

import pytest
import torch

import zoo
from weightspace.generate import (
    ArchSpec,
    CheckpointFlow,
    collect_checkpoints,
    generate_checkpoints,
    novelty_report,
    permutation_bank,
    train_checkpoint_flow,
)
from weightspace.generate._common import TaskData
from weightspace.generate.checkpoint_flow import state_dict_to_vector, vector_to_state_dict
from weightspace.symmetry import apply_permutation, random_permutation

ARCH = ArchSpec.of("mlp", hidden=[6], in_features=64)


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(60, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (60,), generator=g)
    return TaskData(x[:40], y[:40], x[40:], y[40:], 10, "random")


@pytest.fixture(scope="module")
def flow(make_checkpoint_set):
    cs = make_checkpoint_set(ARCH)
    model, hist = train_checkpoint_flow(cs, steps=4, batch_size=8, hidden=32, depth=1, bank_size=4, seed=0)
    assert len(hist.loss) == 4 and all(math.isfinite(v) for v in hist.loss)
    return cs, model


def test_vector_round_trip_is_exact():
    sd = ARCH.module(seed=3).state_dict()
    back = vector_to_state_dict(ARCH, state_dict_to_vector(ARCH, sd))
    assert list(back) == list(sd) and all(torch.equal(back[k], sd[k]) for k in sd)


def test_permutation_bank_rows_are_function_preserving_permutations():
    arch = ArchSpec.of("cnn_small", width=4, depth=2)
    bank = permutation_bank(arch, 4, seed=0)
    V = arch.template().num_values
    assert bank.shape == (4, V)
    assert torch.equal(bank[0], torch.arange(V))
    sd = arch.module(seed=1).state_dict()
    v = state_dict_to_vector(arch, sd)
    x = torch.rand(3, 1, 8, 8)
    ref = arch.module()
    ref.load_state_dict(sd)
    moved = 0
    for row in bank[1:]:
        assert torch.equal(torch.sort(row).values, torch.arange(V))
        m = arch.module()
        m.load_state_dict(vector_to_state_dict(arch, v[row]))
        assert torch.allclose(m(x), ref(x), atol=1e-5)
        moved += int(not torch.equal(row, torch.arange(V)))
    assert moved > 0


def test_bank_equals_apply_permutation():
    t = ARCH.template()
    bank = permutation_bank(ARCH, 3, seed=7)
    gen = torch.Generator().manual_seed(7)
    sd = ARCH.module(seed=2).state_dict()
    v = state_dict_to_vector(ARCH, sd)
    for row in bank[1:]:
        p = random_permutation(t.spec, generator=gen)
        assert torch.equal(v[row], state_dict_to_vector(ARCH, apply_permutation(sd, t.spec, p)))


def test_generated_samples_have_the_right_shapes(flow):
    cs, model = flow
    sds = model.generate(ARCH, 3, condition=0.3, seed=0)
    ref = ARCH.module().state_dict()
    assert len(sds) == 3
    for sd in sds:
        assert list(sd) == list(ref)
        assert all(sd[k].shape == ref[k].shape and sd[k].dtype == ref[k].dtype for k in ref)
        m = ARCH.module()
        m.load_state_dict(sd)
    # seeded: the same call gives the same samples, another seed others
    again = model.generate(ARCH, 3, condition=0.3, seed=0)
    other = model.generate(ARCH, 3, condition=0.3, seed=1)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(sds, again) for k in a)
    assert not torch.equal(sds[0]["layers.0.weight"], other[0]["layers.0.weight"])
    per = model.generate(ARCH, 2, condition=[0.2, 0.4], seed=0, guidance=2.0)
    assert len(per) == 2


def test_bad_conditions_and_architectures_are_refused(flow):
    cs, model = flow
    lo, hi = model.cond_range
    assert lo == pytest.approx(float(cs.metric.min())) and hi == pytest.approx(float(cs.metric.max()))
    with pytest.raises(ValueError, match="outside the range seen in training"):
        model.generate(ARCH, 2, condition=hi + 0.05, seed=0)
    with pytest.raises(ValueError, match="outside the range seen in training"):
        model.generate(ARCH, 2, condition=float("nan"), seed=0)
    with pytest.raises(ValueError, match="2 conditions for n=3"):
        model.generate(ARCH, 3, condition=[0.2, 0.3], seed=0)
    with pytest.raises(ValueError, match="cannot generate"):
        model.generate("mlp", 2, condition=0.3, seed=0, hidden=[7])
    with pytest.raises(KeyError, match="unknown architecture"):
        model.generate("not_a_net", 2, condition=0.3, seed=0)
    with pytest.raises(ValueError, match="n must be >= 1"):
        model.sample(0, 0.3, seed=0)


def test_save_load_round_trip(tmp_path, flow):
    cs, model = flow
    p = model.save(tmp_path / "flow.safetensors")
    a = model.generate(ARCH, 2, condition=0.25, seed=5)
    b = generate_checkpoints(p, ARCH, 2, condition=0.25, seed=5)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)
    assert CheckpointFlow.load(p).cond_range == model.cond_range


def test_renamed_generate_still_works_with_a_deprecation_warning(tmp_path, flow):
    import weightspace.generate as wg
    import weightspace.generate.checkpoint_flow as cf
    import weightspace.generate.hypernet as hn_mod

    _, model = flow
    p = model.save(tmp_path / "flow.safetensors")
    want = generate_checkpoints(p, ARCH, 1, condition=0.25, seed=3, steps=5)
    for mod in (wg, cf):
        with pytest.warns(DeprecationWarning, match="generate_checkpoints"):
            old = mod.generate
        assert old is generate_checkpoints
        got = old(p, ARCH, 1, condition=0.25, seed=3, steps=5)
        assert all(torch.equal(want[0][k], got[0][k]) for k in want[0])
    with pytest.warns(DeprecationWarning, match="FLOW_CONFIG_SCHEMA"):
        assert cf.CONFIG_SCHEMA is cf.FLOW_CONFIG_SCHEMA
    with pytest.warns(DeprecationWarning, match="HYPERNET_CONFIG_SCHEMA"):
        assert hn_mod.CONFIG_SCHEMA is hn_mod.HYPERNET_CONFIG_SCHEMA
    with pytest.warns(DeprecationWarning, match="hypernet_train"):
        from weightspace.generate.hypernet import train_hypernet
    assert train_hypernet is wg.train_hypernet
    with pytest.raises(AttributeError):
        cf.no_such_name


def test_novelty_report_flags_exact_and_permuted_copies(make_checkpoint_set):
    cs = make_checkpoint_set(ARCH)
    spec = ARCH.template().spec
    copy = cs.state_dict(4)
    permuted = apply_permutation(cs.state_dict(7), spec, random_permutation(spec, seed=3))
    assert not torch.equal(permuted["layers.0.weight"], cs.state_dict(7)["layers.0.weight"])
    fresh = ARCH.module(seed=999).state_dict()
    nudged = {k: v + 0.002 * torch.randn(v.shape, generator=torch.Generator().manual_seed(1)) for k, v in cs.state_dict(2).items()}
    rep = novelty_report([copy, permuted, fresh, nudged], cs, _data(), conditions=[0.3, 0.3, 0.3, 0.3])
    assert [r["copy"] for r in rep.rows] == [True, True, False, False]
    assert rep.copies == [0, 1]
    assert rep.rows[0]["nearest"]["index"] == 4 and rep.rows[1]["nearest"]["index"] == 7
    assert rep.rows[0]["distance"] == pytest.approx(0.0, abs=1e-9)
    assert rep.rows[1]["distance"] == pytest.approx(0.0, abs=1e-5)
    assert rep.rows[0]["agreement"] == 1.0 and rep.rows[1]["agreement"] == 1.0
    assert rep.rows[3]["nearest"]["index"] == 2 and rep.rows[3]["near_copy"]
    assert rep.rows[2]["distance"] > rep.rows[3]["distance"] > 0
    assert rep.summary["copies"] == 2 and rep.reference["between_runs_median"] > 0
    assert 0.0 <= rep.rows[2]["accuracy"] <= 1.0


def test_novelty_report_rejects_wrong_architecture(make_checkpoint_set):
    cs = make_checkpoint_set(ARCH)
    with pytest.raises(Exception, match="does not match the architecture|missing keys|shape"):
        novelty_report([ArchSpec.of("mlp", hidden=[5]).module().state_dict()], cs)
    with pytest.raises(ValueError, match="no samples"):
        novelty_report([], cs)


def test_collect_checkpoints_from_a_zoo(tmp_path):
    recipe = {
        "name": "tiny", "arch": "mlp", "model": {"hidden": [4]},
        "data": {"name": "digits", "split_seed": 0},
        "train": {"epochs": 1, "batch_size": 256, "optimizer": "adam", "lr": 0.01},
        "checkpoints": [0, 1],
        "search": {"method": "grid", "seeds": 2, "space": {}},
    }
    z = zoo.build_zoo(recipe, tmp_path / "z", workers=1, backend="serial", progress=False).open()
    cs = collect_checkpoints(z)
    assert len(cs) == 4 and cs.values.shape == (4, ArchSpec.of("mlp", hidden=[4]).template().num_values)
    assert sorted(cs.epochs) == [0, 0, 1, 1] and len(set(cs.member_ids)) == 2
    assert torch.equal(cs.state_dict(0)["layers.0.weight"], z[cs.member_ids[0]].state_dict(cs.epochs[0])["layers.0.weight"])
    only_final = collect_checkpoints(z, epochs=[1])
    assert len(only_final) == 2
    with pytest.raises(ValueError, match="no finite metric"):
        collect_checkpoints(z, metric="no_such_metric")
