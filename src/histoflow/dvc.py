"""The one adapter to DVC: making a project, reading the pipeline's order and running its stages.

Only this module shells out to ``dvc``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath

import yaml

from histoflow.project import environment

__all__ = [
    "DvcError",
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
    """A dvc command failed; the message carries its output."""


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


def repro(stage: str, root: Path, *, force: bool = False, echo: bool = True) -> str:
    """Run ``dvc repro --single-item STAGE`` in ``root``; DVC skips it when nothing changed.

    Args:
        stage: a stage name from ``dvc.yaml``.
        root: the project folder.
        force: run even if DVC finds the stage up to date.
        echo: stream DVC's output (the stage's progress) to stderr as it comes.

    Returns:
        DVC's output.

    Raises:
        DvcError: with the stage's output when it fails.
    """
    if stage not in _stages(root):
        raise DvcError(f"unknown stage {stage!r}; dvc.yaml defines {', '.join(_stages(root))}")
    cmd = [_dvc(), "repro", "--single-item", stage] + (["--force"] if force else [])
    lines: list[str] = []
    with subprocess.Popen(
        cmd,
        cwd=root,
        env=environment(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as proc:
        for line in proc.stdout:
            lines.append(line)
            if echo:
                sys.stderr.write(line)
    output = "".join(lines)
    if proc.returncode:
        tail = "".join(lines[-40:]).strip()
        raise DvcError(
            f"`dvc {' '.join(cmd[1:])}` failed (exit {proc.returncode}) in {root}:\n{tail}"
        )
    return output


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
