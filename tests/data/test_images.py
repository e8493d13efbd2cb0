"""Opening images: the pixel limit is read from the header, before anything is decoded."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from histoflow.data.images import ImageTooLarge, decode_rgb, load_rgb, open_image
from histoflow.data.quality.features import image_features

# Peak memory each way of opening the 144 M pixel bomb may add: decoding it would take at
# least 144 MiB (Pillow keeps 1-bit images a byte per pixel), 432 MiB more as RGB.
_MAX_GROWTH_MIB = 64

_MEASURE = """
import base64, json, resource, sys
from pathlib import Path
from histoflow.data.images import ImageTooLarge, decode_rgb, load_rgb
from histoflow.data.quality.features import image_features

def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB

path = Path(sys.argv[1])
before, errors = peak_mib(), []
for name, load in [
    ("load_rgb", lambda: load_rgb(path)),  # captions, datasets (embed), predict, explain
    ("decode_rgb", lambda: decode_rgb(path.read_bytes(), name="row 0")),  # the pyfunc
]:
    try:
        load()
    except ImageTooLarge as exc:
        errors.append(str(exc))
row = image_features(path)  # validate's QC, monitoring's features
print(json.dumps({"growth_mib": peak_mib() - before, "errors": errors, "qc": row["error"]}))
"""


def test_a_decompression_bomb_is_refused_from_its_header(bomb_png):
    assert bomb_png.stat().st_size < 20_000
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(bomb_png)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["growth_mib"] < _MAX_GROWTH_MIB, result
    for message in [*result["errors"], result["qc"]]:
        assert "12000 x 12000 = 144,000,000 pixels" in message, message
        assert "limit of 16,777,216 (data.max_pixels)" in message
    assert str(bomb_png) in result["errors"][0] and result["errors"][1].startswith("row 0:")


def test_the_limit_is_the_callers_and_the_qc_row_keeps_the_header(tmp_path):
    path = tmp_path / "tile.png"
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(path)
    assert load_rgb(path, max_pixels=1200).size == (40, 30)
    with pytest.raises(ImageTooLarge, match=r"tile.png: image is 40 x 30 = 1,200 pixels") as err:
        load_rgb(path, max_pixels=1199)
    assert (err.value.size, err.value.max_pixels) == ((40, 30), 1199)
    with pytest.raises(ImageTooLarge, match="^row 3: "):
        decode_rgb(path.read_bytes(), max_pixels=100, name="row 3")
    with open_image(path, max_pixels=1200) as img:
        assert img.mode == "RGB"

    row = image_features(path, max_pixels=1199)
    assert (row["readable"], row["width"], row["height"]) == (False, 40, 30)
    assert "more than the limit of 1,199" in row["error"]
    assert image_features(path, max_pixels=1200)["readable"]
