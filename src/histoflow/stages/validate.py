"""Stage ``validate``: read the data, assign splits, measure every image, enforce the contract.

Writes the validated manifest (parquet, one row per image with its QC columns), a validation
report a person can open (``reports/validate/report.html``) and metrics. Contract errors fail
the stage after the report is written; warnings are reported and the run goes on. The contract
runs before anything trains, so a split without images (or a class missing from one) stops the
pipeline here, not after hours of training; the metrics record which splits the data gave and
which were carved from its training images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from histoflow.config import Params, ValidateChecks
from histoflow.io import atomic_path, write_parquet
from histoflow.stages import write_metrics

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PARAMS", "QC_FAILURE_CHECKS", "ContractViolation", "Inputs", "Outputs", "run"]

PARAMS = ("data", "validate")
# Per-image checks whose images validate.qc_failures may exclude rather than only report.
QC_FAILURE_CHECKS = ("blurred", "blank")


@dataclass(frozen=True)
class Inputs:
    """The dataset folder (``data.root``)."""

    data: Path = Path("data")


@dataclass(frozen=True)
class Outputs:
    """The validated manifest, the validation report and the stage's metrics."""

    manifest: Path = Path("outputs/validate/manifest.parquet")
    report: Path = Path("reports/validate")
    metrics: Path = Path("metrics/validate.json")


_CHECK_NAMES = frozenset(ValidateChecks.model_fields)


class ContractViolation(RuntimeError):
    """The data broke the contract; the message names the files, what to do, and the report."""


# What to do about each check that failed at level `error`, besides fixing the data itself;
# every check can also be lowered to `warning` (or `off`) in validate.checks.
_REMEDIES = {
    "duplicate_across_splits": "keep each image in its earliest split and drop the later copies "
    "with `validate.deduplicate: exact` (or `near`, which also drops near-duplicates)",
    "patient_leak": "give each patient's images one split (a `split` column in the manifest), or "
    "remove the split column and let histoflow assign splits grouped by patient",
    "unreadable": "remove or replace the files listed (zero-byte or not images)",
    "outside_root": "keep every manifest path inside data.root",
    "unknown_label": "correct those labels, or add them to data.classes",
    "class_min_count": "add images of that class, or lower validate.min_per_class",
    "mode": "convert the files, or allow their mode in validate.allowed_modes (e.g. [RGB, L])",
    "size": "resize the files, or widen validate.min_size / validate.max_size",
}


def _what_to_do(checks: list[str]) -> str:
    lines = ["What to do:"]
    for check in dict.fromkeys(checks):  # once each, in the order they failed
        remedy = _REMEDIES.get(check, "fix the files listed")
        lines.append(
            f"- [{check}] {remedy}; or lower the check with "
            f"`validate.checks.{check}: warning` in params.yaml"
        )
    return "\n".join(lines)


def run(cfg: Params, inputs: Inputs, outputs: Outputs) -> dict:
    """Validate ``inputs.data``; write manifest, report and metrics.

    Raises:
        ContractViolation: when any check at level ``error`` fails. The report is written
            first; the manifest is not, so the last good manifest stays in place.
    """
    import pandas as pd

    from histoflow.memory import return_freed_memory

    return_freed_memory()  # dropped copies of the table leave the process at once
    # Copy-on-write (pandas 3's default): selections, drops and concatenations share columns
    # instead of copying the per-tile table (at 100,000 tiles each copy was ~20 MiB).
    with pd.option_context("mode.copy_on_write", True):
        return _run(cfg, inputs, outputs)


def _run(cfg: Params, inputs: Inputs, outputs: Outputs) -> dict:
    # Great Expectations and the QC libraries load here, not at import: flows read Outputs.
    # They load after the source is read, so a wrong or empty data folder fails in a second.
    from histoflow.data.ingest.sources import (
        assign_splits,
        read_source,
        split_origin,
        unlisted_images,
    )

    source = read_source(inputs.data, cfg.data.manifest, cfg.data.label_column)
    unlisted = unlisted_images(inputs.data, source["path"], cfg.data.manifest)

    import pandas as pd

    from histoflow.data.manifest import printable_path
    from histoflow.data.quality.contract import check_contract
    from histoflow.data.quality.dedupe import cross_split_copies
    from histoflow.data.quality.report import write_validation_report
    from histoflow.data.quality.table import feature_table

    # Unchanged images reuse their rows from the previous run (keyed by path, size, mtime,
    # confirmed by sha256); the cache sits beside the manifest, outside DVC's outputs. Paths go
    # as strings: a Path object per tile held ~0.4 KB more per tile through the QC pass.
    qc = feature_table(
        [os.path.join(inputs.data, p) for p in source["path"]],
        workers=cfg.validate.workers,
        cache=outputs.manifest.parent / ".qc_cache.parquet",
        progress=not os.environ.get("TQDM_DISABLE"),  # no bar in a log (tqdm's own switch)
        max_pixels=cfg.data.max_pixels,
    ).drop(columns="path")
    source = _with_inferred_cases(source.reset_index(drop=True), qc.reset_index(drop=True), cfg)
    # split_by inferred_case: splits are carved by case; patient_id keeps what the data said.
    by_case = "case_id" in source and cfg.data.split_by == "inferred_case"
    table = assign_splits(
        source.assign(patient_id=source["case_id"]) if by_case else source,
        val_fraction=cfg.data.val_fraction,
        test_fraction=cfg.data.test_fraction,
        seed=cfg.data.split_seed,
    ).assign(patient_id=source["patient_id"].to_numpy())
    origin = split_origin(source["split"], table["split"])
    table = pd.concat([table.reset_index(drop=True), qc.reset_index(drop=True)], axis=1)
    del source, qc  # the table holds what they held; kept, they were a copy per tile
    # A file (or folder) name that is not UTF-8 is escaped for the report and the manifest;
    # the file's QC row says it is unreadable, and why.
    for column in ("path", "label", "patient_id"):
        table[column] = table[column].map(printable_path)
    # Later-split copies go before the contract is checked, so the checks see what trains.
    dropped = cross_split_copies(
        table, cfg.validate.deduplicate, cfg.validate.near_duplicate_distance
    )
    removed = table[table["path"].isin(dropped)].assign(reason=lambda t: t["path"].map(dropped))
    if dropped:  # a filtered copy only when something goes
        table = table[~table["path"].isin(dropped)].reset_index(drop=True)
    classes = list(cfg.data.classes) if cfg.data.classes else sorted(table["label"].unique())
    result = check_contract(
        table,
        cfg.validate,
        classes=classes,
        root=inputs.data,
        unlisted=unlisted,
        split_origin=origin,
    )

    flagged = result.flagged(QC_FAILURE_CHECKS)
    excluded = sorted(flagged) if cfg.validate.qc_failures == "exclude" else []
    report = write_validation_report(
        table,
        result,
        outputs.report,
        data_root=inputs.data,
        classes=classes,
        excluded=excluded,
        max_pixels=cfg.data.max_pixels,
    )
    listing = outputs.report / "deduplicated.csv"
    if dropped:
        with atomic_path(listing) as tmp:
            removed[["path", "label", "split", "reason"]].to_csv(tmp, index=False)
    else:
        listing.unlink(missing_ok=True)
    if not result.success:
        raise ContractViolation(
            f"data in {inputs.data} broke the contract.\n{result.summary()}\n"
            f"{_what_to_do([v.check for v in result.errors if v.check in _CHECK_NAMES])}\n"
            f"Full report: {report}"
        )
    kept = table[~table["path"].isin(excluded)] if excluded else table
    _check_exclusion_leaves_every_split(kept, classes, cfg, report)
    write_parquet(kept, outputs.manifest)
    metrics = {
        "n_images": len(kept),
        "n_excluded": len(excluded),
        "n_deduplicated": len(dropped),
        "deduplicated_by_split": removed["split"].value_counts().sort_index().to_dict(),
        "n_flagged_qc": len(flagged),
        "qc_failures": cfg.validate.qc_failures,
        "n_patients": int(kept["patient_id"].nunique()),
        "n_classes": len(classes),
        "n_warnings": len(result.warnings),
        "warnings": sorted({v.check for v in result.warnings}),
        "split_sizes": kept["split"].value_counts().sort_index().to_dict(),
        # data: given by the data (folders or column); carved: from its training images.
        "split_origin": origin,
        "n_unlisted": len(unlisted),
        # e.g. after deduplication: a class with no test images cannot be scored there.
        "classes_missing_from_split": {
            split: sorted(set(classes) - set(labels))
            for split, labels in kept.groupby("split")["label"]  # not every column's copy
            if set(classes) - set(labels)
        },
        "class_counts": kept["label"].value_counts().sort_index().to_dict(),
        "expectations": result.statistics,
    }
    write_metrics(outputs.metrics, metrics, copy_in=outputs.report)
    return metrics


def _with_inferred_cases(source, qc, cfg: Params):
    """``source`` with ``case_id`` and ``case_confidence`` when the data names no patients.

    Inferred from colour statistics and pHash neighbours (no encoder exists yet); also with
    ``data.split_by: inferred_case``. Data with patient ids is returned as it is.
    """
    from histoflow.data.quality.cases import colour_block, has_patient_ids, infer_cases

    if has_patient_ids(source) or len(source) < 3:
        if cfg.data.split_by == "inferred_case":
            print("validate: the data names its patients; splits are carved by patient_id")
        return source
    cases = infer_cases(
        [colour_block(qc)],
        phash=qc["phash"].fillna("").astype(str).tolist(),
        phash_distance=cfg.validate.near_duplicate_distance,
        neighbours=cfg.validate.case_neighbours,
        resolution=cfg.validate.case_resolution,
        seed=cfg.data.split_seed,
    )
    return source.assign(
        case_id=cases["case_id"].to_numpy(), case_confidence=cases["case_confidence"].to_numpy()
    )


def _check_exclusion_leaves_every_split(
    kept: pd.DataFrame, classes: list[str], cfg: Params, report: Path
) -> None:
    """Fail when ``qc_failures: exclude`` took the last images of a class out of a split.

    The contract judged the table before the exclusion; this judges what will train.
    """
    from histoflow.data.manifest import SPLITS

    checks = cfg.validate.checks
    if "error" not in (checks.empty_split, checks.class_missing_from_split):
        return
    gaps = {
        split: missing
        for split in SPLITS
        if (missing := sorted(set(classes) - set(kept.loc[kept["split"] == split, "label"])))
    }
    if gaps:
        named = "; ".join(f"{split}: {missing}" for split, missing in gaps.items())
        raise ContractViolation(
            f"validate.qc_failures: exclude removed every image of some classes from a split "
            f"({named}), so they could not be trained or judged there; set "
            f"validate.qc_failures: keep, or lower min_blur / min_tissue_fraction. Report: {report}"
        )
