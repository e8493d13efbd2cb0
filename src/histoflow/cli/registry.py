"""``histoflow registry``: champion and challenger, promotion by hand or by rule, rollback."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add this module's commands to the ``histoflow`` parser."""
    reg = sub.add_parser("registry", help="the MLflow model registry: status, promote, rollback")
    reg_sub = reg.add_subparsers(required=True, metavar="ACTION")
    reg_status = reg_sub.add_parser("status", help="champion and challenger with their metrics")
    reg_status.add_argument("--json", action="store_true", help="print JSON")
    reg_status.set_defaults(func=_registry_status)
    reg_promote = reg_sub.add_parser(
        "promote", help="make VERSION champion by hand (the rules' verdict is recorded with it)"
    )
    reg_promote.add_argument("version")
    reg_promote.add_argument("--note", default="", help="why, recorded as a tag")
    reg_promote.add_argument(
        "--by-rule", action="store_true", help="promote only if the params.yaml rules allow"
    )
    reg_promote.set_defaults(func=_registry_promote)
    reg_rollback = reg_sub.add_parser("rollback", help="give champion back to the previous one")
    reg_rollback.add_argument("--note", default="", help="why, recorded as a tag")
    reg_rollback.set_defaults(func=_registry_rollback)


def _registry_status(args: argparse.Namespace) -> None:
    from histoflow.config import load_params
    from histoflow.registry import status

    params = load_params(args.params)
    report = status(params.registry, Path.cwd(), data_root=str(params.data.root))
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return
    print(f"{report['model']} at {report['tracking_uri']}")
    for alias in ("champion", "challenger"):
        entry = report[alias]
        if entry is None:
            print(f"  {alias:<10} none")
            continue
        details = "  ".join(
            f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
            for k, v in entry.items()
            if k not in ("version", "run_id", *_PROVENANCE)
            and v is not None
            and not k.startswith("promotion.")
        )
        print(f"  {alias:<10} v{entry['version']}  {details}")
        for key in ("promotion.decision", "promotion.reason"):
            if key in entry:
                print(f"  {'':<10} {key.split('.')[1]}: {entry[key]}")
        for line in _provenance(entry):
            print(f"  {'':<10} {line}")
    print(f"  history    {' -> '.join('v' + v for v in report['history']) or 'none'}")


_PROVENANCE = ("git_commit", "data_hash", "state_commit", "checkout")


def _provenance(entry: dict) -> list[str]:
    """Where a version came from, and the command that gets its exact state back."""
    commit = entry.get("git_commit") or "unknown"
    lines = [f"code: commit {commit}   data: md5 {entry.get('data_hash') or 'unknown'}"]
    if entry.get("checkout"):
        lines.append(f"state: {entry['checkout']}")
    else:
        lines.append(
            "state: no commit holds this run's dvc.lock; after a run, `git add dvc.lock "
            "metrics && git commit` pins it (`dvc push` too, with a remote)"
            + (
                f"; `git checkout {commit} && dvc repro` rebuilds it"
                if commit != "unknown" and not commit.endswith("-dirty")
                else ""
            )
        )
    if commit.endswith("-dirty"):
        lines.append("note: the run had uncommitted changes to code or params")
    return lines


def _registry_promote(args: argparse.Namespace) -> int:
    from histoflow.config import load_params
    from histoflow.registry import promote, promote_by_hand

    cfg = load_params(args.params).registry
    if args.by_rule:
        decision = promote(cfg, args.version, Path.cwd())
    else:
        decision = promote_by_hand(cfg, args.version, Path.cwd(), note=args.note)
    verdict = "champion" if decision.promoted else "not promoted"
    print(f"{cfg.model_name} v{decision.version}: {verdict}: {decision.reason}")
    return 0 if decision.promoted else 3


def _registry_rollback(args: argparse.Namespace) -> None:
    from histoflow.config import load_params
    from histoflow.registry import rollback

    cfg = load_params(args.params).registry
    demoted, restored = rollback(cfg, Path.cwd(), note=args.note)
    print(f"{cfg.model_name}: champion v{demoted} -> v{restored}")
