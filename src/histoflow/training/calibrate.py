"""Fitting a trained fusion network's calibration: which rows, then temperature and conformal sets.

The validation split is divided by patient: one part stops training early and fits the
temperature, the other (``train_fusion.calibration_share`` of the val patients) only calibrates
the conformal sets. Split conformal's guarantee needs calibration rows exchangeable with test
rows; rows that chose the best epoch (or the temperature) are not, so they are kept apart.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import StratifiedGroupKFold

from histoflow.models.calibration import Calibration, fit_conformal, fit_temperature

__all__ = ["calibrate", "calibration_rows"]


def calibration_rows(index: pd.DataFrame, share: float, seed: int) -> np.ndarray:
    """(N,) bool: the val rows held out for conformal calibration.

    About ``share`` of the val patients, chosen stratified by label and grouped by patient
    (scikit-learn's ``StratifiedGroupKFold``, seeded): no patient is on both sides, and each
    class keeps rows on both sides where it has at least two val patients.
    """
    val = (index["split"] == "val").to_numpy()
    out = np.zeros(len(index), bool)
    rows = np.flatnonzero(val)
    groups = index["patient_id"].astype(str).to_numpy()[rows]
    n_groups = len(set(groups))
    if n_groups < 2:
        return out  # one patient cannot be split: no conformal sets, said in model.json
    # k folds with one of them held out is a share of 1/k; the nearest k to 1/share.
    k = int(np.clip(round(1 / share), 2, n_groups))
    folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    labels = index["label"].astype(str).to_numpy()[rows]
    _, held = next(folds.split(rows, labels, groups))
    out[rows[held]] = True
    return out


def _head_logits(net, store, rows: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """(N, K, C) logits of the ``rows`` mask, read from the store a batch at a time."""
    picked = np.flatnonzero(rows)
    parts = []
    with torch.inference_mode():
        for s in range(0, len(picked), batch_size):
            batch = store.rows(picked[s : s + batch_size])
            parts.append(
                net(
                    torch.from_numpy(batch["image_tokens"]).float(),
                    torch.from_numpy(batch["text_tokens"]).float(),
                    torch.from_numpy(batch["text_mask"]),
                )
            )
    return torch.cat(parts) if parts else torch.zeros(0, 1, 1)  # (N, K, C)


def calibrate(
    net,
    store,
    y: torch.Tensor,
    temperature_rows: np.ndarray,
    conformal_rows: np.ndarray,
    alpha: float,
) -> tuple[Calibration, dict]:
    """The temperature fitted on ``temperature_rows``, conformal scores from ``conformal_rows``.

    Args:
        net: the trained network, eval mode, returning (B, K, C) logits.
        store: the feature store (:class:`~histoflow.embeddings.store.FeatureStore`): rows are
            read a batch at a time.
        y: (N,) class indices of every feature-store row.
        temperature_rows: (N,) bool mask.
        conformal_rows: (N,) bool mask, disjoint from ``temperature_rows``.
        alpha: the conformal sets' target miscoverage.

    Returns:
        The :class:`Calibration` and a summary for ``metrics/train_fusion.json``: the temperature,
        the val NLL before and after, and how many rows calibrate the sets.
    """
    net.eval()
    logits = _head_logits(net, store, temperature_rows)
    y_t = y[torch.from_numpy(temperature_rows)]
    t = fit_temperature(logits, y_t)
    summary = {
        "temperature": t,
        "n_temperature": int(temperature_rows.sum()),
        "val_nll_before": _nll(logits, y_t, 1.0),
        "val_nll_after": _nll(logits, y_t, t),
        "n_conformal": int(conformal_rows.sum()),
        "alpha": alpha,
    }
    if not conformal_rows.any():
        return Calibration(temperature=t), summary
    # The same probabilities as histoflow.inference.fuse: heads averaged after the softmax.
    cal_logits = _head_logits(net, store, conformal_rows)
    probs = (cal_logits / t).softmax(-1).mean(1).numpy()  # (N, C)
    y_c = y[torch.from_numpy(conformal_rows)]
    scores, labels = fit_conformal(probs, y_c.numpy(), alpha)
    return Calibration(temperature=t, alpha=alpha, scores=scores, labels=labels), summary


def _nll(logits: torch.Tensor, y: torch.Tensor, t: float) -> float | None:
    if len(y) == 0:
        return None
    log_p = torch.logsumexp((logits / t).log_softmax(-1), 1) - np.log(logits.shape[1])
    return float(torch.nn.functional.nll_loss(log_p, y.long()))
