"""Leakage index: how much better a probe looks when tiles of one case sit on both sides.

The same probes (:func:`histoflow.evaluation.probes.grouped_cv`: a linear probe and kNN on the
cached embeddings) are scored twice, by k-fold cross-validation over single tiles (random,
stratified) and by k-fold cross-validation that never splits a case (patient, slide, or an
inferred case). Tiles of one slide share stain and texture, so a random split lets a probe
recognise the slide instead of the class; the gap between the two scores is that optimism. A
gap above a threshold is reported as likely leakage: a split by tile would overstate the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from histoflow.evaluation.probes import grouped_cv

__all__ = ["LeakageIndex", "leakage_index"]


@dataclass(frozen=True)
class LeakageIndex:
    """Random-split and case-grouped CV scores of each probe, and the largest gap.

    ``random`` and ``grouped`` map probe name to its mean ``metric`` over folds; ``gap`` is the
    largest ``random - grouped`` over probes (the leakage index), ``likely_leakage`` whether it
    exceeds ``threshold``.
    """

    metric: str
    folds: int
    groups: int
    rows: int  # tiles scored: all, or whole cases drawn up to ``max_rows``
    random: dict[str, float]
    grouped: dict[str, float]
    gap: float
    threshold: float
    likely_leakage: bool

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        return asdict(self)

    def sentence(self) -> str:
        """One line for the report and the log."""
        probe = max(self.random, key=lambda p: self.random[p] - self.grouped[p])
        verdict = "likely leakage" if self.likely_leakage else "no sign of leakage"
        return (
            f"{verdict}: {probe} {self.metric} {self.random[probe]:.3f} with random {self.folds}-fold "
            f"CV vs {self.grouped[probe]:.3f} grouped by case ({self.groups} cases, {self.rows} "
            f"tiles); gap "
            f"{self.gap:.3f} (threshold {self.threshold:.2f})"
        )


def leakage_index(
    x,
    y: np.ndarray,
    groups: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    threshold: float = 0.1,
    metric: str = "macro_recall",
    k: int = 20,
    max_rows: int | None = None,
) -> LeakageIndex:
    """Score the probes with random and with case-grouped CV; their gap is the index.

    Args:
        x: (N, D) embeddings: an array, or rows read on use
            (:class:`~histoflow.embeddings.store.TensorRows`).
        y: (N,) class indices.
        groups: (N,) case ids (patient, slide or inferred case).
        folds: folds of both cross-validations.
        seed: fold assignment.
        threshold: a gap above this is reported as likely leakage.
        metric: a :data:`~histoflow.evaluation.probes.PROBE_METRICS` name.
        k: neighbours of the kNN probe (fewer when a fold's training part is small).
        max_rows: above this many tiles, whole cases are drawn (seeded) until this many
            tiles: the probes' kNN is quadratic in the tiles, and a case's tiles must stay
            together for the gap to mean anything. None = every tile.

    Raises:
        ValueError: fewer cases than folds.
    """
    groups = np.asarray(groups)
    keep = np.arange(len(y))
    if max_rows is not None and len(y) > max_rows:
        keep = np.flatnonzero(_whole_cases(groups, max_rows, seed))
    # Only the drawn rows are read (x may read rows from disk on use: TensorRows).
    x, y, groups = np.asarray(x[keep], dtype=np.float32), y[keep], groups[keep]
    k = max(1, min(k, len(y) // 2))
    # Every tile its own group: StratifiedGroupKFold then is a stratified random split.
    singletons = grouped_cv(x, y, np.arange(len(y)), folds=folds, seed=seed, k=k)
    by_case = grouped_cv(x, y, groups, folds=folds, seed=seed, k=k)
    random = {r.probe: round(r.summary()[metric], 6) for r in singletons}
    grouped = {r.probe: round(r.summary()[metric], 6) for r in by_case}
    gap = max(random[p] - grouped[p] for p in random)
    return LeakageIndex(
        metric=metric,
        folds=folds,
        groups=len(np.unique(groups)),
        rows=len(y),
        random=random,
        grouped=grouped,
        gap=round(float(gap), 6),
        threshold=threshold,
        likely_leakage=bool(gap > threshold),
    )


def _whole_cases(groups: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """A mask of whole cases, drawn in a seeded order until they hold ``max_rows`` tiles."""
    cases, sizes = np.unique(groups, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(cases))
    taken = order[: int(np.searchsorted(np.cumsum(sizes[order]), max_rows)) + 1]
    return np.isin(groups, cases[taken])
