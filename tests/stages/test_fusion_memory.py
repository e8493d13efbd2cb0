"""``train_fusion`` reads the feature store in batches: its peak memory does not grow with N."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd

from histoflow.embeddings.store import FEATURES_FILE, INDEX_FILE, SafetensorsStream

# Wide caption tokens (64 x 1536 float16: 192 KiB a row, four real rows' worth) keep the
# datasets small and quick to train while holding them in memory (the float16 store plus the
# float32 training copy, ~480 KiB a row) would add ~420 MiB between the two sizes; reading
# them in batches adds nothing.
_TEXT, _IMAGE = (64, 1536), (4, 16)
_SMALL, _LARGE = 150, 1050
_VAL = 30
_BOUND_MIB = 128  # generous: allocator noise (84 MiB seen once in a full run), index, labels

_CHILD = """
import json, resource, sys
from pathlib import Path
from histoflow.config import parse_params
from histoflow.stages import train_fusion
root = Path(sys.argv[1])
cfg = parse_params(json.loads((root / "params.json").read_text()))
out = root / "out"
(root / "excluded.csv").write_text("path,reason\\n")  # the audit excluded nothing
train_fusion.run(
    cfg,
    train_fusion.Inputs(features=root / "features", excluded=root / "excluded.csv"),
    train_fusion.Outputs(
        model=out / "model", history=out / "history.csv", ablations=out / "ablations",
        metrics=out / "metrics.json",
    ),
)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)  # peak resident MiB
"""


def _feature_store(folder, n: int) -> None:
    """A store laid out as ``embed`` writes it, with ``n`` random rows in three classes."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    layout = {
        "image_pooled": (np.float16, (n, _IMAGE[1])),
        "image_tokens": (np.float16, (n, *_IMAGE)),
        "text_tokens": (np.float16, (n, *_TEXT)),
        "text_mask": (np.bool_, (n, _TEXT[0])),
    }
    meta = {"text_model": "test", "max_text_tokens": _TEXT[0], "token_grid": 2}
    meta["captioner"] = json.dumps({"backend": "morphology"})
    with SafetensorsStream(folder / FEATURES_FILE, layout, meta) as out:
        for s in range(0, n, 200):
            m = min(200, n - s)
            for name, (dtype, shape) in layout.items():
                rows = rng.random((m, *shape[1:])) > 0.2 if dtype is np.bool_ else None
                rows = rng.normal(size=(m, *shape[1:])) if rows is None else rows
                out.write(name, s, rows.astype(dtype))
    # The validation rows are scored in one batch of up to 256: a fixed number of them keeps
    # that batch the same size, so only the rows that stream (train, test) grow.
    split = np.array(["train", "train", "test"])[np.arange(n) % 3]
    split[:_VAL] = "val"
    pd.DataFrame(
        {
            "path": [f"t{i}.png" for i in range(n)],
            "label": [f"c{i % 3}" for i in range(n)],
            "split": split,
            "patient_id": [f"P{i // 5}" for i in range(n)],  # 5 tiles a patient
        }
    ).to_csv(folder / INDEX_FILE, index=False)


def _peak_mib(root, n: int, params: dict) -> int:
    root.mkdir()
    _feature_store(root / "features", n)
    (root / "params.json").write_text(json.dumps(params))
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(root)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return int(proc.stdout.split()[-1])


def test_train_fusion_peak_memory_does_not_grow_with_the_store(tmp_path, tiny_params_dict):
    params = tiny_params_dict(
        train_fusion={"epochs": 1, "batch_size": 64, "ablations": [], "patience": 1}
    )
    small = _peak_mib(tmp_path / "small", _SMALL, params)
    large = _peak_mib(tmp_path / "large", _LARGE, params)
    assert large - small < _BOUND_MIB, f"peak {small} MiB at {_SMALL} rows, {large} at {_LARGE}"
