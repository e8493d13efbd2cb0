"""The contract's rules: each check as one or two GX expectations, and the message of each.

A rule across rows (a patient in several splits, copies across splits) expects a value of a
helper column that :func:`~histoflow.data.quality.contract.columns.derive_columns` adds to the
table. A message is fixed text, or built from the table and the offending rows, so that it
names what was found.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import great_expectations as gx
import pandas as pd
from great_expectations.expectations.row_conditions import Column

from histoflow.config import ValidateConfig
from histoflow.data.manifest import SPLITS
from histoflow.data.quality.contract.results import SCHEMA

__all__ = ["Message", "Rule", "contract_rules"]

# Examples named in a message; the violation's paths list every file.
_EXAMPLES = 3

# A message is fixed text, or built from the table and the offending row positions.
Message = str | Callable[[pd.DataFrame, list[int]], str]

# What each split is for, in messages about a split without images (or without a class).
_SPLIT_ROLE = {
    "train": "the models learn from it",
    "val": "early stopping and model selection read it",
    "test": "evaluate and promotion score it",
}


@dataclass(frozen=True)
class Rule:
    """One GX expectation of the contract and what its failure says.

    Attributes:
        check: The check it belongs to (one of ``CHECKS``), or ``"schema"``.
        expectation: The GX expectation, configured.
        message: Fixed text, or a function of the table and the offending row positions.
        paths: The files a table-level rule is about when they are not rows of the table
            (images on disk that the manifest does not list).
    """

    check: str
    expectation: gx.expectations.Expectation
    message: Message
    paths: tuple[str, ...] = ()


def contract_rules(
    cfg: ValidateConfig,
    classes: list[str],
    near: pd.DataFrame,
    *,
    splits: Sequence[str] = SPLITS,
    found: Sequence[str] | None = None,
    origin: Mapping[str, str] | None = None,
    unlisted: Sequence[str] = (),
) -> list[Rule]:
    """Every rule of the contract, schema rules first, each check's rules in a fixed order.

    Args:
        cfg: Thresholds.
        classes: Allowed labels.
        near: Near-duplicate pairs across splits, as
            :func:`~histoflow.data.quality.contract.columns.derive_columns` returns them
            (that check's message names them).
        splits: The splits that have images; each must hold every class found in the data
            (a split without images is ``empty_split``'s finding, not once more per class).
        found: The classes that have images (a class with none is ``class_min_count``'s).
        origin: Where each split came from (``data``, ``carved`` or ``none``, as
            :func:`~histoflow.data.ingest.sources.split_origin` says), for the remedies.
        unlisted: Images in the data folder that its manifest does not list.
    """
    origin = dict(origin or {})
    found = set(classes if found is None else found)
    exp = gx.expectations
    # Mode, size and pixel checks judge decoded images only, so an unreadable file fails once.
    # `Column == True` builds a GX row condition (E712 is about plain Python comparisons).
    readable = Column("readable") == True  # noqa: E712
    size = f"between {cfg.min_size} and {cfg.max_size} px"
    modes = list(cfg.allowed_modes)
    in_set, between = exp.ExpectColumnValuesToBeInSet, exp.ExpectColumnValuesToBeBetween
    return [
        Rule(SCHEMA, exp.ExpectColumnValuesToNotBeNull(column="path"), "path must be set"),
        Rule(SCHEMA, exp.ExpectColumnValuesToBeUnique(column="path"), "paths must be unique"),
        Rule(
            SCHEMA,
            in_set(column="split", value_set=list(SPLITS)),
            f"split must be one of {list(SPLITS)}",
        ),
        Rule("unreadable", in_set(column="readable", value_set=[True]), _unreadable_message),
        Rule(
            "unreadable",
            between(column="bytes", min_value=1),
            "file must not be empty (0 bytes)",
        ),
        Rule(
            "outside_root",
            in_set(column="_outside_root", value_set=[False]),
            "path must stay inside the data folder (no absolute paths, no '..' out of it)",
        ),
        Rule(
            "unlisted_files",
            exp.ExpectColumnMaxToBeBetween(column="_n_unlisted", max_value=0),
            _unlisted_message(unlisted),
            tuple(unlisted),
        ),
        Rule(
            "empty_split",
            exp.ExpectColumnDistinctValuesToContainSet(column="split", value_set=list(SPLITS)),
            _empty_split_message(origin),
        ),
        *(
            Rule(
                "class_missing_from_split",
                # A class with no images at all is class_min_count's finding, not this one's.
                exp.ExpectColumnDistinctValuesToContainSet(
                    column="label",
                    value_set=[c for c in classes if c in found],
                    row_condition=Column("split") == split,
                ),
                _class_missing_message(classes, split, origin.get(split, "data")),
            )
            for split in splits
            if split in SPLITS
        ),
        Rule(
            "unknown_label",
            in_set(column="label", value_set=classes),
            _found(f"label must be one of {classes}", "label"),
        ),
        Rule(
            "class_min_count",
            between(column="_class_count", min_value=cfg.min_per_class),
            _class_count_message(cfg.min_per_class),
        ),
        # Per-row counts cannot see a class with no images at all; this aggregate can.
        Rule(
            "class_min_count",
            exp.ExpectColumnDistinctValuesToContainSet(column="label", value_set=classes),
            _missing_classes_message(classes, cfg.min_per_class),
        ),
        Rule("patient_leak", in_set(column="_patient_n_splits", value_set=[1]), _patients_message),
        Rule(
            "inferred_case_leak",
            in_set(column="_case_n_splits", value_set=[1]),
            _cases_message,
        ),
        Rule(
            "duplicate_across_splits",
            in_set(column="_sha_n_splits", value_set=[1]),
            _groups_message("identical files (same sha256) must not be in two splits", "split"),
        ),
        Rule(
            "mode",
            in_set(column="mode", value_set=modes, row_condition=readable),
            _found(f"image mode must be one of {modes}", "mode"),
        ),
        *(
            Rule(
                "size",
                between(
                    column=side,
                    min_value=cfg.min_size,
                    max_value=cfg.max_size,
                    row_condition=readable,
                ),
                f"image {side} must be {size}",
            )
            for side in ("width", "height")
        ),
        Rule(
            "near_duplicate_across_splits",
            in_set(column="_near_duplicate_across_splits", value_set=[False]),
            _near_message(near, cfg.near_duplicate_distance),
        ),
        Rule(
            "blurred",
            between(column="blur", min_value=cfg.min_blur, row_condition=readable),
            f"image must be in focus: blur (variance of the Laplacian) at least {cfg.min_blur}",
        ),
        Rule(
            "blank",
            between(
                column="tissue_fraction",
                min_value=cfg.min_tissue_fraction,
                row_condition=readable,
            ),
            f"image must show tissue: tissue_fraction at least {cfg.min_tissue_fraction}",
        ),
        Rule(
            "class_imbalance",
            exp.ExpectColumnMaxToBeBetween(column="_class_ratio", max_value=cfg.max_class_ratio),
            _imbalance_message(classes, cfg.max_class_ratio),
        ),
        Rule(
            "conflicting_labels",
            in_set(column="_sha_n_labels", value_set=[1]),
            _groups_message("identical files (same sha256) must have one label", "label"),
        ),
    ]


def _unlisted_message(unlisted: Sequence[str]) -> str:
    shown = ", ".join(unlisted[:_EXAMPLES]) + (", ..." if len(unlisted) > _EXAMPLES else "")
    return (
        "every image in the data folder must be listed in its manifest, which decides what "
        f"trains; {_plural(len(unlisted), 'image')} not listed ({shown}): add them to the "
        "manifest (or re-import the data), move them out of the data folder, or set "
        "validate.checks.unlisted_files to warning if the manifest is a deliberate subset"
    )


def _empty_split_message(origin: dict[str, str]) -> Callable[[pd.DataFrame, list[int]], str]:
    def message(frame: pd.DataFrame, _: list[int]) -> str:
        present = set(frame["split"])
        given = [s for s in SPLITS if origin.get(s) == "data"]
        empty = [s for s in SPLITS if s not in present]
        why = [f"{s} ({_SPLIT_ROLE[s]}): {_empty_remedy(s, origin, given)}" for s in empty]
        return "train, val and test must each have images; no images in " + "; ".join(why)

    return message


def _empty_remedy(split: str, origin: dict[str, str], given: list[str]) -> str:
    if split == "train":
        return (
            f"the data gives only {'/'.join(given) or 'no'} split(s), and histoflow carves "
            "missing splits from train: add training images (train/<class>/ folders or "
            "split=train rows), or give no split at all and let histoflow assign every split"
        )
    if origin.get(split) == "data":
        return (
            "validate.deduplicate dropped every one of its images as a copy of an earlier "
            "split's: give it images that are not copies"
        )
    fraction = "data.val_fraction" if split == "val" else "data.test_fraction"
    zero = f"{fraction} is 0, or " if split == "val" else ""  # test_fraction is always > 0
    return (
        f"it could not be carved from train, by patient: {zero}the data has too few patients "
        f"(images without patient_id count one each); raise {fraction}, give more patients, "
        "or give this split in the data (a split folder or column)"
    )


def _class_missing_message(
    classes: list[str], split: str, origin: str
) -> Callable[[pd.DataFrame, list[int]], str]:
    if split == "train":
        effect = "fatal: the model cannot learn a class it never sees"
    elif split == "val":
        effect = "early stopping and model selection cannot judge it"
    else:
        effect = "its test recall cannot be measured, so the model cannot be judged on it"
    if origin == "carved":
        remedy = (
            "the split is carved by patient, and a class needs at least 3 patients (one for "
            "each of train, val and test; images without patient_id count one each): give it "
            "more images or patients"
        )
    else:
        remedy = (
            f"add images of it to the data's {split} split, or give no split at all and let "
            "histoflow assign every split by patient"
        )

    def message(frame: pd.DataFrame, _: list[int]) -> str:
        here = set(frame.loc[frame["split"] == split, "label"])
        missing = [c for c in classes if c in set(frame["label"]) and c not in here]
        return f"every class must have images in {split}; none for {missing} ({effect}); {remedy}"

    return message


def _unreadable_message(frame: pd.DataFrame, rows: list[int]) -> str:
    text = (
        "file must open as an image (missing, corrupt, truncated, not an image, a file name "
        "that is not UTF-8, or more pixels than data.max_pixels)"
    )
    if "error" not in frame:
        return text
    errors = frame["error"].iloc[rows].dropna().astype(str)
    seen = list(dict.fromkeys(e for e in errors if e))[:_EXAMPLES]
    return f"{text}; e.g. {'; '.join(repr(e) for e in seen)}" if seen else text


def _found(text: str, column: str) -> Callable[[pd.DataFrame, list[int]], str]:
    def message(frame: pd.DataFrame, rows: list[int]) -> str:
        values = frame[column].iloc[rows].astype(str).value_counts().sort_index()
        return f"{text}; found " + ", ".join(f"{v!r} ({n})" for v, n in values.items())

    return message


def _patients_message(frame: pd.DataFrame, rows: list[int]) -> str:
    bad = frame.iloc[rows]
    splits = bad.groupby("patient_id", sort=True)["split"].agg(lambda s: sorted(set(s)))
    named = ", ".join(f"{patient} ({'/'.join(s)})" for patient, s in splits.iloc[:10].items())
    more = f" and {len(splits) - 10} more" if len(splits) > 10 else ""
    return f"each patient must be in exactly one split; {len(splits)} in several: {named}{more}"


def _cases_message(frame: pd.DataFrame, rows: list[int]) -> str:
    bad = frame.iloc[rows]
    splits = bad.groupby("case_id", sort=True)["split"].agg(lambda s: sorted(set(s)))
    sizes = bad.groupby("case_id").size()
    named = ", ".join(
        f"{case} ({'/'.join(s)}, {sizes[case]} images)" for case, s in splits.iloc[:10].items()
    )
    more = f" and {len(splits) - 10} more" if len(splits) > 10 else ""
    return (
        "tiles of one slide should sit in one split; without patient ids, cases inferred from "
        f"colour and pHash neighbours (outputs/validate/manifest.parquet case_id) put "
        f"{len(splits)} in several: {named}{more}; give patient ids, or remove the split "
        "column and set data.split_by: inferred_case"
    )


def _class_count_message(min_per_class: int) -> Callable[[pd.DataFrame, list[int]], str]:
    def message(frame: pd.DataFrame, rows: list[int]) -> str:
        counts = frame.iloc[rows]["label"].value_counts().sort_index()
        named = ", ".join(f"{label!r} has {n}" for label, n in counts.items())
        return f"each class needs at least {min_per_class} images; {named}"

    return message


def _missing_classes_message(
    classes: list[str], min_per_class: int
) -> Callable[[pd.DataFrame, list[int]], str]:
    def message(frame: pd.DataFrame, _: list[int]) -> str:
        # Read from the table: the shape of this result dict changed across GX 1.x releases.
        missing = [c for c in classes if c not in set(frame["label"])]
        return f"each class needs at least {min_per_class} images; no images for {missing}"

    return message


def _groups_message(text: str, column: str) -> Callable[[pd.DataFrame, list[int]], str]:
    def message(frame: pd.DataFrame, rows: list[int]) -> str:
        groups = list(frame.iloc[rows].groupby("sha256", sort=False))
        shown = [
            " = ".join(f"{p} ({v})" for p, v in zip(g["path"], g[column], strict=True))
            for _, g in groups[:_EXAMPLES]
        ]
        more = f"; and {len(groups) - _EXAMPLES} more" if len(groups) > _EXAMPLES else ""
        return f"{text}; {_plural(len(groups), 'group')}: {'; '.join(shown)}{more}"

    return message


def _near_message(near: pd.DataFrame, distance: int) -> Callable[[pd.DataFrame, list[int]], str]:
    def message(frame: pd.DataFrame, _: list[int]) -> str:
        path, split = frame["path"], frame["split"]
        shown = [
            f"{path[i]} ({split[i]}) ~ {path[j]} ({split[j]}), distance {d}"
            for i, j, d in near.head(_EXAMPLES).itertuples(index=False)
        ]
        more = f"; and {len(near) - _EXAMPLES} more" if len(near) > _EXAMPLES else ""
        return (
            "images in different splits must not be near duplicates (perceptual-hash distance "
            f"<= {distance}, bytes differing); {_plural(len(near), 'pair')}: "
            f"{'; '.join(shown)}{more}"
        )

    return message


def _imbalance_message(
    classes: list[str], max_ratio: float
) -> Callable[[pd.DataFrame, list[int]], str]:
    def message(frame: pd.DataFrame, _: list[int]) -> str:
        counts = frame["label"].value_counts()
        named = ", ".join(f"{c!r} {counts[c]}" for c in classes if c in counts)
        ratio = frame["_class_ratio"].max()
        return f"largest / smallest class must be at most {max_ratio:g}; is {ratio:.1f} ({named})"

    return message


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
