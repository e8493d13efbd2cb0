"""Stage ``reference``: what monitoring compares new batches with, stored when the model is trained.

Writes ``monitoring/reference/`` through :mod:`histoflow.monitoring.reference` (the one module
that writes, loads and projects it), from ``embed``'s feature store: the training split's QC
features and the held-out images' embeddings in a PCA space fitted on the training split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histoflow.config import Params
from histoflow.embeddings.store import FeatureStore

__all__ = ["PARAMS", "Inputs", "Outputs", "run"]

PARAMS = ("reference",)


@dataclass(frozen=True)
class Inputs:
    """The feature store of ``embed``."""

    features: Path = Path("outputs/embed")


@dataclass(frozen=True)
class Outputs:
    """The reference folder (registered with the model)."""

    reference: Path = Path("monitoring/reference")


def run(cfg: Params, inputs: Inputs, outputs: Outputs) -> dict:
    """Write the monitoring reference folder; returns its summary."""
    from histoflow.data.quality.features import DRIFT_FEATURES
    from histoflow.monitoring.reference import write_reference

    # Pooled embeddings read in chunks; of the index only what the reference keeps (the
    # captions and the other columns stay on disk: they were most of its growth with tiles).
    columns = ("path", "label", "split", *DRIFT_FEATURES)
    with FeatureStore(inputs.features, columns=columns) as store:
        return write_reference(
            outputs.reference,
            store.index,
            lambda rows: store.read("image_pooled", rows).astype(np.float32),  # (n, D)
            cfg.reference.pca_components,
        )
