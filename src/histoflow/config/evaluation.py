"""Sections that judge and keep a model: ``evaluate``, ``reference`` and ``registry``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from histoflow.config._base import Section

__all__ = ["CrossGroupConfig", "EvaluateConfig", "ReferenceConfig", "RegistryConfig"]


class CrossGroupConfig(Section):
    """Train a fusion head on one group's train rows; test it on every group's test rows."""

    column: str = "magnification"  # a manifest column (e.g. magnification, site, modality)
    train_on: str = "40x"  # the value whose rows train the head


class EvaluateConfig(Section):
    """How the test split is scored: CIs, calibration bins, breakdowns, protocols, panels."""

    batch_size: int = Field(256, ge=1)
    bootstrap: int = Field(1000, ge=10)  # resamples for the 95% confidence intervals
    seed: int = 0  # of the bootstrap resamples
    ece_bins: int = Field(15, ge=2)  # equal-width confidence bins of the calibration error
    extra_group_columns: tuple[str, ...] = ("patient_id",)  # breakdowns beyond data.group_columns
    # null = no cross-group protocol; the default is the demo's 40x -> 20x experiment.
    cross_group: CrossGroupConfig | None = CrossGroupConfig()
    explain_per_class: int = Field(2, ge=0)  # Grad-CAM panels: correct and wrong tiles per class
    # The fusion head retrained with each seed on the cached embeddings: the headline metrics'
    # mean and std over seeds, the noise a promotion must beat (registry.noise_factor). () = off.
    seeds: tuple[int, ...] = ()
    # Case-level results (evaluation/cases.py): tiles aggregated per value of these columns
    # (those the data has), by mean probabilities or a majority vote of the tiles.
    case_columns: tuple[str, ...] = ("patient_id",)
    case_method: Literal["mean", "vote"] = "mean"

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: tuple[int, ...]) -> tuple[int, ...]:
        if len(seeds) == 1 or len(set(seeds)) != len(seeds):
            raise ValueError(
                f"evaluate.seeds {list(seeds)}: give at least two distinct seeds (a spread needs "
                "two runs), or [] for none"
            )
        return seeds


class RegistryConfig(Section):
    """MLflow registration and the rules that gate promotion to ``champion``."""

    model_name: str = Field("histoflow", min_length=1)
    experiment: str = Field("histoflow", min_length=1)
    metric: Literal["macro_recall", "balanced_accuracy", "accuracy", "macro_f1", "auroc"] = (
        "macro_recall"
    )
    min_improvement: float = Field(0.0, ge=0)  # challenger must beat champion by more than this
    min_class_recall: float = Field(0.0, ge=0, le=1)  # no class recall may fall below this
    ci_rule: bool = True  # when a CI exists: its lower bound must reach the champion's value
    # When evaluate.seeds recorded a spread: the gain must exceed this many seed stds. 0 = off.
    noise_factor: float = Field(2.0, ge=0)
    # Conformal rule: every class's test coverage >= 1 - alpha - this; null = off.
    coverage_tolerance: float | None = Field(0.05, ge=0, lt=1)
    retries: int = Field(3, ge=0, le=20)  # registration retries on an unreachable server
    retry_backoff_s: float = Field(2.0, ge=0)  # first retry delay; doubles each time
    lock_timeout_s: float = Field(60.0, gt=0)  # wait this long for another promotion to finish
    intended_use: str = (
        "Research and decision support on tissue tiles like the training data; "
        "not a diagnostic device."
    )  # model card text


class ReferenceConfig(Section):
    """The monitoring reference stored with each model (stage ``reference``)."""

    pca_components: int = Field(8, ge=2, le=64)  # embeddings are compared in this PCA space
