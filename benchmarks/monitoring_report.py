"""Time of a monitoring report for one batch: the report alone, and with champion inference.

On a batch of synthetic 64 px H&E tiles and a stand-in champion (a resnet18 encoder and a
fusion network with random weights, saved and loaded as real model folders: the timing does
not depend on what the weights learned), measures:

- the per-image QC table of the batch (decoded in 2 worker processes);
- champion inference with embeddings (``Predictor.predict_files``): morphology captions,
  MiniLM caption embeddings, image embeddings, fusion;
- the Evidently report (features, PCA embeddings, predictions; ``monitoring_report``).

Figures are seconds per 1,000 images. Target (issue "Monitoring"): the report part under 60 s
on 2 cores for 5,000 images.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _harness import main, tiles  # benchmarks/ is on sys.path

from histoflow.captions.text import TextEncoder
from histoflow.config import MonitorConfig
from histoflow.data.quality.features import DRIFT_FEATURES
from histoflow.data.quality.table import feature_table
from histoflow.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from histoflow.inference import Predictor
from histoflow.models.checkpoint import save_model
from histoflow.models.encoder import create_encoder
from histoflow.models.fusion import FusionConfig, FusionNet
from histoflow.monitoring.data import CONFIDENCE, PREDICTED, MonitorData
from histoflow.monitoring.reference import Reference, fit_pca
from histoflow.monitoring.report import monitoring_report

TARGET_REPORT_S = 60.0
_PCS = 8  # embedding principal components compared


def run(quick: bool = False, repeats: int = 3) -> list[dict]:
    """The figures, each measured ``repeats`` times.

    Full: a 1,000-image batch against 1,000 reference rows; quick: 60 against 60. Figures
    are seconds per 1,000 images (the batch's time scaled by 1,000 / n).
    """
    n = 60 if quick else 1000
    model = "test_resnet" if quick else "resnet18"  # quick: a smoke run of the same code
    with tempfile.TemporaryDirectory(prefix="hf-bench-monitor-") as tmp:
        root = Path(tmp)
        files = [root / "batch" / p for p in tiles(root / "batch", n, size=64, seed=1)["path"]]
        predictor = _stand_in_champion(root, 64, model)
        reps = [_measure(root / f"report{i}", files, predictor, n) for i in range(repeats)]
    per_1000 = 1000 / n
    note = f"{n:,}-image batch of 64 px tiles, {n:,} reference rows"
    return [
        {
            "figure": "drift report (QC table + Evidently report)",
            "unit": "s per 1,000 images",
            "samples": [(r["qc"] + r["report"]) * per_1000 for r in reps],
            "target": f"< {TARGET_REPORT_S * 1000 / 5000:.0f} s (60 s per 5,000)",
            "notes": note,
        },
        {
            "figure": "drift report: QC table (2 workers)",
            "unit": "s per 1,000 images",
            "samples": [r["qc"] * per_1000 for r in reps],
            "notes": note,
        },
        {
            "figure": "drift report: Evidently report",
            "unit": "s per 1,000 images",
            "samples": [r["report"] * per_1000 for r in reps],
            "notes": note,
        },
        {
            "figure": "champion inference for monitoring (captions, embeddings, fusion)",
            "unit": "s per 1,000 images",
            "samples": [r["inference"] * per_1000 for r in reps],
            "notes": f"{note}; {model} encoder",
        },
    ]


def _measure(out: Path, files: list[Path], predictor: Predictor, reference: int) -> dict:
    """Seconds of the QC table, champion inference and the Evidently report for ``files``."""
    t = time.perf_counter()
    qc = feature_table(files, workers=2, progress=False)
    qc_s = time.perf_counter() - t

    t = time.perf_counter()
    table, pooled = predictor.predict_files(files, embeddings=True)
    inference_s = time.perf_counter() - t

    # Reference drawn from the batch's own distribution: the timing, not the verdict, matters.
    rng = np.random.default_rng(0)
    rows = rng.choice(len(files), size=min(reference, len(files)), replace=False)
    features = qc[list(DRIFT_FEATURES)]
    predictions = table.rename(columns={"label": PREDICTED})[[PREDICTED, CONFIDENCE]]
    # The reference stage's PCA, fitted on the reference rows; `project` names the columns.
    mean, components, _ = fit_pca(pooled[rows], _PCS)
    names = pd.DataFrame(columns=[f"pc_{i}" for i in range(len(components))])
    pcs = Reference(MonitorData(features, names, predictions), mean, components).project(pooled)
    current = MonitorData(features, pcs, predictions)
    ref = MonitorData(*(x.iloc[rows].reset_index(drop=True) for x in (features, pcs, predictions)))
    t = time.perf_counter()
    monitoring_report(ref, current, MonitorConfig(), out, classes=predictor.classes)
    report_s = time.perf_counter() - t
    return {"qc": qc_s, "inference": inference_s, "report": report_s}


def _stand_in_champion(root: Path, size: int, model: str) -> Predictor:
    """A champion of the real architecture with random weights, through the real loading code."""
    torch.manual_seed(0)
    classes = ["adipose", "lymphocytes", "mucus", "normal_mucosa", "stroma", "tumour"]
    encoder = create_encoder(model)
    save_model(
        root / "encoder",
        encoder,
        {
            "backbone": model,
            "num_features": encoder.num_features,
            "image_size": size,
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
            "classes": classes,
        },
    )
    text_dim = TextEncoder(max_tokens=8).dim
    cfg = FusionConfig(
        image_dim=encoder.num_features, text_dim=text_dim, image_tokens=16, num_classes=len(classes)
    )
    save_model(
        root / "fusion",
        FusionNet(cfg),
        {
            "config": cfg.to_dict(),
            "classes": classes,
            "text_model": "all-MiniLM-L6-v2",
            "max_text_tokens": 64,
            "token_grid": 4,
            "captioner": {"backend": "morphology"},
        },
    )
    return Predictor.from_folders(root / "encoder", root / "fusion")


if __name__ == "__main__":
    sys.exit(main(__doc__))
