"""Plots a person looks at: confusion matrices and training curves, saved as PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from histoflow.io import atomic_path

__all__ = ["plot_confusion_matrix", "plot_training_curves"]


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


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
