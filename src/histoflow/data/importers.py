"""Convert public dataset formats into histoflow's standard layout.

The standard layout is ``<out>/<label>/<file>`` images plus ``<out>/manifest.csv`` (``path,label``
and optional ``split``, ``patient_id`` and grouping columns), read by
:func:`histoflow.data.sources.read_source`. Every import also writes ``<out>/import.json`` (source,
counts per class and split, skipped files) and is atomic: a failed or interrupted import leaves
``out`` as it was.

Formats:
- ``folder``: ``<src>/<class>/**/*`` or ``<src>/<split>/<class>/**/*``, files copied unchanged;
- ``csv``: a CSV file with ``path,label`` (paths relative to the CSV) and any other columns;
- ``medmnist``: a MedMNIST ``.npz`` (``{train,val,test}_{images,labels}``), written as PNGs;
- ``breakhis``: BreakHis ``SOB_<B|M>_<subtype>-<patient>-<magnification>-<seq>.png`` files;
- ``pcam``: PatchCamelyon ``camelyonpatch_level_2_split_<split>_{x,y}.h5`` pairs, as PNGs.
"""

from __future__ import annotations

import math
import re
import shutil
import warnings
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath

import h5py
import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from histoflow.data.images import IMAGE_SUFFIXES
from histoflow.data.sources import SPLIT_ALIASES, DataError
from histoflow.io import atomic_dir, write_json

__all__ = ["FORMATS", "import_dataset"]

FORMATS: tuple[str, ...] = ("folder", "csv", "medmnist", "breakhis", "pcam")

_CHANNELS = ((), (1,), (3,))  # image shape after (H, W): greyscale or RGB
_CHUNK = 512  # images per read from an npz member or HDF5 dataset: 512 * 96*96*3 B = 14 MB
_SHOWN = 5  # skipped files named in the warning (import.json keeps up to 100)
_BREAKHIS = re.compile(
    r"SOB_(?P<kind>[BM])_(?P<code>[A-Z]+)-(?P<patient>\d+-[A-Za-z0-9]+)-(?P<mag>40|100|200|400)-\d+"
)
_SUBTYPES = {  # code -> (label, benign/malignant letter in the name)
    "A": ("adenosis", "B"),
    "F": ("fibroadenoma", "B"),
    "PT": ("phyllodes_tumor", "B"),
    "TA": ("tubular_adenoma", "B"),
    "DC": ("ductal_carcinoma", "M"),
    "LC": ("lobular_carcinoma", "M"),
    "MC": ("mucinous_carcinoma", "M"),
    "PC": ("papillary_carcinoma", "M"),
}
_PCAM = "camelyonpatch_level_2_split_{split}_{part}"

# One image to write: a source file to copy or pixels to save as PNG, its wanted path under out,
# and its manifest fields besides path.
Item = tuple["Path | np.ndarray", str, dict[str, str]]
Plan = tuple[int, Iterable[Item], list[str]]  # number of images, the images, skipped files


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
        overwrite: Replace a non-empty ``out`` (only once the import has succeeded).
        progress: Show a tqdm progress bar.
        class_names: MedMNIST class names by label index; they take precedence over a
            ``label_names``/``class_names`` array in the npz. Default: ``class_0``, ``class_1``...

    Returns:
        ``out/manifest.csv``.

    Raises:
        ValueError: ``fmt`` is unknown, ``class_names`` is given for another format, or ``out``
            and ``src`` are inside one another.
        FileExistsError: ``out`` is not empty and ``overwrite`` is false.
        DataError: the source is missing, malformed or holds no images.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown dataset format {fmt!r}; expected one of: {', '.join(FORMATS)}")
    if class_names is not None and fmt != "medmnist":
        raise ValueError(f"class_names applies to the medmnist format only, not {fmt!r}")
    src, out = Path(src), Path(out)
    if not src.exists():
        raise DataError(f"{fmt} source {src} does not exist")
    _check_out(src, out, overwrite)
    with atomic_dir(out) as tmp:
        total, items, skipped = (
            _medmnist(src, class_names) if fmt == "medmnist" else _PLANS[fmt](src)
        )
        bar = tqdm(total=total, desc=f"import {fmt}", unit="img", disable=not progress)
        rows = _write(items, tmp, bar)
        if not rows:
            raise DataError(f"no images found in {src}: its {fmt} arrays are all empty")
        table = pd.DataFrame(rows).sort_values("path", kind="stable").reset_index(drop=True)
        table.to_csv(tmp / "manifest.csv", index=False, lineterminator="\n")
        write_json(tmp / "import.json", _summary(fmt, src, table, skipped))
    if skipped:
        warnings.warn(
            f"{fmt} import skipped {len(skipped)} file(s) under {src} that are not importable "
            f"images (first: {', '.join(skipped[:_SHOWN])}); listed in {out / 'import.json'}",
            stacklevel=2,
        )
    return out / "manifest.csv"


def _check_out(src: Path, out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output {out} is a file; choose a folder path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"output folder {out} is not empty; choose a new folder or pass overwrite=True "
            "(--overwrite) to replace it"
        )
    # Replacing `out` deletes what it held, and scanning `src` would pick up an earlier import.
    if src.resolve().is_relative_to(out.resolve()) or (
        src.is_dir() and out.resolve().is_relative_to(src.resolve())
    ):
        raise ValueError(f"output {out} and source {src} overlap; write the import elsewhere")


def _write(items: Iterable[Item], dst: Path, bar: tqdm) -> list[dict[str, str]]:
    taken: set[str] = set()
    rows = []
    with bar:
        for source, rel, fields in items:
            rel = _unique(rel, taken)
            target = dst / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(source, Path):
                shutil.copy2(source, target)  # the original bytes: no re-encoding
            else:  # no metadata, fixed compression: the same pixels always give the same bytes
                Image.fromarray(source).save(target, format="PNG", compress_level=6)
            rows.append({"path": rel, **fields})
            bar.update()
    return rows


def _folder(src: Path) -> Plan:
    images, skipped = _scan(src)
    entries = []  # (file, class, split, path under the class folder)
    for file in images:
        parts = file.relative_to(src).parts
        if len(parts) >= 3 and parts[0].lower() in SPLIT_ALIASES:
            entries.append((file, parts[1], SPLIT_ALIASES[parts[0].lower()], "/".join(parts[2:])))
        elif len(parts) >= 2:
            entries.append((file, parts[0], "", "/".join(parts[1:])))
        else:
            skipped.append(parts[0])  # an image directly in src has no class
    _require(entries, src, "<src>/<class>/**/<image> or <src>/<split>/<class>/**/<image>", skipped)
    if len({bool(split) for _, _, split, _ in entries}) > 1:
        raise DataError(
            f"{src} mixes split folders (train/val/test) with class folders; put every class "
            "folder under a split folder, or none"
        )
    # A path found in two splits keeps its split in the output path; all others stay short.
    clashes = Counter(f"{label}/{sub}".casefold() for _, label, _, sub in entries)
    items = []
    for file, label, split, sub in entries:
        rel = f"{label}/{sub}"
        rel = f"{split}/{rel}" if split and clashes[rel.casefold()] > 1 else rel
        items.append((file, rel, {"label": label, **({"split": split} if split else {})}))
    return len(items), items, skipped


def _csv(src: Path) -> Plan:
    if not src.is_file():
        raise DataError(f"csv format expects a CSV file, got the folder {src}")
    try:
        table = pd.read_csv(src, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{src}: not a readable CSV: {exc}") from None
    missing = [c for c in ("path", "label") if c not in table.columns]
    if missing:
        raise DataError(
            f"{src}: missing column(s) {missing} (found {list(table.columns)}); expected "
            "path,label and optionally split,patient_id and grouping columns"
        )
    # Line numbers count the header as line 1, so table row i is line i + 2.
    empty = table.index[table["path"].isna() | table["label"].isna()]
    if len(empty):
        raise DataError(f"{src}: empty path or label on line(s) {(empty + 2).tolist()[:10]}")
    files = [p if p.is_absolute() else src.parent / p for p in map(Path, table["path"])]
    keep = [i for i, f in enumerate(files) if f.suffix.lower() in IMAGE_SUFFIXES]
    skipped = [f"line {i + 2}: {table.at[i, 'path']}" for i in table.index.difference(keep)]
    absent = [i for i in keep if not files[i].is_file()]
    if absent:
        raise DataError(
            f"{src} line {absent[0] + 2}: image {table.at[absent[0], 'path']!r} not found at "
            f"{files[absent[0]]} ({len(absent)} missing in all, on lines "
            f"{[i + 2 for i in absent[:10]]}); paths are relative to the CSV's folder"
        )
    _require(keep, src, "rows whose path is an image file", skipped)
    fields = table.drop(columns="path").to_dict("records")
    items = [(files[i], f"{_safe(table.at[i, 'label'])}/{files[i].name}", fields[i]) for i in keep]
    return len(items), items, skipped


def _medmnist(src: Path, class_names: Sequence[str] | None) -> Plan:
    try:
        # npz members cannot be memory-mapped: only labels and names are loaded here.
        with np.load(src, mmap_mode="r") as npz:
            keys = set(npz.files)
            splits = [s for s in ("train", "val", "test") if {f"{s}_images", f"{s}_labels"} <= keys]
            raw = {s: npz[f"{s}_labels"] for s in splits}
            stored = next(
                (npz[k].tolist() for k in ("label_names", "class_names") if k in keys), []
            )
    except (OSError, ValueError, TypeError, zipfile.BadZipFile) as exc:
        raise DataError(f"{src}: not a readable MedMNIST .npz file: {exc}") from None
    labels = {s: _medmnist_labels(v, src, s) for s, v in raw.items()}
    if not splits:
        raise DataError(
            f"no images found in {src}: looked for train_images/train_labels, val_images/"
            f"val_labels, test_images/test_labels arrays; it holds {sorted(keys)}"
        )
    n_classes = max((int(v.max()) + 1 for v in labels.values() if len(v)), default=0)
    names = [str(n) for n in class_names or stored] or [f"class_{i}" for i in range(n_classes)]
    if len(names) < n_classes:
        raise DataError(
            f"{src}: labels go up to {n_classes - 1}, so {n_classes} class names are needed; "
            f"got {len(names)}"
        )
    return sum(map(len, labels.values())), _medmnist_items(src, labels, names), []


def _medmnist_labels(labels: np.ndarray, src: Path, split: str) -> np.ndarray:
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]  # MedMNIST stores (N, 1)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or (labels < 0).any():
        raise DataError(
            f"{src}: {split}_labels must be non-negative integers of shape (N,) or (N, 1), got "
            f"{labels.dtype} {labels.shape} (multi-label MedMNIST sets are not supported)"
        )
    return np.asarray(labels, dtype=np.int64)


def _medmnist_items(src: Path, labels: dict[str, np.ndarray], names: list[str]) -> Iterator[Item]:
    with zipfile.ZipFile(src) as archive:
        for split, targets in labels.items():
            index = 0
            for chunk in _npy_chunks(archive, f"{split}_images.npy", len(targets)):
                for image in chunk[..., 0] if chunk.shape[3:] == (1,) else chunk:  # (H, W[, 3])
                    label = names[targets[index]]
                    rel = f"{_safe(label)}/{split}_{index:06d}.png"
                    yield image, rel, {"label": label, "split": split}
                    index += 1


def _npy_chunks(archive: zipfile.ZipFile, member: str, rows: int) -> Iterator[np.ndarray]:
    """Yield an npz image member ``_CHUNK`` rows at a time, decompressing it as a stream."""
    with archive.open(member) as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        if fortran_order or dtype != np.uint8 or shape[:1] != (rows,) or shape[3:] not in _CHANNELS:
            raise DataError(
                f"{archive.filename}: {member} must be a C-ordered uint8 (N,H,W) or (N,H,W,3) "
                f"array with one image per label ({rows}), got {dtype} {shape}"
            )
        row_bytes = math.prod(shape[1:])
        for start in range(0, rows, _CHUNK):
            n = min(_CHUNK, rows - start)
            buffer = stream.read(n * row_bytes)
            if len(buffer) != n * row_bytes:
                raise DataError(f"{archive.filename}: {member} is truncated")
            yield np.frombuffer(buffer, np.uint8).reshape(n, *shape[1:])


def _breakhis(src: Path) -> Plan:
    images, skipped = _scan(src)
    items = []
    for file in images:
        match = _BREAKHIS.fullmatch(file.stem)
        subtype = _SUBTYPES.get(match["code"]) if match else None
        if subtype is None or subtype[1] != match["kind"]:
            skipped.append(file.relative_to(src).as_posix())
            continue
        fields = {
            "label": subtype[0],
            "binary_label": "benign" if match["kind"] == "B" else "malignant",
            "patient_id": match["patient"],
            "magnification": f"{match['mag']}x",
        }
        items.append((file, f"{subtype[0]}/{file.name}", fields))
    _require(items, src, "SOB_<B|M>_<subtype>-<patient>-<magnification>-<seq>.png", skipped)
    return len(items), items, skipped


def _pcam(src: Path) -> Plan:
    pairs, total = [], 0
    for split in ("train", "valid", "test"):
        x_path, y_path = (src / f"{_PCAM.format(split=split, part=p)}.h5" for p in "xy")
        if not (x_path.is_file() or y_path.is_file()):
            continue
        try:
            with h5py.File(x_path, "r") as fx, h5py.File(y_path, "r") as fy:
                total += len(fx["x"])
                if len(fx["x"]) != len(fy["y"]) or fx["x"].dtype != np.uint8 or fx["x"].ndim != 4:
                    raise DataError(
                        f"{x_path}: expected x uint8 (N,96,96,3) as long as y (N,1,1,1)"
                    )
        except (OSError, KeyError) as exc:
            raise DataError(
                f"{src}: PCam {split} needs {x_path.name} with dataset x and "
                f"{y_path.name} with dataset y: {exc}"
            ) from None
        pairs.append((SPLIT_ALIASES[split], x_path, y_path))
    if not pairs:
        gz = sorted(src.glob("camelyonpatch_*.h5.gz")) if src.is_dir() else []
        if gz:
            raise DataError(
                f"{src} holds only gzipped PCam files ({gz[0].name}, ...): gunzip them first, "
                f"e.g. `gunzip {src}/*.h5.gz`"
            )
        _require([], src, f"{_PCAM.format(split='{train,valid,test}', part='{x,y}')}.h5", [])
    return total, _pcam_items(pairs), []


def _pcam_items(pairs: list[tuple[str, Path, Path]]) -> Iterator[Item]:
    for split, x_path, y_path in pairs:
        with h5py.File(x_path, "r") as fx, h5py.File(y_path, "r") as fy:
            x, y = fx["x"], fy["y"]  # (N, 96, 96, 3) uint8, (N, 1, 1, 1) 0/1
            for start in range(0, len(x), _CHUNK):  # h5py reads only this slab from disk
                images = x[start : start + _CHUNK]
                targets = np.asarray(y[start : start + _CHUNK]).reshape(len(images))
                if not np.isin(targets, (0, 1)).all():
                    raise DataError(f"{y_path}: labels must be 0 (normal) or 1 (tumor)")
                for index, (image, target) in enumerate(zip(images, targets, strict=True), start):
                    label = "tumor" if target == 1 else "normal"
                    rel = f"{label}/{split}_{index:07d}.png"
                    yield image, rel, {"label": label, "split": split}


def _scan(src: Path) -> tuple[list[Path], list[str]]:
    """Image files under ``src`` and the other (non-hidden) files, which will be reported."""
    if not src.is_dir():
        raise DataError(f"expected a folder of images, got the file {src}")
    images, others = [], []
    for file in sorted(src.rglob("*")):
        rel = file.relative_to(src)
        if file.is_file() and not any(part.startswith(".") for part in rel.parts):
            (images if file.suffix.lower() in IMAGE_SUFFIXES else others).append(rel.as_posix())
    return [src / rel for rel in images], others


def _require(items: Sequence, src: Path, looked_for: str, skipped: list[str]) -> None:
    if not items:
        also = f"; skipped {len(skipped)} other file(s), e.g. {skipped[:_SHOWN]}" if skipped else ""
        raise DataError(f"no images found in {src}: looked for {looked_for}{also}")


def _unique(rel: str, taken: set[str]) -> str:
    """``rel``, or ``rel`` with a numeric suffix if taken (case-insensitively, for macOS/Windows)."""
    path, candidate, n = PurePosixPath(rel), rel, 1
    while candidate.casefold() in taken:
        candidate = str(path.with_name(f"{path.stem}_{n}{path.suffix}"))
        n += 1
    taken.add(candidate.casefold())
    return candidate


def _safe(label: str) -> str:
    """A label as one folder name: labels come from user data and may hold slashes or dots."""
    name = re.sub(r'[/\\:*?"<>|\x00-\x1f]', "_", str(label)).strip()
    return f"_{name}" if not name or name.startswith(".") else name


def _summary(fmt: str, src: Path, table: pd.DataFrame, skipped: list[str]) -> dict:
    folders = sorted({p.split("/")[0] + "/" for p in table["path"]})  # class or split folders
    return {
        "format": fmt,
        "source": str(src.resolve()),
        "n_images": len(table),
        "n_skipped": len(skipped),
        "skipped": skipped[:100],
        "classes": table["label"].value_counts().to_dict(),
        "splits": table["split"].value_counts().to_dict() if "split" in table else {},
        "created": [*folders, "import.json", "manifest.csv"],  # top-level entries of out
    }


_PLANS = {"folder": _folder, "csv": _csv, "breakhis": _breakhis, "pcam": _pcam}
