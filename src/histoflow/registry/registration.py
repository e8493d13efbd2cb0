"""Registering a finished pipeline run: log it, register its model, promote it if the rules allow.

What the training flow calls once the stages have run; the flow names the files (from each
stage's ``Outputs``), this module decides what to do with them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from histoflow import dvc
from histoflow.config import Params
from histoflow.data.manifest import read_manifest
from histoflow.registry._provenance import environment_tags, machine_tags
from histoflow.registry.mlflow_registry import log_and_register, registered_version_with
from histoflow.registry.model_card import render_model_card
from histoflow.registry.promotion import promote
from histoflow.registry.tracking import evaluation_metrics, git_commit

__all__ = ["Registration", "TrainingRun", "register_run"]


@dataclass(frozen=True)
class TrainingRun:
    """The files of one finished pipeline run, as the stages that wrote them name them.

    Attributes:
        root: the project folder.
        evaluation: ``evaluate``'s metrics file.
        manifest: ``validate``'s manifest (data summary and an input example).
        encoder: ``train_encoder``'s model folder.
        fusion: ``train_fusion``'s model folder.
        reference: ``reference``'s folder, registered so a champion carries its own.
        reference_predictions: ``evaluate``'s test predictions, the prediction reference.
        artifacts: files and folders logged with the run (plots, reports, params, lock...).
    """

    root: Path
    evaluation: Path
    manifest: Path
    encoder: Path
    fusion: Path
    reference: Path
    reference_predictions: Path
    artifacts: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Registration:
    """What :func:`register_run` did.

    Attributes:
        version: the registered version (or, when unchanged, the existing one).
        promoted: whether ``champion`` moved to it.
        unchanged: nothing was registered: an existing version has the same ``dvc.lock``.
        reason: the promotion decision's reason, or why nothing was registered.
        checks: each promotion rule's verdict.
        metric: the promotion metric.
        challenger_value: its value for this run.
        champion_value: the champion's value it was compared with (None: no champion).
        metrics: every metric logged.
    """

    version: str
    promoted: bool
    unchanged: bool
    reason: str
    checks: dict[str, str]
    metric: str
    challenger_value: float | None
    champion_value: float | None
    metrics: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict:
        """The flow's result: everything but the metrics."""
        out = asdict(self)
        del out["metrics"]
        return out

    def markdown(self) -> str:
        """A short page for people: the decision, each rule's verdict, the metrics."""
        verdict = "promoted to champion" if self.promoted else "challenger only"
        if self.unchanged:
            verdict = "unchanged"
        return (
            f"## histoflow v{self.version}\n\n**{verdict}**: {self.reason}\n\n"
            "| check | result |\n|---|---|\n"
            + "".join(f"| {k} | {v} |\n" for k, v in self.checks.items())
            + "\n| metric | value |\n|---|---|\n"
            + "".join(f"| {k} | {v:.4f} |\n" for k, v in sorted(self.metrics.items()))
        )


def register_run(run: TrainingRun, params: Params) -> Registration:
    """Log ``run`` to MLflow, register its model as challenger, promote it if the rules allow.

    A run whose ``dvc.lock`` hashes equal those of an existing complete version (a scheduled run
    without new data) registers nothing and returns that version. Retries of an unreachable
    tracking server happen inside (``registry.retries``).
    """
    evaluation = json.loads(Path(run.evaluation).read_text())
    metrics = evaluation_metrics(evaluation)
    hashes = dvc.lock_hashes(run.root)
    commit = git_commit(run.root)
    tags = {"git_commit": commit, **{f"dvc.md5.{path}": md5 for path, md5 in hashes.items()}}
    same = registered_version_with(run.root, params, tags)
    if same is not None:
        return Registration(
            version=same,
            promoted=False,
            unchanged=True,
            reason=f"unchanged: dvc.lock hashes equal those of v{same}; nothing registered",
            checks={},
            metric=params.registry.metric,
            challenger_value=metrics.get(params.registry.metric),
            champion_value=None,
            metrics=metrics,
        )
    manifest = read_manifest(run.manifest)
    test_paths = manifest.loc[manifest["split"] == "test", "path"]
    card = render_model_card(
        evaluation,
        params,
        manifest,
        git_commit=commit,
        data_hash=hashes.get(str(params.data.root)) or dvc.data_hash(run.root),
        machine={**machine_tags(), **environment_tags()},
        precision=_precision(run),
    )
    version = log_and_register(
        run.root,
        params,
        metrics=metrics,
        model_files={
            "encoder": run.encoder,
            "fusion": run.fusion,
            "reference": run.reference,
            "reference_predictions": run.reference_predictions,
        },
        classes=_classes(run.fusion),
        example_image=run.root / params.data.root / test_paths.iloc[0],
        artifacts=list(run.artifacts),
        tags=tags,
        model_card=card,
    )
    decision = promote(params.registry, version, run.root)
    return Registration(
        version=version,
        promoted=decision.promoted,
        unchanged=False,
        reason=decision.reason,
        checks=decision.checks,
        metric=decision.metric,
        challenger_value=decision.challenger_value,
        champion_value=decision.champion_value,
        metrics=metrics,
    )


def _precision(run: TrainingRun) -> dict[str, str]:
    """What the encoder trained in and the features were computed in, as the models record."""
    from histoflow.models.checkpoint import read_model_json  # torch: only when registering

    trained = read_model_json(run.encoder).get("trained_with") or {}
    features = read_model_json(run.fusion).get("features_precision") or {}
    out = {}
    if trained:
        out["train_encoder"] = f"{trained.get('precision')} on {trained.get('device')}"
    if features:
        out["embed"] = f"image {features.get('image')}, text {features.get('text')}"
    return out


def _classes(fusion: Path) -> list[str]:
    """The class names in the fusion model's output order."""
    from histoflow.models.checkpoint import read_model_json  # torch: only when registering

    return list(read_model_json(fusion)["classes"])
