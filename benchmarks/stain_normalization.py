"""What ``data.stain_normalization`` costs in ``embed``: images/s with and without, per method.

The stage's image side (:func:`histoflow.embeddings.cache.embed_missing`: PNG decoding in
``embed.num_workers`` DataLoader workers, the encoder's transform, embedding and cache writes)
on the same synthetic H&E tiles, with the encoder folder saved as ``train_encoder`` saves it:
once without a stain target and once per method with a target fitted on the tiles
(:func:`histoflow.data.stain_normalization.fit_stain_target_on_files`). Background and fat
tiles pass through the normaliser unchanged, as they would in a real run; their share is noted.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from _harness import REPO, main, tiles  # benchmarks/ is on sys.path
from embed_throughput import _pipeline, _save_encoder

from histoflow.config import load_params
from histoflow.data.stain_normalization import fit_stain_target_on_files
from histoflow.inference import ImageEmbedder
from histoflow.models.checkpoint import read_model_json

MODEL, SIZE, N = "resnet18", 64, 512  # the default image_size: tiles are normalised at it
QUICK_MODEL, QUICK_SIZE, QUICK_N = "test_resnet", 32, 48
_METHODS = ("none", "macenko", "reinhard")


def run(quick: bool = False, repeats: int = 3) -> list[dict]:
    """Images/s of the embed image pipeline per method, and each method's cost relative to none."""
    torch.manual_seed(0)
    model, size, n = (QUICK_MODEL, QUICK_SIZE, QUICK_N) if quick else (MODEL, SIZE, N)
    workers = load_params(REPO / "params.yaml").embed.num_workers
    with tempfile.TemporaryDirectory(prefix="stain_bench_") as tmp:
        data = Path(tmp) / "data"
        table = tiles(data, n, size=size)
        embedders = {}
        for method in _METHODS:
            folder = Path(tmp) / f"encoder_{method}"
            _save_encoder(folder, model, size)
            if method != "none":
                target = fit_stain_target_on_files(
                    method, data, table["path"].tolist(), image_size=size
                )
                meta = read_model_json(folder) | {"stain_normalization": target}
                (folder / "model.json").write_text(json.dumps(meta))
            embedders[method] = ImageEmbedder(folder, 4)
        samples: dict[str, list[float]] = {m: [] for m in _METHODS}
        for _ in range(repeats):  # interleaved, so load changes hit every method alike
            for method, embedder in embedders.items():
                started = time.perf_counter()
                _pipeline(embedder, data, table, workers, 64)
                samples[method].append(n / (time.perf_counter() - started))
        passed = {
            m: e.stain.n_passed_through / (repeats * n)
            for m, e in embedders.items()
            if e.stain is not None
        }
    setting = f"{model}, {size} px, {n} synthetic H&E tiles, {workers} decoding workers"
    figures = [
        {
            "figure": f"embed image pipeline, stain normalisation {m} ({setting})",
            "unit": "images/s",
            "samples": samples[m],
            **(
                {"notes": f"{passed[m]:.0%} of tiles passed through (background, fat)"}
                if m in passed
                else {}
            ),
        }
        for m in _METHODS
    ]
    figures += [
        {
            "figure": f"embed image pipeline with {m} / without",
            "unit": "ratio",
            "samples": [a / b for a, b in zip(samples[m], samples["none"], strict=True)],
        }
        for m in _METHODS[1:]
    ]
    return figures


if __name__ == "__main__":
    sys.exit(main(__doc__))
