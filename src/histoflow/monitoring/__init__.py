"""Monitoring: drift between reference and current per-image features."""

from histoflow.monitoring.drift import drift_report

__all__ = ["drift_report"]
