"""Stage ``embed``: cache image tokens from the trained encoder and caption tokens from the text encoder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader
from tqdm import tqdm

from histoflow.captions.text import TextEncoder
from histoflow.captions.text_cache import encode_cached
from histoflow.config import Params
from histoflow.data.dataset import TileDataset
from histoflow.inference import ImageEmbedder
from histoflow.io import atomic_dir
from histoflow.stages._tables import VALIDATED_MANIFEST, read_manifest

__all__ = ["PARAMS", "Inputs", "Outputs", "load_features", "run"]

# captions: the captioner is recorded with the features so inference captions the same way.
PARAMS = ("captions", "embed")


@dataclass(frozen=True)
class Inputs:
    data: Path = Path("data")
    manifest: Path = VALIDATED_MANIFEST
    captions: Path = Path("outputs/captions/captions.csv")
    encoder: Path = Path("outputs/train_encoder/model")


@dataclass(frozen=True)
class Outputs:
    features: Path = Path("outputs/embed")


def run(cfg: Params, inputs: Inputs, outputs: Outputs) -> dict:
    """Write ``features.safetensors`` (float16 tensors) and ``index.csv`` (one row per image)."""
    p = cfg.embed
    manifest = read_manifest(inputs.manifest)
    captions = read_manifest(inputs.captions).set_index("path")["caption"]
    missing = set(manifest["path"]) - set(captions.index)
    if missing:
        raise ValueError(
            f"{inputs.captions} lacks captions for {len(missing)} images, e.g. "
            f"{sorted(missing)[:3]}; re-run `histoflow stage captions`"
        )
    texts = [captions[path] for path in manifest["path"]]

    embedder = ImageEmbedder(inputs.encoder, p.token_grid)
    loader = DataLoader(
        TileDataset(inputs.data, manifest["path"].tolist(), None, embedder.transform),
        batch_size=p.batch_size,
        num_workers=0,
    )
    pooled, tokens = [], []
    for images, _ in tqdm(loader, desc="embed images", unit="batch"):
        b_pooled, b_tokens = embedder.embed_tensor(images)
        pooled.append(b_pooled)
        tokens.append(b_tokens)
    # Captions repeat (duplicates, reruns): their embeddings are cached beside DVC's outputs.
    encoder = TextEncoder(p.text_model, p.max_text_tokens)
    text, n_new_texts = encode_cached(
        encoder,
        texts,
        outputs.features.parent / ".text_embedding_cache.sqlite",
        fingerprint=encoder.fingerprint,
        batch_size=p.batch_size,
    )

    # float16 halves the cache; fusion trains in float32 after loading.
    tensors = {
        "image_pooled": torch.cat(pooled).half(),  # (N, Di)
        "image_tokens": torch.cat(tokens).half(),  # (N, T, Di)
        "text_pooled": text.pooled.half(),  # (N, Dt)
        "text_tokens": text.tokens.half(),  # (N, L, Dt)
        "text_mask": text.mask,  # (N, L)
    }
    with atomic_dir(outputs.features) as tmp:
        save_file(
            tensors,
            tmp / "features.safetensors",
            metadata={
                "text_model": p.text_model,
                "max_text_tokens": str(p.max_text_tokens),
                "token_grid": str(p.token_grid),
                "captioner": json.dumps(cfg.captions.model_dump(mode="json")),
            },
        )
        manifest.assign(caption=texts).to_csv(tmp / "index.csv", index=False)
    return {
        "n_images": len(manifest),
        "image_dim": int(tensors["image_pooled"].shape[1]),
        "image_tokens": int(tensors["image_tokens"].shape[1]),
        "text_dim": text.pooled.shape[1],
        "n_new_text_embeddings": n_new_texts,
    }


def load_features(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, str], pd.DataFrame]:
    """The cached tensors, their metadata, and the index table of an ``embed`` output folder."""
    path = Path(folder) / "features.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `histoflow stage embed` first")
    with safe_open(path, framework="pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        meta = fh.metadata()
    return tensors, meta, read_manifest(Path(folder) / "index.csv")
