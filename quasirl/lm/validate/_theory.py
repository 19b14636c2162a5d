"""Exp 3's prediction: the boosting recurrence of ``quasirl.selection`` fed the measured
ingredients, with a parametric bootstrap over their uncertainty."""

from __future__ import annotations

import numpy as np

from ..._validate import QuasirlValueError, check_int
from .._chaining import ARMS
from .._types import sample_seed
from ._results import (
    ArmPrediction,
    Calibration,
    ContrastPrediction,
    Criterion,
    Ingredients,
    Prediction,
    Transfer,
    floats,
)


def _selection():
    from ... import selection

    return selection


def bayes_w(eps, tpr, fpr):
    """Wrong fraction among accepted answers (vectorised): eps FPR / (eps FPR + (1-eps) TPR)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return eps * fpr / (eps * fpr + (1 - eps) * tpr)


def adapt(eps0, tpr, fpr, a, lam, rounds) -> np.ndarray:
    """Theory trajectories [B, rounds + 1] for draws of the ingredients (quasirl.selection).

    g(b) = a + lam b is passed as ``partial_imitation(eps* = a / (1 - lam), lam)``, with lam
    clipped to [0, 1] and eps* to [0, 1] (a bootstrap draw outside them is pulled back).
    """
    sel = _selection()
    eps0, tpr, fpr, a, lam = np.broadcast_arrays(
        *(np.atleast_1d(np.asarray(x, dtype=np.float64)) for x in (eps0, tpr, fpr, a, lam)))
    lam_c = np.clip(lam, 0.0, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        star = np.where(lam_c < 1, np.clip(a / (1.0 - lam_c), 0.0, 1.0), 0.5)
    g = sel.partial_imitation(star, lam_c)
    return np.asarray(sel.adapt_trajectory(np.clip(eps0, 0, 1), np.clip(tpr, 0, 1),
                                           np.clip(fpr, 0, 1), g, rounds), dtype=np.float64)


def one_step(a, lam, w) -> np.ndarray:
    """The prediction's map g (as :func:`adapt` clips it) applied to observed wrong shares w:
    eps_{n+1} predicted from what an arm really kept in round n."""
    lam_c = float(np.clip(lam, 0.0, 1.0))
    star = float(np.clip(a / (1.0 - lam_c), 0.0, 1.0)) if lam_c < 1 else 0.5
    return (1.0 - lam_c) * star + lam_c * np.asarray(w, dtype=np.float64)


def arm_rates(arm, n, tpr=None, fpr=None):
    """(TPR, FPR) of an arm: the signal's for ``filtered``; 1, 0 for ``oracle``; 1, 1 for the
    ``unfiltered`` and ``random`` arms (acceptance independent of correctness)."""
    if arm == "filtered":
        return tpr, fpr
    if arm == "oracle":
        return np.ones(n), np.zeros(n)
    return np.ones(n), np.ones(n)


CONTRASTS = (("filtered", "unfiltered"), ("oracle", "unfiltered"), ("filtered", "random"))
"""The paired contrasts of Exp 3 (first arm minus second), the primary test."""


def contrast_name(a: str, b: str) -> str:
    return f"{a}-{b}"


def criteria(n_contrasts: int, alpha: float = 0.05) -> tuple[Criterion, ...]:
    """The pass/fail criteria, stated before the run (``compare`` evaluates them)."""
    return (
        Criterion(
            name="joint_contrasts",
            statistic="Q = sum of z_j^2 over every paired contrast and round n >= 1, z_j = "
                      "(observed - predicted) / sd_total_j, with sd_total^2 the diagonal of "
                      "S = contrast_param_cov + the query cluster bootstrap covariance of the "
                      "observed contrasts (queries resampled per round, the same for every "
                      "arm; a round of n queries scaled by n / (n - 1)), carried to later "
                      "rounds through g: dE_n = dEps_n + lam dW_(n-1), "
                      "dW_n = dw_n + J_n lam dW_(n-1), J = d w / d eps; p = P(sum_i r_i X_i^2 "
                      "> Q), X_i standard normal, r_i the eigenvalues of the correlation "
                      "matrix of S (Imhof 1961)",
            rule="p_value > alpha", alpha=alpha),
        Criterion(
            name="each_contrast",
            statistic=f"|observed - predicted| / sd_total for each of the {n_contrasts} "
                      "contrast points, sd_total^2 = parameter variance + bootstrap variance",
            rule=f"every |z| <= z(1 - alpha / (2 * {n_contrasts})) (Bonferroni)", alpha=alpha),
    )


def _arm_moments(arm, draws, tpd, fpd, acc_filtered):
    """Per draw and round: acceptance rate, expected w and dw/deps of ``arm``."""
    sel = _selection()
    if arm == "random":  # accepts at the filtered arm's rate, independently of correctness
        acc = acc_filtered if acc_filtered is not None else np.ones_like(draws)
        return acc, draws, np.ones_like(draws)
    acc = np.asarray(sel.acceptance_rate(draws, tpd[:, None], fpd[:, None]), dtype=np.float64)
    w = bayes_w(draws, tpd[:, None], fpd[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        jac = tpd[:, None] * fpd[:, None] / acc**2
    return acc, np.nan_to_num(w), np.nan_to_num(jac)


def _sampling_var(draws, acc, w, jac, lam, deff, n_obs):
    """Predicted sampling variance of an arm's observed eps_n (rounds 0 .. R): the round's own
    noise (Q N samples, design effect) and the noise of the buffer's wrong fraction carried
    on through g: V_n = v_n + lam^2 U_(n-1), U_n = u_n + J_n^2 lam^2 U_(n-1)."""
    v = draws * (1 - draws) * deff / n_obs
    with np.errstate(invalid="ignore", divide="ignore"):
        u = np.where(acc > 0, w * (1 - w) * deff / (n_obs * acc), 0.0)
    u = np.nan_to_num(u)
    lam2 = np.clip(lam, 0, 1)[:, None] ** 2
    total = v.copy()
    carried = np.zeros(draws.shape[0])
    for n in range(draws.shape[1]):
        if n:
            total[:, n] += lam2[:, 0] * carried
        carried = u[:, n] + jac[:, n] ** 2 * lam2[:, 0] * carried
    return total, v


def predict_trajectory(calibration: Calibration, transfer: Transfer, *, signal: str,
                       rounds: int, queries_per_round: int, samples_per_query: int,
                       arms=ARMS, seed: int = 0, alpha: float = 0.05) -> Prediction:
    """Predict each arm's error trajectory and the paired contrasts before running them.

    Point: ``quasirl.selection.adapt_trajectory`` with the measured eps (Exp 1), TPR and FPR
    of ``signal`` (Exp 1, held-out half) and g(b) = a + lam b (Exp 2), written as
    ``partial_imitation(eps* = a / (1 - lam), lam)``. The unfiltered and random arms have
    TPR = FPR (acceptance independent of correctness), the oracle TPR = 1, FPR = 0.
    Parameter band: the same for bootstrap draws of the ingredients. Predictive band: adds the
    sampling noise of an observed round (Q queries x N samples, design effect 1 + (N - 1) icc
    with the intraclass correlation measured in Exp 1) and the noise of the buffer's finite
    wrong fraction carried on through g (recursively, through every later round), with each
    arm's own acceptance rate (the random arm's is the filtered arm's).

    Contrasts (:data:`CONTRASTS`, for the arms present): eps_n(A) - eps_n(B), n >= 1, per
    draw; their parameter covariance and the pass criteria (:func:`criteria`, level ``alpha``)
    are part of the prediction, and so is the parameter covariance of every arm's eps_0 ..
    eps_R (``arm_param_cov``: the calibration slope's interval carries it). Before the run
    the arms' sampling noises are taken as independent apart from the shared queries'
    difficulty, which cancels: the between-query part eps (1 - eps) icc / Q of each arm's
    variance is left out of a contrast.
    """
    if signal not in calibration.signals:
        raise QuasirlValueError(
            f"signal must be one measured in Exp 1 ({list(calibration.signals)}), got "
            f"{signal!r}")
    rounds = check_int("rounds", rounds, 0)
    queries_per_round = check_int("queries_per_round", queries_per_round, 1)
    samples_per_query = check_int("samples_per_query", samples_per_query, 1)
    if not (isinstance(alpha, float | int) and 0 < alpha < 1):
        raise QuasirlValueError(f"alpha must be a number in (0, 1), got {alpha!r}")
    arms = tuple(arms)
    for i, arm in enumerate(arms):
        if arm not in ARMS:
            raise QuasirlValueError(f"arms[{i}] must be one of {ARMS}, got {arm!r}")
    sig = calibration.signals[signal]
    n_obs = queries_per_round * samples_per_query
    deff = 1.0 + (samples_per_query - 1) * calibration.icc
    d_eps = calibration.eps_draws
    # a rate with no samples of its class (e.g. FPR when Exp 1 saw no wrong answer) is
    # undefined; it then carries no information and is set to 1/2 (the Jeffreys posterior mean)
    undefined = tuple(x for x, v in (("tpr", sig.tpr), ("fpr", sig.fpr)) if not np.isfinite(v))
    tpr0, fpr0 = (v if np.isfinite(v) else 0.5 for v in (sig.tpr, sig.fpr))
    d_tpr, d_fpr = (np.where(np.isfinite(d), d, 0.5) if x in undefined else d
                    for x, d in (("tpr", sig.tpr_draws), ("fpr", sig.fpr_draws)))
    b = min(d_eps.size, d_tpr.size, transfer.a_draws.size)
    rng = np.random.default_rng(sample_seed(seed, 505))
    pick = rng.permutation(transfer.a_draws.size)[:b]  # Exp 2 independent of Exp 1
    d_a, d_lam = transfer.a_draws[pick], transfer.lam_draws[pick]
    ok = np.isfinite(d_eps[:b]) & np.isfinite(d_tpr[:b]) & np.isfinite(d_fpr[:b]) \
        & np.isfinite(d_a) & np.isfinite(d_lam)
    lam_ok = d_lam[ok]
    # every arm's draws, the filtered arm first (the random arm copies its acceptance)
    order = sorted(arms, key=lambda a: a != "filtered")
    draws, own, acc_f, out = {}, {}, None, {}
    for arm in order:
        tpd, fpd = arm_rates(arm, int(ok.sum()), d_tpr[:b][ok], d_fpr[:b][ok])
        draws[arm] = adapt(d_eps[:b][ok], tpd, fpd, d_a[ok], lam_ok, rounds)
        acc, w, jac = _arm_moments(arm, draws[arm], tpd, fpd, acc_f)
        if arm == "filtered":
            acc_f = acc
        var, own[arm] = _sampling_var(draws[arm], acc, w, jac, lam_ok, deff, n_obs)
        noisy = np.clip(draws[arm] + rng.standard_normal(var.shape) * np.sqrt(var), 0, 1)
        tp, fp = arm_rates(arm, 1, np.array([tpr0]), np.array([fpr0]))
        point = adapt(calibration.eps, tp, fp, transfer.a, transfer.lam, rounds)[0]
        out[arm] = (point, var, noisy)
    lo_hi = (0.025, 0.975)
    arm_pred = {arm: ArmPrediction(
        point=floats(point), band=tuple(floats(np.quantile(draws[arm], q, axis=0))
                                        for q in lo_hi),
        predictive=tuple(floats(np.quantile(noisy, q, axis=0)) for q in lo_hi),
        sd=floats(noisy.std(axis=0, ddof=1))) for arm, (point, _, noisy) in
        ((a, out[a]) for a in arms)}
    contrasts, stacked = {}, []
    between = calibration.icc * samples_per_query / n_obs  # per unit eps (1 - eps)
    for a1, a2 in CONTRASTS:
        if a1 not in arms or a2 not in arms or rounds == 0:
            continue
        d = (draws[a1] - draws[a2])[:, 1:]
        pt = (out[a1][0] - out[a2][0])[1:]
        shared = np.sqrt(np.prod([draws[x] * (1 - draws[x]) for x in (a1, a2)], axis=0))
        v_samp = out[a1][1] + out[a2][1] - 2 * between * shared
        v_samp = np.clip(v_samp[:, 1:], 0, None)
        noisy = d + rng.standard_normal(d.shape) * np.sqrt(v_samp)
        stacked.append(d)
        contrasts[contrast_name(a1, a2)] = ContrastPrediction(
            arms=(a1, a2), rounds=tuple(range(1, rounds + 1)), point=floats(pt),
            band=tuple(floats(np.quantile(d, q, axis=0)) for q in lo_hi),
            sd_param=floats(d.std(axis=0, ddof=1)),
            predictive=tuple(floats(np.quantile(noisy, q, axis=0)) for q in lo_hi),
            sd=floats(noisy.std(axis=0, ddof=1)))
    cov = np.cov(np.concatenate(stacked, 1), rowvar=False).reshape(
        sum(x.shape[1] for x in stacked), -1) if stacked else np.zeros((0, 0))
    arm_cov = np.cov(np.concatenate([draws[a] for a in arms], 1), rowvar=False).reshape(
        len(arms) * (rounds + 1), -1)
    n_c = sum(len(c.point) for c in contrasts.values())
    return Prediction(
        signal=signal, rounds=rounds, queries_per_round=queries_per_round,
        samples_per_query=samples_per_query, design_effect=deff,
        ingredients=Ingredients(eps0=calibration.eps, tpr=tpr0, fpr=fpr0, a=transfer.a,
                                lam=transfer.lam, eps_star=transfer.eps_star),
        undefined_rates_set_to_half=undefined, arms=arm_pred, contrasts=contrasts,
        contrast_param_cov=tuple(floats(r) for r in cov),
        arm_param_cov=tuple(floats(r) for r in arm_cov),
        criteria=criteria(n_c, float(alpha)) if n_c else ())
