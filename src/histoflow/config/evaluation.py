"""Sections that judge and keep a model: ``evaluate``, ``reference`` and ``registry``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from histoflow.config._base import Section

__all__ = [
    "CrossGroupConfig",
    "EvaluateConfig",
    "ProbesConfig",
    "ReferenceConfig",
    "RegistryConfig",
    "RobustnessConfig",
]


class CrossGroupConfig(Section):
    """Train a fusion head on one group's train rows; test it on every group's test rows."""

    column: str = "magnification"  # a manifest column (e.g. magnification, site, modality)
    train_on: str = "40x"  # the value whose rows train the head


class RobustnessConfig(Section):
    """The robustness certificate: perturbations of the test images and their strengths."""

    stain: tuple[float, ...] = (0.1, 0.25, 0.5)  # HED stain shift: each density x (1 +- s)
    jpeg: tuple[int, ...] = (30, 10)  # JPEG quality
    blur: tuple[float, ...] = (1.0, 2.0)  # Gaussian blur radius, pixels of the stored image
    rescale: tuple[float, ...] = (0.5, 2.0)  # magnification change (zoom factor)
    seed: int = 0  # of the stain shifts
    # A manifest column (site, scanner, magnification): a head trained without each group is
    # scored on that group's test images. null = off; a column the manifest lacks is skipped.
    leave_one_group_out: str | None = "site"
    batch_size: int = Field(16, ge=1)  # test images at a time, each embedded x conditions
    # At most this many test images (a seeded draw, stratified by class) are perturbed: each
    # is re-captioned and re-embedded once per condition, so the certificate's cost stays flat
    # at hundreds of thousands of tiles. null = every test image.
    max_images: int | None = Field(2000, ge=10)

    @field_validator("jpeg")
    @classmethod
    def _quality(cls, qualities: tuple[int, ...]) -> tuple[int, ...]:
        if any(not 1 <= q <= 95 for q in qualities):
            raise ValueError(f"evaluate.robustness.jpeg {list(qualities)}: qualities are 1-95")
        return qualities

    @field_validator("stain", "blur", "rescale")
    @classmethod
    def _positive(cls, values: tuple[float, ...]) -> tuple[float, ...]:
        if any(v <= 0 for v in values):
            raise ValueError(f"strengths must be positive, got {list(values)}")
        return values

    def conditions(self) -> list[tuple[str, float]]:
        """Every (perturbation, strength) pair, in the order of the report."""
        return [
            (kind, float(s))
            for kind in ("stain", "jpeg", "blur", "rescale")
            for s in getattr(self, kind)
        ]


class ProbesConfig(Section):
    """The deployed encoder's frozen features probed as the field compares encoders (eva, UNI).

    Linear probe, kNN (cosine) and few-shot (SimpleShot) on the feature store's pooled image
    embeddings, train + val rows fitted and test rows scored, each over ``seeds``; the same
    table ``histoflow probe`` writes for any encoders.
    """

    seeds: int = Field(5, ge=1)  # repeats of each probe: mean +- std and the per-seed values
    k: int = Field(20, ge=1)  # neighbours of the kNN probe
    shots: tuple[int, ...] = (1, 5, 10)  # few-shot probes: training vectors per class
    episodes: int = Field(100, ge=1)  # few-shot episodes per seed
    # At most this many fit rows and this many test rows (a seeded draw of each): the probes'
    # memory and time stay flat in the dataset's size.
    max_rows: int = Field(10_000, ge=100)

    @field_validator("shots")
    @classmethod
    def _positive_shots(cls, shots: tuple[int, ...]) -> tuple[int, ...]:
        if any(n < 1 for n in shots):
            raise ValueError(f"evaluate.probes.shots {list(shots)}: shots per class are >= 1")
        return shots


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
    # Test images re-embedded under perturbations; worst-case macro recall is a headline metric
    # and a promotion rule (registry.robustness_tolerance). null = off.
    robustness: RobustnessConfig | None = RobustnessConfig()
    # Grouped k-fold CV of the fusion head on the cached embeddings (by patient_id, else by the
    # cases stage audit inferred): each headline metric's mean and std over folds. 0 = off.
    cv_folds: int = Field(0, ge=0, le=20)
    # Case-level results (evaluation/cases.py): tiles aggregated per value of these columns
    # (those the data has), by mean probabilities or a majority vote of the tiles.
    case_columns: tuple[str, ...] = ("patient_id",)
    case_method: Literal["mean", "vote"] = "mean"
    # The encoder's frozen features probed (linear, kNN, few-shot over seeds). null = off.
    probes: ProbesConfig | None = ProbesConfig()

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
    # The challenger's worst-case macro recall (evaluate.robustness) may be at most this much
    # below the champion's. null = off.
    robustness_tolerance: float | None = Field(0.02, ge=0)
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
