"""INR classification and editing: which metanetwork reads an image from the
weights of its SIREN?

Zoo (built here, stored with :mod:`zoo.store`): one 2 -> 32 -> 32 -> 1 SIREN
(the registry's ``siren``, the NFN/DWSNets MNIST-INR shape) per sklearn
digits image (8 x 8, grey values in [0, 1], the project's ``(row, column)``
grid), fitted full-batch with Adam. Two regimes:

* ``independent``: every fit starts from its own random SIREN init
  (``create_model("siren", seed=...)``), ``--seeds`` fits per image;
* ``shared``: every network starts from one shared init (one fit per image:
  full-batch Adam from the same start is deterministic, so more would be copies).

Fitting is vectorised over networks: ``SirenBank`` (registered here as
``inr_study_siren_bank``) holds ``n`` SIRENs side by side and is fitted by
the library's Reptile inner loop (:func:`weightspace.generate.inr_init.fit_signals`;
no second fitter). Its output is scaled by ``sqrt(n)`` (targets too), so the
loss is the sum of the networks' own MSEs and every network gets exactly its
own gradient: Adam then runs as ``n`` independent fits.

Classification (10 digits), split by *image* (60 / 15 / 25 % of the images;
all fits of an image on one side), accuracy on the test networks with 95 %
bootstrap CIs resampling images: GMN (``weightspace.nn``), StatNN, FlatMLP
with and without permutation augmentation, NFN (``weightspace.nn``), stats +
GBM (``weight_features`` + sklearn ``HistGradientBoostingClassifier``), the
``nfn`` package's NP and HNP layers (Zhou et al. 2023; the ``[nfn]`` extra) as
the published anchor, and logistic regression on the rendered pixels as a
reference that is not a weight-space model.

Editing (DWSNets / NFN): map an INR's weights to the weights of an INR of
the *dilated* image (grey dilation with a 3 x 3 cross). Editors are trained on the
rendering loss (MSE of the edited INR's image against the dilated image) and
scored by that MSE on the test images (CIs by image); identity (the original
INR) is the baseline. Editors: the ``nfn`` package's NP layers (as in NFN), a GMN
(:class:`GMNEditor`, per-edge readout) and a flat MLP, each predicting a weight
update.

Published INR files (``--dwsnets-dir``, ``--nfn-dir``) go through
:func:`zoo.loaders.inr.import_inr_zoo` and get the same table (and editing,
rendered with each member's recorded coordinate convention).

Outputs in --out: ``table.md``, ``results.json``, ``accuracy.png``,
``edits_<set>.png``.

Run:
    python analyses/inr/run.py --small --out runs/inr_small      # a few minutes on 2 cores
    python analyses/inr/run.py --out runs/inr --seeds 5
    python analyses/inr/run.py --dwsnets-dir dataset/mnist-inrs --dwsnets-splits mnist_splits.json --skip-fit
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from weightspace.arch import create_model, register_model  # noqa: E402
from weightspace.common.metrics import bootstrap_ci  # noqa: E402
from weightspace.common.splits import group_split  # noqa: E402
from weightspace.generate._common import ArchSpec  # noqa: E402
from weightspace.generate.inr_init import fit_signals, psnr  # noqa: E402
from weightspace.nn import GMN, FlatMLP, StatNN, probe_features  # noqa: E402
from weightspace.nn.base import MetaNetwork  # noqa: E402
from weightspace.nn.baselines import NFN, mlp_layers  # noqa: E402
from weightspace.nn.train import TrainConfig, fit, predict_metanetwork  # noqa: E402
from weightspace.predict.features import weight_features  # noqa: E402

SIREN = {"in_features": 2, "hidden": [32, 32], "out_features": 1, "w0": 30.0, "w0_first": 30.0}
SIREN_KEYS = ("layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias", "out.weight", "out.bias")
CLASSIFIERS = ("gmn", "gmn_rn", "gmn_probe", "statnn", "flatmlp", "flatmlp_aug", "nfn_ws", "gbm", "nfn_np", "nfn_hnp", "pixels")
LABELS = {
    "gmn": "GMN", "gmn_rn": "GMN, readout norm.", "gmn_probe": "GMN, readout norm. + probe features", "statnn": "StatNN", "flatmlp": "FlatMLP", "flatmlp_aug": "FlatMLP + perm. aug.",
    "nfn_ws": "NFN (weightspace.nn)", "gbm": "stats + GBM", "nfn_np": "NFN-NP (nfn package)",
    "nfn_hnp": "NFN-HNP (nfn package)", "pixels": "pixels + logistic reg. (reference)",
}
EDITORS = ("identity", "nfn_np", "gmn", "flat")
EDIT_LABELS = {"identity": "identity (original INR)", "nfn_np": "NFN-NP editor (nfn package)",
               "gmn": "GMN editor (weightspace.nn)", "flat": "flat MLP editor"}


# --------------------------------------------------------------------------- SIRENs side by side


def siren_apply(weights: Sequence[Tensor], biases: Sequence[Tensor], coords: Tensor, w0: float = 30.0,
                w0_first: float = 30.0) -> Tensor:
    """``B`` SIRENs on shared coordinates: weights ``[B, n_l, n_{l-1}]``,
    biases ``[B, n_l]``, coords ``[P, 2]`` -> ``[B, P]`` (one output channel).
    The registry's ``siren`` forward, batched over networks."""
    x = coords
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases)):
        x = torch.matmul(x, w.transpose(-1, -2)) + b.unsqueeze(-2)
        if i < last:
            x = torch.sin((w0_first if i == 0 else w0) * x)
    return x.squeeze(-1)


class SirenBank(nn.Module):
    """``n`` independent SIRENs in one module: ``[P, 2] -> [P, n]`` (output
    times ``out_scale``). Parameters ``weight{i}`` ``[n, n_l, n_{l-1}]`` and
    ``bias{i}`` ``[n, n_l]``; initialised to zero (the study passes the inits)."""

    def __init__(self, n: int = 1, hidden: Sequence[int] = (32, 32), w0: float = 30.0, w0_first: float = 30.0,
                 out_scale: float = 1.0) -> None:
        super().__init__()
        dims = [2, *hidden, 1]
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            self.register_parameter(f"weight{i}", nn.Parameter(torch.zeros(n, b, a)))
            self.register_parameter(f"bias{i}", nn.Parameter(torch.zeros(n, b)))
        self.depth = len(dims) - 1
        self.w0, self.w0_first, self.out_scale = float(w0), float(w0_first), float(out_scale)

    def forward(self, coords: Tensor) -> Tensor:
        ws = [getattr(self, f"weight{i}") for i in range(self.depth)]
        bs = [getattr(self, f"bias{i}") for i in range(self.depth)]
        return siren_apply(ws, bs, coords, self.w0, self.w0_first).T * self.out_scale



BANK = "inr_study_siren_bank"


def register_siren_bank() -> str:
    """Register :class:`SirenBank` as ``inr_study_siren_bank`` (idempotent) and
    return the name. Called when the study fits, not at import, so importing
    this module leaves the registry (and every "all registered
    architectures" test) as it was."""
    from weightspace.arch import list_models

    if BANK not in list_models():
        register_model(BANK, input_shape=lambda kw: (2, 2),
                       description="n SIRENs side by side (the INR study's batched fitting)", tags=("inr",))(SirenBank)
    return BANK


def stack_sirens(state_dicts: Sequence[dict]) -> dict[str, Tensor]:
    """Siren state dicts -> ``{key: [n, ...]}``."""
    return {k: torch.stack([sd[k] for sd in state_dicts]) for k in SIREN_KEYS}


def split_params(params: dict[str, Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """Stacked siren tensors -> (weights, biases) lists for :func:`siren_apply`."""
    return [params[k] for k in SIREN_KEYS[0::2]], [params[k] for k in SIREN_KEYS[1::2]]


def _bank_key(i: int) -> str:
    """The :class:`SirenBank` parameter holding ``SIREN_KEYS[i]``."""
    return f"{'weight' if i % 2 == 0 else 'bias'}{i // 2}"


def fit_sirens(images: Tensor, inits: dict[str, Tensor], *, steps: int, lr: float, chunk: int,
               progress: Callable[[int, int], None] | None = None) -> tuple[dict[str, Tensor], Tensor]:
    """Fit one SIREN per image from its own init.

    Args:
        images: ``[N, H, W]`` in [0, 1] (on the ``(row, column)`` grid).
        inits: stacked siren tensors ``{key: [N, ...]}`` (row ``i`` starts fit ``i``).

    Returns:
        ``(fitted {key: [N, ...]}, psnr [N])``.
    """
    from zoo.loaders.inr import inr_grid

    N, H, W = images.shape
    coords = inr_grid(H, W)
    targets = images.reshape(N, H * W)
    out: dict[str, list[Tensor]] = {k: [] for k in SIREN_KEYS}
    scores = []
    for s in range(0, N, chunk):
        e = min(N, s + chunk)
        n = e - s
        scale = math.sqrt(n)
        arch = ArchSpec.of(register_siren_bank(), n=n, out_scale=scale)
        init = {_bank_key(i): inits[k][s:e] for i, k in enumerate(SIREN_KEYS)}
        fitted, _ = fit_signals(arch, init, coords, (targets[s:e].T * scale).unsqueeze(0), steps, lr)
        for i, k in enumerate(SIREN_KEYS):
            out[k].append(fitted[_bank_key(i)][0].detach())
        ws, bs = split_params({k: v[-1] for k, v in out.items()})
        with torch.no_grad():
            scores.append(psnr(((siren_apply(ws, bs, coords) - targets[s:e]) ** 2).mean(1)))
        if progress is not None:
            progress(e, N)
    return {k: torch.cat(v) for k, v in out.items()}, torch.cat(scores)


def siren_inits(n: int, *, regime: str, seed: int) -> dict[str, Tensor]:
    """``n`` SIREN inits: all ``create_model("siren", seed=seed)`` (shared) or
    ``seed + i`` for fit ``i`` (independent)."""
    if regime == "shared":
        sd = create_model("siren", seed=seed, **SIREN).state_dict()
        return {k: sd[k].unsqueeze(0).expand(n, *sd[k].shape).clone() for k in SIREN_KEYS}
    return stack_sirens([create_model("siren", seed=seed + i, **SIREN).state_dict() for i in range(n)])


# --------------------------------------------------------------------------- data sets


@dataclass
class INRSet:
    """A population of SIRENs with labels: ``params {key: [N, ...]}``,
    ``labels``/``groups`` (image id) ``[N]``, the images they represent
    ``[N, H, W]``, their coordinate convention and, for imported sets, the
    published split (``None``: split by group here)."""

    name: str
    params: dict[str, Tensor]
    labels: np.ndarray
    groups: np.ndarray
    images: Tensor
    coord_order: str = "yx"
    split: np.ndarray | None = None

    def subset(self, rows: np.ndarray) -> "INRSet":
        return INRSet(self.name, {k: v[rows] for k, v in self.params.items()}, self.labels[rows], self.groups[rows],
                      self.images[rows], self.coord_order, None if self.split is None else self.split[rows])

    def state_dicts(self) -> list[dict[str, Tensor]]:
        return [{k: self.params[k][i] for k in SIREN_KEYS} for i in range(len(self))]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def build_fitted_zoo(path: Path, *, regime: str, image_ids: Sequence[int], seeds: int, steps: int, lr: float,
                     chunk: int, seed: int, log: Callable[[str], None]) -> dict:
    """Fit and store (``zoo.store.ZooWriter``) the SIRENs of one regime; a zoo
    already at ``path`` with the same settings is reused."""
    from zoo.store import ZooWriter
    from zoo.train import CheckpointResult

    settings = {"regime": regime, "images": len(image_ids), "seeds": seeds, "steps": steps, "lr": lr, "seed": seed,
                "size": 8}
    if (path / "zoo.json").exists():
        info = json.loads((path / "zoo.json").read_text())
        if info.get("study") == settings:
            log(f"  reusing {path}")
            return {"reused": True, **settings}
        raise SystemExit(f"error: {path} holds a zoo with other settings ({info.get('study')}); remove it or pick --work")
    from sklearn.datasets import load_digits

    d = load_digits()
    img_all = torch.tensor(d.images, dtype=torch.float32) / 16.0
    per = 1 if regime == "shared" else seeds
    rows = [(int(i), j) for i in image_ids for j in range(per)]
    images = torch.stack([img_all[i] for i, _ in rows])
    t0 = time.time()
    inits = siren_inits(len(rows), regime=regime, seed=seed)
    fitted, score = fit_sirens(images, inits, steps=steps, lr=lr, chunk=chunk,
                               progress=lambda e, n: log(f"  fitted {e}/{n} ({time.time() - t0:.0f} s)"))
    fit_time = time.time() - t0
    t1 = time.time()
    info = {"name": f"inr_study_{regime}", "source": "analyses/inr", "recipe": None, "study": settings}
    members = []
    for r, (img, j) in enumerate(rows):
        sd = {k: fitted[k][r].contiguous() for k in SIREN_KEYS}
        init_seed = seed if regime == "shared" else seed + r
        members.append(dict(
            member_id=f"{regime}-{img:04d}-{j:02d}", index=r,
            config={"arch": "siren", "model": SIREN, "hparams": {"steps": steps, "lr": lr, "init_seed": init_seed}},
            checkpoints=[CheckpointResult(epoch=steps, step=steps, metrics={"psnr": float(score[r])}, state_dict=sd)],
            seed=init_seed, metrics={"psnr": float(score[r])},
            extra={"label": int(d.target[img]), "image": img, "fit": j, "regime": regime, "coord_order": "yx"},
            source="analyses/inr",
        ))
    with ZooWriter(path, info) as w:
        for s in range(0, len(members), 512):
            w.add_members(members[s:s + 512])
    return {"reused": False, "fit_seconds": round(fit_time, 1), "store_seconds": round(time.time() - t1, 1),
            "psnr_mean": float(score.mean()), "psnr_min": float(score.min()), "networks": len(rows), **settings}


def load_fitted(path: Path, name: str) -> INRSet:
    """An :class:`INRSet` from a zoo written by :func:`build_fitted_zoo`."""
    import zoo as zoo_pkg
    from sklearn.datasets import load_digits

    z = zoo_pkg.Zoo(path)
    members = z.members()
    params = {k: v.float() for k, v in z.stacked().items()}
    imgs = torch.tensor(load_digits().images, dtype=torch.float32) / 16.0
    ids = np.array([m.extra["image"] for m in members])
    return INRSet(name, params, np.array([m.extra["label"] for m in members]), ids, imgs[ids], "yx")


def load_imported(path: Path, name: str, size: int) -> INRSet:
    """An :class:`INRSet` from an imported DWSNets / NFN zoo; the images are
    the INRs' own renderings (``size`` x ``size``, each member's convention)."""
    import zoo as zoo_pkg
    from zoo.loaders.inr import inr_grid, member_coord_order

    z = zoo_pkg.Zoo(path)
    members = z.members()
    bad = [m.member_id for m in members if m.model_kwargs.get("hidden") != [32, 32]
           or m.model_kwargs.get("in_features") != 2 or m.model_kwargs.get("out_features") != 1]
    if bad:
        raise SystemExit(f"error: {path}: the study reads 2 -> 32 -> 32 -> 1 SIRENs; member {bad[0]} is not one")
    orders = {member_coord_order(m) for m in members}
    if len(orders) != 1:
        raise SystemExit(f"error: {path}: members with different coordinate conventions {sorted(orders)}")
    order = orders.pop()
    params = {k: v.float() for k, v in z.stacked().items()}
    ws, bs = split_params(params)
    with torch.no_grad():
        images = torch.cat([siren_apply([w[s:s + 512] for w in ws], [b[s:s + 512] for b in bs],
                                        inr_grid(size, size, order)) for s in range(0, len(members), 512)])
    labels = np.array([m.extra.get("label", -1) for m in members])
    if (labels < 0).any():
        raise SystemExit(f"error: {path}: some members have no label (extra['label'])")
    split = np.array([m.extra.get("split", "") for m in members])
    return INRSet(name, params, labels, np.arange(len(members)), images.reshape(-1, size, size).clamp(0, 1), order,
                  split if all(split) else None)


def split_set(s: INRSet, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train / val / test row indices: the published split when there is one,
    else 60 / 15 / 25 % of the *groups* (images)."""
    if s.split is not None:
        parts = tuple(np.flatnonzero(s.split == p) for p in ("train", "val", "test"))
        if all(len(p) for p in parts):
            return parts
    return group_split(s.groups, (0.6, 0.15, 0.25), seed=seed)


# --------------------------------------------------------------------------- classifiers


class NFNPackage(MetaNetwork):
    """The ``nfn`` package's invariant classifier (Zhou et al. 2023):
    ``num_layers`` NP (``NPLinear``, with IO embedding) or HNP (``HNPLinear``)
    layers with ReLU, ``NPPool``/``HNPPool``, then an MLP. Input tensors are
    divided by their RMS over the training networks (a scalar per tensor keeps
    the layers equivariant)."""

    def __init__(self, layer_sizes: Sequence[int], kind: str = "np", out_dim: int = 10, hidden: int = 32,
                 num_layers: int = 2, mlp_hidden: int = 128) -> None:
        super().__init__()
        from nfn.common import WeightSpaceFeatures, network_spec_from_wsfeat
        from nfn.layers import HNPLinear, HNPPool, NPLinear, NPPool, TupleOp

        self.hparams = dict(layer_sizes=list(layer_sizes), kind=kind, out_dim=out_dim, hidden=hidden,
                            num_layers=num_layers, mlp_hidden=mlp_hidden)
        sizes = list(layer_sizes)
        dummy = WeightSpaceFeatures([torch.zeros(1, 1, o, i) for i, o in zip(sizes[:-1], sizes[1:])],
                                    [torch.zeros(1, 1, o) for o in sizes[1:]])
        spec = network_spec_from_wsfeat(dummy)
        chans = [1] + [hidden] * num_layers
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers.append(NPLinear(spec, a, b, io_embed=True) if kind == "np" else HNPLinear(spec, a, b))
            layers.append(TupleOp(nn.ReLU()))
        pool = NPPool if kind == "np" else HNPPool
        layers.append(pool(spec))
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(pool.get_num_outs(spec) * chans[-1], mlp_hidden), nn.ReLU(),
                                  nn.Linear(mlp_hidden, out_dim))
        self.register_buffer("scale", torch.ones(2 * (len(sizes) - 1)))
        self._wsf = WeightSpaceFeatures

    def _tensors(self, graphs):
        per = [mlp_layers(g) for g in graphs]
        L = len(per[0][0])
        ws = [torch.stack([p[0][i] for p in per]).unsqueeze(1) for i in range(L)]
        bs = [torch.stack([p[1][i] for p in per]).unsqueeze(1) for i in range(L)]
        return ws, bs

    def collate(self, graphs, node_extra=None):
        ws, bs = self._tensors(graphs)
        return ws, bs

    def fit_normalization(self, graphs):
        ws, bs = self._tensors(graphs)
        s = torch.stack([t.pow(2).mean().sqrt() for t in ws + bs])
        self.scale.copy_(torch.where(s > 1e-8, s, torch.ones_like(s)))
        return self

    def forward(self, batch):
        ws, bs = batch
        L = len(ws)
        feat = self._wsf([w / self.scale[i] for i, w in enumerate(ws)], [b / self.scale[L + i] for i, b in enumerate(bs)])
        return self.head(self.body(feat))


_GRAPHS: dict[int, list] = {}


def graphs_of(s: INRSet, template) -> list:
    """The :class:`ParameterGraph` of every network (built once per set)."""
    if id(s) not in _GRAPHS:
        _GRAPHS[id(s)] = [template.graph(sd) for sd in s.state_dicts()]
    return _GRAPHS[id(s)]


N_PROBES = 32


def probe_extras(s: INRSet, template, graphs: Sequence, train_rows: np.ndarray, seed: int) -> list[Tensor]:
    """Neural-Graphs probe features (:func:`weightspace.nn.probe_features`):
    every neuron's pre-activation at ``N_PROBES`` fixed random coordinates
    in ``[-1, 1]^2`` (the output node's row is the image at those points),
    divided by one RMS per block (node layer) over the training networks, a
    scalar per block, so the features stay equivariant."""
    gen = torch.Generator().manual_seed(seed)
    probes = torch.rand(N_PROBES, 2, generator=gen) * 2 - 1
    module = create_model("siren", **SIREN)
    feats = [probe_features(g, module, probes) for g in graphs]
    layer = template.node_layer
    tr = torch.stack([feats[i] for i in train_rows])  # [n, N, P]
    scale = torch.ones(int(layer.max()) + 1)
    for b in range(len(scale)):
        rms = tr[:, layer == b].pow(2).mean().sqrt()
        scale[b] = rms if rms > 1e-8 else 1.0
    return [f / scale[layer][:, None] for f in feats]


def accuracy(t: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.asarray(t) == np.asarray(p)))


def classify(s: INRSet, method: str, parts, *, epochs: int, seed: int, log, batch_size: int = 16,
             raw: INRSet | None = None) -> np.ndarray:
    """Predicted labels of the test rows. ``raw``: the uncentred networks of
    a centred ``s`` (probe features need networks that compute the image)."""
    tr, va, te = parts
    y = s.labels
    sds = s.state_dicts()
    if method == "gbm":
        from sklearn.ensemble import HistGradientBoostingClassifier

        from threadpoolctl import threadpool_limits

        X, _ = weight_features(sds)
        with threadpool_limits(1):  # OpenMP threads on a shared machine are much slower than one
            clf = HistGradientBoostingClassifier(max_iter=100, random_state=seed).fit(X[np.r_[tr, va]], y[np.r_[tr, va]])
            return clf.predict(X[te])
    if method == "pixels":
        from sklearn.linear_model import LogisticRegression

        X = s.images.reshape(len(s), -1).numpy()
        clf = LogisticRegression(max_iter=2000).fit(X[np.r_[tr, va]], y[np.r_[tr, va]])
        return clf.predict(X[te])
    template = ArchSpec.of("siren", **SIREN).template()
    graphs = graphs_of(s, template)
    data = [(g, int(lab)) for g, lab in zip(graphs, y)]
    if method == "gmn_probe":
        src = raw if raw is not None else s
        data = [(g, lab, x) for (g, lab), x in zip(data, probe_extras(src, template, graphs_of(src, template), tr, seed))]
    torch.manual_seed(seed)
    if method == "gmn":
        model: MetaNetwork = GMN(out_dim=10)
    elif method == "gmn_rn":
        model = GMN(out_dim=10, readout_norm="batch")
    elif method == "gmn_probe":
        model = GMN(out_dim=10, readout_norm="batch", extra_dim=N_PROBES)
    elif method == "statnn":
        model = StatNN.for_template(template, out_dim=10)
    elif method in ("flatmlp", "flatmlp_aug"):
        model = FlatMLP.for_template(template, out_dim=10)
    elif method == "nfn_ws":
        model = NFN.for_template(template, out_dim=10)
    elif method in ("nfn_np", "nfn_hnp"):
        model = NFNPackage([2, 32, 32, 1], kind=method.split("_")[1], out_dim=10)
    else:
        raise ValueError(method)
    # patience: a GMN sits on a plateau (near-constant output) for its first
    # ~100 Adam steps before its loss moves; a short patience stops it there
    cfg = TrainConfig(task="classification", epochs=epochs, batch_size=batch_size, lr=1e-3,
                      patience=max(10, epochs // 3), seed=seed, augment=method == "flatmlp_aug")
    res = fit(model, [data[i] for i in tr], [data[i] for i in va], cfg)
    curve = " ".join(f"{h['train_loss']:.2f}/{h.get('val_loss', float('nan')):.2f}" for h in res.history)
    log(f"    {method}: best epoch {res.best_epoch + 1}/{len(res.history)}; train/val loss {curve}")
    return predict_metanetwork(res.model, [data[i] for i in te]).argmax(1).numpy()


# --------------------------------------------------------------------------- editing


def dilate(images: Tensor) -> Tensor:
    """Grey dilation with a 3 x 3 cross (``scipy.ndimage.grey_dilation``; a
    full 3 x 3 window fills most of an 8 x 8 digit)."""
    from scipy.ndimage import grey_dilation

    cross = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)
    return torch.tensor(np.stack([grey_dilation(im, footprint=cross) for im in images.numpy()]), dtype=torch.float32)


class NPEditor(nn.Module):
    """NFN-style editor: NP layers (``nfn`` package) output a weight update,
    ``new = w + gain * rms(w) * delta`` per tensor (``gain`` starts at 0: the
    identity)."""

    def __init__(self, hidden: int = 32, num_layers: int = 3) -> None:
        super().__init__()
        from nfn.common import WeightSpaceFeatures, network_spec_from_wsfeat
        from nfn.layers import NPLinear, TupleOp

        sizes = [2, 32, 32, 1]
        dummy = WeightSpaceFeatures([torch.zeros(1, 1, o, i) for i, o in zip(sizes[:-1], sizes[1:])],
                                    [torch.zeros(1, 1, o) for o in sizes[1:]])
        spec = network_spec_from_wsfeat(dummy)
        chans = [1] + [hidden] * (num_layers - 1) + [1]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])):
            layers.append(NPLinear(spec, a, b, io_embed=True))
            if i < len(chans) - 2:
                layers.append(TupleOp(nn.ReLU()))
        self.body = nn.Sequential(*layers)
        self.gain = nn.Parameter(torch.zeros(6))
        self.register_buffer("scale", torch.ones(6))
        self._wsf = WeightSpaceFeatures

    def forward(self, ws: list[Tensor], bs: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        feat = self._wsf([(w / self.scale[i]).unsqueeze(1) for i, w in enumerate(ws)],
                         [(b / self.scale[3 + i]).unsqueeze(1) for i, b in enumerate(bs)])
        d = self.body(feat)
        new_w = [w + self.gain[i] * self.scale[i] * d.weights[i][:, 0] for i, w in enumerate(ws)]
        new_b = [b + self.gain[3 + i] * self.scale[3 + i] * d.biases[i][:, 0] for i, b in enumerate(bs)]
        return new_w, new_b


class FlatEditor(nn.Module):
    """Flat MLP editor: standardized flattened weights -> weight update (last
    layer zero-initialised: starts as the identity)."""

    def __init__(self, hidden: int = 256) -> None:
        super().__init__()
        n = sum(int(np.prod(s)) for s in ((32, 2), (32,), (32, 32), (32,), (1, 32), (1,)))
        self.net = nn.Sequential(nn.Linear(n, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, n))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("std", torch.ones(n))

    def forward(self, ws, bs):
        B = ws[0].shape[0]
        flat = torch.cat([t.reshape(B, -1) for pair in zip(ws, bs) for t in pair], 1)
        new = flat + self.std * self.net((flat - self.mean) / self.std)
        out, i = [], 0
        for t in [t for pair in zip(ws, bs) for t in pair]:
            k = t[0].numel()
            out.append(new[:, i:i + k].reshape(t.shape))
            i += k
        return out[0::2], out[1::2]


class GMNEditor(nn.Module):
    """GMN editor: :class:`weightspace.nn.GMN` with a per-edge readout
    predicting a weight update. In a :class:`~weightspace.graph.ParameterGraph`
    every value lives on one edge (a bias is the edge from its layer's module
    node), so one output per edge covers every weight and bias; the library
    maps it back to tensors (:meth:`GraphBatch.write_back`,
    :meth:`ParameterGraph.to_state_dict`).

    ``new = w + s * delta``, ``delta`` the edge readout written back as
    tensors; its last layer starts at zero, so the editor starts as the
    identity. ``scale`` holds one RMS per tensor over the training networks
    (a scalar per tensor keeps the edit equivariant). ``input_scale``: the
    GMN reads each tensor divided by its ``scale`` (else the raw weights;
    the GMN's own per-edge-type scale would put the SIREN's first layer, RMS
    ~0.3, and its hidden layer, ~0.02, on one scale). ``update_scale``:
    ``s`` is the tensor's ``scale`` (else 1). The defaults were chosen on
    the validation images (RESULTS.md): without ``input_scale`` the editor
    did not learn on the shared-init zoo; ``update_scale`` was worse there
    and equal on the independent one."""

    def __init__(self, hidden: int = 32, num_layers: int = 3, *, input_scale: bool = True,
                 update_scale: bool = False) -> None:
        super().__init__()
        self.template = ArchSpec.of("siren", **SIREN).template()
        self.gmn = GMN(out_dim=0, hidden=hidden, num_layers=num_layers, edge_dim=1, edge_out=1)
        with torch.no_grad():
            self.gmn.edge_head[-1].weight.zero_()
            self.gmn.edge_head[-1].bias.zero_()
        self.register_buffer("scale", torch.ones(len(SIREN_KEYS)))
        self.input_scale, self.update_scale = bool(input_scale), bool(update_scale)

    def forward(self, ws: list[Tensor], bs: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        tensors = [t for pair in zip(ws, bs) for t in pair]  # SIREN_KEYS order
        div = self.scale if self.input_scale else torch.ones_like(self.scale)
        graphs = [self.template.graph({k: t[i] / div[j] for j, (k, t) in enumerate(zip(SIREN_KEYS, tensors))})
                  for i in range(tensors[0].shape[0])]
        out = self.gmn(self.gmn.collate(graphs))
        delta = [g.to_state_dict() for g in out.batch.write_back(out.edge)]
        mul = self.scale if self.update_scale else torch.ones_like(self.scale)
        new = [t + mul[j] * torch.stack([d[k] for d in delta]) for j, (k, t) in enumerate(zip(SIREN_KEYS, tensors))]
        return new[0::2], new[1::2]


def edit(s: INRSet, parts, *, epochs: int, seed: int, log) -> tuple[dict, dict[str, Tensor]]:
    """Train the editors on the train rows; the test MSE per editor (CIs by
    group) and the test renderings of every editor."""
    from zoo.loaders.inr import inr_grid

    tr, va, te = parts
    H = s.images.shape[-1]
    coords = inr_grid(H, H, s.coord_order)
    target = dilate(s.images).reshape(len(s), -1)
    ws, bs = split_params(s.params)
    results, renders = {}, {}

    def render(model, idx):
        w, b = [t[idx] for t in ws], [t[idx] for t in bs]
        if model is not None:
            w, b = model(w, b)
        return siren_apply(w, b, coords)

    def test_mse(model) -> tuple[np.ndarray, Tensor]:
        with torch.no_grad():
            out = torch.cat([render(model, te[i:i + 256]) for i in range(0, len(te), 256)])
        return ((out - target[te]) ** 2).mean(1).numpy(), out

    for name in EDITORS:
        t0 = time.time()
        model = None
        if name != "identity":
            torch.manual_seed(seed)
            model = {"nfn_np": NPEditor, "gmn": GMNEditor, "flat": FlatEditor}[name]()
            with torch.no_grad():
                if name in ("nfn_np", "gmn"):  # NPEditor: weights then biases; GMNEditor: SIREN_KEYS order
                    order = ws + bs if name == "nfn_np" else [t for pair in zip(ws, bs) for t in pair]
                    model.scale.copy_(torch.stack([t[tr].pow(2).mean().sqrt() for t in order]))
                else:
                    flat = torch.cat([t[tr].reshape(len(tr), -1) for pair in zip(ws, bs) for t in pair], 1)
                    model.mean.copy_(flat.mean(0))
                    model.std.copy_(flat.std(0).clamp(min=1e-6))
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            gen = torch.Generator().manual_seed(seed)
            best, curve = (math.inf, None, 0), []
            for ep in range(epochs):
                model.train()
                order = torch.as_tensor(tr)[torch.randperm(len(tr), generator=gen)]
                for i in range(0, len(order), 64):
                    idx = order[i:i + 64]
                    loss = ((render(model, idx) - target[idx]) ** 2).mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                with torch.no_grad():
                    vl = float(((render(model, torch.as_tensor(va)) - target[va]) ** 2).mean())
                curve.append(vl)
                if vl < best[0]:
                    best = (vl, {k: v.detach().clone() for k, v in model.state_dict().items()}, ep)
            model.load_state_dict(best[1])
            model.eval()
            log(f"    {name}: best epoch {best[2] + 1}/{epochs}; val MSE " + " ".join(f"{v:.4f}" for v in curve))
        per, out = test_mse(model)
        ci = bootstrap_ci(np.zeros_like(per), per, lambda t, p: float(np.mean(p)), groups=s.groups[te], seed=seed)
        results[name] = {"mse": ci.value, "low": ci.low, "high": ci.high, "seconds": round(time.time() - t0, 1),
                         "per_network": [float(v) for v in per]}
        if model is not None:
            results[name].update(best_epoch=best[2] + 1, val_curve=curve)
        renders[name] = out
        log(f"    edit {name}: test MSE {ci.value:.4f} [{ci.low:.4f}, {ci.high:.4f}] ({time.time() - t0:.0f} s)")
    # paired: each editor minus the NFN-NP editor on the same test networks (CI resampling images)
    if "nfn_np" in results:
        ref = np.array(results["nfn_np"]["per_network"])
        for name, r in results.items():
            if name != "nfn_np":
                d = bootstrap_ci(ref, np.array(r["per_network"]), lambda a, b: float(np.mean(b - a)),
                                 groups=s.groups[te], seed=seed)
                r["minus_nfn_np"] = {"value": d.value, "low": d.low, "high": d.high}
    renders["original"] = s.images[te].reshape(len(te), -1)
    renders["target"] = target[te]
    return results, renders


# --------------------------------------------------------------------------- plots and tables


def plot_accuracy(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(results)
    methods = [m for m in CLASSIFIERS if any(m in results[s]["classification"] for s in sets)]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(methods) * len(sets) / 1.5), 4))
    width = 0.8 / len(sets)
    for j, sname in enumerate(sets):
        c = results[sname]["classification"]
        xs = [i + j * width for i, m in enumerate(methods) if m in c]
        vals = [c[m]["accuracy"] for m in methods if m in c]
        err = np.array([[c[m]["accuracy"] - c[m]["low"], c[m]["high"] - c[m]["accuracy"]] for m in methods if m in c]).T
        ax.bar(xs, vals, width, yerr=err, capsize=3, label=sname)
    ax.axhline(0.1, color="grey", lw=0.8, ls="--", label="chance")
    ax.set_xticks([i + width * (len(sets) - 1) / 2 for i in range(len(methods))])
    ax.set_xticklabels([LABELS[m] for m in methods], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy (95 % bootstrap CI)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_edits(renders: dict[str, Tensor], size: int, path: Path, n: int = 6) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ["original", "target", *[e for e in EDITORS if e in renders]]
    titles = {"original": "image", "target": "dilated (target)", **{e: EDIT_LABELS[e].split(" (")[0] for e in EDITORS}}
    n = min(n, renders["original"].shape[0])
    fig, axes = plt.subplots(n, len(cols), figsize=(1.6 * len(cols), 1.6 * n), squeeze=False)
    for r in range(n):
        for c, name in enumerate(cols):
            ax = axes[r][c]
            ax.imshow(renders[name][r].reshape(size, size).clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[name], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(results: dict) -> str:
    lines = []
    for sname, r in results.items():
        lines.append(f"### {sname}: {r['networks']} networks ({r['images']} images), "
                     f"test {r['test_networks']} networks / {r['test_groups']} images\n")
        lines.append("| classifier | accuracy | 95 % CI | seconds |\n|---|---|---|---|")
        for m in CLASSIFIERS:
            if m in r["classification"]:
                c = r["classification"][m]
                lines.append(f"| {LABELS[m]} | {c['accuracy']:.3f} | [{c['low']:.3f}, {c['high']:.3f}] | {c['seconds']} |")
        if r.get("editing"):
            lines.append("\n| editor (dilation) | test MSE | 95 % CI | minus NFN-NP (paired 95 % CI) | seconds |"
                         "\n|---|---|---|---|---|")
            for e, c in r["editing"].items():
                d = c.get("minus_nfn_np")
                paired = f"{d['value']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]" if d else "—"
                lines.append(f"| {EDIT_LABELS[e]} | {c['mse']:.4f} | [{c['low']:.4f}, {c['high']:.4f}] | {paired} "
                             f"| {c['seconds']} |")
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def merge_results(paths: Sequence[Path]) -> dict:
    """Merge the ``results.json`` of runs that split one study by method or
    task (same sets, other classifiers / editing): ``{"meta": [...], "results"}``."""
    metas, merged = [], {}
    for p in paths:
        data = json.loads((Path(p) / "results.json").read_text())
        metas.append(data["meta"])
        for name, r in data["results"].items():
            cur = merged.setdefault(name, {**r, "classification": {}})
            for key in ("networks", "images", "test_networks", "test_groups"):
                if cur[key] != r[key]:
                    raise SystemExit(f"error: {p}: set {name!r} has {key} {r[key]}, another run {cur[key]}")
            cur["classification"].update(r["classification"])
            if r.get("editing"):
                cur["editing"] = r["editing"]
    return {"meta": metas, "results": merged}


def run_set(s: INRSet, *, methods, epochs: int, edit_epochs: int, seed: int, out: Path, log,
            center: bool = False, batch_size: int = 16) -> dict:
    parts = split_set(s, seed)
    tr, va, te = parts
    raw = s
    if center:
        # subtract the training networks' mean, entry by entry (DWSNets-style
        # per-entry statistics): with a shared init this removes the init, which
        # otherwise swamps the small per-image changes in every per-tensor scale
        mean = {k: v[tr].mean(0) for k, v in s.params.items()}
        s = INRSet(f"{s.name}_centred", {k: v - mean[k] for k, v in s.params.items()}, s.labels, s.groups, s.images,
                   s.coord_order, s.split)
        edit_epochs = 0  # the editors render the networks: they need the uncentred weights
    log(f"[{s.name}] {len(s)} networks; train/val/test {len(tr)}/{len(va)}/{len(te)}")
    res: dict[str, Any] = {"networks": len(s), "images": int(len(np.unique(s.groups))), "train": len(tr),
                           "val": len(va), "test_networks": len(te), "test_groups": int(len(np.unique(s.groups[te]))),
                           "coord_order": s.coord_order, "classification": {}}
    for m in methods:
        t0 = time.time()
        pred = classify(s, m, parts, epochs=epochs, seed=seed, log=log, batch_size=batch_size, raw=raw)
        ci = bootstrap_ci(s.labels[te], pred, accuracy, groups=s.groups[te], seed=seed)
        res["classification"][m] = {"accuracy": ci.value, "low": ci.low, "high": ci.high,
                                    "seconds": round(time.time() - t0, 1)}
        log(f"  {LABELS[m]}: {ci.value:.3f} [{ci.low:.3f}, {ci.high:.3f}] ({time.time() - t0:.0f} s)")
    if edit_epochs > 0:
        res["editing"], renders = edit(s, parts, epochs=edit_epochs, seed=seed, log=log)
        plot_edits(renders, s.images.shape[-1], out / f"edits_{s.name}.png")
    return res


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/inr"))
    ap.add_argument("--work", type=Path, default=None, help="where the zoos are stored (default: OUT/zoos)")
    ap.add_argument("--small", action="store_true", help="quick run: 200 images, 2 fits each, 8 epochs, 4 editor epochs")
    ap.add_argument("--images", type=int, default=None, help="first N sklearn digits images (default all 1797)")
    ap.add_argument("--study-images", type=int, default=None,
                    help="classify / edit only the networks of the first N images of the stored zoo")
    ap.add_argument("--seeds", type=int, default=None, help="fits per image in the independent regime (default 5)")
    ap.add_argument("--steps", type=int, default=100, help="Adam steps per fit")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--chunk", type=int, default=256, help="networks fitted at once")
    ap.add_argument("--epochs", type=int, default=None, help="classifier epochs (default 40, --small 8)")
    ap.add_argument("--batch-size", type=int, default=16, help="metanetwork batch size (every classifier)")
    ap.add_argument("--edit-epochs", type=int, default=None, help="editor epochs (default 30, --small 4; 0: no editing)")
    ap.add_argument("--methods", default=",".join(CLASSIFIERS))
    ap.add_argument("--regimes", default="independent,shared")
    ap.add_argument("--skip-fit", action="store_true", help="only the imported sets")
    ap.add_argument("--dwsnets-dir", type=Path, default=None, help="a DWSNets INR dataset directory")
    ap.add_argument("--dwsnets-splits", default=None, help="its splits file (e.g. mnist_splits.json)")
    ap.add_argument("--nfn-dir", type=Path, default=None, help="an NFN SIREN directory or tar archive")
    ap.add_argument("--nfn-prefix", default=None, help="e.g. randinit_test")
    ap.add_argument("--limit", type=int, default=None, help="read at most this many imported INRs")
    ap.add_argument("--render-size", type=int, default=28, help="image size of imported INRs")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (on a loaded 2-core machine 2 threads fitted 6x slower than 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--center", action="store_true",
                    help="classify weights minus the training networks' mean (entry by entry); no editing")
    ap.add_argument("--merge", type=Path, nargs="+", default=None,
                    help="only merge these runs' results.json into one table / plot in --out")
    args = ap.parse_args(argv)
    if args.merge:
        merged = merge_results(args.merge)
        args.out.mkdir(parents=True, exist_ok=True)
        plot_accuracy(merged["results"], args.out / "accuracy.png")
        (args.out / "table.md").write_text(table(merged["results"]))
        (args.out / "results.json").write_text(json.dumps(merged, indent=2))
        print(table(merged["results"]))
        return 0

    torch.set_num_threads(args.threads)
    n_images = args.images or (200 if args.small else 1797)
    seeds = args.seeds or (2 if args.small else 5)
    epochs = args.epochs or (8 if args.small else 40)
    edit_epochs = args.edit_epochs if args.edit_epochs is not None else (4 if args.small else 30)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in CLASSIFIERS]
    if unknown:
        raise SystemExit(f"error: unknown method(s) {unknown}; choose from {', '.join(CLASSIFIERS)}")
    regimes = [r.strip() for r in args.regimes.split(",") if r.strip()]
    if any(r not in ("independent", "shared") for r in regimes):
        raise SystemExit("error: --regimes takes independent and/or shared")
    out = args.out
    work = args.work or out / "zoos"
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t_start:7.1f}s] {msg}", flush=True)

    meta = {"study_images": args.study_images, "argv": list(sys.argv[1:] if argv is None else argv), "python": platform.python_version(),
            "torch": torch.__version__, "threads": args.threads, "loadavg_start": list(os.getloadavg()),
            "images": n_images, "seeds": seeds, "steps": args.steps, "epochs": epochs, "edit_epochs": edit_epochs,
            "batch_size": args.batch_size}
    sets: list[INRSet] = []
    builds = {}
    if not args.skip_fit:
        for regime in regimes:
            log(f"fitting the {regime} zoo")
            builds[regime] = build_fitted_zoo(work / regime, regime=regime, image_ids=range(n_images), seeds=seeds,
                                              steps=args.steps, lr=args.lr, chunk=args.chunk, seed=args.seed, log=log)
            log(f"  {builds[regime]}")
            s = load_fitted(work / regime, regime)
            if args.study_images is not None:
                s = s.subset(np.flatnonzero(s.groups < args.study_images))
            sets.append(s)
    for style, src in (("dwsnets", args.dwsnets_dir), ("nfn", args.nfn_dir)):
        if src is None:
            continue
        from zoo.loaders.inr import import_inr_zoo

        opts: dict[str, Any] = {"limit": args.limit} if args.limit else {}
        if style == "dwsnets" and args.dwsnets_splits:
            opts["splits_file"] = args.dwsnets_splits
        if style == "nfn" and args.nfn_prefix:
            opts["prefix"] = args.nfn_prefix
        log(f"importing {src} ({style})")
        import_inr_zoo(src, work / f"imported_{style}", style=style, progress=False, **opts)
        sets.append(load_imported(work / f"imported_{style}", style, args.render_size))
    if not sets:
        raise SystemExit("error: nothing to study (--skip-fit without --dwsnets-dir / --nfn-dir)")
    results = {}
    for s in sets:
        name = f"{s.name}_centred" if args.center else s.name
        results[name] = run_set(s, methods=methods, epochs=epochs, edit_epochs=edit_epochs, seed=args.seed,
                                out=out, log=log, center=args.center, batch_size=args.batch_size)
        if s.name in builds:
            results[name]["build"] = builds[s.name]
    meta["loadavg_end"] = list(os.getloadavg())
    meta["wall_seconds"] = round(time.time() - t_start, 1)
    plot_accuracy(results, out / "accuracy.png")
    (out / "table.md").write_text(table(results))
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    log(f"done in {meta['wall_seconds']} s; {out / 'table.md'}")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
