"""Exp 3's prediction: the boosting recurrence of ``quasirl.selection`` fed the measured
ingredients, with a parametric bootstrap over their uncertainty."""

from __future__ import annotations

import numpy as np

from ..._validate import QuasirlValueError, check_int
from .._chaining import ARMS
from .._types import sample_seed
from ._results import ArmPrediction, Calibration, Ingredients, Prediction, Transfer, floats


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


def arm_rates(arm, n, tpr=None, fpr=None):
    """(TPR, FPR) of an arm: the signal's for ``filtered``; 1, 0 for ``oracle``; 1, 1 for the
    ``unfiltered`` and ``random`` arms (acceptance independent of correctness)."""
    if arm == "filtered":
        return tpr, fpr
    if arm == "oracle":
        return np.ones(n), np.zeros(n)
    return np.ones(n), np.ones(n)


def predict_trajectory(calibration: Calibration, transfer: Transfer, *, signal: str,
                       rounds: int, queries_per_round: int, samples_per_query: int,
                       arms=ARMS, seed: int = 0) -> Prediction:
    """Predict each arm's error trajectory before running it.

    Point: ``quasirl.selection.adapt_trajectory`` with the measured eps (Exp 1), TPR and FPR
    of ``signal`` (Exp 1, held-out half) and g(b) = a + lam b (Exp 2), written as
    ``partial_imitation(eps* = a / (1 - lam), lam)``. The unfiltered and random arms have
    TPR = FPR (acceptance independent of correctness), the oracle TPR = 1, FPR = 0.
    Parameter band: the same for bootstrap draws of the ingredients. Predictive band: adds the
    sampling noise of an observed round (Q queries x N samples, design effect 1 + (N - 1) icc
    with the intraclass correlation measured in Exp 1) and the noise that the buffer's finite
    wrong fraction passes on through g (lam^2 var(w_{n-1})).
    """
    if signal not in calibration.signals:
        raise QuasirlValueError(
            f"signal must be one measured in Exp 1 ({list(calibration.signals)}), got "
            f"{signal!r}")
    rounds = check_int("rounds", rounds, 0)
    queries_per_round = check_int("queries_per_round", queries_per_round, 1)
    samples_per_query = check_int("samples_per_query", samples_per_query, 1)
    for i, arm in enumerate(arms):
        if arm not in ARMS:
            raise QuasirlValueError(f"arms[{i}] must be one of {ARMS}, got {arm!r}")
    sel = _selection()
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
    out = {}
    for arm in arms:
        tp, fp = arm_rates(arm, 1, np.array([tpr0]), np.array([fpr0]))
        point = adapt(calibration.eps, tp, fp, transfer.a, transfer.lam, rounds)[0]
        tpd, fpd = arm_rates(arm, int(ok.sum()), d_tpr[:b][ok], d_fpr[:b][ok])
        draws = adapt(d_eps[:b][ok], tpd, fpd, d_a[ok], d_lam[ok], rounds)
        # sampling noise of an observed round, and the buffer's noise passed on through g
        acc = np.asarray(sel.acceptance_rate(draws[:, :-1], tpd[:, None], fpd[:, None]),
                         dtype=np.float64)
        w_prev = bayes_w(draws[:, :-1], tpd[:, None], fpd[:, None])
        var = draws * (1 - draws) * deff / n_obs
        with np.errstate(invalid="ignore", divide="ignore"):
            var_w = np.where(acc > 0, w_prev * (1 - w_prev) * deff / (n_obs * acc), 0.0)
        var[:, 1:] += np.clip(d_lam[ok], 0, 1)[:, None] ** 2 * np.nan_to_num(var_w)
        noisy = np.clip(draws + rng.standard_normal(draws.shape) * np.sqrt(var), 0, 1)
        lo_hi = (0.025, 0.975)
        out[arm] = ArmPrediction(
            point=floats(point),
            band=tuple(floats(np.quantile(draws, q, axis=0)) for q in lo_hi),
            predictive=tuple(floats(np.quantile(noisy, q, axis=0)) for q in lo_hi),
            sd=floats(noisy.std(axis=0, ddof=1)))
    return Prediction(
        signal=signal, rounds=rounds, queries_per_round=queries_per_round,
        samples_per_query=samples_per_query, design_effect=deff,
        ingredients=Ingredients(eps0=calibration.eps, tpr=tpr0, fpr=fpr0, a=transfer.a,
                                lam=transfer.lam, eps_star=transfer.eps_star),
        undefined_rates_set_to_half=undefined, arms=out)
