"""The output folder of every dataset writer (``histoflow data synth|standin|import``).

A writer builds its dataset beside the output folder and swaps it in at the end
(:func:`dataset_dir`), leaving a marker file, :data:`MARKER`, in it. ``--overwrite`` may then
replace that folder, and only that kind of folder (:func:`check_output`): one with the marker
and nothing in it but what histoflow wrote (the marker, ``manifest.csv``, ``import.json`` and
the files the manifest lists). Never the current folder or one above it, and never a folder
holding ``.git`` or ``dvc.yaml`` (a project), marker or not.
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterator
from pathlib import Path

from histoflow.data.manifest import printable_path
from histoflow.io import atomic_dir

__all__ = ["MARKER", "check_output", "dataset_dir"]

MARKER = ".histoflow-dataset"
_OWN_FILES = frozenset({MARKER, "manifest.csv", "import.json"})
_PROJECT_FILES = (".git", "dvc.yaml")
_SHOWN = 5


def check_output(out: Path, *, overwrite: bool) -> None:
    """Refuse an output folder that writing a dataset there could harm; nothing is deleted here.

    Args:
        out: The output folder; a missing or empty one is always fine.
        overwrite: Allow replacing a non-empty folder that histoflow wrote.

    Raises:
        ValueError: ``out`` is the current folder or one above it, or holds a project.
        FileExistsError: ``out`` is a file; or it is not empty and ``overwrite`` is false; or
            histoflow did not write it (no marker), or it holds files histoflow did not write.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output {out} is a file; choose a folder path")
    here = Path.cwd().resolve()
    if here.is_relative_to(out.resolve()):
        where = "the current folder" if here == out.resolve() else "a folder above this one"
        raise ValueError(
            f"--out {out} is {where}; a dataset replaces its whole output folder, so write it "
            "into a new subfolder instead, e.g. --out data"
        )
    if not out.is_dir() or not any(out.iterdir()):
        return
    project = [name for name in _PROJECT_FILES if (out / name).exists()]
    if project:
        raise ValueError(
            f"output folder {out} holds {' and '.join(project)}: it is a project, which "
            f"histoflow never replaces; write the dataset into a subfolder, e.g. {out / 'data'}"
        )
    if not overwrite:
        raise FileExistsError(
            f"output folder {out} is not empty; choose a new folder, or pass --overwrite "
            "(overwrite=True) to replace a dataset that histoflow wrote there"
        )
    if not (out / MARKER).is_file():
        raise FileExistsError(
            f"output folder {out} is not empty and histoflow did not write it (it has no "
            f"{MARKER} file), so --overwrite will not replace it; choose a new folder, or move "
            "or delete it yourself"
        )
    foreign = _foreign_files(out)
    if foreign:
        shown = ", ".join(foreign[:_SHOWN]) + (", ..." if len(foreign) > _SHOWN else "")
        raise FileExistsError(
            f"output folder {out} holds {len(foreign)} file(s) that histoflow did not write "
            f"({shown}), so --overwrite will not replace it; move them out first"
        )


@contextlib.contextmanager
def dataset_dir(out: Path, *, by: str) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; swap it in for ``out``, marked, if the block succeeds.

    Args:
        out: The final folder (check it with :func:`check_output` first).
        by: The command that writes it, recorded in the marker (keep it free of timestamps:
            the synthetic dataset is byte-for-byte reproducible, marker included).
    """
    with atomic_dir(out) as tmp:
        yield tmp
        (tmp / MARKER).write_text(
            f"written by {by}; `--overwrite` may replace this folder while it holds only "
            "what histoflow wrote\n"
        )


def _foreign_files(out: Path) -> list[str]:
    """Files under ``out`` other than the marker, the manifest, import.json and what it lists."""
    listed: set[str] = set()
    manifest = out / "manifest.csv"
    if manifest.is_file():
        with open(manifest, newline="", encoding="utf-8", errors="replace") as fh:
            listed = {row.get("path", "") for row in csv.DictReader(fh)}
    own = _OWN_FILES | listed
    files = (f.relative_to(out).as_posix() for f in out.rglob("*") if not f.is_dir())
    return sorted(printable_path(f) for f in files if f not in own)
