"""Prefect flow ``histoflow-training``: the DVC stages, then registration and promotion.

The DVC stages run in DAG order, one task each, then MLflow logging, registration as
``challenger`` and gated promotion to ``champion``.

DVC decides what is stale; this flow adds retries (transient failures only, exponential
backoff), logs, the registry and promotion. Stages run one at a time (DVC also holds a
repository lock), and a slot of the Prefect global concurrency limit ``histoflow-training``
(``deploy.training_concurrency``, default 1), held by a lease that a killed run cannot keep
(:func:`histoflow.orchestration.training_slot`), keeps two training runs from overlapping.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

from histoflow import dvc, registry
from histoflow.config import load_params
from histoflow.orchestration import training_slot
from histoflow.stages import evaluate, reference, train_encoder, train_fusion, validate

# Failures worth a retry: another dvc holding the repository lock, I/O hiccups, a busy server.
# (Not a bare "lock": every dvc output mentions dvc.lock.)
_TRANSIENT = (
    "Unable to acquire lock",
    "is locked",
    "Connection refused",
    "Connection reset",
    "Temporary failure",
    "timed out",
)


def _transient(task, task_run, state) -> bool:
    try:
        state.result()
    except Exception as exc:
        return isinstance(exc, ConnectionError | TimeoutError) or any(
            marker in str(exc) for marker in _TRANSIENT
        )
    return False


@task(cache_policy=NO_CACHE, retry_condition_fn=_transient)
def dvc_stage(stage: str, root: str, force: bool = False) -> bool:
    """Run one DVC stage (DVC skips it when its deps and params are unchanged); True if it ran."""
    log = get_run_logger()
    log.info(f"{stage}: started")
    result = dvc.repro(stage, Path(root), force=force)
    log.info(
        f"{stage}: done in {result.seconds:.1f} s"
        if result.ran
        else f"{stage}: up to date, skipped by DVC"
    )
    return result.ran


@task(cache_policy=NO_CACHE)
def dvc_status(root: str) -> bool:
    """True when ``dvc status`` finds nothing changed: every stage would be skipped."""
    changes = dvc.changed(Path(root))
    if changes:
        get_run_logger().info(f"dvc status: changed {', '.join(sorted(changes))}")
    return changes == {}


def training_run(base: Path) -> registry.TrainingRun:
    """The files the stages left in project ``base`` that registration logs and registers."""
    evaluated = evaluate.Outputs()
    return registry.TrainingRun(
        root=base,
        evaluation=base / evaluated.metrics,
        manifest=base / validate.Outputs().manifest,
        encoder=base / train_encoder.Outputs().model,
        fusion=base / train_fusion.Outputs().model,
        reference=base / reference.Outputs().reference,
        reference_predictions=base / evaluated.predictions,
        # Every stage writes metrics/NAME.json and reports/NAME/: the folders go whole.
        artifacts=tuple(
            base / p
            for p in (
                "params.yaml",
                "dvc.lock",
                Path(evaluated.metrics).parent,
                evaluated.plots,
                evaluated.predictions,
                Path(evaluated.report).parent,
            )
        ),
    )


@task(cache_policy=NO_CACHE)
def register(root: str) -> dict:
    """Log the run to MLflow, register the model as challenger, promote it if the rules allow.

    Retries of an unreachable tracking server happen inside (``registry.retries``).
    """
    base = Path(root)
    params = load_params(base / "params.yaml")
    run = training_run(base)
    result = registry.register_run(run, params)
    print(f"histoflow v{result.version}: {result.reason}")
    create_markdown_artifact(
        key="histoflow-registration",
        markdown=result.markdown(),
        description="Model registration and promotion decision",
    )
    return result.summary()


@flow(name="histoflow-training", log_prints=True)
def training(root: str = ".", force: bool = False) -> dict:
    """Run the pipeline in ``root`` and register its model.

    Args:
        root: project folder (holds dvc.yaml and params.yaml).
        force: re-run every stage even when DVC finds it up to date.
    """
    root = str(Path(root).resolve())
    params = load_params(Path(root) / "params.yaml")  # a bad params file fails before any work
    deploy = params.deploy
    stage_task = dvc_stage.with_options(
        retries=deploy.stage_retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=deploy.stage_retry_backoff_s)
        if deploy.stage_retry_backoff_s
        else 0,
        retry_jitter_factor=0.2 if deploy.stage_retry_backoff_s else None,
    )
    # Waits (does not fail, says for whom) while other training runs hold every slot.
    with training_slot(deploy.training_concurrency, flow_run.id, log=get_run_logger()):
        # Nothing changed (a scheduled run without new data): one `dvc status` instead of a
        # `dvc repro` per stage. Otherwise every stage runs in order and DVC skips the fresh
        # ones (a stage can go stale only once an upstream stage has run).
        if force or not dvc_status(root):
            for stage in dvc.stage_order(Path(root)):
                stage_task.with_options(name=stage)(stage, root, force)
        else:
            get_run_logger().info("dvc status: every stage up to date, none run")
        return register(root)


if __name__ == "__main__":
    print(training())
