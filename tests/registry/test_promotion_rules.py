"""The promotion rules alone (pure): margin, class-recall floor, and the CI lower bound."""

from __future__ import annotations

import pytest

from histoflow.config import RegistryConfig
from histoflow.registry import Evidence, decide

RECALLS = {"a": 0.8, "b": 0.9}


def _ev(version, value, ci=None, recalls=RECALLS):
    return Evidence(version, value, ci, dict(recalls))


def test_first_model_is_promoted_unless_a_class_is_below_the_floor():
    cfg = RegistryConfig(min_class_recall=0.85)
    assert decide(_ev("1", 0.9, recalls={"a": 0.9, "b": 0.95}), None, cfg).promoted
    decision = decide(_ev("1", 0.9), None, cfg)
    assert not decision.promoted
    assert decision.reason == "class recall below the floor 0.85: a 0.8000"
    assert decision.checks["margin"] == "skipped: no champion yet"


@pytest.mark.parametrize(
    ("value", "margin", "promoted"),
    [(0.81, 0.0, True), (0.80, 0.0, False), (0.82, 0.05, False), (0.86, 0.05, True)],
)
def test_margin(value, margin, promoted):
    decision = decide(_ev("2", value), _ev("1", 0.80), RegistryConfig(min_improvement=margin))
    assert decision.promoted is promoted
    assert decision.champion_version == "1" and decision.champion_value == 0.80
    if not promoted:
        assert "does not beat champion v1 0.8000" in decision.reason


def test_ci_lower_bound_must_reach_the_champion_when_there_is_a_ci():
    champion = _ev("1", 0.80)
    wide = decide(_ev("2", 0.85, ci=(0.70, 0.95)), champion, RegistryConfig())
    assert not wide.promoted and "CI lower bound 0.7000 is below champion v1" in wide.reason
    tight = decide(_ev("2", 0.85, ci=(0.81, 0.90)), champion, RegistryConfig())
    assert tight.promoted and tight.checks["ci"].startswith("pass")
    # Without a CI (evaluate.json has none) the rule is skipped and says so.
    none = decide(_ev("2", 0.85), champion, RegistryConfig())
    assert none.promoted and none.checks["ci"] == "skipped: no CI recorded for the challenger"
    off = decide(_ev("2", 0.85, ci=(0.70, 0.95)), champion, RegistryConfig(ci_rule=False))
    assert off.promoted


def test_every_failed_rule_is_in_the_reason():
    decision = decide(
        _ev("2", 0.79, ci=(0.6, 0.9), recalls={"a": 0.1, "b": 0.9}),
        _ev("1", 0.80),
        RegistryConfig(min_class_recall=0.5),
    )
    assert not decision.promoted
    assert [c.split(":")[0] for c in decision.checks.values()] == ["fail", "fail", "fail"]
    assert decision.reason.count(";") == 2
