"""The full symmetry group of a spec: permutations x per-unit scalings x signs.

An element :math:`g = (P, d)` (:class:`Symmetry`) acts on weights :math:`w` by

.. math::
    g \\cdot w = S_d(P w),

first the permutation :math:`P` (``spec.groups``, gather convention
``new[i] = old[perm[i]]``), then the factors :math:`d` of every
:class:`~weightspace.symmetry.scaling.ScaleGroup` ``s`` on the permuted
units: every slice of unit :math:`i` listed in ``s.axes`` is multiplied by
:math:`d_{s,i}` (roles ``in``, ``stat``) or :math:`1/d_{s,i}` (role
``out``). :math:`d_{s,i} > 0` if ``s`` has only ``"scale"``,
:math:`\\pm 1` if only ``"sign"``, any nonzero real if both.

Every function here is pure and also works on a *batch* of networks
(``batched=True``: each tensor has a leading network axis ``N``; the
permutations and factors of a batched :class:`Symmetry` are ``[N, size]``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch

from weightspace.errors import NonFiniteWeightsError, SpecError
from weightspace.symmetry.permutation import (
    Permutation,
    apply_block_maps,
    apply_block_maps_batched,
    block_index_maps,
    block_index_maps_batched,
    canonical_permutation_batched,
    identity_permutation,
    random_permutation,
    validate_permutation,
)
from weightspace.symmetry.scaling import ScaleAxis, ScaleGroup
from weightspace.symmetry.spec import PermutationSpec

__all__ = [
    "Symmetry",
    "apply_scaling",
    "apply_symmetry",
    "canonicalize",
    "identity_symmetry",
    "random_symmetry",
]


@dataclass(frozen=True)
class Symmetry:
    """An element :math:`(P, d)` of a spec's full group (module docstring).

    Attributes:
        perm: ``{permutation group name: LongTensor [size]}`` (``[N, size]``
            batched).
        scale: ``{scale group name: float64 [size]}`` (``[N, size]``
            batched): the factors :math:`d`, applied after ``perm``.
    """

    perm: Permutation
    scale: dict[str, torch.Tensor]


def identity_symmetry(spec: PermutationSpec) -> Symmetry:
    """The identity: ``arange`` permutations, unit factors."""
    return Symmetry(
        identity_permutation(spec),
        {s.name: torch.ones(s.size, dtype=torch.float64) for s in spec.scalings},
    )


def random_symmetry(
    spec: PermutationSpec,
    seed: int | None = None,
    *,
    generator: torch.Generator | None = None,
    permute: bool = True,
    scale: bool = True,
    sign: bool = True,
    log_scale_std: float = 0.5,
) -> Symmetry:
    """A random element of the full group.

    Permutations are uniform; a positive factor is
    :math:`\\exp(\\sigma z)`, :math:`z \\sim \\mathcal N(0, 1)`,
    :math:`\\sigma` = ``log_scale_std``; a sign is uniform on :math:`\\pm 1`.

    Args:
        seed / generator: one is required (randomness is explicit).
        permute / scale / sign: draw that part (else the identity part).
    """
    if generator is None:
        if seed is None:
            raise ValueError("random_symmetry needs a seed or a torch.Generator")
        generator = torch.Generator().manual_seed(int(seed))
    perm = random_permutation(spec, generator=generator) if permute else identity_permutation(spec)
    factors = {}
    for s in spec.scalings:
        d = torch.ones(s.size, dtype=torch.float64)
        if scale and s.has_scale:
            d = torch.exp(log_scale_std * torch.randn(s.size, generator=generator, dtype=torch.float64))
        if sign and s.has_sign:
            d = d * (torch.randint(0, 2, (s.size,), generator=generator) * 2 - 1).double()
        factors[s.name] = d
    return Symmetry(perm, factors)


def _check_factors(spec: PermutationSpec, scale: Mapping[str, torch.Tensor], batch: int | None) -> None:
    names = {s.name for s in spec.scalings}
    unknown = [k for k in scale if k not in names]
    if unknown:
        raise SpecError(f"factors for unknown scale group(s) {unknown}; the spec has {sorted(names)}")
    for s in spec.scalings:
        if s.name not in scale:
            continue
        d = torch.as_tensor(scale[s.name])
        want = (s.size,) if batch is None else (batch, s.size)
        if tuple(d.shape) != want:
            raise SpecError(f"scale group {s.name!r}: expected factors of shape {want}, got {tuple(d.shape)}")
        if not torch.isfinite(d).all() or (d == 0).any():
            raise SpecError(f"scale group {s.name!r}: factors must be finite and nonzero")
        if not s.has_sign and (d < 0).any():
            raise SpecError(f"scale group {s.name!r} has no sign symmetry ({s.kinds}); factors must be > 0")
        if not s.has_scale and not torch.equal(d.abs(), torch.ones_like(d.abs())):
            raise SpecError(f"scale group {s.name!r} has no scaling symmetry ({s.kinds}); factors must be +-1")


def _view(t: torch.Tensor, ax: ScaleAxis, size: int) -> torch.Tensor:
    """``[N, size, rest]`` view (or copy) of unit slices of batched ``t``."""
    sl = t.narrow(ax.axis + 1, ax.start, size * ax.unit).movedim(ax.axis + 1, 1)
    return sl.reshape(sl.shape[0], size, -1)


def _mul_(t: torch.Tensor, ax: ScaleAxis, f: torch.Tensor) -> None:
    """Multiply unit slices of batched ``t`` in place by ``f`` ``[N, size]``
    (``f ** power``)."""
    n, size = f.shape
    f = (f if ax.power > 0 else 1.0 / f).to(t.dtype).repeat_interleave(ax.unit, dim=1)
    shape = [n] + [1] * (t.dim() - 1)
    shape[ax.axis + 1] = size * ax.unit
    t.narrow(ax.axis + 1, ax.start, size * ax.unit).mul_(f.view(shape))


def _scale_(tensors: dict[str, torch.Tensor], spec: PermutationSpec, scale: Mapping[str, torch.Tensor]) -> None:
    for s in spec.scalings:
        if s.name in scale:
            d = torch.as_tensor(scale[s.name])
            for ax in s.axes:
                if ax.param in tensors:
                    _mul_(tensors[ax.param], ax, d)


def _batched(state_dict: Mapping[str, torch.Tensor], batched: bool) -> tuple[dict[str, torch.Tensor], int]:
    """Clones with a leading network axis, and the number of networks."""
    out = {k: (v if batched else v.unsqueeze(0)).clone() for k, v in state_dict.items()}
    sizes = {v.shape[0] for v in out.values()}
    if len(sizes) > 1:
        raise SpecError(f"batched state_dict: tensors have different leading (network) sizes {sorted(sizes)}")
    return out, (sizes.pop() if sizes else 1)


def _check_shapes(tensors: Mapping[str, torch.Tensor], spec: PermutationSpec) -> None:
    for name, t in tensors.items():
        want = spec.param_shapes.get(name)
        if want is not None and tuple(t.shape[1:]) != tuple(want):
            raise SpecError(f"tensor {name!r} has shape {tuple(t.shape[1:])}, the spec expects {tuple(want)}")


def apply_scaling(
    state_dict: Mapping[str, torch.Tensor],
    spec: PermutationSpec,
    scale: Mapping[str, torch.Tensor],
    *,
    batched: bool = False,
) -> dict[str, torch.Tensor]:
    """A new state_dict with the factors ``{scale group: d}`` applied
    (groups not in ``scale`` are left alone; see the module docstring)."""
    tensors, n = _batched(state_dict, batched)
    _check_shapes(tensors, spec)
    _check_factors(spec, scale, n if batched else None)
    if not batched:
        scale = {k: torch.as_tensor(v)[None] for k, v in scale.items()}
    _scale_(tensors, spec, scale)
    return tensors if batched else {k: v[0] for k, v in tensors.items()}


def _permute_batched(tensors: dict[str, torch.Tensor], spec: PermutationSpec, perm: Mapping[str, torch.Tensor]):
    """Apply per-network permutations ``[N, size]`` (one gather per tensor axis)."""
    return apply_block_maps_batched(tensors, spec, block_index_maps_batched(spec, perm))


def apply_symmetry(
    state_dict: Mapping[str, torch.Tensor],
    spec: PermutationSpec,
    g: Symmetry | Mapping[str, torch.Tensor],
    *,
    batched: bool = False,
) -> dict[str, torch.Tensor]:
    """``g . w = S_d(P w)`` (module docstring); a plain permutation dict is
    accepted as ``(P, 1)``. The network computes the same function (eval
    mode; see ``tests/symmetry``)."""
    if not isinstance(g, Symmetry):
        g = Symmetry(dict(g), {})
    tensors, n = _batched(state_dict, batched)
    _check_shapes(tensors, spec)
    _check_factors(spec, g.scale, n if batched else None)
    if batched:
        for grp in spec.groups:
            v = torch.as_tensor(g.perm.get(grp.name, torch.empty(0)))
            if tuple(v.shape) != (n, grp.size):
                raise SpecError(f"batched permutation of group {grp.name!r} must have shape ({n}, {grp.size})")
            if v.dtype.is_floating_point or not torch.equal(torch.sort(v, dim=1).values, torch.arange(grp.size).expand(n, -1)):
                raise SpecError(f"group {grp.name!r}: a row is not a permutation of 0..{grp.size - 1}")
        tensors = _permute_batched(tensors, spec, g.perm)
        _scale_(tensors, spec, g.scale)
        return tensors
    validate_permutation(spec, g.perm)
    tensors = {k: v[0] for k, v in tensors.items()}
    out = apply_block_maps(tensors, spec, block_index_maps(spec, g.perm))
    out = {k: v.unsqueeze(0) for k, v in out.items()}
    _scale_(out, spec, {k: torch.as_tensor(v)[None] for k, v in g.scale.items()})
    return {k: v[0] for k, v in out.items()}


# ---------------------------------------------------------------- canonical form


def _sign_stat_axes(spec: PermutationSpec) -> dict[str, list[ScaleAxis]]:
    """Per sign group, the incoming axes (roles ``in``/``stat``) whose
    tensors no *later* sign group and no other axis of the same group
    touches: after the earlier groups are fixed, only this group's own sign
    changes them."""
    signs = [s for s in spec.scalings if s.has_sign]
    out: dict[str, list[ScaleAxis]] = {}
    for k, s in enumerate(signs):
        later = {a.param for t in signs[k + 1 :] for a in t.axes}
        own = {}
        for a in s.axes:
            own.setdefault(a.param, set()).add(a.axis)
        out[s.name] = [
            a for a in s.axes if a.role != "out" and a.param not in later and len(own[a.param]) == 1
        ]
    return out


class _BalancePlan:
    """The balancing objective of a spec as a padded incidence list.

    Every entry of a tensor some scale group touches, after summing the
    squares over untouched axes, is one row ``p`` with energy :math:`E_p`;
    ``M[p, v]`` is the power (+-1) of unit variable :math:`x_v = \\log d_v`
    in that entry, so the objective is
    :math:`f(x) = \\sum_p E_p \\exp(2 (M x)_p)`.
    """

    def __init__(self, spec: PermutationSpec) -> None:
        groups = [s for s in spec.scalings if s.has_scale]
        self.groups = groups
        self.offsets, v = {}, 0
        for s in groups:
            self.offsets[s.name] = v
            v += s.size
        self.nvars = v
        by_param: dict[str, list[tuple[ScaleAxis, int]]] = {}
        for s in groups:
            for ax in s.axes:
                by_param.setdefault(ax.param, []).append((ax, self.offsets[s.name]))
        self.params: list[tuple[str, tuple[int, ...], torch.Tensor]] = []
        rows, cols, vals, nrows = [], [], [], 0
        for param, entries in by_param.items():
            shape = spec.param_shapes[param]
            dims = tuple(sorted({ax.axis for ax, _ in entries}))
            red = [shape[d] for d in dims]
            # per touched dim: layers of (var index or -1, power) per position
            layers: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {d: [] for d in dims}
            for ax, off in entries:
                pos = torch.arange(ax.start, ax.start + self._size(ax, groups) * ax.unit)
                var = off + torch.div(pos - ax.start, ax.unit, rounding_mode="floor")
                for lv, lp in layers[ax.axis]:
                    if (lv[pos] < 0).all():
                        lv[pos], lp[pos] = var, float(ax.power)
                        break
                else:
                    lv = torch.full((shape[ax.axis],), -1, dtype=torch.long)
                    lp = torch.zeros(shape[ax.axis], dtype=torch.float64)
                    lv[pos], lp[pos] = var, float(ax.power)
                    layers[ax.axis].append((lv, lp))
            idx = torch.arange(math.prod(red)).view(red)
            r, c, val = [], [], []
            for k, d in enumerate(dims):
                coord = idx.movedim(k, -1)  # positions along dim d, last
                for lv, lp in layers[d]:
                    vv = lv.expand_as(coord)
                    pp = lp.expand_as(coord)
                    keep = vv >= 0
                    r.append(coord[keep])
                    c.append(vv[keep])
                    val.append(pp[keep])
            r, c, val = torch.cat(r), torch.cat(c), torch.cat(val)
            used = torch.unique(r)
            remap = torch.full((math.prod(red),), -1, dtype=torch.long)
            remap[used] = torch.arange(len(used)) + nrows
            rows.append(remap[r])
            cols.append(c)
            vals.append(val)
            self.params.append((param, dims, used))
            nrows += len(used)
        self.nrows = nrows
        if nrows:
            # sum duplicate (row, var) pairs (a var on two axes of one entry)
            key = torch.cat(rows) * (self.nvars + 1) + torch.cat(cols)
            key, inv = torch.unique(key, return_inverse=True)
            val = torch.zeros(len(key), dtype=torch.float64).index_add_(0, inv, torch.cat(vals))
            r, c = torch.div(key, self.nvars + 1, rounding_mode="floor"), key % (self.nvars + 1)
        else:
            r = c = torch.zeros(0, dtype=torch.long)
            val = torch.zeros(0, dtype=torch.float64)
        # padded per-row lists (a row touches at most a few units); padding
        # points at a dummy variable ``nvars`` with power 0
        counts = torch.bincount(r, minlength=nrows)
        k = int(counts.max()) if nrows else 1
        first = torch.cumsum(counts, 0) - counts
        slot = torch.arange(len(r)) - first[r]
        self.idx = torch.full((nrows, k), self.nvars, dtype=torch.long)
        self.pow = torch.zeros(nrows, k, dtype=torch.float64)
        self.idx[r, slot] = c
        self.pow[r, slot] = val
        # small problems: a dense M makes every product one matmul
        self.dense = None
        if self.nvars <= _DENSE_VARS and nrows * self.nvars <= 2**24:
            self.dense = torch.zeros(nrows, self.nvars + 1, dtype=torch.float64)
            self.dense[r, c] = val
            self.dense = self.dense[:, : self.nvars].contiguous()

    @staticmethod
    def _size(ax: ScaleAxis, groups: list[ScaleGroup]) -> int:
        for s in groups:
            if ax in s.axes:
                return s.size
        raise AssertionError("internal: scale axis without group")  # pragma: no cover

    def energies(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``E`` ``[N, rows]`` (float64)."""
        out = []
        for param, dims, used in self.params:
            t = tensors[param].double().pow(2)
            other = [d + 1 for d in range(t.dim() - 1) if d not in dims]
            e = t.sum(dim=other) if other else t
            out.append(e.reshape(e.shape[0], -1)[:, used])
        return torch.cat(out, dim=1)

    def mv(self, x: torch.Tensor) -> torch.Tensor:
        """``x M^T``: ``[N, vars] -> [N, rows]``."""
        if self.dense is not None:
            return x @ self.dense.t()
        xp = torch.cat([x, x.new_zeros(x.shape[0], 1)], dim=1)
        return (xp[:, self.idx] * self.pow).sum(-1)

    def hessian(self, c: torch.Tensor) -> torch.Tensor:
        """``4 M^T diag(c) M`` per network: ``[N, rows] -> [N, vars, vars]``."""
        n, v1 = c.shape[0], self.nvars + 1
        k = self.idx.shape[1]
        flat = (self.idx[:, :, None] * v1 + self.idx[:, None, :]).reshape(-1)
        w = (self.pow[:, :, None] * self.pow[:, None, :]).reshape(self.nrows, k * k)
        out = c.new_zeros(n, v1 * v1)
        out.index_add_(1, flat, (4 * c[:, :, None] * w).reshape(n, -1))
        return out.view(n, v1, v1)[:, : self.nvars, : self.nvars]

    def rmv(self, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``y W`` with ``W = M`` or ``weight`` (same pattern): ``[N, rows] -> [N, vars]``."""
        if self.dense is not None and weight is None:
            return y @ self.dense
        w = self.pow if weight is None else weight
        out = y.new_zeros(y.shape[0], self.nvars + 1)
        out.index_add_(1, self.idx.reshape(-1), (y[:, :, None] * w).reshape(y.shape[0], -1))
        return out[:, : self.nvars]


_DENSE_VARS = 384  # batched dense Newton systems up to this many unit variables, then CG
_CG_ITERS = 1000

_PLANS: dict[int, tuple[PermutationSpec, _BalancePlan]] = {}


def _plan(spec: PermutationSpec) -> _BalancePlan:
    hit = _PLANS.get(id(spec))
    if hit is None or hit[0] is not spec:
        if len(_PLANS) > 32:
            _PLANS.clear()
        hit = _PLANS[id(spec)] = (spec, _BalancePlan(spec))
    return hit[1]


def _balance_(
    tensors: dict[str, torch.Tensor], spec: PermutationSpec, n: int, tol: float, max_iter: int
) -> dict[str, torch.Tensor]:
    """Minimise the total squared norm over the positive factors (damped
    Newton with preconditioned conjugate gradients and backtracking, batched
    over networks); scale ``tensors`` in place and return the factors."""
    plan = _plan(spec)
    x = torch.zeros(n, plan.nvars, dtype=torch.float64)
    if plan.nvars and plan.nrows:
        E = plan.energies(tensors)
        # a unit without incoming or outgoing energy has no finite optimum: frozen
        pos = (E > 0).double()
        live = ((plan.rmv(pos, (plan.pow > 0).double()) > 0) & (plan.rmv(pos, (plan.pow < 0).double()) > 0)).double()

        def fval(z):
            return (E * torch.exp(2 * plan.mv(z))).sum(1)

        for _ in range(max_iter):
            c = E * torch.exp(2 * plan.mv(x))
            f = c.sum(1)
            g = 2 * plan.rmv(c) * live
            diag = 4 * plan.rmv(c, plan.pow**2) * live

            if plan.nvars <= _DENSE_VARS:
                H = plan.hessian(c) * live[:, :, None] * live[:, None, :]
                H = H + torch.diag_embed(1e-12 * diag + (1.0 - live))
                chol, info = torch.linalg.cholesky_ex(H)
                if bool((info == 0).all()):
                    step = torch.cholesky_solve(-g[:, :, None], chol)[:, :, 0]
                else:  # pragma: no cover - numerically indefinite: LU instead
                    step = torch.linalg.solve(H, -g)
            else:  # conjugate gradients on H v products (O(rows) each)

                def hv(v):
                    return 4 * plan.rmv(c * plan.mv(v * live)) * live + 1e-12 * diag * v

                pre = torch.where(diag > 0, 1.0 / diag.clamp_min(1e-300), torch.ones_like(diag))
                step = _pcg(hv, -g, pre, iters=_CG_ITERS, rtol=1e-12)
            t = torch.ones(n, 1, dtype=torch.float64)
            slope = (g * step).sum(1, keepdim=True)
            for _ls in range(40):
                # (slack for rounding: near the optimum f changes below eps)
                bad = fval(x + t * step) > f + 0.25 * t.squeeze(1) * slope.squeeze(1) + 1e-13 * f
                if not bad.any():
                    break
                t = torch.where(bad[:, None], t * 0.5, t)
            x = x + t * step
            if (t * step).abs().max().item() < tol:
                break
    d = {}
    for s in plan.groups:
        o = plan.offsets[s.name]
        d[s.name] = torch.exp(x[:, o : o + s.size])
        for ax in s.axes:
            _mul_(tensors[ax.param], ax, d[s.name])
    return d


def _pcg(hv, b: torch.Tensor, pre: torch.Tensor, iters: int, rtol: float) -> torch.Tensor:
    """Batched Jacobi-preconditioned conjugate gradients for ``H x = b``
    (rows are independent systems; ``hv(v)`` is ``H v`` for a batch ``v``)."""
    x = torch.zeros_like(b)
    r = b.clone()
    z = pre * r
    p = z.clone()
    rz = (r * z).sum(1, keepdim=True)
    stop = rtol * b.norm(dim=1, keepdim=True)
    for _ in range(iters):
        if bool((r.norm(dim=1, keepdim=True) <= stop).all()):
            break
        hp = hv(p)
        php = (p * hp).sum(1, keepdim=True)
        alpha = torch.where(php > 0, rz / php.clamp_min(1e-300), torch.zeros_like(rz))
        x = x + alpha * p
        r = r - alpha * hp
        z = pre * r
        rz_new = (r * z).sum(1, keepdim=True)
        beta = torch.where(rz > 0, rz_new / rz.clamp_min(1e-300), torch.zeros_like(rz))
        p = z + beta * p
        rz = rz_new
    return x


def canonicalize(
    state_dict: Mapping[str, torch.Tensor],
    spec: PermutationSpec,
    *,
    scale: bool = True,
    sign: bool = True,
    permute: bool = True,
    batched: bool = False,
    tol: float = 1e-10,
    max_iter: int = 100,
) -> tuple[dict[str, torch.Tensor], Symmetry]:
    """A canonical representative of ``state_dict``'s orbit under the full
    group, and the element that maps ``state_dict`` to it.

    Three steps, each canonical for what the previous ones left free:

    1. **Scale** (groups with ``"scale"``): the positive factors that
       minimise the total squared norm of the scaled slices,

       .. math::
           d^\\star = \\arg\\min_{d > 0} \\sum_{s, i} \\Big(
               d_{s,i}^2 \\lVert w^{\\mathrm{in}}_{s,i} \\rVert^2
               + d_{s,i}^{-2} \\lVert w^{\\mathrm{out}}_{s,i} \\rVert^2 \\Big)

       (a *balanced* network: every unit's incoming and outgoing norms are
       equal, :math:`\\lVert w^{\\mathrm{in}}_{s,i} \\rVert =
       \\lVert w^{\\mathrm{out}}_{s,i} \\rVert`). The objective is strictly
       convex in :math:`\\log d`, so the minimiser is unique when every unit
       has nonzero incoming and outgoing weights; it is found by
       damped Newton steps on :math:`x = \\log d` (batched dense solves
       up to 384 units, conjugate gradients above) until no factor moves
       by more than ``tol`` (relative) or after ``max_iter`` steps
       (typically 5-7 steps; about 1.4 s for ResNet-20, a minute for
       ResNet-18 on one loaded core). A unit with all-zero
       incoming or outgoing slices keeps :math:`d = 1` (its scale is not
       canonicalized). Signs and permutations do not change the objective,
       so this step commutes with them.
    2. **Sign** (groups with ``"sign"``, in graph order): unit :math:`i` is
       flipped so that its incoming entry of largest magnitude is positive,

       .. math::
           \\sigma_{s,i} = \\operatorname{sign} x_{s,i,k^\\star},
           \\quad k^\\star = \\arg\\max_k |x_{s,i,k}|,

       over the incoming slices (``in``, ``stat``) that no later sign group
       touches (earlier groups are already fixed). Ties in :math:`|x|` go
       to the first position (axes in ``s.axes`` order, then row-major);
       an all-zero unit keeps :math:`\\sigma = +1`, and so does a group all
       of whose incoming slices a later sign group also touches (a cycle
       through a residual stream; none of the registered architectures).
    3. **Permutation**: every group's units sorted by decreasing
       :func:`~weightspace.symmetry.neuron_energy` of the result of steps
       1-2 (stable: equal energies keep their order, so networks with
       exactly tied units are canonical only up to those ties).

    So ``canonicalize(apply_symmetry(w, g))`` equals ``canonicalize(w)`` up
    to the balancing tolerance for every ``g``, and canonicalizing twice
    changes nothing (up to the same tolerance).

    Args:
        scale / sign / permute: which steps to run.
        batched: every tensor has a leading network axis ``[N, ...]``; all
            steps but the final permutation gather are vectorised over it.

    Raises:
        SpecError: a tensor is missing or has the wrong shape.
        NonFiniteWeightsError: a tensor has NaN or Inf values.

    Returns:
        ``(canonical state_dict, g)`` with ``apply_symmetry(state_dict, g) ==
        canonical``.
    """
    tensors, n = _batched(state_dict, batched)
    _check_shapes(tensors, spec)
    missing = [k for k in spec.param_axes if k not in tensors]
    if missing:
        raise SpecError(f"state_dict lacks {len(missing)} tensor(s) the spec permutes, e.g. {missing[0]!r}")
    for k, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise NonFiniteWeightsError(
                f"tensor {k!r} has NaN or Inf values; canonicalize needs finite weights", field=k
            )
    total = {s.name: torch.ones(n, s.size, dtype=torch.float64) for s in spec.scalings}

    if scale:
        d = _balance_(tensors, spec, n, tol, max_iter)
        for k, v in d.items():
            total[k] *= v
    if sign:
        stat_axes = _sign_stat_axes(spec)
        for s in spec.scalings:
            axes = stat_axes.get(s.name)
            if not axes:
                continue
            x = torch.cat([_view(tensors[a.param], a, s.size).double() for a in axes], dim=-1)
            pick = x.gather(-1, x.abs().argmax(-1, keepdim=True)).squeeze(-1)
            f = torch.where(pick < 0, -1.0, 1.0).double()
            for a in s.axes:
                _mul_(tensors[a.param], a, f)
            total[s.name] *= f
    if permute:
        perm = canonical_permutation_batched(tensors, spec)
        tensors = _permute_batched(tensors, spec, perm)
        for s in spec.scalings:
            total[s.name] = total[s.name].gather(1, perm[s.group])
    else:
        perm = {g.name: torch.arange(g.size).expand(n, g.size).clone() for g in spec.groups}
    if batched:
        return tensors, Symmetry(perm, total)
    return {k: v[0] for k, v in tensors.items()}, Symmetry(
        {k: v[0] for k, v in perm.items()}, {k: v[0] for k, v in total.items()}
    )

