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
from histoflow.data.quality.table import feature_table
from histoflow.monitoring.batch import champion_outputs as outputs_of
from histoflow.monitoring.batch import readable_files, report_batch, set_aside_failures
from histoflow.monitoring.inbox import clear_failure, pending_batches, record_failure
from histoflow.monitoring.reference import Reference, load_reference
from histoflow.predict import collect_images
from histoflow.registry import RegisteredModel, load_model, log_monitoring


@task(cache_policy=NO_CACHE)
def batch_features(files: list[Path], workers: int) -> pd.DataFrame:
    """The batch's per-image QC table (the ``validate`` stage's measurements)."""
    return feature_table(files, workers=workers)


@task(retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def champion_outputs(
    model: RegisteredModel, files: list[Path], reference: Reference
) -> tuple[pd.DataFrame, np.ndarray]:
    """The champion's predictions and their embeddings' reference components, streamed."""
    return outputs_of(model.predictor, files, reference)


@task(cache_policy=NO_CACHE)
def champion_reference(model: RegisteredModel) -> Reference:
    """The reference registered with the champion."""
    if model.reference is None:
        raise FileNotFoundError(
            "the champion was registered without a monitoring reference; retrain and register it "
            "with this version of histoflow (`histoflow run`)"
        )
    return load_reference(model.reference, model.reference_predictions)


@flow(name="histoflow-monitoring", log_prints=True)
def monitoring(
    batch_dir: str,
    root: str = ".",
    params_file: str = "params.yaml",
    model_uri: str = "models:/histoflow@champion",
) -> dict:
    """Write the drift report of ``batch_dir`` and act on it; returns the ``drift.json`` summary."""
    base, batch = Path(root).resolve(), Path(batch_dir)
    params = load_params(base / params_file)
    files = collect_images([batch])
    model = load_model(model_uri, base)  # no champion: fails here, first
    reference = champion_reference(model)
    features = batch_features(files, params.validate.workers)
    predictions, embedded = champion_outputs(
        model, readable_files(batch, files, features), reference
    )
    # A file QC could read but the champion could not is listed as unreadable; the rest go on.
    features, predictions, embedded = set_aside_failures(batch, features, predictions, embedded)
    out_dir = base / params.monitor.reports / batch.resolve().name
    summary = report_batch(
        batch,
        features,
        predictions,
        embedded,
        reference,
        classes=model.predictor.classes,
        cfg=params.monitor,
        out_dir=out_dir,
        extra={"batch": out_dir.name, "model_uri": model_uri},
    )
    log_monitoring(base, params.registry.experiment, summary, out_dir)
    create_markdown_artifact(
        key=f"drift-{out_dir.name}".lower().replace("_", "-"), markdown=_page(summary)
    )
    verdict = summary.get("verdict") or f"drift_detected={summary['drift_detected']}"
    print(f"drift report: {summary['report']} ({verdict})")
    return summary


def _page(summary: dict) -> str:
    if summary.get("verdict") == "too few images":
        return f"## Batch `{summary['batch']}`: too few images\n\n{summary['reason']}"
    drifted = [s for s, v in summary["signals"].items() if v["drifted"]]
    return (
        f"## Drift report for batch `{summary['batch']}`\n\n**drift detected: "
        f"{summary['drift_detected']}** (signals drifted: {', '.join(drifted) or 'none'}; action: "
        f"{summary['action']['action']}, taken: {summary['action']['taken']})\n\n"
        f"Report: `{summary['report']}`"
    )


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
