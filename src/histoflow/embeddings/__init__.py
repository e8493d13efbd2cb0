"""Cached embeddings: the feature store ``embed`` writes (:mod:`.store`) and the per-image
embedding cache that makes re-runs cheap (:mod:`.cache`). Import the submodule you need."""

__all__ = ["cache", "store"]
