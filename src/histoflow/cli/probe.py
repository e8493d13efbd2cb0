"""``histoflow probe``: compare image encoders on frozen features, the way the field does."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add this module's commands to the ``histoflow`` parser."""
    probe = sub.add_parser(
        "probe",
        help="compare encoders: linear probe, kNN and few-shot on frozen features, over seeds",
    )
    probe.add_argument(
        "--encoder",
        action="append",
        required=True,
        help="a timm name (random weights), NAME:pretrained (e.g. efficientnet_lite0:pretrained) "
        "or a model folder (e.g. outputs/train_encoder/model); repeat to compare",
    )
    probe.add_argument("--seeds", type=int, default=5, help="repeats of each probe (default 5)")
    probe.add_argument(
        "--folds", type=int, default=0, help="k-fold CV grouped by patient instead of the split"
    )
    probe.add_argument("--group-column", default="patient_id", help="the CV groups' column")
    probe.add_argument("--out", type=Path, default=Path("reports/probe"), help="output folder")
    probe.add_argument("--no-mlflow", action="store_true", help="do not log the runs to MLflow")
    probe.set_defaults(func=_probe)


def _probe(args: argparse.Namespace) -> None:
    from histoflow.config import load_params
    from histoflow.data.manifest import read_manifest
    from histoflow.evaluation.leaderboard import (
        compare_encoders,
        leaderboard_table,
        write_leaderboard,
    )
    from histoflow.stages import validate

    cfg = load_params(args.params)
    manifest = read_manifest(validate.Outputs().manifest)
    results = compare_encoders(
        args.encoder,
        manifest,
        cfg.data.root,
        image_size=cfg.data.image_size,
        seeds=list(range(args.seeds)),
        folds=args.folds,
        group_column=args.group_column,
    )
    table = leaderboard_table(results)
    page = write_leaderboard(args.out, table)
    if not args.no_mlflow:
        from histoflow.registry.experiments import log_leaderboard

        log_leaderboard(Path.cwd(), cfg, table)
    shown = table[["encoder", "probe", "macro_recall", "macro_recall_std", "seconds"]]
    print(shown.to_string(index=False))
    print(f"leaderboard: {page}")
