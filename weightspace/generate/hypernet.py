"""Graph hypernetwork: predict every parameter of an architecture from its
parameter graph (GHN-2 style, Knyazev et al. 2021).

How it works
------------
* **Input = the architecture plus a random draw.** The encoder reads the
  architecture's :class:`~weightspace.graph.GraphTemplate` (node type /
  role / depth / fixed-neuron position, degrees, edge type, and which cells
  of a ``G x G`` kernel grid each edge owns) and one random draw ``r ~ N(0,
  1)`` per weight value (:meth:`GraphHyperNetwork.draw`); optionally also
  *probe features*: each neuron's activations on ``P`` fixed unlabeled task
  inputs in the drawn (He-scaled) network (:func:`weightspace.nn.probe_features`).
  No weight of any trained network is ever read. The draw is the symmetry
  breaker: neurons that a permutation may exchange have identical
  structural features, so any equivariant function of the structure alone
  gives them identical weights (a rank-one, useless network). With the draw
  the hypernetwork is a learned *distribution* over weights, and
  equivariance holds jointly: permuting the draw by a spec permutation
  permutes the predicted weights exactly (``tests/generate/test_hypernet.py``).
* **Encoder** = :class:`weightspace.nn.GMN` (``GMNConv`` layers, PyG
  backend). Its edge readout plus a multiplicative term ``K (u_i * v_j)`` of
  the node readouts of an edge's two neurons gives a *correction* that is
  double-centred per weight tensor (the additive ``a_i + b_j`` part is
  removed), then bounded (``c tanh``; ``c = correction`` = 1 for hidden
  layers, ``c = output_correction`` = 10 for the logits layer) and centred
  again before it is added to the draw. The correction's last layers start
  at zero, so an untrained hypernetwork predicts the He-scaled draw itself
  (a trainable network). Each of these choices removes a failure seen in
  development: a free correction drove every matrix to rank one (all units
  one template) or to dead ReLUs within ~100 steps; centring only *after*
  the ``tanh`` let training saturate it with a row / column term (which the
  centring then removed exactly), so within ~100 steps every correction was
  switched off with zero gradient and the trained hypernetwork predicted
  exactly what an untrained one does; a logits-layer bound of 1 (the
  draw's own size) capped the accuracy of the predicted networks near 0.2
  even for the ideal class-mean readout (the readout's draw noise could not
  be outweighed).
* **Output through the graph index.** The correction is read back into each
  edge's feature vector and written with
  :meth:`ParameterGraph.with_edge_attr`. Conv kernels use a shared ``G x G``
  grid (default ``G = 7``): a ``k x k`` kernel takes the centre ``k x k``
  cells, a 1-d kernel of size ``k`` the centre of the middle row, a plain
  weight / bias / norm value the centre cell, so a 3x3 and a 5x5 kernel share
  the meaning of their centre cells (as GHN-2 slices its largest kernel).
  Other multi-value edges (a Linear after ``flatten(C, H, W)``, positional
  embeddings) use ``generic_width`` further channels in feature order.
* **Per-layer output scaling** (GHN-2's operation-dependent normalisation):
  every weight tensor is scaled to the He-init standard deviation
  ``sqrt(gain / fan_in)`` (the draw has unit variance, the correction is
  bounded), the layer that writes the logits additionally by
  ``output_scale`` and a learned gain ``exp(g)`` (``g = 2 tanh(s)`` above 0,
  ``0.1 tanh(s)`` below; ``s`` = mean of one extra edge channel over the
  tensor's edges, a permutation invariant, 0 untrained), so activations keep
  a sane variance in any depth or width. Biases and norm shifts are
  ``0.1 x`` the centred correction, norm scales ``1 + 0.1 x`` it, embeddings
  N(0, 1)-scaled, other parameters (class tokens, positional embeddings)
  0.02-scaled; BatchNorm running statistics are 0 / 1 (buffers, not
  predicted; re-estimate them on data before evaluating in eval mode).

Training and evaluation (:func:`~weightspace.generate.hypernet_train.train_hypernet`,
:func:`~weightspace.generate.hypernet_train.compare_inits`) live in
:mod:`weightspace.generate.hypernet_train`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from weightspace.generate._common import (
    ArchSpec,
    as_arch,
    check_finite_state_dict,
    deprecated_names,
    read_generator_file,
    save_generator_file,
)
from weightspace.graph import EDGE_TYPES, NODE_TYPES, GraphTemplate, ParameterGraph
from weightspace.io import Field, build_checked, check_numel
from weightspace.nn import GMN, collate, probe_features

__all__ = ["GraphHyperNetwork", "HYPERNET_CONFIG_SCHEMA"]

_ET = {name: i for i, name in enumerate(EDGE_TYPES)}
_WEIGHT_TYPES = {_ET["linear.weight"], _ET["conv.weight"], _ET["attention.in_proj_weight"]}

# kinds of output rule per tensor
_K_WEIGHT, _K_BIAS, _K_NORM_W, _K_NORM_B, _K_MEAN, _K_VAR, _K_EMB, _K_PARAM = range(8)


# output rule of every other edge type (weight types are decided by ndim)
_KIND_OF_ETYPE = {
    _ET["bias"]: _K_BIAS, _ET["norm.weight"]: _K_NORM_W, _ET["norm.bias"]: _K_NORM_B,
    _ET["norm.running_mean"]: _K_MEAN, _ET["norm.running_var"]: _K_VAR, _ET["embedding.weight"]: _K_EMB,
}


def _tensor_kind(etype: int, ndim: int) -> int:
    if etype in _WEIGHT_TYPES:  # a 1-d "weight" (e.g. a weight vector) is treated like a bias
        return _K_WEIGHT if ndim >= 2 else _K_BIAS
    return _KIND_OF_ETYPE.get(etype, _K_PARAM)


@dataclass
class _HypernetLayout:
    """Per-template index tensors (built once per template and hypernet layout)."""

    cols: Tensor  # [E, W] output channel of each edge feature (-1: none)
    in_mask: Tensor  # [E, D] bool, cells owned by each edge in the output layout
    edge_param: Tensor  # [E] tensor id (-1: tie edge)
    kinds: list[int]  # per tensor (template.keys order)
    fan_in: list[int]
    to_output: list[bool]  # tensor writes into the network's output neurons
    out_mask: Tensor  # [K] float, 1 for weight-like tensors writing into output neurons
    extras: dict[str, Tensor]


class GraphHyperNetwork(nn.Module):
    """Predicts all parameters of an architecture from its parameter graph.

    Args:
        hidden: GMN feature width.
        num_layers: GMN message-passing layers.
        kernel_grid: ``G``, the largest kernel side the output grid holds.
        generic_width: channels for multi-value edges that are not kernels.
        gain: He gain of the per-layer scaling (2 for ReLU networks).
        rank: width of the multiplicative edge head ``K (u_i * v_j)``.
        output_scale: extra factor on the tensors that write into the
            network's output neurons (small logits at the start: a
            hypernetwork whose first predictions are confidently wrong learns
            to kill the signal, i.e. dead ReLUs, before anything else).
        correction: bound ``c`` of the learned correction ``c tanh(delta)``
            (``delta`` double-centred first) added to the unit-variance draw
            of hidden layers (so a weight's variance stays within
            ``[1, 1 + c^2]`` times the He variance).
        output_correction: the same bound for the weight tensors that write
            the logits. It must be well above the draw's size 1: the
            readout has to be mostly learned (class templates over the
            hidden units' probe activations) rather than the draw's noise;
            with 1 the predicted networks stayed near chance. Its slope at
            0 is ``output_correction`` too, so the readout learns faster.
        aggr: GMN aggregation (``"mean"`` keeps messages comparable across widths).
        norm: GMN normalisation.

    Shapes:
        :meth:`forward` takes ``T`` templates (and draws ``[V_t]``) and returns ``T`` value vectors
        ``[V_t]`` (``V_t`` = number of float values of architecture ``t``, in
        the template's flat order), differentiable w.r.t. the hypernetwork.
    """

    def __init__(
        self,
        hidden: int = 64,
        num_layers: int = 4,
        *,
        kernel_grid: int = 7,
        generic_width: int = 32,
        gain: float = 2.0,
        rank: int = 64,
        output_scale: float = 0.1,
        correction: float = 1.0,
        probes: Tensor | None = None,
        aggr: str = "mean",
        norm: str = "layer",
        output_correction: float = 10.0,
    ) -> None:
        # the arguments but the probe tensor (a buffer), for saving and copies
        hparams = {k: v for k, v in locals().items() if k not in ("self", "__class__", "probes")}
        super().__init__()
        if kernel_grid < 1 or generic_width < 1:
            raise ValueError("kernel_grid and generic_width must be >= 1")

        self.hparams = hparams
        self.grid = int(kernel_grid)
        self.generic = int(generic_width)
        self.width = self.grid * self.grid + self.generic
        n_probe = 0 if probes is None else int(probes.shape[0])
        self.gmn = GMN(
            out_dim=0, hidden=hidden, num_layers=num_layers, aggr=aggr, norm=norm,
            edge_dim=self.width, edge_out=self.width + 1, node_out=2 * rank, layer_encoding="depth",
            extra_dim=n_probe,
        )
        self.register_buffer("probes", None if probes is None else probes.detach().clone().to(torch.float32))
        self._arch_modules: dict[ArchSpec, nn.Module] = {}
        # multiplicative edge head K (u_i * v_j) from the node readout: an
        # additive head f(a(x_i) + b(x_j)) is close to rank 2 in (i, j), the
        # product lets e.g. a readout weight be <class template, feature>.
        self.bilinear = nn.Linear(rank, self.width + 1, bias=False)
        # The correction starts at exactly zero: an untrained hypernetwork
        # predicts the (He-scaled) draw itself, a trainable network, and
        # training learns how to change it. (Starting from a random
        # correction, training collapsed to dead-ReLU networks in tens of steps.)
        with torch.no_grad():
            self.bilinear.weight.zero_()
            self.gmn.edge_head[-1].weight.zero_()
            self.gmn.edge_head[-1].bias.zero_()
        self._layouts: dict[int, tuple[GraphTemplate, _HypernetLayout]] = {}

    # ------------------------------------------------------------- layout
    def layout(self, template: GraphTemplate) -> _HypernetLayout:
        """Index tensors mapping the edge readout onto ``template``'s edges.

        Raises:
            ValueError: a kernel larger than ``kernel_grid`` with more values
                than ``generic_width``, or another edge wider than
                ``generic_width``.
        """
        hit = self._layouts.get(id(template))
        if hit is not None and hit[0] is template:
            return hit[1]
        G, D = self.grid, self.width
        centre = (G // 2) * G + G // 2
        W = template.max_width
        parts, kinds_by_key = [], {}
        for s in template.edge_sets:
            c = torch.full((s.num_edges, W), -1, dtype=torch.long)
            if s.pos is not None:
                shape = template.shapes[s.name]
                kinds_by_key[s.name] = _tensor_kind(s.etype, len(shape))
                c[:, : s.width] = torch.as_tensor(self._columns(template, s, shape, centre))
            parts.append(c)
        cols = torch.cat(parts) if parts else torch.zeros(0, W, dtype=torch.long)
        in_mask = torch.zeros(cols.shape[0], D, dtype=torch.bool)
        rows = torch.arange(cols.shape[0])[:, None].expand_as(cols)
        ok = cols >= 0
        in_mask[rows[ok], cols[ok]] = True
        kinds = [kinds_by_key[k] for k in template.keys]
        fan_in = [max(1, math.prod(template.shapes[k][1:])) if len(template.shapes[k]) >= 2 else 1 for k in template.keys]
        extras = {k: torch.zeros(template.shapes[k], dtype=torch.long) for k in template.extra_keys}
        out_type = NODE_TYPES.index("output")
        to_output = {s.name: bool((template.node_type[s.dst] == out_type).any()) for s in template.edge_sets if s.pos is not None}
        to_out = [to_output[k] for k in template.keys]
        out_mask = torch.tensor([float(o and kd in (_K_WEIGHT, _K_EMB, _K_PARAM)) for o, kd in zip(to_out, kinds)])
        lay = _HypernetLayout(cols, in_mask, template.edge_param(), kinds, fan_in, to_out, out_mask, extras)
        if len(self._layouts) > 256:
            self._layouts.clear()
        self._layouts[id(template)] = (template, lay)
        return lay

    def _columns(self, template: GraphTemplate, s, shape: tuple[int, ...], centre: int) -> list[int]:
        G = self.grid
        w = s.width
        kernel = tuple(shape[2:])
        if s.etype == _ET["conv.weight"] and 1 <= len(kernel) <= 2 and math.prod(kernel) == w and max(kernel) <= G:
            kh, kw = (1, kernel[0]) if len(kernel) == 1 else kernel
            r0, c0 = (G - kh) // 2, (G - kw) // 2
            return [(r0 + i) * G + (c0 + j) for i in range(kh) for j in range(kw)]
        if w == 1:
            return [centre]
        if w <= self.generic:
            return [G * G + j for j in range(w)]
        arch = template.arch or "this architecture"
        raise ValueError(
            f"{arch}: tensor {s.name!r} has {w} values per edge (shape {tuple(shape)}); this hypernetwork "
            f"predicts kernels up to {G}x{G} and other edge features up to {self.generic} wide. "
            "Build it with a larger kernel_grid / generic_width."
        )

    # ------------------------------------------------------------ forward
    def draw(self, template: GraphTemplate, generator: torch.Generator) -> Tensor:
        """A random draw ``[V]`` for ``template``: N(0, 1) for every weight-like
        tensor (linear / conv / attention / embedding / other parameters),
        zero for biases and norm parameters. This is the hypernetwork's only
        source of randomness (it breaks the symmetry between exchangeable
        neurons); it is never the weights of a trained network."""
        lay = self.layout(template)
        z = torch.randn(template.num_values, generator=generator)
        keep = torch.zeros(template.num_values, dtype=torch.bool)
        for i, k in enumerate(template.keys):
            if lay.kinds[i] in (_K_WEIGHT, _K_EMB, _K_PARAM):
                off = template.offsets[k]
                keep[off : off + math.prod(template.shapes[k])] = True
        return z * keep

    def forward(
        self,
        archs: Sequence[ArchSpec | str],
        draws: Sequence[Tensor] | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> list[Tensor]:
        """Predicted flat value vectors, one ``[V_t]`` per architecture.

        Args:
            archs: ``T`` architectures (:class:`ArchSpec` or registered names).
            draws: per-architecture random draws ``[V_t]`` (:meth:`draw`);
                drawn from ``generator`` when omitted (one of the two is required).
        """
        specs = [as_arch(a) for a in archs]
        templates = [a.template() for a in specs]
        if draws is None:
            if generator is None:
                raise ValueError("pass draws=... or generator=... (randomness is always explicit)")
            draws = [self.draw(t, generator) for t in templates]
        if len(draws) != len(templates):
            raise ValueError(f"{len(draws)} draws for {len(templates)} architectures")
        layouts = [self.layout(t) for t in templates]
        for a, t, d in zip(specs, templates, draws):
            if tuple(d.shape) != (t.num_values,):
                raise ValueError(f"a draw for {a.label} must have shape ({t.num_values},), got {tuple(d.shape)}")
        dev = self.gmn.u0.device
        D = self.width
        graphs, grids, extra = [], [], []
        for a, t, lay, d in zip(specs, templates, layouts, draws):
            graphs.append(ParameterGraph(t, torch.zeros(t.num_values, dtype=t.value_dtype), dict(lay.extras)))
            # the draw, laid out on the shared kernel grid (one extra dump column for padding)
            vals, _ = ParameterGraph(t, d.to(torch.float32)).edge_attr(t.max_width)
            cols = torch.where(lay.cols >= 0, lay.cols, D)
            grids.append(torch.zeros(cols.shape[0], D + 1).scatter(1, cols, vals)[:, :D])
            if self.probes is not None:
                extra.append(self._probe_features(a, t, lay, d))
        batch = collate(graphs, keep_graphs=False, node_extra=extra or None)
        grid = torch.cat(grids)
        mask = torch.cat([lay.in_mask for lay in layouts])
        batch = _replace(batch, edge_attr=grid, edge_mask=mask).to(dev)
        res = self.gmn(batch)
        r = self.hparams["rank"]
        src, dst = batch.edge_index
        delta = res.edge + self.bilinear(res.node[src, :r] * res.node[dst, r:])  # [E, D]
        # bounded correction (in _values): in hidden layers it cannot erase the
        # draw (when a free correction was standardised together with the draw,
        # training drove every weight matrix to rank one within 100 steps: all
        # hidden units one template)
        corr = delta[:, :D]  # centred and bounded per tensor in _values
        parts = batch.split_edges(torch.cat([corr, delta[:, D:]], dim=1))
        out = []
        for t, g, lay, part, d in zip(templates, graphs, layouts, parts, draws):
            cols = lay.cols.to(dev)
            attr = torch.gather(part[:, :D], 1, cols.clamp(min=0)) * (cols >= 0)
            dvals = ParameterGraph(t, g.values.to(dev, part.dtype), g.extras).with_edge_attr(attr).values
            # learned per-tensor log-gain: mean of the last channel over the tensor's edges (invariant)
            ep = lay.edge_param.to(dev)
            ok = ep >= 0
            K = len(t.keys)
            s = torch.zeros(K, device=dev, dtype=part.dtype).index_add(0, ep[ok], part[ok, D])
            s = s / torch.bincount(ep[ok], minlength=K).clamp(min=1).to(part.dtype)
            # Only the logits layer has a learned gain, in [-0.1, 2]: with the fixed
            # output_scale the readout's size was capped (loss stalled near 2.0);
            # with free gains on every layer (or a gain that can shrink a lot),
            # training on fresh draws first shrinks the network to constant outputs
            # (random logits only cost) and never recovers.
            s = torch.tanh(s)
            gain = torch.where(s > 0, 2.0 * s, 0.1 * s) * lay.out_mask.to(dev, s.dtype)
            out.append(self._values(t, lay, dvals, d.to(dev), gain))
        return out

    def _probe_features(self, arch: ArchSpec, t: GraphTemplate, lay: _HypernetLayout, draw: Tensor) -> Tensor:
        """``[N, P]`` activations of the drawn network (correction 0) on the
        probe inputs, each block scaled to unit RMS (equivariant: they move
        with the neurons)."""
        key = arch
        if key not in self._arch_modules:
            self._arch_modules[key] = arch.module(seed=0)
        module = self._arch_modules[key]
        with torch.no_grad():
            v0 = self._values(t, lay, torch.zeros_like(draw), draw)
            g0 = ParameterGraph(t, v0.to(t.value_dtype), dict(lay.extras))
            f = probe_features(g0, module, arch.view(self.probes))
            blk = t.node_block
            out = torch.zeros_like(f)
            for b in range(len(t.spec.blocks)):
                sel = blk == b
                fb = f[sel]
                out[sel] = fb / (fb.pow(2).mean().sqrt() + 1e-6)
        return out

    def _values(self, t: GraphTemplate, lay: _HypernetLayout, dvals: Tensor, draw: Tensor, log_gain: Tensor | None = None) -> Tensor:
        """The draw ``[V_t]`` plus the correction ``dvals`` ``[V_t]`` (double-centred
        per weight tensor), scaled per tensor (He std times ``exp(log_gain)``,
        ``[K]`` per tensor) -> flat values ``[V_t]``."""
        raw = dvals
        c_hid = float(self.hparams["correction"])
        c_out = float(self.hparams["output_correction"])
        gain = float(self.hparams["gain"])
        out_scale = float(self.hparams["output_scale"])
        pieces = []
        for i, k in enumerate(t.keys):
            off, n = t.offsets[k], math.prod(t.shapes[k])
            v = raw[off : off + n]
            kind = lay.kinds[i]
            # centre BEFORE bounding: a row / column / constant term of the raw
            # correction would otherwise saturate the tanh, i.e. switch the
            # pair-dependent part off with zero gradient (and the centring
            # after the tanh then removes the saturated constant exactly).
            # Training fell into that state within ~100 steps and stayed there:
            # predictions identical to the untrained hypernetwork's.
            if kind in (_K_WEIGHT, _K_EMB, _K_PARAM):
                v = _double_centre(v.reshape(t.shapes[k])).reshape(-1)
            elif kind in (_K_BIAS, _K_NORM_B):
                v = v - v.mean()
            v = (c_out if lay.out_mask[i] > 0 else c_hid) * torch.tanh(v)
            if kind in (_K_WEIGHT, _K_EMB, _K_PARAM):
                v = draw[off : off + n].to(v.dtype) + _double_centre(v.reshape(t.shapes[k])).reshape(-1)
                std = math.sqrt(gain / lay.fan_in[i]) if kind == _K_WEIGHT else (1.0 if kind == _K_EMB else 0.02)
                if lay.to_output[i]:
                    std = std * out_scale
                v = v * std if log_gain is None else v * (std * torch.exp(log_gain[i]))
            elif kind in (_K_BIAS, _K_NORM_B):
                v = 0.1 * (v - v.mean()) * (out_scale if lay.to_output[i] else 1.0)
            elif kind == _K_NORM_W:
                v = 1.0 + 0.1 * v
            elif kind == _K_MEAN:
                v = torch.zeros_like(v)
            else:  # running variance
                v = torch.ones_like(v)
            pieces.append(v)
        return torch.cat(pieces) if pieces else raw

    # ------------------------------------------------------------ predict
    def predict(
        self,
        arch: ArchSpec | str,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        draw: Tensor | None = None,
        **arch_kwargs: Any,
    ) -> dict[str, Tensor]:
        """A full state_dict for ``arch`` (detached; BatchNorm statistics 0/1).

        Raises:
            NonFiniteWeightsError: a predicted tensor holds NaN/Inf (named;
                e.g. the hypernetwork's own weights are NaN). Such weights
                are never returned.

        Example::

            sd = hn.predict("cnn_small", width=24, depth=4, seed=0)
            model = zoo.create_model("cnn_small", width=24, depth=4)
            model.load_state_dict(sd)
        """
        a = as_arch(arch, **arch_kwargs)
        t = a.template()
        if draw is None:
            if generator is None:
                if seed is None:
                    raise ValueError("predict needs seed=..., generator=... or draw=...")
                generator = torch.Generator().manual_seed(int(seed))
            draw = self.draw(t, generator)
        with torch.no_grad():
            values = self([a], [draw])[0]
        sd = self._fixed(a, t, self.write_back(t, values))
        if not bool(torch.isfinite(values).all()):
            bad = [k for k, v in self.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
            cause = (f"the hypernetwork's own weights are NaN/Inf (e.g. {bad[0]!r}; a diverged training run): retrain it"
                     if bad else "check the draw and the hypernetwork")
            check_finite_state_dict(sd, f"the state_dict predicted for {a.label} ({cause})")
        return sd

    def _fixed(self, arch: ArchSpec, t: GraphTemplate, sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``sd`` with what is not the hypernetwork's to predict put right:
        float buffers that are no BatchNorm statistics (a causal mask,
        rotary frequencies) keep the architecture's own values -- constants
        of the function, not weights -- and the names of a tied parameter
        (``lm_head.weight`` is ``wte.weight``) all get its first name's values."""
        lay = self.layout(t)
        stats = {k for k, kind in zip(t.keys, lay.kinds) if kind in (_K_MEAN, _K_VAR)}
        if arch not in self._arch_modules:
            self._arch_modules[arch] = arch.module(seed=0)
        module = self._arch_modules[arch]
        out = dict(sd)
        first: dict[int, str] = {}
        for k, p in module.named_parameters(remove_duplicate=False):
            if first.setdefault(id(p), k) != k and k in out:
                out[k] = out[first[id(p)]]
        params = {k for k, _ in module.named_parameters(remove_duplicate=False)}
        for k, v in module.state_dict().items():
            if k in out and k not in params and k not in stats and v.is_floating_point():
                out[k] = v.detach().clone()
        return out

    def write_back(self, template: GraphTemplate, values: Tensor) -> dict[str, Tensor]:
        """State_dict from a predicted value vector ``[V]`` (keeps autograd)."""
        lay = self.layout(template)
        return ParameterGraph(template, values, dict(lay.extras)).to_state_dict()

    # ------------------------------------------------------------ save / load
    def config(self) -> dict[str, Any]:
        return dict(self.hparams)

    def save(self, path: str | Path, metadata: Mapping[str, Any] | None = None) -> Path:
        """Write the weights (safetensors) and config (in the file's metadata)."""
        probe_shape = None if self.probes is None else list(self.probes.shape)
        entries = {"config": self.config(), "probe_shape": probe_shape}
        return save_generator_file(self, path, "GraphHyperNetwork", entries, metadata)

    @classmethod
    def load(cls, path: str | Path) -> "GraphHyperNetwork":
        """Inverse of :meth:`save`.

        The config in the file's metadata is checked against
        :data:`HYPERNET_CONFIG_SCHEMA` (types, ranges, unknown keys), ``probe_shape``
        is bounded, and the stored tensors must match the model the config
        builds (names, shapes) -- all before anything is allocated
        (:func:`weightspace.io.build_checked`).

        Raises:
            MissingFileError / InputFileError: the file is missing, a
                directory, empty, truncated, not a saved GraphHyperNetwork,
                or asks for absurd sizes.
            ConfigError: a wrong type, out-of-range value or unknown key in
                the config (``field`` names it).
            StateDictError: a missing, unexpected or mis-shaped tensor (named).
        """
        path, cfg, meta, tensors = read_generator_file(path, "GraphHyperNetwork", HYPERNET_CONFIG_SCHEMA,
                                                       ("probe_shape",))
        shape = meta.get("probe_shape")
        if shape is not None:
            shape = check_numel(shape, path=path, field="probe_shape")
        hn = build_checked(lambda: cls(**cfg, probes=None if shape is None else torch.zeros(shape)), tensors,
                           path=path, field="config")
        return hn.eval()


def _schema() -> dict:

    size = dict(min=1, max=2**14)
    return {
        "hidden": Field(int, **size), "num_layers": Field(int, min=0, max=256), "kernel_grid": Field(int, min=1, max=64),
        "generic_width": Field(int, **size), "gain": Field(float, min=0.0), "rank": Field(int, **size),
        "output_scale": Field(float), "correction": Field(float), "aggr": Field(str), "norm": Field(str),
        "output_correction": Field(float),
    }


#: Schema of a saved :class:`GraphHyperNetwork` config (the constructor's
#: arguments; sizes bounded far above anything trained here).
HYPERNET_CONFIG_SCHEMA = _schema()


def _double_centre(x: Tensor) -> Tensor:
    """``x`` minus its means over axis 0 and over axis 1 (plus the grand mean).

    Applied to the learned correction of every weight tensor: it removes the
    additive components ``a_i + b_j`` (one template shared by all units, a
    common shift), the directions along which training otherwise collapsed to
    identical or dead units, and keeps everything that depends on the pair.
    Means over axes commute with permutations of those axes (equivariant).
    """
    if x.dim() < 2:
        return x - x.mean()
    return x - x.mean(0, keepdim=True) - x.mean(1, keepdim=True) + x.mean((0, 1), keepdim=True)


def _replace(batch, **kw):
    from dataclasses import replace

    return replace(batch, _cache={}, **kw)


# Old names: the training / evaluation functions moved to hypernet_train;
# CONFIG_SCHEMA was shared with checkpoint_flow.
__getattr__ = deprecated_names(__name__, {
    "CONFIG_SCHEMA": "weightspace.generate.hypernet.HYPERNET_CONFIG_SCHEMA",
    **{n: f"weightspace.generate.hypernet_train.{n}"
       for n in ("HypernetHistory", "train_hypernet", "compare_inits", "default_archs")},
})
