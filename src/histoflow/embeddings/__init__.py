"""Cached embeddings: the feature store and the per-image embedding cache.

``embed`` writes the feature store (:mod:`.store`); the per-image cache (:mod:`.cache`) makes
re-runs cheap. Import the submodule you need.
"""

__all__ = ["cache", "store"]
