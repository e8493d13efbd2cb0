"""Sections ``data`` (where the images are, how splits are made) and ``validate`` (the contract)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from histoflow.config._base import Section

__all__ = ["DataConfig", "Level", "ValidateChecks", "ValidateConfig"]


class DataConfig(Section):
    """Where the images are, which column is the class, and how splits are made."""

    root: Path = Path("data")
    manifest: str = "manifest.csv"
    label_column: str = Field("label", min_length=1)  # manifest column holding the class
    classes: tuple[str, ...] | None = None
    image_size: int = Field(64, ge=8, le=2048)
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    split_seed: int = 42
    # Carve splits by patient_id, or (no patient ids) by the cases validate infers from colour
    # statistics and pHash neighbours (histoflow.data.quality.cases); README "Data forensics".
    split_by: Literal["patient", "inferred_case"] = "patient"
    group_columns: tuple[str, ...] = ("site", "magnification")
    # Most pixels an image may have, read from its header before it is decoded; 4096 x 4096.
    max_pixels: int = Field(4096 * 4096, ge=1)
    # Stain normalisation (torchstain): target fitted on training tiles, stored with the model.
    stain_normalization: Literal["none", "macenko", "reinhard"] = "none"

    @model_validator(mode="after")
    def _fractions_leave_train(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                "val_fraction + test_fraction must be below 0.9 to leave a training split"
            )
        return self


# YAML 1.1 (PyYAML) reads a bare `off` as false; DVC's YAML 1.2 writer leaves it bare.
Level = Annotated[
    Literal["error", "warning", "off"], BeforeValidator(lambda v: "off" if v is False else v)
]


class ValidateChecks(Section):
    """What each data-contract check does when it finds something: fail, warn, or nothing."""

    unreadable: Level = "error"  # missing, unreadable, zero-byte or too large (data.max_pixels)
    outside_root: Level = "error"  # paths (or their link targets) outside the data folder
    unlisted_files: Level = "error"  # images in the data folder that its manifest.csv omits
    empty_split: Level = "error"  # train, val or test has no images
    class_missing_from_split: Level = "error"  # a class with no images in train, val or test
    unknown_label: Level = "error"  # labels outside data.classes
    class_min_count: Level = "error"  # a class below min_per_class images
    patient_leak: Level = "error"  # a patient in more than one split
    duplicate_across_splits: Level = "error"  # identical bytes (sha256) in two splits
    mode: Level = "error"  # image mode outside allowed_modes
    size: Level = "error"  # width or height outside [min_size, max_size]
    near_duplicate_across_splits: Level = (
        "warning"  # perceptual hash within near_duplicate_distance
    )
    blurred: Level = "warning"  # variance of the Laplacian below min_blur
    blank: Level = "warning"  # tissue fraction below min_tissue_fraction
    class_imbalance: Level = "warning"  # largest / smallest class above max_class_ratio
    conflicting_labels: Level = "warning"  # identical images with different labels
    inferred_case_leak: Level = "warning"  # an inferred case (no patient ids) in several splits


class ValidateConfig(Section):
    """The data contract: allowed images, QC thresholds, deduplication and check levels."""

    allowed_modes: tuple[
        Literal["RGB", "RGBA", "L", "LA", "P", "I;16", "I", "F", "1", "CMYK"], ...
    ] = ("RGB",)
    min_size: int = Field(16, ge=1)
    max_size: int = Field(8192, ge=1)
    min_per_class: int = Field(5, ge=1)
    min_blur: float = Field(5.0, ge=0)
    min_tissue_fraction: float = Field(0.01, ge=0, le=1)
    max_class_ratio: float = Field(10.0, ge=1)
    near_duplicate_distance: int = Field(4, ge=0, le=64)
    qc_failures: Literal["keep", "exclude"] = "keep"  # what to do with blurred / blank images
    # Drop val/test copies of images in an earlier split: exact (same bytes) or near (pHash).
    deduplicate: Literal["none", "exact", "near"] = "none"
    workers: int = Field(2, ge=0)  # decoding processes; 0 decodes in this process
    # Data without patient ids: cases inferred from colour and pHash neighbours (k, Louvain).
    case_neighbours: int = Field(5, ge=1, le=100)  # below the tiles per slide
    case_resolution: float = Field(1.0, gt=0)  # higher = more, smaller cases
    checks: ValidateChecks = ValidateChecks()

    @model_validator(mode="after")
    def _size_range(self) -> ValidateConfig:
        if self.min_size > self.max_size:
            raise ValueError(
                f"min_size ({self.min_size}) must not exceed max_size ({self.max_size})"
            )
        return self
