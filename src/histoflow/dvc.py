"""The one adapter to DVC: making a project, reading the pipeline's order and running its stages.

Only this module shells out to ``dvc``.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from histoflow.project import environment

__all__ = [
    "DvcError",
    "Repro",
    "changed",
    "data_hash",
    "init",
    "lock_hashes",
    "parse_lock_hashes",
    "ran_stages",
    "repro",
    "stage_order",
]


class DvcError(RuntimeError):
    """A dvc command failed; the message carries its error (the stage's own, when it has one)."""


@dataclass(frozen=True)
class Repro:
    """What :func:`repro` did: whether the stage ran, how long it took, and its output."""

    ran: bool
    seconds: float
    output: str


def init(root: Path) -> None:
    """Make the git repository ``root`` a DVC project (``dvc init``), analytics off.

    Raises:
        DvcError: with DVC's output when a command fails.
    """
    for args in (["init", "-q"], ["config", "core.analytics", "false"]):
        proc = subprocess.run(
            [_dvc(), *args],
            cwd=root,
            env=environment(root),
            capture_output=True,
            text=True,
            errors="replace",
            check=False,
        )
        if proc.returncode:
            raise DvcError(
                f"`dvc {' '.join(args)}` failed (exit {proc.returncode}) in {root}:\n"
                f"{(proc.stdout + proc.stderr).strip()}"
            )


def stage_order(root: Path) -> list[str]:
    """Stage names of ``root/dvc.yaml`` in dependency order (ties keep file order)."""
    stages = _stages(root)
    outs = {
        name: [
            _path(o) for o in spec.get("outs", []) + spec.get("metrics", []) + spec.get("plots", [])
        ]
        for name, spec in stages.items()
    }
    needs = {
        name: {
            other
            for dep in spec.get("deps", [])
            for other, paths in outs.items()
            if other != name and any(_overlaps(_path(dep), p) for p in paths)
        }
        for name, spec in stages.items()
    }
    order: list[str] = []
    while len(order) < len(stages):
        ready = [n for n in stages if n not in order and needs[n] <= set(order)]
        if not ready:
            raise DvcError(
                f"dvc.yaml has a dependency cycle among {sorted(set(stages) - set(order))}"
            )
        order.append(ready[0])
    return order


def repro(stage: str, root: Path, *, force: bool = False, echo: bool = True) -> Repro:
    """Run ``dvc repro --quiet --single-item STAGE`` in ``root``; DVC skips it when nothing changed.

    DVC itself is quiet (no "Running stage", lock-file or ``git add`` advice): what is shown is
    the stage's own output, streamed as it comes so that progress bars draw in a terminal. An
    interrupt (Ctrl-C, or SIGTERM turned into one) stops DVC and its stage before it returns.

    Args:
        stage: a stage name from ``dvc.yaml``.
        root: the project folder.
        force: run even if DVC finds the stage up to date.
        echo: stream the stage's output to stderr.

    Returns:
        Whether the stage ran (its ``dvc.lock`` entry changed, or ``force``), its wall time and
        its output.

    Raises:
        DvcError: naming the stage, with the stage's own error when it printed one
            (``histoflow: error: ...``), else the last lines of its output.
    """
    if stage not in _stages(root):
        raise DvcError(f"unknown stage {stage!r}; dvc.yaml defines {', '.join(_stages(root))}")
    cmd = [_dvc(), "repro", "--quiet", "--single-item", stage] + (["--force"] if force else [])
    before, started = _lock_entry(root, stage), time.monotonic()
    chunks: list[str] = []
    with subprocess.Popen(
        cmd, cwd=root, env=environment(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as proc:
        try:
            decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
            while data := os.read(proc.stdout.fileno(), 1 << 16):
                chunks.append(decode(data))
                if echo:  # raw, so that a progress bar's carriage returns redraw in place
                    sys.stderr.write(chunks[-1])
                    sys.stderr.flush()
        except BaseException:
            _interrupt(proc)
            raise
    output = "".join(chunks)
    if proc.returncode:
        raise DvcError(_failure(stage, proc.returncode, output))
    ran = force or _lock_entry(root, stage) != before
    return Repro(ran=ran, seconds=time.monotonic() - started, output=output)


def _failure(stage: str, code: int, output: str) -> str:
    # The stage's command ends with its `histoflow: error: ...` message (the CLI's edge, maybe
    # several lines), then DVC's own "ERROR: failed to reproduce" line: the message is the part
    # between. Without one (DVC's own failure), the output's last lines.
    start = output.rfind("histoflow: error: ")
    if start >= 0:
        message = output[start + len("histoflow: error: ") :]
        message = re.split(r"^ERROR: ", message, maxsplit=1, flags=re.M)[0]
        return f"stage {stage} failed: {message.strip()}"
    tail = "\n".join(output.strip().splitlines()[-15:])
    return f"stage {stage} failed (`dvc repro {stage}` exit {code}):\n{tail}"


def _interrupt(proc: subprocess.Popen) -> None:
    # DVC stops the stage's command on SIGINT; kill only what does not stop in time.
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _lock_entry(root: Path, stage: str) -> dict | None:
    lock = Path(root) / "dvc.lock"
    if not lock.is_file():
        return None
    return ((yaml.safe_load(lock.read_text()) or {}).get("stages") or {}).get(stage)


def changed(root: Path) -> dict | None:
    """What ``dvc status`` finds changed in ``root`` (``{}``: ``dvc repro`` would run nothing).

    One DVC process for the whole pipeline, where asking stage by stage costs one each. None
    when ``dvc status`` itself fails: the caller then runs the stages and DVC reports why.
    """
    proc = subprocess.run(
        [_dvc(), "status", "--json"],
        cwd=root,
        env=environment(root),
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
    )
    if proc.returncode:
        return None
    try:
        return json.loads(proc.stdout or "{}")
    except json.JSONDecodeError:
        return None


def ran_stages(output: str) -> list[str]:
    """Names of the stages that DVC's output says it ran."""
    return re.findall(r"Running stage '([^']+)'", output)


def lock_hashes(root: Path) -> dict[str, str]:
    """``path -> md5`` for every dependency and output recorded in ``dvc.lock``."""
    lock = Path(root) / "dvc.lock"
    return parse_lock_hashes(lock.read_text()) if lock.is_file() else {}


def parse_lock_hashes(text: str) -> dict[str, str]:
    """``path -> md5`` of a ``dvc.lock``'s text (e.g. one read from a git commit)."""
    hashes: dict[str, str] = {}
    for spec in ((yaml.safe_load(text) or {}).get("stages") or {}).values():
        for entry in spec.get("deps", []) + spec.get("outs", []):
            if "md5" in entry:
                hashes[entry["path"]] = entry["md5"]
    return hashes


def data_hash(root: Path, dataset: str = "data") -> str | None:
    """The md5 DVC recorded for ``dataset`` (``root/<dataset>.dvc``), or None when untracked."""
    dvc_file = Path(root) / f"{dataset}.dvc"
    if not dvc_file.is_file():
        return None
    outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or [{}]
    return outs[0].get("md5")


def _stages(root: Path) -> dict[str, dict]:
    path = Path(root) / "dvc.yaml"
    if not path.is_file():
        raise DvcError(f"{path} not found: run histoflow from the project root")
    return (yaml.safe_load(path.read_text()) or {}).get("stages", {})


def _path(entry: str | dict) -> PurePosixPath:
    return PurePosixPath(next(iter(entry)) if isinstance(entry, dict) else entry)


def _overlaps(a: PurePosixPath, b: PurePosixPath) -> bool:
    return a == b or a in b.parents or b in a.parents


def _dvc() -> str:
    # Prefer the dvc installed beside this interpreter (the project's .venv).
    local = Path(sys.executable).with_name("dvc")
    return str(local) if local.exists() else "dvc"
