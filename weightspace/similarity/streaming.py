r"""Memory-bounded CKA over a stream of minibatches.

Two accumulators, both fed with ``update(acts_a, acts_b)`` one minibatch at a
time (the minibatches of ``acts_a`` and ``acts_b`` hold the same samples),
both producing a layer x layer :class:`~weightspace.similarity.CKAMatrix`:

* :class:`LinearCKAAccumulator` -- the *exact* full-data linear CKA. It keeps
  running means and centred (co)moment matrices, merged batch by batch with the
  pairwise update of Chan et al. (1979), so memory is
  ``O(P*Q + sum p_i^2 + sum q_j^2)`` floats (``P = sum p_i`` widths of side a)
  whatever the number of samples. Use it when the widths are moderate.
* :class:`MinibatchCKAAccumulator` -- minibatch CKA of Nguyen et al. (2021):
  the unbiased HSIC estimator (Song et al. 2012) averaged over minibatches,

  .. math:: \mathrm{CKA}_{mb} = \frac{\frac1k\sum_i \mathrm{HSIC}_1(K_i, L_i)}
      {\sqrt{\frac1k\sum_i \mathrm{HSIC}_1(K_i, K_i)\,\frac1k\sum_i \mathrm{HSIC}_1(L_i, L_i)}},

  memory ``O(b^2)`` per layer for batch size ``b``, independent of the widths.
  Its value estimates population CKA; it does not equal the full-data biased
  CKA. Every minibatch needs at least 4 samples.

All accumulation is float64. Inputs are never modified.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

from weightspace.similarity._validate import (
    SimilarityInputError,
    as_activations,
    warn_degenerate,
)
from weightspace.similarity.cka import CKAMatrix

__all__ = ["LinearCKAAccumulator", "MinibatchCKAAccumulator", "minibatch_cka"]

_SINGLE = "x"


def _layers(acts: Any, side: str, min_samples: int) -> tuple[list[str], list[np.ndarray]]:
    """``acts`` (one ``(b, p)`` array or ``{name: (b, p)}``) -> names, validated
    float32/float64 arrays (converted to float64 when first centred/shifted)."""
    if isinstance(acts, Mapping):
        if not acts:
            raise SimilarityInputError(f"acts_{side} is an empty mapping")
        names = [str(k) for k in acts]
        arrays = [as_activations(v, f"acts_{side}[{k!r}]", min_samples, True) for k, v in acts.items()]
    else:
        names, arrays = [_SINGLE], [as_activations(acts, f"acts_{side}", min_samples, True)]
    b = arrays[0].shape[0]
    for k, v in zip(names, arrays):
        if v.shape[0] != b:
            raise SimilarityInputError(
                f"layers of one minibatch must have the same batch size: acts_{side}[{k!r}] has "
                f"{v.shape[0]} rows, acts_{side}[{names[0]!r}] has {b}"
            )
    return names, arrays


class _Stream:
    """Shared bookkeeping: layer names/widths fixed by the first update."""

    min_batch = 1

    def __init__(self) -> None:
        self.names_a: list[str] | None = None
        self.names_b: list[str] | None = None
        self.widths_a: list[int] = []
        self.widths_b: list[int] = []
        self.self_mode = False
        self.n_samples = 0
        self.n_batches = 0

    def _parse(self, acts_a: Any, acts_b: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
        na, xa = _layers(acts_a, "a", self.min_batch)
        if acts_b is None:
            nb, xb = na, xa
        else:
            nb, xb = _layers(acts_b, "b", self.min_batch)
        if xa[0].shape[0] != xb[0].shape[0]:
            raise SimilarityInputError(
                f"acts_a and acts_b must hold the same samples: batch sizes "
                f"{xa[0].shape[0]} and {xb[0].shape[0]}"
            )
        wa, wb = [x.shape[1] for x in xa], [x.shape[1] for x in xb]
        if self.names_a is None:
            self.names_a, self.names_b = na, nb
            self.widths_a, self.widths_b = wa, wb
            self.self_mode = acts_b is None
            self._init_state()
        else:
            if (acts_b is None) != self.self_mode:
                raise SimilarityInputError(
                    "acts_b must be given on every update or on none (self-comparison)"
                )
            for side, names, widths, got_n, got_w in (
                ("a", self.names_a, self.widths_a, na, wa),
                ("b", self.names_b, self.widths_b, nb, wb),
            ):
                if got_n != names or got_w != widths:
                    raise SimilarityInputError(
                        f"acts_{side} changed between updates: expected layers "
                        f"{dict(zip(names, widths))}, got {dict(zip(got_n, got_w))}"
                    )
        return xa, xb

    def _init_state(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _check_ready(self) -> None:
        if self.names_a is None:
            raise SimilarityInputError("no minibatch was added; call update() first")


class LinearCKAAccumulator(_Stream):
    """Exact linear CKA over minibatches with bounded memory.

    Example::

        acc = LinearCKAAccumulator()
        for xa, xb in batches:          # xa (b, p), xb (b, q) -- or dicts of layers
            acc.update(xa, xb)
        acc.result().values             # (1, 1) or (n_layers_a, n_layers_b)

    Args:
        max_bytes: refuse (with a clear error) layer sets whose moment matrices
            would exceed this many bytes; use :class:`MinibatchCKAAccumulator`
            or pool conv maps over space instead.

    The result equals :func:`~weightspace.similarity.linear_cka` on the
    concatenated data up to float64 rounding. Batches may have any size >= 1;
    :meth:`result` needs >= 2 samples in total.
    """

    def __init__(self, *, max_bytes: int = 2 * 1024**3) -> None:
        super().__init__()
        self.max_bytes = int(max_bytes)

    def _init_state(self) -> None:
        P, Q = sum(self.widths_a), sum(self.widths_b)
        need = 8 * (P * Q + sum(p * p for p in self.widths_a) + sum(q * q for q in self.widths_b))
        if need > self.max_bytes:
            raise SimilarityInputError(
                f"exact streaming linear CKA for these layers needs {need / 2**20:.0f} MiB of "
                f"moment matrices (widths a={self.widths_a}, b={self.widths_b}), above "
                f"max_bytes={self.max_bytes / 2**20:.0f} MiB; use MinibatchCKAAccumulator, "
                "average conv maps over space (reduction='pool_spatial') or raise max_bytes"
            )
        self._off_a = np.concatenate([[0], np.cumsum(self.widths_a)])
        self._off_b = np.concatenate([[0], np.cumsum(self.widths_b)])
        self._shift_a: np.ndarray | None = None
        self._shift_b: np.ndarray | None = None
        self._mean_a = np.zeros(P)
        self._mean_b = np.zeros(Q)
        # each layer's centred second moment (co-moment with itself)
        self._self_a = [np.zeros((p, p)) for p in self.widths_a]
        self._self_b = [np.zeros((q, q)) for q in self.widths_b]
        self._cross = np.zeros((P, Q))

    def update(self, acts_a: Any, acts_b: Any = None) -> "LinearCKAAccumulator":
        """Add one minibatch.

        Args:
            acts_a: ``(b, p)`` activations, or ``{layer: (b, p_i)}``.
            acts_b: ``(b, q)`` or ``{layer: (b, q_j)}`` for the same ``b``
                samples; ``None`` compares ``acts_a`` with itself.

        Returns:
            ``self`` (the accumulator's state is updated; the inputs are not).
        """
        # A self-comparison is stored like any other pair: the full layer x layer
        # matrix needs the cross blocks between different layers anyway.
        xa, xb = self._parse(acts_a, acts_a if acts_b is None else acts_b)
        ba = np.concatenate(xa, axis=1) if len(xa) > 1 else xa[0]
        if self._shift_a is None:
            # Shift by the first sample ever seen: exactly constant features stay
            # exactly zero and large offsets cost no precision.
            self._shift_a = ba[0].astype(np.float64)
        ba = np.subtract(ba, self._shift_a, dtype=np.float64)
        bb = np.concatenate(xb, axis=1) if len(xb) > 1 else xb[0]
        if self._shift_b is None:
            self._shift_b = bb[0].astype(np.float64)
        bb = np.subtract(bb, self._shift_b, dtype=np.float64)
        m = ba.shape[0]
        n = self.n_samples
        tot = n + m
        mean_ba = ba.mean(axis=0)
        ca = ba - mean_ba
        da = mean_ba - self._mean_a
        w = n * m / tot
        for i, s in enumerate(self._self_a):
            sl = slice(self._off_a[i], self._off_a[i + 1])
            s += ca[:, sl].T @ ca[:, sl]
            if n:
                s += w * np.outer(da[sl], da[sl])
        mean_bb = bb.mean(axis=0)
        cb = bb - mean_bb
        db = mean_bb - self._mean_b
        for j, s in enumerate(self._self_b):
            sl = slice(self._off_b[j], self._off_b[j + 1])
            s += cb[:, sl].T @ cb[:, sl]
            if n:
                s += w * np.outer(db[sl], db[sl])
        self._cross += ca.T @ cb
        if n:
            self._cross += w * np.outer(da, db)
        self._mean_b += db * (m / tot)
        self._mean_a += da * (m / tot)
        self.n_samples = tot
        self.n_batches += 1
        return self

    def result(self) -> CKAMatrix:
        """Linear CKA of every (layer a, layer b) pair over all samples so far.

        Returns:
            :class:`CKAMatrix`, ``values`` of shape ``(n_layers_a, n_layers_b)``;
            a zero-variance layer gives 0.0 (with a warning).
        """
        self._check_ready()
        if self.n_samples < 2:
            raise SimilarityInputError(f"linear CKA needs >= 2 samples, got {self.n_samples}")
        na, nb = self.names_a, self.names_b
        self_a = [float(np.vdot(s, s)) for s in self._self_a]
        self_b = [float(np.vdot(s, s)) for s in self._self_b]
        out = np.zeros((len(na), len(nb)))
        for i in range(len(na)):
            for j in range(len(nb)):
                if self_a[i] <= 0 or self_b[j] <= 0:
                    warn_degenerate(f"layer {na[i] if self_a[i] <= 0 else nb[j]!r}", "CKA = 0.0")
                    continue
                blk = self._cross[self._off_a[i] : self._off_a[i + 1], self._off_b[j] : self._off_b[j + 1]]
                num = float(np.vdot(blk, blk))
                out[i, j] = min(1.0, max(0.0, num / np.sqrt(self_a[i]) / np.sqrt(self_b[j])))
        return CKAMatrix(out, tuple(na), tuple(nb), self.n_samples, "linear", False)


class MinibatchCKAAccumulator(_Stream):
    """Minibatch linear CKA (Nguyen et al. 2021) with unbiased HSIC.

    Example::

        acc = MinibatchCKAAccumulator()
        for xa, xb in batches:          # (b, p), (b, q) with b >= 4, or dicts of layers
            acc.update(xa, xb)
        acc.result().values

    Each update forms one ``(b, b)`` linear Gram per layer and
    the HSIC_1 of every layer pair; nothing grows with the number of batches.
    Batches should be i.i.d. draws of similar size (each counts equally, as in
    the paper).
    """

    min_batch = 4

    def _init_state(self) -> None:
        self._hab = np.zeros((len(self.names_a), len(self.names_b)))
        self._haa = np.zeros(len(self.names_a))
        self._hbb = np.zeros(len(self.names_b))

    @staticmethod
    def _terms(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
        """Unbiased-HSIC pieces of one layer's batch ``x`` ``(b, p)``:
        (flattened K~, row sums of K~, 1^T K~ 1, <K~, K~>), K~ = Gram with zero diagonal."""
        # HSIC_1 is translation invariant; centring (in float64) only helps rounding
        xc = np.subtract(x, x.mean(axis=0, dtype=np.float64), dtype=np.float64)
        k = xc @ xc.T
        np.fill_diagonal(k, 0.0)
        rows = k.sum(axis=1)
        flat = k.ravel()
        return flat, rows, float(rows.sum()), float(flat @ flat)

    def update(self, acts_a: Any, acts_b: Any = None) -> "MinibatchCKAAccumulator":
        """Add one minibatch (``b >= 4`` samples).

        Args:
            acts_a: ``(b, p)`` or ``{layer: (b, p_i)}``.
            acts_b: ``(b, q)`` or ``{layer: (b, q_j)}``, same samples;
                ``None`` compares ``acts_a`` with itself.

        Returns:
            ``self``.

        Raises:
            SimilarityInputError: ``b < 4`` (drop or merge the short last
                batch), mismatched batches, NaN/Inf.
        """
        xa, xb = self._parse(acts_a, acts_b)
        n = xa[0].shape[0]
        ta = [self._terms(x) for x in xa]
        tb = ta if self.self_mode else [self._terms(x) for x in xb]
        c1 = 1.0 / ((n - 1) * (n - 2))
        c2 = 2.0 / (n - 2)
        norm = 1.0 / (n * (n - 3))

        def h1(dot, r1, r2, s1, s2):
            return (dot + s1 * s2 * c1 - c2 * (r1 @ r2)) * norm

        fa = np.stack([t[0] for t in ta])
        fb = fa if self.self_mode else np.stack([t[0] for t in tb])
        dots = fa @ fb.T  # <K~_i, L~_j> for all pairs at once
        ra = np.stack([t[1] for t in ta])
        rb = ra if self.self_mode else np.stack([t[1] for t in tb])
        sa = np.array([t[2] for t in ta])
        sb = np.array([t[2] for t in tb])
        self._hab += (dots + np.outer(sa, sb) * c1 - c2 * (ra @ rb.T)) * norm
        self._haa += np.array([h1(t[3], t[1], t[1], t[2], t[2]) for t in ta])
        self._hbb += np.array([h1(t[3], t[1], t[1], t[2], t[2]) for t in tb])
        self.n_samples += n
        self.n_batches += 1
        return self

    def result(self) -> CKAMatrix:
        """Minibatch CKA of every layer pair.

        Returns:
            :class:`CKAMatrix` (``unbiased=True``, ``method="minibatch"``);
            a layer whose summed self-HSIC is not positive (zero variance)
            gives 0.0 with a warning. Values can fall slightly outside
            ``[0, 1]`` (unbiased estimator).
        """
        self._check_ready()
        na, nb = self.names_a, self.names_b
        out = np.zeros((len(na), len(nb)))
        for i in range(len(na)):
            for j in range(len(nb)):
                if self._haa[i] <= 0 or self._hbb[j] <= 0:
                    warn_degenerate(f"layer {na[i] if self._haa[i] <= 0 else nb[j]!r}", "CKA = 0.0")
                    continue
                out[i, j] = self._hab[i, j] / np.sqrt(self._haa[i]) / np.sqrt(self._hbb[j])
        return CKAMatrix(
            out, tuple(na), tuple(nb), self.n_samples, "minibatch", True, {"n_batches": self.n_batches}
        )


def minibatch_cka(batches: Iterable[tuple[Any, Any]]) -> float:
    """Minibatch linear CKA of one representation pair.

    Args:
        batches: iterable of ``(X_b, Y_b)``, shapes ``(b, p)`` and ``(b, q)``,
            ``b >= 4``; torch or numpy.

    Returns:
        the minibatch CKA estimate (float).
    """
    acc = MinibatchCKAAccumulator()
    for xa, xb in batches:
        acc.update(xa, xb)
    return float(acc.result().values[0, 0])
