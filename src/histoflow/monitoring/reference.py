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

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.numpy import load_file, save_file

from histoflow.data.quality.features import DRIFT_FEATURES
from histoflow.io import atomic_dir, write_json
from histoflow.monitoring.data import CONFIDENCE, PREDICTED, MonitorData

__all__ = ["HELD_OUT", "Reference", "fit_pca", "load_reference", "write_reference"]

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


def fit_pca(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean (D,), the top-k principal axes (k, D) and their explained-variance ratios (k,)."""
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    variance = s**2
    return mean, vt[:k], variance[:k] / max(variance.sum(), 1e-12)


def write_reference(
    folder: Path, index: pd.DataFrame, pooled: np.ndarray, pca_components: int
) -> dict:
    """Write the reference folder from the feature store's index and pooled embeddings.

    Args:
        folder: the reference folder (replaced atomically).
        index: one row per image (``path``, ``label``, ``split`` and the QC columns).
        pooled: (N, D) the images' pooled embeddings, aligned with ``index``.
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
    k = min(pca_components, int(train.sum()) - 1, pooled.shape[1])
    mean, components, explained = fit_pca(pooled[train], k)
    pcs = (pooled[held_out] - mean) @ components.T  # (M, k)
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
