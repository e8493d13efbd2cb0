"""Stage ``audit``: data forensics on ``embed``'s cached embeddings, before anything trains on them.

Three findings, each cheap because it reuses the pooled image embeddings:

- **label issues**: confident learning on out-of-fold probe probabilities
  (:mod:`histoflow.evaluation.label_audit`); the suspects are listed with given and likely label
  and a score, shown in a gallery, and checked at ``audit.label_issues`` (``exclude`` makes
  ``train_fusion`` drop them, by the list in ``outputs/audit/excluded.csv``);
- **cases**: tiles grouped into inferred cases from colour statistics, pHash neighbours and
  embedding neighbours (:mod:`histoflow.data.quality.cases`), with how sure each assignment is,
  and the inferred cases that the given splits cut in two;
- **leakage index**: a probe scored with random and with case-grouped CV
  (:mod:`histoflow.evaluation.leakage`); a large gap says a split by tile overstates the model.

It sits after ``embed`` (the first stage with embeddings) and before ``train_fusion`` (which
reads the exclusion list), so the pipeline stays one ``dvc.yaml`` and ``evaluate`` stays about
the model rather than the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from histoflow.config import Params
from histoflow.data.quality.cases import CASE_COLOUR_FEATURES
from histoflow.embeddings.store import FeatureStore
from histoflow.stages import write_metrics

__all__ = ["PARAMS", "AuditError", "Inputs", "Outputs", "run"]

PARAMS = ("audit", "data.max_pixels", "validate.near_duplicate_distance")
# The index columns the audit reads (the captions and other QC columns stay on disk).
_INDEX_COLUMNS = ("path", "split", "label", "phash", "patient_id", *CASE_COLOUR_FEATURES)


class AuditError(RuntimeError):
    """A finding checked at level ``error``."""


@dataclass(frozen=True)
class Inputs:
    """The feature store of ``embed``, and the images (for the gallery)."""

    data: Path = Path("data")
    features: Path = Path("outputs/embed")


@dataclass(frozen=True)
class Outputs:
    """The suspect labels, the inferred cases, the exclusion list, the report and metrics."""

    label_issues: Path = Path("outputs/audit/label_issues.csv")
    cases: Path = Path("outputs/audit/cases.csv")
    excluded: Path = Path("outputs/audit/excluded.csv")
    report: Path = Path("reports/audit")
    metrics: Path = Path("metrics/audit.json")


def run(cfg: Params, inputs: Inputs, outputs: Outputs) -> dict:
    """Audit labels, cases and leakage; write the findings; fail if one is checked at ``error``.

    Everything is written first, so a failing check still leaves its evidence on disk.
    """
    import numpy as np
    import pandas as pd

    from histoflow.data.manifest import class_names
    from histoflow.data.quality.cases import colour_block, infer_cases
    from histoflow.evaluation.label_audit import (
        EXCLUDED_COLUMNS,
        find_label_issues,
        out_of_fold_probabilities,
    )
    from histoflow.evaluation.leakage import leakage_index
    from histoflow.io import atomic_path

    a = cfg.audit
    # Only the pooled embeddings (N, D) are read, and only the rows each step asks for (the
    # case graph's projection, the probes' draws): the tokens and captions stay on disk.
    with FeatureStore(inputs.features, columns=_INDEX_COLUMNS) as store:
        index = store.index
        pooled = store.tensor("image_pooled")
        classes = class_names(index)
        y = np.array([classes.index(c) for c in index["label"]])

        phash = index["phash"].astype(str).tolist() if "phash" in index else None
        cases = infer_cases(
            [colour_block(index), pooled],
            phash=phash,
            phash_distance=cfg.validate.near_duplicate_distance,
            neighbours=a.case_neighbours,
            resolution=a.case_resolution,
            seed=a.seed,
        )
        cases.insert(0, "path", index["path"].to_numpy())
        cases.insert(1, "split", index["split"].to_numpy())
        groups, source = _groups(index, cases, a.cases)
        leaks = _split_cases(cases)

        issues = pd.DataFrame(columns=["path", "split", "given", "likely", "score"])
        if a.label_issues != "off":
            probabilities = out_of_fold_probabilities(
                pooled, y, folds=a.folds, seed=a.seed, max_train_rows=a.probe_max_rows
            )
            issues = find_label_issues(probabilities, y, index, classes)
        leakage, cases_found = None, len(np.unique(groups))
        if cases_found >= a.folds:  # grouped CV needs a case per fold at least
            leakage = leakage_index(
                pooled,
                y,
                groups,
                folds=a.folds,
                seed=a.seed,
                threshold=a.leakage_threshold,
                max_rows=a.leakage_max_rows,
            )
    share = len(issues) / max(len(index), 1)
    excluded = issues[["path"]].assign(reason="label_issue")
    if a.label_issues != "exclude":
        excluded = excluded.iloc[:0]
    sentence = (
        leakage.sentence()
        if leakage
        else f"not measured: {cases_found} cases, fewer than audit.folds {a.folds}"
    )

    for table, path in ((issues, outputs.label_issues), (cases, outputs.cases)):
        with atomic_path(path) as tmp:
            table.to_csv(tmp, index=False)
    with atomic_path(outputs.excluded) as tmp:
        excluded.reindex(columns=list(EXCLUDED_COLUMNS)).to_csv(tmp, index=False)
    metrics = {
        "tiles": len(index),
        "label_issues": len(issues),
        "label_issue_share": round(share, 6),
        "label_issue_check": a.label_issues,
        "excluded": len(excluded),
        "cases_source": source,
        "inferred_cases": int(cases["case_id"].nunique()),
        "case_confidence_mean": round(float(cases["case_confidence"].mean()), 4),
        "inferred_cases_across_splits": len(leaks),
        "leakage": leakage.to_dict() if leakage else None,
    }
    _write_report(outputs.report, metrics, sentence, issues, leaks, inputs.data, cfg, a)
    write_metrics(outputs.metrics, metrics, copy_in=outputs.report)
    print(f"audit: {len(issues)} suspect labels ({share:.1%}); leakage index {sentence}")
    _check(a, share, issues, leakage)
    return metrics


def _groups(index, cases, mode: str):
    """(N,) case ids for the leakage index, and where they came from."""
    from histoflow.data.quality.cases import case_groups

    if mode == "inferred":
        return cases["case_id"].to_numpy(), "inferred"
    groups, source = case_groups(index, cases)
    if mode == "patient" and source != "patient_id":
        raise AuditError(
            "audit.cases is 'patient' but the manifest has no patient_id for every tile: give "
            "one, or set audit.cases to auto or inferred"
        )
    return groups, source


def _split_cases(cases):
    """Inferred cases with tiles in more than one split: case_id, splits, tiles."""
    per_case = cases.groupby("case_id")["split"].agg(lambda s: sorted(set(s)))
    crossing = per_case[per_case.map(len) > 1]
    sizes = cases.groupby("case_id").size()
    return [
        {"case_id": c, "splits": splits, "tiles": int(sizes[c])} for c, splits in crossing.items()
    ]


def _check(a, share: float, issues, leakage) -> None:
    if a.label_issues == "error" and share > a.issue_tolerance:
        worst = ", ".join(issues["path"].head(5))
        raise AuditError(
            f"audit: {len(issues)} tiles ({share:.1%}, above audit.issue_tolerance "
            f"{a.issue_tolerance:.1%}) have labels a probe doubts (first: {worst}); see "
            "outputs/audit/label_issues.csv and reports/audit/gallery.html, fix the labels, or "
            "set audit.label_issues to exclude or warning"
        )
    if a.leakage == "error" and leakage is not None and leakage.likely_leakage:
        raise AuditError(
            f"audit: {leakage.sentence()}; split by patient or inferred case, or set "
            "audit.leakage to warning"
        )


def _write_report(folder, metrics, sentence, issues, leaks, data_root, cfg, a) -> None:
    from histoflow.captions.gallery import write_gallery
    from histoflow.io import atomic_dir

    with atomic_dir(folder) as tmp:
        lines = [
            "# Data audit",
            "",
            f"- Label issues: {metrics['label_issues']} of {metrics['tiles']} tiles "
            f"({metrics['label_issue_share']:.1%}), check level `{a.label_issues}`; "
            f"{metrics['excluded']} excluded from training.",
            f"- Cases: {metrics['inferred_cases']} inferred (mean confidence "
            f"{metrics['case_confidence_mean']:.2f}); the leakage index groups by "
            f"{metrics['cases_source']}.",
            f"- Leakage index: {sentence}.",
            f"- Inferred cases across the given splits: {len(leaks)}"
            + (
                ": "
                + ", ".join(
                    f"{c['case_id']} ({'/'.join(c['splits'])}, {c['tiles']} tiles)"
                    for c in leaks[:20]
                )
                if leaks
                else ""
            )
            + (" ..." if len(leaks) > 20 else ""),
            "",
            "## Most doubtful labels",
            "",
            *_markdown_table(issues.head(max(a.gallery, 20))),
        ]
        (tmp / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
        shown = issues.head(a.gallery).assign(
            label=lambda t: t["given"],
            caption=lambda t: (
                "given "
                + t["given"]
                + ", likely "
                + t["likely"]
                + ", score "
                + t["score"].map("{:.3g}".format)
            ),
        )
        if len(shown):
            write_gallery(
                shown,
                tmp,
                data_root=Path(data_root),
                per_class=a.gallery,
                max_pixels=cfg.data.max_pixels,
            )


def _markdown_table(table) -> list[str]:
    if not len(table):
        return ["(none)"]
    rows = [" | ".join(map(str, table.columns)), " | ".join("---" for _ in table.columns)]
    rows += [
        " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row)
        for row in table.itertuples(index=False)
    ]
    return [f"| {r} |" for r in rows]
