"""Tiny pipeline settings: the tests' project and the benchmarks' quick mode share them.

Like timm's ``test_*`` models, they exist so a whole pipeline runs in seconds per stage.
"""

from __future__ import annotations

__all__ = ["TINY", "TINY_DATA"]

# Overrides that shrink the default pipeline to a few seconds per stage.
TINY = {
    "data": {"image_size": 32, "val_fraction": 0.25, "test_fraction": 0.25},
    "validate": {"min_per_class": 3},
    "train_encoder": {"backbone": "test_resnet", "epochs": 3, "batch_size": 16, "lr": 0.005},
    "embed": {"batch_size": 64, "token_grid": 2, "max_text_tokens": 32},
    "train_fusion": {
        "width": 32,
        "layers": 1,
        "heads": 2,
        "classifier_heads": 3,
        "epochs": 12,
        "batch_size": 16,
        "patience": 6,
        "lr": 0.003,
    },
    "evaluate": {"batch_size": 64, "bootstrap": 200},
}
# The synthetic dataset those params are sized for (histoflow.data.synthetic.generate kwargs).
TINY_DATA = {"classes": 3, "per_class": 16, "size": 32, "seed": 0, "patients_per_class": 8}
