"""Data quality: per-image measurements, the data contract, duplicates and the report.

- :mod:`~histoflow.data.quality.features`: one image file's QC row (colour, stain, blur,
  tissue, perceptual hash), readable or not;
- :mod:`~histoflow.data.quality.table`: many files' rows, in worker processes, with a cache;
- :mod:`~histoflow.data.quality.hashing`: the perceptual hash and near-duplicate search;
- :mod:`~histoflow.data.quality.cases`: inferred cases (slides) when the data names no patient;
- :mod:`~histoflow.data.quality.contract`: the Great Expectations data contract on the table;
- :mod:`~histoflow.data.quality.dedupe`: which evaluation copies of training images to drop;
- :mod:`~histoflow.data.quality.report` (with :mod:`~histoflow.data.quality.figures`): the
  validation report.

Import the module you need: the contract imports Great Expectations, the report matplotlib.
"""

__all__ = ["cases", "contract", "dedupe", "features", "figures", "hashing", "report", "table"]
