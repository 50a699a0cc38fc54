"""Membership-inference audits: can an attacker tell a model's training examples from unseen ones?

Taught in chapter 6 (privacy: what a given ε means, measured) and used in chapter 5 (does the GAN's
discriminator remember its training images?).  The attack is the simplest one that works in practice,
the loss-threshold attack of Yeom et al. (2018): a model fits its training examples better than unseen
ones, so "low loss" suggests "member".  Stronger attacks exist (LiRA, Carlini et al. 2022, trains shadow
models); the loss-threshold attack gives a lower bound on what an attacker can learn, not an upper one.

* :func:`per_example_loss` — cross-entropy of each example (the attack's score is its negative);
* :func:`attack` — the attack's ROC AUC with a bootstrap interval, its membership advantage
  (max TPR − FPR) and its TPR at small FPRs (the operating points Carlini et al. recommend reporting);
* :func:`loss_threshold_attack` — both together, from labels and predicted probabilities;
* :func:`dp_auc_bound` — the largest AUC *any* attack can reach on one example's membership under
  (ε, δ)-differential privacy (the hypothesis-testing view of DP, Kairouz et al. 2015), to set beside
  the measured one.

An AUC of 0.5 means the attacker does no better than a coin; its interval says whether the run can tell.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_curve

from . import metrics

EPS = 1e-7  # probabilities are clipped to [EPS, 1 - EPS] before the logarithm


@dataclass(frozen=True)
class AttackResult:
    """Outcome of a membership-inference attack (members are the positive class)."""

    auc: float
    low: float
    high: float
    advantage: float  # max over thresholds of TPR - FPR (Yeom et al. 2018)
    tpr_at_fpr: dict[float, float]
    n_members: int
    n_nonmembers: int


def per_example_loss(y_true, probs) -> np.ndarray:
    """Cross-entropy of each example, in nats.

    ``probs`` is either (N,) — the probability of class 1 of a binary model — or (N, C) class
    probabilities; ``y_true`` holds integer labels (N,) or (N, 1).  Probabilities are clipped to
    ``[EPS, 1 - EPS]`` so that a confident mistake costs a large but finite loss.
    """
    y = np.asarray(y_true).reshape(-1).astype(int)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if len(p) != len(y):
        raise ValueError(f"y_true has {len(y)} labels but probs has {len(p)} rows")
    p = np.clip(p, EPS, 1 - EPS)
    if p.ndim == 1:
        if not np.isin(y, (0, 1)).all():
            raise ValueError("binary probabilities (N,) need labels 0 or 1")
        return -np.where(y == 1, np.log(p), np.log1p(-p))
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"labels must lie in 0..{p.shape[1] - 1} for {p.shape[1]} class probabilities")
    return -np.log(p[np.arange(len(y)), y])


def attack(
    member_scores, nonmember_scores, *, n_boot: int = 1000, seed: int = 0, fprs: tuple[float, ...] = (0.01, 0.1)
) -> AttackResult:
    """Score an attack whose score is higher for examples it believes are members.

    The AUC's 95 % interval comes from a bootstrap that resamples members and non-members separately
    (:func:`utils.metrics.bootstrap_ci`, stratified).  ``tpr_at_fpr`` interpolates the ROC curve at each
    FPR in ``fprs``; with few non-members these low-FPR points are coarse (1 / n_nonmembers is the
    smallest FPR the data can show), so read them beside the counts.
    """
    m = np.asarray(member_scores, dtype=np.float64).reshape(-1)
    n = np.asarray(nonmember_scores, dtype=np.float64).reshape(-1)
    if len(m) < 2 or len(n) < 2:
        raise ValueError(f"an attack needs at least 2 members and 2 non-members (got {len(m)} and {len(n)})")
    if not (np.isfinite(m).all() and np.isfinite(n).all()):
        raise ValueError("attack scores must be finite")
    y = np.r_[np.ones(len(m), int), np.zeros(len(n), int)]
    s = np.r_[m, n]
    auc, lo, hi = metrics.bootstrap_ci(metrics.rank_auc, y, s, n_boot=n_boot, seed=seed, stratified=True)
    fpr, tpr, _ = roc_curve(y, s)
    return AttackResult(
        auc=float(auc),
        low=float(lo),
        high=float(hi),
        advantage=float(np.max(tpr - fpr)),
        tpr_at_fpr={float(f): float(np.interp(f, fpr, tpr)) for f in fprs},
        n_members=len(m),
        n_nonmembers=len(n),
    )


def loss_threshold_attack(y_members, p_members, y_nonmembers, p_nonmembers, **kwargs) -> AttackResult:
    """Yeom et al.'s attack: the score of an example is minus its loss under the model.

    ``y_*`` are labels and ``p_*`` the model's predicted probabilities (see :func:`per_example_loss`) for
    training examples (members) and examples the model never saw (non-members); ``kwargs`` go to
    :func:`attack`.  Use non-members from the same distribution as the members (for example the test
    split), ideally as many as members.
    """
    return attack(-per_example_loss(y_members, p_members), -per_example_loss(y_nonmembers, p_nonmembers), **kwargs)


def dp_auc_bound(epsilon: float, delta: float = 0.0) -> float:
    """Largest ROC AUC of any membership test against an (ε, δ)-DP training algorithm.

    (ε, δ)-DP forces every test of "example in" against "example out" to satisfy
    TPR ≤ e^ε · FPR + δ and 1 − FPR ≤ e^ε · (1 − TPR) + δ (Kairouz, Oh and Viswanath 2015), so the ROC
    curve lies under ``min(1, e^ε x + δ, 1 − e^{−ε} (1 − δ − x))``; this returns the area under that
    envelope.  It bounds the strongest attacker on one example; a loss-threshold attack averaged over a
    data set usually sits far below it.
    """
    if not np.isfinite(epsilon) or epsilon < 0:
        raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon!r}")
    if not 0 <= delta < 1:
        raise ValueError(f"delta must lie in [0, 1), got {delta!r}")
    x = np.linspace(0.0, 1.0, 200_001)
    e = np.exp(epsilon)
    envelope = np.minimum.reduce([np.ones_like(x), e * x + delta, 1 - (1 - delta - x) / e])
    envelope = np.clip(envelope, x, 1.0)  # a test is never worse than guessing (flip it otherwise)
    return float(np.trapezoid(envelope, x))
