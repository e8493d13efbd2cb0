"""Throughput of the morphology captioner, the cached ``captions`` stage and the text encoder.

Usage::

    python benchmarks/captions_throughput.py [--n 1000] [--size 64]

Draws N synthetic H&E tiles with :func:`histoflow.data.synthetic.generate` (6 classes) in a
temporary folder and measures, all in this one process:

- morphology captions per second on decoded images: one process, single-threaded (the
  captioner's numpy/scipy work does not use more than one core);
- the ``captions`` stage (repository params, morphology backend) on an empty cache, then the
  fully cached re-run with nothing changed, and the ratio of the two;
- text embeddings per second of the bundled encoder on the captions, as ``embed`` runs it
  (bf16 autocast where the CPU has native bf16) and in plain fp32, and the ratio (suite only;
  torch uses its intra-op threads, printed with the results).

Prints a markdown table and writes ``benchmarks/results/captions_throughput.json``; ``run``
gives the same measurements to the suite (``benchmarks/suite.py``, ``make bench``).

Targets (issue "captions cache"): at least 200 captions/s at 64 px, and a cached re-run at
least 20 times faster than the first run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from _machine import machine_info  # benchmarks/ is on sys.path when run as a script

from histoflow.captions.morphology import MorphologyCaptioner
from histoflow.captions.text import TextEncoder
from histoflow.config import load_params
from histoflow.data.images import load_rgb
from histoflow.data.synthetic import generate
from histoflow.io import write_json
from histoflow.stages import captions as stage

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "captions_throughput.json"
TARGET_CAPTIONS_PER_S = 200
TARGET_CACHED_SPEEDUP = 20
_CLASSES = 6
_TEXT_N = 500  # captions per text-embedding sample


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="number of tiles")
    parser.add_argument("--size", type=int, default=64, help="tile side in pixels")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="captions_bench_") as tmp:
        data, manifest = _make_data(Path(tmp), n=args.n, size=args.size)
        paths = list(pd.read_parquet(manifest)["path"])

        started = time.perf_counter()
        images = [load_rgb(data / p) for p in paths]
        load_s = time.perf_counter() - started
        captioner = MorphologyCaptioner()
        started = time.perf_counter()
        captions = [captioner(image) for image in images]
        caption_s = time.perf_counter() - started

        cfg = load_params(REPO / "params.yaml")
        cfg = cfg.model_copy(
            update={"captions": cfg.captions.model_copy(update={"backend": "morphology"})}
        )
        inputs = stage.Inputs(data=data, manifest=manifest)
        outputs = stage.Outputs(
            captions=Path(tmp) / "out" / "captions.csv", gallery=Path(tmp) / "gallery"
        )
        first = _timed(lambda: stage.run(cfg, inputs, outputs))
        cached = _timed(lambda: stage.run(cfg, inputs, outputs))
        assert first["metrics"]["n_new"] == args.n and cached["metrics"]["n_new"] == 0
        assert list(pd.read_csv(outputs.captions)["caption"]) == captions

    started = time.perf_counter()
    encoder = TextEncoder()
    encoder_load_s = time.perf_counter() - started
    started = time.perf_counter()
    embeddings = encoder.encode(captions)
    encode_s = time.perf_counter() - started
    assert embeddings.pooled.shape[0] == args.n

    speedup = first["seconds"] / cached["seconds"]
    results = {
        "n": args.n,
        "size": args.size,
        "morphology": {
            "load_s": round(load_s, 3),
            "caption_s": round(caption_s, 3),
            "captions_per_s": round(args.n / caption_s, 1),
            "cores": 1,
        },
        "stage": {
            "first_run_s": first["seconds"],
            "cached_rerun_s": cached["seconds"],
            "speedup": round(speedup, 1),
            "first_run_metrics": first["metrics"],
            "cached_rerun_metrics": cached["metrics"],
        },
        "text_encoder": {
            "model": encoder.name,
            "load_s": round(encoder_load_s, 2),
            "encode_s": round(encode_s, 3),
            "embeddings_per_s": round(args.n / encode_s, 1),
            "max_tokens": encoder.max_tokens,
            "torch_threads": torch.get_num_threads(),
        },
        "targets": {
            "captions_per_s": TARGET_CAPTIONS_PER_S,
            "cached_speedup": TARGET_CACHED_SPEEDUP,
            "throughput_met": args.n / caption_s >= TARGET_CAPTIONS_PER_S,
            "speedup_met": speedup >= TARGET_CACHED_SPEEDUP,
        },
        "machine": machine_info(load_before),
    }
    print(_markdown(results))
    write_json(args.out, results)
    print(f"\nwrote {args.out}")
    return results


def run(quick: bool = False, repeats: int = 3) -> list[dict]:
    """The suite's figures (``benchmarks/suite.py``), each measured ``repeats`` times.

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
        data, manifest = _make_data(Path(tmp), n=n, size=64)
        images = [load_rgb(data / p) for p in pd.read_parquet(manifest)["path"]]
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


def _make_data(folder: Path, *, n: int, size: int) -> tuple[Path, Path]:
    """``n`` synthetic tiles and a validated-manifest stand-in (path, label, split, sha256)."""
    data = folder / "data"
    generate(data, classes=_CLASSES, per_class=-(-n // _CLASSES), size=size, seed=0)
    table = pd.read_csv(data / "manifest.csv", dtype=str).iloc[:n].copy()
    table["split"] = "train"
    table["sha256"] = [hashlib.sha256((data / p).read_bytes()).hexdigest() for p in table["path"]]
    manifest = folder / "manifest.parquet"
    table.to_parquet(manifest, index=False)
    return data, manifest


def _seconds(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _timed(fn) -> dict:
    started = time.perf_counter()
    metrics = fn()
    return {"seconds": round(time.perf_counter() - started, 3), "metrics": metrics}


def _markdown(results: dict) -> str:
    machine, m = results["machine"], results["morphology"]
    s, t = results["stage"], results["text_encoder"]
    return "\n".join(
        [
            f"captions on {results['n']} synthetic {results['size']} px H&E tiles"
            f" ({machine['cpus']} CPUs; load average {machine['load_average_before'][0]} before,"
            f" {machine['load_average_after'][0]} after)",
            "",
            "| measurement | seconds | rate | target |",
            "|---|---:|---:|---:|",
            f"| morphology captions, in-process, 1 core | {m['caption_s']:.2f}"
            f" | {m['captions_per_s']:.0f} captions/s | >= {TARGET_CAPTIONS_PER_S}/s |",
            f"| stage, first run (empty cache) | {s['first_run_s']:.2f}"
            f" | {results['n'] / s['first_run_s']:.0f} images/s | |",
            f"| stage, cached re-run | {s['cached_rerun_s']:.3f}"
            f" | {s['speedup']:.0f}x faster | >= {TARGET_CACHED_SPEEDUP}x |",
            f"| text embeddings ({t['model']}, {t['torch_threads']} torch threads)"
            f" | {t['encode_s']:.2f} | {t['embeddings_per_s']:.0f} captions/s | |",
        ]
    )


if __name__ == "__main__":
    main()
