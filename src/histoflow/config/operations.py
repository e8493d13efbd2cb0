"""Sections for running histoflow unattended: ``monitor`` (drift) and ``deploy`` (schedules)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from histoflow.config._base import Section

__all__ = ["DeployConfig", "MonitorConfig"]


class DeployConfig(Section):
    """Prefect deployments: schedules and parameters (``histoflow serve``, ``prefect.yaml``)."""

    training_cron: str = Field("0 2 * * *", min_length=9)  # nightly retraining
    timezone: str = "UTC"
    inbox_interval_minutes: float = Field(15, gt=0)  # batch monitoring of monitor.inbox
    training_concurrency: int = Field(1, ge=1)  # training runs at once (a global limit)
    stage_retries: int = Field(2, ge=0)  # retries of a DVC stage on a transient failure
    stage_retry_backoff_s: float = Field(10.0, ge=0)  # first delay; doubles each retry

    @field_validator("training_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from cronsim import CronSim, CronSimError

        try:
            CronSim(value, datetime(2000, 1, 1))
        except CronSimError as exc:
            raise ValueError(
                f"not a cron expression ({exc}); e.g. '0 2 * * *' is 02:00 every day"
            ) from None
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                "not an IANA time zone name; e.g. UTC, Europe/Berlin, America/New_York"
            ) from None
        return value


class MonitorConfig(Section):
    """Drift monitoring of new batches (``histoflow monitor``, the inbox deployment)."""

    min_batch_size: int = Field(10, ge=1)  # fewer classified images: "too few images", not judged
    drift_share: float = Field(0.3, gt=0, le=1)  # features: share of drifted columns = drift
    embedding_drift_share: float = Field(0.3, gt=0, le=1)  # same, over the embedding PCs
    stattest_threshold: float = Field(0.05, gt=0, lt=1)
    method: Literal["ks", "wasserstein", "psi"] = "ks"  # per-column test for numeric columns
    signals: tuple[Literal["features", "embeddings", "predictions"], ...] = (
        "features",
        "embeddings",
        "predictions",
    )  # which signals can set drift_detected
    action: Literal["none", "notify", "retrain"] = "none"  # on drift
    notify_block: str | None = None  # name of a Prefect notification block, for action notify
    retrain_deployment: str = "histoflow-training/nightly"  # flow/deployment, for action retrain
    inbox: Path = Path("monitoring/inbox")
    reports: Path = Path("monitoring/reports")
