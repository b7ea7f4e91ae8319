"""INR zoo loaders (DWSNets-style files + splits.json; NFN-style SIREN archives)."""

import io
import json
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ZooFormatError
from zoo.loaders import import_inr_zoo, load_dwsnets_inrs, load_nfn_sirens


class DWSSiren(nn.Module):
    """DWSNets' Siren layer: own weight/bias, sin(30 x)."""

    def __init__(self, i, o):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(o, i).uniform_(-1 / i, 1 / i))
        self.bias = nn.Parameter(torch.empty(o).uniform_(-0.1, 0.1))

    def forward(self, x):
        return torch.sin(30.0 * F.linear(x, self.weight, self.bias))


class DWSINR(nn.Module):
    """DWSNets' INR: seq = [Siren(2,32), Siren(32,32), Linear(32,1)], output + 0.5."""

    def __init__(self):
        super().__init__()
        self.seq = nn.Sequential(DWSSiren(2, 32), DWSSiren(32, 32), nn.Linear(32, 1))

    def forward(self, x):
        return self.seq(x) + 0.5


class NFNSineLayer(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.linear = nn.Linear(i, o)

    def forward(self, x):
        return torch.sin(30.0 * self.linear(x))


class NFNSiren(nn.Module):
    """NFN's Siren(2, 32, hidden_layers=1, 1, outermost_linear=True)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(NFNSineLayer(2, 32), NFNSineLayer(32, 32), nn.Linear(32, 1))

    def forward(self, x):
        return self.net(x)


def _coords(n=7):
    g = torch.linspace(-1, 1, n)
    return torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)


@pytest.fixture
def dws(tmp_path):
    root = tmp_path / "mnist-inrs"
    nets, splits = {}, {s: {"path": [], "label": []} for s in ("train", "val", "test")}
    torch.manual_seed(0)
    for i, split in enumerate(["train", "train", "val", "test"]):
        rel = f"mnist_png_{split}_{i}_{i}/checkpoints/model_final.pth"
        (root / rel).parent.mkdir(parents=True)
        net = DWSINR()
        torch.save(net.state_dict(), root / rel)
        splits[split]["path"].append(rel)
        splits[split]["label"].append(str(i % 10))
        nets[rel] = net
    (root / "mnist_splits.json").write_text(json.dumps(splits))
    return root, nets


def test_dwsnets_members_reproduce_the_inr(dws):
    root, nets = dws
    ms = list(load_dwsnets_inrs(root, splits_file="mnist_splits.json"))
    assert len(ms) == 4
    assert [m.extra["split"] for m in ms] == ["train", "train", "val", "test"]
    assert [m.extra["label"] for m in ms] == [0, 1, 2, 3]
    x = _coords()
    for m in ms:
        assert m.config["arch"] == "siren" and m.config["model"]["hidden"] == [32, 32]
        with torch.no_grad():
            assert torch.allclose(m.module()(x), nets[m.extra["file"]](x), atol=1e-5)
    # without the offset the stored bias is kept as is
    raw = next(load_dwsnets_inrs(root, splits_file="mnist_splits.json", output_offset=0.0))
    assert torch.allclose(raw.checkpoints[0].state_dict["out.bias"] + 0.5, ms[0].checkpoints[0].state_dict["out.bias"])


def test_dwsnets_import_and_split_column(dws, tmp_path):
    root, _ = dws
    z = import_inr_zoo(root, tmp_path / "out", style="dwsnets", splits_file="mnist_splits.json", progress=False)
    assert len(z) == 4 and z.filter(split="train").member_ids == z.member_ids[:2]
    assert set(z.to_pandas()["label"]) == {0, 1, 2, 3}
    assert z.stacked()["layers.1.weight"].shape == (4, 32, 32)


def test_dwsnets_errors(dws):
    root, _ = dws
    s = json.loads((root / "mnist_splits.json").read_text())
    del s["val"]["label"]
    (root / "mnist_splits.json").write_text(json.dumps(s))
    with pytest.raises(ZooFormatError, match=r"mnist_splits\.json: \[val\.label\] split 'val' lacks the 'label' list"):
        list(load_dwsnets_inrs(root, splits_file="mnist_splits.json"))
    s["val"]["label"] = ["2"]
    s["val"]["path"] = ["missing/model_final.pth"]
    (root / "mnist_splits.json").write_text(json.dumps(s))
    with pytest.raises(ZooFormatError, match=r"missing/model_final\.pth: file not found"):
        list(load_dwsnets_inrs(root, splits_file="mnist_splits.json"))


def test_non_inr_state_dict_is_rejected(tmp_path):
    root = tmp_path / "inrs"
    root.mkdir()
    torch.save({"conv.weight": torch.zeros(4, 1, 3, 3), "conv.bias": torch.zeros(4),
                "fc.weight": torch.zeros(1, 4), "fc.bias": torch.zeros(1)}, root / "a.pth")
    with pytest.raises(ZooFormatError, match=r"a\.pth: \[conv\.weight\] weight has shape \(4, 1, 3, 3\), expected 2-d"):
        list(load_dwsnets_inrs(root))
    torch.save({"0.weight": torch.zeros(32, 2), "0.bias": torch.zeros(32)}, root / "a.pth")
    with pytest.raises(ZooFormatError, match="at least 2 linear layers"):
        list(load_dwsnets_inrs(root))


def _write_nfn(root, n=4):
    torch.manual_seed(1)
    nets = {}
    for i in range(n):
        label = (i * 3) % 10
        rel = f"randinit_test_{label}s/net{i}.pth"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        net = NFNSiren()
        torch.save(net.state_dict(), root / rel)
        nets[rel] = net
    other = root / "randinit_smaller_0s" / "net99.pth"
    other.parent.mkdir()
    torch.save(NFNSiren().state_dict(), other)
    return nets


@pytest.mark.parametrize("as_tar", [False, True])
def test_nfn_sirens_from_directory_or_archive(tmp_path, as_tar):
    root = tmp_path / "siren_mnist_wts"
    nets = _write_nfn(root)
    src = root
    if as_tar:
        src = tmp_path / "siren_mnist_wts.tar.gz"
        with tarfile.open(src, "w:gz") as tar:
            tar.add(root, arcname="siren_mnist_wts")
    ms = list(load_nfn_sirens(src, prefix="randinit_test"))
    assert [m.index for m in ms] == [0, 1, 2, 3]
    assert [m.extra["label"] for m in ms] == [0, 3, 6, 9]
    x = _coords()
    for m in ms:
        rel = m.extra["file"].split("siren_mnist_wts/")[-1]
        with torch.no_grad():
            assert torch.allclose(m.module()(x), nets[rel](x), atol=1e-5)
    assert len(list(load_nfn_sirens(src))) == 5  # without prefix: every .pth


def test_nfn_errors(tmp_path):
    with pytest.raises(ZooFormatError, match="not a directory or a tar archive"):
        list(load_nfn_sirens(tmp_path / "nope.tar"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZooFormatError, match=r"no SIREN files found under randinit_test_\*/"):
        list(load_nfn_sirens(tmp_path / "empty", prefix="randinit_test"))
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        data = b"not a torch file"
        ti = tarfile.TarInfo("x_1s/net0.pth")
        ti.size = len(data)
        tar.addfile(ti, io.BytesIO(data))
    with pytest.raises(ZooFormatError, match=r"bad\.tar/x_1s/net0\.pth: torch\.load\(weights_only=True\) refused"):
        list(load_nfn_sirens(bad))


def test_unknown_inr_style(tmp_path):
    with pytest.raises(ValueError, match="style"):
        import_inr_zoo(tmp_path, tmp_path / "o", style="functa")


# ---------------------------------------------------------------- coordinate convention


def _dwsnets_make_coordinates(shape):
    """DWSNets' ``experiments/utils.py: make_coordinates`` (numpy ``meshgrid``,
    default ``indexing="xy"``): the first coordinate runs along the columns."""
    xs = np.linspace(-1, 1, shape[0])
    ys = np.linspace(-1, 1, shape[1])
    xx, yy = np.meshgrid(xs, ys)
    return torch.from_numpy(np.stack([xx.flatten(), yy.flatten()]).T).float()


def _asymmetric_dwsinr():
    """A DWSNets INR whose image (in DWSNets' own rendering) is far from its
    transpose: it depends on the first input only."""
    torch.manual_seed(3)
    net = DWSINR()
    with torch.no_grad():
        net.seq[0].weight[:, 1] = 0.0
        net.seq[0].weight[:, 0] = torch.linspace(-0.1, 0.1, 32)
    return net


def test_dwsnets_member_renders_its_published_image(tmp_path):
    """The image the project renders from an imported DWSNets INR is the one
    DWSNets renders (``make_coordinates`` + ``view(H, W)``), not its transpose."""
    from zoo.loaders.inr import member_coord_order, render_inr

    root = tmp_path / "mnist-inrs"
    rel = "mnist_png_train_5_0/checkpoints/model_final.pth"
    (root / rel).parent.mkdir(parents=True)
    net = _asymmetric_dwsinr()
    torch.save(net.state_dict(), root / rel)
    (root / "mnist_splits.json").write_text(json.dumps({"train": {"path": [rel], "label": ["5"]}}))
    H = W = 9
    with torch.no_grad():
        known = net(_dwsnets_make_coordinates((H, W))).view(H, W)
    assert not torch.allclose(known, known.T, atol=1e-2)  # the test can tell a transpose apart

    z = import_inr_zoo(root, tmp_path / "zoo", style="dwsnets", splits_file="mnist_splits.json", progress=False)
    member = z[0]
    assert member.extra["coord_order"] == "xy"
    assert member_coord_order(member) == "xy"
    img = render_inr(member.module(), H, W, coord_order=member_coord_order(member))
    assert img.shape == (H, W)
    assert torch.allclose(img, known, atol=1e-5)
    # the project's default (row, column) grid gives the transpose
    assert torch.allclose(render_inr(member.module(), H, W), known.T, atol=1e-5)


def test_nfn_members_take_row_column_coordinates(tmp_path):
    from zoo.loaders.inr import member_coord_order

    root = tmp_path / "siren_mnist_wts"
    _write_nfn(root, n=1)
    (m,) = list(load_nfn_sirens(root, prefix="randinit_test"))
    assert m.extra["coord_order"] == "yx" and member_coord_order(m) == "yx"


def test_inr_grid_orders_and_errors():
    from zoo.datasets import load_dataset
    from zoo.loaders.inr import inr_grid, member_coord_order

    yx = inr_grid(3, 4)
    assert yx.shape == (12, 2)
    assert torch.equal(inr_grid(4, 4), load_dataset("inr_digits", index=0, size=4).x_train)  # the zoo's grid
    assert torch.equal(inr_grid(3, 4, coord_order="xy"), yx.flip(-1))
    assert torch.allclose(yx[1], torch.tensor([-1.0, -1 / 3]))  # row-major: the second pixel is one column right
    with pytest.raises(ValueError, match=r"coord_order must be 'yx' \(row, column\) or 'xy' \(column, row\), got 'ij'"):
        inr_grid(3, 4, coord_order="ij")

    class M:
        extra = {"coord_order": "rc"}

    with pytest.raises(ZooFormatError, match=r"\[coord_order\].*'rc'"):
        member_coord_order(M())
    M.extra = {}
    assert member_coord_order(M()) == "yx"  # members built by the project use its grid
