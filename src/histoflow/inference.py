"""The inference path shared by ``embed``, ``evaluate``, ``predict``, monitoring and the registered model.

image -> (caption -> text tokens) + (encoder -> image tokens) -> fusion -> class probabilities.
:class:`Predictor` is the one entry point that classifies images: the MLflow pyfunc wraps it,
and ``histoflow predict`` and the monitoring flow call :meth:`Predictor.predict_files`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from histoflow.captions import create_captioner
from histoflow.captions.text import TextEncoder
from histoflow.data.images import DEFAULT_MAX_PIXELS, ImageTooLarge, load_rgb
from histoflow.data.stain_normalization import create_stain_normalizer
from histoflow.data.transforms import create_transform
from histoflow.device import autocast, pick_device, use_bf16
from histoflow.models.calibration import Calibration, set_labels
from histoflow.models.checkpoint import load_encoder, load_fusion
from histoflow.models.encoder import encode_images
from histoflow.models.fusion import FusionNet, head_disagreement

__all__ = ["ImageEmbedder", "Predictor", "fuse"]


class ImageEmbedder:
    """A trained encoder on the best device, bf16 autocast and channels_last where they pay off."""

    def __init__(
        self, model_dir: Path, grid: int, *, accelerator: str = "auto", precision: str = "auto"
    ):
        self.encoder, self.meta = load_encoder(model_dir)
        self.device = pick_device(accelerator)
        self.bf16 = use_bf16(self.device, precision)
        self.encoder = self.encoder.to(self.device, memory_format=torch.channels_last)
        self.grid = grid
        # Inputs with more pixels are refused before decoding: the limit the model was trained
        # with (data.max_pixels, in its model.json), so serving needs no params.yaml.
        self.max_pixels = int(self.meta.get("max_pixels", DEFAULT_MAX_PIXELS))
        # The stain target fitted on the training split (model.json), so every caller
        # (embed, predict, pyfunc, serving, monitoring) normalises as training did.
        self.stain = create_stain_normalizer(self.meta.get("stain_normalization"))
        self.transform = create_transform(
            self.meta["image_size"],
            train=False,
            crop_to_foreground=self.meta.get("crop_to_foreground", False),
            stain=self.stain,
        )

    @torch.inference_mode()
    def embed_tensor(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) normalised images -> pooled (B, D) and tokens (B, grid^2, D), float32 on CPU."""
        images = images.to(self.device, non_blocking=True).contiguous(
            memory_format=torch.channels_last
        )
        with autocast(self.device, self.bf16):
            pooled, tokens = encode_images(self.encoder, images, self.grid)
        return pooled.float().cpu(), tokens.float().cpu()

    def embed_images(self, images: Sequence[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded images -> pooled (B, D) and tokens (B, grid^2, D), as :meth:`embed_tensor`."""
        return self.embed_tensor(torch.stack([self.transform(im) for im in images]))


@torch.inference_mode()
def fuse(
    net: FusionNet,
    image_tokens: torch.Tensor,
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    batch_size: int = 256,
    *,
    temperature: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (N, C), averaged over heads, and head disagreement (N,).

    ``temperature`` (the model's :class:`~histoflow.models.calibration.Calibration`) divides
    every head's logits before the softmax.
    """
    probs, unc = [], []
    for s in range(0, len(image_tokens), batch_size):
        head_probs = (
            net(
                image_tokens[s : s + batch_size].float(),
                text_tokens[s : s + batch_size].float(),
                text_mask[s : s + batch_size],
            )
            / temperature
        ).softmax(-1)  # (B, K, C)
        probs.append(head_probs.mean(1))
        unc.append(head_disagreement(head_probs))
    if not probs:
        return np.zeros((0, net.cfg.num_classes), np.float32), np.zeros(0, np.float32)
    return torch.cat(probs).numpy(), torch.cat(unc).numpy()


@dataclass
class Predictor:
    """Everything needed to classify raw images; built from the two trained model folders."""

    embedder: ImageEmbedder
    fusion: FusionNet
    text: TextEncoder
    captioner: Callable[[Image.Image], str]
    classes: list[str]
    # Temperature and conformal sets stored with the fusion model (none: T = 1, full sets).
    calibration: Calibration = field(default_factory=Calibration)

    @classmethod
    def from_folders(
        cls, encoder_dir: Path, fusion_dir: Path, *, accelerator: str = "auto"
    ) -> Predictor:
        """The predictor of a trained encoder folder and fusion folder."""
        fusion, meta = load_fusion(fusion_dir)
        embedder = ImageEmbedder(encoder_dir, meta["token_grid"], accelerator=accelerator)
        text = TextEncoder(
            meta["text_model"],
            meta["max_text_tokens"],
            device=embedder.device,
            precision="bf16" if embedder.bf16 else "32",
        )
        captioner = create_captioner(meta.get("captioner", {"backend": "morphology"}))
        return cls(
            embedder, fusion, text, captioner, list(meta["classes"]), Calibration.from_meta(meta)
        )

    def tokens(
        self, images: Sequence[Image.Image]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What the fusion heads read: image tokens (B, T, D), text tokens (B, L, E), mask (B, L).

        The images are captioned and embedded as :meth:`predict` does (evaluate's robustness
        certificate scores the fusion model and its ablations on them).
        """
        text = self.text.encode(_caption(self.captioner, list(images)))
        _, image_tokens = self.embedder.embed_images(images)
        return image_tokens, text.tokens, text.mask

    def predict(self, images: Sequence[Image.Image], batch_size: int = 64) -> pd.DataFrame:
        """One row per image: ``label``, ``confidence``, ``uncertainty``, ``prob_<class>``, ``caption``.

        Then ``prediction_set`` (the conformal set, class names joined by ``|``: at the model's
        alpha, the true class is in it for at least 1 - alpha of each class's images) and
        ``set_size``.
        """
        return self.predict_with_embeddings(images, batch_size)[0]

    def predict_with_embeddings(
        self, images: Sequence[Image.Image], batch_size: int = 64
    ) -> tuple[pd.DataFrame, np.ndarray]:
        """:meth:`predict`'s table and the pooled image embeddings (N, D), for monitoring."""
        frames, pooled = [], []
        for s in range(0, len(images), batch_size):
            batch = list(images[s : s + batch_size])
            captions = _caption(self.captioner, batch)
            text = self.text.encode(captions)
            b_pooled, tokens = self.embedder.embed_images(batch)
            probs, unc = fuse(
                self.fusion,
                tokens,
                text.tokens,
                text.mask,
                temperature=self.calibration.temperature,
            )
            frame = pd.DataFrame(probs, columns=[f"prob_{c}" for c in self.classes])
            frame.insert(0, "label", [self.classes[i] for i in probs.argmax(1)])
            frame.insert(1, "confidence", probs.max(1))
            frame.insert(2, "uncertainty", unc)
            frame["caption"] = captions
            in_set = self.calibration.prediction_sets(probs)
            frame["prediction_set"] = set_labels(in_set, self.classes)
            frame["set_size"] = in_set.sum(1)
            frames.append(frame)
            pooled.append(b_pooled.numpy())
        if not frames:
            return pd.DataFrame(), np.zeros((0, 0), np.float32)
        return pd.concat(frames, ignore_index=True), np.concatenate(pooled)

    def predict_files(
        self,
        files: Sequence[Path],
        *,
        batch_size: int = 64,
        embeddings: bool = False,
        progress: bool = False,
    ) -> tuple[pd.DataFrame, np.ndarray | None]:
        """Classify image files, reading ``batch_size`` at a time (memory stays flat).

        A file that cannot be decoded (not an image, truncated, over a pixel limit: the
        ``OSError`` or ``ValueError`` of decoding it) does not stop the others: its row carries
        the reason in ``error`` and no prediction.

        Returns:
            :meth:`predict`'s table with ``path`` first and ``error`` last (empty where the file
            was classified), one row per file in order; and the pooled image embeddings (N, D),
            NaN rows for the files that failed, when ``embeddings`` is set (else None).
        """
        batches = list(self.iter_files(files, batch_size=batch_size, progress=progress))
        table = pd.concat([t for t, _ in batches], ignore_index=True) if batches else pd.DataFrame()
        pooled = [(len(t), list(np.flatnonzero(t["error"] == "")), e) for t, e in batches]
        return table, (_rows_with_gaps(pooled) if embeddings and pooled else None)

    def iter_files(
        self, files: Sequence[Path], *, batch_size: int = 64, progress: bool = False
    ) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        """:meth:`predict_files` one batch at a time: each batch's table and pooled embeddings.

        Yields as each batch finishes, so a caller that writes the rows and lets them go keeps
        memory flat whatever the number of files (``histoflow predict --out``). The table is
        :meth:`predict_files`'s for the batch's files; the embeddings (n_ok, D) are the rows of
        the files classified (``error`` empty), in order.
        """
        from tqdm import tqdm

        columns = [
            "label",
            "confidence",
            "uncertainty",
            *(f"prob_{c}" for c in self.classes),
            "caption",
            "prediction_set",
            "set_size",
        ]
        with tqdm(total=len(files), desc="predict", unit="img", disable=not progress) as bar:
            for s in range(0, len(files), batch_size):
                batch = list(files[s : s + batch_size])
                images, errors = _decode(batch, self.embedder.max_pixels)
                good = [i for i in range(len(batch)) if i not in errors]
                frame, emb = self.predict_with_embeddings([images[i] for i in good], batch_size)
                frame = frame.set_axis(good).reindex(index=range(len(batch)), columns=columns)
                frame.insert(0, "path", [str(f) for f in batch])
                frame["error"] = [errors.get(i, "") for i in range(len(batch))]
                bar.update(len(batch))
                yield frame, emb


def _decode(files: list[Path], max_pixels: int) -> tuple[dict[int, Image.Image], dict[int, str]]:
    """Each file decoded to RGB, or why it could not be (by position in ``files``).

    A file over ``max_pixels`` (the limit the model was trained with) is refused from its
    header, before decoding: a decompression bomb is one more unreadable file.
    """
    images, errors = {}, {}
    for i, path in enumerate(files):
        try:
            images[i] = load_rgb(path, max_pixels=max_pixels)
        except ImageTooLarge as exc:
            errors[i] = str(exc)  # names the file already
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            errors[i] = f"cannot read {path} as an image: {exc}"
    return images, errors


def _rows_with_gaps(batches: list[tuple[int, list[int], np.ndarray]]) -> np.ndarray:
    """Per batch (size, positions embedded, their rows) -> one (N, D) array, NaN where none."""
    width = max((emb.shape[1] for _, _, emb in batches if emb.size), default=0)
    parts = []
    for size, good, emb in batches:
        part = np.full((size, width), np.nan, np.float32)
        if good:
            part[good] = emb
        parts.append(part)
    return np.concatenate(parts)


def _caption(captioner: Callable[[Image.Image], str], images: list[Image.Image]) -> list[str]:
    batch = getattr(captioner, "caption_batch", None)  # VLMs generate in batches
    return batch(images) if batch else [captioner(im) for im in images]
