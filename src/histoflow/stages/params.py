"""Stage ``params``: the whole ``params.yaml`` checked before any stage that reads it runs.

DVC deletes a stage's outputs before it runs the stage's command, so a typo'd key or a negative
``lr`` used to cost the outputs (and the uncached metrics) of the first stage whose section
changed, before that stage even read its params. Every stage depends on this one's output and
DVC runs it first: a bad file fails here, naming the key, with nothing deleted. What it writes
does not change while the file stays valid, so DVC sees the other stages' dependency unchanged
and editing one section still re-runs only the stages that read that section.

Beyond the typed models (:func:`histoflow.config.load_params`, run by ``histoflow stage``), it
checks what needs a library to know: that the encoder's timm names exist. That means importing
torch and timm (tens of seconds on a busy machine), so names found once are remembered, with
timm's version, in ``outputs/.params_names.json`` (beside DVC's outputs): an edit elsewhere in
the file costs only the parse.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from histoflow.config import Params
from histoflow.io import write_json

__all__ = ["PARAMS", "Inputs", "Outputs", "run"]

PARAMS = ()  # reads the whole file (a file dep in dvc.yaml), not a section


@dataclass(frozen=True)
class Inputs:
    """The params file itself."""

    params: Path = Path("params.yaml")


@dataclass(frozen=True)
class Outputs:
    """A record that the params are valid: the same bytes for every valid file."""

    checked: Path = Path("outputs/params/checked.json")


def run(cfg: Params, inputs: Inputs, outputs: Outputs) -> dict:
    """Check what the typed models cannot (timm names), then write the unchanging record.

    Raises:
        ValueError: naming the key, e.g. ``train_encoder.backbone: unknown model 'resnet1'``.
    """
    p = cfg.train_encoder
    names = {"timm": version("timm"), "backbone": p.backbone, "branches": list(p.branches)}
    names |= {"source": p.source}
    known = outputs.checked.parent.parent / ".params_names.json"
    if not known.is_file() or json.loads(known.read_text()) != names:
        from histoflow.models.encoder import check_encoder_names

        check_encoder_names(p)
        write_json(known, names)
    write_json(outputs.checked, {"params": "valid"})
    return {}
