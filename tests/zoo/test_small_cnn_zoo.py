"""Small CNN Zoo loader: layout conversion proven against a NumPy
re-implementation of TensorFlow's convolution, final-step filter, and clear
errors for malformed inputs."""

import gzip
import math

import numpy as np
import pandas as pd
import pytest
import torch

import zoo
from zoo.errors import ZooFormatError
from zoo.loaders import import_small_cnn_zoo, load_small_cnn_zoo, read_layout
from zoo.tf_compat import tf_same_pads

from .small_cnn_zoo_fixture import unflatten, write_small_cnn_zoo


# ---------------------------------------------------------------- TF reference (NumPy)


def tf_conv2d(x, kernel, bias, stride, padding):
    """tf.nn.conv2d semantics: x NHWC, kernel HWIO, cross-correlation,
    'VALID' or 'SAME' (TF pads total = max((out-1)*s + k - n, 0), the extra
    pixel at the bottom/right)."""
    n, h, w, c = x.shape
    kh, kw, _, o = kernel.shape
    if padding == "SAME":
        oh, ow = -(-h // stride), -(-w // stride)
        th = max((oh - 1) * stride + kh - h, 0)
        tw = max((ow - 1) * stride + kw - w, 0)
        x = np.pad(x, ((0, 0), (th // 2, th - th // 2), (tw // 2, tw - tw // 2), (0, 0)))
    else:
        oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    out = np.zeros((n, oh, ow, o))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, i * stride : i * stride + kh, j * stride : j * stride + kw, :]
            out[:, i, j, :] = np.tensordot(patch, kernel, axes=([1, 2, 3], [0, 1, 2]))
    return out + bias


ACT = {"relu": lambda v: np.maximum(v, 0), "tanh": np.tanh}


def keras_small_cnn(x_nhwc, tf_vars, activation, padding):
    """The published Keras model: 3 x Conv2D(16, 3, strides=2) + GAP + Dense(10)."""
    h = x_nhwc
    for scope in ("conv2d", "conv2d_1", "conv2d_2"):
        h = ACT[activation](
            tf_conv2d(h, tf_vars[f"sequential/{scope}/kernel:0"], tf_vars[f"sequential/{scope}/bias:0"], 2, padding)
        )
    h = h.mean(axis=(1, 2))
    return h @ tf_vars["sequential/dense/kernel:0"] + tf_vars["sequential/dense/bias:0"]


# ---------------------------------------------------------------- tests


@pytest.fixture
def scz(tmp_path):
    path = tmp_path / "mnist"
    w, df = write_small_cnn_zoo(path)
    return path, w, df


def test_tf_same_padding_is_asymmetric():
    assert tf_same_pads(8) == (0, 1, 4)  # even: the extra row goes to the bottom
    assert tf_same_pads(28) == (0, 1, 14)
    assert tf_same_pads(7) == (1, 1, 4)  # odd: symmetric, like torch padding=1


@pytest.mark.parametrize("padding, tf_padding, size", [("valid", "VALID", 28), ("same", "SAME", 28),
                                                       ("same", "SAME", 9), ("valid", "VALID", 32)])
def test_single_conv_layer_matches_tf_reference(padding, tf_padding, size):
    rng = np.random.default_rng(1)
    k = rng.normal(size=(3, 3, 2, 5)).astype(np.float32)
    b = rng.normal(size=5).astype(np.float32)
    x = rng.normal(size=(2, size, size, 2)).astype(np.float32)
    ref = tf_conv2d(x.astype(np.float64), k.astype(np.float64), b, 2, tf_padding)
    m = zoo.create_model("cnn_small_tf", in_channels=2, width=5, depth=1, padding=padding, image_size=size)
    conv = m.features[0]
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(k.transpose(3, 2, 0, 1)))  # HWIO -> OIHW
        conv.bias.copy_(torch.from_numpy(b))
        x_t = torch.from_numpy(x.transpose(0, 3, 1, 2))  # NHWC -> NCHW
        if padding == "same":
            x_t = torch.nn.functional.pad(x_t, m.tf_pads[0])
        out = conv(x_t).numpy().transpose(0, 2, 3, 1)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("padding, tf_padding", [("valid", "VALID"), ("same", "SAME")])
def test_imported_network_computes_the_tf_function(scz, padding, tf_padding):
    path, w, df = scz
    members = list(load_small_cnn_zoo(path, padding=padding))
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 28, 28, 1)).astype(np.float32)
    for m in members:
        row = int(df.index[(df.modeldir == m.extra["modeldir"]) & (df.step == 86)][0])
        act = df.loc[row, "config.activation"]
        ref = keras_small_cnn(x.astype(np.float64), unflatten(w[row].astype(np.float64)), act, tf_padding)
        net = m.module()
        assert m.config["arch"] == "cnn_small_tf" and m.config["model"]["activation"] == act
        with torch.no_grad():
            out = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_torch_padding_import_runs_but_is_a_different_function(scz):
    path, w, df = scz
    m = next(load_small_cnn_zoo(path, padding="torch"))
    assert m.config["arch"] == "cnn_small"
    net = m.module()
    x = np.random.default_rng(3).normal(size=(2, 28, 28, 1)).astype(np.float32)
    out = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy()
    assert out.shape == (2, 10) and np.isfinite(out).all()
    row = int(df.index[(df.modeldir == m.extra["modeldir"]) & (df.step == 86)][0])
    ref = keras_small_cnn(x.astype(np.float64), unflatten(w[row].astype(np.float64)), "relu", "VALID")
    assert not np.allclose(out, ref, atol=1e-3)
    # ...with exactly the same weights as the exact import
    exact = next(load_small_cnn_zoo(path))
    for k in exact.checkpoints[-1].state_dict:
        assert np.array_equal(exact.checkpoints[-1].state_dict[k], m.checkpoints[-1].state_dict[k])


def test_final_step_filter_and_all_steps(scz):
    path, w, df = scz
    final = list(load_small_cnn_zoo(path))
    assert len(final) == 3 and all([c.epoch for c in m.checkpoints] == [86] for m in final)
    m0 = final[0]
    assert m0.metrics["test_acc"] == pytest.approx(0.9) and m0.metrics["train_acc"] == pytest.approx(0.95)
    assert m0.metrics["gap_acc"] == pytest.approx(0.05)
    assert m0.config["hparams"]["learning_rate"] == pytest.approx(0.01)
    assert m0.config["hparams"]["train_fraction"] == 0.1
    every = list(load_small_cnn_zoo(path, steps="all"))
    assert [c.epoch for c in every[1].checkpoints] == [0, 1, 86]
    some = list(load_small_cnn_zoo(path, steps=[1]))
    assert all([c.epoch for c in m.checkpoints] == [1] for m in some)
    assert len(list(load_small_cnn_zoo(path, limit=2))) == 2


def test_runs_from_checkpoint_path_index(scz):
    """Without a ``modeldir`` column, runs come from a checkpoint-path index
    (``.../<run>/permanent_ckpt-<step>``) as in the paper's notebook."""
    path, w, df = scz
    idx = [f"{d}/permanent_ckpt-{s}" for d, s in zip(df["modeldir"], df["step"])]
    df.drop(columns=["modeldir"]).set_axis(idx).to_csv(path / "metrics.csv.gz", compression="gzip")
    ms = list(load_small_cnn_zoo(path))
    assert len(ms) == 3 and all([c.epoch for c in m.checkpoints] == [86] for m in ms)
    assert [m.extra["modeldir"] for m in ms] == list(dict.fromkeys(df["modeldir"]))


def test_nonfinite_runs_are_dropped(tmp_path):
    path = tmp_path / "z"
    w, df = write_small_cnn_zoo(path)
    w[5, 17] = np.nan  # run 1, step 86
    np.save(path / "weights.npy", w)
    kept = [m.extra["modeldir"] for m in load_small_cnn_zoo(path)]
    assert len(kept) == 2 and df.loc[5, "modeldir"] not in kept
    assert len(list(load_small_cnn_zoo(path, drop_nonfinite=False))) == 3


def test_import_into_zoo_and_query(scz, tmp_path):
    path, w, df = scz
    z = import_small_cnn_zoo(path, tmp_path / "out", progress=False)
    assert len(z) == 3 and z.info["source"] == "small_cnn_zoo"
    dfz = z.to_pandas()
    assert {"test_acc", "config.hparams.activation", "modeldir"} <= set(dfz.columns)
    assert z.filter(**{"config.hparams.activation": "tanh"}).member_ids == [z.member_ids[1]]
    with pytest.raises(KeyError, match="ambiguous"):  # also config.model.activation
        z.filter(activation="tanh")
    assert z.verify() == []
    m = z.members()[0]
    x = torch.zeros(1, 1, 28, 28)
    assert m.module()(x).shape == (1, 10)
    # importing again is a no-op (resumable)
    z2 = import_small_cnn_zoo(path, tmp_path / "out", progress=False)
    assert z2.member_ids == z.member_ids


# ---------------------------------------------------------------- malformed inputs


def _rewrite_metrics(path, fn):
    df = pd.read_csv(path / "metrics.csv.gz")
    fn(df).to_csv(path / "metrics.csv.gz", index=False, compression="gzip")


def test_missing_files(tmp_path):
    path = tmp_path / "z"
    write_small_cnn_zoo(path)
    (path / "weights.npy").unlink()
    with pytest.raises(ZooFormatError, match=r"weights\.npy.*file not found") as e:
        list(load_small_cnn_zoo(path))
    assert e.value.path.endswith("weights.npy")
    with pytest.raises(ZooFormatError, match="directory not found"):
        list(load_small_cnn_zoo(tmp_path / "nope"))


def test_missing_metrics_column(scz):
    path, *_ = scz
    _rewrite_metrics(path, lambda d: d.drop(columns=["step"]))
    with pytest.raises(ZooFormatError, match=r"metrics\.csv\.gz: \[step\] missing column 'step'") as e:
        list(load_small_cnn_zoo(path))
    assert e.value.field == "step"


def test_missing_activation_column(scz):
    path, *_ = scz
    _rewrite_metrics(path, lambda d: d.drop(columns=["config.activation"]))
    with pytest.raises(ZooFormatError, match=r"config\.activation"):
        list(load_small_cnn_zoo(path))


def test_missing_layout_column(scz):
    path, *_ = scz
    pd.read_csv(path / "layout.csv").drop(columns=["shape"]).to_csv(path / "layout.csv", index=False)
    with pytest.raises(ZooFormatError, match=r"layout\.csv: \[shape\] missing column 'shape'"):
        read_layout(path / "layout.csv")


def test_wrong_vector_length(scz):
    path, w, _ = scz
    np.save(path / "weights.npy", w[:, :4960])
    with pytest.raises(ZooFormatError, match=r"weights\.npy: \[shape\] rows have 4960 values but layout\.csv describes 4970"):
        list(load_small_cnn_zoo(path))


def test_layout_that_does_not_fit_the_network(tmp_path):
    path = tmp_path / "z"
    write_small_cnn_zoo(path)
    lay = pd.read_csv(path / "layout.csv")
    lay.loc[7, "shape"] = "(10, 16)"  # dense kernel in the wrong orientation
    lay.to_csv(path / "layout.csv", index=False)
    with pytest.raises(ZooFormatError, match=r"dense/kernel.*does not fit torch tensor classifier.weight"):
        list(load_small_cnn_zoo(path))


def test_row_count_mismatch(scz):
    path, w, _ = scz
    np.save(path / "weights.npy", w[:-1])
    with pytest.raises(ZooFormatError, match=r"metrics\.csv\.gz: \[rows\] has 9 rows but weights\.npy has 8"):
        list(load_small_cnn_zoo(path))


def test_unknown_architecture(scz):
    path, *_ = scz
    _rewrite_metrics(path, lambda d: d.assign(**{"config.dnn_architecture": "fcn"}))
    with pytest.raises(ZooFormatError, match=r"\[config\.dnn_architecture\] unknown architecture 'fcn'"):
        list(load_small_cnn_zoo(path))


def test_unknown_activation(scz):
    path, *_ = scz
    _rewrite_metrics(path, lambda d: d.assign(**{"config.activation": "swishy"}))
    with pytest.raises(ZooFormatError, match=r"unknown activation 'swishy'"):
        list(load_small_cnn_zoo(path))


def test_pickled_npy_is_refused(scz):
    path, *_ = scz
    np.save(path / "weights.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ZooFormatError, match=r"weights\.npy.*not a plain numeric"):
        list(load_small_cnn_zoo(path))


def test_paths_with_a_tilde_are_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write_small_cnn_zoo(tmp_path / "scz" / "mnist", runs=2)
    members = list(load_small_cnn_zoo("~/scz/mnist"))
    assert len(members) == 2
    z = import_small_cnn_zoo("~/scz/mnist", "~/imported", progress=False)
    assert len(z) == 2 and (tmp_path / "imported").is_dir()
    assert len(zoo.Zoo("~/imported")) == 2
