"""Temperature scaling and class-conditional conformal sets on synthetic scores."""

import numpy as np
import torch
from scipy.stats import binom

from histoflow.models.calibration import (
    Calibration,
    fit_conformal,
    fit_temperature,
    set_labels,
)


def _nll(logits, y, t):
    log_p = torch.logsumexp((logits / t).log_softmax(-1), 1) - np.log(logits.shape[1])
    return float(torch.nn.functional.nll_loss(log_p, y))


def _over_confident(g, n):
    y = torch.randint(0, 3, (n,), generator=g)
    # Honest logits (a margin plus noise), times 6: the same ranking, far too sure of itself.
    honest = torch.randn(n, 1, 3, generator=g) + torch.nn.functional.one_hot(y, 3)[:, None]
    return 6 * honest, y


def test_temperature_scaling_lowers_nll_of_an_over_confident_model():
    g = torch.Generator().manual_seed(0)
    logits, y = _over_confident(g, 400)
    t = fit_temperature(logits, y)
    assert t > 3  # cooled down by about the factor it was inflated by
    # On fresh rows from the same model, not only on the rows T was fitted on.
    fresh, y_fresh = _over_confident(g, 400)
    assert _nll(fresh, y_fresh, t) < 0.5 * _nll(fresh, y_fresh, 1.0)
    # The predicted class never changes: one scalar divides every logit.
    assert torch.equal((fresh / t).softmax(-1).mean(1).argmax(1), fresh.mean(1).argmax(1))


def _draw(rng, n, margins=(2.5, 1.0, 0.2)):
    """Scores with a known, class-dependent difficulty: class 2 is nearly indistinguishable."""
    y = rng.choice(3, n, p=[0.6, 0.3, 0.1])  # class 2 is rare, too
    logits = rng.normal(0, 1, (n, 3))
    logits[np.arange(n), y] += np.asarray(margins)[y]
    probs = np.exp(logits)
    return probs / probs.sum(1, keepdims=True), y


def test_class_conditional_coverage_holds_per_class_over_repeated_draws():
    rng = np.random.default_rng(0)
    alpha, draws, n_test = 0.1, 10, 1000
    covered = np.zeros((draws, 3))
    counts = np.zeros((draws, 3))
    for d in range(draws):
        probs, y = _draw(rng, 500)
        scores, labels = fit_conformal(probs, y, alpha)
        cal = Calibration(alpha=alpha, scores=scores, labels=labels)
        t_probs, t_y = _draw(rng, n_test)
        # The conformal sets as such (served sets also always hold the top class: a superset).
        in_set = cal.prediction_sets(t_probs, nonempty=False)
        served = cal.prediction_sets(t_probs)
        assert (served >= in_set).all() and served[np.arange(n_test), t_probs.argmax(1)].all()
        for k in range(3):
            covered[d, k] = in_set[t_y == k, k].sum()
            counts[d, k] = (t_y == k).sum()
    coverage = covered.sum(0) / counts.sum(0)
    # Split conformal: 1 - alpha <= E[coverage] <= 1 - alpha + 1/(n_k + 1) per class; the pooled
    # test draws are binomial around it, so allow 3 binomial sds (n_k: the class's cal rows).
    n_cal = np.array([0.6, 0.3, 0.1]) * 500
    for k in range(3):
        total = counts[:, k].sum()
        sd = binom.std(total, 1 - alpha) / total
        assert 1 - alpha - 3 * sd <= coverage[k] <= 1 - alpha + 1 / (n_cal[k] + 1) + 3 * sd, (
            k,
            coverage,
        )
    # A pooled (not class-conditional) quantile would under-cover the hard, rare class 2;
    # Mondrian pays for it with larger sets there instead.
    assert in_set[t_y == 2].sum(1).mean() > in_set[t_y == 0].sum(1).mean()


def test_calibration_round_trips_through_model_json_and_names_sets():
    cal = Calibration(temperature=1.7, alpha=0.2, scores=(0.1, 0.4, 0.3), labels=(0, 1, 1))
    again = Calibration.from_meta({"calibration": cal.to_dict()})
    assert again == cal
    assert Calibration.from_meta({}) == Calibration()  # models saved before calibration existed
    assert set_labels(np.array([[True, False, True], [False, False, False]]), ["a", "b", "c"]) == [
        "a|c",
        "",
    ]
    # No conformal calibration: every class is in every set, nothing is promised.
    assert Calibration().prediction_sets(np.full((2, 3), 1 / 3)).all()
