"""Data: getting images in, checking them, and feeding them to models.

- :mod:`~histoflow.data.ingest`: read a dataset into one table with splits; import public
  formats (folder, CSV, MedMNIST, BreakHis, PCam) into the standard layout;
- :mod:`~histoflow.data.quality`: per-image QC, the Great Expectations data contract,
  perceptual hashing and near duplicates, cross-split dedupe, the validation report;
- :mod:`~histoflow.data.synthetic`: the synthetic H&E generator and the recipes' stand-ins;
- :mod:`~histoflow.data.manifest`: the splits and the per-image table stages pass on;
- :mod:`~histoflow.data.images`: opening and decoding image files (PIL only, no torch), with
  the pixel limit checked from the header first;
- :mod:`~histoflow.data.outdir`: what a dataset writer's ``--overwrite`` may replace;
- :mod:`~histoflow.data.transforms` and :mod:`~histoflow.data.datasets`: torch transforms,
  augmentations and the tile dataset.

Import the module you need: most pull in heavy libraries (torch, Great Expectations).
"""

__all__ = [
    "datasets",
    "images",
    "ingest",
    "manifest",
    "outdir",
    "quality",
    "synthetic",
    "transforms",
]
