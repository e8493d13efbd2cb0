"""Classify image files with a registered model."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from histoflow.data.images import IMAGE_SUFFIXES

__all__ = ["case_predictions", "cases_path", "collect_images", "predict_paths", "write_predictions"]


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
