"""Issue 17, item 3: statistics that match Exp 3's design, tested where the truth is known.

SyntheticLM's per-query difficulty against quadrature; the paired contrasts' prediction against
a plain recurrence; the joint test's algebra against a linear solve; both Bayes checks on the
stored Gemma records; a small size / coverage check on SyntheticLM with difficulty (the large
one is ``benchmarks/lm_stats_size.py``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate
from scipy.special import expit, logit
from scipy.stats import chi2, norm
from scipy.stats import t as t_dist

import quasirl.lm as qlm
from quasirl._validate import QuasirlValueError
from quasirl.lm import validate as V
from quasirl.lm._records import read_records
from quasirl.lm._stats import expanded_levels, icc, quadratic_form_sf, wilson
from quasirl.lm._synthetic import synthetic_from_spec
from quasirl.lm.validate._statistics import (
    _bootstrap_rounds,
    _carried,
    _deviations,
    _jacobian,
    _mahalanobis,
    joint_test,
)
from quasirl.lm.validate._theory import CONTRASTS, _arm_moments, _sampling_var

RESULTS = Path(__file__).resolve().parents[1] / "results" / "gemma3-270m-capitals"
TRUE = {"eps0": 0.4, "tpr": 0.8, "fpr": 0.3, "lam": 0.5}


@pytest.fixture(scope="module")
def task():
    return qlm.capitals()


# ------------------------------------------------------------------------------------------
# SyntheticLM: per-query difficulty
# ------------------------------------------------------------------------------------------
def _logitnormal_moments(eps0, sigma):
    """Mean and variance of expit(logit(eps0) + sigma z), z ~ N(0, 1), by adaptive quadrature."""
    def f(z, k):
        return expit(logit(eps0) + sigma * z) ** k * norm.pdf(z)

    m1 = integrate.quad(f, -np.inf, np.inf, args=(1,), epsabs=1e-13)[0]
    m2 = integrate.quad(f, -np.inf, np.inf, args=(2,), epsabs=1e-13)[0]
    return m1, m2 - m1**2


@pytest.mark.parametrize("eps0, sigma", [(0.4, 1.0), (0.15, 2.0), (0.9, 0.5)])
def test_difficulty_moments_match_quadrature(task, eps0, sigma):
    lm = qlm.SyntheticLM(task, eps0, 0.8, 0.3, 0.5, difficulty_sd=sigma)
    m, v = _logitnormal_moments(eps0, sigma)
    np.testing.assert_allclose(lm.marginal_eps0, m, rtol=1e-10)
    np.testing.assert_allclose(lm.error_rate(None), m, rtol=1e-10)
    np.testing.assert_allclose(lm.error_rate(0.25), 0.5 * m + 0.5 * 0.25, rtol=1e-10)
    np.testing.assert_allclose(lm.icc(None), v / (m * (1 - m)), rtol=1e-8)
    g0 = 0.5 * m
    np.testing.assert_allclose(lm.icc(0.0), 0.25 * v / (g0 * (1 - g0)), rtol=1e-8)
    # the per-query rates are the logit-normal draws themselves
    q = task.items[3].id
    np.testing.assert_allclose(lm.query_eps0(q), expit(logit(eps0) + sigma * lm.difficulty(q)))
    np.testing.assert_allclose(lm.error_rate(0.5, q), 0.5 * lm.query_eps0(q) + 0.25)


def test_difficulty_marginal_error_and_icc_by_simulation(task):
    # 187 queries x 40 samples without demonstrations: the observed error and the one-way ANOVA
    # ICC estimate match the quadrature values (the queries' z_q are one draw: the tolerance
    # allows for the finite set of queries as well as the samples)
    lm = qlm.SyntheticLM(task, 0.4, 0.8, 0.3, 0.5, seed=5, difficulty_sd=1.0)
    _, pool = task.split(8, 0)
    out = lm.generate([task.prompt(it) for it in pool], n=40, seed=3)
    wrong = np.array([[not task.check(it, s.text) for s in row]
                      for it, row in zip(pool, out, strict=True)], dtype=float)
    m, v = _logitnormal_moments(0.4, 1.0)
    # the finite set of queries: sd of the mean of eps0_q over 187 queries, plus sampling
    se = math.sqrt(v / len(pool) + m * (1 - m) / wrong.size * (1 + 39 * lm.icc()))
    assert abs(wrong.mean() - m) < 4 * se
    est = icc(np.repeat(np.arange(len(pool)), 40), wrong.ravel())
    np.testing.assert_allclose(est, lm.icc(), atol=0.06)
    assert lm.icc() > 0.1  # a real clustering, not a rounding effect
    # sigma = 0: no clustering beyond chance
    flat = qlm.SyntheticLM(task, 0.4, 0.8, 0.3, 0.5, seed=5)
    out0 = flat.generate([task.prompt(it) for it in pool], n=40, seed=3)
    w0 = np.array([[not task.check(it, s.text) for s in row]
                   for it, row in zip(pool, out0, strict=True)], dtype=float)
    assert flat.icc() == 0.0 and icc(np.repeat(np.arange(len(pool)), 40), w0.ravel()) < 0.03
    lo, hi = wilson(w0.sum(), w0.size, z=4.0)
    assert lo <= 0.4 <= hi


def test_difficulty_zero_is_the_old_model_bit_for_bit(task):
    a = qlm.SyntheticLM(task, 0.4, 0.8, 0.3, 0.5, seed=2)
    b = qlm.SyntheticLM(task, 0.4, 0.8, 0.3, 0.5, seed=2, difficulty_sd=0.0)
    demos, pool = task.split(8, 0)
    ctx = [(demos[0], demos[1].answer), (demos[2], demos[2].answer)]
    prompts = [task.prompt(it) for it in pool[:30]] + [task.prompt(it, ctx) for it in pool[:30]]
    assert a.generate(prompts, n=3, seed=4) == b.generate(prompts, n=3, seed=4)
    assert b.marginal_eps0 == 0.4 and b.query_eps0(pool[0].id) == 0.4
    # the difficulty changes the samples, and only through the per-query rates
    c = qlm.SyntheticLM(task, 0.4, 0.8, 0.3, 0.5, seed=2, difficulty_sd=1.5)
    assert a.generate(prompts, n=3, seed=4) != c.generate(prompts, n=3, seed=4)


def test_difficulty_bad_input_and_spec(task):
    for bad in (-0.1, float("nan"), float("inf"), "1"):
        with pytest.raises(QuasirlValueError, match="difficulty_sd"):
            qlm.SyntheticLM(task, 0.4, 0.8, 0.3, 0.5, difficulty_sd=bad)
    with pytest.raises(QuasirlValueError, match="seed"):
        qlm.SyntheticLM(task, 0.4, 0.8, 0.3, 0.5, seed=1.5)
    lm = synthetic_from_spec("synthetic:eps0=0.3,difficulty_sd=0.7,seed=4", task)
    assert (lm.eps0, lm.difficulty_sd, lm.seed) == (0.3, 0.7, 4)
    # eps0 at 0 or 1 leaves no room for difficulty
    assert qlm.SyntheticLM(task, 1.0, 0.8, 0.3, 0.5, difficulty_sd=2.0).marginal_eps0 == 1.0


# ------------------------------------------------------------------------------------------
# the prediction: paired contrasts, their covariance, the criteria
# ------------------------------------------------------------------------------------------
def _recurrence(eps0, tpr, fpr, a, lam, rounds):
    """eps_(n+1) = a + lam w_n, w_n = eps FPR / (eps FPR + (1 - eps) TPR), plain Python."""
    out = [eps0]
    for _ in range(rounds):
        e = out[-1]
        den = e * fpr + (1 - e) * tpr
        out.append(a + lam * (e * fpr / den if den > 0 else 0.0))
    return np.array(out)


@pytest.fixture(scope="module")
def exp12(task):
    lm = qlm.SyntheticLM(task, seed=7, difficulty_sd=1.0, **TRUE)
    r1 = V.collect_calibration(lm, task, signals=("likelihood",), n_queries=100,
                               samples_per_query=2, seed=7)
    cal = V.analyze_calibration(r1, n_boot=400, seed=7)
    r2 = V.collect_transfer(lm, task, n_queries=50, samples_per_query=2, seed=7)
    tr = V.analyze_transfer(r2, n_boot=400, seed=7)
    return lm, cal, tr


def test_contrasts_follow_the_recurrence_and_carry_their_criteria(exp12):
    _, cal, tr = exp12
    p = V.predict_trajectory(cal, tr, signal="likelihood", rounds=3, queries_per_round=30,
                             samples_per_query=4, seed=1)
    s = cal.signals["likelihood"]
    ing = (cal.eps, tr.a, tr.lam)
    traj = {"filtered": _recurrence(ing[0], s.tpr, s.fpr, ing[1], ing[2], 3),
            "unfiltered": _recurrence(ing[0], 1, 1, ing[1], ing[2], 3),
            "random": _recurrence(ing[0], 1, 1, ing[1], ing[2], 3),
            "oracle": _recurrence(ing[0], 1, 0, ing[1], ing[2], 3)}
    assert list(p.contrasts) == [f"{a}-{b}" for a, b in CONTRASTS]
    for a, b in CONTRASTS:
        c = p.contrasts[f"{a}-{b}"]
        assert c.rounds == (1, 2, 3)
        np.testing.assert_allclose(c.point, (traj[a] - traj[b])[1:], rtol=1e-6, atol=1e-9)
        assert all(lo <= x <= hi for lo, x, hi in zip(*c.predictive[:1], c.point, c.predictive[1],
                                                       strict=True))
        assert all(sp <= sd for sp, sd in zip(c.sd_param, c.sd, strict=True))
    cov = np.asarray(p.contrast_param_cov)
    assert cov.shape == (9, 9)
    np.testing.assert_allclose(cov, cov.T)
    np.testing.assert_allclose(np.sqrt(np.diag(cov))[:3], p.contrasts["filtered-unfiltered"]
                               .sd_param, rtol=1e-10)
    assert np.linalg.eigvalsh(cov).min() > -1e-12
    # the criteria are data, written (and hashed) with the prediction
    d = json.loads(json.dumps(p.to_dict()))
    assert [c["name"] for c in d["criteria"]] == ["joint_contrasts", "each_contrast"]
    assert d["criteria"][0]["alpha"] == 0.05 and "p_value > alpha" in d["criteria"][0]["rule"]
    assert set(d["contrasts"]["oracle-unfiltered"]) >= {"point", "predictive", "sd", "band"}


def test_random_arm_band_uses_its_real_acceptance(exp12):
    _, cal, tr = exp12
    p = V.predict_trajectory(cal, tr, signal="likelihood", rounds=2, queries_per_round=30,
                             samples_per_query=4, seed=1)
    # same expected trajectory as the unfiltered arm, but a buffer of ~acc Q N answers
    np.testing.assert_allclose(p.arms["random"].point, p.arms["unfiltered"].point)
    assert p.arms["random"].sd[0] == pytest.approx(p.arms["unfiltered"].sd[0], rel=0.15)
    # round 1 carries the round-0 buffer's noise, w (1 - w) deff / (acc Q N), with the
    # filtered arm's acceptance acc < 1 for the random arm
    assert p.arms["random"].sd[1] > p.arms["unfiltered"].sd[1]
    eps = np.array([[0.3, 0.35]])
    acc_f = np.array([[0.35, 0.4]])
    acc, w, jac = _arm_moments("random", eps, np.ones(1), np.ones(1), acc_f)
    np.testing.assert_allclose(acc, acc_f)
    np.testing.assert_allclose(w, eps)
    rnd, _ = _sampling_var(eps, acc, w, jac, np.array([0.5]), 1.0, 120)
    unf, _ = _sampling_var(eps, np.ones_like(eps), w, jac, np.array([0.5]), 1.0, 120)
    np.testing.assert_allclose(rnd[0, 1] - unf[0, 1], 0.25 * 0.21 / 120 * (1 / 0.35 - 1))


def test_sampling_variance_recursion_by_hand():
    # one draw, two rounds: V_n = v_n + lam^2 U_(n-1), U_n = u_n + J_n^2 lam^2 U_(n-1)
    eps = np.array([[0.3, 0.25, 0.2]])
    acc = np.array([[0.5, 0.4, 0.6]])
    w = np.array([[0.1, 0.2, 0.15]])
    jac = np.array([[0.4, 0.5, 0.6]])
    lam, deff, n = np.array([0.6]), 1.3, 120
    total, own = _sampling_var(eps, acc, w, jac, lam, deff, n)
    v = eps[0] * (1 - eps[0]) * deff / n
    u = w[0] * (1 - w[0]) * deff / (n * acc[0])
    u0 = u[0]
    u1 = u[1] + jac[0, 1] ** 2 * 0.36 * u0
    np.testing.assert_allclose(own[0], v)
    np.testing.assert_allclose(total[0], [v[0], v[1] + 0.36 * u0, v[2] + 0.36 * u1])


def test_carried_deviation_by_hand():
    rng = np.random.default_rng(0)
    de, dw = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    jac = np.array([0.2, 0.7, 0.1])
    out = _carried(de, dw, 0.5, jac)
    c0 = dw[:, 0]
    c1 = dw[:, 1] + 0.7 * 0.5 * c0
    np.testing.assert_allclose(out, np.stack([de[:, 0], de[:, 1] + 0.5 * c0,
                                              de[:, 2] + 0.5 * c1], 1))


def test_mahalanobis_against_solve_and_rank():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(6, 6))
    cov = a @ a.T + 0.1 * np.eye(6)
    d = rng.normal(size=6)
    t, r = _mahalanobis(d, cov)
    np.testing.assert_allclose(t, d @ np.linalg.solve(cov, d), rtol=1e-10)
    assert r == 6
    # a singular covariance (two identical contrasts): the rank is the dof
    b = rng.normal(size=(3, 3))
    c3 = b @ b.T
    j = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1.0]])
    t4, r4 = _mahalanobis(j @ d[:3], j @ c3 @ j.T)
    np.testing.assert_allclose(t4, d[:3] @ np.linalg.solve(c3, d[:3]), rtol=1e-8)
    assert r4 == 3


@pytest.mark.parametrize("k", [1, 2, 3, 9])
def test_quadratic_form_sf_equal_weights_is_chi2(k):
    for q in (0.01, 0.7, 3.0, 9.0, 25.0, 60.0):
        np.testing.assert_allclose(quadratic_form_sf(q, np.full(k, 2.5)), chi2.sf(q / 2.5, k),
                                   rtol=1e-7, atol=1e-11)


def test_quadratic_form_sf_mixed_weights():
    # two equal weights a: an exponential, P(> q) = exp(-q / (2 a)); zero weights drop out
    for q in (0.5, 4.0, 30.0):
        np.testing.assert_allclose(quadratic_form_sf(q, [1.5, 1.5, 0.0]), math.exp(-q / 3),
                                   rtol=1e-8)
    # unequal weights: against a large Monte Carlo of sum w_i X_i^2
    w = np.array([3.0, 1.0, 0.5, 0.1])
    sims = (np.random.default_rng(0).standard_normal((400_000, 4)) ** 2) @ w
    for q in (1.0, 5.0, 12.0, 25.0):
        mc = np.mean(sims > q)
        np.testing.assert_allclose(quadratic_form_sf(q, w), mc,
                                   atol=4 * math.sqrt(mc * (1 - mc) / sims.size) + 1e-5)
    assert quadratic_form_sf(0.0, w) == 1.0 and quadratic_form_sf(-1.0, w) == 1.0
    for bad in ([1.0, -0.5], [np.nan], []):
        with pytest.raises(QuasirlValueError, match="weights"):
            quadratic_form_sf(1.0, bad)
    with pytest.raises(QuasirlValueError, match="q must be"):
        quadratic_form_sf(float("inf"), w)


def test_joint_test_limits():
    rng = np.random.default_rng(3)
    sd = np.array([0.02, 0.05, 0.03, 0.04])
    d = rng.normal(size=4) * sd
    # independent points: Q ~ chi2(k), effective dof k
    q, k, p, eff = joint_test(d, np.diag(sd**2))
    np.testing.assert_allclose(q, np.sum((d / sd) ** 2))
    assert k == 4
    np.testing.assert_allclose(p, chi2.sf(q, 4), rtol=1e-7)
    np.testing.assert_allclose(eff, 4.0)
    # one underlying deviation seen four times (correlation 1): Q = 4 x^2, x ~ N(0, 1)
    same = 0.7 * sd
    q1, k1, p1, eff1 = joint_test(same, np.outer(sd, sd))
    np.testing.assert_allclose(q1, 4 * 0.49)
    np.testing.assert_allclose(p1, chi2.sf(0.49, 1), rtol=1e-7)
    np.testing.assert_allclose(eff1, 1.0)
    # a point without variance (two arms that accept the same answers) is left out
    cov = np.diag(np.r_[sd**2, 0.0])
    q2, k2, p2, _ = joint_test(np.r_[d, 0.0], cov)
    assert k2 == 4 and q2 == pytest.approx(q) and p2 == pytest.approx(p)
    assert joint_test(np.zeros(2), np.zeros((2, 2)))[1:3] == (0, None)


def test_expanded_levels():
    # Phi(-sqrt(n / (n - 1)) t_(n-1, 0.975)), by hand for n = 30
    lo, hi = expanded_levels(30)
    np.testing.assert_allclose(lo, norm.cdf(-math.sqrt(30 / 29) * t_dist.ppf(0.975, 29)))
    np.testing.assert_allclose(lo + hi, 1.0)
    assert 0.015 < lo < 0.025
    lows = [expanded_levels(n)[0] for n in (3, 10, 30, 300, 30_000)]
    assert all(a < b for a, b in zip(lows, lows[1:], strict=False))  # wider for fewer
    np.testing.assert_allclose(lows[-1], 0.025, atol=1e-4)
    np.testing.assert_allclose(expanded_levels(1), (0.025, 0.975))


# ------------------------------------------------------------------------------------------
# compare(): observed contrasts, per-arm bands, slope, criteria
# ------------------------------------------------------------------------------------------
def test_compare_on_a_synthetic_run(task, exp12):
    lm, cal, tr = exp12
    tj = V.trajectory(lm, task, cal, tr, signal="likelihood", rounds=2, queries_per_round=30,
                      samples_per_query=4, seed=7)
    c, runs = tj.comparison, tj.runs
    for a, b in CONTRASTS:
        cc = c.contrasts[f"{a}-{b}"]
        np.testing.assert_allclose(cc.observed, (runs[a].eps - runs[b].eps)[1:])
        assert all(lo <= x <= hi for lo, x, hi in zip(cc.cluster_ci[0], cc.observed,
                                                       cc.cluster_ci[1], strict=True))
        np.testing.assert_allclose(np.asarray(cc.z) * cc.sd_total,
                                   np.asarray(cc.observed) - cc.predicted, atol=1e-12)
    # round 0 is shared: the same samples, so the same value and interval in every arm
    r0 = {a.observed[0] for a in c.arms.values()}
    assert len(r0) == 1
    assert c.coverage.endswith(f"/{1 + 4 * 2}")  # round 0 once, rounds 1-2 of each arm
    z = np.concatenate([cc.z for cc in c.contrasts.values()])
    assert c.dof == z.size == 6
    np.testing.assert_allclose(c.chi2, np.sum(z**2), rtol=1e-10)
    assert 0 < c.p_value < 1 and 1 <= c.effective_dof <= 6
    assert c.calibration_slope_ci[0] <= c.calibration_slope <= c.calibration_slope_ci[1]
    # the random arm accepted about as much as the filtered one, not everything
    np.testing.assert_allclose(runs["random"].accept_rate[1:], runs["filtered"].accept_rate[1:],
                               atol=0.2)
    assert max(runs["random"].accept_rate) < 0.95
    # the judge's rates per round, counted by hand from the records
    for arm, res in runs.items():
        for r in range(3):
            rs = [x for x in res.records if x["round"] == r]
            right = [x["accepted"] for x in rs if x["correct"]]
            wrong = [x["accepted"] for x in rs if not x["correct"]]
            np.testing.assert_allclose(c.arms[arm].tpr[r], np.mean(right))
            np.testing.assert_allclose(c.arms[arm].fpr[r], np.mean(wrong))
    assert c.arms["unfiltered"].tpr == c.arms["unfiltered"].fpr == (1.0,) * 3
    assert c.arms["oracle"].fpr[1:] == (0.0,) * 2
    # post hoc: g applied to the w each arm really kept, by hand (lam inside [0, 1] here)
    ing = tj.prediction.ingredients
    assert 0 < ing.lam < 1 and 0 < ing.a / (1 - ing.lam) < 1
    for arm, res in runs.items():
        np.testing.assert_allclose(c.arms[arm].one_step,
                                   [ing.eps0, *(ing.a + ing.lam * res.w[:2])], rtol=1e-12)
    names = [r.name for r in c.criteria]
    assert names == ["joint_contrasts", "each_contrast"]
    assert c.passed == all(r.passed for r in c.criteria)
    d = json.loads(json.dumps(tj.to_dict(), allow_nan=False))
    assert d["prediction"]["criteria"][0]["name"] == "joint_contrasts"
    with pytest.raises(QuasirlValueError, match="n_boot"):
        V.compare(tj.prediction, runs, n_boot=1)


def _chained_counts(rng, q=30, n=4, rounds=3, lam=0.5, eps0=0.4, sigma=1.0, tpr=0.8, fpr=0.3):
    """A plain simulator of Exp 3's four arms with per-query difficulty (the structure of
    SyntheticLM and the chaining loop, without text): per round, Q fresh queries shared by the
    arms, eps_q = expit(logit(eps0) + sigma z_q); round 0 answers after gold demonstrations
    (b = 0, the same samples for every arm); round r after k = 4 demonstrations drawn from the
    arm's accepted answers of round r - 1 (b ~ Binomial(4, w_(r-1)) / 4). Each of the N samples
    is wrong with probability (1 - lam) eps_q + lam b. Acceptance: filtered, correct with TPR
    and wrong with FPR; unfiltered, all; random, each with the filtered arm's realised rate;
    oracle, the correct ones. Returns compare's per-round counts and each arm's eps_n, w_n."""
    arms = ("filtered", "unfiltered", "random", "oracle")
    w_prev = dict.fromkeys(arms, 0.0)
    per_round, eps, ws = [], {a: [] for a in arms}, {a: [] for a in arms}
    for r in range(rounds + 1):
        e_q = expit(logit(eps0) + sigma * rng.standard_normal(q))
        counts, k0, acc_f = {}, None, None
        for a in arms:  # the filtered arm first: the random arm copies its acceptance rate
            if r == 0 and k0 is not None:
                k = k0
            else:
                b = rng.binomial(4, w_prev[a], size=q) / 4 if r else np.zeros(q)
                k = rng.binomial(n, (1 - lam) * e_q + lam * b)
                k0 = k if r == 0 else None
            p_wrong, p_right = {"filtered": (fpr, tpr), "unfiltered": (1.0, 1.0),
                                "random": (acc_f, acc_f), "oracle": (0.0, 1.0)}[a]
            accw = rng.binomial(k, p_wrong)
            acc = accw + rng.binomial(n - k, p_right)
            if a == "filtered":
                acc_f = acc.sum() / (n * q)
            counts[a] = np.stack([np.full(q, float(n)), k, acc, accw]).astype(float)
            w_prev[a] = accw.sum() / acc.sum() if acc.sum() else 0.0
            eps[a].append(k.sum() / (n * q))
            ws[a].append(w_prev[a])
        per_round.append((list(range(q)), counts))
    return per_round, {a: np.array(v) for a, v in eps.items()}, \
        {a: np.array(v) for a, v in ws.items()}


def test_joint_test_size_on_simulated_arms():
    # the joint test's size with compare's own machinery (the paired query bootstrap, the
    # carried deviations), the prediction exact (no parameter part: the sampling covariance,
    # from 30 queries per round, is all there is). The large check through the whole pipeline
    # is benchmarks/lm_stats_size.py (>= 200 seeds).
    lam, tpr, fpr, sigma = 0.5, 0.8, 0.3, 1.0
    x, wt = np.polynomial.hermite_e.hermegauss(100)
    m = float(wt @ expit(logit(0.4) + sigma * x) / wt.sum())  # the marginal eps0
    truth = {a: _recurrence((1 - lam) * m, tp, fp, (1 - lam) * m, lam, 3)
             for a, tp, fp in (("filtered", tpr, fpr), ("unfiltered", 1, 1),
                               ("random", 1, 1), ("oracle", 1, 0))}
    t_c = np.concatenate([(truth[a] - truth[b])[1:] for a, b in CONTRASTS])
    rng = np.random.default_rng(2024)
    p_joint, p_maha, q_over_k = [], [], []
    for rep in range(300):
        per_round, eps, ws = _chained_counts(rng, lam=lam, tpr=tpr, fpr=fpr, sigma=sigma)
        boot = _bootstrap_rounds(per_round, 200, rep)
        dev = {a: _deviations(boot[a], eps[a], ws[a], [30] * 4, lam,
                              _jacobian(a, truth[a], tpr, fpr)) for a in eps}
        d = np.concatenate([(eps[a] - eps[b])[1:] for a, b in CONTRASTS]) - t_c
        dd = np.concatenate([(dev[a] - dev[b])[:, 1:] for a, b in CONTRASTS], 1)
        cov = np.cov(dd[np.isfinite(dd).all(1)], rowvar=False)
        q, k, p, _ = joint_test(d, cov)
        p_joint.append(p)
        q_over_k.append(q / k)
        t, rank = _mahalanobis(d, cov)
        p_maha.append(chi2.sf(t, rank))
    p_joint, p_maha = np.array(p_joint), np.array(p_maha)
    # binomial sd of a 5% rate over 300 runs: 1.3%
    assert 0.02 <= np.mean(p_joint < 0.05) <= 0.09, np.mean(p_joint < 0.05)
    assert 0.06 <= np.mean(p_joint < 0.10) <= 0.15, np.mean(p_joint < 0.10)
    np.testing.assert_allclose(np.mean(q_over_k), 1.0, atol=0.12)  # E[Q] = k under the null
    # the Mahalanobis distance against chi2, the former test, fails this very check
    assert np.mean(p_maha < 0.05) > 0.09, np.mean(p_maha < 0.05)


def test_joint_test_and_intervals_small_pipeline(task):
    # eight seeds of the benchmark's pipeline, checked loosely (a real failure, e.g. a band
    # or an interval off by a factor, still trips them): the statistic's scale, the
    # per-contrast coverage and the slope interval's coverage of the true slope 1
    from benchmarks.lm_stats_size import one_seed

    rows = [one_seed(seed, 1.0, n_boot=200) for seed in range(100, 108)]
    ratio = np.mean([r["chi2"] / r["dof"] for r in rows])
    assert 0.5 < ratio < 1.7, ratio
    cover = np.mean([x for r in rows for x in r["contrast_total"]])
    assert cover > 0.85, cover
    assert sum(r["slope_ci"] for r in rows) >= 6
    assert sum(r["p_value"] < 0.05 for r in rows) <= 2


# ------------------------------------------------------------------------------------------
# both Bayes checks on the stored Gemma-3-270M records
# ------------------------------------------------------------------------------------------
def test_both_bayes_checks_on_the_stored_records():
    _, recs = read_records(RESULTS / "exp1_calibration.jsonl")
    recs = sorted(recs, key=lambda r: (r["q"], r["sample"]))
    cal = V.analyze_calibration(recs, n_boot=1000, seed=0)  # the defaults of the stored run
    stored = json.loads((RESULTS / "exp1_calibration.json").read_text())
    new = {s: v.bayes.passed for s, v in cal.signals.items()}
    old = {s: v.bayes_calibration_half.passed for s, v in cal.signals.items()}
    assert new == {s: stored["signals"][s]["bayes"]["pass"] for s in new}
    assert all(new.values())
    # the check in place before the results commit fails 3 of the 4 signals
    assert sum(v is False for v in old.values()) == 3
    assert old == {"gold": True, "likelihood": False, "scale5": False, "yesno": False}
    yn = cal.signals["yesno"].bayes_calibration_half
    assert yn.w_observed > yn.w_predictive[1]  # more wrong answers accepted than predicted
    d = cal.to_dict()["signals"]["yesno"]
    assert d["bayes_calibration_half"]["pass"] is False and d["bayes"]["pass"] is True


def test_bca_interval_with_two_queries_is_the_range_not_nan():
    # the expanded level for 2 clusters is 1 to double precision: z = inf used to give NaN
    # quantile levels and a crash; the interval is then the whole range of the draws
    from quasirl.lm.validate._statistics import _cluster_ci

    rng = np.random.default_rng(0)
    draws = rng.choice([0.0, 0.25, 0.5, 0.75], size=(200, 2))
    lo, hi = _cluster_ci(draws, np.array([0.25, 0.5]), [[0.0, 0.5], [0.25, 0.75]], [2, 2])
    np.testing.assert_array_equal(lo, draws.min(axis=0))
    np.testing.assert_array_equal(hi, draws.max(axis=0))
