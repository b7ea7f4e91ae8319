"""Training and evaluating a :class:`~weightspace.generate.hypernet.GraphHyperNetwork`.

* :func:`train_hypernet` samples a few architectures per step, predicts
  their weights from fresh draws and backpropagates the task loss through
  them with ``torch.func.functional_call``.
* :func:`compare_inits` measures test accuracy after ``k`` SGD steps from
  the hypernetwork's prediction, PyTorch's default init and an untrained
  hypernetwork (same per-layer scaling).
* :func:`default_archs`: the training / held-out architectures for 8x8
  digits used by ``weightspace generate hypernet-train`` and the analyses.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from weightspace.generate._common import ArchSpec, AsDictMixin, TaskData, as_arch, fit_steps
from weightspace.generate.hypernet import GraphHyperNetwork

__all__ = ["HypernetHistory", "train_hypernet", "compare_inits", "default_archs"]


def default_archs(small: bool = False) -> tuple[list[ArchSpec], list[ArchSpec]]:
    """``(train, held-out)`` architecture lists for 8x8 digits.

    Held-out ones differ from every training one in width, depth, kernel
    size or family: MLP widths 96/48 and depth 4, a 4-layer CNN of width 24,
    a 1-d CNN with kernel 5 (training sees 3 and 7), ResNet-20 at width 2
    (training sees width 1) and the depthwise/grouped ``mobilenet_tiny``
    (family never seen).
    """
    A = ArchSpec.of
    train = [
        A("mlp", hidden=[32]), A("mlp", hidden=[128]), A("mlp", hidden=[64, 64]), A("mlp", hidden=[32, 32]),
        A("mlp", hidden=[128, 64]), A("mlp", hidden=[32, 32, 32]),
        A("cnn_small", width=8, depth=2), A("cnn_small", width=16, depth=3), A("cnn_small", width=32, depth=2),
        A("cnn_small", width=16, depth=2), A("cnn_small", width=32, depth=3),
        A("cnn1d", width=16, depth=2, kernel_size=3, length=64), A("cnn1d", width=32, depth=3, kernel_size=7, length=64),
        A("cnn1d", width=16, depth=3, kernel_size=7, length=64), A("cnn1d", width=32, depth=2, kernel_size=3, length=64),
        A("resnet20", width=1, in_channels=1, image_size=8),
    ]
    held = [
        A("mlp", hidden=[96, 48]), A("mlp", hidden=[64, 64, 64, 64]),
        A("cnn_small", width=24, depth=4), A("cnn1d", width=24, depth=3, kernel_size=5, length=64),
        A("resnet20", width=2, in_channels=1, image_size=8), A("mobilenet_tiny"),
    ]
    if small:
        train = [a for a in train if a.name != "resnet20"]
        held = [a for a in held if a.name != "resnet20"]
    return train, held


@dataclass
class HypernetHistory(AsDictMixin):
    """Training record: per step the mean task loss and accuracy on the batch."""

    loss: list[float]
    acc: list[float]
    archs: list[str]


def train_hypernet(
    archs: Sequence[ArchSpec | str],
    data: TaskData,
    *,
    hypernet: GraphHyperNetwork | None = None,
    steps: int = 1000,
    archs_per_step: int = 4,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 1e-5,
    grad_clip: float = 5.0,
    num_probes: int = 128,
    seed: int = 0,
    progress: bool = False,
    callback: Callable[[int, float], None] | None = None,
    **hparams: Any,
) -> tuple[GraphHyperNetwork, HypernetHistory]:
    """Train a :class:`GraphHyperNetwork` on ``archs`` by backpropagating the
    task loss through the predicted weights.

    Each step draws ``archs_per_step`` architectures and one minibatch of
    ``batch_size`` examples per architecture, predicts all weights with fresh
    draws, runs each network with ``torch.func.functional_call`` (train
    mode: BatchNorm uses batch statistics) and takes an Adam step on the mean
    cross-entropy.

    Args:
        archs: training architectures (inputs must fit ``data``; see
            :meth:`ArchSpec.view`).
        data: the task.
        hypernet: start from a copy of this one (default: a new
            ``GraphHyperNetwork(**hparams)`` initialised under ``seed``).
        lr: Adam learning rate (3e-3: a few hundred steps give clearly
            better-than-chance networks without any SGD on them).
        num_probes: for a new hypernetwork, the number of training inputs
            (drawn with ``seed``, no labels) used as probe inputs; 0 = none.
            The readout is learned from the hidden units' activations on
            them, so more probes help (128 learned markedly faster than 32
            at about the same cost per step).
        progress: tqdm bar.
        callback: called with ``(step, loss)`` after every step.

    Returns:
        ``(trained hypernetwork (eval mode), HypernetHistory)``.
    """
    from torch.func import functional_call
    from tqdm.auto import tqdm

    specs = [as_arch(a) for a in archs]
    if not specs:
        raise ValueError("train_hypernet needs at least one architecture")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if hypernet is not None:
            hn = copy.deepcopy(hypernet)
        else:
            probes = None
            if num_probes > 0:
                pick = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(int(seed)))
                probes = data.x_train[pick[:num_probes]]
            hn = GraphHyperNetwork(**hparams, probes=probes)
    hn.train()
    templates = [a.template() for a in specs]
    for t in templates:
        hn.layout(t)  # clear error for unsupported architectures before training starts
    modules = [a.module(seed=0).train() for a in specs]
    xs = [a.view(data.x_train) for a in specs]
    opt = torch.optim.Adam(hn.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(int(seed) + 1)
    hist = HypernetHistory([], [], [a.label for a in specs])
    n = len(data.y_train)
    for step in tqdm(range(int(steps)), disable=not progress, desc="hypernet"):
        pick = torch.randperm(len(specs), generator=gen)[: min(archs_per_step, len(specs))].tolist()
        values = hn([specs[i] for i in pick], generator=gen)
        losses, correct = [], 0
        for i, v in zip(pick, values):
            sd = hn.write_back(templates[i], v)
            names = dict(modules[i].named_parameters())
            sd = {k: (t if k in names else t.detach()) for k, t in sd.items()}
            idx = torch.randint(0, n, (batch_size,), generator=gen)
            out = functional_call(modules[i], sd, (xs[i][idx],))
            losses.append(F.cross_entropy(out, data.y_train[idx]))
            correct += int((out.argmax(1) == data.y_train[idx]).sum())
        loss = torch.stack(losses).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(hn.parameters(), grad_clip)
        opt.step()
        hist.loss.append(float(loss.detach()))
        hist.acc.append(correct / (batch_size * len(pick)))
        if callback is not None:
            callback(step, float(loss.detach()))
    return hn.eval(), hist


def compare_inits(
    hypernet: GraphHyperNetwork,
    archs: Sequence[ArchSpec | str],
    data: TaskData,
    *,
    steps: Sequence[int] = (0, 1, 5, 50),
    seeds: Sequence[int] = (0, 1, 2),
    lr: float = 0.05,
    momentum: float = 0.9,
    batch_size: int = 64,
    baseline: GraphHyperNetwork | None = None,
    progress: bool = False,
) -> list[dict]:
    """Test accuracy after ``k`` SGD steps from three initialisations.

    * ``hypernet``: weights predicted by ``hypernet`` (draw seed ``s``);
    * ``default``: PyTorch's default init (``zoo.create_model(seed=s)``);
    * ``random``: weights predicted by ``baseline``, an *untrained* hypernetwork
      of the same configuration, i.e. random weights with exactly the same
      per-layer scaling (default: a fresh one initialised with seed 12345).

    Every run uses the same SGD settings and minibatch order (seed ``s``).

    Returns:
        rows ``{"arch", "init", "seed", "acc": {k: accuracy}}``.
    """
    from tqdm.auto import tqdm

    if baseline is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(12345)
            baseline = GraphHyperNetwork(**hypernet.config(), probes=hypernet.probes).eval()
    rows = []
    jobs = [(as_arch(a), s) for a in archs for s in seeds]
    for a, s in tqdm(jobs, disable=not progress, desc="compare inits"):
        inits = {
            "hypernet": hypernet.predict(a, seed=s),
            "default": a.module(seed=s).state_dict(),
            "random": baseline.predict(a, seed=s),
        }
        for name, sd in inits.items():
            acc = fit_steps(a, sd, data, steps=steps, lr=lr, momentum=momentum, batch_size=batch_size, seed=s)
            rows.append({"arch": a.label, "init": name, "seed": int(s), "acc": {int(k): v for k, v in acc.items()}})
    return rows
