"""Data: sources and splits, per-image QC, the Great Expectations contract, torch datasets,
and the synthetic H&E generator. Import the submodule you need (they pull in heavy libraries)."""

__all__ = ["contract", "dataset", "qc", "sources", "synthetic"]
