"""How far the deployed model's probabilities and prediction sets can be trusted, on test.

- :func:`calibration_metrics`: ECE, Brier score and NLL of the raw and the temperature-scaled
  probabilities, with bootstrap CIs on the same resamples as the headline metrics.
- :func:`conformal_metrics`: the conformal sets' empirical coverage, overall and per class
  (Wilson 95% intervals: coverage is a binomial share), mean set size (bootstrap CI) and the
  shares of singleton and empty sets.
- :func:`write_calibration_plots`: the reliability diagram before and after, and per-class
  coverage against the 1 - alpha target beside the distribution of set sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from histoflow.metrics import BootstrapWeights, headline_metrics, weight_blocks

__all__ = ["calibration_metrics", "conformal_metrics", "write_calibration_plots"]

CALIBRATION = ("ece", "brier", "nll")  # all: lower is better
_EPS = 1e-12


def _per_sample(y: np.ndarray, probs: np.ndarray) -> dict[str, np.ndarray]:
    onehot = np.eye(probs.shape[1])[y]
    return {
        "brier": ((probs - onehot) ** 2).sum(1),  # multi-class Brier (Brier, 1950): 0 to 2
        "nll": -np.log(np.clip(probs[np.arange(len(y)), y], _EPS, None)),
    }


def _scores(y: np.ndarray, probs: np.ndarray, w, bins: int) -> dict[str, np.ndarray]:
    """{metric: (R,)} under each row of sample weights ``w`` (R, N), drawn a block at a time."""
    per_sample = _per_sample(y, probs)
    parts = []
    for block in weight_blocks(w):
        out = {"ece": headline_metrics(y, probs, block, bins=bins)["ece"]}
        for name, v in per_sample.items():
            out[name] = (block @ v) / block.sum(1)
        parts.append(out)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def calibration_metrics(
    y: np.ndarray,
    raw: np.ndarray,
    calibrated: np.ndarray,
    weights: np.ndarray | BootstrapWeights,
    *,
    temperature: float,
    bins: int = 15,
) -> dict:
    """ECE, Brier and NLL before and after calibration, each with a 95% bootstrap CI.

    Args:
        y: (N,) true class indices.
        raw: (N, C) probabilities at temperature 1.
        calibrated: (N, C) probabilities at the model's temperature.
        weights: (R, N) bootstrap resample counts (the ones the headline CIs use).
        temperature: the model's temperature, reported beside the metrics.
        bins: ECE confidence bins.
    """
    ones = np.ones((1, len(y)))
    out: dict = {"temperature": temperature}
    for name, probs in (("before", raw), ("after", calibrated)):
        point = _scores(y, probs, ones, bins)
        boot = _scores(y, probs, weights, bins)
        out[name] = {k: float(point[k][0]) for k in CALIBRATION}
        out[name]["ci"] = {k: _percentile_ci(boot[k]) for k in CALIBRATION}
    return out


def conformal_metrics(
    y: np.ndarray,
    in_set: np.ndarray,
    classes: Sequence[str],
    alpha: float,
    weights: np.ndarray | BootstrapWeights,
    *,
    empty: np.ndarray | None = None,
) -> dict:
    """Coverage overall and per class, set sizes, singleton and empty shares.

    Args:
        y: (N,) true class indices.
        in_set: (N, C) bool, the conformal sets.
        classes: the C class names.
        alpha: the miscoverage the sets were calibrated for (target coverage 1 - alpha).
        weights: (R, N) bootstrap resample counts, for the mean set size's CI.
        empty: (N,) bool, the rows conformal left empty before the top class was added
            (``empty_share``); None = the empty sets of ``in_set``.
    """
    covered = in_set[np.arange(len(y)), y]
    size = in_set.sum(1)
    per_class = {}
    for k, name in enumerate(classes):
        mine = y == k
        per_class[name] = {
            "coverage": float(covered[mine].mean()) if mine.any() else None,
            "ci": _wilson(int(covered[mine].sum()), int(mine.sum())),
            "n": int(mine.sum()),
            "mean_set_size": float(size[mine].mean()) if mine.any() else None,
        }
    return {
        "alpha": alpha,
        "target": 1 - alpha,
        "coverage": float(covered.mean()) if len(y) else None,
        "coverage_ci": _wilson(int(covered.sum()), len(y)),
        "mean_set_size": float(size.mean()) if len(y) else None,
        "mean_set_size_ci": _percentile_ci(
            np.concatenate([(b @ size) / b.sum(1) for b in weight_blocks(weights)])
        ),
        "singleton_share": float((size == 1).mean()) if len(y) else None,
        "empty_share": float((size == 0 if empty is None else empty).mean()) if len(y) else None,
        "set_size_counts": {str(s): int((size == s).sum()) for s in range(in_set.shape[1] + 1)},
        "per_class": per_class,
    }


def _wilson(k: int, n: int) -> list[float | None]:
    if n == 0:
        return [None, None]
    ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
    return [float(ci.low), float(ci.high)]


def _percentile_ci(values: np.ndarray) -> list[float | None]:
    finite = values[np.isfinite(values)]
    return [float(v) for v in np.percentile(finite, [2.5, 97.5])] if len(finite) else [None, None]


def write_calibration_plots(
    folder: Path,
    y: np.ndarray,
    raw: np.ndarray,
    calibrated: np.ndarray,
    conformal: dict | None,
    *,
    bins: int = 15,
) -> list[Path]:
    """``reliability_before_after.png`` and, with sets, ``conformal_coverage.png``, atomically.

    Returns:
        The PNG paths written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from histoflow.io import atomic_dir

    with atomic_dir(folder) as tmp:
        fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharey=True, constrained_layout=True)
        for ax, (title, probs) in zip(
            axes, (("before (T = 1)", raw), ("after temperature scaling", calibrated)), strict=True
        ):
            _reliability(ax, y, probs, bins, title)
        fig.savefig(tmp / "reliability_before_after.png", dpi=100)
        plt.close(fig)
        if conformal is not None:
            _coverage_figure(plt, conformal, tmp / "conformal_coverage.png")
        names = sorted(p.name for p in tmp.glob("*.png"))
    return [Path(folder) / n for n in names]


def _reliability(ax, y: np.ndarray, probs: np.ndarray, bins: int, title: str) -> None:
    conf = probs.max(1)
    correct = probs.argmax(1) == y
    bin_of = np.minimum((conf * bins).astype(int), bins - 1)
    counts = np.bincount(bin_of, minlength=bins)
    acc = np.bincount(bin_of, weights=correct, minlength=bins) / np.clip(counts, 1, None)
    centres = (np.arange(bins) + 0.5) / bins
    used = counts > 0
    ece = float(headline_metrics(y, probs, bins=bins)["ece"][0])
    ax.bar(centres[used], acc[used], width=1 / bins, edgecolor="black", alpha=0.7)
    ax.plot([0, 1], [0, 1], ls="--", color="grey")
    ax.set(title=f"{title}: ECE {ece:.3f}", xlabel="confidence", ylabel="accuracy", xlim=(0, 1))


def _coverage_figure(plt, conformal: dict, path: Path) -> None:
    names = list(conformal["per_class"])
    cov = [conformal["per_class"][c]["coverage"] or 0.0 for c in names]
    cis = [conformal["per_class"][c]["ci"] for c in names]
    err = np.array(
        [
            [c - (lo if lo is not None else c), (hi if hi is not None else c) - c]
            for c, (lo, hi) in zip(cov, cis, strict=True)
        ]
    ).T
    fig, (ax, hist_ax) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    ax.bar(names, cov, yerr=err, capsize=4, color="C0", alpha=0.8)
    ax.axhline(
        conformal["target"], ls="--", color="C3", label=f"1 - alpha = {conformal['target']:.2f}"
    )
    ax.set(title="coverage per class (95% Wilson CI)", ylabel="true class in set", ylim=(0, 1.05))
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8, loc="lower right")
    sizes = conformal["set_size_counts"]
    hist_ax.bar(list(sizes), list(sizes.values()), color="grey", edgecolor="black")
    hist_ax.set(
        title=f"set sizes (mean {conformal['mean_set_size']:.2f})",
        xlabel="classes in set",
        ylabel="images",
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)
