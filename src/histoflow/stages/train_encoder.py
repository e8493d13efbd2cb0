"""Stage ``train_encoder``: fine-tune the image encoder on the training split and export it.

Glue between params, files and :mod:`histoflow.training.encoder` (the Trainer, loaders,
checkpoints and resume). Checkpoints persist in ``outputs/.train_encoder_checkpoints/``, beside
DVC's outs (DVC deletes declared outs before a stage runs): a killed run resumes from
``last.ckpt`` when parameters and data are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from histoflow.config import Params
from histoflow.data.manifest import class_names, read_manifest
from histoflow.io import atomic_path
from histoflow.stages import write_metrics

__all__ = ["PARAMS", "Inputs", "Outputs", "checkpoint_dir", "run"]

PARAMS = ("data.image_size", "data.max_pixels", "data.stain_normalization", "train_encoder")


@dataclass(frozen=True)
class Inputs:
    """The images and the validated manifest."""

    data: Path = Path("data")
    manifest: Path = Path("outputs/validate/manifest.parquet")


@dataclass(frozen=True)
class Outputs:
    """The encoder model folder, its training curve and the stage's metrics."""

    model: Path = Path("outputs/train_encoder/model")
    history: Path = Path("outputs/train_encoder/history.csv")
    metrics: Path = Path("metrics/train_encoder.json")


def checkpoint_dir(outputs: Outputs) -> Path:
    """Where checkpoints persist between runs: ``outputs/.train_encoder_checkpoints``."""
    return Path(outputs.model).parent.parent / ".train_encoder_checkpoints"


def run(cfg: Params, inputs: Inputs, outputs: Outputs) -> dict:
    """Train, keep the best epoch by validation macro recall, export it as the encoder.

    Under DDP every process runs this function; only global rank 0 writes files.

    Raises:
        ValueError: an empty train or val split (named), or ``unfreeze_at`` under DDP.
        FloatingPointError: a non-finite training loss, naming the step and the batch's images.
    """
    # torch and Lightning load here, not at import: flows read Outputs without paying for them.
    import pandas as pd

    from histoflow.data.stain_normalization import create_stain_normalizer
    from histoflow.models.checkpoint import save_model
    from histoflow.models.encoder import create_encoder_from_params, encoder_description
    from histoflow.training.checkpoints import fingerprint, mark_complete
    from histoflow.training.encoder import fit_encoder
    from histoflow.training.reproducibility import seed

    p = cfg.train_encoder
    seed(p.seed)  # before the network is built: its initial weights come from the seed
    manifest = read_manifest(inputs.manifest)
    for split in ("train", "val"):
        if not (manifest["split"] == split).any():
            raise ValueError(
                f"train_encoder: the {split} split of {inputs.manifest} has no images; check "
                "data.val_fraction and that every class has more than one patient"
            )
    classes = class_names(manifest)
    stain_target = _fit_stain_target(cfg, inputs, manifest)
    encoder = create_encoder_from_params(p)
    run_fingerprint = fingerprint(p, cfg.data.image_size, manifest, stain_target)
    ckpt_dir = checkpoint_dir(outputs)
    fit = fit_encoder(
        p,
        encoder,
        manifest,
        classes,
        data=inputs.data,
        image_size=cfg.data.image_size,
        checkpoints=ckpt_dir,
        run_fingerprint=run_fingerprint,
        max_pixels=cfg.data.max_pixels,
        stain=create_stain_normalizer(stain_target),
    )
    if stain_target:
        fit.metrics["stain_fit_tiles"] = stain_target["n_tiles"]
        fit.metrics["stain_fit_skipped"] = stain_target["n_skipped"]  # background, fat
    if not fit.is_global_zero:
        return fit.metrics
    save_model(
        outputs.model,
        fit.module.encoder,
        {
            **encoder_description(p, fit.module.encoder),
            "image_size": cfg.data.image_size,
            "classes": classes,
            "crop_to_foreground": p.crop_to_foreground,
            # The model refuses larger inputs at inference too (predict, pyfunc, monitoring).
            "max_pixels": cfg.data.max_pixels,
            # Every path that feeds this encoder normalises to this target (inference.py).
            "stain_normalization": stain_target or {"method": "none"},
            # Where bf16 kernels differ (another CPU, a GPU), so do the weights: the card says.
            "trained_with": {
                "precision": fit.metrics["precision"],
                "device": fit.metrics["device"],
            },
        },
    )
    with atomic_path(outputs.history) as tmp:
        pd.DataFrame(fit.history).to_csv(tmp, index=False)
    write_metrics(outputs.metrics, fit.metrics, copy_in=outputs.model)
    mark_complete(ckpt_dir, run_fingerprint)
    return fit.metrics


def _fit_stain_target(cfg: Params, inputs: Inputs, manifest) -> dict | None:
    """The stain target fitted on the training split (``data.stain_normalization``), or None."""
    if cfg.data.stain_normalization == "none":
        return None
    from histoflow.data.stain_normalization import fit_stain_target_on_files

    return fit_stain_target_on_files(
        cfg.data.stain_normalization,
        inputs.data,
        manifest.loc[manifest["split"] == "train", "path"].tolist(),
        image_size=cfg.data.image_size,
        crop_to_foreground=cfg.train_encoder.crop_to_foreground,
        max_pixels=cfg.data.max_pixels,
        seed=cfg.train_encoder.seed,
    )
