"""Ingest: read a dataset into one table with splits, and convert public formats into it.

:mod:`~histoflow.data.ingest.sources` reads histoflow's standard layout (an image folder or a
CSV manifest) and assigns splits. :func:`import_dataset` converts another format into that
layout: ``<out>/<label>/<file>`` images plus ``<out>/manifest.csv`` (``path,label`` and
optional ``split``, ``patient_id`` and grouping columns). Every import also writes
``<out>/import.json`` (source, counts per class and split, skipped files) and is atomic: a
failed or interrupted import leaves ``out`` as it was. ``overwrite`` replaces only a folder
that histoflow wrote (:mod:`histoflow.data.outdir`).

Formats, one module each (named after the format):

- ``folder``: ``<src>/<class>/**/*`` or ``<src>/<split>/<class>/**/*``, files copied unchanged;
- ``csv``: a CSV file with ``path,label`` (paths relative to the CSV) and any other columns;
- ``medmnist``: a MedMNIST ``.npz`` (``{train,val,test}_{images,labels}``), written as PNGs;
- ``breakhis``: BreakHis ``SOB_<B|M>_<subtype>-<patient>-<magnification>-<seq>.png`` files;
- ``pcam``: PatchCamelyon ``camelyonpatch_level_2_split_<split>_{x,y}.h5`` pairs, as PNGs.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from histoflow.data.ingest._common import SHOWN
from histoflow.data.ingest.sources import DataError
from histoflow.data.outdir import dataset_dir
from histoflow.io import write_json

__all__ = ["FORMATS", "import_dataset"]

FORMATS: tuple[str, ...] = ("folder", "csv", "medmnist", "breakhis", "pcam")


def import_dataset(
    fmt: str,
    src: Path,
    out: Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Write ``out/<label>/<file>`` images and ``out/manifest.csv``; return the manifest path.

    Args:
        fmt: One of :data:`FORMATS`.
        src: A folder (``folder``, ``breakhis``, ``pcam``), a CSV file (``csv``) or an ``.npz``
            file (``medmnist``).
        out: Output folder; it must be missing or empty unless ``overwrite``.
        overwrite: Replace a non-empty ``out`` that histoflow wrote and that holds nothing
            else (:func:`~histoflow.data.outdir.check_output`), once the import has succeeded.
        progress: Show a tqdm progress bar.
        class_names: MedMNIST class names by label index; they take precedence over a
            ``label_names``/``class_names`` array in the npz. Default: ``class_0``, ``class_1``...

    Returns:
        ``out/manifest.csv``.

    Raises:
        ValueError: ``fmt`` is unknown, ``class_names`` is given for another format, ``out``
            and ``src`` are inside one another, or ``out`` is the current folder, one above
            it, or a project.
        FileExistsError: ``out`` is not empty and ``overwrite`` is false, or histoflow did
            not write all of it.
        DataError: the source is missing, malformed or holds no images.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown dataset format {fmt!r}; expected one of: {', '.join(FORMATS)}")
    if class_names is not None and fmt != "medmnist":
        raise ValueError(f"class_names applies to the medmnist format only, not {fmt!r}")
    # Imported here, on use: reading a source (sources.py) imports this package, and should not
    # load h5py, tqdm and every format's parser with it.
    from histoflow.data.ingest import _write, breakhis, csv, folder, medmnist, pcam

    src, out = Path(src), Path(out)
    if not src.exists():
        raise DataError(f"{fmt} source {src} does not exist")
    _write.check_out(src, out, overwrite)
    with dataset_dir(out, by=f"histoflow data import {fmt}") as tmp:
        if fmt == "medmnist":
            total, items, skipped = medmnist.plan(src, class_names)
        else:
            plan = {
                "folder": folder.plan,
                "csv": csv.plan,
                "breakhis": breakhis.plan,
                "pcam": pcam.plan,
            }
            total, items, skipped = plan[fmt](src)
        rows = _write.write_items(items, tmp, total=total, desc=f"import {fmt}", progress=progress)
        if not rows:
            raise DataError(f"no images found in {src}: its {fmt} arrays are all empty")
        table = pd.DataFrame(rows).sort_values("path", kind="stable").reset_index(drop=True)
        table.to_csv(tmp / "manifest.csv", index=False, lineterminator="\n")
        write_json(tmp / "import.json", _write.summary(fmt, src, table, skipped))
    if skipped:
        warnings.warn(
            f"{fmt} import skipped {len(skipped)} file(s) under {src} that are not importable "
            f"images (first: {', '.join(skipped[:SHOWN])}); listed in {out / 'import.json'}",
            stacklevel=2,
        )
    return out / "manifest.csv"
