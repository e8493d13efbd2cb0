"""Plots a person looks at, saved as PNG.

Confusion matrices, ROC and PR curves, reliability, probability histograms, training curves.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn import metrics as skm

from histoflow.io import atomic_dir, atomic_path

__all__ = [
    "PLOT_ORDER",
    "plot_confusion_matrix",
    "plot_probability_histograms",
    "plot_reliability",
    "plot_roc_pr",
    "plot_training_curves",
    "write_plots",
]


# The report shows these first, then the rest by name.
PLOT_ORDER = ("confusion_matrix.png", "roc_pr_curves.png", "reliability.png")


def write_plots(
    folder: Path,
    confusion_matrix: Sequence[Sequence[int]],
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    histories: dict[str, pd.DataFrame],
    *,
    bins: int = 15,
) -> list[Path]:
    """Write every evaluation plot into a fresh ``folder``, swapped in once all are written.

    Args:
        folder: the plots folder.
        confusion_matrix: (C, C) counts, rows = true class.
        y_true: (N,) class indices.
        probs: (N, C) probabilities.
        classes: the C class names.
        histories: training curves by model name (epoch, losses, val macro recall); none = no
            training-curve plot.
        bins: confidence bins of the reliability diagram.

    Returns:
        The PNG paths, in :data:`PLOT_ORDER` first.
    """
    with atomic_dir(folder) as tmp:
        plot_confusion_matrix(confusion_matrix, classes, tmp / "confusion_matrix.png")
        plot_roc_pr(y_true, probs, classes, tmp / "roc_pr_curves.png")
        plot_reliability(y_true, probs, tmp / "reliability.png", bins=bins)
        plot_probability_histograms(y_true, probs, classes, tmp / "probability_histograms.png")
        if histories:
            plot_training_curves(histories, tmp / "training_curves.png")
        names = sorted(f.name for f in tmp.glob("*.png"))
    names.sort(key=lambda n: (PLOT_ORDER.index(n) if n in PLOT_ORDER else len(PLOT_ORDER), n))
    return [Path(folder) / n for n in names]


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], classes: Sequence[str], path: Path
) -> None:
    """Counts and row-normalised (recall) confusion matrices side by side."""
    counts = np.asarray(matrix, dtype=float)
    norm = counts / np.clip(counts.sum(1, keepdims=True), 1, None)
    size = 3 + 0.5 * len(classes)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size), constrained_layout=True)
    for ax, data, title, fmt in (
        (axes[0], counts, "counts", "{:.0f}"),
        (axes[1], norm, "normalised by true class", "{:.2f}"),
    ):
        ax.imshow(data, cmap="Blues", vmin=0)
        ax.set(
            title=title,
            xlabel="predicted",
            ylabel="true",
            xticks=range(len(classes)),
            yticks=range(len(classes)),
        )
        ax.set_xticklabels(classes, rotation=45, ha="right")
        ax.set_yticklabels(classes)
        top = data.max() or 1
        for i, j in np.ndindex(data.shape):
            ax.text(
                j,
                i,
                fmt.format(data[i, j]),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if data[i, j] > top / 2 else "black",
            )
    _save(fig, path)


def plot_training_curves(histories: dict[str, pd.DataFrame], path: Path) -> None:
    """Loss and validation macro recall per epoch, one column per trained model."""
    fig, axes = plt.subplots(
        2, len(histories), figsize=(4.5 * len(histories), 6), squeeze=False, constrained_layout=True
    )
    for col, (name, hist) in enumerate(histories.items()):
        loss_ax, metric_ax = axes[0, col], axes[1, col]
        for key in ("train_loss", "val_loss"):
            if key in hist:
                loss_ax.plot(hist["epoch"], hist[key], marker=".", label=key)
        if "val_macro_recall" in hist:
            metric_ax.plot(hist["epoch"], hist["val_macro_recall"], marker=".", color="C2")
        loss_ax.set(title=name, ylabel="loss")
        loss_ax.legend()
        metric_ax.set(xlabel="epoch", ylabel="val macro recall", ylim=(0, 1.02))
    _save(fig, path)


def plot_roc_pr(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str], path: Path) -> None:
    """One-vs-rest ROC (left) and precision-recall (right) curves, one line per class."""
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(10, 4.5), constrained_layout=True)
    for k, name in enumerate(classes):
        positive = y_true == k
        if positive.all() or not positive.any():
            continue  # a curve needs both positives and negatives
        fpr, tpr, _ = skm.roc_curve(positive, probs[:, k])
        precision, recall, _ = skm.precision_recall_curve(positive, probs[:, k])
        auc = skm.auc(fpr, tpr)
        ap = skm.average_precision_score(positive, probs[:, k])
        roc_ax.plot(fpr, tpr, label=f"{name} (AUROC {auc:.2f})")
        pr_ax.step(recall, precision, where="post", label=f"{name} (AP {ap:.2f})")
    roc_ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    roc_ax.set(title="ROC, one vs rest", xlabel="false positive rate", ylabel="true positive rate")
    pr_ax.set(title="precision-recall", xlabel="recall", ylabel="precision", ylim=(0, 1.02))
    for ax in (roc_ax, pr_ax):
        ax.legend(fontsize=7, loc="lower right" if ax is roc_ax else "lower left")
    _save(fig, path)


def plot_reliability(y_true: np.ndarray, probs: np.ndarray, path: Path, bins: int = 15) -> None:
    """Reliability diagram: accuracy against confidence per bin, with the bins' sample counts."""
    conf = probs.max(1)
    correct = probs.argmax(1) == y_true
    bin_of = np.minimum((conf * bins).astype(int), bins - 1)
    counts = np.bincount(bin_of, minlength=bins)
    acc = np.bincount(bin_of, weights=correct, minlength=bins) / np.clip(counts, 1, None)
    mean_conf = np.bincount(bin_of, weights=conf, minlength=bins) / np.clip(counts, 1, None)
    centres = (np.arange(bins) + 0.5) / bins
    fig, (ax, hist_ax) = plt.subplots(
        2, 1, figsize=(5, 6), sharex=True, height_ratios=(3, 1), constrained_layout=True
    )
    used = counts > 0
    ax.bar(centres[used], acc[used], width=1 / bins, edgecolor="black", alpha=0.7, label="accuracy")
    ax.plot(mean_conf[used], acc[used], "o", color="C3", ms=4, label="mean confidence")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="perfect calibration")
    ax.set(title="reliability", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="upper left")
    hist_ax.bar(centres, counts, width=1 / bins, color="grey", edgecolor="black")
    hist_ax.set(xlabel="confidence (max probability)", ylabel="images")
    _save(fig, path)


def plot_probability_histograms(
    y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str], path: Path
) -> None:
    """Per class: P(class) for images of that class against images of the other classes."""
    cols = min(len(classes), 3)
    rows = -(-len(classes) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False, constrained_layout=True
    )
    edges = np.linspace(0, 1, 21)
    for k, name in enumerate(classes):
        ax = axes.flat[k]
        ax.hist(probs[y_true == k, k], bins=edges, alpha=0.7, label=f"true {name}", color="C0")
        ax.hist(probs[y_true != k, k], bins=edges, alpha=0.5, label="other classes", color="C1")
        ax.set(title=f"P({name})", xlabel="probability", ylabel="images")
        ax.legend(fontsize=7)
    for ax in axes.flat[len(classes) :]:
        ax.axis("off")
    _save(fig, path)


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
