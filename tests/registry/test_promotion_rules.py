"""The promotion rules alone (pure): margin, class-recall floor, CI lower bound, seed noise."""

from __future__ import annotations

import pytest

from histoflow.config import RegistryConfig
from histoflow.registry import Evidence, decide

RECALLS = {"a": 0.8, "b": 0.9}


def _ev(
    version,
    value,
    ci=None,
    recalls=RECALLS,
    seed_std=None,
    worst_case=None,
    coverage=None,
    alpha=None,
):
    return Evidence(
        version,
        value,
        ci,
        dict(recalls),
        seed_std=seed_std,
        worst_case=worst_case,
        class_coverage=coverage or {},
        alpha=alpha,
    )


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
        _ev(
            "2",
            0.79,
            ci=(0.6, 0.9),
            recalls={"a": 0.1, "b": 0.9},
            seed_std=0.01,
            worst_case=0.4,
            coverage={"a": 0.5, "b": 0.95},
            alpha=0.1,
        ),
        _ev("1", 0.80, worst_case=0.7),
        RegistryConfig(min_class_recall=0.5),
    )
    assert not decision.promoted
    assert [c.split(":")[0] for c in decision.checks.values()] == ["fail"] * 6
    assert decision.reason.count(";") == 5


def test_a_gain_within_the_seed_noise_is_not_a_promotion():
    champion = _ev("1", 0.80, seed_std=0.02)
    cfg = RegistryConfig()  # noise_factor 2: the gain must exceed 2 x the larger seed std
    within = decide(_ev("2", 0.83, seed_std=0.01), champion, cfg)
    assert not within.promoted
    assert within.checks["noise"] == "fail: gain +0.0300 vs 2 x seed std 0.0200 = 0.0400"
    assert "within the noise of training" in within.reason
    beyond = decide(_ev("2", 0.85, seed_std=0.01), champion, cfg)
    assert beyond.promoted and beyond.checks["noise"].startswith("pass: gain +0.0500")
    assert "seed std" in beyond.reason
    # Only one side measured its spread: that one is the noise.
    assert not decide(_ev("2", 0.83), champion, cfg).promoted
    assert decide(_ev("2", 0.83), champion, RegistryConfig(noise_factor=1)).promoted
    # No spread recorded, or the rule off: skipped, and said so.
    plain = decide(_ev("2", 0.81), _ev("1", 0.80), cfg)
    assert plain.promoted
    assert plain.checks["noise"] == "skipped: no spread over seeds recorded (evaluate.seeds)"
    off = decide(_ev("2", 0.81, seed_std=0.1), champion, RegistryConfig(noise_factor=0))
    assert off.promoted and off.checks["noise"] == "skipped: registry.noise_factor is 0"


def test_a_more_fragile_challenger_is_not_promoted():
    champion = _ev("1", 0.80, worst_case=0.70)
    cfg = RegistryConfig(robustness_tolerance=0.02)
    # Better on clean tiles, but breaks under a perturbation the champion survives.
    fragile = decide(_ev("2", 0.90, worst_case=0.55), champion, cfg)
    assert not fragile.promoted
    assert fragile.checks["robustness"] == (
        "fail: worst-case macro recall 0.5500 vs champion v1 0.7000 - tolerance 0.02 = 0.6800"
    )
    assert "more fragile than the champion" in fragile.reason
    within = decide(_ev("2", 0.90, worst_case=0.69), champion, cfg)
    assert within.promoted and within.checks["robustness"].startswith("pass: worst-case")
    # Either side without a certificate, or the rule off: skipped, and said so.
    assert (
        decide(_ev("2", 0.90), champion, cfg)
        .checks["robustness"]
        .startswith("skipped: no worst-case macro recall recorded for v2")
    )
    off = decide(_ev("2", 0.9, worst_case=0.1), champion, RegistryConfig(robustness_tolerance=None))
    assert off.promoted and off.checks["robustness"] == (
        "skipped: registry.robustness_tolerance is null"
    )


def test_conformal_coverage_of_every_class_must_keep_its_promise():
    cfg = RegistryConfig(coverage_tolerance=0.05)  # alpha 0.1: every class >= 0.85
    kept = decide(_ev("1", 0.9, coverage={"a": 0.86, "b": 0.97}, alpha=0.1), None, cfg)
    assert kept.promoted and kept.checks["coverage"] == (
        "pass: every class coverage >= 0.850 (lowest 0.8600)"
    )
    broken = decide(_ev("2", 0.9, coverage={"a": 0.84, "b": 0.97}, alpha=0.1), _ev("1", 0.8), cfg)
    assert not broken.promoted
    assert broken.checks["coverage"] == "fail: a 0.8400 < 0.850"
    assert "conformal coverage below 1 - alpha 0.1 - tolerance 0.05 = 0.850: a 0.8400" in (
        broken.reason
    )
    # Models evaluated before conformal sets existed, or the rule switched off: skipped, said so.
    assert decide(_ev("1", 0.9), None, cfg).checks["coverage"].startswith("skipped: no conformal")
    off = decide(
        _ev("1", 0.9, coverage={"a": 0.1}, alpha=0.1), None, RegistryConfig(coverage_tolerance=None)
    )
    assert off.promoted and off.checks["coverage"] == "skipped: registry.coverage_tolerance is null"
