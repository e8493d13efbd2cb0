"""Evaluation: classification metrics and plots."""

__all__ = ["metrics", "plots"]
