"""Training wiring: Lightning modules, optimiser, fine-tuning, callbacks and fitting loops.

The encoder's loop is :mod:`.encoder`, the fusion classifiers' :mod:`.fusion`.

Networks come from :mod:`histoflow.models` and are passed in (the fusion loops take the
factory, and call it after seeding, so initial weights follow the seed); nothing here picks an
architecture. Import the submodule you need (they load torch and Lightning).
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
