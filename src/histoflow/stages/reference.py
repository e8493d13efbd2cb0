"""Stage ``reference``: what monitoring compares new batches with, stored when the model is trained.

Writes ``monitoring/reference/`` (DVC-tracked, and registered with the model so a champion
carries its own reference):

- ``features.parquet``: the training split's per-image QC features (from ``validate``);
- ``embeddings.parquet``: held-out (val + test) image embeddings in a PCA space fitted on the
  training split, and ``pca.safetensors`` to project new batches into it;
- ``reference.json``: sizes and explained variance.

Embeddings come from held-out images because the encoder has fitted its training images: their
embeddings sit tighter than any new batch's, which would read as drift on every
in-distribution batch. For the same reason the prediction reference is ``evaluate``'s test-split
predictions, registered with the model beside this folder; this stage does not depend on the
fusion model, so a fusion change re-runs only ``train_fusion`` and ``evaluate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.numpy import save_file

from histoflow.config import Params
from histoflow.data.quality.features import DRIFT_FEATURES
from histoflow.io import atomic_dir, write_json
from histoflow.stages._feature_store import load_features

__all__ = ["PARAMS", "Inputs", "Outputs", "run"]

PARAMS = ("monitor.pca_components",)
_HELD_OUT = ("val", "test")


@dataclass(frozen=True)
class Inputs:
    features: Path = Path("outputs/embed")


@dataclass(frozen=True)
class Outputs:
    reference: Path = Path("monitoring/reference")


def run(cfg: Params, inputs: Inputs, outputs: Outputs) -> dict:
    """Write the monitoring reference folder."""
    tensors, _, index = load_features(inputs.features)
    train = (index["split"] == "train").to_numpy()
    held_out = index["split"].isin(_HELD_OUT).to_numpy()
    if not held_out.any():
        raise ValueError(
            f"{inputs.features}/index.csv has no val or test rows to build a reference from"
        )

    pooled = tensors["image_pooled"].float().numpy()  # (N, D)
    k = min(cfg.monitor.pca_components, int(train.sum()) - 1, pooled.shape[1])
    mean, components, explained = _fit_pca(pooled[train], k)
    pcs = (pooled[held_out] - mean) @ components.T  # (M, k)

    features = index.loc[train, ["path", "label", *[c for c in DRIFT_FEATURES if c in index]]]
    embeddings = pd.DataFrame(pcs, columns=[f"pc_{i}" for i in range(k)])

    with atomic_dir(outputs.reference) as tmp:
        features.to_parquet(tmp / "features.parquet", index=False)
        embeddings.to_parquet(tmp / "embeddings.parquet", index=False)
        save_file(
            {"mean": mean.astype(np.float32), "components": components.astype(np.float32)},
            tmp / "pca.safetensors",
        )
        summary = {
            "n_features": int(train.sum()),
            "n_held_out": int(held_out.sum()),
            "pca_components": k,
            "explained_variance": [round(float(v), 4) for v in explained],
        }
        write_json(tmp / "reference.json", summary)
    return summary


def _fit_pca(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean (D,), the top-k principal axes (k, D) and their explained-variance ratios (k,)."""
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    variance = s**2
    return mean, vt[:k], variance[:k] / max(variance.sum(), 1e-12)
