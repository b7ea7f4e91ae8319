"""Smoke test of analyses/inr/run.py (the INR classification and editing
study) end to end at toy size, plus the exactness of its batched fitting."""

import json
import math

import pytest
import torch

from analyses.inr import run as study


@pytest.fixture
def siren_bank():
    """The study's bank, registered for one test and removed afterwards."""
    from weightspace.arch import registry

    name = study.register_siren_bank()
    yield name
    registry._REGISTRY.pop(name, None)


def test_siren_bank_matches_the_registry_siren(siren_bank):
    """The study's SirenBank computes the registry's ``siren`` network by
    network (the scale makes the summed loss give each its own gradient)."""
    from weightspace.arch import create_model
    from zoo.loaders.inr import inr_grid

    sds = [create_model("siren", seed=s, **study.SIREN).state_dict() for s in range(3)]
    coords = inr_grid(5, 5)
    bank = create_model(siren_bank, n=3, out_scale=2.0)
    bank.load_state_dict({study._bank_key(i): study.stack_sirens(sds)[k] for i, k in enumerate(study.SIREN_KEYS)})
    with torch.no_grad():
        got = bank(coords)
        for j, sd in enumerate(sds):
            m = create_model("siren", **study.SIREN)
            m.load_state_dict(sd)
            assert torch.allclose(got[:, j], 2.0 * m(coords)[:, 0], atol=1e-5)


def test_batched_fits_equal_one_at_a_time():
    """Fitting 3 SIRENs side by side gives each the weights it gets alone."""
    images = torch.rand(3, 4, 4)
    inits = study.siren_inits(3, regime="independent", seed=5)
    together, score = study.fit_sirens(images, inits, steps=5, lr=1e-3, chunk=3)
    alone, _ = study.fit_sirens(images[1:2], {k: v[1:2] for k, v in inits.items()}, steps=5, lr=1e-3, chunk=1)
    for k in study.SIREN_KEYS:
        assert torch.allclose(together[k][1], alone[k][0], atol=1e-5, rtol=1e-4)
    assert score.shape == (3,) and bool(torch.isfinite(score).all())


def _write_dwsnets(root, n=20):
    """``n`` INRs in DWSNets' on-disk format (``seq.{0,1,2}.*`` state dicts,
    a splits file with string labels)."""
    from weightspace.arch import create_model

    splits = {p: {"path": [], "label": []} for p in ("train", "val", "test")}
    for i in range(n):
        sd = create_model("siren", seed=i, **study.SIREN).state_dict()
        dws = {f"seq.{j}.{t}": sd[f"{name}.{t}"] for j, name in enumerate(["layers.0", "layers.1", "out"])
               for t in ("weight", "bias")}
        dws["seq.2.bias"] = dws["seq.2.bias"] - 0.5
        part = "train" if i < 12 else "val" if i < 16 else "test"
        rel = f"mnist_png_{part}_{i % 10}_{i}/checkpoints/model_final.pth"
        (root / rel).parent.mkdir(parents=True)
        torch.save(dws, root / rel)
        splits[part]["path"].append(rel)
        splits[part]["label"].append(str(i % 10))
    (root / "mnist_splits.json").write_text(json.dumps(splits))


def test_study_reads_published_dwsnets_files(tmp_path):
    """A DWSNets INR directory goes through the loaders into the same table,
    rendered with DWSNets' (column, row) convention and its published split
    (the trained classifiers and editors run on it in the slow test)."""
    from zoo.loaders.inr import inr_grid

    src = tmp_path / "mnist-inrs"
    _write_dwsnets(src)
    out = tmp_path / "out"
    rc = study.main(["--skip-fit", "--dwsnets-dir", str(src), "--dwsnets-splits", "mnist_splits.json", "--out",
                     str(out), "--methods", "pixels", "--edit-epochs", "0", "--render-size", "6"])
    assert rc == 0
    r = json.loads((out / "results.json").read_text())["results"]["dwsnets"]
    assert r["coord_order"] == "xy" and (r["train"], r["val"], r["test_networks"]) == (12, 4, 4)
    assert set(r["classification"]) == {"pixels"}
    s = study.load_imported(out / "zoos" / "imported_dwsnets", "dwsnets", 6)
    from weightspace.arch import create_model

    m = create_model("siren", seed=0, **study.SIREN)
    with torch.no_grad():
        dws_image = m(inr_grid(6, 6, "xy")).reshape(6, 6).clamp(0, 1)
    assert torch.allclose(s.images[0], dws_image, atol=1e-5)
    # --center classifies the weights minus the training mean, under its own name, without editing
    out2 = tmp_path / "out2"
    assert study.main(["--skip-fit", "--dwsnets-dir", str(src), "--dwsnets-splits", "mnist_splits.json", "--out",
                       str(out2), "--work", str(out / "zoos"), "--methods", "gbm", "--center", "--edit-epochs", "1",
                       "--render-size", "6"]) == 0
    r2 = json.loads((out2 / "results.json").read_text())["results"]
    assert set(r2) == {"dwsnets_centred"} and "editing" not in r2["dwsnets_centred"]


@pytest.mark.slow
def test_inr_study_small_end_to_end(tmp_path):
    pytest.importorskip("nfn")
    out = tmp_path / "out"
    src = tmp_path / "mnist-inrs"
    _write_dwsnets(src)
    rc = study.main(["--small", "--out", str(out), "--images", "40", "--seeds", "2", "--steps", "20",
                     "--epochs", "1", "--edit-epochs", "1", "--threads", "1", "--dwsnets-dir", str(src),
                     "--dwsnets-splits", "mnist_splits.json", "--render-size", "6"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())["results"]
    assert set(res) == {"independent", "shared", "dwsnets"}
    assert res["independent"]["networks"] == 80 and res["shared"]["networks"] == 40 and res["dwsnets"]["networks"] == 20
    for r in res.values():
        assert set(r["classification"]) == set(study.CLASSIFIERS)
        for c in r["classification"].values():
            assert 0.0 <= c["accuracy"] <= 1.0 and c["low"] <= c["accuracy"] <= c["high"]
        assert set(r["editing"]) == set(study.EDITORS) and all(math.isfinite(e["mse"]) for e in r["editing"].values())
    for f in ("table.md", "accuracy.png", "edits_independent.png", "edits_shared.png", "edits_dwsnets.png"):
        assert (out / f).stat().st_size > 0
    # a second run reuses the stored zoos (same settings)
    assert (out / "zoos" / "independent" / "zoo.json").exists()


def test_merge_results_of_split_runs(tmp_path):
    """Runs that split the study by method merge into one table; runs of
    different sets are refused."""
    base = {"networks": 10, "images": 5, "test_networks": 4, "test_groups": 2}
    for name, part in (("a", {"classification": {"gmn": {"accuracy": 0.5, "low": 0.4, "high": 0.6, "seconds": 1}}}),
                       ("b", {"classification": {"pixels": {"accuracy": 0.9, "low": 0.8, "high": 1.0, "seconds": 1}},
                              "editing": {"identity": {"mse": 0.1, "low": 0.09, "high": 0.11, "seconds": 0}}})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"meta": {"run": name}, "results": {"shared": {**base, **part}}}))
    merged = study.merge_results([tmp_path / "a", tmp_path / "b"])["results"]["shared"]
    assert set(merged["classification"]) == {"gmn", "pixels"} and merged["editing"]["identity"]["mse"] == 0.1
    assert "| GMN | 0.500 | [0.400, 0.600] | 1 |" in study.table({"shared": merged})
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "results.json").write_text(json.dumps(
        {"meta": {}, "results": {"shared": {**base, "networks": 11, "classification": {}}}}))
    with pytest.raises(SystemExit, match="set 'shared' has networks 11"):
        study.merge_results([tmp_path / "a", tmp_path / "c"])


def test_probe_extras_are_the_network_at_the_probes_and_move_with_its_neurons():
    """GMN + probe features: the output node's row is the INR's value at
    the probe points (over its block's training RMS), and a permutation of
    the hidden neurons permutes the hidden rows the same way."""
    import numpy as np

    from weightspace.arch import create_model
    from weightspace.generate._common import ArchSpec
    from weightspace.symmetry import apply_permutation, random_permutation

    sds = [create_model("siren", seed=s, **study.SIREN).state_dict() for s in range(3)]
    template = ArchSpec.of("siren", **study.SIREN).template()
    perm = random_permutation(template.spec, generator=torch.Generator().manual_seed(1))
    sds.append(apply_permutation(sds[0], template.spec, perm))
    s = study.INRSet("t", study.stack_sirens(sds), np.zeros(4, dtype=int), np.arange(4), torch.zeros(4, 8, 8))
    graphs = [template.graph(sd) for sd in sds]
    feats = study.probe_extras(s, template, graphs, np.arange(3), seed=0)
    assert feats[0].shape == (template.num_nodes, study.N_PROBES)
    probes = torch.rand(study.N_PROBES, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    m = create_model("siren", **study.SIREN)
    m.load_state_dict(sds[1])
    out_rows = template.node_type == 2  # the output node
    with torch.no_grad():
        values = m(probes)[:, 0]
    ratio = feats[1][out_rows][0] / values
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-4) and float(ratio[0]) > 0
    assert torch.allclose(feats[3], feats[0][template.node_permutation(perm)], atol=1e-5)


@pytest.fixture
def one_thread():
    """One torch thread (on a shared 2-core machine two threads made these
    small graph ops ~20x slower); the setting is restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _sirens(n, seed=0):
    from weightspace.arch import create_model

    return [create_model("siren", seed=seed + s, **study.SIREN).state_dict() for s in range(n)]


def test_gmn_editor_outputs_state_dicts_of_the_same_keys_and_shapes_and_starts_as_identity(one_thread):
    """The GMN editor's edit, written back through the library
    (``GraphBatch.write_back``), is a valid siren state dict; with its
    zero-initialised head it returns the input weights."""
    from weightspace.generate._common import ArchSpec

    sds = _sirens(3)
    ws, bs = study.split_params(study.stack_sirens(sds))
    editor = study.GMNEditor()
    editor.scale.copy_(torch.tensor([0.5, 0.1, 0.02, 0.03, 0.2, 0.05]))
    with torch.no_grad():
        new_w, new_b = editor(ws, bs)
        for i in range(3):
            sd = {k: t[i] for k, t in zip(study.SIREN_KEYS, [t for p in zip(new_w, new_b) for t in p])}
            assert {k: tuple(v.shape) for k, v in sd.items()} == {k: tuple(v.shape) for k, v in sds[i].items()}
            ArchSpec.of("siren", **study.SIREN).template().graph(sd)  # validates keys, shapes, finiteness
            for k in study.SIREN_KEYS:
                assert torch.allclose(sd[k], sds[i][k], atol=1e-6)
        # a nonzero head changes every tensor
        torch.nn.init.normal_(editor.gmn.edge_head[-1].weight, generator=torch.Generator().manual_seed(0))
        moved_w, moved_b = editor(ws, bs)
    for a, b in zip(moved_w + moved_b, ws + bs):
        assert not torch.allclose(a, b)


def test_gmn_editor_is_equivariant_to_hidden_unit_permutations(one_thread):
    """Permuting the input INR's hidden units permutes the predicted
    weights (and so the update) the same way."""
    from weightspace.generate._common import ArchSpec
    from weightspace.symmetry import apply_permutation, random_permutation

    spec = ArchSpec.of("siren", **study.SIREN).template().spec
    sds = _sirens(2, seed=3)
    perm = random_permutation(spec, generator=torch.Generator().manual_seed(2))
    assert any(not torch.equal(p, torch.arange(len(p))) for p in perm.values())
    permuted = [apply_permutation(sd, spec, perm) for sd in sds]
    editor = study.GMNEditor().double()
    editor.scale.copy_(torch.tensor([0.5, 0.1, 0.02, 0.03, 0.2, 0.05], dtype=torch.float64))
    with torch.no_grad():
        torch.nn.init.normal_(editor.gmn.edge_head[-1].weight, generator=torch.Generator().manual_seed(0))
        editor.gmn.edge_head[-1].bias.fill_(0.3)

        def run(batch):
            w, b = study.split_params({k: v.double() for k, v in study.stack_sirens(batch).items()})
            nw, nb = editor(w, b)
            return [{k: t[i] - orig[i] for k, t, orig in zip(study.SIREN_KEYS, [t for p in zip(nw, nb) for t in p],
                                                              [t for p in zip(w, b) for t in p])}
                    for i in range(len(batch))]

        delta, delta_p = run(sds), run(permuted)
    for d, dp in zip(delta, delta_p):
        expect = apply_permutation(d, spec, perm)
        assert any(float(v.abs().max()) > 1e-3 for v in d.values())
        for k in study.SIREN_KEYS:
            assert torch.allclose(dp[k], expect[k], atol=1e-9), k


def test_gmn_editor_trains_on_the_rendering_loss(one_thread):
    """A few Adam steps on 8 SIRENs lower the rendering loss to their
    dilated images."""
    from zoo.loaders.inr import inr_grid

    torch.manual_seed(0)
    ws, bs = study.split_params(study.stack_sirens(_sirens(8)))
    coords = inr_grid(4, 4)
    target = study.dilate(torch.rand(8, 4, 4, generator=torch.Generator().manual_seed(1))).reshape(8, -1)
    editor = study.GMNEditor(hidden=8, num_layers=2)
    editor.scale.copy_(torch.stack([t.pow(2).mean().sqrt() for p in zip(ws, bs) for t in p]))
    opt = torch.optim.AdamW(editor.parameters(), lr=1e-3)  # the study's optimiser
    losses = []
    for _ in range(15):
        loss = ((study.siren_apply(*editor(ws, bs), coords) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] and sum(losses[-5:]) < sum(losses[:5]), losses


@pytest.mark.slow
def test_edit_reports_each_editor_minus_nfn_np_on_the_same_test_networks(one_thread):
    """``edit`` trains every editor (one epoch, 16 SIRENs) and reports the
    paired difference to the NFN-NP editor: the mean of the per-network
    differences, with a CI around it."""
    import numpy as np

    pytest.importorskip("nfn")
    s = study.INRSet("t", study.stack_sirens(_sirens(16)), np.zeros(16, dtype=int), np.arange(16),
                     torch.rand(16, 4, 4, generator=torch.Generator().manual_seed(0)))
    parts = (np.arange(8), np.arange(8, 11), np.arange(11, 16))
    res, renders = study.edit(s, parts, epochs=1, seed=0, log=lambda m: None)
    assert set(res) == set(study.EDITORS) and renders["gmn"].shape == (5, 16)
    ref = np.array(res["nfn_np"]["per_network"])
    assert "minus_nfn_np" not in res["nfn_np"]
    for name in ("identity", "gmn", "flat"):
        d = res[name]["minus_nfn_np"]
        assert d["value"] == pytest.approx(float(np.mean(np.array(res[name]["per_network"]) - ref)))
        assert d["low"] <= d["value"] <= d["high"]
        if name != "identity":
            assert res[name]["best_epoch"] == 1 and len(res[name]["val_curve"]) == 1
    assert "minus NFN-NP" in study.table({"t": {"networks": 16, "images": 16, "test_networks": 5, "test_groups": 5,
                                                "classification": {}, "editing": res}})
