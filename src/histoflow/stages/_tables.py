"""Reading the tables that stages pass to each other."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

__all__ = ["VALIDATED_MANIFEST", "class_names", "read_manifest"]

# Written by `validate`, read by later stages and by the flows.
VALIDATED_MANIFEST = Path("outputs/validate/manifest.parquet")


def read_manifest(path: Path) -> pd.DataFrame:
    """A table passed between stages: the validated manifest (parquet) or a CSV output."""
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"{path} not found: run `histoflow stage validate` (or `dvc repro`) first"
        )
    if Path(path).suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(
        path,
        dtype={"path": str, "label": str, "split": str, "patient_id": str, "sha256": str},
        keep_default_na=False,
        na_values=[""],
    )


def class_names(manifest: pd.DataFrame) -> list[str]:
    """Sorted class names; their order defines the label indices everywhere."""
    return sorted(manifest["label"].unique())
