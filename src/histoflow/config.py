"""Typed parameters: ``params.yaml`` read once, at the edge, into frozen pydantic models.

One model per section. Unknown keys and bad values fail before any work, with a message that
names the key and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

__all__ = [
    "AugmentConfig",
    "CaptionsConfig",
    "ConfigError",
    "CrossGroupConfig",
    "DataConfig",
    "DeployConfig",
    "EmbedConfig",
    "EvaluateConfig",
    "MonitorConfig",
    "Params",
    "ReferenceConfig",
    "RegistryConfig",
    "TrainEncoderConfig",
    "TrainFusionConfig",
    "ValidateChecks",
    "ValidateConfig",
    "load_params",
    "parse_params",
]


class ConfigError(ValueError):
    """A params file that cannot be used; the message names the key and what is allowed."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    root: Path = Path("data")
    manifest: str = "manifest.csv"
    label_column: str = Field("label", min_length=1)  # manifest column holding the class
    classes: tuple[str, ...] | None = None
    image_size: int = Field(64, ge=8, le=2048)
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    split_seed: int = 42
    group_columns: tuple[str, ...] = ("site", "magnification")

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


class ValidateChecks(_Section):
    """What each data-contract check does when it finds something: fail, warn, or nothing."""

    unreadable: Level = "error"  # unreadable or zero-byte files
    outside_root: Level = "error"  # manifest paths that leave the data folder
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


class ValidateConfig(_Section):
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
    checks: ValidateChecks = ValidateChecks()

    @model_validator(mode="after")
    def _size_range(self) -> ValidateConfig:
        if self.min_size > self.max_size:
            raise ValueError(
                f"min_size ({self.min_size}) must not exceed max_size ({self.max_size})"
            )
        return self


class CaptionsConfig(_Section):
    """Caption backend; the vlm fields are read only when ``backend`` is ``vlm``."""

    backend: Literal["morphology", "vlm"] = "morphology"
    model: str = "google/medgemma-4b-it"  # vlm: Hugging Face hub id or local folder
    revision: str = "main"
    prompt: str = "Describe the tissue morphology in this H&E image in one sentence."
    max_new_tokens: int = Field(48, ge=1, le=1024)
    batch_size: int = Field(8, ge=1)
    seed: int = 0
    gallery_per_class: int = Field(4, ge=0)


class AugmentConfig(_Section):
    """Training-time augmentation of ``train_encoder`` (validation and inference see none)."""

    hflip: float = Field(0.5, ge=0, le=1)  # probability of a horizontal flip
    vflip: float = Field(0.5, ge=0, le=1)  # probability of a vertical flip
    rot90: bool = True  # a random multiple of 90 degrees
    resized_crop: tuple[float, float] | None = None  # area range of a random resized crop
    brightness: float = Field(0.1, ge=0)  # colour jitter factors (torchvision ColorJitter)
    contrast: float = Field(0.1, ge=0)
    saturation: float = Field(0.1, ge=0)
    hue: float = Field(0.0, ge=0, le=0.5)
    stain_scale: float = Field(0.05, ge=0, lt=1)  # H&E jitter: HED channels scaled by 1 +- this
    stain_shift: float = Field(0.01, ge=0, le=1)  # and shifted by +- this (optical density)

    @model_validator(mode="after")
    def _crop_range(self) -> AugmentConfig:
        if self.resized_crop is not None:
            lo, hi = self.resized_crop
            if not 0 < lo <= hi <= 1:
                raise ValueError(
                    f"resized_crop {list(self.resized_crop)} must be [lo, hi], 0 < lo <= hi <= 1"
                )
        return self


class TrainEncoderConfig(_Section):
    backbone: str = (
        "resnet18"  # timm name, foundation-model id (models.foundation.PRESETS) or hybrid
    )
    pretrained: bool = False
    branches: tuple[str, ...] = ("resnet50", "vit_base_patch16_224")  # hybrid: timm names
    source: Literal["auto", "timm", "transformers"] = "auto"  # auto: the preset's, else timm
    weights: Path | None = None  # local weights file or folder, loaded offline
    weights_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")  # required with weights
    timm_kwargs: dict[str, Any] = Field(default_factory=dict)  # extra timm.create_model kwargs
    pooling: Literal["cls", "cls+mean"] | None = None  # transformers: None = the preset's
    finetune: Literal["full", "partial", "linear_probe"] = "full"
    unfreeze_blocks: int = Field(2, ge=0)  # partial: trainable last blocks (timm groups)
    unfreeze_at: dict[int, int] = {}  # partial: {epoch: last blocks trainable from then on}
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(2e-3, gt=0)  # the head's peak learning rate
    backbone_lr: float | None = Field(None, gt=0)  # the backbone's; null = lr
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)  # linear warm-up, then cosine decay (per step)
    grad_clip: float | None = Field(1.0, gt=0)  # max gradient norm; null = no clipping
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    balanced_sampler: bool = False  # draw classes equally often (weighted random sampler)
    class_weighted_loss: bool = False  # cross-entropy weighted by inverse class frequency
    patience: int = Field(5, ge=1)  # early stopping on validation macro recall
    crop_to_foreground: bool = False  # MRI/CT: crop to the non-background box (also at inference)
    augment: AugmentConfig = AugmentConfig()
    precision: Literal["auto", "bf16", "32"] = "auto"
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    devices: int | Literal["auto"] = 1  # Lightning Trainer devices, num_nodes, strategy
    num_nodes: int = Field(1, ge=1)
    strategy: Literal["auto", "ddp", "ddp_spawn", "fsdp", "deepspeed"] = "auto"
    num_workers: int = Field(0, ge=0)
    seed: int = 42

    @model_validator(mode="after")
    def _milestones(self) -> TrainEncoderConfig:
        if self.unfreeze_at and self.finetune != "partial":
            raise ValueError("unfreeze_at is read only with finetune: partial")
        bad = {e: n for e, n in self.unfreeze_at.items() if e < 0 or n < 0}
        if bad:
            raise ValueError(f"unfreeze_at {bad}: epochs and block counts must be >= 0")
        return self


class EmbedConfig(_Section):
    batch_size: int = Field(128, ge=1)
    token_grid: int = Field(4, ge=1, le=16)
    text_model: str = "all-MiniLM-L6-v2"
    max_text_tokens: int = Field(64, ge=4, le=512)
    num_workers: int = Field(2, ge=0)  # image-decoding processes; 0 decodes in this process
    precision: Literal["auto", "bf16", "32"] = "auto"  # auto: bf16 where the CPU/GPU has it
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"


class TrainFusionConfig(_Section):
    width: int = Field(128, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    classifier_heads: int = Field(5, ge=1)
    attention: Literal["one_way", "two_way"] = "one_way"  # two_way: the caption attends back
    # Variants trained beside the fusion model and evaluated side by side; () = fusion only.
    ablations: tuple[Literal["image_only", "text_only", "concat"], ...] = (
        "image_only",
        "text_only",
        "concat",
    )
    epochs: int = Field(60, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, ge=0)
    weight_decay: float = Field(1e-4, ge=0)
    patience: int = Field(10, ge=1)
    seed: int = 42

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TrainFusionConfig:
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads})")
        return self


class CrossGroupConfig(_Section):
    """Train a fusion head on one group's train rows; test it on every group's test rows."""

    column: str = "magnification"  # a manifest column (e.g. magnification, site, modality)
    train_on: str = "40x"  # the value whose rows train the head


class EvaluateConfig(_Section):
    batch_size: int = Field(256, ge=1)
    bootstrap: int = Field(1000, ge=10)  # resamples for the 95% confidence intervals
    seed: int = 0  # of the bootstrap resamples
    ece_bins: int = Field(15, ge=2)  # equal-width confidence bins of the calibration error
    extra_group_columns: tuple[str, ...] = ("patient_id",)  # breakdowns beyond data.group_columns
    # null = no cross-group protocol; the default is the demo's 40x -> 20x experiment.
    cross_group: CrossGroupConfig | None = CrossGroupConfig()
    explain_per_class: int = Field(2, ge=0)  # Grad-CAM panels: correct and wrong tiles per class


class RegistryConfig(_Section):
    """MLflow registration and the rules that gate promotion to ``champion``."""

    model_name: str = Field("histoflow", min_length=1)
    experiment: str = Field("histoflow", min_length=1)
    metric: Literal["macro_recall", "balanced_accuracy", "accuracy", "macro_f1", "auroc"] = (
        "macro_recall"
    )
    min_improvement: float = Field(0.0, ge=0)  # challenger must beat champion by more than this
    min_class_recall: float = Field(0.0, ge=0, le=1)  # no class recall may fall below this
    ci_rule: bool = True  # when a CI exists: its lower bound must reach the champion's value
    retries: int = Field(3, ge=0, le=20)  # registration retries on an unreachable server
    retry_backoff_s: float = Field(2.0, ge=0)  # first retry delay; doubles each time
    lock_timeout_s: float = Field(60.0, gt=0)  # wait this long for another promotion to finish
    intended_use: str = (
        "Research and decision support on tissue tiles like the training data; "
        "not a diagnostic device."
    )  # model card text


class DeployConfig(_Section):
    """Prefect deployments: schedules and parameters (``histoflow serve``, ``prefect.yaml``)."""

    training_cron: str = Field("0 2 * * *", min_length=9)  # nightly retraining
    timezone: str = "UTC"
    inbox_interval_minutes: float = Field(15, gt=0)  # batch monitoring of monitor.inbox
    training_concurrency: int = Field(1, ge=1)  # training runs at once (a global limit)
    stage_retries: int = Field(2, ge=0)  # retries of a DVC stage on a transient failure
    stage_retry_backoff_s: float = Field(10.0, ge=0)  # first delay; doubles each retry


class MonitorConfig(_Section):
    """Drift monitoring of new batches (``histoflow monitor``, the inbox deployment)."""

    drift_share: float = Field(0.3, gt=0, le=1)  # features: share of drifted columns = drift
    embedding_drift_share: float = Field(0.3, gt=0, le=1)  # same, over the embedding PCs
    stattest_threshold: float = Field(0.05, gt=0, lt=1)
    method: Literal["ks", "wasserstein", "psi"] = "ks"  # per-column test for numeric columns
    signals: tuple[Literal["features", "embeddings", "predictions"], ...] = (
        "features",
        "embeddings",
        "predictions",
    )  # which signals can set drift_detected
    action: Literal["none", "notify", "retrain"] = "none"  # on drift
    notify_block: str | None = None  # name of a Prefect notification block, for action notify
    retrain_deployment: str = "histoflow-training/nightly"  # flow/deployment, for action retrain
    inbox: Path = Path("monitoring/inbox")
    reports: Path = Path("monitoring/reports")


class ReferenceConfig(_Section):
    """The monitoring reference stored with each model (stage ``reference``)."""

    pca_components: int = Field(8, ge=2, le=64)  # embeddings are compared in this PCA space


class Params(_Section):
    """All of ``params.yaml``; every section is required so a typo'd section name fails."""

    data: DataConfig
    validate_: ValidateConfig = Field(alias="validate")
    captions: CaptionsConfig
    train_encoder: TrainEncoderConfig
    embed: EmbedConfig
    train_fusion: TrainFusionConfig
    evaluate: EvaluateConfig
    reference: ReferenceConfig
    registry: RegistryConfig
    monitor: MonitorConfig
    deploy: DeployConfig

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def validate(self) -> ValidateConfig:  # type: ignore[override]
        return self.validate_


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate a parsed params mapping.

    Args:
        raw: The mapping loaded from YAML.
        source: Name used in error messages.

    Raises:
        ConfigError: naming every bad key, with what is allowed.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, raw, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``.

    Raises:
        ConfigError: if the file is missing, is not YAML, or has an unknown key or bad value.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path}: params file not found; run from the project root or pass --params"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_params(raw, str(path))


def _describe(exc: ValidationError, raw: dict, source: str) -> str:
    lines = [f"{source}: invalid parameters"]
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc)
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            lines.append(f"  {key}: unknown key; allowed keys here: {', '.join(allowed)}")
        elif err["type"] == "missing":
            lines.append(f"  {key}: required section or key is missing")
        else:
            value = _lookup(raw, loc)
            lines.append(f"  {key} = {value!r}: {err['msg']}")
    return "\n".join(lines)


def _allowed_keys(parent: list[str]) -> list[str]:
    model: type[BaseModel] = Params
    for part in parent:
        field = next((f for name, f in model.model_fields.items() if part in (name, f.alias)), None)
        if field is None or not isinstance(field.annotation, type):
            return []
        model = field.annotation
    return sorted(f.alias or name for name, f in model.model_fields.items())


def _lookup(raw: Any, loc: list[str]) -> Any:
    for part in loc:
        if isinstance(raw, dict) and part in raw:
            raw = raw[part]
        elif isinstance(raw, list | tuple) and part.isdigit() and int(part) < len(raw):
            raw = raw[int(part)]
        else:
            return None
    return raw
