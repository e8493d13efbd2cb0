"""The monitoring report runs real Evidently on small tables of features, PCs and predictions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from histoflow.config import MonitorConfig
from histoflow.monitoring.report import MonitorData, monitoring_report

# (mean, std) of each per-image QC feature: realistic tables without images; the scales differ
# on purpose.
FEATURES = {
    "brightness": (0.70, 0.05),
    "contrast": (0.20, 0.04),
    "blur": (150.0, 40.0),
    "tissue_fraction": (0.60, 0.15),
    "mean_r": (200.0, 12.0),
    "mean_g": (150.0, 15.0),
    "mean_b": (190.0, 10.0),
    "saturation": (0.30, 0.06),
    "od_hematoxylin": (0.45, 0.08),
    "od_eosin": (0.35, 0.07),
}
CLASSES = ["tumor", "stroma", "normal", "debris"]
STAIN = ["mean_b", "od_hematoxylin", "od_eosin", "saturation"]
N_PCS = 8


def _data(
    n: int,
    seed: int,
    *,
    stain_shift: float = 0.0,
    pc_shift: float = 0.0,
    class_p: tuple[float, ...] = (0.25, 0.25, 0.25, 0.25),
    confidence: tuple[float, float] = (8.0, 2.0),  # beta(a, b): mean 0.8
) -> MonitorData:
    rng = np.random.default_rng(seed)
    features = pd.DataFrame({c: rng.normal(m, s, n) for c, (m, s) in FEATURES.items()})
    for name in STAIN:
        features[name] += stain_shift * FEATURES[name][1]
    # PCA components: variance falls with the index, as after a real PCA.
    embeddings = pd.DataFrame({f"pc_{i}": rng.normal(0, 4 / (i + 1), n) for i in range(N_PCS)})
    embeddings.iloc[:, :4] += pc_shift
    predictions = pd.DataFrame(
        {"predicted": rng.choice(CLASSES, n, p=class_p), "confidence": rng.beta(*confidence, n)}
    )
    return MonitorData(features, embeddings, predictions)


def _run(reference, current, out_dir, cfg=None, **kwargs) -> dict:
    return monitoring_report(
        reference, current, cfg or MonitorConfig(), out_dir, classes=CLASSES, **kwargs
    )


def _drifted_columns(signal: dict) -> set[str]:
    return {name for name, column in signal["columns"].items() if column["drifted"]}


@pytest.fixture(scope="module")
def reference() -> MonitorData:
    return _data(400, seed=0)


@pytest.fixture(scope="module")
def run(reference, tmp_path_factory):
    """Run one scenario per name, once per module; returns (summary, out_dir)."""
    scenarios = {
        "same": {},
        "stain": {"stain_shift": 4.0},
        "pcs": {"pc_shift": 3.0},
        "classes": {"class_p": (0.8, 0.1, 0.05, 0.05)},
        "confidence": {"confidence": (3.0, 2.0)},  # mean 0.6
    }
    done: dict[str, tuple[dict, object]] = {}

    def get(name: str):
        if name not in done:
            out_dir = tmp_path_factory.mktemp(name)
            current = _data(200, seed=1, **scenarios[name])
            done[name] = (_run(reference, current, out_dir, extra={"batch": name}), out_dir)
        return done[name]

    return get


def test_same_distribution_has_no_drift(run):
    summary, _ = run("same")
    assert summary["drift_detected"] is False
    assert not any(signal["drifted"] for signal in summary["signals"].values())
    assert (summary["n_reference"], summary["n_current"]) == (400, 200)
    assert summary["performance"] is None
    assert summary["batch"] == "same"


def test_stain_shift_drifts_features(run):
    summary, _ = run("stain")
    features = summary["signals"]["features"]
    assert summary["drift_detected"] is True
    assert features["drifted"] is True
    assert set(STAIN) <= _drifted_columns(features)
    assert features["share"] >= features["threshold"] == MonitorConfig().drift_share
    assert features["columns"]["mean_b"]["method"] == "ks"
    assert features["columns"]["mean_b"]["score"] < 0.05  # KS p-value
    assert summary["signals"]["embeddings"]["drifted"] is False


def test_pc_offset_drifts_embeddings(run):
    summary, _ = run("pcs")
    embeddings = summary["signals"]["embeddings"]
    assert summary["drift_detected"] is True
    assert embeddings["drifted"] is True
    assert {f"pc_{i}" for i in range(4)} <= _drifted_columns(embeddings)
    assert embeddings["threshold"] == MonitorConfig().embedding_drift_share
    assert summary["signals"]["features"]["drifted"] is False


def test_changed_class_shares_drift_predictions(run):
    summary, _ = run("classes")
    predictions = summary["signals"]["predictions"]
    assert summary["drift_detected"] is True
    assert predictions["drifted"] is True
    assert predictions["class_test"]["drifted"] is True
    assert predictions["class_test"]["method"] == "chi2_contingency"
    assert predictions["confidence"]["drifted"] is False
    shares = predictions["class_shares"]
    assert list(shares["current"]) == CLASSES
    assert shares["current"]["tumor"] > 0.7
    assert sum(shares["reference"].values()) == pytest.approx(1.0)


def test_lower_confidence_drifts_predictions(run):
    summary, _ = run("confidence")
    predictions = summary["signals"]["predictions"]
    assert predictions["drifted"] is True
    assert predictions["confidence"]["drifted"] is True
    assert predictions["class_test"]["drifted"] is False
    assert predictions["confidence"]["current_mean"] < predictions["confidence"]["reference_mean"]
    assert predictions["confidence"]["current_mean"] == pytest.approx(0.6, abs=0.05)


def test_only_counted_signals_set_the_verdict(reference, tmp_path):
    cfg = MonitorConfig().model_copy(update={"signals": ("features",)})
    summary = _run(reference, _data(200, seed=1, pc_shift=3.0), tmp_path, cfg)
    assert summary["signals"]["embeddings"]["drifted"] is True
    assert summary["drift_detected"] is False
    assert summary["counted_signals"] == ["features"]
    assert "not counted" in (tmp_path / "drift.html").read_text(encoding="utf-8")


def test_distance_method_tests_classes_with_jensen_shannon(reference, tmp_path):
    cfg = MonitorConfig().model_copy(update={"method": "wasserstein", "stattest_threshold": 0.1})
    current = _data(200, seed=1, class_p=(0.8, 0.1, 0.05, 0.05))
    summary = _run(reference, current, tmp_path, cfg)
    class_test = summary["signals"]["predictions"]["class_test"]
    assert class_test["method"] == "jensenshannon"
    assert class_test["drifted"] is True
    assert class_test["score"] >= 0.1  # a distance, not a p-value
    assert summary["signals"]["features"]["columns"]["blur"]["method"] == "wasserstein"


def test_labels_give_performance(tmp_path):
    # 6 tumour (all right), 2 stroma (both called tumour), 2 normal (one right), 1 unlabelled;
    # no debris among the labels, though one image is predicted debris.
    truth = ["tumor"] * 6 + ["stroma"] * 2 + ["normal"] * 2 + [None]
    predicted = ["tumor"] * 6 + ["tumor"] * 2 + ["normal", "debris"] + ["normal"]
    current = _data(len(truth), seed=3)
    current = MonitorData(
        current.features,
        current.embeddings,
        current.predictions.assign(predicted=predicted),
        pd.Series(truth, index=range(100, 111)),  # rows align by position, not index
    )
    reference = _data(100, seed=4)
    reference = MonitorData(
        reference.features,
        reference.embeddings,
        reference.predictions,
        reference.predictions["predicted"],  # a perfect reference, shown beside the batch
    )
    performance = _run(reference, current, tmp_path)["performance"]
    assert performance["n"] == 10
    assert performance["accuracy"] == pytest.approx(0.7)
    assert performance["balanced_accuracy"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert performance["macro_recall"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert performance["per_class_recall"] == {
        "tumor": 1.0,
        "stroma": 0.0,
        "normal": 0.5,
        "debris": None,
    }
    page = (tmp_path / "drift.html").read_text(encoding="utf-8")
    assert "Performance on the labelled images" in page
    assert "accuracy 0.700" in page


@pytest.mark.parametrize(
    ("classes", "reference_classes"),
    [
        (CLASSES, CLASSES),  # a batch of two of the four classes, a four-class reference
        (["benign", "malignant"], ["benign", "malignant"]),  # a two-class model (BreakHis)
    ],
)
def test_two_label_batch_gets_a_performance_section(tmp_path, classes, reference_classes):
    # Evidently scores two-label data as binary with positive label 1 unless told: this failed
    # with KeyError: 1 (the batch recorded as failed) before the positive class was named.
    truth = [classes[0]] * 5 + [classes[1]] * 5
    predicted = [classes[0]] * 5 + [classes[1]] * 4 + [classes[0]]
    current = _data(len(truth), seed=5)
    current = MonitorData(
        current.features,
        current.embeddings,
        current.predictions.assign(predicted=predicted),
        pd.Series(truth),
    )
    reference = _data(40, seed=6)
    labels = pd.Series(np.resize(reference_classes, 40))
    reference = MonitorData(
        reference.features,
        reference.embeddings,
        reference.predictions.assign(predicted=labels),
        labels,
    )
    summary = monitoring_report(reference, current, MonitorConfig(), tmp_path, classes=classes)
    assert summary["performance"]["accuracy"] == pytest.approx(0.9)
    assert "Performance on the labelled images" in (tmp_path / "drift.html").read_text()


def test_all_nan_columns_are_dropped(reference, tmp_path):
    current = _data(200, seed=1)
    # Greyscale images have no stain densities; one other column has a few gaps.
    current.features[["od_hematoxylin", "od_eosin"]] = np.nan
    current.features.loc[:9, "blur"] = np.nan
    features = _run(reference, current, tmp_path)["signals"]["features"]
    assert features["dropped_columns"] == ["od_hematoxylin", "od_eosin"]
    assert set(features["columns"]) == set(FEATURES) - {"od_hematoxylin", "od_eosin"}
    assert features["drifted"] is False


def test_files_are_written(run):
    summary, out_dir = run("stain")
    assert json.loads((out_dir / "drift.json").read_text()) == summary
    page = (out_dir / "drift.html").read_text(encoding="utf-8")
    assert len(page) > 100_000  # Evidently's app and data are inlined: viewable offline
    head = page[page.index("<body>") : page.index('<div id="root_')]
    assert "DRIFT DETECTED" in head
    assert "features</b>: DRIFTED" in head
    assert "mean_b" in head
    for section in ("Features: data drift", "Embeddings:", "Predictions:"):
        assert section in page
    assert not list(out_dir.glob(".*.tmp"))  # no leftovers from the atomic writes


def test_no_drift_page_says_so(run):
    _, out_dir = run("same")
    assert "No drift detected" in (out_dir / "drift.html").read_text(encoding="utf-8")


def test_empty_current_is_an_error(reference, tmp_path):
    empty = _data(0, seed=1)
    with pytest.raises(ValueError, match="current set is empty"):
        _run(reference, empty, tmp_path)


def test_mismatched_columns_are_named(reference, tmp_path):
    current = _data(50, seed=1)
    current = MonitorData(
        current.features.rename(columns={"blur": "sharpness"}),
        current.embeddings,
        current.predictions,
    )
    with pytest.raises(ValueError, match=r"features columns differ.*'blur'.*'sharpness'"):
        _run(reference, current, tmp_path)
    current = _data(50, seed=1)
    current = MonitorData(current.features, current.embeddings.iloc[:, :6], current.predictions)
    with pytest.raises(ValueError, match=r"embeddings columns differ.*'pc_6', 'pc_7'"):
        _run(reference, current, tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: MonitorData(d.features.iloc[:10], d.embeddings, d.predictions), "one row per"),
        (
            lambda d: MonitorData(d.features, d.embeddings, d.predictions.assign(predicted="cat")),
            r"\['cat'\] are not among classes",
        ),
        (
            lambda d: MonitorData(
                d.features, d.embeddings, d.predictions.drop(columns="confidence")
            ),
            "lack column",
        ),
        (
            lambda d: MonitorData(d.features.assign(path="a.png"), d.embeddings, d.predictions),
            r"\['path'\] are not numeric",
        ),
    ],
)
def test_bad_current_is_an_error(reference, tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        _run(reference, change(_data(50, seed=1)), tmp_path)


def test_extra_cannot_overwrite_the_verdict(reference, tmp_path):
    with pytest.raises(ValueError, match="drift_detected"):
        _run(reference, _data(50, seed=1), tmp_path, extra={"drift_detected": False})
