"""The ``__main__`` of a benchmark that only has the suite's ``run``: print and save its figures."""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable
from pathlib import Path

from _machine import machine_info

from histoflow.io import write_json

__all__ = ["figures_main"]


def figures_main(run: Callable[..., list[dict]], out: Path, doc: str) -> list[dict]:
    """Parse ``--quick`` / ``--repeats``, call ``run``, print a table, write ``out`` (JSON)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes")
    parser.add_argument("--repeats", type=int, default=3, help="measurements of each figure")
    parser.add_argument("--out", type=Path, default=out, help="JSON results file")
    args = parser.parse_args()
    load_before = os.getloadavg()
    figures = run(quick=args.quick, repeats=args.repeats)
    write_json(args.out, {"figures": figures, "machine": machine_info(load_before)})
    print("| figure | median | samples | unit | notes |\n|---|---:|---|---|---|")
    for f in figures:
        samples = ", ".join(f"{x:.3g}" for x in f["samples"])
        print(
            f"| {f['figure']} | {statistics.median(f['samples']):.3g} | {samples} | {f['unit']}"
            f" | {f.get('notes', '')} |"
        )
    print(f"\nwrote {args.out}")
    return figures
