"""import_dataset: the output folder's rules and bad arguments, for any format."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from histoflow.data.ingest import FORMATS, import_dataset
from histoflow.data.ingest.sources import DataError


def _image(path, value=128, size=8, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path, format=fmt)
    return path


def test_output_folder_rules_and_bad_arguments(tmp_path):
    src = tmp_path / "src"
    _image(src / "a" / "1.png")
    out = tmp_path / "out"
    (out / "b").mkdir(parents=True)
    (out / "old.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="overwrite"):
        import_dataset("folder", src, out, progress=False)
    with pytest.raises(FileExistsError, match="histoflow did not write it"):
        import_dataset("folder", src, out, overwrite=True, progress=False)
    assert (out / "old.txt").exists()
    out = tmp_path / "new"
    import_dataset("folder", src, out, progress=False)
    import_dataset("folder", src, out, overwrite=True, progress=False)
    names = sorted(p.name for p in out.iterdir())
    assert names == [".histoflow-dataset", "a", "import.json", "manifest.csv"]
    with pytest.raises(ValueError, match="folder, csv, medmnist, breakhis, pcam") as error:
        import_dataset("tfrecord", src, tmp_path / "x", progress=False)
    assert all(fmt in str(error.value) for fmt in FORMATS)
    with pytest.raises(ValueError, match="overlap"):
        import_dataset("folder", src, src / "imported", progress=False)
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    (empty / "a" / "readme.md").write_text("")
    with pytest.raises(DataError, match=r"no images found in .*empty: looked for <src>/<class>"):
        import_dataset("folder", empty, tmp_path / "x", progress=False)
