"""Stage ``validate``: read the data, assign splits, measure every image, enforce the contract."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from histoflow.config import Params
from histoflow.data.contract import check_contract
from histoflow.data.qc import feature_table
from histoflow.data.sources import assign_splits, read_source
from histoflow.io import atomic_path, write_json

__all__ = ["PARAMS", "ContractViolation", "Inputs", "Outputs", "run"]

PARAMS = ("data", "validate")


@dataclass(frozen=True)
class Inputs:
    data: Path = Path("data")


@dataclass(frozen=True)
class Outputs:
    manifest: Path = Path("outputs/validate/manifest.csv")
    metrics: Path = Path("metrics/validate.json")


class ContractViolation(RuntimeError):
    """The data broke the contract; the message lists each rule and its offending files."""


def run(cfg: Params, inputs: Inputs, outputs: Outputs) -> dict:
    """Write the validated manifest (one row per image, with QC columns) and its metrics.

    Raises:
        ContractViolation: when any expectation fails; nothing is written then, so the last
            good manifest stays in place.
    """
    table = read_source(inputs.data, cfg.data.manifest)
    table = assign_splits(
        table,
        val_fraction=cfg.data.val_fraction,
        test_fraction=cfg.data.test_fraction,
        seed=cfg.data.split_seed,
    )
    qc = feature_table([inputs.data / p for p in table["path"]]).drop(columns="path")
    table = pd.concat([table.reset_index(drop=True), qc.reset_index(drop=True)], axis=1)
    classes = list(cfg.data.classes) if cfg.data.classes else sorted(table["label"].unique())
    result = check_contract(
        table,
        classes=classes,
        allowed_modes=cfg.validate.allowed_modes,
        min_size=cfg.validate.min_size,
        max_size=cfg.validate.max_size,
        min_per_class=cfg.validate.min_per_class,
    )
    if not result.success:
        raise ContractViolation(f"data in {inputs.data} broke the contract:\n{result.summary()}")
    with atomic_path(outputs.manifest) as tmp:
        table.to_csv(tmp, index=False)
    metrics = {
        "n_images": len(table),
        "n_patients": int(table["patient_id"].nunique()),
        "n_classes": len(classes),
        "split_sizes": table["split"].value_counts().sort_index().to_dict(),
        "class_counts": table["label"].value_counts().sort_index().to_dict(),
        "expectations": result.statistics,
    }
    write_json(outputs.metrics, metrics)
    return metrics
