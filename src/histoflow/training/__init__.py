"""Training wiring: Lightning modules, optimiser, fine-tuning, callbacks and fitting loops.

The encoder's loop is :mod:`.encoder`, the fusion classifiers' :mod:`.fusion`.

Networks come from :mod:`histoflow.models` and are passed in; nothing here builds one. Import
the submodule you need (they load torch and Lightning).
"""

__all__ = [
    "callbacks",
    "encoder",
    "finetune",
    "fusion",
    "loggers",
    "modules",
    "optim",
    "reproducibility",
]
