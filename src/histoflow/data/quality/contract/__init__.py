"""The data contract: a Great Expectations suite run on the per-image table.

One row per image (``path``, ``label``, ``split``, ``patient_id``, ``readable`` and the QC
columns of :mod:`histoflow.data.quality.features`). Each check is named after a field of
:class:`~histoflow.config.ValidateChecks`, whose level decides what a failure means: ``error``
fails the contract, ``warning`` is reported, ``off`` skips the check. Three ``schema``
expectations (path set and unique, split known) always run as errors: nothing downstream works
without them.

Every check is one or two GX expectations, so GX is the one engine and every result has GX's
statistics. :func:`check_contract` takes three steps, a module each:
:mod:`~histoflow.data.quality.contract.columns` checks that the table has what the enabled
checks read and derives the helper columns that rules across rows need (say,
``_patient_n_splits``, the number of splits each row's patient is in);
:mod:`~histoflow.data.quality.contract.rules` states each check's expectations and messages;
:mod:`~histoflow.data.quality.contract.gx` runs them as one suite and turns every failed
expectation into a :class:`Violation` that names the offending files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from histoflow.config import ValidateConfig
from histoflow.data.manifest import SPLITS
from histoflow.data.quality.contract.columns import (
    REQUIRED_COLUMNS,
    derive_columns,
    require_columns,
)
from histoflow.data.quality.contract.gx import run_rules
from histoflow.data.quality.contract.results import CHECKS, SCHEMA, ContractResult, Violation
from histoflow.data.quality.contract.rules import contract_rules

__all__ = ["CHECKS", "REQUIRED_COLUMNS", "ContractResult", "Violation", "check_contract"]


def check_contract(
    table: pd.DataFrame,
    cfg: ValidateConfig,
    *,
    classes: Sequence[str],
    root: Path | None = None,
    unlisted: Sequence[str] = (),
    split_origin: Mapping[str, str] | None = None,
) -> ContractResult:
    """Validate the per-image table against the data contract.

    Checks (each skipped when its level in ``cfg.checks`` is ``off``): ``unreadable`` (missing,
    not an image, 0 bytes, a name that is not UTF-8, or above ``data.max_pixels``: the QC
    row's ``error`` says which); ``outside_root`` (absolute path, one leaving the data folder
    through ``..``, or, with ``root``, a link whose target is outside it); ``unlisted_files``
    (``unlisted`` is not empty); ``empty_split`` (train, val or test without images);
    ``class_missing_from_split`` (a class without images in a split that has some);
    ``unknown_label``; ``class_min_count`` (fewer than ``min_per_class``
    images, or none); ``patient_leak`` (a patient in several splits);
    ``duplicate_across_splits`` (same sha256 in several splits); ``mode`` and ``size``
    (readable images only); ``near_duplicate_across_splits`` (perceptual hashes within
    ``near_duplicate_distance`` bits in different splits, bytes differing); ``blurred``
    (``blur < min_blur``) and ``blank`` (``tissue_fraction < min_tissue_fraction``),
    readable images only; ``class_imbalance`` (largest / smallest class above
    ``max_class_ratio``); ``conflicting_labels`` (same sha256, different labels);
    ``inferred_case_leak`` (a ``case_id`` that validate inferred, for data without patient ids,
    in several splits).

    Args:
        table: One row per image; extra columns are ignored.
        cfg: Thresholds and the level of each check.
        classes: Allowed labels.
        root: The data folder the paths are relative to (symbolic links are resolved in it).
        unlisted: Images in the data folder that its manifest does not list.
        split_origin: Where each split came from (``data``, ``carved``, ``none``), so that a
            split's finding names the right remedy.

    Returns:
        The result, with one violation per failed expectation.

    Raises:
        ValueError: if ``table`` has no rows, or lacks a column that an enabled check needs.
    """
    if table.empty:
        raise ValueError("data contract: the table has no images; check the data folder")
    levels = {name: level for name, level in cfg.checks.model_dump().items() if level != "off"}
    require_columns(table, levels)
    frame, near = derive_columns(table, cfg, classes, levels, root=root, n_unlisted=len(unlisted))
    splits = [s for s in SPLITS if (frame["split"] == s).any()]
    rules = contract_rules(
        cfg,
        list(classes),
        near,
        splits=splits,
        found=sorted(set(frame["label"])),
        origin=split_origin,
        unlisted=unlisted,
    )
    rules = [r for r in rules if r.check in levels or r.check == SCHEMA]
    return run_rules(frame, rules, levels)
