"""Training wiring: Lightning modules, optimiser and schedule, fine-tuning, callbacks, and the
fitting loops of the encoder (:mod:`.encoder`) and of the fusion classifiers (:mod:`.fusion`).

Networks come from :mod:`histoflow.models` and are passed in; nothing here builds one. Import
the submodule you need (they load torch and Lightning).
"""

__all__ = ["callbacks", "encoder", "finetune", "fusion", "loggers", "modules", "optim"]
