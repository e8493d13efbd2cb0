"""Label audit: tiles whose given label a probe on the cached embeddings doubts.

Confident learning (Northcutt et al., JAIR 2021, as implemented by cleanlab): a probe trained on
the other folds gives each tile out-of-fold class probabilities; the per-class confidence
thresholds and the confident joint they imply estimate how many labels of each class are wrong,
and ``cleanlab.filter.find_label_issues`` names that many tiles, the least self-confident first.
The probe is a logistic regression on standardised pooled embeddings: cheap, and a tile never
scores itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

__all__ = [
    "EXCLUDED_COLUMNS",
    "ISSUE_COLUMNS",
    "find_label_issues",
    "out_of_fold_probabilities",
    "read_excluded",
]

ISSUE_COLUMNS = ("path", "split", "given", "likely", "score")
# The exclusion list stage audit writes and train_fusion reads: one row per tile left out.
EXCLUDED_COLUMNS = ("path", "reason")
_CHUNK = 8192  # held-out rows scored at a time


def read_excluded(path: Path) -> set[str]:
    """The tile paths an exclusion list names (empty unless ``audit.label_issues: exclude``).

    Raises:
        FileNotFoundError: the list does not exist (stage ``audit`` has not run).
    """
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"{path} not found: run `histoflow stage audit` (or `dvc repro`) first"
        )
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(table.columns) != list(EXCLUDED_COLUMNS):
        raise ValueError(
            f"{path}: expected columns {list(EXCLUDED_COLUMNS)}, got {list(table.columns)}"
        )
    return set(table["path"])


def out_of_fold_probabilities(
    x,
    y: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    groups: np.ndarray | None = None,
    max_train_rows: int | None = None,
) -> np.ndarray:
    """Class probabilities of each row from a logistic-regression probe that never saw it.

    Args:
        x: (N, D) embeddings: an array, or anything indexed by an array of rows that returns
            them (:class:`~histoflow.embeddings.store.TensorRows`: rows read from disk on use).
        y: (N,) class indices, every class present.
        folds: cross-validation folds (at most the smallest class's count).
        seed: shuffles the fold assignment (and the training draw).
        groups: (N,) case ids; folds then never split a case (StratifiedGroupKFold).
        max_train_rows: each fold's probe is fitted on at most this many of its training rows
            (a stratified, seeded draw), and the held-out rows are scored in chunks: memory
            stays flat in N. None = every training row.

    Returns:
        (N, C) out-of-fold probabilities, rows summing to 1.

    Raises:
        ValueError: a class with fewer rows than ``folds``.
    """
    from sklearn.base import clone
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    if counts.min() < folds:
        raise ValueError(
            f"the label audit needs at least {folds} tiles per class (audit.folds); class "
            f"index {int(counts.argmin())} has {int(counts.min())}: lower audit.folds"
        )
    if groups is None:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    else:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000))
    probabilities = np.zeros((len(y), len(counts)), np.float64)
    for train, test in splitter.split(np.zeros((len(y), 1)), y, groups):
        if max_train_rows is not None and len(train) > max_train_rows:
            train, _ = train_test_split(
                train, train_size=max_train_rows, stratify=y[train], random_state=seed
            )
            train = np.sort(train)
        fitted = clone(probe).fit(np.asarray(x[train], dtype=np.float32), y[train])
        for s in range(0, len(test), _CHUNK):
            rows = test[s : s + _CHUNK]
            scores = fitted.predict_proba(np.asarray(x[rows], dtype=np.float32))
            probabilities[np.ix_(rows, fitted.classes_)] = scores
    return probabilities


def find_label_issues(
    probabilities: np.ndarray, y: np.ndarray, index: pd.DataFrame, classes: list[str]
) -> pd.DataFrame:
    """The tiles confident learning flags, most doubtful first.

    Args:
        probabilities: (N, C) out-of-fold probabilities (:func:`out_of_fold_probabilities`).
        y: (N,) given class indices.
        index: the N rows (``path``, ``split``) in the same order.
        classes: class names, by index.

    Returns:
        One row per suspect tile with :data:`ISSUE_COLUMNS`: the given and the likely (most
        probable) label, ``score`` = cleanlab's label quality (self-confidence: the probability
        of the given label; lower = more doubtful), ranked by it.
    """
    from cleanlab.filter import find_label_issues as _cleanlab_issues
    from cleanlab.rank import get_label_quality_scores

    ranked = _cleanlab_issues(
        labels=y,
        pred_probs=probabilities,
        filter_by="prune_by_noise_rate",
        return_indices_ranked_by="self_confidence",
        # No worker pool: cleanlab forks one per physical core, and a fork of this process
        # (pyarrow's jemalloc thread, torch's and faiss's OpenMP pools) can deadlock in the
        # child: the audit stage hung for good in a test run. One process gives the same
        # result (cleanlab's docs) and the per-class pruning is cheap.
        n_jobs=1,
    )
    quality = get_label_quality_scores(y, probabilities, method="self_confidence")
    names = np.asarray(classes, dtype=object)
    return pd.DataFrame(
        {
            "path": index["path"].to_numpy()[ranked],
            "split": index["split"].to_numpy()[ranked],
            "given": names[y[ranked]],
            "likely": names[probabilities[ranked].argmax(1)],
            "score": quality[ranked],  # unrounded: the most doubtful are near 0
        },
        columns=list(ISSUE_COLUMNS),
    )
