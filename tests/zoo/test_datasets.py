import dataclasses
import random

import numpy as np
import pytest
import torch

import weightspace.data as wdata
from zoo.datasets import Dataset, list_datasets, load_dataset
from zoo.errors import RecipeError


def test_builtin_datasets_registered():
    assert {"digits", "mnist1d", "inr_digits", "inr_sample_image", "inr_signal"} <= set(list_datasets())


def test_digits_splits_are_fixed_by_seed_and_disjoint():
    a = load_dataset("digits", split_seed=0)
    b = load_dataset("digits", split_seed=0, train_fraction=0.5)  # member-level keys ignored here
    c = load_dataset("digits", split_seed=1)
    assert a.x_train.shape[1:] == (1, 8, 8) and a.task == "classification" and a.num_classes == 10
    assert sum(a.sizes().values()) == 1797
    assert a.sizes() == {"train": 1077, "val": 270, "test": 450}
    assert torch.equal(a.x_test, b.x_test)
    assert not torch.equal(a.y_test, c.y_test)
    # disjoint: no test image occurs in train
    tr = {tuple(x.flatten().tolist()) for x in a.x_train}
    overlap = sum(tuple(x.flatten().tolist()) in tr for x in a.x_test)
    assert overlap < 5  # load_digits has a handful of exact duplicate images
    assert float(a.x_train.max()) <= 1.0 and float(a.x_train.min()) >= 0.0


def test_mnist1d_is_generated_locally_and_leaves_global_rng_alone():
    np.random.seed(123)
    random.seed(123)
    before = (np.random.random(), random.random())
    np.random.seed(123)
    random.seed(123)
    ds = load_dataset("mnist1d", num_samples=400, data_seed=3)
    after = (np.random.random(), random.random())
    assert before == after
    assert ds.x_train.shape[1:] == (1, 40) and ds.sizes()["test"] == 80
    ds2 = load_dataset("mnist1d", num_samples=400, data_seed=4)
    assert not torch.equal(ds.x_test, ds2.x_test)


@pytest.mark.parametrize("name, opts", [
    ("inr_digits", {"index": 5, "size": 12}),
    ("inr_sample_image", {"index": 2, "size": 16}),
    ("inr_signal", {"index": 1, "kind": "blobs", "size": 10}),
])
def test_inr_datasets(name, opts):
    ds = load_dataset(name, **opts)
    s = opts["size"]
    assert ds.task == "inr"
    assert ds.x_train.shape == (s * s, 2) and ds.y_train.shape == (s * s, 1)
    assert float(ds.x_train.abs().max()) <= 1.0
    assert 0.0 <= float(ds.y_train.min()) and float(ds.y_train.max()) <= 1.0
    other = load_dataset(name, **dict(opts, index=opts["index"] + 1))
    assert not torch.equal(ds.y_train, other.y_train)


def test_inr_pixel_holdout():
    ds = load_dataset("inr_digits", index=0, size=10, val_fraction=0.1, test_fraction=0.2)
    assert ds.sizes() == {"train": 70, "val": 10, "test": 20}
    assert load_dataset("inr_digits", index=3).meta["label"] == 3


def test_unknown_dataset_and_option():
    with pytest.raises(RecipeError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")
    with pytest.raises(RecipeError, match="digits"):
        load_dataset("digits", colour=True)


def test_dataset_is_the_library_dataclass():
    """zoo's Dataset is weightspace.data.Dataset plus helpers: same fields, in order."""
    assert issubclass(Dataset, wdata.Dataset)
    assert [f.name for f in dataclasses.fields(Dataset)] == [f.name for f in dataclasses.fields(wdata.Dataset)]
    x, y = torch.zeros(4, 1, 2), torch.zeros(4, dtype=torch.long)
    ds = Dataset("t", "classification", x, y, x[:1], y[:1], x[:2], y[:2], 2)
    assert isinstance(ds, wdata.Dataset) and ds.meta == {} and ds.meta is not Dataset("t", "c", *[x] * 6, 1).meta
    assert ds.input_shape == (1, 2) and ds.sizes() == {"train": 4, "val": 1, "test": 2}
