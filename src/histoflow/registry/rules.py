"""The promotion rules, as a pure function of two versions' evidence (no registry access).

Rules (``params.yaml`` ``registry``), checked in this order:

1. ``floor``: no class recall of the challenger below ``min_class_recall``;
2. ``margin``: the challenger's ``metric`` beats the champion's by more than ``min_improvement``;
3. ``ci``: where the challenger has a CI for ``metric`` (``evaluate.json`` ``ci``), its lower
   bound is not below the champion's point value (skipped, and said so, without one);
4. ``noise``: where a spread over seeds was recorded (``evaluate.seeds``), the gain over the
   champion exceeds ``noise_factor`` x the seed std of ``metric`` (the larger of the two
   versions' where both have one): a gain within the noise of one training run is chance;
5. ``robustness``: where both versions have a worst-case macro recall under perturbation
   (``evaluate.robustness``), the challenger's is not below the champion's by more than
   ``robustness_tolerance``: a model that gains on clean tiles but breaks on another lab's
   stain or scanner is not promoted;
6. ``coverage``: where the challenger's conformal sets were evaluated, every class's test
   coverage is at least ``1 - alpha - coverage_tolerance``: a model whose sets do not keep
   their promise for some class must not serve them (checked with or without a champion).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from histoflow.config import RegistryConfig

__all__ = ["Decision", "Evidence", "decide"]


@dataclass(frozen=True)
class Evidence:
    """What the rules read about one model version (from its run's metrics)."""

    version: str
    value: float
    ci: tuple[float, float] | None
    class_recall: dict[str, float]
    seed_std: float | None = None  # std of the metric over evaluate.seeds, where recorded
    worst_case: float | None = None  # worst-case macro recall under perturbation, where recorded
    # Conformal sets' test coverage per class and the alpha they were built for, where evaluated.
    class_coverage: dict[str, float] = field(default_factory=dict)
    alpha: float | None = None


@dataclass(frozen=True)
class Decision:
    """A promotion verdict: promoted or not, why, and each rule's check."""

    version: str
    promoted: bool
    reason: str
    metric: str
    challenger_value: float
    champion_value: float | None
    champion_version: str | None
    checks: dict[str, str] = field(default_factory=dict)  # rule -> "pass: ...", "fail: ...", ...


def decide(challenger: Evidence, champion: Evidence | None, cfg: RegistryConfig) -> Decision:
    """Apply the promotion rules (pure: no registry access)."""
    checks: dict[str, str] = {}
    failures: list[str] = []
    low = {c: r for c, r in challenger.class_recall.items() if r < cfg.min_class_recall}
    if low:
        worst = ", ".join(f"{c} {r:.4f}" for c, r in sorted(low.items()))
        failures.append(f"class recall below the floor {cfg.min_class_recall}: {worst}")
        checks["floor"] = f"fail: {worst} < {cfg.min_class_recall}"
    else:
        checks["floor"] = f"pass: every class recall >= {cfg.min_class_recall}"
    if champion is None:
        checks["margin"] = checks["ci"] = checks["noise"] = "skipped: no champion yet"
        checks["robustness"] = "skipped: no champion yet"
    else:
        against = f"champion v{champion.version} {champion.value:.4f}"
        beats = challenger.value > champion.value + cfg.min_improvement
        checks["margin"] = (
            f"{'pass' if beats else 'fail'}: {challenger.value:.4f} vs {against} "
            f"+ {cfg.min_improvement}"
        )
        if not beats:
            failures.append(
                f"{cfg.metric} {challenger.value:.4f} does not beat {against} "
                f"+ margin {cfg.min_improvement}"
            )
        if not cfg.ci_rule:
            checks["ci"] = "skipped: registry.ci_rule is false"
        elif challenger.ci is None:
            checks["ci"] = "skipped: no CI recorded for the challenger"
        else:
            ok = challenger.ci[0] >= champion.value
            checks["ci"] = (
                f"{'pass' if ok else 'fail'}: lower bound {challenger.ci[0]:.4f} vs {against}"
            )
            if not ok:
                failures.append(
                    f"{cfg.metric} 95% CI lower bound {challenger.ci[0]:.4f} is below {against}"
                )
        checks["noise"], failure = _noise(challenger, champion, cfg)
        if failure:
            failures.append(failure)
        checks["robustness"], failure = _robustness(challenger, champion, cfg)
        if failure:
            failures.append(failure)
    checks["coverage"], failure = _coverage(challenger, cfg)
    if failure:
        failures.append(failure)
    if failures:
        reason = "; ".join(failures)
    elif champion is None:
        reason = "no champion yet"
    else:
        reason = (
            f"{cfg.metric} {challenger.value:.4f} beats champion v{champion.version} "
            f"{champion.value:.4f} + margin {cfg.min_improvement}"
            + (f" (CI lower bound {challenger.ci[0]:.4f})" if "pass" in checks["ci"] else "")
            + (f" ({checks['noise'].removeprefix('pass: ')})" if "pass" in checks["noise"] else "")
        )
    return Decision(
        challenger.version,
        not failures,
        reason,
        cfg.metric,
        challenger.value,
        None if champion is None else champion.value,
        None if champion is None else champion.version,
        checks,
    )


def _noise(challenger: Evidence, champion: Evidence, cfg: RegistryConfig) -> tuple[str, str | None]:
    """The ``noise`` rule's check and, when it fails, the reason."""
    if cfg.noise_factor == 0:
        return "skipped: registry.noise_factor is 0", None
    stds = [e.seed_std for e in (challenger, champion) if e.seed_std is not None]
    if not stds:
        return "skipped: no spread over seeds recorded (evaluate.seeds)", None
    std, gain = max(stds), challenger.value - champion.value
    need = cfg.noise_factor * std
    verdict = f"gain {gain:+.4f} vs {cfg.noise_factor:g} x seed std {std:.4f} = {need:.4f}"
    if gain > need:
        return f"pass: {verdict}", None
    return (
        f"fail: {verdict}",
        f"{cfg.metric} gain {gain:+.4f} over champion v{champion.version} is within the noise "
        f"of training: {cfg.noise_factor:g} x seed std {std:.4f} = {need:.4f}",
    )


def _robustness(
    challenger: Evidence, champion: Evidence, cfg: RegistryConfig
) -> tuple[str, str | None]:
    """The ``robustness`` rule's check (both worst cases, the tolerance) and, failing, why."""
    if cfg.robustness_tolerance is None:
        return "skipped: registry.robustness_tolerance is null", None
    missing = [f"v{e.version}" for e in (challenger, champion) if e.worst_case is None]
    if missing:
        return (
            f"skipped: no worst-case macro recall recorded for {', '.join(missing)} "
            "(evaluate.robustness)",
            None,
        )
    need = champion.worst_case - cfg.robustness_tolerance
    verdict = (
        f"worst-case macro recall {challenger.worst_case:.4f} vs champion v{champion.version} "
        f"{champion.worst_case:.4f} - tolerance {cfg.robustness_tolerance:g} = {need:.4f}"
    )
    if challenger.worst_case >= need:
        return f"pass: {verdict}", None
    return (
        f"fail: {verdict}",
        f"more fragile than the champion: {verdict}",
    )


def _coverage(challenger: Evidence, cfg: RegistryConfig) -> tuple[str, str | None]:
    """The ``coverage`` rule's check and, when it fails, the reason."""
    if cfg.coverage_tolerance is None:
        return "skipped: registry.coverage_tolerance is null", None
    if challenger.alpha is None or not challenger.class_coverage:
        return "skipped: no conformal coverage recorded for the challenger", None
    need = 1 - challenger.alpha - cfg.coverage_tolerance
    low = {c: v for c, v in challenger.class_coverage.items() if v < need}
    if not low:
        worst = min(challenger.class_coverage.values())
        return f"pass: every class coverage >= {need:.3f} (lowest {worst:.4f})", None
    listed = ", ".join(f"{c} {v:.4f}" for c, v in sorted(low.items()))
    return (
        f"fail: {listed} < {need:.3f}",
        f"conformal coverage below 1 - alpha {challenger.alpha:g} - tolerance "
        f"{cfg.coverage_tolerance:g} = {need:.3f}: {listed}",
    )
