"""One batch of new images, monitored: its readable files, its labels, its report on disk.

What the monitoring flow does between measuring the batch (QC features, champion predictions)
and telling people: compare with the champion's reference, write ``drift.html``,
``drift.json`` and ``predictions.csv``, and take the configured action on drift.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from histoflow.config import MonitorConfig
from histoflow.data.ingest.sources import read_source
from histoflow.io import atomic_path, write_json
from histoflow.monitoring.actions import take_action
from histoflow.monitoring.data import CONFIDENCE, PREDICTED, MonitorData
from histoflow.monitoring.reference import Reference
from histoflow.monitoring.report import monitoring_report, too_few_images_report
from histoflow.monitoring.sets import SET_SIZE, prediction_set_signal

__all__ = [
    "batch_labels",
    "champion_outputs",
    "readable_files",
    "report_batch",
    "set_aside_failures",
]


def readable_files(batch: Path, files: list[Path], features: pd.DataFrame) -> list[Path]:
    """The files of ``batch`` whose QC row says they decoded (``features`` aligns with ``files``).

    Raises:
        ValueError: none of them could be read, naming the first and its error.
    """
    readable = features["readable"].astype(bool).to_numpy()
    if not readable.any():
        raise ValueError(
            f"none of the {len(files)} files in {batch} could be read as an image "
            f"(e.g. {features['path'].iloc[0]}: {features['error'].iloc[0]})"
        )
    return [f for f, good in zip(files, readable, strict=True) if good]


def champion_outputs(
    predictor, files: list[Path], reference: Reference, *, batch_size: int = 64
) -> tuple[pd.DataFrame, np.ndarray]:
    """The champion's predictions for ``files`` and their embeddings' principal components.

    Streamed: each batch's pooled embeddings (batch, D) are projected into the reference's PCA
    space as the batch finishes and let go, so what is kept grows by ``k`` floats a file (8 by
    default), not ``D`` (512 to 1,536): 74,000 tiles keep 2.4 MiB of components instead of up
    to 430 MiB of embeddings.

    Args:
        predictor: the champion's :class:`~histoflow.inference.Predictor`.
        files: the images, in order.
        reference: the champion's reference (its PCA).
        batch_size: images per forward pass.

    Returns:
        :meth:`~histoflow.inference.Predictor.predict_files`'s table (with ``error``) and the
        (N, k) components, NaN rows for the files that could not be classified.
    """
    tables, components = [], []
    k = reference.components.shape[0]
    for table, pooled in predictor.iter_files(files, batch_size=batch_size):
        rows = np.full((len(table), k), np.nan, dtype=np.float32)
        if len(pooled):  # a batch where no file decoded has no embeddings
            rows[(table["error"] == "").to_numpy()] = reference.project(pooled).to_numpy()
        tables.append(table)
        components.append(rows)
    if not tables:
        return pd.DataFrame(), np.zeros((0, k), np.float32)
    return pd.concat(tables, ignore_index=True), np.concatenate(components)


def set_aside_failures(
    batch: Path, features: pd.DataFrame, predictions: pd.DataFrame, embedded: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Files the champion could not decode become unreadable rows; the rest stay aligned.

    Args:
        batch: the batch folder (for the error message).
        features: the QC table of every file (``path``, ``readable``, ``error``...).
        predictions: :meth:`~histoflow.inference.Predictor.predict_files`'s table for the
            readable files, with its ``error`` column.
        embedded: (N, k) their embeddings' components (:func:`champion_outputs`), NaN rows
            where ``error`` is set.

    Returns:
        ``features`` with those files marked unreadable (their error recorded), and the
        predictions (without ``error``) and embeddings of the files that were classified.

    Raises:
        ValueError: the champion could read none of them, naming the first and its error.
    """
    failed = (predictions["error"] != "").to_numpy()
    if failed.all():
        raise ValueError(
            f"none of the {len(predictions)} readable files in {batch} could be classified "
            f"(e.g. {predictions['error'].iloc[0]})"
        )
    errors = dict(zip(predictions["path"][failed], predictions["error"][failed], strict=True))
    features = features.copy()
    lost = features["path"].astype(str).isin(errors)
    features.loc[lost, "readable"] = False
    features.loc[lost, "error"] = features.loc[lost, "path"].astype(str).map(errors)
    kept = predictions[~failed].drop(columns="error").reset_index(drop=True)
    return features, kept, embedded[~failed]


def batch_labels(batch: Path, files: list[Path], classes: list[str]) -> pd.Series | None:
    """True labels when the batch has them: a manifest.csv, or one folder per known class."""
    rel = [f.resolve().relative_to(batch.resolve()).as_posix() for f in files]
    if (batch / "manifest.csv").is_file():
        table = read_source(batch).set_index("path")["label"]
        return pd.Series([table.get(r) for r in rel]) if set(rel) <= set(table.index) else None
    folders = [r.split("/")[0] if "/" in r else None for r in rel]
    return pd.Series(folders) if all(f in classes for f in folders) else None


def report_batch(
    batch: Path,
    features: pd.DataFrame,
    predictions: pd.DataFrame,
    embedded: np.ndarray,
    reference: Reference,
    *,
    classes: list[str],
    cfg: MonitorConfig,
    out_dir: Path,
    extra: dict,
) -> dict:
    """Compare a batch with the reference, write its report and act on drift.

    Args:
        batch: the batch folder (labels are read from it when it has them).
        features: the batch's QC table, every file (``path``, ``readable``, the features).
        predictions: the champion's predictions for the readable files (``path``, ``label``,
            ``confidence``...), in ``features``' order.
        embedded: (N, k) their embeddings' principal components (:func:`champion_outputs`).
        reference: the champion's reference.
        classes: the champion's classes.
        cfg: the ``monitor`` params.
        out_dir: the batch's report folder.
        extra: facts recorded at the top of ``drift.json`` (batch name, model...).

    Returns:
        The ``drift.json`` summary, with the action taken.
    """
    ok = features["readable"].astype(bool).to_numpy()
    files = [Path(p) for p in predictions["path"]]
    current = MonitorData(
        features=features.loc[ok, list(reference.data.features.columns)].reset_index(drop=True),
        embeddings=pd.DataFrame(embedded, columns=list(reference.data.embeddings.columns)),
        predictions=predictions.rename(columns={"label": PREDICTED})[
            [PREDICTED, CONFIDENCE, *(c for c in (SET_SIZE,) if c in predictions)]
        ],
        labels=batch_labels(batch, files, classes),
    )
    extra = {
        **extra,
        "report": str(out_dir / "drift.html"),
        "n_files": len(features),
        "n_unreadable": int((~ok).sum()),
        "unreadable": features.loc[~ok, "path"].head(20).tolist(),
        "unreadable_errors": dict(
            zip(
                features.loc[~ok, "path"].head(20).astype(str),
                features.loc[~ok, "error"].head(20).astype(str),
                strict=True,
            )
        ),
    }
    with atomic_path(out_dir / "predictions.csv") as tmp:
        predictions.to_csv(tmp, index=False)
    # Conformal sets (#14): mean set size against the reference's, coverage with labels; in
    # drift.json and on the page's verdict panel.
    extra["prediction_sets"] = prediction_set_signal(
        reference.data.predictions, predictions, current.labels, classes
    )
    if len(predictions) < cfg.min_batch_size:  # a handful of images says nothing about drift
        summary = too_few_images_report(
            len(reference.data.predictions), current, cfg, out_dir, extra
        )
        summary["action"] = {
            "action": cfg.action,
            "taken": False,
            "detail": "too few images: drift was not judged, nothing to do",
        }
    else:
        summary = monitoring_report(
            reference.data, current, cfg, out_dir, classes=classes, extra=extra
        )
        summary["action"] = take_action(summary, cfg)
    write_json(out_dir / "drift.json", summary)
    return summary
