"""Novelty report for generated checkpoints: is a sample new, or a (permuted)
copy of a training checkpoint?

Distances are **relative to the networks' scale**. For two networks ``a`` and
``b`` (flat vectors of all float values, ``b`` aligned to ``a``)::

    rel(a, b) = ||a - b|| / sqrt((||a||^2 + ||b||^2) / 2)

i.e. the L2 distance divided by the root-mean-square of the two norms. It is
0 for identical networks, about sqrt(2) for two independent random networks
of the same scale (whatever that scale is), and never more than 2. An
absolute distance would call two tiny networks (e.g. N(0, 1e-3) draws) close
just because both are small.

For every sample:

* **nearest training checkpoint after permutation alignment**: candidates
  are the ``top_k`` training checkpoints nearest in canonical form
  (:func:`weightspace.symmetry.canonicalize`, units sorted by energy; relative
  distance); each is then aligned to the sample by weight matching
  (:func:`weightspace.merge.weight_matching`, Git Re-Basin) and the smallest
  relative distance wins (the canonical-form distance is also a valid
  alignment and is kept if smaller). Without ``weightspace.merge`` the
  canonical distance is used alone.
* ``distance``: the L2 distance to that checkpoint (absolute, for
  reference); ``rel_distance``: ``rel(sample, checkpoint)`` as above;
  ``ratio`` = ``rel_distance`` / the median over training checkpoints of the
  relative distance to the nearest checkpoint of *another* training run (same
  alignment) -- the scale on which two independently trained networks differ.
* **agreement**: fraction of test inputs on which the sample and its nearest
  checkpoint predict the same class; **accuracy** of the sample.
* flags: ``copy`` when ``rel_distance <= copy_tol`` (default 1e-6: an exact
  copy up to a permutation and float rounding), ``near_copy`` when ``ratio <
  near_copy_ratio`` (default 0.1: ten times closer to one training checkpoint
  than training runs are to each other). The thresholds are in
  ``report.settings`` and ``report.summary["thresholds"]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from weightspace.generate._common import TaskData, accuracy, predictions
from weightspace.generate.checkpoint_flow import CheckpointSet, state_dict_to_vector, vector_to_state_dict
from weightspace.symmetry import apply_permutation, canonicalize

__all__ = ["NoveltyReport", "novelty_report", "aligned_distance", "relative_distance"]


@dataclass
class NoveltyReport:
    """Per-sample rows, the training-set reference scale and a summary.

    ``rows[i]``: ``distance``, ``rel_distance``, ``ratio``, ``nearest``
    (``member_id``, ``epoch``, metric), ``agreement``, ``accuracy``,
    ``copy``, ``near_copy``, ``condition`` (if given). ``reference``: the
    between-runs *relative* distances (median, p10, p90). ``summary`` holds
    the counts and the ``thresholds`` the flags used.
    """

    rows: list[dict]
    reference: dict
    summary: dict
    alignment: str
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"rows": self.rows, "reference": self.reference, "summary": self.summary,
                "alignment": self.alignment, "settings": self.settings}

    @property
    def copies(self) -> list[int]:
        """Indices of samples flagged as exact (permuted) copies."""
        return [i for i, r in enumerate(self.rows) if r["copy"]]

    def thresholds_text(self) -> str:
        """The flag rules in words, for printing beside the report."""
        t = self.summary["thresholds"]
        return (f"copy: relative distance <= {t['copy_tol']:g}; near-copy: relative distance < "
                f"{t['near_copy_ratio']:g} x the between-runs median ({self.reference['between_runs_median']:.3g}); "
                "relative distance = ||a - b|| / rms(||a||, ||b||), ~1.41 for independent networks")


def _matcher():
    try:
        from weightspace.merge import weight_matching
    except Exception:  # pragma: no cover - merge not importable
        return None
    return weight_matching


def relative_distance(distance: float, norm_a: float, norm_b: float) -> float:
    """``distance / sqrt((norm_a**2 + norm_b**2) / 2)`` (0 when both norms are 0):
    the scale-free distance of the module docstring, in ``[0, 2]``."""
    scale = math.sqrt((norm_a * norm_a + norm_b * norm_b) / 2.0)
    return distance / scale if scale > 0 else 0.0


def aligned_distance(
    sd_ref: Mapping[str, Tensor], sd: Mapping[str, Tensor], spec, *, seed: int = 0
) -> float:
    """L2 distance over all float values between ``sd_ref`` and ``sd`` after
    aligning ``sd`` to ``sd_ref`` by weight matching (identity if
    ``weightspace.merge`` is unavailable). Absolute; see
    :func:`relative_distance`."""
    wm = _matcher()
    other = sd
    if wm is not None:
        perm = wm(sd_ref, sd, spec, seed=seed).perm
        other = apply_permutation(sd, spec, perm)
    return float(torch.sqrt(sum(((sd_ref[k].double() - other[k].double()) ** 2).sum()
                                for k in sd_ref if sd_ref[k].is_floating_point())))


def _canonical_matrix(train: CheckpointSet, vectors: Tensor) -> Tensor:
    spec = train.arch.template().spec
    out = []
    for v in vectors:
        # permutations only: the distances below align by weight matching,
        # which searches permutations, so scale/sign balancing would make the
        # pre-filter and the aligned distance disagree
        sd, _ = canonicalize(vector_to_state_dict(train.arch, v), spec, scale=False, sign=False)
        out.append(state_dict_to_vector(train.arch, sd))
    return torch.stack(out).double()


def _nearest(
    train: CheckpointSet,
    canon_train: Tensor,
    train_norms: Tensor,
    sd: Mapping[str, Tensor],
    canon: Tensor,
    exclude_member: str | None,
    top_k: int,
    seed: int,
) -> tuple[int, float, float]:
    """``(index, aligned distance, relative distance)`` of the training
    checkpoint nearest to ``sd`` in relative distance."""
    spec = train.arch.template().spec
    norm = float(canon.norm())  # canonicalisation permutes values: the norm is that of sd
    d = torch.cdist(canon[None], canon_train)[0]
    rel = d / torch.sqrt((norm**2 + train_norms**2) / 2).clamp(min=1e-300)  # relative_distance, vectorised
    if exclude_member is not None:
        mask = torch.tensor([m == exclude_member for m in train.member_ids])
        rel = rel.masked_fill(mask, math.inf)
    cand = torch.argsort(rel)[: max(1, top_k)].tolist()
    best, best_d, best_rel = cand[0], float(d[cand[0]]), float(rel[cand[0]])
    for j in cand:
        if not math.isfinite(float(rel[j])):
            continue
        dj = min(float(d[j]), aligned_distance(train.state_dict(j), sd, spec, seed=seed))
        rj = relative_distance(dj, norm, float(train_norms[j]))
        if rj < best_rel:
            best, best_d, best_rel = j, dj, rj
    return best, best_d, best_rel


def novelty_report(
    samples: Sequence[Mapping[str, Tensor]],
    train: CheckpointSet,
    data: TaskData | None = None,
    *,
    conditions: Sequence[float] | Tensor | None = None,
    top_k: int = 5,
    copy_tol: float = 1e-6,
    near_copy_ratio: float = 0.1,
    reference_size: int = 64,
    seed: int = 0,
) -> NoveltyReport:
    """Novelty of generated ``samples`` w.r.t. the training checkpoints.

    Args:
        samples: state_dicts of ``train.arch``.
        train: the generator's training checkpoints.
        data: task for ``accuracy`` / ``agreement`` (skipped when ``None``).
        conditions: the target metric each sample was generated for.
        top_k: canonical-space candidates aligned by weight matching.
        copy_tol, near_copy_ratio: flag thresholds on the *relative*
            distance (see the module docstring).
        reference_size: training checkpoints (drawn with ``seed``) used for
            the between-runs reference distance.

    Returns:
        :class:`NoveltyReport`.
    """
    if len(samples) == 0:
        raise ValueError("no samples to report on")
    arch = train.arch
    vecs = torch.stack([state_dict_to_vector(arch, sd) for sd in samples])  # validates every sample
    canon_train = _canonical_matrix(train, train.values)
    canon_s = _canonical_matrix(train, vecs)
    train_norms = canon_train.norm(dim=1)
    # reference: nearest checkpoint of another run, for a subset of training checkpoints
    gen = torch.Generator().manual_seed(int(seed))
    ref_idx = torch.randperm(len(train), generator=gen)[: min(reference_size, len(train))].tolist()
    ref_d = []
    for i in ref_idx:
        if len(set(train.member_ids)) < 2:
            break
        _, _, r = _nearest(train, canon_train, train_norms, train.state_dict(i), canon_train[i], train.member_ids[i],
                           top_k, seed)
        ref_d.append(r)
    ref = torch.tensor(ref_d, dtype=torch.float64) if ref_d else torch.tensor([math.nan], dtype=torch.float64)
    ref_median = float(ref.median())
    module = arch.module(seed=0) if data is not None else None
    x_te = arch.view(data.x_test) if data is not None else None
    conds = None if conditions is None else [float(c) for c in torch.as_tensor(conditions).reshape(-1)]
    rows = []
    for i, sd in enumerate(samples):
        j, dist, rel = _nearest(train, canon_train, train_norms, sd, canon_s[i], None, top_k, seed)
        ratio = rel / ref_median if math.isfinite(ref_median) and ref_median > 0 else math.nan
        row: dict[str, Any] = {
            "distance": dist,
            "rel_distance": rel,
            "ratio": ratio,
            "nearest": {"member_id": train.member_ids[j], "epoch": train.epochs[j],
                        train.metric_name: float(train.metric[j]), "index": j},
            "copy": bool(rel <= copy_tol),
            "near_copy": bool(math.isfinite(ratio) and ratio < near_copy_ratio),
        }
        if conds is not None:
            row["condition"] = conds[i] if len(conds) > 1 else conds[0]
        if module is not None:
            module.load_state_dict(sd)
            row["accuracy"] = accuracy(module, x_te, data.y_test)
            p = predictions(module, x_te)
            module.load_state_dict(train.state_dict(j))
            row["agreement"] = float((predictions(module, x_te) == p).float().mean())
        rows.append(row)
    dist = torch.tensor([r["distance"] for r in rows], dtype=torch.float64)
    summary = {
        "n": len(rows),
        "copies": int(sum(r["copy"] for r in rows)),
        "near_copies": int(sum(r["near_copy"] for r in rows)),
        "distance_median": float(dist.median()),
        "rel_distance_median": float(torch.tensor([r["rel_distance"] for r in rows], dtype=torch.float64).median()),
        "ratio_median": float(torch.tensor([r["ratio"] for r in rows]).median()),
        "unique_nearest": len({r["nearest"]["index"] for r in rows}),
        "thresholds": {"copy_tol": float(copy_tol), "near_copy_ratio": float(near_copy_ratio),
                       "copy": f"rel_distance <= {copy_tol:g}",
                       "near_copy": f"rel_distance / between_runs_median < {near_copy_ratio:g}",
                       "rel_distance": "||sample - aligned checkpoint|| / sqrt((||sample||^2 + ||checkpoint||^2) / 2)"},
    }
    if module is not None:
        summary["accuracy_mean"] = float(sum(r["accuracy"] for r in rows) / len(rows))
        summary["agreement_mean"] = float(sum(r["agreement"] for r in rows) / len(rows))
    reference = {
        "distance": "relative",
        "between_runs_median": ref_median,
        "between_runs_p10": float(ref.quantile(0.1)),
        "between_runs_p90": float(ref.quantile(0.9)),
        "n": len(ref_d),
    }
    return NoveltyReport(
        rows, reference, summary, "weight_matching" if _matcher() is not None else "canonical",
        {"top_k": top_k, "copy_tol": copy_tol, "near_copy_ratio": near_copy_ratio, "seed": seed},
    )
