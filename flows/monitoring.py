"""Prefect flow ``histoflow-monitoring``: a drift report for a new batch of images.

The batch's per-image features are compared with the training split's (stored by
``validate``) in an Evidently report; the champion's predictions are saved beside it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from histoflow.config import load_params
from histoflow.data.qc import DRIFT_FEATURES, feature_table
from histoflow.io import atomic_path
from histoflow.monitoring import drift_report
from histoflow.predict import collect_images, predict_paths
from histoflow.registry import load_model
from histoflow.stages._tables import VALIDATED_MANIFEST, read_manifest


@task(cache_policy=NO_CACHE)
def batch_features(files: list[Path]) -> pd.DataFrame:
    return feature_table(files)


@task(cache_policy=NO_CACHE)
def reference_features(root: Path) -> pd.DataFrame:
    manifest = read_manifest(root / VALIDATED_MANIFEST)
    return manifest[manifest["split"] == "train"]


@task(retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def champion_predictions(files: list[Path], model_uri: str, root: Path) -> pd.DataFrame:
    return predict_paths(files, model_uri=model_uri, root=root)


@flow(name="histoflow-monitoring", log_prints=True)
def monitoring(
    batch_dir: str,
    root: str = ".",
    params_file: str = "params.yaml",
    model_uri: str = "models:/histoflow@champion",
) -> dict:
    """Write ``monitoring/reports/<batch>/{drift.html,drift.json,predictions.csv}``."""
    base = Path(root).resolve()
    params = load_params(base / params_file)
    files = collect_images([batch_dir])
    load_model(model_uri, base)  # a missing champion fails before any work
    current = batch_features(files)
    readable = current["readable"].astype(bool)
    if not readable.any():
        raise ValueError(f"none of the {len(files)} files in {batch_dir} could be read as an image")
    predictions = champion_predictions(
        [f for f, ok in zip(files, readable, strict=True) if ok], model_uri, base
    )
    name = Path(batch_dir).resolve().name
    out_dir = base / "monitoring" / "reports" / name
    extra = {
        "batch": name,
        "model_uri": model_uri,
        "n_files": len(files),
        "n_unreadable": int((~readable).sum()),
        "predicted_class_share": predictions["label"]
        .value_counts(normalize=True)
        .round(4)
        .to_dict(),
        "mean_confidence": float(predictions["confidence"].mean()),
        "mean_uncertainty": float(predictions["uncertainty"].mean()),
    }
    summary = drift_report(
        reference_features(base),
        current[readable],
        columns=DRIFT_FEATURES,
        out_dir=out_dir,
        drift_share=params.monitor.drift_share,
        stattest_threshold=params.monitor.stattest_threshold,
        extra=extra,
    )
    with atomic_path(out_dir / "predictions.csv") as tmp:
        predictions.to_csv(tmp, index=False)
    drifted = [c for c, v in summary["columns"].items() if v["drifted"]]
    create_markdown_artifact(
        key=f"drift-{name}".lower().replace("_", "-"),
        markdown=(
            f"## Drift report for batch `{name}`\n\n**drift detected: {summary['drift_detected']}** "
            f"({summary['drift_share']:.0%} of features drifted: {', '.join(drifted) or 'none'})\n\n"
            f"Report: `{out_dir / 'drift.html'}`"
        ),
    )
    print(f"drift report: {out_dir / 'drift.html'} (drift_detected={summary['drift_detected']})")
    return summary


if __name__ == "__main__":
    import sys

    print(monitoring(sys.argv[1]))
