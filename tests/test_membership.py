"""Tests of utils.membership: losses, the attack's AUC and interval, and the DP bound."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss

from utils import membership


def test_per_example_loss_matches_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    p = rng.uniform(0.01, 0.99, 50)
    loss = membership.per_example_loss(y, p)
    assert loss.shape == (50,)
    assert loss.mean() == pytest.approx(log_loss(y, p))
    probs = rng.dirichlet(np.ones(4), 30)
    labels = rng.integers(0, 4, (30, 1))
    assert membership.per_example_loss(labels, probs).mean() == pytest.approx(
        log_loss(labels.ravel(), probs, labels=range(4))
    )
    # a confident mistake costs a large, finite loss
    assert np.isfinite(membership.per_example_loss([1], [0.0])).all()


def test_per_example_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="2 labels but probs has 3"):
        membership.per_example_loss([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="labels 0 or 1"):
        membership.per_example_loss([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="0..2"):
        membership.per_example_loss([0, 3], np.full((2, 3), 1 / 3))


def test_attack_separates_and_cannot_tell():
    rng = np.random.default_rng(1)
    perfect = membership.attack(np.arange(10, 20), np.arange(10), n_boot=200)
    assert perfect.auc == 1.0 and perfect.low == 1.0 and perfect.advantage == 1.0
    assert perfect.tpr_at_fpr[0.01] == 1.0 and (perfect.n_members, perfect.n_nonmembers) == (10, 10)
    same = membership.attack(rng.normal(size=300), rng.normal(size=300), n_boot=300)
    assert same.low < 0.5 < same.high  # the same distribution: the interval includes a coin
    reversed_ = membership.attack(np.arange(10), np.arange(10, 20), n_boot=100)
    assert reversed_.auc == 0.0  # the score's direction matters: higher must mean "member"


def test_loss_threshold_attack_finds_an_overfitted_model():
    rng = np.random.default_rng(2)
    y_in, y_out = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    p_in = np.where(y_in == 1, 0.95, 0.05)  # memorised training labels

    def honest(y):  # the same imperfect fit for any example, seen or not
        return np.clip(np.where(y == 1, 0.7, 0.3) + rng.normal(0, 0.2, len(y)), 0.01, 0.99)

    p_out = honest(y_out)
    result = membership.loss_threshold_attack(y_in, p_in, y_out, p_out, n_boot=200)
    assert result.low > 0.5
    fair = membership.loss_threshold_attack(y_in, honest(y_in), y_out, p_out, n_boot=200)
    assert fair.low < 0.5 < fair.high


def test_attack_rejects_too_few_or_non_finite_scores():
    with pytest.raises(ValueError, match="at least 2 members"):
        membership.attack([1.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="finite"):
        membership.attack([1.0, np.nan], [0.0, 1.0])


def test_dp_auc_bound_closed_form():
    assert membership.dp_auc_bound(0.0) == pytest.approx(0.5, abs=1e-6)
    for eps in (0.5, 1.0, 4.0):
        e = np.exp(eps)
        x = 1 / (1 + e)  # where the two sides of the envelope meet when delta = 0
        exact = e * x**2 / 2 + (1 - x) - ((1 - x) ** 2 / 2) / e
        assert membership.dp_auc_bound(eps) == pytest.approx(exact, abs=1e-6)
    bounds = [membership.dp_auc_bound(eps, 1e-5) for eps in (0.1, 1, 2, 8, 30)]
    assert all(a < b for a, b in zip(bounds, bounds[1:])) and bounds[-1] == pytest.approx(1.0, abs=1e-5)
    assert membership.dp_auc_bound(1.0, 0.1) > membership.dp_auc_bound(1.0, 0.0)
    with pytest.raises(ValueError, match="epsilon"):
        membership.dp_auc_bound(-1)
    with pytest.raises(ValueError, match="delta"):
        membership.dp_auc_bound(1, 1.0)
