"""Explainability panels for the deployed model: Grad-CAM (CNNs) and attention rollout (ViTs).

The model explained is the real inference path, not the encoder alone:
image -> encoder -> :func:`encode_images` tokens -> fusion net with that tile's cached caption
tokens -> class logits averaged over the K heads. Grad-CAM's target is the predicted class. A
hybrid encoder (an attribute ``branches``) gets one map per branch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn
from torchvision.transforms import v2
from tqdm import tqdm

from histoflow.data.images import DEFAULT_MAX_PIXELS, load_rgb
from histoflow.inference import ImageEmbedder
from histoflow.io import atomic_path
from histoflow.models.encoder import encode_images

__all__ = ["explain_maps", "explain_tiles", "load_tiles", "select_tiles", "write_panels"]


class _FusedModel(nn.Module):
    """Images (B, 3, S, S) -> head-averaged logits (B, C), with the batch's caption tokens set."""

    def __init__(self, encoder: nn.Module, fusion: nn.Module, grid: int):
        super().__init__()
        self.encoder, self.fusion, self.grid = encoder, fusion, grid
        self.text_tokens: torch.Tensor | None = None
        self.text_mask: torch.Tensor | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _, tokens = encode_images(self.encoder, images, self.grid)  # (B, T, D)
        return self.fusion(tokens, self.text_tokens, self.text_mask).mean(1)  # (B, C)


def _is_vit(module: nn.Module) -> bool:
    blocks = getattr(module, "blocks", None)
    return blocks is not None and len(blocks) > 0 and hasattr(blocks[0], "attn")


def _cam_layer(module: nn.Module, image_size: int) -> nn.Module:
    """The deepest CNN stage whose map is at least 4 x 4 for this image size.

    Small tiles (32-64 px) shrink to 1 x 1 or 2 x 2 in the last stage, where Grad-CAM is a
    constant; timm's ``feature_info`` gives every stage's reduction. Without it: the last Conv2d.
    """
    info = getattr(module, "feature_info", None)
    if info:
        stages = [i if isinstance(i, dict) else vars(i) for i in info]
        fine = [s for s in stages if image_size // s["reduction"] >= 4] or stages[:1]
        return module.get_submodule(fine[-1]["module"])
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(module).__name__}: no convolution to explain with Grad-CAM")
    return convs[-1]


def _rollout(model: _FusedModel, vit: nn.Module, images: torch.Tensor) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020) of one ViT, (B, S, S) in [0, 1].

    Class-agnostic by construction: it traces how much each patch reaches the pooled token.
    """
    maps: list[torch.Tensor] = []
    handles, fused = [], []
    for block in vit.blocks:
        fused.append(getattr(block.attn, "fused_attn", False))
        block.attn.fused_attn = False  # the fused kernel never materialises the attention
        handles.append(block.attn.attn_drop.register_forward_hook(lambda m, i, o: maps.append(o)))
    try:
        with torch.no_grad():
            model(images)
    finally:
        for h in handles:
            h.remove()
        for block, was in zip(vit.blocks, fused, strict=True):
            block.attn.fused_attn = was
    prefix = getattr(vit, "num_prefix_tokens", 0)
    n = maps[0].shape[-1]
    rollout = torch.eye(n).expand(len(images), n, n)
    for attn in maps:  # (B, H, N, N)
        a = attn.float().mean(1) + torch.eye(n)  # residual connection
        rollout = (a / a.sum(-1, keepdim=True)) @ rollout
    # Relevance of each patch for the class token (or, without one, for the mean patch).
    rel = rollout[:, 0, prefix:] if prefix else rollout[:, prefix:, prefix:].mean(1)  # (B, P)
    side = round(rel.shape[1] ** 0.5)
    rel = rel[:, : side * side].reshape(-1, 1, side, side)
    rel = F.interpolate(rel, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    lo = rel.amin((1, 2), keepdim=True)
    hi = rel.amax((1, 2), keepdim=True)
    return ((rel - lo) / (hi - lo).clamp(min=1e-8)).numpy()


def explain_maps(
    encoder: nn.Module,
    fusion: nn.Module,
    grid: int,
    images: torch.Tensor,
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    targets: Sequence[int],
) -> list[tuple[str, np.ndarray]]:
    """Saliency maps for a batch, one per encoder branch.

    Args:
        encoder: the trained encoder (any device; float32).
        fusion: the trained fusion network, on the same device.
        grid: the token grid used by ``embed``.
        images: (B, 3, S, S) normalised images on the encoder's device.
        text_tokens: (B, L, Dt) each tile's cached caption tokens.
        text_mask: (B, L) their mask.
        targets: (B,) class explained per image (the predicted class).

    Returns:
        [(method and branch name, (B, S, S) maps in [0, 1])].
    """
    model = _FusedModel(encoder, fusion, grid).eval()
    model.text_tokens, model.text_mask = text_tokens.float(), text_mask
    branches = list(getattr(encoder, "branches", [encoder]))
    out = []
    for i, branch in enumerate(branches):
        name = "" if len(branches) == 1 else f" branch {i} ({type(branch).__name__})"
        if _is_vit(branch):
            out.append((f"attention rollout{name}", _rollout(model, branch, images)))
            continue
        with GradCAM(model=model, target_layers=[_cam_layer(branch, images.shape[-1])]) as cam:
            maps = cam(
                input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets]
            )
        out.append((f"Grad-CAM{name}", np.asarray(maps)))
    return out


def select_tiles(predictions: pd.DataFrame, per_class: int) -> pd.DataFrame:
    """Up to ``per_class`` correct and ``per_class`` wrong test tiles per true class.

    The most confident of each: confident mistakes are the ones worth looking at.
    """
    conf = predictions.filter(like="prob_").max(axis=1)
    ranked = predictions.assign(_conf=conf).sort_values(["label", "_conf"], ascending=[True, False])
    picked = ranked.groupby(["label", "correct"], sort=True).head(per_class)
    return picked.drop(columns="_conf")


def write_panels(
    tiles: pd.DataFrame,
    images: torch.Tensor,
    maps: list[tuple[str, np.ndarray]],
    transform: v2.Compose,
    out_dir: Path,
) -> list[dict]:
    """One PNG per true class: a row per tile (image, then one overlay per map).

    Returns:
        [{label, file, tiles: [{path, predicted, correct}]}] for the report's gallery.
    """
    mean, std = _normalisation(transform)
    shown = (images.detach().cpu().float() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    written = []
    tiles = tiles.reset_index(drop=True)
    for label, rows in tiles.groupby("label", sort=True):
        idx = rows.index.to_numpy()
        cols = 1 + len(maps)
        fig, axes = plt.subplots(
            len(idx),
            cols,
            figsize=(2.2 * cols, 2.3 * len(idx)),
            squeeze=False,
            constrained_layout=True,
        )
        for r, i in enumerate(idx):
            row = tiles.loc[i]
            prob = row[f"prob_{row['predicted']}"]
            verdict = "correct" if row["correct"] else "WRONG"
            axes[r, 0].imshow(shown[i])
            axes[r, 0].set_title(f"{verdict}: pred {row['predicted']} ({prob:.2f})", fontsize=7)
            for c, (name, m) in enumerate(maps, start=1):
                axes[r, c].imshow(shown[i])
                axes[r, c].imshow(m[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
                axes[r, c].set_title(name, fontsize=7)
            for ax in axes[r]:
                ax.axis("off")
        fig.suptitle(f"true class: {label}", fontsize=9)
        file = Path(out_dir) / f"explain_{_slug(str(label))}.png"
        with atomic_path(file) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        written.append(
            {
                "label": str(label),
                "file": file.name,
                "tiles": rows[["path", "predicted", "correct"]].to_dict("records"),
            }
        )
    return written


def explain_tiles(
    encoder_dir: Path,
    fusion: nn.Module,
    meta: dict,
    tiles: pd.DataFrame,
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    *,
    data_root: Path,
    out_dir: Path,
    batch_size: int = 16,
) -> list[dict]:
    """Explain ``tiles`` through the whole model and write one panel PNG per true class.

    Args:
        encoder_dir: the trained encoder's model folder.
        fusion: the deployed fusion network.
        meta: the fusion model's description (``token_grid``, ``classes``).
        tiles: rows of the predictions table to explain (``path``, ``label``, ``predicted``,
            ``correct``, ``prob_<class>``), e.g. from :func:`select_tiles`.
        text_tokens: (N, L, Dt) each tile's cached caption tokens, aligned with ``tiles``.
        text_mask: (N, L) their mask.
        data_root: the folder the tiles' paths are relative to.
        out_dir: where the PNGs go.
        batch_size: tiles per Grad-CAM pass.

    Returns:
        :func:`write_panels`'s list, for the report.
    """
    grid = int(meta["token_grid"])
    embedder = ImageEmbedder(encoder_dir, grid, precision="32")
    images = load_tiles(
        data_root, tiles["path"].tolist(), embedder.transform, max_pixels=embedder.max_pixels
    )
    targets = [meta["classes"].index(c) for c in tiles["predicted"]]
    net, device = fusion.to(embedder.device), embedder.device
    maps: list = []
    for s in tqdm(range(0, len(tiles), batch_size), desc="explain", unit="batch"):
        batch = explain_maps(
            embedder.encoder,
            net,
            grid,
            images[s : s + batch_size].to(device),
            text_tokens[s : s + batch_size].to(device),
            text_mask[s : s + batch_size].to(device),
            targets[s : s + batch_size],
        )
        maps = (
            batch
            if not maps
            else [(n, np.concatenate([m0, m])) for (n, m0), (_, m) in zip(maps, batch, strict=True)]
        )
    return write_panels(tiles, images, maps, embedder.transform, out_dir)


def explain_test_tiles(
    encoder_dir: Path,
    data_root: Path,
    fusion: nn.Module,
    meta: dict,
    tensors,
    test_rows: np.ndarray,
    predictions: pd.DataFrame,
    *,
    per_class: int,
    out_dir: Path,
) -> list[dict]:
    """Panels for ``per_class`` correct and wrong test tiles per class.

    Args:
        encoder_dir: the trained encoder's folder.
        data_root: the folder the predictions' paths are relative to.
        fusion: the fusion classifier.
        meta: its model.json.
        tensors: the feature store (its caption tokens are read for the chosen tiles).
        test_rows: the feature-store row of each row of ``predictions``.
        predictions: the test predictions (``path``, ``label``, ``predicted``, ``correct``).
        per_class: tiles per class and outcome (``evaluate.explain_per_class``).
        out_dir: where the panel PNGs go.

    Returns:
        :func:`explain_tiles`' panel records.
    """
    tiles = select_tiles(predictions, per_class)
    rows = test_rows[tiles.index.to_numpy()]
    return explain_tiles(
        encoder_dir,
        fusion,
        meta,
        tiles,
        torch.from_numpy(tensors.read("text_tokens", rows)),
        torch.from_numpy(tensors.read("text_mask", rows)),
        data_root=data_root,
        out_dir=out_dir,
    )


def load_tiles(
    root: Path,
    paths: Sequence[str],
    transform: v2.Compose,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """(B, 3, S, S) normalised images, exactly as the model saw them."""
    return torch.stack([transform(load_rgb(Path(root) / p, max_pixels=max_pixels)) for p in paths])


def _normalisation(transform: v2.Compose) -> tuple[torch.Tensor, torch.Tensor]:
    """The transform's Normalize mean and std as (3, 1, 1), to show images as the model saw them."""
    for t in getattr(transform, "transforms", []):
        if isinstance(t, v2.Normalize):
            return torch.tensor(t.mean).view(3, 1, 1), torch.tensor(t.std).view(3, 1, 1)
    return torch.zeros(3, 1, 1), torch.ones(3, 1, 1)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)
