"""The monitoring reference: what new batches are compared with, written when the model is trained.

One home for the folder the ``reference`` stage writes (DVC-tracked, and registered with the
model so a champion carries its own reference): writing it, loading it back, and projecting a
batch's embeddings into its PCA space.

- ``features.parquet``: the training split's per-image QC features (from ``validate``);
- ``embeddings.parquet``: held-out (val + test) image embeddings in a PCA space fitted on the
  training split, and ``pca.safetensors`` (``mean`` (D,), ``components`` (k, D)) to project
  new batches into it;
- ``reference.json``: sizes and explained variance.

Embeddings come from held-out images because the encoder has fitted its training images: their
embeddings sit tighter than any new batch's, which would read as drift on every
in-distribution batch. For the same reason the prediction reference is ``evaluate``'s test-split
predictions (a CSV registered beside this folder): the reference stage does not depend on the
fusion model, so a fusion change re-runs only ``train_fusion`` and ``evaluate``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.numpy import load_file, save_file

from histoflow.data.quality.features import DRIFT_FEATURES
from histoflow.io import atomic_dir, write_json
from histoflow.monitoring.data import CONFIDENCE, PREDICTED, MonitorData

__all__ = [
    "HELD_OUT",
    "Reference",
    "fit_pca",
    "fit_pca_chunks",
    "load_reference",
    "write_reference",
]

HELD_OUT = ("val", "test")  # the splits whose embeddings are the reference
_FEATURES, _EMBEDDINGS, _PCA, _SUMMARY = (
    "features.parquet",
    "embeddings.parquet",
    "pca.safetensors",
    "reference.json",
)


@dataclass(frozen=True, eq=False)
class Reference:
    """A loaded reference: its tables and the PCA that batches are projected with.

    Attributes:
        data: features (training split), embedding PCs (held-out) and predictions (test).
        mean: (D,) the training embeddings' mean.
        components: (k, D) the top principal axes.
    """

    data: MonitorData
    mean: np.ndarray
    components: np.ndarray

    def project(self, pooled: np.ndarray) -> pd.DataFrame:
        """Pooled image embeddings (N, D) -> their (N, k) principal components.

        The columns are named as the reference's, so the two tables compare column by column.
        """
        pcs = (np.asarray(pooled, dtype=np.float32) - self.mean) @ self.components.T  # (N, k)
        return pd.DataFrame(pcs, columns=list(self.data.embeddings.columns))


_CHUNK = 4096  # rows read at once when the reference is built from the feature store


def fit_pca(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean (D,), the top-k principal axes (k, D) and their explained-variance ratios (k,)."""
    return fit_pca_chunks([x], k)


def fit_pca_chunks(
    chunks: Iterable[np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`fit_pca` over row chunks, in O(D^2) memory whatever the number of rows.

    Exact, not approximate: the sum and the scatter matrix (D, D) are accumulated in float64
    over the chunks and the axes are the covariance's eigenvectors (what an SVD of the centred
    rows gives). Preferred to sklearn's IncrementalPCA (an approximation whose result depends
    on the chunk size) and to a subsample (another source of seed-dependent noise); D is the
    encoder's width (hundreds), so the (D, D) matrix is small. Each axis's sign is fixed (its
    largest coordinate positive), so the same data gives the same axes.
    """
    n, total, scatter = 0, None, None
    for chunk in chunks:
        c = np.asarray(chunk, dtype=np.float64)  # (n_c, D)
        if total is None:
            total, scatter = np.zeros(c.shape[1]), np.zeros((c.shape[1], c.shape[1]))
        n += len(c)
        total += c.sum(0)
        scatter += c.T @ c
    if not n:
        raise ValueError("cannot fit a PCA on no rows")
    mean = total / n
    cov = scatter - n * np.outer(mean, mean)  # (D, D) = (X - mean)^T (X - mean)
    variance, axes = np.linalg.eigh(cov)  # ascending
    variance, axes = np.clip(variance[::-1], 0.0, None), axes[:, ::-1].T  # (D,), (D, D) rows
    signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(1)])
    axes = axes * np.where(signs == 0, 1.0, signs)[:, None]
    explained = variance[:k] / max(variance.sum(), 1e-12)
    # C order: the axes are a transposed view, and safetensors stores the buffer as it lies.
    return mean.astype(np.float32), np.ascontiguousarray(axes[:k], dtype=np.float32), explained


def write_reference(
    folder: Path,
    index: pd.DataFrame,
    pooled: np.ndarray | Callable[[np.ndarray], np.ndarray],
    pca_components: int,
) -> dict:
    """Write the reference folder from the feature store's index and pooled embeddings.

    Args:
        folder: the reference folder (replaced atomically).
        index: one row per image (``path``, ``label``, ``split`` and the QC columns).
        pooled: (N, D) the images' pooled embeddings, aligned with ``index``; or a function
            that reads the rows it is given (row numbers) as (n, D), so the embeddings are
            read in chunks and never held whole (the ``reference`` stage's feature store).
        pca_components: the PCA's size (capped by the training rows and D).

    Returns:
        The summary written to ``reference.json``.

    Raises:
        ValueError: no val or test rows to build the reference from.
    """
    train = (index["split"] == "train").to_numpy()
    held_out = index["split"].isin(HELD_OUT).to_numpy()
    if not held_out.any():
        raise ValueError("the feature index has no val or test rows to build a reference from")
    read = pooled if callable(pooled) else (lambda rows: np.asarray(pooled)[rows])
    train_rows, held_rows = np.flatnonzero(train), np.flatnonzero(held_out)
    width = read(train_rows[:1]).shape[1]
    k = min(pca_components, len(train_rows) - 1, width)
    mean, components, explained = fit_pca_chunks(_chunks(read, train_rows), k)
    pcs = np.concatenate(
        [(c.astype(np.float32) - mean) @ components.T for c in _chunks(read, held_rows)]
    )  # (M, k)
    features = index.loc[train, ["path", "label", *[c for c in DRIFT_FEATURES if c in index]]]
    with atomic_dir(folder) as tmp:
        features.to_parquet(tmp / _FEATURES, index=False)
        pd.DataFrame(pcs, columns=[f"pc_{i}" for i in range(k)]).to_parquet(
            tmp / _EMBEDDINGS, index=False
        )
        save_file(
            {"mean": mean.astype(np.float32), "components": components.astype(np.float32)},
            tmp / _PCA,
        )
        summary = {
            "n_features": int(train.sum()),
            "n_held_out": int(held_out.sum()),
            "pca_components": k,
            "explained_variance": [round(float(v), 4) for v in explained],
        }
        write_json(tmp / _SUMMARY, summary)
    return summary


def _chunks(read: Callable[[np.ndarray], np.ndarray], rows: np.ndarray) -> Iterable[np.ndarray]:
    for s in range(0, len(rows), _CHUNK):
        yield read(rows[s : s + _CHUNK])


def load_reference(folder: Path, predictions: Path) -> Reference:
    """The reference in ``folder``, with the test predictions (``predicted``, ``prob_<class>``).

    Raises:
        FileNotFoundError: the folder or the predictions file is missing.
    """
    folder = Path(folder)
    for path in (folder / _FEATURES, Path(predictions)):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: the model's monitoring reference is incomplete; retrain and "
                "register it (`histoflow run`)"
            )
    features = pd.read_parquet(folder / _FEATURES)
    test = pd.read_csv(predictions)
    pca = load_file(folder / _PCA)
    return Reference(
        data=MonitorData(
            features=features[[c for c in DRIFT_FEATURES if c in features]],
            embeddings=pd.read_parquet(folder / _EMBEDDINGS),
            predictions=pd.DataFrame(
                {PREDICTED: test["predicted"], CONFIDENCE: test.filter(like="prob_").max(axis=1)}
                # The conformal set sizes on test, where the model has sets (#14).
                | ({"set_size": test["set_size"]} if "set_size" in test else {})
            ),
        ),
        mean=pca["mean"],
        components=pca["components"],
    )
