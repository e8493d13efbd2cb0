"""Captions: the morphology captioner and the caption text encoder."""

__all__ = ["morphology", "text"]
