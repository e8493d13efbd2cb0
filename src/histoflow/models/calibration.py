"""Post-hoc calibration of a trained classifier: temperature scaling and conformal prediction sets.

Both are fitted by ``train_fusion`` on rows the network's weights never trained on and stored
in the model folder's ``model.json`` (``calibration``), so every inference path applies the same
ones: :func:`histoflow.inference.fuse` divides the logits by the temperature, and
:meth:`Calibration.prediction_sets` turns the calibrated probabilities into sets.

- **Temperature scaling** (Guo et al., 2017): one scalar ``T`` divides every head's logits
  before the softmax, fitted by minimising the NLL of the head-averaged probabilities on the
  validation rows. One parameter cannot overfit a few hundred rows and it never changes the
  predicted class of a single head, unlike vector/matrix scaling or isotonic regression.
- **Split conformal, class-conditional (Mondrian)**: the non-conformity score of a row is
  ``1 - p(true class)`` (crepes' ``hinge``) on a calibration split the training never saw;
  class ``c`` enters a test row's set when its p-value among the calibration scores *of class
  c* exceeds ``alpha``. Coverage is then at least ``1 - alpha`` for every class separately, rare
  ones included (Vovk, 2012), where a pooled quantile would only promise it on average.
  `crepes <https://github.com/henrikbostrom/crepes>`_ computes the p-values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import logsumexp

__all__ = ["Calibration", "fit_conformal", "fit_temperature", "set_labels"]

# Separates class names in the ``prediction_set`` column (CSV, pyfunc, serving).
SET_SEPARATOR = "|"
_T_RANGE = (0.01, 100.0)


@dataclass(frozen=True)
class Calibration:
    """A model's temperature and its conformal calibration scores, as stored in ``model.json``.

    Attributes:
        temperature: divides the logits before the softmax; 1.0 = uncalibrated.
        alpha: the miscoverage the sets are built for (0.1: each class's true tiles fall in
            their set at least 90% of the time); None = no conformal calibration.
        scores: non-conformity scores ``1 - p(true class)`` of the calibration rows.
        labels: their true class indices.
    """

    temperature: float = 1.0
    alpha: float | None = None
    scores: tuple[float, ...] = ()
    labels: tuple[int, ...] = ()

    @classmethod
    def from_meta(cls, meta: dict) -> Calibration:
        """The calibration in a model folder's description; none (T = 1, no sets) if absent."""
        c = meta.get("calibration") or {}
        conformal = c.get("conformal") or {}
        return cls(
            temperature=float(c.get("temperature", 1.0)),
            alpha=conformal.get("alpha"),
            scores=tuple(float(s) for s in conformal.get("scores", ())),
            labels=tuple(int(y) for y in conformal.get("labels", ())),
        )

    def to_dict(self) -> dict:
        """``model.json``'s ``calibration`` entry."""
        out: dict = {"method": "temperature", "temperature": self.temperature}
        if self.alpha is not None:
            out["conformal"] = {
                "method": "split, class-conditional (Mondrian), crepes",
                "score": "1 - p(true class)",
                "alpha": self.alpha,
                "n": len(self.scores),
                "scores": [round(s, 6) for s in self.scores],
                "labels": list(self.labels),
            }
        return out

    @property
    def has_sets(self) -> bool:
        """Whether conformal calibration was fitted (else every set is every class)."""
        return self.alpha is not None

    def prediction_sets(self, probs: np.ndarray, *, nonempty: bool = True) -> np.ndarray:
        """(N, C) calibrated probabilities -> (N, C) bool: which classes are in each row's set.

        Without conformal calibration every class is in every set (no guarantee is claimed).
        A class with no calibration rows has p-value 1 and so is always in the set.

        Args:
            probs: (N, C) calibrated probabilities.
            nonempty: the top class is always in the set. Class-conditional sets can otherwise
                leave it out (a tile more typical of class B's calibration tiles than of A's,
                though A scores higher) or be empty (every class rejected: a tile unlike any
                class's calibration tiles). Adding a class can only raise coverage, so the
                guarantee stands, and a set always holds the label shown beside it;
                ``evaluate`` reports how often conformal alone gave an empty set
                (``empty_share``).
        """
        from crepes import ConformalClassifier

        n, c = probs.shape
        if not self.has_sets or n == 0:
            return np.ones((n, c), bool)
        cc = ConformalClassifier().fit(np.asarray(self.scores), bins=np.asarray(self.labels))
        alphas = 1.0 - probs  # crepes.extras.hinge: the score of each candidate class
        # Class-conditional: candidate class k is judged among the calibration rows of class k
        # (what crepes' WrapClassifier does with class_cond=True). Unsmoothed p-values: the
        # classic, deterministic split-conformal sets, coverage >= 1 - alpha.
        columns = [
            cc.predict_set(alphas, bins=np.full(n, k), confidence=1 - self.alpha, smoothing=False)[
                :, k
            ]
            for k in range(c)
        ]
        in_set = np.stack(columns, 1).astype(bool)
        if nonempty:
            in_set[np.arange(n), probs.argmax(1)] = True
        return in_set


def set_labels(in_set: np.ndarray, classes: list[str]) -> list[str]:
    """(N, C) set membership -> one ``a|b`` string per row (classes in model order)."""
    return [SET_SEPARATOR.join(c for c, m in zip(classes, row, strict=True) if m) for row in in_set]


def fit_temperature(logits: torch.Tensor, y: torch.Tensor) -> float:
    """The temperature minimising the NLL of the head-averaged probabilities.

    A bounded one-dimensional search over log T (scipy's ``minimize_scalar``): the NLL of
    one temperature is cheap, and a bracket keeps T finite when the labels are noise.

    Args:
        logits: (N, K, C) logits of K heads (K = 1 for one head).
        y: (N,) true class indices.

    Returns:
        T in [0.01, 100]; 1.0 when there are no rows.
    """
    from scipy.optimize import minimize_scalar

    if len(y) == 0:
        return 1.0
    z = logits.detach().double().numpy()  # (N, K, C)
    rows = np.arange(len(y))
    y = np.asarray(y, int)

    def nll(log_t: float) -> float:
        scaled = z / np.exp(log_t)
        log_p = scaled - logsumexp(scaled, -1, keepdims=True)  # (N, K, C) per-head log-softmax
        log_mean = logsumexp(log_p, 1) - np.log(z.shape[1])  # (N, C) log of the head average
        return float(-log_mean[rows, y].mean())

    best = minimize_scalar(nll, bounds=np.log(_T_RANGE), method="bounded")
    return float(np.exp(best.x))


def fit_conformal(probs: np.ndarray, y: np.ndarray, alpha: float) -> tuple[tuple, tuple]:
    """The calibration scores and labels :class:`Calibration` stores for ``alpha``.

    Args:
        probs: (N, C) calibrated probabilities of the calibration rows.
        y: (N,) their true class indices.
        alpha: the target miscoverage, in (0, 1).
    """
    from crepes.extras import hinge

    if not 0 < alpha < 1:
        raise ValueError(f"conformal alpha must be in (0, 1), got {alpha}")
    y = np.asarray(y, int)
    scores = hinge(np.asarray(probs), np.arange(probs.shape[1]), y) if len(y) else np.zeros(0)
    return tuple(float(s) for s in scores), tuple(int(v) for v in y)
