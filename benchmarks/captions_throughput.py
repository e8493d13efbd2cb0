"""Throughput of the morphology captioner, the cached ``captions`` stage and the text encoder.

On synthetic 64 px H&E tiles (6 classes), all in this one process:

- morphology captions per second on decoded images: one process, single-threaded (the
  captioner's numpy/scipy work does not use more than one core);
- the ``captions`` stage (repository params, morphology backend) on an empty cache, then the
  fully cached re-run with nothing changed, and the ratio of the two;
- text embeddings per second of the bundled encoder on the captions, as ``embed`` runs it
  (bf16 autocast where the CPU has native bf16) and in plain fp32, and the ratio (torch uses
  its intra-op threads, recorded in the notes).

Targets (issue "captions cache"): at least 200 captions/s at 64 px, and a cached re-run at
least 20 times faster than the first run.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch
from _harness import REPO, main, tiles  # benchmarks/ is on sys.path

from histoflow.captions.morphology import MorphologyCaptioner
from histoflow.captions.text import TextEncoder
from histoflow.config import load_params
from histoflow.data.images import load_rgb
from histoflow.stages import captions as stage

TARGET_CAPTIONS_PER_S = 200
TARGET_CACHED_SPEEDUP = 20
_TEXT_N = 500  # captions per text-embedding sample


def run(quick: bool = False, repeats: int = 3) -> list[dict]:
    """The figures, each measured ``repeats`` times.

    Full: 1,000 tiles; quick: 60. Each repeat captions the same decoded tiles, runs the stage
    on a fresh cache and then cached, and encodes the captions; the speed-up is per repeat.
    """
    n = 60 if quick else 1000
    cfg = load_params(REPO / "params.yaml")
    cfg = cfg.model_copy(
        update={"captions": cfg.captions.model_copy(update={"backend": "morphology"})}
    )
    # The embed stage's text path (its precision: bf16 autocast where the CPU has native bf16)
    # and plain fp32, on the first _TEXT_N captions: both are fixed-shape forward passes.
    encoders = {"stage": TextEncoder(precision="auto"), "fp32": TextEncoder(precision="32")}
    for e in encoders.values():  # warm-up: oneDNN picks its kernels on the first pass (one shape)
        e.encode(["warm-up"])
    reps: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="captions_bench_") as tmp:
        data, manifest = Path(tmp) / "data", Path(tmp) / "manifest.parquet"
        table = tiles(data, n, size=64)  # with split and sha256: a validated manifest
        table.to_parquet(manifest, index=False)
        images = [load_rgb(data / p) for p in table["path"]]
        inputs = stage.Inputs(data=data, manifest=manifest)
        captioner = MorphologyCaptioner()
        for i in range(repeats):
            started = time.perf_counter()
            captions = [captioner(image) for image in images]
            caption_s = time.perf_counter() - started
            outputs = stage.Outputs(
                captions=Path(tmp) / f"out{i}" / "captions.csv", gallery=Path(tmp) / f"gallery{i}"
            )
            first = _timed(lambda outputs=outputs: stage.run(cfg, inputs, outputs))
            cached = _timed(lambda outputs=outputs: stage.run(cfg, inputs, outputs))
            assert first["metrics"]["n_new"] == n and cached["metrics"]["n_new"] == 0
            texts = captions[:_TEXT_N]
            encode_s = {k: _seconds(lambda e=e, t=texts: e.encode(t)) for k, e in encoders.items()}
            reps.append(
                {
                    "captions_per_s": n / caption_s,
                    "stage_images_per_s": n / first["seconds"],
                    "speedup": first["seconds"] / cached["seconds"],
                    **{f"embeddings_per_s_{k}": len(texts) / v for k, v in encode_s.items()},
                }
            )
    note = f"{n:,} synthetic 64 px tiles"
    return [
        {
            "figure": "morphology captions, 1 core",
            "unit": "captions/s",
            "samples": [r["captions_per_s"] for r in reps],
            "target": f">= {TARGET_CAPTIONS_PER_S}/s",
            "notes": note,
        },
        {
            "figure": "captions stage, first run (empty cache)",
            "unit": "images/s",
            "samples": [r["stage_images_per_s"] for r in reps],
            "notes": note + "; includes reading, the cache and the gallery",
        },
        {
            "figure": "captions stage, cached re-run vs first run",
            "unit": "x faster",
            "samples": [r["speedup"] for r in reps],
            "target": f">= {TARGET_CACHED_SPEEDUP}x",
        },
        *(
            {
                "figure": f"caption text embeddings ({e.name}, {e.precision}"
                f"{', as embed runs it' if k == 'stage' else ''})",
                "unit": "captions/s",
                "samples": [r[f"embeddings_per_s_{k}"] for r in reps],
                "notes": f"{min(n, _TEXT_N):,} captions, {e.max_tokens} tokens; "
                f"{torch.get_num_threads()} torch threads",
            }
            for k, e in encoders.items()
        ),
        {
            "figure": f"caption text embeddings, {encoders['stage'].precision} / fp32",
            "unit": "x faster",
            "samples": [r["embeddings_per_s_stage"] / r["embeddings_per_s_fp32"] for r in reps],
        },
    ]


def _seconds(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _timed(fn) -> dict:
    started = time.perf_counter()
    metrics = fn()
    return {"seconds": round(time.perf_counter() - started, 3), "metrics": metrics}


if __name__ == "__main__":
    sys.exit(main(__doc__))
