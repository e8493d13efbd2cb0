"""The evaluation outputs of a real `dvc repro`: report in Chromium, dvc metrics/plots, tables."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from histoflow.stages import evaluate

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.is_file(), f"{CHROMIUM} missing: run `make browser` (apt-get install chromium)"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


def _images(browser, html: Path) -> tuple[list[tuple[str, int]], str]:
    """(src, naturalWidth) of every <img> in the page and its frames, and the page's text."""
    page = browser.new_page()
    try:
        page.goto(html.as_uri(), wait_until="load")
        found = []
        for frame in page.frames:
            found += frame.eval_on_selector_all(
                "img", "els => els.map(e => [e.getAttribute('src').slice(0, 60), e.naturalWidth])"
            )
        return [tuple(x) for x in found], page.inner_text("body")
    finally:
        page.close()


def test_report_renders_and_every_image_loads(browser, reproduced_project):
    images, text = _images(browser, reproduced_project / evaluate.Outputs().report / "index.html")
    eval_json = json.loads((reproduced_project / evaluate.Outputs().metrics).read_text())
    n_classes = len(eval_json["per_class"])
    # 5 plots + one explanation panel per class in the report, plus the caption gallery's tiles.
    assert len(images) >= 5 + n_classes
    assert [src for src, width in images if width == 0] == []
    for heading in ("Ablations", "image_only", "text_only", "concat", "Cross-group", "Per class"):
        assert heading in text
    assert "Grad-CAM" in text and "Caption gallery" in text


def test_a_missing_image_is_caught(browser, reproduced_project, tmp_path):
    # The check above can fail: a report whose image file is gone shows naturalWidth 0.
    report = tmp_path / "report"
    shutil.copytree(reproduced_project / evaluate.Outputs().report, report)
    (report / "img/reliability.png").unlink()
    images, _ = _images(browser, report / "index.html")
    assert [src for src, width in images if width == 0] == ["img/reliability.png"]


def test_eval_json_has_cis_ablations_and_cross_group(reproduced_project):
    m = json.loads((reproduced_project / evaluate.Outputs().metrics).read_text())
    for key in ("macro_recall", "accuracy", "auroc", "average_precision", "ece"):
        low, high = m["ci"][key]
        assert low <= m[key] <= high, key
    assert set(m["ablations"]) == {"fusion", "image_only", "text_only", "concat"}
    for kind in ("image_only", "text_only", "concat"):
        cmp = m["ablations"][kind]["fusion_vs_this"]
        assert cmp["verdict"] in {"better", "worse", "no clear difference"}
        assert cmp["ci"][0] <= cmp["difference"] <= cmp["ci"][1]
    cg = m["cross_group"]
    assert cg["column"] == "magnification" and cg["train_on"] == "40x"
    assert set(cg["groups"]) == {"20x", "40x"} and cg["groups"]["40x"]["in_domain"]
    assert set(m["by_group"]) == {"site", "magnification"}
    out = evaluate.Outputs()
    summary = pd.read_csv(reproduced_project / out.summary)
    row = summary[(summary["model"] == "image_only") & (summary["metric"] == "macro_recall")]
    assert len(row) == 1 and row["class"].isna().all()  # headline rows have no class
    low, value, high = row[["ci_low", "value", "ci_high"]].iloc[0]
    assert low <= value <= high
    assert value == m["ablations"]["image_only"]["macro_recall"]
    breakdowns = pd.read_csv(reproduced_project / out.breakdowns)
    patients = breakdowns[breakdowns["column"] == "patient_id"]
    assert len(patients) > 1
    assert patients["n"].sum() == m["n"]  # every test image is in exactly one patient


def test_dvc_metrics_and_plots_show(reproduced_project, tmp_path, dvc):
    shown = json.loads(dvc(reproduced_project, "metrics", "show", "--json"))
    metrics = next(iter(shown.values()))["data"][str(evaluate.Outputs().metrics)]["data"]
    # dvc shows numbers only: the CI lists stay in evaluate.json, the ablation table shows.
    assert 0 <= metrics["macro_recall"] <= 1
    assert 0 <= metrics["ablations"]["image_only"]["macro_recall"] <= 1
    assert "macro_recall" in dvc(reproduced_project, "metrics", "show")
    out = tmp_path / "plots"
    dvc(reproduced_project, "plots", "show", "-o", str(out))
    page = (out / "index.html").read_text()
    for png in ("confusion_matrix", "roc_pr_curves", "reliability", "probability_histograms"):
        assert png in page, png
    assert "training_curves" in page
