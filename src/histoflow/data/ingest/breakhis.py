"""Import BreakHis: ``SOB_<B|M>_<subtype>-<patient>-<magnification>-<seq>.png`` files.

The label is the tumour subtype; the file name also gives ``binary_label`` (benign or
malignant), ``patient_id`` and ``magnification`` (40x, 100x, 200x, 400x). Files whose name does
not parse, or whose subtype contradicts its benign/malignant letter, are skipped and reported.
"""

from __future__ import annotations

import re
from pathlib import Path

from histoflow.data.ingest._common import Plan, require_images, scan

__all__ = ["plan"]

_NAME = re.compile(
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


def plan(src: Path) -> Plan:
    """The BreakHis images anywhere under ``src``, each under its subtype's folder.

    Raises:
        DataError: no file under ``src`` has a BreakHis name.
    """
    images, skipped = scan(src)
    items = []
    for file in images:
        match = _NAME.fullmatch(file.stem)
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
    require_images(items, src, "SOB_<B|M>_<subtype>-<patient>-<magnification>-<seq>.png", skipped)
    return len(items), items, skipped
