"""Captions: the morphology and vision-language captioners, the caption cache, the text encoder."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["create_captioner"]


def create_captioner(cfg: Mapping[str, Any] | Any) -> Callable:
    """The captioner that ``params.yaml``'s ``captions`` section (or its recorded dict) names.

    The vision-language backend is imported only when used: it loads transformers models.
    """
    get = cfg.get if isinstance(cfg, Mapping) else lambda k: getattr(cfg, k)
    if get("backend") == "morphology":
        from histoflow.captions.morphology import MorphologyCaptioner

        return MorphologyCaptioner()
    if get("backend") == "vlm":
        from histoflow.captions.vlm import VLMCaptioner

        return VLMCaptioner(
            get("model"),
            revision=get("revision"),
            prompt=get("prompt"),
            max_new_tokens=get("max_new_tokens"),
            seed=get("seed"),
        )
    raise ValueError(f"captions.backend: unknown backend {get('backend')!r}; use morphology or vlm")
