"""The ``audit`` section: label noise, inferred cases and the leakage index on cached embeddings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from histoflow.config._base import Section

__all__ = ["AuditConfig"]


class AuditConfig(Section):
    """Data forensics after ``embed`` (stage ``audit``)."""

    folds: int = Field(5, ge=2, le=20)  # out-of-fold probabilities, and both leakage-index CVs
    seed: int = 0  # fold assignment and Louvain's order
    # Suspect labels: off, warning (report), error (fail the stage) or exclude (train_fusion
    # drops them from its train and val rows; the list is recorded in outputs/audit).
    label_issues: Literal["off", "warning", "error", "exclude"] = "warning"
    issue_tolerance: float = Field(0.0, ge=0, le=1)  # share of tiles that may be suspect unflagged
    # Cases for the leakage index and grouped CV: auto = patient_id when the data has it, else
    # inferred; patient = patient_id (required); inferred = always inferred.
    cases: Literal["auto", "patient", "inferred"] = "auto"
    case_neighbours: int = Field(5, ge=1, le=100)  # k of the kNN graph; below tiles per slide
    case_resolution: float = Field(1.0, gt=0)  # Louvain resolution; higher = more, smaller cases
    leakage_threshold: float = Field(0.1, ge=0, le=1)  # random minus grouped CV above this = leak
    leakage: Literal["off", "warning", "error"] = "warning"  # level of the leakage finding
    # Above this many tiles the leakage index scores whole cases drawn up to it (its kNN probe
    # is quadratic in the tiles: 100,000 tiles took most of the stage's time). 10,000, as
    # evaluate's probes (evaluate.probes.max_rows): past it the stage's memory is flat.
    leakage_max_rows: int = Field(10_000, ge=100)
    # Each fold of the label audit fits its probe on at most this many training tiles (a
    # stratified draw; every tile is still scored): the audit's memory stays flat in the tiles.
    # At 20,000 the draws alone added ~140 MiB between 7,680 and 30,720 tiles (a linear probe
    # on a few hundred dims is well determined by 10,000 rows).
    probe_max_rows: int = Field(10_000, ge=100)
    gallery: int = Field(24, ge=0)  # suspect tiles shown in reports/audit/gallery.html
