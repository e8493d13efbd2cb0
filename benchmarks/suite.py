"""Run every benchmark module and write one dated results file plus a markdown table.

Usage::

    python benchmarks/suite.py [--quick] [--repeats 3] [--only a,b] [--skip a,b] [--out DIR]

A benchmark module is any ``benchmarks/<name>.py`` (not starting with ``_``) that defines
``run(quick: bool = False, repeats: int = 3) -> list[dict]``; each dict is one figure:
``{"figure", "unit", "samples": [one float per repeat], "target"?, "notes"?}``. Modules are
found, not listed, so a new benchmark joins ``make bench`` by defining ``run``.

Writes ``benchmarks/results/<date>-<machine>.json`` (``-quick`` appended for ``--quick``) with
every sample, the median, min, max and interquartile range of each figure and the machine, and
the same table as ``.md``. A module that fails is recorded with its error and the others go
on; the exit status is then 1. Each module runs in its own process.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the modules import their helpers (`_harness`) as top-level
    sys.path.insert(0, str(HERE))

from _harness import machine  # noqa: E402

from histoflow.io import atomic_path, write_json  # noqa: E402

__all__ = ["discover", "main", "run_suite", "summarize"]

RESULTS = HERE / "results"


def main(argv: list[str] | None = None) -> int:
    """The ``make bench`` command line; the exit status is 1 when a module failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes: a fast smoke run")
    parser.add_argument("--repeats", type=int, default=3, help="measurements of each figure")
    parser.add_argument("--only", default="", help="comma-separated module names to run")
    parser.add_argument("--skip", default="", help="comma-separated module names to leave out")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results")
    parser.add_argument(
        "--dir", type=Path, default=HERE, help="folder of benchmark modules (default: this one)"
    )
    parser.add_argument("--_child", help=argparse.SUPPRESS)  # internal: run one module
    parser.add_argument("--_json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    folder = args.dir.resolve()
    if args._child:
        return _child(folder, args._child, args._json, quick=args.quick, repeats=args.repeats)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    names = discover(folder)
    on_demand = discover(folder, on_demand=True)
    only, skip = _names(args.only), _names(args.skip)
    unknown = (only | skip) - set(names) - set(on_demand)
    if unknown:
        parser.error(
            f"unknown benchmark(s) {sorted(unknown)}; found: {', '.join(names + on_demand)}"
        )
    # On-demand modules (hours, or real data outside the repository) run only when named.
    names = [
        n for n in names + on_demand if (n in only or (not only and n in names)) and n not in skip
    ]

    results = run_suite(names, quick=args.quick, repeats=args.repeats, folder=folder)
    stem = f"{results['date']}-{_slug(results['machine']['hostname'])}"
    stem += "-quick" if args.quick else ""
    write_json(args.out / f"{stem}.json", results)
    table = markdown(results)
    with atomic_path(args.out / f"{stem}.md") as tmp:
        tmp.write_text(table + "\n")
    print(f"\n{table}\n\nwrote {args.out / stem}.json and .md")
    return 1 if any(m["error"] for m in results["modules"].values()) else 0


def discover(folder: Path = HERE, *, on_demand: bool = False) -> list[str]:
    """Names of the modules in ``folder`` that define ``run`` (sorted; helpers ``_*`` skipped).

    A module that sets ``ON_DEMAND = True`` (a run of hours, or real data outside the
    repository) is left out of ``make bench``; ``on_demand=True`` lists those instead.
    """
    names = []
    for path in sorted(folder.glob("*.py")):
        if path.stem.startswith("_") or path.stem == Path(__file__).stem:
            continue
        # Read, not imported: importing pulls in torch; each module is imported in its own child.
        text = path.read_text()
        if not re.search(r"^def run\(", text, flags=re.MULTILINE):
            continue
        if bool(re.search(r"^ON_DEMAND = True", text, flags=re.MULTILINE)) == on_demand:
            names.append(path.stem)
    return names


def run_suite(names: list[str], *, quick: bool, repeats: int, folder: Path = HERE) -> dict:
    """Run each module in a fresh process; its figures summarized, or its error.

    A process per module keeps the figures apart: memory peaks, imports and torch's thread
    pool do not carry over from one benchmark to the next.
    """
    started = time.perf_counter()
    load_before = os.getloadavg()
    modules = {}
    for name in names:
        print(f"== {name} ({'quick' if quick else 'full'}, {repeats} repeats)", flush=True)
        t0 = time.perf_counter()
        figures, error = _run_module(folder, name, quick=quick, repeats=repeats)
        if error is None:
            try:
                figures = [_checked(f, name) for f in figures]
            except ValueError as exc:
                figures, error = [], str(exc)
        seconds = round(time.perf_counter() - t0, 1)
        modules[name] = {"seconds": seconds, "error": error, "figures": figures}
        print(f"== {name}: {seconds} s{', FAILED' if error else ''}", flush=True)
        if error:
            print(error, file=sys.stderr, flush=True)
    return {
        "date": dt.date.today().isoformat(),
        "quick": quick,
        "repeats": repeats,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine(load_before),
        "modules": modules,
    }


def _run_module(folder: Path, name: str, *, quick: bool, repeats: int) -> tuple[list, str | None]:
    """``name.run(quick, repeats)`` in a child process: (figures, None) or ([], the error)."""
    with tempfile.TemporaryDirectory(prefix="hf-bench-suite-") as tmp:
        out = Path(tmp) / "figures.json"
        proc = subprocess.run(
            [sys.executable, __file__, "--dir", str(folder), "--_child", name, "--_json", str(out)]
            + ["--repeats", str(repeats)]
            + (["--quick"] if quick else []),
            check=False,
        )
        if not out.is_file():
            return [], f"{name} exited with status {proc.returncode} before writing its figures"
        answer = json.loads(out.read_text())
    return answer.get("figures", []), answer.get("error")


def _child(folder: Path, name: str, out: Path, *, quick: bool, repeats: int) -> int:
    """In the child process: run one module, write its figures or its traceback to ``out``."""
    sys.path.insert(0, str(folder))
    try:
        figures = importlib.import_module(name).run(quick=quick, repeats=repeats)
        answer = {"figures": figures, "error": None}
    except Exception:  # reported by the parent; the other modules still run
        answer = {"figures": [], "error": traceback.format_exc()}
    out.write_text(json.dumps(answer, default=float))
    return 0


def summarize(samples: list[float]) -> dict:
    """Median, min, max and interquartile range of one figure's samples."""
    q1, _, q3 = (
        statistics.quantiles(samples, n=4, method="inclusive")
        if len(samples) > 1
        else (samples[0],) * 3
    )
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "iqr": [q1, q3],
        "n": len(samples),
    }


def markdown(results: dict) -> str:
    """The results as one markdown table, machine and mode above it."""
    m = results["machine"]
    lines = [
        f"histoflow benchmarks, {results['date']}, {'quick' if results['quick'] else 'full'}"
        f" mode, {results['repeats']} repeats, {results['seconds']:.0f} s in all",
        "",
        f"Machine: {m['cpu']}, {m['cpus']} CPUs, {m['memory_gib']} GiB,"
        f" GPU: {m['gpu'] or 'none'}; load average {m['load_average_before'][0]} before,"
        f" {m['load_average_after'][0]} after; commit {m['git_commit']}",
        "",
        "| benchmark | figure | median | min - max | unit | n | target | notes |",
        "|---|---|---:|---:|---|---:|---|---|",
    ]
    for name, module in results["modules"].items():
        if module["error"]:
            lines.append(f"| {name} | **failed** | | | | | | {_cell(_headline(module['error']))} |")
        for f in module["figures"]:
            s = f["summary"]
            lines.append(
                f"| {name} | {_cell(f['figure'])} | {_num(s['median'])}"
                f" | {_num(s['min'])} - {_num(s['max'])} | {f['unit']} | {s['n']}"
                f" | {_cell(f.get('target', ''))} | {_cell(f.get('notes', ''))} |"
            )
    return "\n".join(lines)


def _checked(figure: dict, module: str) -> dict:
    """The figure with its summary, after checking it follows the interface."""
    where = f"benchmark {module!r}, figure {figure.get('figure')!r}"
    for key in ("figure", "unit"):
        if not isinstance(figure.get(key), str) or not figure[key]:
            raise ValueError(f"{where}: {key!r} must be a non-empty string")
    samples = figure.get("samples")
    if not isinstance(samples, list | tuple) or not samples:
        raise ValueError(f"{where}: 'samples' must be a non-empty list, got {samples!r}")
    if not all(isinstance(x, int | float) and math.isfinite(x) for x in samples):
        raise ValueError(f"{where}: 'samples' must be finite numbers, got {samples!r}")
    samples = [float(x) for x in samples]
    return {**figure, "samples": samples, "summary": summarize(samples)}


def _headline(error: str) -> str:
    """The exception line of a traceback (its last line may be the failed command's output)."""
    lines = error.strip().splitlines()
    found = [ln for ln in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b", ln)]
    return (found or lines)[-1]


def _num(x: float) -> str:
    if x == 0 or abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _names(text: str) -> set[str]:
    return {n.strip().removesuffix(".py") for n in text.split(",") if n.strip()}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "machine"


if __name__ == "__main__":
    sys.exit(main())
