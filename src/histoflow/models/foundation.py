r"""Foundation-model backbones: known-model presets, pinned local weights, transformers models.

Weights come from one of two places:

- online: the Hugging Face hub (timm ``hf-hub:`` ids, transformers ids) when
  ``train_encoder.pretrained`` is true and a token and network exist;
- offline: a local file or folder named by ``train_encoder.weights`` whose sha256 must equal
  ``train_encoder.weights_sha256``. Nothing is unpickled: ``.safetensors`` files are read as
  such, ``.bin/.pt/.pth`` with ``torch.load(weights_only=True)``.

The hash of a folder is the sha256 of its manifest, one line ``<relative path>\\t<sha256>\\n``
per weight file (``*.safetensors``, ``*.bin``, ``*.pt``, ``*.pth``) and ``config.json``, in
sorted path order; the same files give the same hash on any machine.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from typing_extensions import override

from histoflow.models._common import InputNorm

__all__ = [
    "PRESETS",
    "WEIGHT_SUFFIXES",
    "Preset",
    "TransformersEncoder",
    "hash_weights",
    "load_state_dict_file",
    "verify_weights",
]

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Preset:
    """How a named foundation model is built; taken from each model card's loading code.

    Attributes:
        source: ``timm`` or ``transformers``.
        timm_arch: the timm architecture the hub weights fit, used offline (no hub config).
        timm_kwargs: keyword arguments the model card passes to ``timm.create_model``.
        pooling: transformers only: ``cls`` or ``cls+mean`` (CLS concatenated with the mean
            patch token).
        mean, std: the normalisation the weights were trained with.
    """

    source: str
    timm_arch: str | None = None
    timm_kwargs: dict = field(default_factory=dict)
    pooling: str = "cls"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


PRESETS: dict[str, Preset] = {
    # Prov-GigaPath tile encoder (BraTS 2025 pathology): the hub config.json's model_args.
    "hf-hub:prov-gigapath/prov-gigapath": Preset(
        source="timm",
        timm_arch="vit_giant_patch14_dinov2",
        timm_kwargs={
            "img_size": 224,
            "in_chans": 3,
            "patch_size": 16,
            "embed_dim": 1536,
            "depth": 40,
            "num_heads": 24,
            "init_values": 1e-5,
            "mlp_ratio": 5.33334,
        },
    ),
    # UNI: the model card passes init_values and dynamic_img_size to timm.create_model.
    "hf-hub:MahmoodLab/UNI": Preset(
        source="timm",
        timm_arch="vit_large_patch16_224",
        timm_kwargs={
            "img_size": 224,
            "patch_size": 16,
            "init_values": 1e-5,
            "dynamic_img_size": True,
        },
    ),
    # kaiko-ai Midnight (BreakHis, PatchCamelyon linear probes): a DINOv2 ViT-g/14 in
    # transformers; the card's classification embedding is CLS + mean patch token, inputs
    # normalised with mean = std = 0.5.
    "kaiko-ai/midnight": Preset(
        source="transformers", pooling="cls+mean", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
    ),
}


def hash_weights(path: Path) -> str:
    """sha256 of a weights file, or of a weights folder's manifest (see the module docstring).

    Raises:
        FileNotFoundError: if ``path`` does not exist or a folder holds no weight files.
    """
    path = Path(path)
    if path.is_file():
        return _sha256_file(path)
    if not path.is_dir():
        raise FileNotFoundError(f"train_encoder.weights: {path} does not exist")
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name == "config.json")
    )
    if not any(p.suffix in WEIGHT_SUFFIXES for p in files):
        raise FileNotFoundError(
            f"train_encoder.weights: {path} holds no weight files ({', '.join(WEIGHT_SUFFIXES)})"
        )
    manifest = "".join(f"{p.relative_to(path).as_posix()}\t{_sha256_file(p)}\n" for p in files)
    return hashlib.sha256(manifest.encode()).hexdigest()


def verify_weights(path: Path, expected: str | None) -> str:
    """Check ``path`` against the pinned sha256 before anything reads it; return the hash.

    Raises:
        ValueError: when no hash is pinned, or the hash differs (names file, expected, actual).
    """
    actual = hash_weights(path)
    if not expected:
        raise ValueError(
            f"train_encoder.weights: {path} has no pinned hash; set "
            f"train_encoder.weights_sha256: {actual} after checking where the file came from"
        )
    if actual != expected.lower():
        raise ValueError(
            f"train_encoder.weights: refusing to load {path}: sha256 mismatch "
            f"(expected {expected.lower()}, actual {actual})"
        )
    return actual


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file without unpickling code (safetensors or weights-only torch)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_file(path)
    if path.suffix in (".bin", ".pt", ".pth"):
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):  # common checkpoint wrappers
            if isinstance(state, dict) and isinstance(state.get(key), dict) and len(state) <= 3:
                state = state[key]
        return state
    raise ValueError(
        f"train_encoder.weights: {path} has an unknown weights format; expected one of "
        f"{', '.join(WEIGHT_SUFFIXES)}"
    )


class TransformersEncoder(nn.Module):
    """A transformers vision backbone (e.g. Dinov2Model) with timm-like pooled features.

    ``forward`` returns the pooled embedding (B, D) -- the CLS token, or CLS concatenated with
    the mean patch token (B, 2H) for ``pooling="cls+mean"`` -- and :meth:`encode` adds image
    tokens: the patch tokens (B, N, H) pooled to ``grid * grid``.
    """

    def __init__(
        self,
        model: nn.Module,
        pooling: str = "cls",
        mean: tuple[float, ...] = (0.485, 0.456, 0.406),
        std: tuple[float, ...] = (0.229, 0.224, 0.225),
    ):
        super().__init__()
        if pooling not in ("cls", "cls+mean"):
            raise ValueError(f"pooling {pooling!r}: expected 'cls' or 'cls+mean'")
        self.model = model
        self.norm = InputNorm(mean, std)  # histoflow feeds ImageNet-normalised images
        self.pooling = pooling
        hidden = int(model.config.hidden_size)
        self.num_features = hidden * (2 if pooling == "cls+mean" else 1)
        # CLS plus any register tokens precede the patch tokens.
        self.num_prefix_tokens = 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Last hidden state (B, P + N, H) of ImageNet-normalised images (B, 3, S, S)."""
        hidden = self.model(pixel_values=self.norm(images)).last_hidden_state
        return hidden  # (B, P + N, H): CLS, registers, patches

    def _pool(self, hidden: torch.Tensor) -> torch.Tensor:
        cls = hidden[:, 0]  # (B, H)
        if self.pooling == "cls":
            return cls
        return torch.cat([cls, hidden[:, self.num_prefix_tokens :].mean(1)], dim=-1)  # (B, 2H)

    @override
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._pool(self.forward_features(images))

    def encode(self, images: torch.Tensor, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled (B, D) and ``grid * grid`` patch tokens (B, T, H)."""
        hidden = self.forward_features(images)
        patches = hidden[:, self.num_prefix_tokens :]  # (B, N, H)
        tokens = nn.functional.adaptive_avg_pool1d(patches.transpose(1, 2), grid * grid)
        return self._pool(hidden), tokens.transpose(1, 2).contiguous()  # (B, D), (B, T, H)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
