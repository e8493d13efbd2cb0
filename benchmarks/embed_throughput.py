"""Throughput of ``embed``'s image path against a bare timm forward and a plain fp32 loop; peak RSS.

Usage::

    python benchmarks/embed_throughput.py [--quick] [--repeats 3] [--model resnet18] [--size 96]

Measured in one process, on the same pre-decoded batches (so only the model path differs):

- the embed path: :class:`histoflow.inference.ImageEmbedder` ``embed_tensor`` (bf16 autocast and
  channels_last where the CPU has AMX/AVX-512-bf16, inference mode, pooled + token grid,
  results back as float32), on an encoder folder saved as ``train_encoder`` saves it;
- a bare timm forward of the same model, batch and dtype (``model(x)`` under the same autocast,
  channels_last and inference mode);
- a plain fp32 loop (``model(x)`` under ``torch.no_grad``, default memory format);
- the image pipeline with decoding (the stage's DataLoader with ``embed.num_workers`` worker
  processes, embedding and the SQLite cache writes) on PNG files.

Then the whole ``embed`` stage runs in a child process on 5,000 tiles (300 with ``--quick``)
and its peak resident memory (``ru_maxrss``) is recorded. Captions repeat (12 distinct), as
the text-embedding cache would make them after the first run, so the child measures the
image side.

Interface shared by the benchmark suite: ``run(quick=False, repeats=3) -> list[dict]``.
Prints a markdown table and writes ``benchmarks/results/embed_throughput.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import timm
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_info

from histoflow.config import TrainEncoderConfig, load_params
from histoflow.device import autocast
from histoflow.inference import ImageEmbedder
from histoflow.io import write_json
from histoflow.models.checkpoint import save_model
from histoflow.models.encoder import create_encoder_from_params, encoder_description

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "embed_throughput.json"
_GRID = 4


def run(
    quick: bool = False,
    repeats: int = 3,
    *,
    model: str = "resnet18",
    size: int = 96,
    batch: int = 128,
) -> list[dict]:
    """The benchmark figures (see the module docstring); one sample per repeat."""
    torch.manual_seed(0)
    n_fwd = 256 if quick else 1024  # images per throughput sample
    # 5,000 tiles: 10x the built-in dataset; pipeline_scale shows the stage's memory from 1x to 16x.
    n_rss = 300 if quick else 5000
    with tempfile.TemporaryDirectory(prefix="embed_bench_") as tmp:
        tmp = Path(tmp)
        encoder_dir = tmp / "model"
        _save_encoder(encoder_dir, model, size)
        embedder = ImageEmbedder(encoder_dir, _GRID)
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

        embed_path(), bare_forward()  # warm-up (oneDNN kernel selection)
        samples: dict[str, list[float]] = {"embed": [], "bare": [], "fp32": [], "decode": []}
        data = _write_tiles(tmp / "data", n_fwd, size)
        for _ in range(repeats):  # interleaved, so load changes hit every variant alike
            samples["embed"].append(batches * batch / _seconds(embed_path))
            samples["bare"].append(batches * batch / _seconds(bare_forward))
            samples["fp32"].append(batches * batch / _seconds(fp32_loop))
            samples["decode"].append(n_fwd / _seconds(lambda: _pipeline(embedder, data, tmp)))
        rss_mib, rss_s = _stage_peak_rss(tmp / "rss", encoder_dir, n_rss, size)
    dtype = "bf16 autocast" if embedder.bf16 else "fp32"
    workers = load_params(REPO / "params.yaml").embed.num_workers
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
            "figure": f"image pipeline incl. PNG decoding ({workers} workers) and cache writes",
            "unit": "images/s",
            "samples": samples["decode"],
            "notes": "decoding workers share the CPU cores with the model",
        },
        {
            "figure": f"embed stage peak RSS on {n_rss:,} tiles ({size} px)",
            "unit": "MiB",
            "samples": [rss_mib],
            "notes": f"one child-process run, {rss_s:.0f} s; 12 distinct captions",
        },
    ]


def _save_encoder(folder: Path, model: str, size: int) -> None:
    p = TrainEncoderConfig(backbone=model)
    encoder = create_encoder_from_params(p)
    save_model(folder, encoder, {**encoder_description(p, encoder), "image_size": size})


def _seconds(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _write_tiles(folder: Path, n: int, size: int) -> Path:
    """``n`` smooth random RGB PNG tiles (decode cost like real tiles), a manifest and captions."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        low = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
        image = Image.fromarray(low).resize((size, size), Image.BILINEAR)
        path = f"t{i:06d}.png"
        image.save(folder / path)
        sha = hashlib.sha256((folder / path).read_bytes()).hexdigest()
        rows.append({"path": path, "label": f"c{i % 3}", "split": "train", "sha256": sha})
    table = pd.DataFrame(rows)
    table.to_parquet(folder.parent / f"{folder.name}_manifest.parquet", index=False)
    captions = table[["path"]].assign(caption=[f"tissue tile of kind {i % 12}" for i in range(n)])
    captions.to_csv(folder.parent / f"{folder.name}_captions.csv", index=False)
    return folder


def _pipeline(embedder: ImageEmbedder, data: Path, tmp: Path) -> None:
    """The stage's image side (DataLoader workers, embedding, cache writes) on an empty cache."""
    from histoflow.embeddings.cache import ImageEmbeddingCache, embed_missing

    table = pd.read_parquet(data.parent / f"{data.name}_manifest.parquet")
    db = tmp / f"cache_{time.monotonic_ns()}.sqlite"
    cache = ImageEmbeddingCache(db, "bench")
    p = load_params(REPO / "params.yaml").embed.model_copy(update={"batch_size": 128})
    try:
        embed_missing(
            embedder,
            cache,
            data,
            table["path"].tolist(),
            table["sha256"].tolist(),
            batch_size=p.batch_size,
            num_workers=p.num_workers,
        )
    finally:
        cache.close()
        db.unlink()


def _stage_peak_rss(folder: Path, encoder_dir: Path, n: int, size: int) -> tuple[float, float]:
    """Peak RSS (MiB) and seconds of ``embed.run`` on ``n`` tiles, in a fresh child process."""
    _write_tiles(folder / "data", n, size)
    script = f"""
import json, resource, sys
from pathlib import Path
from histoflow.config import load_params
from histoflow.stages import embed
cfg = load_params({str(REPO / "params.yaml")!r})
root = Path({str(folder)!r})
inputs = embed.Inputs(data=root / "data", manifest=root / "data_manifest.parquet",
                      captions=root / "data_captions.csv", encoder=Path({str(encoder_dir)!r}))
metrics = embed.run(cfg, inputs, embed.Outputs(features=root / "out" / "embed"))
print(json.dumps({{"metrics": metrics,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env={**os.environ}
    )
    seconds = time.perf_counter() - started
    if proc.returncode:
        raise RuntimeError(f"embed child failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["metrics"]["n_images"] == n
    return result["maxrss_kib"] / 1024, seconds


def _markdown(figures: list[dict], machine: dict) -> str:
    lines = [
        f"embed throughput ({machine['cpus']} CPUs; load average "
        f"{machine['load_average_before'][0]} before, {machine['load_average_after'][0]} after)",
        "",
        "| figure | median | samples | unit | target |",
        "|---|---:|---|---|---|",
    ]
    for f in figures:
        s = f["samples"]
        lines.append(
            f"| {f['figure']} | {np.median(s):.2f} | {', '.join(f'{v:.2f}' for v in s)} "
            f"| {f['unit']} | {f.get('target', '')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    figures = run(args.quick, args.repeats, model=args.model, size=args.size)
    machine = machine_info(load_before)
    print(_markdown(figures, machine))
    write_json(
        args.out, {"figures": figures, "machine": machine, "torch_threads": torch.get_num_threads()}
    )
    print(f"\nwrote {args.out}")
    return figures


if __name__ == "__main__":
    main()
