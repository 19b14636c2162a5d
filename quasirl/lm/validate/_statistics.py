"""The experiments' statistics from their records: Exp 1's ROC, rates and Bayes check, Exp 2's
line and its chi-square test, Exp 3's observed-against-predicted comparison.

Uncertainty comes from resampling queries (the cluster bootstrap of ``quasirl.lm._stats``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import chi2

from ..._validate import QuasirlValueError, check_int
from .._chaining import ChainResult
from .._fitness import check_signals
from .._stats import (
    auroc,
    cluster_weights,
    icc,
    linear_fit,
    percentile_ci,
    ratio,
    roc_curve,
    wilson,
    youden_threshold,
)
from .._types import check_number, sample_seed
from ._results import (
    ArmComparison,
    BayesCheck,
    Calibration,
    Comparison,
    Prediction,
    Roc,
    SignalCalibration,
    Transfer,
    floats,
)
from ._theory import bayes_w

# ----------------------------------------------------------------------------------------------
# Exp 1: evaluator ROC
# ----------------------------------------------------------------------------------------------


def _split_halves(qids, split: float, seed: int) -> np.ndarray:
    """Boolean mask: True for samples whose query falls in the calibration half."""
    uq = np.unique(np.asarray(qids))
    perm = np.random.default_rng(sample_seed(seed, 303)).permutation(uq.size)
    n_cal = int(round(split * uq.size))
    if not 1 <= n_cal < uq.size:
        raise QuasirlValueError(
            f"split must leave at least one query in each half, got split={split} for "
            f"{uq.size} queries")
    return np.isin(np.asarray(qids), uq[perm[:n_cal]])


def _bayes_check(acc, correct, b1, b2, w_b1, seed) -> BayesCheck:
    """One-step Bayes check: w predicted from the rates on B1, observed on B2.

    Prediction draws: a cluster bootstrap of B1's queries, each replicate's rates drawn from
    their Jeffreys posteriors Beta(k + 1/2, n - k + 1/2) (so a rate observed as 0 / n still
    carries uncertainty). The observed wrong count among B2's accepted answers is compared
    with its predictive distribution Binomial(n accepted, w). Pass: inside the central 95%.
    """
    wrong = ~correct
    rng = np.random.default_rng(seed)

    def counts(w):
        return (w @ (acc * correct), w @ correct.astype(float), w @ (acc * wrong),
                w @ wrong.astype(float))

    tp, npos, fp, nneg = (x[0] for x in counts(b1.astype(float)[None, :]))
    w_pred = float(bayes_w(nneg / (npos + nneg), tp / npos, fp / nneg)) \
        if npos and nneg else float("nan")
    tp_d, npos_d, fp_d, nneg_d = counts(w_b1)
    ok = (npos_d > 0) & (nneg_d > 0)
    tpr_d = rng.beta(tp_d[ok] + 0.5, npos_d[ok] - tp_d[ok] + 0.5)
    fpr_d = rng.beta(fp_d[ok] + 0.5, nneg_d[ok] - fp_d[ok] + 0.5)
    eps_d = rng.beta(nneg_d[ok] + 0.5, npos_d[ok] + 0.5)
    w_pred_d = bayes_w(eps_d, tpr_d, fpr_d)
    n_acc = float((acc * b2).sum())
    n_wrong = float((acc * wrong * b2).sum())
    w_obs = n_wrong / n_acc if n_acc else float("nan")
    n_int = int(round(n_acc))
    if n_int and w_pred_d.size:
        sim = rng.binomial(n_int, np.clip(w_pred_d, 0, 1)) / n_int
        interval = percentile_ci(sim)
    else:
        interval = (np.nan, np.nan)
    ok_all = np.isfinite(interval).all() and np.isfinite(w_obs)
    return BayesCheck(
        w_predicted=w_pred,
        w_predicted_ci=floats(percentile_ci(w_pred_d) if w_pred_d.size else (np.nan, np.nan)),
        w_predictive=floats(interval), w_observed=w_obs,
        w_observed_wilson=floats(wilson(n_wrong, n_acc)), accepted_observed=n_acc,
        n_predict_samples=int(b1.sum()), n_observe_samples=int(b2.sum()),
        passed=bool(interval[0] <= w_obs <= interval[1]) if ok_all else None)


def analyze_calibration(records: Sequence[dict], signals=None, *, threshold="youden",
                        acceptance: str = "hard", split: float = 0.5, n_boot: int = 1000,
                        seed: int = 0) -> Calibration:
    """Exp 1 statistics from its records (see ``quasirl.lm.validate``).

    Args:
      threshold: ``"youden"`` (maximise TPR - FPR on the calibration half), a number, or a dict
        signal -> either.
      acceptance: ``hard`` (accept f >= threshold) or ``soft`` (accept with probability f: then
        TPR = E[f | correct] and FPR = E[f | wrong]).
      split: fraction of queries in the calibration half.
    """
    if not records:
        raise QuasirlValueError("records is empty: nothing to analyse")
    if acceptance not in ("hard", "soft"):
        raise QuasirlValueError(f"acceptance must be 'hard' or 'soft', got {acceptance!r}")
    signals = check_signals(signals or list(records[0]["fitness"]))
    n_boot = check_int("n_boot", n_boot, 1)
    split = check_number("split", split)

    def spec(s):
        return threshold.get(s, "youden") if isinstance(threshold, dict) else threshold

    for s in signals:
        if not (isinstance(spec(s), str) and spec(s) == "youden"):
            check_number(f"threshold of signal {s!r}" if isinstance(threshold, dict)
                         else "threshold", spec(s))
    qids = np.array([r["qid"] for r in records])
    correct = np.array([r["correct"] for r in records], dtype=bool)
    wrong = ~correct
    ones = np.ones(correct.size, dtype=bool)
    w_all, _ = cluster_weights(qids, n_boot, sample_seed(seed, 1))
    cal = _split_halves(qids, split, seed)
    hold = ~cal
    w_hold = np.zeros((n_boot, qids.size))
    w_hold[:, hold] = cluster_weights(qids[hold], n_boot, sample_seed(seed, 3))[0]
    # the Bayes check predicts from one half of the held-out queries (B1) and observes on the
    # other (B2): both are independent of the threshold chosen on the calibration half
    held = np.unique(qids[hold])
    order = np.random.default_rng(sample_seed(seed, 4)).permutation(held.size)
    b1 = hold & np.isin(qids, held[order[: held.size // 2]])
    b2 = hold & ~b1
    w_b1 = np.zeros((n_boot, qids.size))
    if b1.any():
        w_b1[:, b1] = cluster_weights(qids[b1], n_boot, sample_seed(seed, 6))[0]

    eps_draws = ratio(wrong, ones, w_all)
    per_signal, roc = {}, {}
    for s in signals:
        f = np.array([r["fitness"][s] for r in records], dtype=np.float64)
        if acceptance == "soft":
            th = None
            acc = f
        else:
            th = youden_threshold(f[cal], correct[cal]) if spec(s) == "youden" \
                else float(spec(s))
            acc = (f >= th).astype(np.float64)
        au_draws = auroc(f, correct, w_all)

        def rates(w, acc=acc):
            """TPR and FPR with sample weights w [B, n]."""
            with np.errstate(invalid="ignore", divide="ignore"):
                return ((w @ (acc * correct)) / (w @ correct.astype(float)),
                        (w @ (acc * wrong)) / (w @ wrong.astype(float)))

        tpr_h, fpr_h = (x[0] for x in rates(hold.astype(float)[None, :]))
        tpr_hd, fpr_hd = rates(w_hold)
        bayes = _bayes_check(acc, correct, b1, b2, w_b1, sample_seed(seed, 5, len(roc)))
        fr, tr, _ = roc_curve(f, correct)
        roc[s] = Roc(fpr=floats(fr), tpr=floats(tr))
        per_signal[s] = SignalCalibration(
            auroc=float(auroc(f, correct)), auroc_ci=floats(percentile_ci(au_draws)),
            informative=bool(percentile_ci(au_draws)[0] > 0.5), threshold=th,
            tpr=float(tpr_h), tpr_ci=floats(percentile_ci(tpr_hd)),
            fpr=float(fpr_h), fpr_ci=floats(percentile_ci(fpr_hd)),
            accept_rate_heldout=float(acc[hold].mean()),
            mean_fitness_correct=float(f[correct].mean()) if correct.any() else None,
            mean_fitness_wrong=float(f[wrong].mean()) if wrong.any() else None,
            bayes=bayes, tpr_draws=tpr_hd, fpr_draws=fpr_hd)
    n_per = np.bincount(np.unique(qids, return_inverse=True)[1])
    return Calibration(
        n_samples=int(correct.size), n_queries=int(np.unique(qids).size),
        eps=float(ratio(wrong, ones)), eps_wilson=floats(wilson(wrong.sum(), wrong.size)),
        eps_ci=floats(percentile_ci(eps_draws)), icc=icc(qids, wrong),
        samples_per_query=float(n_per.mean()), acceptance=acceptance, signals=per_signal,
        roc=roc, eps_draws=eps_draws)


# ----------------------------------------------------------------------------------------------
# Exp 2: transfer function
# ----------------------------------------------------------------------------------------------


def analyze_transfer(records: Sequence[dict], *, n_boot: int = 1000, seed: int = 0) -> Transfer:
    """Exp 2 statistics: eps(b) with Wilson intervals, the least-squares line g(b) = a + lam b
    on the samples with a cluster bootstrap over queries (paired across b), eps* = a / (1 - lam)
    (the fixed point g(eps*) = eps*), and a chi-square test of the line."""
    if not records:
        raise QuasirlValueError("records is empty: nothing to analyse")
    n_boot = check_int("n_boot", n_boot, 1)
    qids = np.array([r["qid"] for r in records])
    b = np.array([r["b"] for r in records], dtype=np.float64)
    y = np.array([not r["correct"] for r in records], dtype=np.float64)
    bs = np.unique(b)
    if bs.size < 2:
        raise QuasirlValueError("records must cover at least two values of b to fit a line")
    w, _ = cluster_weights(qids, n_boot, sample_seed(seed, 4))
    a, lam = linear_fit(b, y)
    a_d, lam_d = linear_fit(b, y, w)
    eps_b = np.array([y[b == v].mean() for v in bs])
    n_b = np.array([(b == v).sum() for v in bs])
    with np.errstate(invalid="ignore", divide="ignore"):
        eps_b_d = np.stack([(w[:, b == v] @ y[b == v]) / w[:, b == v].sum(1) for v in bs], 1)
        resid_d = eps_b_d - (a_d[:, None] + lam_d[:, None] * bs[None, :])
        fix_d = a_d / (1 - lam_d)
    resid = eps_b - (a + lam * bs)
    var = np.nanvar(resid_d, axis=0, ddof=1)
    var = np.where(var > 0, var, np.nan)
    stat = float(np.nansum(resid**2 / var))
    dof = int(np.isfinite(var).sum()) - 2
    p = float(chi2.sf(stat, dof)) if dof > 0 else None
    lo, hi = wilson(eps_b * n_b, n_b)
    return Transfer(
        bs=floats(bs), n=tuple(int(x) for x in n_b), eps=floats(eps_b), eps_wilson_lo=floats(lo),
        eps_wilson_hi=floats(hi), a=float(a), a_ci=floats(percentile_ci(a_d)), lam=float(lam),
        lam_ci=floats(percentile_ci(lam_d)),
        eps_star=float(a / (1 - lam)) if lam != 1 else None,
        eps_star_ci=floats(percentile_ci(fix_d)), chi2=stat, dof=dof, p_value=p,
        imitates=bool(percentile_ci(lam_d)[0] > 0), passed=None if p is None else bool(p > 0.05),
        a_draws=a_d, lam_draws=lam_d)


# ----------------------------------------------------------------------------------------------
# Exp 3: observed against predicted
# ----------------------------------------------------------------------------------------------


def compare(prediction: Prediction, runs: dict[str, ChainResult]) -> Comparison:
    """Observed eps_n (Wilson 95%) against the predictive bands; chi-square and slope."""
    rows, z2, pts = {}, [], []
    for arm, res in runs.items():
        p = prediction.arms[arm]
        n = np.array([r.n for r in res.rounds])
        k = np.array([r.wrong for r in res.rounds])
        obs = k / n
        lo, hi = wilson(k, n)
        pred = np.asarray(p.point[: obs.size])
        sd = np.asarray(p.sd[: obs.size])
        plo, phi = (np.asarray(x[: obs.size]) for x in p.predictive)
        covered = (obs >= plo) & (obs <= phi)
        first = 0 if not rows else 1  # round 0 is shared by all arms: count it once
        for i in range(first, obs.size):
            if sd[i] > 0:
                z2.append(((obs[i] - pred[i]) / sd[i]) ** 2)
            if i >= 1:
                pts.append((pred[i], obs[i], sd[i]))
        rows[arm] = ArmComparison(observed=floats(obs), wilson=(floats(lo), floats(hi)),
                                  covered=tuple(bool(c) for c in covered),
                                  accept_rate=floats(res.accept_rate), w=floats(res.w))
    stat = float(np.sum(z2))
    dof = len(z2)
    p_val = float(chi2.sf(stat, dof)) if dof else None
    slope = intercept = None
    if len(pts) >= 2:
        x, y, sd = (np.array(v) for v in zip(*pts, strict=True))
        wts = 1.0 / np.maximum(sd, 1e-6) ** 2
        a, lam = linear_fit(x, y, wts[None, :])
        slope, intercept = float(lam[0]), float(a[0])
    n_cov = sum(sum(r.covered[1:]) for r in rows.values())
    n_pts = sum(len(r.covered[1:]) for r in rows.values())
    return Comparison(arms=rows, chi2=stat, dof=dof, p_value=p_val, coverage=f"{n_cov}/{n_pts}",
                      calibration_slope=slope, calibration_intercept=intercept,
                      passed=None if p_val is None else bool(p_val > 0.05))
