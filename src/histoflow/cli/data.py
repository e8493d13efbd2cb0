"""``histoflow data``: the synthetic dataset, recipe stand-ins and importers of public formats."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add this module's commands to the ``histoflow`` parser."""
    data = sub.add_parser("data", help="datasets").add_subparsers(required=True, metavar="ACTION")
    synth = data.add_parser("synth", help="generate the deterministic synthetic H&E tile dataset")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--classes", type=int, default=6)
    synth.add_argument("--per-class", type=int, default=80)
    synth.add_argument("--size", type=int, default=64, help="tile size in pixels")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--stain-shift", type=float, default=0.0, help="0 = none; 1 = a clearly different lab"
    )
    synth.add_argument("--patients-per-class", type=int, help="default: min(8, per-class)")
    synth.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a dataset histoflow wrote in --out (never a folder holding anything else)",
    )
    synth.set_defaults(func=_data_synth)

    standin = data.add_parser("standin", help="a synthetic stand-in for a recipe's dataset")
    standin.add_argument("kind", help="brats_path, breakhis, brain_mri or stroke")
    standin.add_argument("--out", type=Path, required=True)
    standin.add_argument("--per-class", type=int, default=24)
    standin.add_argument("--size", type=int, default=64)
    standin.add_argument("--seed", type=int, default=0)
    standin.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a dataset histoflow wrote in --out (never a folder holding anything else)",
    )
    standin.set_defaults(func=_data_standin)

    imp = data.add_parser("import", help="convert a public dataset format into histoflow's layout")
    imp.add_argument("format", help="folder, csv, medmnist, breakhis or pcam")
    imp.add_argument("src", type=Path, help="source folder or file")
    imp.add_argument("--out", type=Path, required=True, help="e.g. data (then: dvc add data)")
    imp.add_argument("--class-names", help="comma-separated class names (medmnist)")
    imp.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a dataset histoflow wrote in --out (never a folder holding anything else)",
    )
    imp.set_defaults(func=_data_import)


def _data_synth(args: argparse.Namespace) -> None:
    from histoflow.data.synthetic import generate

    manifest = generate(
        args.out,
        classes=args.classes,
        per_class=args.per_class,
        size=args.size,
        seed=args.seed,
        stain_shift=args.stain_shift,
        patients_per_class=args.patients_per_class,
        overwrite=args.overwrite,
    )
    print(f"wrote {args.classes * args.per_class} tiles and {manifest}")


def _data_standin(args: argparse.Namespace) -> None:
    from histoflow.data.synthetic.standins import make_standin

    manifest = make_standin(
        args.kind,
        args.out,
        per_class=args.per_class,
        size=args.size,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    print(f"wrote the {args.kind} stand-in: {manifest}")


def _data_import(args: argparse.Namespace) -> None:
    from histoflow.data.ingest import import_dataset

    names = args.class_names.split(",") if args.class_names else None
    manifest = import_dataset(
        args.format, args.src, args.out, overwrite=args.overwrite, class_names=names
    )
    print(f"wrote {manifest}; record it with `dvc add {args.out}`")
