"""Prefect flow ``histoflow-training``: the DVC stages in DAG order, one task each, then
MLflow logging, registration as ``challenger`` and gated promotion to ``champion``.

DVC decides what is stale; this flow adds retries, logs, the registry and promotion.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from histoflow import dvc, registry
from histoflow.config import load_params
from histoflow.stages._tables import VALIDATED_MANIFEST, read_manifest


@task(retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def dvc_stage(stage: str, root: str, force: bool = False) -> str:
    """Run one DVC stage; DVC skips it when its deps and params are unchanged."""
    output = dvc.repro(stage, Path(root), force=force)
    ran = stage in dvc.ran_stages(output)
    get_run_logger().info(f"{stage}: {'ran' if ran else 'up to date, skipped by DVC'}")
    return output


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def register(root: str) -> dict:
    """Log the run to MLflow, register the model as challenger, promote it if it beats the champion."""
    base = Path(root)
    params = load_params(base / "params.yaml")
    evaluation = json.loads((base / "metrics/eval.json").read_text())
    metrics = {
        k: float(v) for k, v in evaluation.items() if isinstance(v, int | float) and v is not None
    }
    metrics.update({f"recall.{c}": v for c, v in evaluation["per_class_recall"].items()})
    manifest = read_manifest(base / VALIDATED_MANIFEST)
    example = base / params.data.root / manifest.loc[manifest["split"] == "test", "path"].iloc[0]
    tags = {"git_commit": registry.git_commit(base)}
    tags.update({f"dvc.md5.{path}": md5 for path, md5 in dvc.lock_hashes(base).items()})
    version = registry.log_and_register(
        base,
        params,
        metrics=metrics,
        model_files={
            "encoder": base / "outputs/train_encoder/model",
            "fusion": base / "outputs/train_fusion/model",
            # The champion carries what monitoring compares new batches with.
            "reference": base / "monitoring/reference",
            "reference_predictions": base / "outputs/evaluate/predictions.csv",
        },
        example_image=example,
        artifacts=[
            base / p
            for p in (
                "params.yaml",
                "dvc.lock",
                "metrics",
                "outputs/evaluate/plots",
                "outputs/evaluate/predictions.csv",
            )
        ],
        tags=tags,
    )
    decision = registry.promote(params.registry, version, base)
    create_markdown_artifact(
        key="histoflow-registration",
        markdown=(
            f"## histoflow v{version}\n\n**{'promoted to champion' if decision.promoted else 'challenger only'}**"
            f": {decision.reason}\n\n| metric | value |\n|---|---|\n"
            + "".join(f"| {k} | {v:.4f} |\n" for k, v in sorted(metrics.items()))
        ),
        description="Model registration and promotion decision",
    )
    return {
        "version": version,
        "promoted": decision.promoted,
        "reason": decision.reason,
        "metric": decision.metric,
        "challenger_value": decision.challenger_value,
        "champion_value": decision.champion_value,
    }


@flow(name="histoflow-training", log_prints=True)
def training(root: str = ".", force: bool = False) -> dict:
    """Run the pipeline in ``root`` and register its model.

    Args:
        root: project folder (holds dvc.yaml and params.yaml).
        force: re-run every stage even when DVC finds it up to date.
    """
    root = str(Path(root).resolve())
    load_params(Path(root) / "params.yaml")  # a bad params file fails before any work
    for stage in dvc.stage_order(Path(root)):
        dvc_stage.with_options(name=stage)(stage, root, force)
    return register(root)


if __name__ == "__main__":
    print(training())
