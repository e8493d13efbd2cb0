"""Throughput of ``embed``'s image path against a bare timm forward and a plain fp32 loop; peak RSS.

Measured in one process, on the same pre-decoded batches (so only the model path differs):

- the embed path: :class:`histoflow.inference.ImageEmbedder` ``embed_tensor`` (bf16 autocast and
  channels_last where the CPU has AMX/AVX-512-bf16, inference mode, pooled + token grid,
  results back as float32), on an encoder folder saved as ``train_encoder`` saves it;
- a bare timm forward of the same model, batch and dtype (``model(x)`` under the same autocast,
  channels_last and inference mode);
- a plain fp32 loop (``model(x)`` under ``torch.no_grad``, default memory format);
- the image pipeline with decoding (the stage's DataLoader with ``embed.num_workers`` worker
  processes, embedding and the SQLite cache writes) on synthetic PNG tiles.

Then ``histoflow stage embed`` runs in a child process on 5,000 tiles (100 in quick mode) and
the peak resident memory of that process is recorded. Captions repeat (12 distinct), as the text-embedding cache
would make them after the first run, so the command measures the image side.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd
import timm
import torch
from _harness import REPO, main, measure, tiles  # benchmarks/ is on sys.path

from histoflow.config import TrainEncoderConfig, load_params
from histoflow.device import autocast
from histoflow.embeddings.cache import ImageEmbeddingCache, embed_missing
from histoflow.inference import ImageEmbedder
from histoflow.models.checkpoint import save_model
from histoflow.models.encoder import create_encoder_from_params, encoder_description
from histoflow.stages import default_io
from histoflow.stages.embed import Inputs

MODEL, SIZE, BATCH = "resnet18", 96, 128
# Quick mode is a smoke run of the same code (the test suite runs it): timm's tiny test model.
QUICK_MODEL, QUICK_SIZE, QUICK_BATCH = "test_resnet", 32, 32
_GRID = 4
# `histoflow stage embed`, reporting the stage process's own peak RSS (its kernel high-water
# mark): measure's largest process would be a DataLoader worker, which forks from the stage
# and counts the stage's resident pages as its own.
_STAGE = """import resource, sys
from histoflow.cli import main
status = main(sys.argv[1:])
print("peak_rss_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(status)
"""


def run(quick: bool = False, repeats: int = 3) -> list[dict]:
    """The figures (see the module docstring); one sample per repeat."""
    torch.manual_seed(0)
    model, size, batch = (QUICK_MODEL, QUICK_SIZE, QUICK_BATCH) if quick else (MODEL, SIZE, BATCH)
    n_fwd = 64 if quick else 1024  # images per throughput sample
    # 5,000 tiles: 10x the built-in dataset; pipeline_scale shows the stage's memory from 1x to 16x.
    n_rss = 100 if quick else 5000
    cfg = load_params(REPO / "params.yaml")
    with tempfile.TemporaryDirectory(prefix="embed_bench_") as tmp:
        # A folder laid out as `embed` finds it after `captions` and `train_encoder`.
        project = Path(tmp)
        inputs, _ = default_io("embed", cfg)
        table = tiles(project / inputs.data, n_rss, size=size)
        _save_encoder(project / inputs.encoder, model, size)
        _write_inputs(project, inputs, table)
        embedder = ImageEmbedder(project / inputs.encoder, _GRID)
        bare = timm.create_model(model, num_classes=0).eval()
        bare.load_state_dict(embedder.encoder.state_dict())
        fp32 = timm.create_model(model, num_classes=0).eval()
        fp32.load_state_dict(embedder.encoder.state_dict())
        bare = bare.to(embedder.device, memory_format=torch.channels_last)
        x = torch.randn(batch, 3, size, size)
        batches = max(1, n_fwd // batch)

        def embed_path() -> None:
            for _ in range(batches):
                embedder.embed_tensor(x)

        @torch.inference_mode()
        def bare_forward() -> None:
            for _ in range(batches):
                xb = x.to(embedder.device).contiguous(memory_format=torch.channels_last)
                with autocast(embedder.device, embedder.bf16):
                    bare(xb).float().cpu()

        @torch.no_grad()
        def fp32_loop() -> None:
            for _ in range(batches):
                fp32(x)

        def pipeline() -> None:
            _pipeline(
                embedder, project / inputs.data, table.iloc[:n_fwd], cfg.embed.num_workers, batch
            )

        embed_path(), bare_forward()  # warm-up (oneDNN kernel selection)
        samples: dict[str, list[float]] = {"embed": [], "bare": [], "fp32": [], "decode": []}
        for _ in range(repeats):  # interleaved, so load changes hit every variant alike
            samples["embed"].append(batches * batch / _seconds(embed_path))
            samples["bare"].append(batches * batch / _seconds(bare_forward))
            samples["fp32"].append(batches * batch / _seconds(fp32_loop))
            samples["decode"].append(n_fwd / _seconds(pipeline))
        cmd = [sys.executable, "-c", _STAGE, "--params", str(REPO / "params.yaml")]
        stage = measure([*cmd, "stage", "embed"], project)
    lines = stage.output.splitlines()
    metrics = json.loads([ln for ln in lines if ln.startswith("{")][-1])
    assert metrics["n_images"] == n_rss, metrics
    peak_rss_mib = int([ln for ln in lines if ln.startswith("peak_rss_kib")][-1].split()[1]) / 1024
    dtype = "bf16 autocast" if embedder.bf16 else "fp32"
    ratio = lambda a, b: [x / y for x, y in zip(samples[a], samples[b], strict=True)]  # noqa: E731
    setting = f"{model}, {size} px, batch {batch}, {dtype}, {embedder.device.type}"
    return [
        {"figure": f"embed path ({setting})", "unit": "images/s", "samples": samples["embed"]},
        {
            "figure": f"bare timm forward ({setting})",
            "unit": "images/s",
            "samples": samples["bare"],
        },
        {
            "figure": f"plain fp32 loop ({model}, {size} px)",
            "unit": "images/s",
            "samples": samples["fp32"],
        },
        {
            "figure": "embed path / bare timm forward",
            "unit": "ratio",
            "samples": ratio("embed", "bare"),
            "target": ">= 0.9",
        },
        {
            "figure": "embed path / plain fp32 loop",
            "unit": "ratio",
            "samples": ratio("embed", "fp32"),
            "target": ">= 3",
        },
        {
            "figure": f"image pipeline incl. PNG decoding ({cfg.embed.num_workers} workers) and "
            "cache writes",
            "unit": "images/s",
            "samples": samples["decode"],
            "notes": "decoding workers share the CPU cores with the model",
        },
        {
            "figure": f"embed stage peak RSS on {n_rss:,} tiles ({size} px)",
            "unit": "MiB",
            "samples": [peak_rss_mib],
            "notes": f"one child-process run, {stage.seconds:.0f} s; 12 distinct captions",
        },
    ]


def _save_encoder(folder: Path, model: str, size: int) -> None:
    """An untrained encoder, saved as ``train_encoder`` saves one."""
    p = TrainEncoderConfig(backbone=model, pretrained=False)
    encoder = create_encoder_from_params(p)
    save_model(folder, encoder, {**encoder_description(p, encoder), "image_size": size})


def _write_inputs(project: Path, inputs: Inputs, table: pd.DataFrame) -> None:
    """The validated manifest and the captions table, where ``embed`` reads them."""
    (project / inputs.manifest).parent.mkdir(parents=True, exist_ok=True)
    table[["path", "label", "split", "sha256"]].to_parquet(project / inputs.manifest, index=False)
    (project / inputs.captions).parent.mkdir(parents=True, exist_ok=True)
    captions = [f"tissue tile of kind {i % 12}" for i in range(len(table))]
    table[["path"]].assign(caption=captions).to_csv(project / inputs.captions, index=False)


def _pipeline(
    embedder: ImageEmbedder, data: Path, table: pd.DataFrame, workers: int, batch: int
) -> None:
    """The stage's image side (DataLoader workers, embedding, cache writes) on an empty cache."""
    db = data.parent / f"cache_{uuid.uuid4().hex}.sqlite"
    cache = ImageEmbeddingCache(db, "bench")
    try:
        embed_missing(
            embedder,
            cache,
            data,
            table["path"].tolist(),
            table["sha256"].tolist(),
            batch_size=batch,
            num_workers=workers,
        )
    finally:
        cache.close()
        db.unlink()


def _seconds(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main(__doc__))
