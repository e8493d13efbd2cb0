"""Stage ``embed``: cache image tokens from the trained encoder and caption tokens from the text encoder.

Writes the feature store (:mod:`histoflow.embeddings.store`) that ``train_fusion``,
``evaluate`` and ``reference`` read.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from histoflow.config import Params
from histoflow.data.manifest import read_manifest
from histoflow.io import atomic_dir

__all__ = ["PARAMS", "Inputs", "Outputs", "run"]

# captions: the captioner is recorded with the features so inference captions the same way.
PARAMS = ("captions", "embed")
_WRITE_ROWS = 1024  # rows per streamed write: bounds memory (1024 x 16 x 2048 fp16 = 64 MiB)


@dataclass(frozen=True)
class Inputs:
    """The images, the validated manifest, the captions and the trained encoder."""

    data: Path = Path("data")
    manifest: Path = Path("outputs/validate/manifest.parquet")
    captions: Path = Path("outputs/captions/captions.csv")
    encoder: Path = Path("outputs/train_encoder/model")


@dataclass(frozen=True)
class Outputs:
    """The feature store folder."""

    features: Path = Path("outputs/embed")


def run(cfg: Params, inputs: Inputs, outputs: Outputs) -> dict:
    """Write ``features.safetensors`` (float16 tensors) and ``index.csv`` (one row per image).

    Image embeddings are computed only for images the cache lacks for this encoder (key: the
    checkpoint's sha256, token grid and precision); the output file is streamed batch by
    batch, so memory stays bounded whatever the number of images.
    """
    # torch and the encoders load here, not at import: flows read Outputs without them.
    import numpy as np

    from histoflow.captions.text import TextEncoder
    from histoflow.captions.text_cache import encode_cached
    from histoflow.embeddings.cache import ImageEmbeddingCache
    from histoflow.embeddings.store import FEATURES_FILE, INDEX_FILE, SafetensorsStream
    from histoflow.inference import ImageEmbedder
    from histoflow.models.checkpoint import model_fingerprint

    p = cfg.embed
    manifest = read_manifest(inputs.manifest)
    captions = read_manifest(inputs.captions, ("path", "caption")).set_index("path")["caption"]
    missing = set(manifest["path"]) - set(captions.index)
    if missing:
        raise ValueError(
            f"{inputs.captions} lacks captions for {len(missing)} images, e.g. "
            f"{sorted(missing)[:3]}; re-run `histoflow stage captions`"
        )
    texts = [captions[path] for path in manifest["path"]]
    paths = manifest["path"].tolist()
    hashes = _image_hashes(inputs.data, manifest)

    embedder = ImageEmbedder(
        inputs.encoder, p.token_grid, accelerator=p.accelerator, precision=p.precision
    )
    encoder_sha = model_fingerprint(inputs.encoder)
    key = f"{encoder_sha}|grid={p.token_grid}|bf16={embedder.bf16}"
    cache = ImageEmbeddingCache(outputs.features.parent / ".image_embedding_cache.sqlite", key)
    try:
        n_new_images = _embed_images(p, embedder, cache, inputs.data, paths, hashes)
        # Captions run where the images do, at the same precision (bf16 on AMX: about 2x).
        text_encoder = TextEncoder(
            p.text_model,
            p.max_text_tokens,
            device=embedder.device,
            precision="bf16" if embedder.bf16 else "32",
        )
        n = len(paths)
        distinct = sorted(set(texts))
        n_truncated = text_encoder.n_truncated(distinct)
        if n_truncated:
            print(
                f"histoflow: warning: {n_truncated} of {len(distinct)} distinct captions are "
                f"longer than embed.max_text_tokens={p.max_text_tokens} tokens; the fusion model "
                "sees only their beginning (raise embed.max_text_tokens to keep them whole)",
                file=sys.stderr,
            )
        (d,), (t, dt) = cache.row_shapes() if n else ((0,), (p.token_grid**2, 0))
        lt, de = text_encoder.max_tokens, text_encoder.dim
        layout = {
            "image_pooled": (np.float16, (n, d)),
            "image_tokens": (np.float16, (n, t, dt)),
            "text_pooled": (np.float16, (n, de)),
            "text_tokens": (np.float16, (n, lt, de)),
            "text_mask": (np.bool_, (n, lt)),
        }
        metadata = {
            "text_model": p.text_model,
            "max_text_tokens": p.max_text_tokens,
            "token_grid": p.token_grid,
            "captioner": json.dumps(cfg.captions.model_dump(mode="json")),
            "encoder_sha256": encoder_sha,
            "image_precision": "bf16" if embedder.bf16 else "32",
            "text_precision": "bf16" if text_encoder.bf16 else "32",
        }
        n_new_texts = 0
        with atomic_dir(outputs.features) as tmp:
            with SafetensorsStream(tmp / FEATURES_FILE, layout, metadata) as out:
                for s in range(0, n, _WRITE_ROWS):
                    pooled, tokens = cache.get(hashes[s : s + _WRITE_ROWS])
                    out.write("image_pooled", s, pooled)
                    out.write("image_tokens", s, tokens)
                    # Captions repeat (duplicates, reruns): cached beside DVC's outputs too.
                    text, n_new = encode_cached(
                        text_encoder,
                        texts[s : s + _WRITE_ROWS],
                        outputs.features.parent / ".text_embedding_cache.sqlite",
                        fingerprint=text_encoder.fingerprint,
                        batch_size=p.batch_size,
                    )
                    n_new_texts += n_new
                    out.write("text_pooled", s, text.pooled.half().numpy())
                    out.write("text_tokens", s, text.tokens.half().numpy())
                    out.write("text_mask", s, text.mask.numpy())
            manifest.assign(caption=texts).to_csv(tmp / INDEX_FILE, index=False)
    finally:
        cache.close()
    return {
        "n_images": n,
        "image_dim": int(d),
        "image_tokens": int(t),
        "text_dim": int(de),
        "n_new_image_embeddings": n_new_images,
        "n_new_text_embeddings": n_new_texts,
        "n_truncated_captions": n_truncated,  # distinct captions cut at max_text_tokens
        # New images the encoder's stain normaliser left as they were (background, fat).
        "n_stain_passthrough": embedder.stain.n_passed_through if embedder.stain else 0,
        "encoder_sha256": encoder_sha,
        "precision": "bf16" if embedder.bf16 else "32",
        "device": embedder.device.type,
    }


def _embed_images(p, embedder, cache, root: Path, paths: list[str], hashes: list[str]) -> int:
    """Embed the images the cache lacks: in this process, or distributed (``embed.devices``)."""
    from histoflow.embeddings.cache import embed_missing

    kwargs = {"batch_size": p.batch_size, "num_workers": p.num_workers}
    if not p.distributed:
        return embed_missing(embedder, cache, root, paths, hashes, **kwargs)
    from histoflow.embeddings.distributed import embed_missing_distributed

    return embed_missing_distributed(
        embedder,
        cache,
        root,
        paths,
        hashes,
        devices=p.devices,
        num_nodes=p.num_nodes,
        strategy=p.strategy,
        **kwargs,
    )


def _image_hashes(root: Path, manifest: pd.DataFrame) -> list[str]:
    """Each row's image sha256: the validated manifest's column, else hashed here."""
    if "sha256" in manifest.columns and manifest["sha256"].notna().all():
        return manifest["sha256"].astype(str).tolist()
    return [hashlib.sha256((Path(root) / p).read_bytes()).hexdigest() for p in manifest["path"]]
