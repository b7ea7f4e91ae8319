"""A G.pt-style conditional generator of checkpoints (Peebles et al. 2022):
flow matching over the flat parameter vector of one architecture,
conditioned on a target metric (e.g. test accuracy), trained on a zoo.

* **Data**: every stored checkpoint of every zoo member
  (:func:`collect_checkpoints`), flattened in the architecture's
  :class:`~weightspace.graph.GraphTemplate` order, with its metric.
* **Permutation augmentation**: each training example is relabelled by a
  random spec permutation (``random_permutation`` + ``apply_permutation``),
  precomputed once as a bank of gather indices over the flat vector (a
  permutation of the network is a permutation of its flat vector), so a
  minibatch is augmented with one indexing op.
* **Normalisation** per tensor (mean and standard deviation over all values
  of a tensor across the training set; per-coordinate statistics would not
  be permutation invariant).
* **Model**: a residual MLP velocity field ``v(x_t, t, c)``; rectified-flow
  objective ``|| v(x_t, t, c) - (x_1 - x_0) ||^2`` with
  ``x_t = (1 - t) x_0 + t x_1``, ``x_0 ~ N(0, I)``; the condition is dropped
  with probability ``cond_dropout`` so sampling can use classifier-free
  guidance. Sampling integrates the ODE with ``steps`` Euler steps.

Every sample set should be shipped with
:func:`weightspace.generate.checkpoint_novelty.novelty_report`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightspace.arch import ModelRef
from weightspace.errors import ConfigError, InputFileError, StateDictError, WeightspaceError
from weightspace.generate._common import (
    ArchSpec,
    AsDictMixin,
    RefArch,
    as_arch,
    check_finite_state_dict,
    deprecated_names,
    read_generator_file,
    save_generator_file,
)
from weightspace.graph import ParameterGraph
from weightspace.io import Field, build_checked, check_numel, check_type, validate
from weightspace.symmetry import apply_permutation, random_permutation

__all__ = [
    "MixedArchitecturesError",
    "CheckpointSet",
    "CheckpointFlow",
    "FlowHistory",
    "collect_checkpoints",
    "train_checkpoint_flow",
    "generate_checkpoints",
    "permutation_bank",
    "FLOW_CONFIG_SCHEMA",
]


class MixedArchitecturesError(WeightspaceError, ValueError):
    """The checkpoints given to a one-architecture generator come from
    different architectures (``field`` names the differing argument)."""


@dataclass
class CheckpointSet:
    """Checkpoints of one architecture as flat vectors.

    Attributes:
        arch: the architecture.
        values: ``[M, V]`` float32, one flat value vector per checkpoint
            (template order, see :class:`~weightspace.graph.ParameterGraph`).
        metric: ``[M]`` the conditioning metric of each checkpoint.
        metric_name: e.g. ``"test_acc"``.
        member_ids: the zoo member of each checkpoint (its training run).
        epochs: the epoch of each checkpoint.
    """

    arch: ArchSpec
    values: Tensor
    metric: Tensor
    metric_name: str
    member_ids: list[str]
    epochs: list[int]

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def state_dict(self, i: int) -> dict[str, Tensor]:
        """The ``i``-th checkpoint as a state_dict."""
        return vector_to_state_dict(self.arch, self.values[i])

    def subset(self, idx: Sequence[int]) -> "CheckpointSet":
        idx = list(idx)
        return CheckpointSet(
            self.arch, self.values[idx], self.metric[idx], self.metric_name,
            [self.member_ids[i] for i in idx], [self.epochs[i] for i in idx],
        )


def _extras(template) -> dict[str, Tensor]:
    return {k: torch.zeros(template.shapes[k], dtype=torch.long) for k in template.extra_keys}


def state_dict_to_vector(arch: ArchSpec, state_dict: Mapping[str, Tensor]) -> Tensor:
    """Flat float32 vector ``[V]`` of a state_dict (validated against ``arch``)."""
    return arch.template().graph(state_dict).values.to(torch.float32)


def vector_to_state_dict(arch: ArchSpec, values: Tensor) -> dict[str, Tensor]:
    """Inverse of :func:`state_dict_to_vector` (``num_batches_tracked`` = 0)."""
    t = arch.template()
    if tuple(values.shape) != (t.num_values,):
        raise ValueError(f"{arch.label} has {t.num_values} values, got a vector of shape {tuple(values.shape)}")
    return ParameterGraph(t, values.detach().to(t.value_dtype), _extras(t)).to_state_dict()


def collect_checkpoints(
    zoo_or_members: Any,
    *,
    metric: str = "test_acc",
    epochs: Sequence[int] | None = None,
) -> CheckpointSet:
    """Every checkpoint of a :class:`zoo.Zoo` (or of an iterable of its
    members) as a :class:`CheckpointSet`.

    Args:
        metric: checkpoint metric used as the condition.
        epochs: keep only these epochs (default: all stored checkpoints).

    Members share an architecture when their registered name and all
    architecture arguments (defaults filled in, e.g. ``activation``) are
    equal -- not merely their tensor shapes: a ReLU and a Tanh MLP have the
    same shapes but are different architectures. A member's architecture may
    be any model reference a zoo recipe names (``"pkg.mod:factory"`` plus
    arguments, ``"hf:DIR"``; see :func:`~weightspace.generate.as_arch`).

    Raises:
        MixedArchitecturesError: members of different architectures (names
            two members and the differing argument).
        ValueError: a checkpoint without ``metric``, or no checkpoints.
    """
    members = list(zoo_or_members.members()) if hasattr(zoo_or_members, "members") else list(zoo_or_members)
    if not members:
        where = getattr(zoo_or_members, "path", None)
        raise InputFileError("the zoo has no members to collect checkpoints from; build or import members "
                             "into it first" if where is not None else "no zoo members to collect checkpoints from",
                             path=where)
    arch = as_arch(members[0].arch, **members[0].model_kwargs)
    vals, mets, ids, eps = [], [], [], []
    for m in members:
        a = as_arch(m.arch, **m.model_kwargs)
        if a != arch:
            field_, first, this = arch.difference(a) or ("arch", arch.label, a.label)
            if field_ == "arch":
                what = f"member {m.member_id} is a {this!r}, member {members[0].member_id} a {first!r}"
                hint = "filter the zoo first"
            else:
                what = (f"member {m.member_id} has {field_}={this!r}, member {members[0].member_id} has "
                        f"{field_}={first!r} ({a.label} vs {arch.label})")
                hint = f"filter the zoo first, e.g. zoo.filter({field_}={first!r})"
            raise MixedArchitecturesError(
                f"{what}; a checkpoint generator models one architecture -- {hint}",
                path=getattr(zoo_or_members, "path", None), field=field_,
            )
        for ck in m.checkpoints:
            if epochs is not None and ck.epoch not in epochs:
                continue
            if metric not in ck.metrics or not math.isfinite(float(ck.metrics[metric])):
                raise ValueError(f"checkpoint {m.member_id}@{ck.epoch} has no finite metric {metric!r}")
            vals.append(state_dict_to_vector(arch, ck.state_dict()))
            mets.append(float(ck.metrics[metric]))
            ids.append(m.member_id)
            eps.append(int(ck.epoch))
    if not vals:
        raise ValueError(f"no checkpoints at epochs {list(epochs or [])}")
    return CheckpointSet(arch, torch.stack(vals), torch.tensor(mets, dtype=torch.float32), metric, ids, eps)


def permutation_bank(arch: ArchSpec, n: int, *, seed: int = 0) -> Tensor:
    """``[n, V]`` gather indices: row ``k`` is the flat-vector form of a random
    spec permutation ``p_k`` (``random_permutation(spec, generator=...)``):
    ``values[bank[k]]`` is the flat vector of
    ``apply_permutation(state_dict, spec, p_k)``. Row 0 is the identity."""
    t = arch.template()
    V = t.num_values
    if V >= 2**24:
        raise ValueError(f"{arch.label} has {V} values; the permutation bank supports fewer than 2**24")
    ids = ParameterGraph(t, torch.arange(V, dtype=torch.float64), _extras(t)).to_state_dict()
    gen = torch.Generator().manual_seed(int(seed))
    rows = [torch.arange(V)]
    for _ in range(max(0, n - 1)):
        p = random_permutation(t.spec, generator=gen)
        rows.append(t.graph(apply_permutation(ids, t.spec, p)).values.round().long())
    return torch.stack(rows)


class _Block(nn.Module):
    def __init__(self, h: int, c: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(h)
        self.film = nn.Linear(c, 2 * h)
        self.fc1 = nn.Linear(h, h)
        self.fc2 = nn.Linear(h, h)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        scale, shift = self.film(c).chunk(2, dim=-1)
        h = self.norm(x) * (1 + scale) + shift
        return x + self.fc2(F.silu(self.fc1(h)))


def _fourier(x: Tensor, n: int = 16) -> Tensor:
    """``[B] -> [B, 2n]`` sinusoidal features of values in [0, 1]."""
    k = torch.arange(1, n + 1, device=x.device, dtype=x.dtype) * math.pi
    return torch.cat([torch.sin(x[:, None] * k), torch.cos(x[:, None] * k)], dim=1)


class CheckpointFlow(nn.Module):
    """Conditional flow-matching model over the flat parameters of one
    architecture.

    Args:
        arch: the architecture it generates.
        dim: ``V``, number of float values of ``arch``.
        hidden: MLP width; ``depth``: residual blocks.
        cond_range: ``(low, high)`` of the training metric; conditions
            outside it are refused by :meth:`generate`.

    Buffers ``mean`` / ``std`` (``[V]``, constant within each tensor) hold
    the per-tensor normalisation.

    Shapes:
        ``forward(x_t [B, V], t [B], c [B], drop [B] bool) -> v [B, V]``.
    """

    def __init__(
        self,
        arch: ArchSpec | str,
        *,
        hidden: int = 512,
        depth: int = 4,
        cond_range: tuple[float, float] = (0.0, 1.0),
        metric_name: str = "metric",
    ) -> None:
        super().__init__()
        self.arch = as_arch(arch)
        V = self.arch.template().num_values
        self.hparams = dict(arch=self.arch.to_dict(), hidden=hidden, depth=depth,
                            cond_range=[float(cond_range[0]), float(cond_range[1])], metric_name=metric_name)
        self.dim = V
        c = 64
        self.t_emb = nn.Sequential(nn.Linear(32, c), nn.SiLU(), nn.Linear(c, c))
        self.c_emb = nn.Sequential(nn.Linear(32, c), nn.SiLU(), nn.Linear(c, c))
        self.null_c = nn.Parameter(torch.zeros(c))
        self.inp = nn.Linear(V, hidden)
        self.blocks = nn.ModuleList(_Block(hidden, c) for _ in range(depth))
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, V)
        self.register_buffer("mean", torch.zeros(V))
        self.register_buffer("std", torch.ones(V))

    @property
    def cond_range(self) -> tuple[float, float]:
        lo, hi = self.hparams["cond_range"]
        return float(lo), float(hi)

    def _cond01(self, c: Tensor) -> Tensor:
        lo, hi = self.cond_range
        return (c - lo) / max(hi - lo, 1e-8)

    def forward(self, x: Tensor, t: Tensor, c: Tensor, drop: Tensor | None = None) -> Tensor:
        emb_c = self.c_emb(_fourier(self._cond01(c)))
        if drop is not None:
            emb_c = torch.where(drop[:, None], self.null_c.expand_as(emb_c), emb_c)
        cond = self.t_emb(_fourier(t)) + emb_c
        h = self.inp(x)
        for b in self.blocks:
            h = b(h, cond)
        return self.out(self.out_norm(h))

    # -------------------------------------------------------------- sample
    def check_condition(self, condition: float | Sequence[float] | Tensor, n: int) -> Tensor:
        """``[n]`` conditions; ``ValueError`` if any is outside :attr:`cond_range`."""
        c = torch.as_tensor(condition, dtype=torch.float32).reshape(-1)
        if c.numel() == 1:
            c = c.expand(n).clone()
        if c.numel() != n:
            raise ValueError(f"got {c.numel()} conditions for n={n} samples")
        lo, hi = self.cond_range
        bad = [float(v) for v in c if not (lo <= float(v) <= hi) or not math.isfinite(float(v))]
        if bad:
            raise ValueError(
                f"condition {bad[0]:g} ({self.hparams['metric_name']}) is outside the range seen in training "
                f"[{lo:.4g}, {hi:.4g}]; the generator cannot extrapolate"
            )
        return c

    @torch.no_grad()
    def sample(
        self,
        n: int,
        condition: float | Sequence[float] | Tensor,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        steps: int = 50,
        guidance: float = 1.0,
    ) -> Tensor:
        """``[n, V]`` flat parameter vectors (denormalised).

        Args:
            condition: target metric (scalar or ``[n]``) within :attr:`cond_range`.
            steps: Euler steps of the flow ODE from ``t = 0`` (noise) to 1.
            guidance: classifier-free guidance weight ``w``:
                ``v = v_uncond + w (v_cond - v_uncond)`` (1 = conditional only).

        Raises:
            NonFiniteWeightsError: a sample holds NaN/Inf values (the tensor
                is named); non-finite samples are never returned.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if not math.isfinite(float(guidance)):
            raise ValueError(f"guidance must be a finite number, got {guidance}")
        c = self.check_condition(condition, n).to(self.mean.device)
        if generator is None:
            if seed is None:
                raise ValueError("sample needs seed=... or generator=...")
            generator = torch.Generator().manual_seed(int(seed))
        was = self.training
        self.eval()
        x = torch.randn(n, self.dim, generator=generator).to(self.mean.device)
        dt = 1.0 / steps
        for i in range(steps):
            t = torch.full((n,), i * dt, device=x.device)
            v = self(x, t, c)
            if guidance != 1.0:
                vu = self(x, t, c, drop=torch.ones(n, dtype=torch.bool, device=x.device))
                v = vu + guidance * (v - vu)
            x = x + dt * v
        self.train(was)
        out = x * self.std + self.mean
        bad = (~torch.isfinite(out)).any(dim=1)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            params = [k for k, v in self.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
            cause = (f"the generator's own weights are NaN/Inf (e.g. {params[0]!r}; a diverged training run)" if params
                     else "the flow diverged; try more steps or a smaller guidance")
            check_finite_state_dict(vector_to_state_dict(self.arch, out[i].cpu()),
                                    f"sample {i} of {int(bad.sum())}/{n} non-finite samples ({cause})")
        return out

    def generate(
        self,
        arch: ArchSpec | str,
        n: int,
        *,
        condition: float | Sequence[float] | Tensor,
        seed: int = 0,
        steps: int = 50,
        guidance: float = 1.0,
        **arch_kwargs: Any,
    ) -> list[dict[str, Tensor]]:
        """``n`` state_dicts of ``arch`` conditioned on ``condition``.

        Raises:
            ValueError: ``arch`` is not the architecture this generator was
                trained on, or the condition is out of range.
        """
        a = as_arch(arch, **arch_kwargs)
        if a != self.arch:
            raise ValueError(
                f"this generator was trained on {self.arch.label}; it cannot generate {a.label}"
            )
        x = self.sample(n, condition, seed=seed, steps=steps, guidance=guidance)
        return [vector_to_state_dict(self.arch, v) for v in x]

    # -------------------------------------------------------------- io
    def config(self) -> dict[str, Any]:
        return dict(self.hparams)

    def save(self, path: str | Path, metadata: Mapping[str, Any] | None = None) -> Path:
        """Write the weights (safetensors) and config (in the file's metadata)."""
        return save_generator_file(self, path, "CheckpointFlow", {"config": self.config()}, metadata)

    @classmethod
    def load(cls, path: str | Path) -> "CheckpointFlow":
        """Inverse of :meth:`save`.

        The config in the file's metadata is checked against
        :data:`FLOW_CONFIG_SCHEMA` (types, ranges, unknown keys), the
        architecture's size is checked against the stored tensors, and the
        stored tensors must match the model the config builds (names,
        shapes) -- all before anything is allocated.

        Raises:
            MissingFileError / InputFileError: missing, a directory, empty,
                truncated, not a saved CheckpointFlow, or absurd sizes.
            ConfigError: a wrong type, out-of-range value or unknown key in
                the config, or an unknown architecture (``field`` names it).
            StateDictError: a missing, unexpected or mis-shaped tensor (named).
        """
        path, cfg, _, tensors = read_generator_file(path, "CheckpointFlow", FLOW_CONFIG_SCHEMA)
        spec = cfg.pop("arch")
        cfg["cond_range"] = tuple(_cond_range(cfg.get("cond_range", [0.0, 1.0]), path))
        arch = _saved_arch(spec, path)
        # The architecture's size, from a build on the meta device (nothing
        # allocated), must be the size of the stored normalisation buffer
        # before its template is built for real.
        try:
            with torch.device("meta"):
                n_values = sum(t.numel() for t in arch.module(seed=0).state_dict().values() if t.is_floating_point())
        except Exception:  # an op without a meta kernel: rely on the checks after the real build
            n_values = None
        if n_values is not None:
            check_numel([n_values], path=path, field="config.arch")
            if "mean" not in tensors:
                raise StateDictError("tensor missing from the file; it is damaged or not a CheckpointFlow", path=path,
                                     field="mean")
            if tuple(tensors["mean"].shape) != (n_values,):
                raise StateDictError(
                    f"shape {list(tensors['mean'].shape)} in the file, but config.arch ({arch.label}) has {n_values} "
                    "values; the file is damaged or tampered with", path=path, field="mean")
        arch.template()
        model = build_checked(lambda: cls(arch, **cfg), tensors, path=path, field="config")
        return model.eval()


def _saved_arch(spec: Any, path: Path) -> "ArchSpec | RefArch":
    """The architecture a saved config names: ``{"name", "kwargs"}`` (a
    registered one) or a model reference ``{"hf": DIR}`` /
    ``{"factory": "pkg.mod:fn", "kwargs": {...}}`` (as written by
    :meth:`RefArch.to_dict`)."""
    if isinstance(spec, Mapping) and "module" in spec:
        raise ConfigError(f"the generator was trained on a module given in Python ({spec['module']}); it cannot be "
                          "rebuilt from the file -- name the architecture as 'pkg.mod:factory' or hf:DIR when "
                          "training", path=path, field="config.arch")
    if isinstance(spec, Mapping) and ("hf" in spec or "factory" in spec):
        try:
            return as_arch(ModelRef.parse(spec))
        except WeightspaceError as exc:
            raise ConfigError(f"not an architecture this library can build ({exc})", path=path,
                              field="config.arch") from None
    spec = validate(spec, _ARCH_SCHEMA, path=path, where="config.arch")
    try:
        return ArchSpec.from_dict(spec)
    except (KeyError, TypeError, ValueError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise ConfigError(f"not an architecture this library can build ({msg})", path=path, field="config.arch") from None


def _cond_range(value: Any, path: Path) -> list[float]:

    if not (isinstance(value, list) and len(value) == 2):
        raise ConfigError(f"expected [low, high], got {value!r}"[:200], path=path, field="config.cond_range")
    lo, hi = (float(check_type(v, float, path=path, field=f"config.cond_range[{i}]")) for i, v in enumerate(value))
    if lo > hi:
        raise ConfigError(f"low {lo} > high {hi}", path=path, field="config.cond_range")
    return [lo, hi]


def _schema() -> dict:
    return {
        "arch": Field(dict, required=True), "hidden": Field(int, min=1, max=2**14), "depth": Field(int, min=0, max=256),
        "cond_range": Field(list), "metric_name": Field(str),
    }


#: Schema of a saved :class:`CheckpointFlow` config (sizes bounded far above
#: anything trained here).
FLOW_CONFIG_SCHEMA = _schema()
_ARCH_SCHEMA = {"name": Field(str, required=True), "kwargs": Field(dict)}


def _tensor_stats(arch: ArchSpec, values: Tensor) -> tuple[Tensor, Tensor]:
    """Per-tensor mean / std over all checkpoints, broadcast to ``[V]``."""
    t = arch.template()
    mean = torch.zeros(t.num_values)
    std = torch.ones(t.num_values)
    for k in t.keys:
        off, n = t.offsets[k], math.prod(t.shapes[k])
        block = values[:, off : off + n]
        mean[off : off + n] = block.mean()
        s = block.std()
        std[off : off + n] = s if s > 1e-8 else 1.0
    return mean, std


@dataclass
class FlowHistory(AsDictMixin):
    """Training record: the flow-matching loss of every step."""

    loss: list[float] = field(default_factory=list)


def train_checkpoint_flow(
    checkpoints: CheckpointSet,
    *,
    steps: int = 4000,
    batch_size: int = 64,
    lr: float = 3e-4,
    weight_decay: float = 0.0,
    augment: bool = True,
    bank_size: int = 512,
    cond_dropout: float = 0.1,
    seed: int = 0,
    progress: bool = False,
    callback: Callable[[int, float], None] | None = None,
    **hparams: Any,
) -> tuple[CheckpointFlow, FlowHistory]:
    """Train a :class:`CheckpointFlow` on ``checkpoints``.

    Args:
        augment: relabel every example by a random permutation from a bank
            of ``bank_size`` (see :func:`permutation_bank`) at every step.
        cond_dropout: probability of training a step's example unconditionally.
        hparams: the new model's ``hidden`` / ``depth`` (see :class:`CheckpointFlow`).

    Returns:
        ``(model (eval mode), FlowHistory)``.
    """
    from tqdm.auto import tqdm

    if len(checkpoints) < 2:
        raise ValueError("need at least two checkpoints to train a generator")
    arch = checkpoints.arch
    lo, hi = float(checkpoints.metric.min()), float(checkpoints.metric.max())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = CheckpointFlow(arch, cond_range=(lo, hi), metric_name=checkpoints.metric_name, **hparams)
    mean, std = _tensor_stats(arch, checkpoints.values)
    model.mean.copy_(mean)
    model.std.copy_(std)
    x1_all = (checkpoints.values - mean) / std
    bank = permutation_bank(arch, bank_size, seed=seed) if augment else None
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    gen = torch.Generator().manual_seed(int(seed) + 1)
    hist = FlowHistory()
    M = len(checkpoints)
    model.train()
    for step in tqdm(range(int(steps)), disable=not progress, desc="checkpoint flow"):
        idx = torch.randint(0, M, (batch_size,), generator=gen)
        x1 = x1_all[idx]
        if bank is not None:
            rows = bank[torch.randint(0, bank.shape[0], (batch_size,), generator=gen)]
            x1 = torch.gather(x1, 1, rows)
        x0 = torch.randn(x1.shape, generator=gen)
        t = torch.rand(batch_size, generator=gen)
        xt = (1 - t[:, None]) * x0 + t[:, None] * x1
        drop = torch.rand(batch_size, generator=gen) < cond_dropout
        v = model(xt, t, checkpoints.metric[idx], drop)
        loss = F.mse_loss(v, x1 - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        hist.loss.append(float(loss.detach()))
        if callback is not None:
            callback(step, hist.loss[-1])
    return model.eval(), hist


def generate_checkpoints(
    model: CheckpointFlow | str | Path,
    arch: ArchSpec | str,
    n: int,
    *,
    condition: float | Sequence[float] | Tensor,
    **options: Any,
) -> list[dict[str, Tensor]]:
    """``n`` state_dicts of ``arch`` from a trained generator (or its file):
    :meth:`CheckpointFlow.generate` (``options``: its ``seed``, ``steps``,
    ``guidance`` and architecture arguments) on ``model``, loaded with
    :meth:`CheckpointFlow.load` when it is a path.

    Example::

        sds = generate_checkpoints("flow.safetensors", "mlp", 8, condition=0.9, seed=0, hidden=[32])
    """
    if not isinstance(model, CheckpointFlow):
        model = CheckpointFlow.load(model)
    return model.generate(arch, n, condition=condition, **options)


# Renamed public names: ``generate`` shared its name with the package
# (weightspace.generate.generate), CONFIG_SCHEMA with the hypernetwork's.
__getattr__ = deprecated_names(__name__, {
    "generate": "weightspace.generate.checkpoint_flow.generate_checkpoints",
    "CONFIG_SCHEMA": "weightspace.generate.checkpoint_flow.FLOW_CONFIG_SCHEMA",
})
