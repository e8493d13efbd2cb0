"""Saving and loading trained networks as safetensors plus a JSON description.

A model folder holds ``weights.safetensors`` and ``model.json``; nothing is pickled, so
loading a model folder never runs code from it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from histoflow.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from histoflow.io import atomic_dir
from histoflow.models.encoder import build_encoder
from histoflow.models.fusion import FusionConfig, FusionNet

__all__ = ["load_encoder", "load_fusion", "model_fingerprint", "read_model_json", "save_model"]


def save_model(folder: Path, module: nn.Module, description: dict) -> None:
    """Write ``module``'s weights and ``description`` to ``folder``, atomically."""
    with atomic_dir(folder) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        save_file(state, tmp / "weights.safetensors")
        (tmp / "model.json").write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")


def read_model_json(folder: Path) -> dict:
    """A model folder's description (``model.json``).

    Raises:
        FileNotFoundError: ``folder`` is not a model folder.
    """
    path = Path(folder) / "model.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {folder} is not a histoflow model folder")
    return json.loads(path.read_text())


def load_encoder(folder: Path) -> tuple[nn.Module, dict]:
    """The trained backbone (eval mode) and its description (backbone, image_size, classes...).

    The architecture comes from the description's ``spec`` (any backbone kind, built offline);
    folders written before ``spec`` existed name a plain timm model in ``backbone``.
    """
    meta = read_model_json(folder)
    spec = meta.get("spec") or {"kind": "timm", "name": meta["backbone"], "kwargs": {}}
    spec.setdefault("mean", meta.get("mean", IMAGENET_MEAN))
    spec.setdefault("std", meta.get("std", IMAGENET_STD))
    encoder = build_encoder(spec)
    encoder.load_state_dict(load_file(Path(folder) / "weights.safetensors"))
    return encoder.eval(), meta


def load_fusion(folder: Path) -> tuple[FusionNet, dict]:
    """The trained fusion network (eval mode) and its description (config, classes...)."""
    meta = read_model_json(folder)
    net = FusionNet(FusionConfig(**meta["config"]))
    net.load_state_dict(load_file(Path(folder) / "weights.safetensors"))
    return net.eval(), meta


def model_fingerprint(folder: Path) -> str:
    """sha256 over a model folder's ``model.json`` and ``weights.safetensors``: same model, same hash."""
    digest = hashlib.sha256()
    for name in ("model.json", "weights.safetensors"):
        path = Path(folder) / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: {folder} is not a histoflow model folder")
        file_digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                file_digest.update(chunk)
        digest.update(f"{name}\t{file_digest.hexdigest()}\n".encode())
    return digest.hexdigest()
