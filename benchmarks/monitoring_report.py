"""Time of a monitoring report for one batch: the report alone, and with champion inference.

Usage::

    python benchmarks/monitoring_report.py [--n 5000] [--reference 2000] [--size 64]

Generates N synthetic 64 px H&E tiles (the batch) and builds a stand-in champion (a resnet18
encoder and a fusion network with random weights, saved and loaded as real model folders: the
timing does not depend on what the weights learned). Measures:

- the per-image QC table of the batch (decoded in 2 worker processes);
- champion inference with embeddings: morphology captions, MiniLM caption embeddings, image
  embeddings, fusion;
- the Evidently report (features, PCA embeddings, predictions; ``monitoring_report``).

Prints a markdown table and writes ``benchmarks/results/monitoring_report.json``; ``run`` gives
the suite (``benchmarks/suite.py``, ``make bench``) the same measurements per 1,000 images.
Target (issue "Monitoring"): the report part under 60 s on 2 cores for 5,000 images.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _machine import machine_info  # benchmarks/ is on sys.path when run as a script

from histoflow.captions.text import TextEncoder
from histoflow.config import MonitorConfig
from histoflow.data.images import load_rgb
from histoflow.data.quality.features import DRIFT_FEATURES
from histoflow.data.quality.table import feature_table
from histoflow.data.synthetic import generate
from histoflow.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from histoflow.inference import Predictor
from histoflow.io import write_json
from histoflow.models.checkpoint import save_model
from histoflow.models.encoder import create_encoder
from histoflow.models.fusion import FusionConfig, FusionNet
from histoflow.monitoring.report import MonitorData, monitoring_report

RESULTS = Path(__file__).parent / "results" / "monitoring_report.json"
TARGET_REPORT_S = 60.0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="batch size in images")
    parser.add_argument("--reference", type=int, default=2000, help="reference rows")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="hf-bench-monitor-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        files = _make_batch(root, args.n, args.size)
        make_s = time.perf_counter() - t
        predictor = _stand_in_champion(root, args.size)
        seconds = _measure(root / "report", files, predictor, args.reference)
    qc_s, inference_s, report_s = seconds["qc"], seconds["inference"], seconds["report"]

    results = {
        "n_images": len(files),
        "n_reference": min(args.reference, len(files)),
        "machine": machine_info(),
        "seconds": {
            "make_tiles": round(make_s, 1),
            "qc_table": round(qc_s, 1),
            "champion_inference": round(inference_s, 1),
            "report": round(report_s, 1),
        },
        "report_without_embedding_s": round(qc_s + report_s, 1),
        "report_with_embedding_s": round(qc_s + inference_s + report_s, 1),
        "target_report_s": TARGET_REPORT_S,
    }
    write_json(args.out, results)
    s = results["seconds"]
    print(f"| step ({len(files)} images, {os.cpu_count()} cores) | seconds |\n|---|---:|")
    for name in ("qc_table", "champion_inference", "report"):
        print(f"| {name} | {s[name]} |")
    print(f"| report without embedding (qc + report) | {results['report_without_embedding_s']} |")
    print(
        f"| report with embedding (qc + inference + report) | {results['report_with_embedding_s']} |"
    )
    return results


def run(quick: bool = False, repeats: int = 3) -> list[dict]:
    """The suite's figures (``benchmarks/suite.py``), each measured ``repeats`` times.

    Full: a 1,000-image batch against 1,000 reference rows; quick: 100 against 100. Figures
    are seconds per 1,000 images (the batch's time scaled by 1,000 / n).
    """
    n = 100 if quick else 1000
    reps = []
    with tempfile.TemporaryDirectory(prefix="hf-bench-monitor-") as tmp:
        root = Path(tmp)
        files = _make_batch(root, n, 64)
        predictor = _stand_in_champion(root, 64)
        for i in range(repeats):
            reps.append(_measure(root / f"report{i}", files, predictor, n))
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
            "notes": note + "; resnet18 encoder",
        },
    ]


def _make_batch(root: Path, n: int, size: int) -> list[Path]:
    generate(root / "batch", classes=6, per_class=-(-n // 6), size=size, seed=1)
    return sorted((root / "batch").rglob("*.png"))[:n]


def _measure(out: Path, files: list[Path], predictor: Predictor, reference: int) -> dict:
    """Seconds of the QC table, champion inference and the Evidently report for ``files``."""
    t = time.perf_counter()
    qc = feature_table(files, workers=2, progress=False)
    qc_s = time.perf_counter() - t

    t = time.perf_counter()
    table, pooled = predictor.predict_with_embeddings([load_rgb(f) for f in files])
    inference_s = time.perf_counter() - t

    # Reference drawn from the batch's own distribution: the timing, not the verdict, matters.
    rng = np.random.default_rng(0)
    ref_rows = rng.choice(len(files), size=min(reference, len(files)), replace=False)
    k = 8
    mean = pooled.mean(0)
    _, _, vt = np.linalg.svd(pooled[ref_rows] - mean, full_matrices=False)
    pcs = pd.DataFrame((pooled - mean) @ vt[:k].T, columns=[f"pc_{i}" for i in range(k)])
    predictions = table.rename(columns={"label": "predicted"})[["predicted", "confidence"]]
    features = qc[list(DRIFT_FEATURES)]
    ref = MonitorData(
        features.iloc[ref_rows].reset_index(drop=True),
        pcs.iloc[ref_rows].reset_index(drop=True),
        predictions.iloc[ref_rows].reset_index(drop=True),
    )
    current = MonitorData(features, pcs, predictions)
    t = time.perf_counter()
    monitoring_report(ref, current, MonitorConfig(), out, classes=predictor.classes)
    report_s = time.perf_counter() - t
    return {"qc": qc_s, "inference": inference_s, "report": report_s}


def _stand_in_champion(root: Path, size: int) -> Predictor:
    """A champion of the real architecture with random weights, through the real loading code."""
    torch.manual_seed(0)
    classes = ["adipose", "lymphocytes", "mucus", "normal_mucosa", "stroma", "tumour"]
    encoder = create_encoder("resnet18")
    save_model(
        root / "encoder",
        encoder,
        {
            "backbone": "resnet18",
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
    main()
