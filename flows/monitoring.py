"""Prefect flows for new image batches.

``histoflow-monitoring`` compares one batch with the champion's reference (stored when it was
trained and registered with it): per-image QC features, PCA-reduced champion embeddings and
champion predictions, plus classification quality when the batch is labelled. It writes
``monitoring/reports/<batch>/{drift.html,drift.json,predictions.csv}``, logs the summary to
MLflow, publishes it as a Prefect artifact and takes the configured action on drift.

``histoflow-monitor-inbox`` runs it once for each new folder in ``monitoring/inbox/``; a batch
that fails is recorded and retried on the next run while the others go on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from histoflow.config import load_params
from histoflow.data.images import load_rgb
from histoflow.data.ingest.sources import read_source
from histoflow.data.quality.features import DRIFT_FEATURES
from histoflow.data.quality.table import feature_table
from histoflow.io import atomic_path, write_json
from histoflow.monitoring.actions import take_action
from histoflow.monitoring.inbox import clear_failure, pending_batches, record_failure
from histoflow.monitoring.report import MonitorData, monitoring_report
from histoflow.predict import collect_images
from histoflow.registry import load_model, log_monitoring


@task(cache_policy=NO_CACHE)
def batch_features(files: list[Path], workers: int) -> pd.DataFrame:
    return feature_table(files, workers=workers)


@task(retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def champion_outputs(model, files: list[Path]) -> tuple[pd.DataFrame, np.ndarray]:
    """The champion's predictions and pooled image embeddings for ``files``."""
    table, pooled = model.predictor.predict_with_embeddings([load_rgb(f) for f in files])
    table.insert(0, "path", [str(f) for f in files])
    return table, pooled


@task(cache_policy=NO_CACHE)
def reference_data(model) -> tuple[MonitorData, dict[str, np.ndarray]]:
    """The champion's reference: training-split features, held-out embeddings and predictions."""
    from safetensors.numpy import load_file

    folder = model.reference.get("reference")
    if folder is None:
        raise FileNotFoundError(
            "the champion was registered without a monitoring reference; retrain and register it "
            "with this version of histoflow (`histoflow run`)"
        )
    features = pd.read_parquet(folder / "features.parquet")
    test = pd.read_csv(model.reference["reference_predictions"])
    probs = test.filter(like="prob_")
    predictions = pd.DataFrame({"predicted": test["predicted"], "confidence": probs.max(axis=1)})
    data = MonitorData(
        features=features[[c for c in DRIFT_FEATURES if c in features]],
        embeddings=pd.read_parquet(folder / "embeddings.parquet"),
        predictions=predictions,
    )
    return data, load_file(folder / "pca.safetensors")


def _labels(batch: Path, files: list[Path], classes: list[str]) -> pd.Series | None:
    """True labels when the batch has them: a manifest.csv, or one folder per known class."""
    rel = [f.resolve().relative_to(batch.resolve()).as_posix() for f in files]
    if (batch / "manifest.csv").is_file():
        table = read_source(batch).set_index("path")["label"]
        return pd.Series([table.get(r) for r in rel]) if set(rel) <= set(table.index) else None
    folders = [r.split("/")[0] if "/" in r else None for r in rel]
    return pd.Series(folders) if all(f in classes for f in folders) else None


@flow(name="histoflow-monitoring", log_prints=True)
def monitoring(
    batch_dir: str,
    root: str = ".",
    params_file: str = "params.yaml",
    model_uri: str = "models:/histoflow@champion",
) -> dict:
    """Write the drift report of ``batch_dir`` and act on it; returns the ``drift.json`` summary."""
    base = Path(root).resolve()
    params = load_params(base / params_file)
    batch = Path(batch_dir)
    files = collect_images([batch])
    model = load_model(model_uri, base).unwrap_python_model()  # no champion: fails here, first
    reference, pca = reference_data(model)

    current = batch_features(files, params.validate.workers)
    readable = current["readable"].astype(bool).to_numpy()
    if not readable.any():
        raise ValueError(
            f"none of the {len(files)} files in {batch_dir} could be read as an image "
            f"(e.g. {current['path'].iloc[0]}: {current['error'].iloc[0]})"
        )
    ok = [f for f, good in zip(files, readable, strict=True) if good]
    predictions, pooled = champion_outputs(model, ok)
    pcs = (pooled - pca["mean"]) @ pca["components"].T  # (N, k) in the reference's PCA space
    classes = model.predictor.classes
    data = MonitorData(
        features=current.loc[readable, list(reference.features.columns)].reset_index(drop=True),
        embeddings=pd.DataFrame(pcs, columns=list(reference.embeddings.columns)),
        predictions=predictions.rename(columns={"label": "predicted"})[["predicted", "confidence"]],
        labels=_labels(batch, ok, classes),
    )
    name = batch.resolve().name
    out_dir = base / params.monitor.reports / name
    extra = {
        "batch": name,
        "model_uri": model_uri,
        "report": str(out_dir / "drift.html"),
        "n_files": len(files),
        "n_unreadable": int((~readable).sum()),
        "unreadable": current.loc[~readable, "path"].head(20).tolist(),
    }
    summary = monitoring_report(
        reference, data, params.monitor, out_dir, classes=classes, extra=extra
    )
    with atomic_path(out_dir / "predictions.csv") as tmp:
        predictions.to_csv(tmp, index=False)
    summary["action"] = take_action(summary, params.monitor)
    write_json(out_dir / "drift.json", summary)
    log_monitoring(base, params.registry.experiment, summary, out_dir)

    drifted = [s for s, v in summary["signals"].items() if v["drifted"]]
    create_markdown_artifact(
        key=f"drift-{name}".lower().replace("_", "-"),
        markdown=(
            f"## Drift report for batch `{name}`\n\n**drift detected: {summary['drift_detected']}**"
            f" (signals drifted: {', '.join(drifted) or 'none'}; action: "
            f"{summary['action']['action']}, taken: {summary['action']['taken']})\n\n"
            f"Report: `{out_dir / 'drift.html'}`"
        ),
    )
    print(f"drift report: {out_dir / 'drift.html'} (drift_detected={summary['drift_detected']})")
    return summary


@flow(name="histoflow-monitor-inbox", log_prints=True)
def monitor_inbox(
    root: str = ".", params_file: str = "params.yaml", model_uri: str = "models:/histoflow@champion"
) -> dict:
    """Report on every inbox folder not reported yet; failures are recorded and retried next run."""
    base = Path(root).resolve()
    params = load_params(base / params_file)
    inbox, reports = base / params.monitor.inbox, base / params.monitor.reports
    done, failed = [], []
    for batch in pending_batches(inbox, reports):
        state = monitoring(
            str(batch),
            root=str(base),
            params_file=params_file,
            model_uri=model_uri,
            return_state=True,
        )
        if state.is_completed():
            clear_failure(reports, batch.name)
            done.append(batch.name)
        else:
            try:
                state.result()
            except Exception as exc:  # recorded, retried on the next run; the others go on
                record_failure(reports, batch.name, exc)
                get_run_logger().error(f"batch {batch.name} failed: {exc}")
            failed.append(batch.name)
    return {"processed": done, "failed": failed}


if __name__ == "__main__":
    import sys

    print(monitoring(sys.argv[1]))
