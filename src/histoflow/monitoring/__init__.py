"""Monitoring: drift of new batches against the champion's reference, and what follows.

Drift of features, embeddings and predictions, performance on labelled batches, the reference
itself, the inbox of batches and the actions taken on drift. Import the submodule you need
(Evidently takes seconds to import).
"""

__all__ = ["actions", "data", "inbox", "performance", "reference", "report", "signals"]
