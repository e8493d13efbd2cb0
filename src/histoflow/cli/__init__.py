"""The ``histoflow`` command: data, stages, the training flow, prediction and monitoring.

Run it from the project root (the folder holding ``dvc.yaml`` and ``params.yaml``). One
module per group of commands; each adds its parsers (``add_commands``) and handlers.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from histoflow.cli import data, pipeline, predict, probe, registry, serve
from histoflow.project import apply_environment

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` (default: the process arguments); returns the exit status."""
    # Arrow's default allocator (mimalloc) keeps the pages it frees: at 30,720 tiles validate
    # peaked 35-40 MiB higher with it than with the system one, the gap growing with the tiles.
    # Read once, when pyarrow first allocates; a user's own choice stands.
    system_pool = "ARROW_DEFAULT_MEMORY_POOL" not in os.environ
    if system_pool:
        os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"
    try:
        return _main(argv)
    finally:
        if system_pool:
            del os.environ["ARROW_DEFAULT_MEMORY_POOL"]


def _main(argv: list[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    apply_environment(Path.cwd())
    # Progress bars draw only in a terminal; in a log each redraw would be one more line.
    quiet_bars = not sys.stderr.isatty() and "TQDM_DISABLE" not in os.environ
    if quiet_bars:
        os.environ["TQDM_DISABLE"] = "1"
    # `kill PID` stops a command the way Ctrl-C does: its cleanup runs (subprocesses stopped,
    # the training slot given back, the Prefect server it started shut down).
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("histoflow: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the CLI edge: every failure becomes one clear message
        if os.environ.get("HISTOFLOW_DEBUG"):
            raise
        print(f"histoflow: error: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        if quiet_bars:
            del os.environ["TQDM_DISABLE"]


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="histoflow", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="params file (default: params.yaml)",
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    for group in (data, pipeline, predict, probe, registry, serve):
        group.add_commands(sub)
    return parser
