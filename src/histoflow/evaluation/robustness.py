"""The robustness certificate: the test split scored under seeded image perturbations.

Each perturbation acts on the decoded image, as a scanner, lab or compression would, so every
perturbed test image is captioned, embedded and classified again through
:class:`histoflow.inference.Predictor`, exactly as a served image would be. The clean test
images run through the same path, so a drop measures the perturbation and nothing else.

Perturbations (``evaluate.robustness``; each at a few strengths):

- ``stain``: H&E stain shift in HED space (each stain's density scaled by ``1 +- s`` and
  shifted by ``+- s / 5``; seeded per image, as Tellez et al.'s augmentation but stronger);
- ``jpeg``: JPEG compression at a quality;
- ``blur``: Gaussian blur of a radius in pixels (of the stored image);
- ``rescale``: a magnification change: the image is resized by the factor and brought back to
  its size by mirroring (zoom out) or a centre crop (zoom in).

Every model (the fusion model and its ablations) gets each condition's macro recall with a
bootstrap CI (resamples shared, so conditions compare pairwise) and its drop from clean.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageFilter

from histoflow.data.transforms import hed_to_rgb, rgb_to_hed
from histoflow.metrics import bootstrap_ci, headline_metrics

__all__ = ["PERTURBATIONS", "certificate", "perturb", "worst_case"]


def _stain(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    rgb = torch.from_numpy(np.asarray(image, np.float32) / 255).permute(2, 0, 1)  # (3, H, W)
    hed = rgb_to_hed(rgb.double(), clip=False)
    alpha = 1 + torch.from_numpy(rng.uniform(-strength, strength, (3, 1, 1)))
    beta = torch.from_numpy(rng.uniform(-strength / 5, strength / 5, (3, 1, 1)))
    out = hed_to_rgb(hed * alpha + beta).permute(1, 2, 0).numpy()
    return Image.fromarray(np.round(out * 255).astype(np.uint8))


def _jpeg(image: Image.Image, quality: float, _rng) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(quality))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _blur(image: Image.Image, radius: float, _rng) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius))


def _rescale(image: Image.Image, factor: float, _rng) -> Image.Image:
    w, h = image.size
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    small = np.asarray(image.resize(size, Image.Resampling.BICUBIC))  # (h', w', 3)
    if factor < 1:  # zoom out: the field of view grows; mirror the tissue to fill it
        reps = (-(-h // small.shape[0]), -(-w // small.shape[1]))
        pad = ((0, reps[0] * small.shape[0] - small.shape[0]), (0, 0), (0, 0))
        tall = np.pad(small, pad, mode="symmetric")
        out = np.pad(
            tall, ((0, 0), (0, reps[1] * small.shape[1] - small.shape[1]), (0, 0)), mode="symmetric"
        )
        return Image.fromarray(np.ascontiguousarray(out[:h, :w]))
    top, left = (small.shape[0] - h) // 2, (small.shape[1] - w) // 2  # zoom in: centre crop
    return Image.fromarray(np.ascontiguousarray(small[top : top + h, left : left + w]))


PERTURBATIONS: dict[str, Callable[[Image.Image, float, np.random.Generator], Image.Image]] = {
    "stain": _stain,
    "jpeg": _jpeg,
    "blur": _blur,
    "rescale": _rescale,
}


def perturb(
    image: Image.Image, kind: str, strength: float, *, seed: int | Sequence[int] = 0
) -> Image.Image:
    """``image`` (RGB) under perturbation ``kind`` at ``strength``; the same seed, the same image.

    Raises:
        ValueError: an unknown ``kind``, naming the known ones.
    """
    if kind not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {kind!r}; expected one of {sorted(PERTURBATIONS)}")
    return PERTURBATIONS[kind](image, strength, np.random.default_rng(seed))


def certificate(
    features: Callable[[list[Image.Image]], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    models: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]],
    load: Callable[[int], Image.Image],
    y_true: np.ndarray,
    conditions: Sequence[tuple[str, float]],
    *,
    weights: np.ndarray,
    seed: int = 0,
    batch_size: int = 64,
) -> dict:
    """Score every model on the test images, clean and under each condition.

    Args:
        features: decoded images -> (image tokens, text tokens, text mask), the fusion input
            (:meth:`histoflow.inference.Predictor.tokens`).
        models: name -> ``score(image_tokens, text_tokens, text_mask) -> (probs, _)``.
        load: test image ``i`` decoded (read batch by batch: memory stays bounded).
        y_true: (N,) class indices of the test images.
        conditions: (perturbation, strength) pairs.
        weights: (R, N) bootstrap resample counts, shared with the clean evaluation.
        seed: of the stain shifts (image ``i`` draws from ``[seed, i]``).
        batch_size: test images decoded at a time; each is embedded under every condition in
            one pass (batch_size x conditions images).

    Returns:
        ``{"n", "conditions", "models": {model: {"clean": row, perturbation: {strength:
        row}}}}``, a row being ``{macro_recall, ci, drop}``. No timings: evaluate.json must
        reproduce bit for bit (the stage logs the cost).
    """
    keys = [("clean", 0.0), *conditions]
    probs = {(m, k): [] for m in models for k in keys}
    n = len(y_true)
    for s in range(0, n, batch_size):
        batch = [load(i) for i in range(s, min(n, s + batch_size))]
        images = [
            im if kind == "clean" else perturb(im, kind, strength, seed=[seed, s + j])
            for kind, strength in keys
            for j, im in enumerate(batch)
        ]
        tokens = features(images)  # every condition of the batch in one pass: (K * B, ...)
        for name, score in models.items():
            batch_probs = score(*tokens)[0].reshape(len(keys), len(batch), -1)  # (K, B, C)
            for k, key in enumerate(keys):
                probs[name, key].append(batch_probs[k])
    out = {"n": n, "conditions": [list(k) for k in conditions], "models": {}}
    for name in models:
        rows = {}
        for kind, strength in keys:
            p = np.concatenate(probs[name, (kind, strength)])
            value = float(headline_metrics(y_true, p)["macro_recall"][0])
            ci = bootstrap_ci(y_true, p, weights)["macro_recall"]
            rows.setdefault(kind, {})[_key(strength)] = {"macro_recall": value, "ci": ci}
        clean = rows["clean"].pop(_key(0.0))
        for kind_rows in rows.values():
            for row in kind_rows.values():
                row["drop"] = row["macro_recall"] - clean["macro_recall"]
        rows["clean"] = clean | {"drop": 0.0}
        out["models"][name] = rows
    return out


def worst_case(model_rows: dict, held_out: dict | None = None) -> dict:
    """The condition with the lowest macro recall among one model's rows (clean included).

    ``held_out`` (:func:`~histoflow.evaluation.leave_one_out.leave_one_group_out`'s result)
    adds each held-out group as a condition ``leave_out:<column>`` of strength ``<group>``.
    """
    candidates = [("clean", None, model_rows["clean"])] + [
        (kind, strength, row)
        for kind, by_strength in model_rows.items()
        if kind != "clean"
        for strength, row in by_strength.items()
    ]
    if held_out and "groups" in held_out:
        candidates += [
            (f"leave_out:{held_out['column']}", g, row) for g, row in held_out["groups"].items()
        ]
    kind, strength, row = min(candidates, key=lambda c: c[2]["macro_recall"])
    return {"perturbation": kind, "strength": strength, **row}


def _key(strength: float) -> str:
    return f"{strength:g}"
