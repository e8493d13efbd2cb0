"""Encoders compared the way the field compares them: frozen features, probes over seeds.

Each encoder (a timm name, ``NAME:pretrained`` for its ImageNet weights, or a trained model
folder such as ``outputs/train_encoder/model``) embeds the validated manifest's images once,
frozen, through the same inference path as ``embed``; :mod:`histoflow.evaluation.probes` then
scores its features on the same split (train -> test) for every encoder. The result is a
leaderboard table (CSV), a plot and an HTML page; the CLI logs each point as an MLflow run.
"""

from __future__ import annotations

import html
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from histoflow.evaluation.probes import PROBE_METRICS, ProbeResult, grouped_cv, run_probes
from histoflow.io import atomic_dir

__all__ = ["compare_encoders", "encoder_features", "leaderboard_table", "write_leaderboard"]


def encoder_features(
    encoder: str,
    data: Path,
    paths: Sequence[str],
    *,
    image_size: int,
    batch_size: int = 64,
    num_workers: int = 0,
) -> np.ndarray:
    """Pooled embeddings (N, D) of ``paths`` (relative to ``data``) by a frozen encoder.

    Args:
        encoder: a model folder, a timm name (random weights) or ``NAME:pretrained``.
        data: the images' folder.
        paths: the images, in the order of the rows returned.
        image_size: the side images are resized to (a model folder uses its own).
        batch_size: images per forward pass.
        num_workers: decoding processes.
    """
    from torch.utils.data import DataLoader

    from histoflow.data.datasets import TileDataset
    from histoflow.inference import ImageEmbedder

    with tempfile.TemporaryDirectory(prefix="histoflow-probe-") as tmp:
        folder = Path(encoder) if Path(encoder).is_dir() else _save(encoder, Path(tmp), image_size)
        embedder = ImageEmbedder(folder, grid=1)
        loader = DataLoader(
            TileDataset(data, list(paths), None, embedder.transform),
            batch_size=batch_size,
            num_workers=num_workers,
        )
        pooled = [embedder.embed_tensor(images)[0].numpy() for images, _ in loader]
    return np.concatenate(pooled) if pooled else np.zeros((0, 0), np.float32)


def _save(spec: str, folder: Path, image_size: int) -> Path:
    """A timm name (``:pretrained`` for its weights) as a model folder, as train_encoder saves."""
    from histoflow.config import TrainEncoderConfig
    from histoflow.models.checkpoint import save_model
    from histoflow.models.encoder import create_encoder_from_params, encoder_description

    name, _, weights = spec.partition(":")
    if weights not in ("", "pretrained"):
        raise ValueError(f"encoder {spec!r}: write NAME or NAME:pretrained, or a model folder")
    p = TrainEncoderConfig(backbone=name, pretrained=weights == "pretrained")
    module = create_encoder_from_params(p)
    save_model(
        folder / "model", module, {**encoder_description(p, module), "image_size": image_size}
    )
    return folder / "model"


def compare_encoders(
    encoders: Sequence[str],
    manifest: pd.DataFrame,
    data: Path,
    *,
    image_size: int,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    folds: int = 0,
    group_column: str = "patient_id",
    batch_size: int = 64,
) -> dict[str, list[ProbeResult]]:
    """Every encoder's probe results on the manifest's split (train + val fit, test scores).

    With ``folds`` > 1 the probes are scored by cross-validation grouped by ``group_column``
    over all rows instead (linear and kNN only).

    Returns:
        ``{encoder: [ProbeResult, ...]}``; each result's ``seconds`` is the encoder's whole
        time (embedding every image, then all its probes).
    """
    classes = sorted(manifest["label"].unique())
    y = manifest["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    fit = manifest["split"].isin(["train", "val"]).to_numpy()
    test = (manifest["split"] == "test").to_numpy()
    if folds <= 1 and not (fit.any() and test.any()):
        raise ValueError("the manifest needs train/val and test rows to compare encoders")
    results: dict[str, list[ProbeResult]] = {}
    for encoder in encoders:
        started = time.perf_counter()
        x = encoder_features(
            encoder, data, manifest["path"].tolist(), image_size=image_size, batch_size=batch_size
        )
        if folds > 1:
            runs = grouped_cv(
                x, y, manifest[group_column].astype(str).to_numpy(), folds=folds, seed=seeds[0]
            )
        else:
            runs = run_probes(x[fit], y[fit], x[test], y[test], seeds=seeds)
        for run in runs:
            run.seconds = time.perf_counter() - started
        results[encoder] = runs
    return results


def leaderboard_table(results: dict[str, list[ProbeResult]]) -> pd.DataFrame:
    """One row per (encoder, probe): mean, std and per-seed values of each probe metric."""
    rows = []
    for encoder, runs in results.items():
        for run in runs:
            row = {"encoder": encoder, "probe": run.probe, "n_seeds": len(run.per_seed)}
            row.update(run.summary())
            row["per_seed_macro_recall"] = " ".join(
                f"{m['macro_recall']:.4f}" for m in run.per_seed
            )
            row["seconds"] = round(run.seconds, 1)
            rows.append(row)
    table = pd.DataFrame(rows)
    return table.sort_values(["probe", "macro_recall"], ascending=[True, False], kind="stable")


def write_leaderboard(folder: Path, table: pd.DataFrame) -> Path:
    """``leaderboard.csv``, ``leaderboard.png`` and ``index.html`` in ``folder`` (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with atomic_dir(folder) as tmp:
        table.to_csv(tmp / "leaderboard.csv", index=False)
        probes = sorted(table["probe"].unique())
        encoders = list(dict.fromkeys(table["encoder"]))
        fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(probes), 3.6), constrained_layout=True)
        width = 0.8 / max(len(encoders), 1)
        for i, encoder in enumerate(encoders):
            rows = table[table["encoder"] == encoder].set_index("probe").reindex(probes)
            ax.bar(
                np.arange(len(probes)) + i * width,
                rows["macro_recall"],
                width,
                yerr=rows["macro_recall_std"],
                capsize=3,
                label=encoder,
            )
        ax.set_xticks(np.arange(len(probes)) + width * (len(encoders) - 1) / 2, probes)
        ax.set(ylabel="macro recall (mean +- std over seeds)", ylim=(0, 1))
        ax.legend(fontsize=7)
        fig.savefig(tmp / "leaderboard.png", dpi=100)
        plt.close(fig)
        (tmp / "index.html").write_text(_page(table), encoding="utf-8")
    return Path(folder) / "index.html"


def _page(table: pd.DataFrame) -> str:
    cols = ["encoder", "probe", *[m for m in PROBE_METRICS], "per_seed_macro_recall", "seconds"]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = ""
    for _, row in table.iterrows():
        cells = []
        for c in cols:
            value = row[c]
            if c in PROBE_METRICS:
                value = f"{row[c]:.3f} &plusmn; {row[c + '_std']:.3f}"
            cells.append(f"<td>{value if c in PROBE_METRICS else html.escape(str(value))}</td>")
        body += "<tr>" + "".join(cells) + "</tr>"
    return (
        "<!doctype html><meta charset='utf-8'><title>histoflow encoder leaderboard</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.25em .6em}</style>"
        "<h1>Encoder leaderboard</h1><p>Frozen features; linear probe, kNN (cosine, k = 20) and "
        "few-shot (SimpleShot) over seeds: mean &plusmn; std.</p>"
        "<img src='leaderboard.png' alt='macro recall per probe and encoder'>"
        f"<table><tr>{head}</tr>{body}</table>"
    )
