"""Gated promotion to ``champion``, by hand or by rule, and rollback; one at a time.

The rules are :mod:`histoflow.registry.rules`.

Every change of ``champion`` happens under a registry-wide lock and re-reads the champion inside
it, so two concurrent promotions are serialised: the second is judged against the first's
winner. The lock is a registered model named ``<model>.promotion-lock``: creating a registered
model is atomic in every MLflow store (the name is unique), and deleting it releases the lock.

Each decision about a version is written to its ``promotion.*`` tags (the latest) and appended
to its ``promotion.history`` tag (every decision, oldest first): a later decision never erases
an earlier one, and the champion is never judged against itself.
"""

from __future__ import annotations

import getpass
import json
import platform
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from histoflow.config import RegistryConfig
from histoflow.metrics import WORST_CASE
from histoflow.registry._provenance import commit_with_lock
from histoflow.registry.mlflow_registry import CHALLENGER, CHAMPION, REGISTRATION
from histoflow.registry.rules import Decision, Evidence, decide
from histoflow.registry.tracking import tracking_uri, use_tracking_uri

__all__ = [
    "PromotionLockTimeout",
    "evidence",
    "promote",
    "promote_by_hand",
    "rollback",
    "status",
]

HISTORY = "champion.history"  # registered-model tag: JSON list of champion versions, oldest first
DECISIONS = "promotion.history"  # model-version tag: JSON list of every decision, oldest first
_STALE_LOCK_S = 600  # a lock older than this was left by a crashed process
_TAG_CHARS = 8000  # MLflow's limit on a tag value
_MD5 = "dvc.md5."  # run tags: the dvc.lock hash of each path (histoflow.registry.registration)


class PromotionLockTimeout(TimeoutError):
    """Another promotion held the lock for longer than ``registry.lock_timeout_s``."""


def evidence(client: MlflowClient, cfg: RegistryConfig, version: str) -> Evidence:
    """Read a version's promotion evidence from its run.

    Raises:
        ValueError: the version is incompletely registered or its run lacks ``cfg.metric``.
    """
    mv = client.get_model_version(cfg.model_name, version)
    if mv.tags.get(REGISTRATION, "complete") != "complete":
        raise ValueError(
            f"model {cfg.model_name} v{version} was not fully registered "
            f"({REGISTRATION}={mv.tags[REGISTRATION]}); it cannot be promoted"
        )
    metrics = client.get_run(mv.run_id).data.metrics
    if cfg.metric not in metrics:
        raise ValueError(
            f"model {cfg.model_name} v{version} (run {mv.run_id}) has no metric "
            f"{cfg.metric!r} to compare"
        )
    low, high = metrics.get(f"{cfg.metric}.ci_low"), metrics.get(f"{cfg.metric}.ci_high")
    return Evidence(
        str(version),
        float(metrics[cfg.metric]),
        None if low is None or high is None else (float(low), float(high)),
        {
            k.removeprefix("recall."): float(v)
            for k, v in metrics.items()
            if k.startswith("recall.")
        },
        seed_std=metrics.get(f"{cfg.metric}.seed_std"),
        worst_case=metrics.get(WORST_CASE),
        class_coverage={
            k.removeprefix("coverage."): float(v)
            for k, v in metrics.items()
            if k.startswith("coverage.")
        },
        alpha=metrics.get("conformal.alpha"),
    )


def promote(cfg: RegistryConfig, version: str, root: Path) -> Decision:
    """Move ``champion`` to ``version`` only if the rules allow; decision and evidence as tags.

    The champion itself is not judged (against itself it would "not beat the champion"): the
    decision says so and nothing is recorded.
    """
    client = _client(root)
    with _lock(client, cfg):
        champion = _champion(client, cfg)
        if champion == str(version):
            return _already_champion(client, cfg, champion)
        decision = decide(
            evidence(client, cfg, version),
            None if champion is None else evidence(client, cfg, champion),
            cfg,
        )
        if decision.promoted:
            _set_champion(client, cfg, version)
        _record(client, cfg, decision, "promoted" if decision.promoted else "kept champion")
    return decision


def promote_by_hand(cfg: RegistryConfig, version: str, root: Path, note: str = "") -> Decision:
    """Make ``version`` champion whatever the rules say; what they said is recorded with it."""
    client = _client(root)
    with _lock(client, cfg):
        champion = _champion(client, cfg)
        if champion == str(version):
            raise ValueError(f"{cfg.model_name} v{version} is already the champion")
        rules = decide(
            evidence(client, cfg, version),
            None if champion is None else evidence(client, cfg, champion),
            cfg,
        )
        _set_champion(client, cfg, version)
        decision = Decision(
            **{
                **asdict(rules),
                "promoted": True,
                "reason": f"by hand ({_who()}){': ' + note if note else ''}; rules said: "
                + ("promote" if rules.promoted else rules.reason),
            }
        )
        _record(client, cfg, decision, "promoted by hand")
    return decision


def rollback(cfg: RegistryConfig, root: Path, note: str = "") -> tuple[str, str]:
    """Give ``champion`` back to the previous champion; returns (from_version, to_version).

    Raises:
        ValueError: there is no champion, or no earlier champion recorded.
    """
    client = _client(root)
    with _lock(client, cfg):
        current = _champion(client, cfg)
        history = _history(client, cfg)
        if current is None:
            raise ValueError(f"{cfg.model_name} has no champion to roll back")
        earlier = [v for v in history if v != current]
        if not earlier:
            raise ValueError(
                f"{cfg.model_name} v{current} is the only champion recorded; nothing to roll "
                "back to (use `histoflow registry promote VERSION`)"
            )
        target = earlier[-1]
        client.set_registered_model_alias(cfg.model_name, CHAMPION, target)
        _save_history(client, cfg, [*[v for v in history if v != current]])
        stamp = f"{_now()} by {_who()}" + (f": {note}" if note else "")
        client.set_model_version_tag(cfg.model_name, current, "rollback.demoted", stamp)
        client.set_model_version_tag(
            cfg.model_name, target, "rollback.restored", f"{stamp} (was v{current})"
        )
        for version, what in (
            (current, f"demoted by rollback to v{target}"),
            (target, "restored by rollback"),
        ):
            _append_decision(
                client, cfg, version, {"decision": what, "at": _now(), "by": _who(), "note": note}
            )
    return current, target


def _already_champion(client: MlflowClient, cfg: RegistryConfig, version: str) -> Decision:
    tags = client.get_model_version(cfg.model_name, version).tags
    since = tags.get("promotion.at")
    value = evidence(client, cfg, version).value
    return Decision(
        version=version,
        promoted=True,
        reason=f"already the champion{f' (since {since})' if since else ''}; nothing to decide",
        metric=cfg.metric,
        challenger_value=value,
        champion_value=value,
        champion_version=version,
    )


def status(cfg: RegistryConfig, root: Path, *, data_root: str = "data") -> dict:
    """Champion and challenger with their metrics, provenance and promotion tags; the history.

    Provenance: the commit the run's code and params came from (``git_commit``), the data's DVC
    hash (``data_hash``, of ``data_root``), and the commit of ``root`` whose ``dvc.lock`` holds
    exactly the version's hashes (``state_commit``) with the command that restores that state
    (``checkout``); both None while the run's ``dvc.lock`` is in no commit.
    """
    client = _client(root)
    out: dict = {"model": cfg.model_name, "tracking_uri": tracking_uri(root)}
    for alias in (CHAMPION, CHALLENGER):
        try:
            mv = client.get_model_version_by_alias(cfg.model_name, alias)
        except MlflowException:
            out[alias] = None
            continue
        run = client.get_run(mv.run_id)
        m, tags = run.data.metrics, run.data.tags
        recalls = {k.removeprefix("recall."): v for k, v in m.items() if k.startswith("recall.")}
        hashes = {k.removeprefix(_MD5): v for k, v in tags.items() if k.startswith(_MD5)}
        state = commit_with_lock(root, hashes)
        out[alias] = {
            "version": str(mv.version),
            cfg.metric: m.get(cfg.metric),
            "ci": [m[f"{cfg.metric}.ci_low"], m[f"{cfg.metric}.ci_high"]]
            if f"{cfg.metric}.ci_low" in m
            else None,
            "min_class_recall": min(recalls.values()) if recalls else None,
            "accuracy": m.get("accuracy"),
            "seed_std": m.get(f"{cfg.metric}.seed_std"),
            "run_id": mv.run_id,
            "git_commit": tags.get("git_commit"),
            "data_hash": hashes.get(data_root),
            "state_commit": state,
            "checkout": None if state is None else f"git checkout {state} && dvc checkout",
            **{k: v for k, v in mv.tags.items() if k.startswith(("promotion.", "rollback."))},
        }
    out["history"] = _history(client, cfg)
    return out


def _client(root: Path) -> MlflowClient:
    use_tracking_uri(tracking_uri(root))
    return MlflowClient()


def _champion(client: MlflowClient, cfg: RegistryConfig) -> str | None:
    try:
        return str(client.get_model_version_by_alias(cfg.model_name, CHAMPION).version)
    except MlflowException:
        return None


def _history(client: MlflowClient, cfg: RegistryConfig) -> list[str]:
    tags = client.get_registered_model(cfg.model_name).tags
    return json.loads(tags.get(HISTORY, "[]"))


def _save_history(client: MlflowClient, cfg: RegistryConfig, history: list[str]) -> None:
    # Tag values are limited in size; 50 champions back is more than a rollback needs.
    client.set_registered_model_tag(cfg.model_name, HISTORY, json.dumps(history[-50:]))


def _set_champion(client: MlflowClient, cfg: RegistryConfig, version: str) -> None:
    history = _history(client, cfg)
    previous = _champion(client, cfg)
    if previous is not None and previous not in history:  # set before histories were kept
        history.append(previous)
    client.set_registered_model_alias(cfg.model_name, CHAMPION, str(version))
    _save_history(client, cfg, [*[v for v in history if v != str(version)], str(version)])


def _record(client: MlflowClient, cfg: RegistryConfig, decision: Decision, verdict: str) -> None:
    tags = {
        "promotion.decision": verdict,
        "promotion.reason": decision.reason,
        "promotion.metric": decision.metric,
        "promotion.challenger_value": f"{decision.challenger_value:.6f}",
        "promotion.champion_version": str(decision.champion_version),
        "promotion.champion_value": "none"
        if decision.champion_value is None
        else f"{decision.champion_value:.6f}",
        "promotion.at": _now(),
        "promotion.by": _who(),
        **{f"promotion.check.{k}": v for k, v in decision.checks.items()},
    }
    for key, value in tags.items():
        client.set_model_version_tag(cfg.model_name, decision.version, key, value)
    _append_decision(
        client,
        cfg,
        decision.version,
        {k.removeprefix("promotion."): v for k, v in tags.items() if "check." not in k},
    )


def _append_decision(client: MlflowClient, cfg: RegistryConfig, version: str, entry: dict) -> None:
    """Add ``entry`` to the version's ``promotion.history``; the oldest go first when it is full."""
    tags = client.get_model_version(cfg.model_name, version).tags
    entries = [*json.loads(tags.get(DECISIONS, "[]")), entry]
    text = json.dumps(entries)
    while len(text) > _TAG_CHARS and len(entries) > 1:
        entries = entries[1:]
        text = json.dumps(entries)
    client.set_model_version_tag(cfg.model_name, version, DECISIONS, text)


@contextmanager
def _lock(client: MlflowClient, cfg: RegistryConfig) -> Iterator[None]:
    """Hold ``<model>.promotion-lock`` (an atomically created registered model) meanwhile."""
    name, token = f"{cfg.model_name}.promotion-lock", uuid.uuid4().hex
    deadline, delay = time.monotonic() + cfg.lock_timeout_s, 0.05
    while True:
        try:
            client.create_registered_model(
                name,
                tags={"token": token, "holder": _who()},
                description=f"held by {_who()} since {_now()} while {cfg.model_name}'s champion "
                "changes; delete it if that process died",
            )
            break
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            _break_if_stale(client, name, _read_lock(client, name))
            if time.monotonic() > deadline:
                raise PromotionLockTimeout(
                    f"another promotion of {cfg.model_name} held {name!r} for over "
                    f"{cfg.lock_timeout_s:.0f} s; try again, or delete that registered model "
                    "if no promotion is running"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    try:
        yield
    finally:
        try:
            held = client.get_registered_model(name)
            if held.tags.get("token") == token:
                client.delete_registered_model(name)
        except MlflowException:
            pass


def _read_lock(client: MlflowClient, name: str):
    try:
        return client.get_registered_model(name)
    except MlflowException:
        return None


def _break_if_stale(client: MlflowClient, name: str, seen) -> None:
    """Delete the lock ``seen`` (as read earlier) if it is stale and still the one held.

    MLflow cannot delete conditionally, so a break is itself serialised by a second lock
    (``<lock>.break``, created atomically), and inside it the lock is read again: a waiter that
    judged an old lock stale never deletes the fresh lock another waiter has taken since.
    """
    if seen is None or time.time() - seen.creation_timestamp / 1000 <= _STALE_LOCK_S:
        return
    guard = f"{name}.break"
    try:
        client.create_registered_model(guard, description=f"{_who()} is breaking a stale {name}")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        held = _read_lock(client, guard)  # a breaker that died holding the guard
        if held is not None and time.time() - held.creation_timestamp / 1000 > _STALE_LOCK_S:
            client.delete_registered_model(guard)
        return
    try:
        now = _read_lock(client, name)
        if now is not None and (now.creation_timestamp, now.tags.get("token")) == (
            seen.creation_timestamp,
            seen.tags.get("token"),
        ):
            client.delete_registered_model(name)
    finally:
        client.delete_registered_model(guard)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _who() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{platform.node()}"
