"""Stage ``captions``: describe every tile in words, keyed by the image's sha256."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from histoflow.captions.morphology import MorphologyCaptioner
from histoflow.config import Params
from histoflow.data.dataset import load_rgb
from histoflow.io import atomic_path
from histoflow.stages._tables import VALIDATED_MANIFEST, read_manifest

__all__ = ["PARAMS", "Inputs", "Outputs", "run"]

PARAMS = ("captions",)


@dataclass(frozen=True)
class Inputs:
    data: Path = Path("data")
    manifest: Path = VALIDATED_MANIFEST


@dataclass(frozen=True)
class Outputs:
    captions: Path = Path("outputs/captions/captions.csv")


def run(cfg: Params, inputs: Inputs, outputs: Outputs) -> dict:
    """Caption each distinct image once; write ``sha256,path,backend,caption``."""
    manifest = read_manifest(inputs.manifest)
    captioner = MorphologyCaptioner()
    by_hash: dict[str, str] = {}
    rows = []
    for path, sha in tqdm(
        zip(manifest["path"], manifest["sha256"], strict=True),
        total=len(manifest),
        desc="captions",
        unit="img",
    ):
        if sha not in by_hash:  # duplicates by content share one caption
            by_hash[sha] = captioner(load_rgb(inputs.data / path))
        rows.append(
            {"sha256": sha, "path": path, "backend": captioner.name, "caption": by_hash[sha]}
        )
    with atomic_path(outputs.captions) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    return {"n_captions": len(rows), "n_unique_images": len(by_hash)}
