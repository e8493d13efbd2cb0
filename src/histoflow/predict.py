"""Classify image files with a registered model.

:func:`stream_predictions` writes rows as each batch finishes (CSV, JSON records, or a
challenge submission), so predicting 74,000 files holds one batch of images and rows at a
time; only the sorted file list (about 100 bytes a file) grows with their number.
"""

from __future__ import annotations

import glob
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import pandas as pd

from histoflow.data.images import IMAGE_SUFFIXES

__all__ = [
    "FORMATS",
    "StreamSummary",
    "case_predictions",
    "cases_path",
    "collect_images",
    "predict_paths",
    "stream_predictions",
    "submission_rows",
    "write_predictions",
    "write_rows",
]

# csv / json: every column; submission: the challenge's two columns (``submission_rows``).
FORMATS = ("csv", "json", "submission")


def collect_images(paths: Iterable[Path | str]) -> list[Path]:
    """Image files named directly, found under folders, or matched by globs; sorted, unique.

    Raises:
        FileNotFoundError: a path that does not exist, or no images at all.
    """
    found: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        matches = (
            [Path(m) for m in glob.glob(str(path), recursive=True)]
            if glob.has_magic(str(path))
            else [path]
        )
        if not matches or not all(m.exists() for m in matches):
            raise FileNotFoundError(f"{path} does not exist")
        for match in matches:
            if match.is_dir():
                found.update(
                    f
                    for f in match.rglob("*")
                    if f.is_file()
                    and f.suffix.lower() in IMAGE_SUFFIXES
                    and not any(p.startswith(".") for p in f.relative_to(match).parts)
                )
            else:
                found.add(match)
    if not found:
        names = ", ".join(str(p) for p in paths)
        raise FileNotFoundError(
            f"no images found in {names} (looked for {', '.join(sorted(IMAGE_SUFFIXES))} files)"
        )
    return sorted(found)


def predict_paths(
    paths: Iterable[Path | str],
    *,
    model_uri: str,
    root: Path,
    batch_size: int = 64,
    progress: bool = True,
) -> pd.DataFrame:
    """Predictions for every image under ``paths``: one row per file with ``path`` first.

    Files are read and classified ``batch_size`` at a time through the registered model's
    :class:`~histoflow.inference.Predictor` (the same path as the pyfunc and monitoring), so
    memory stays flat on large folders; a tqdm bar counts images. A file that cannot be read
    keeps its row, with the reason in ``error`` (empty for the others) and no prediction.
    """
    from histoflow.registry import load_model

    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    files = collect_images(paths)
    model = load_model(model_uri, root)
    table, _ = model.predictor.predict_files(files, batch_size=batch_size, progress=progress)
    return table


def write_predictions(table: pd.DataFrame, out: Path, fmt: str = "csv") -> None:
    """Write ``table`` atomically as CSV or JSON (a list of records)."""
    from histoflow.io import atomic_path

    if fmt not in ("csv", "json"):
        raise ValueError(f"output format must be csv or json, got {fmt!r}")
    with atomic_path(Path(out)) as tmp:
        if fmt == "json":
            table.to_json(tmp, orient="records", indent=2)
        else:
            table.to_csv(tmp, index=False)


def case_predictions(
    table: pd.DataFrame, column: str, paths: Iterable[Path | str], method: str = "mean"
) -> pd.DataFrame:
    """Case-level predictions (one row per patient, slide...) from :func:`predict_paths`' table.

    Args:
        table: the tile predictions (``path``, ``prob_<class>``, ``error``).
        column: ``folder`` (each image's parent folder is its case) or a column of a
            ``manifest.csv`` in a folder named in ``paths`` (e.g. ``patient_id``).
        paths: what was classified (where manifests are looked for).
        method: ``mean`` of the tile probabilities or ``vote`` (majority of tile predictions).

    Returns:
        :func:`histoflow.evaluation.cases.aggregate_cases`' table, its ``case`` column named
        ``column``; files that could not be read are left out.

    Raises:
        ValueError: ``column`` is not ``folder`` and no manifest names it for every image.
    """
    from histoflow.evaluation.cases import aggregate_cases

    ok = table[table["error"] == ""].reset_index(drop=True)
    classes = [c.removeprefix("prob_") for c in ok if c.startswith("prob_")]
    if column == "folder":
        cases = ok["path"].map(lambda p: Path(p).parent.name)
    else:
        cases = ok["path"].map(_manifest_values(paths, column))
        if cases.isna().any():
            missing = ok.loc[cases.isna(), "path"].iloc[0]
            raise ValueError(
                f"--group-by {column}: no manifest.csv column {column!r} names {missing}; give "
                "folders whose manifest.csv has that column for every image, or --group-by folder"
            )
    out = aggregate_cases(cases, ok.filter(like="prob_").to_numpy(), classes, method=method)
    return out.rename(columns={"case": column})


def cases_path(out: Path) -> Path:
    """Where the case-level table goes beside ``out``: ``preds.csv`` -> ``preds_cases.csv``."""
    return out.with_name(f"{out.stem}_cases{out.suffix}")


def _manifest_values(paths: Iterable[Path | str], column: str) -> dict[str, str]:
    """``{image path as predict_paths writes it: value of column}`` from the folders' manifests."""
    values: dict[str, str] = {}
    for raw in paths:
        manifest = Path(raw) / "manifest.csv"
        if not manifest.is_file():
            continue
        frame = pd.read_csv(manifest, dtype=str)
        if column not in frame or "path" not in frame:
            continue
        for rel, value in zip(frame["path"], frame[column], strict=True):
            values[str(Path(raw) / rel)] = value
    return values


def submission_rows(table: pd.DataFrame) -> pd.DataFrame:
    """``SubjectID,Prediction`` rows, the challenge's submission format.

    ``SubjectID`` is the tile's file name without its suffix and ``Prediction`` the predicted
    class name (the challenge's label names when the model was trained on them); a file that
    could not be read gets an empty prediction (its reason is in the full table's ``error``).
    """
    return pd.DataFrame(
        {
            "SubjectID": [Path(p).stem for p in table["path"]],
            "Prediction": table["label"].fillna("").astype(str),
        }
    )


@dataclass
class StreamSummary:
    """What :func:`stream_predictions` wrote: rows, and the errors of the files it could not read."""

    rows: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)  # the first few, each naming its file


def stream_predictions(
    paths: Iterable[Path | str],
    *,
    model_uri: str,
    root: Path,
    out: Path | None,
    fmt: str = "csv",
    batch_size: int = 64,
    progress: bool = True,
) -> StreamSummary:
    """Classify every image under ``paths``, writing each batch's rows as soon as it finishes.

    Args:
        paths: files, folders (searched recursively) and globs.
        model_uri: the registered model (``models:/name@alias``).
        root: the project folder (for the tracking store).
        out: the file to write (atomically: complete or not at all); None = standard output.
        fmt: one of :data:`FORMATS`.
        batch_size: images read and classified at once.
        progress: show a progress bar.

    Returns:
        How many rows were written and which files could not be read.

    Raises:
        ValueError: an unknown format or a batch size below 1.
    """
    from histoflow.io import atomic_path
    from histoflow.registry import load_model

    if fmt not in FORMATS:
        raise ValueError(f"output format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    files = collect_images(paths)
    predictor = load_model(model_uri, root).predictor
    batches = (t for t, _ in predictor.iter_files(files, batch_size=batch_size, progress=progress))
    if out is None:
        return write_rows(batches, sys.stdout, fmt)
    with atomic_path(Path(out)) as tmp, open(tmp, "w", newline="") as fh:
        return write_rows(batches, fh, fmt)


def write_rows(batches: Iterable[pd.DataFrame], fh: TextIO, fmt: str) -> StreamSummary:
    """Write each table of ``batches`` to ``fh`` in ``fmt`` as it comes, flushing after each."""
    summary = StreamSummary()
    if fmt == "json":
        fh.write("[")
    for table in batches:
        failed = table["error"] != ""
        summary.failed += int(failed.sum())
        summary.errors += list(table.loc[failed, "error"])[: 10 - len(summary.errors)]
        rows = submission_rows(table) if fmt == "submission" else table
        if fmt == "json":
            records = rows.to_json(orient="records", indent=2)[1:-1].strip("\n")  # no [ ]
            fh.write(("," if summary.rows else "") + "\n" + records)
        else:
            rows.to_csv(fh, index=False, header=summary.rows == 0)
        summary.rows += len(rows)
        fh.flush()
    if fmt == "json":
        fh.write("\n]\n")
    return summary
