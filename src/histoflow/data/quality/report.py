"""The validation report: what the data contract found, as JSON and as one HTML page.

``report.html`` is self-contained (styles inline, images as base64 PNG), so it can be opened
from a CI artifact or an e-mail without the folder beside it. Sections, in order: status,
counts per class x split, failed checks (errors in red, then warnings in amber) with their
files, excluded images and why, QC histograms per split, a montage per class, and every
expectation GX ran.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from histoflow.data.images import DEFAULT_MAX_PIXELS
from histoflow.data.manifest import SPLITS
from histoflow.data.quality.contract import ContractResult, Violation
from histoflow.data.quality.figures import class_montage, feature_histograms
from histoflow.io import atomic_path, write_json

__all__ = ["write_validation_report"]

_LISTED = 20  # files listed per failed check; the rest are counted
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 .pass { color: #1a7f37; } h1 .fail { color: #c62828; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td.text { text-align: left; }
.check { border-left: 6px solid; padding: 0.3em 1em; margin: 0.8em 0; }
.error { border-color: #c62828; background: #fdecea; }
.warning { border-color: #f0a000; background: #fff6e0; }
.check h3 { margin: 0.2em 0; font-size: 1em; }
code, li { font-family: ui-monospace, monospace; font-size: 0.9em; word-break: break-all; }
figure { display: inline-block; margin: 0 1.5em 1em 0; vertical-align: top; }
"""


def write_validation_report(
    table: pd.DataFrame,
    result: ContractResult,
    out_dir: Path,
    *,
    data_root: Path,
    classes: Sequence[str],
    excluded: Sequence[str] = (),
    max_montage: int = 16,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Path:
    """Write ``results.json``, ``report.html`` and ``montage_<class>.png`` into ``out_dir``.

    Args:
        table: The per-image table the contract ran on (``path``, ``label``, ``split``,
            ``readable`` and the QC columns; absent QC columns are left out of the plots).
        result: What :func:`~histoflow.data.quality.contract.check_contract` returned for
            ``table``.
        out_dir: Report folder; created if needed. Each file is written atomically.
        data_root: Folder the table's paths are relative to; montage tiles load from here.
        classes: Labels in display order.
        excluded: Paths the caller leaves out of the manifest (e.g. blurred or blank images).
        max_montage: Most tiles per class montage.
        max_pixels: A montage leaves out an image with more pixels, undecoded.

    Returns:
        Path of ``report.html``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = _counts(table, classes)
    reasons = _reasons(result, excluded)
    write_json(
        out_dir / "results.json",
        {
            **result.to_dict(),
            "n_images": len(table),
            "counts": {label: row.to_dict() for label, row in counts.iterrows()},
            "excluded": [{"path": p, "checks": reasons[p]} for p in excluded],
        },
    )

    montages = {}
    for stale in out_dir.glob("montage_*.png"):  # classes dropped since the last run
        stale.unlink()
    for label in classes:
        png = class_montage(table, label, Path(data_root), max_montage, max_pixels=max_pixels)
        if png is not None:
            name = f"montage_{re.sub(r'[^A-Za-z0-9._-]+', '_', label)}.png"
            with atomic_path(out_dir / name) as tmp:
                tmp.write_bytes(png)
            montages[label] = png

    page = _page(table, result, counts, reasons, feature_histograms(table), montages, data_root)
    path = out_dir / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def _counts(table: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """Images per label (rows: ``classes``, then unknown labels) and split, with totals."""
    labels = table["label"].fillna("<missing>").astype(str)
    splits = table["split"].fillna("<missing>").astype(str)
    counts = pd.crosstab(labels, splits)
    rows = [*classes, *sorted(set(counts.index) - set(classes))]
    columns = [*SPLITS, *sorted(set(counts.columns) - set(SPLITS))]
    counts = counts.reindex(index=rows, columns=columns, fill_value=0).astype(int)
    counts["total"] = counts.sum(axis=1)
    return counts


def _reasons(result: ContractResult, excluded: Sequence[str]) -> dict[str, list[str]]:
    wanted = set(excluded)
    reasons: dict[str, list[str]] = {p: [] for p in excluded}
    for v in result.violations:
        for p in wanted.intersection(v.paths):
            if v.check not in reasons[p]:
                reasons[p].append(v.check)
    return reasons


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _page(
    table: pd.DataFrame,
    result: ContractResult,
    counts: pd.DataFrame,
    reasons: dict[str, list[str]],
    histograms: bytes | None,
    montages: dict[str, bytes],
    data_root: Path,
) -> str:
    e = html.escape
    status, css = ("PASSED", "pass") if result.success else ("FAILED", "fail")
    stats = result.statistics
    patients = table["patient_id"].nunique() if "patient_id" in table else 0
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>histoflow data validation: {status}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f'<h1>Data validation: <span class="{css}">{status}</span></h1>',
        f"<p>{len(table)} images, {patients} patients, data folder <code>{e(str(data_root))}</code>."
        f" {_plural(len(result.errors), 'error')}, {_plural(len(result.warnings), 'warning')};"
        f" {stats.get('successful_expectations', 0)} of {stats.get('evaluated_expectations', 0)}"
        " expectations met.</p>",
        "<h2>Images per class and split</h2>",
        _counts_table(counts),
        "<h2>Failed checks</h2>",
    ]
    violations = [*result.errors, *result.warnings]
    parts += [_violation(v) for v in violations] or ["<p>None: every check passed.</p>"]

    parts.append(f"<h2>Excluded images ({len(reasons)})</h2>")
    if reasons:
        rows = "".join(
            f'<tr><td class="text">{e(p)}</td><td class="text">{e(", ".join(c) or "-")}</td></tr>'
            for p, c in reasons.items()
        )
        parts.append(f"<table><tr><th>file</th><th>checks</th></tr>{rows}</table>")
    else:
        parts.append("<p>None: every image goes into the manifest.</p>")

    parts.append("<h2>Quality-control features per split</h2>")
    if histograms is not None:
        parts.append(_img(histograms, "QC feature histograms per split"))
    else:
        parts.append("<p>No QC features in the table.</p>")

    parts.append("<h2>Sample images per class</h2>")
    for label in counts.index:
        if label in montages:
            n = int(counts.loc[label, "total"])
            parts.append(
                f"<figure>{_img(montages[label], f'montage of {label}')}"
                f"<figcaption>{e(label)} ({n} images)</figcaption></figure>"
            )
    if not montages:
        parts.append("<p>No readable images to show.</p>")

    parts += ["<h2>Expectations run</h2>", _expectations_table(result), "</body></html>"]
    return "\n".join(parts)


def _counts_table(counts: pd.DataFrame) -> str:
    e = html.escape
    head = "".join(f"<th>{e(str(c))}</th>" for c in ["class", *counts.columns])
    totals = counts.sum(axis=0)
    body = [
        f'<tr><td class="text">{e(str(label))}</td>'
        + "".join(f"<td>{int(n)}</td>" for n in row)
        + "</tr>"
        for label, row in counts.iterrows()
    ]
    body.append(
        '<tr><th class="text">total</th>' + "".join(f"<th>{int(n)}</th>" for n in totals) + "</tr>"
    )
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _violation(v: Violation) -> str:
    e = html.escape
    files = "".join(f"<li>{e(p)}</li>" for p in v.paths[:_LISTED])
    more = f"<p>and {len(v.paths) - _LISTED} more</p>" if len(v.paths) > _LISTED else ""
    listed = f"<ul>{files}</ul>{more}" if v.paths else ""
    n = f" &middot; {_plural(len(v.paths), 'file')}" if v.paths else ""
    return (
        f'<div class="check {e(v.level)}"><h3>{e(v.level.upper())}: {e(v.check)}{n}</h3>'
        f"<p>{e(v.message)}</p><p><small>{e(v.expectation)} on <code>{e(v.column)}</code>"
        f"</small></p>{listed}</div>"
    )


def _expectations_table(result: ContractResult) -> str:
    e = html.escape
    rows = []
    for x in result.expectations:
        found = x["result"].get("unexpected_count", x["result"].get("observed_value"))
        if isinstance(found, float):
            found = f"{found:.3g}"
        elif found is None:
            found = ""
        rows.append(
            "<tr>"
            + "".join(
                f'<td class="text">{e(str(c))}</td>'
                for c in (x["check"], x["level"], x["expectation"], x["column"])
            )
            + f"<td>{'yes' if x['success'] else '<b>no</b>'}</td><td>{e(str(found))}</td></tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in ("check", "level", "expectation", "column", "met", "unexpected / observed")
    )
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
