"""``histoflow predict``: classify image files, folders or globs with a registered model.

A file that cannot be read gets a row with the reason in ``error`` and the exit status is 2;
the other files are classified.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add this module's commands to the ``histoflow`` parser."""
    predict = sub.add_parser(
        "predict", help="classify image files, folders or globs with a registered model"
    )
    predict.add_argument("paths", nargs="+", help="files, folders (searched recursively), globs")
    predict.add_argument("--model", default="models:/histoflow@champion")
    predict.add_argument("--out", type=Path, help="write a CSV or JSON file (default: print)")
    predict.add_argument(
        "--format",
        choices=("csv", "json", "submission"),
        help="output format (default: from --out's suffix); submission: the challenge's "
        "SubjectID,Prediction CSV (file stem, class name). With --out or a format, rows are "
        "written as each batch finishes: memory stays flat on any number of files",
    )
    predict.add_argument("--batch-size", type=int, default=64, help="images per model call")
    predict.add_argument("--no-progress", action="store_true", help="no progress bar")
    predict.add_argument(
        "--group-by",
        metavar="COLUMN",
        help="also write case-level predictions (OUT_cases.csv): tiles aggregated per 'folder' "
        "(each image's parent folder) or per a manifest.csv column such as patient_id",
    )
    predict.add_argument(
        "--case-method",
        choices=("mean", "vote"),
        default="mean",
        help="case prediction: mean tile probabilities (default) or majority vote of the tiles",
    )
    predict.set_defaults(func=_predict)


# Exit status when some files could not be read: their rows carry the reason in `error`.
SOME_FAILED = 2


def _predict(args: argparse.Namespace) -> int:
    from histoflow.predict import predict_paths, stream_predictions

    fmt = args.format or (
        "json" if args.out is not None and args.out.suffix.lower() == ".json" else "csv"
    )
    if (args.out or args.format) and not args.group_by:
        summary = stream_predictions(
            args.paths,
            model_uri=args.model,
            root=Path.cwd(),
            out=args.out,
            fmt=fmt,
            batch_size=args.batch_size,
            progress=not args.no_progress,
        )
        if args.out:
            print(f"wrote {summary.rows} predictions to {args.out}", file=sys.stderr)
        return _report_failures(summary.errors, summary.failed, summary.rows)
    # A table to print, or cases to aggregate (a case needs all its tiles): held in memory.
    table = predict_paths(
        args.paths,
        model_uri=args.model,
        root=Path.cwd(),
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    if args.group_by:
        _write_cases(args, table, fmt)
    else:
        print(
            table.drop(
                columns=[c for c in table if c.startswith("prob_") or c == "caption"]
            ).to_string(index=False)
        )
    failed = table["error"] != ""
    return _report_failures(list(table.loc[failed, "error"][:10]), int(failed.sum()), len(table))


def _write_cases(args: argparse.Namespace, table, fmt: str) -> None:
    """``--group-by``: the tile table and the case-level one, written or printed."""
    from histoflow.predict import case_predictions, cases_path, submission_rows, write_predictions

    cases = case_predictions(table, args.group_by, args.paths, args.case_method)
    if args.out:
        tiles = submission_rows(table) if fmt == "submission" else table
        write_predictions(tiles, args.out, "csv" if fmt == "submission" else fmt)
        print(f"wrote {len(table)} predictions to {args.out}", file=sys.stderr)
        case_fmt = "csv" if fmt == "submission" else fmt
        write_predictions(cases, cases_path(args.out), case_fmt)
        print(f"wrote {len(cases)} case predictions to {cases_path(args.out)}", file=sys.stderr)
        return
    if fmt == "json" and args.format:
        print(table.to_json(orient="records", indent=2))
    elif args.format:
        print(table.to_csv(index=False), end="")
    else:
        print(
            table.drop(
                columns=[c for c in table if c.startswith("prob_") or c == "caption"]
            ).to_string(index=False)
        )
    print(f"\nper {args.group_by}:")
    print(cases.drop(columns=[c for c in cases if c.startswith("votes_")]).to_string(index=False))


def _report_failures(errors: list[str], failed: int, total: int) -> int:
    if not failed:
        return 0
    for error in errors[:10]:  # each names its file
        print(f"histoflow: {error}", file=sys.stderr)
    print(
        f"histoflow: {failed} of {total} files could not be read (their rows say why "
        f"in the error column); the other {total - failed} were classified",
        file=sys.stderr,
    )
    return SOME_FAILED
