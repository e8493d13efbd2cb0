"""Monitoring: drift of new batches against the champion's reference (features, embeddings,
predictions, performance), the inbox of batches, and the actions taken on drift."""

from histoflow.monitoring.drift import drift_report
from histoflow.monitoring.report import MonitorData, monitoring_report

__all__ = ["MonitorData", "drift_report", "monitoring_report"]
