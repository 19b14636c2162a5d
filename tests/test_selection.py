"""quasirl.selection against independent oracles.

Oracles: the closed form of the boosting recurrence, root finding (scipy brentq) on h(eps) - eps,
long iteration of the map, brute-force enumeration of best-of-N draws, multinomial enumeration
of Luce curation, Monte Carlo with fixed keys and tolerances stated in standard errors, and
closed-form phase boundaries derived by hand.
"""

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from scipy.optimize import brentq
from scipy.special import logsumexp

from quasirl import selection as sel
from quasirl._validate import QuasirlValueError
from quasirl.cli import main


def _h(eps, tpr, fpr, g):
    """The loop's map in plain numpy (independent of the library)."""
    A = eps * fpr + (1 - eps) * tpr
    w = eps * fpr / A if A > 0 else eps
    return g(w)


# --------------------------------------------------------------------------------------------
# boosting recurrence
# --------------------------------------------------------------------------------------------
def test_boost_equals_closed_form_to_1e_12():
    eps0 = np.array([0.0, 1e-9, 0.05, 0.3, 0.5, 0.9, 1 - 1e-9, 1.0])[:, None, None]
    tpr = np.array([0.0, 0.1, 0.5, 0.8, 1.0])[None, :, None]
    fpr = np.array([0.0, 0.05, 0.5, 0.79, 1.0])[None, None, :]
    rec = sel.boost(eps0, tpr, fpr, 40)
    cf = sel.boost_closed_form(eps0, tpr, fpr, 40)
    assert rec.shape == cf.shape == (8, 5, 5, 41)
    np.testing.assert_allclose(rec, cf, rtol=1e-12, atol=1e-12)
    # odds shrink by FPR/TPR each round (interior points)
    r = np.asarray(sel.boost(0.3, 0.8, 0.5, 6))
    np.testing.assert_allclose(r[1:] / (1 - r[1:]) / (r[:-1] / (1 - r[:-1])), 0.625, rtol=1e-12)


def test_boost_plain_floats_numpy_and_loop_equal_batched():
    eps0, tpr, fpr = np.array([0.1, 0.3, 0.6]), np.array([0.9, 0.6, 0.5]), 0.4
    batched = sel.boost(eps0, tpr, fpr, 7)
    for i in range(3):
        one = sel.boost(float(eps0[i]), float(tpr[i]), fpr, 7)
        assert one.shape == (8,)
        np.testing.assert_allclose(batched[i], one, rtol=1e-14)
        # a plain-python loop of the map is the oracle
        e, ref = eps0[i], [eps0[i]]
        for _ in range(7):
            e = e * fpr / (e * fpr + (1 - e) * tpr[i])
            ref.append(e)
        np.testing.assert_allclose(one, ref, rtol=1e-13)
    acc = sel.boost_acceptance(eps0, tpr, fpr, 7)
    np.testing.assert_allclose(acc, batched * fpr + (1 - batched) * tpr[:, None], rtol=1e-14)
    np.testing.assert_allclose(sel.acceptance_rate(0.25, 0.8, 0.2), 0.25 * 0.2 + 0.75 * 0.8)
    np.testing.assert_allclose(sel.wrong_fraction(0.25, 0.8, 0.2), 0.05 / 0.65, rtol=1e-15)
    assert float(sel.wrong_fraction(1.0, 0.8, 0.0)) == 1.0  # empty buffer: w = eps
    # no recompilation on a second call with the same shapes
    from quasirl._selection_boost import _boost

    n = _boost._cache_size()
    sel.boost(eps0 * 0.5, tpr, fpr, 7)
    assert _boost._cache_size() == n


def test_zero_stable_iff_fpr_below_tpr_on_grid():
    grid = np.linspace(0.05, 1.0, 20)
    T, F = np.meshgrid(grid, grid, indexing="ij")
    fp = sel.fixed_points(T, F)
    off = F != T  # on the diagonal the map is the identity: every eps is (neutrally) fixed
    np.testing.assert_array_equal(np.asarray(fp.identity), ~off)
    np.testing.assert_array_equal(np.asarray(fp.values[..., 0])[off], 0.0)
    np.testing.assert_array_equal(np.asarray(fp.values[..., 1])[off], 1.0)
    np.testing.assert_array_equal(np.asarray(fp.stable[..., 0]), F < T)
    np.testing.assert_array_equal(np.asarray(fp.stable[..., 1]), F > T)
    np.testing.assert_allclose(np.asarray(fp.slope[..., 0])[off], (F / T)[off], rtol=1e-14)
    np.testing.assert_allclose(sel.stability(0.0, T, F), F / T, rtol=1e-14)
    # the dynamics agree: a small perturbation of 0 dies out iff FPR < TPR
    end = np.asarray(sel.boost(1e-3, T, F, 3000)[..., -1])
    np.testing.assert_array_equal(end < 1e-6, F < T)
    np.testing.assert_array_equal(end > 1 - 1e-6, F > T)


def test_partial_imitation_fixed_point_matches_root_finding_and_iteration():
    rng = np.random.default_rng(0)
    for _ in range(25):
        eps0, lam = rng.uniform(0.02, 0.98), rng.uniform(0.0, 0.99)
        tpr, fpr = rng.uniform(0.05, 1.0), rng.uniform(0.0, 1.0)
        g = sel.partial_imitation(eps0, lam)
        gnp = lambda w, eps0=eps0, lam=lam: (1 - lam) * eps0 + lam * w
        fp = sel.fixed_points(tpr, fpr, g)
        vals = np.asarray(fp.values)
        star = brentq(lambda e, t=tpr, f=fpr, g=gnp: _h(e, t, f, g) - e, 0.0, 1.0, xtol=1e-15,
                      rtol=1e-15)
        np.testing.assert_allclose(vals[0], star, atol=1e-12)
        assert np.isnan(vals[1]) or lam == 0
        assert bool(fp.stable[0])
        np.testing.assert_allclose(sel.limit_error(eps0, tpr, fpr, g), star, atol=1e-12)
        traj = sel.adapt_trajectory(eps0, tpr, fpr, g, 400)
        np.testing.assert_allclose(traj[-1], star, atol=1e-10)
        # lowering the error is exactly FPR < TPR, whatever lam > 0
        if lam > 0:
            assert bool(sel.lowers_error(eps0, tpr, fpr, g)) == (fpr < tpr)
            assert (star < eps0) == (fpr < tpr)


def test_intrinsic_error_matches_eigen_two_type_closed_form():
    L = np.linspace(0.1, 3.0, 9)
    mu = np.linspace(0.0, 0.9, 10)
    tpr, fpr = sel.selection_rates(L[:, None])
    tpr, fpr = jnp.broadcast_to(tpr, (9, 10)), jnp.broadcast_to(fpr, (9, 10))
    M = np.broadcast_to(mu[None, :], (9, 10))
    lim = np.asarray(sel.limit_error(0.5, tpr, fpr, sel.intrinsic_error(M)))
    rho = np.exp(-L)[:, None]
    expected = np.minimum(M / (1 - rho), 1.0)  # error threshold at mu = 1 - FPR/TPR
    np.testing.assert_allclose(lim, expected, atol=1e-12)
    np.testing.assert_allclose(sel.error_threshold(L), 1 - np.exp(-L), rtol=1e-14)
    # Eigen's x' = Q diag(f) x / f.x for two types, by matrix iteration (mu=0.2, nu=0.1)
    t, f, m, n = 0.9, 0.3, 0.2, 0.1
    Q = np.array([[1 - m, n], [m, 1 - n]])
    x = np.array([0.5, 0.5])
    for _ in range(500):
        x = Q @ (np.array([t, f]) * x)
        x /= x.sum()
    np.testing.assert_allclose(sel.limit_error(0.5, t, f, sel.intrinsic_error(m, n)), x[1],
                               atol=1e-12)
    fp = sel.fixed_points(t, f, sel.intrinsic_error(m, n))
    np.testing.assert_allclose(np.nanmin(np.asarray(fp.values)), x[1], atol=1e-12)


def test_limits_of_the_ideal_learner_and_edge_rates():
    np.testing.assert_allclose(sel.limit_error(0.3, np.array([0.8, 0.5, 0.2]), 0.5),
                               [0.0, 0.3, 1.0])
    # a perfect evaluator (FPR = 0) removes every error in one round
    np.testing.assert_allclose(sel.boost(0.7, 0.5, 0.0, 2), [0.7, 0.0, 0.0])
    # nothing ever accepted: the buffer is empty and the error stays
    np.testing.assert_allclose(sel.boost(0.7, 0.0, 0.0, 2), [0.7, 0.7, 0.7])
    # partial imitation with FPR = 0: eps* = (1 - lam) eps0
    g = sel.partial_imitation(0.4, 0.75)
    np.testing.assert_allclose(sel.limit_error(0.4, 0.9, 0.0, g), 0.1, atol=1e-15)
    np.testing.assert_allclose(sel.limit_error(1.0, 0.9, 0.0, g), 0.1, atol=1e-15)


def test_general_map_fixed_points_numeric_and_vmap():
    g = lambda w: 0.02 + 0.9 * w**2 + 0.05 * w
    tpr, fpr = 0.7, 0.6
    fp = sel.fixed_points(tpr, fpr, g)
    f = lambda e: _h(e, tpr, fpr, lambda w: 0.02 + 0.9 * w * w + 0.05 * w) - e
    x = np.linspace(0, 1, 20001)
    fx = np.array([f(e) for e in x])
    roots = [brentq(f, x[i], x[i + 1], xtol=1e-15) for i in np.flatnonzero(fx[:-1] * fx[1:] < 0)]
    np.testing.assert_allclose(np.asarray(fp.values), roots, atol=1e-10)
    h = 1e-6
    fd = [(f(r + h) - f(r - h)) / (2 * h) + 1 for r in roots]
    np.testing.assert_allclose(np.asarray(fp.slope), fd, rtol=1e-5)
    np.testing.assert_allclose(sel.limit_error(0.3, tpr, fpr, g, rounds=3000), roots[0],
                               atol=1e-10)
    # the adaptation maps are pytrees: vmap over lam equals broadcasting over lam
    lam = jnp.linspace(0.1, 1.0, 5)
    vm = jax.vmap(lambda l: sel.adapt_trajectory(0.3, 0.8, 0.4, sel.Imitation(0.3, l), 6))(lam)
    np.testing.assert_allclose(vm, sel.adapt_trajectory(0.3, 0.8, 0.4,
                                                        sel.partial_imitation(0.3, lam), 6),
                               rtol=1e-14)


def test_gradients_are_finite_and_match_finite_differences():
    f = lambda t: sel.boost(0.3, t, 0.4, 5)[-1]
    gr = jax.grad(f)(0.8)
    fd = (f(0.8 + 1e-6) - f(0.8 - 1e-6)) / 2e-6
    np.testing.assert_allclose(gr, fd, rtol=1e-6)
    # at the boundaries (eps0 = 0, FPR = 0, nothing accepted) the gradient is finite
    for args in [(0.0, 0.8, 0.4), (0.3, 0.8, 0.0), (0.3, 0.0, 0.0), (1.0, 0.5, 0.0)]:
        grads = jax.grad(lambda a: sel.boost(*a, 4)[-1])(tuple(map(jnp.float64, args)))
        assert all(np.isfinite(np.asarray(x)) for x in grads)


# --------------------------------------------------------------------------------------------
# soft selection
# --------------------------------------------------------------------------------------------
def test_tilt_and_k_rounds_identity():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(6))
    f = rng.uniform(0, 2, 6)
    np.testing.assert_allclose(sel.tilt(p, f), p * f / (p * f).sum(), rtol=1e-15)
    for _ in range(5):
        p = rng.dirichlet(np.ones(8) * 0.7)
        r = rng.normal(scale=3.0, size=8)
        T, k = rng.uniform(0.3, 3.0), int(rng.integers(2, 9))
        np.testing.assert_allclose(sel.repeated_tilt(p, r, T, k), sel.temper(p, r, T / k),
                                   rtol=1e-12, atol=1e-12)
        ref = np.exp(np.log(p) + r * k / T - logsumexp(np.log(p) + r * k / T))
        np.testing.assert_allclose(sel.temper(p, r, T / k), ref, rtol=1e-12, atol=1e-14)
    # T = 0: all mass on the best items of the support, split in proportion to p
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.0])
    r = np.array([1.0, 3.0, 3.0, 0.0, 9.0])
    np.testing.assert_allclose(sel.temper(p, r, 0.0), [0, 0.4, 0.6, 0, 0], atol=1e-15)


def test_kl_regularised_optimum_beats_random_search_and_equals_beta_log_z():
    rng = np.random.default_rng(2)
    n = 8
    for _ in range(6):
        p = rng.dirichlet(np.ones(n))
        r = rng.normal(size=n)
        beta = rng.uniform(0.1, 2.0)
        pi, value = sel.kl_regularised_optimum(p, r, beta)
        np.testing.assert_allclose(value, beta * logsumexp(np.log(p) + r / beta), rtol=1e-13)
        np.testing.assert_allclose(sel.kl_regularised_objective(pi, p, r, beta), value,
                                   rtol=1e-12)
        cand = np.concatenate([rng.dirichlet(np.ones(n) * a, size=400)
                               for a in (0.05, 0.3, 1.0, 5.0)])
        cand = np.concatenate([cand, 0.5 * (cand + np.asarray(pi))])  # also near the optimum
        obj = np.asarray(sel.kl_regularised_objective(cand, p[None, :], r[None, :], beta))
        assert obj.max() < float(value)
    # beta = 0: the best reward on the support (max-plus limit)
    pi, value = sel.kl_regularised_optimum(np.array([0.5, 0.5, 0.0]), np.array([1.0, 2.0, 5.0]),
                                           0.0)
    assert float(value) == 2.0
    np.testing.assert_allclose(pi, [0.0, 1.0, 0.0])


# --------------------------------------------------------------------------------------------
# best-of-N
# --------------------------------------------------------------------------------------------
def _bon_brute_force(p, y, N):
    """Enumerate all n^N draws; the kept item is uniform among the drawn maximisers."""
    n = len(p)
    law = np.zeros(n)
    win = tie = 0.0
    for draw in itertools.product(range(n), repeat=N):
        w = np.prod(p[list(draw)])
        best = max(y[i] for i in draw)
        winners = [i for i in draw if y[i] == best]
        for i in winners:
            law[i] += w / len(winners)
        win += w * p[y < best].sum()
        tie += w * p[y == best].sum()
    return law, win, tie


def test_best_of_n_law_matches_brute_force_with_ties():
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(5))
    y = np.array([0.3, 1.0, 1.0, -2.0, 0.3])  # two tie groups
    for N in (1, 2, 3, 5):
        law, win, tie = _bon_brute_force(p, y, N)
        np.testing.assert_allclose(sel.best_of_n_law(p, y, N), law, atol=1e-14)
        wr = sel.best_of_n_win_rate(p, y, N)
        np.testing.assert_allclose([wr.win, wr.tie], [win, tie], atol=1e-14)
        assert float(wr.win) <= N / (N + 1) <= float(wr.win + wr.tie) + 1e-15
    np.testing.assert_allclose(sel.best_of_n_law(p, y, 1), p, rtol=1e-13)


def test_best_of_n_law_matches_monte_carlo():
    p = np.array([0.3, 0.25, 0.2, 0.15, 0.1])
    y = np.array([2.0, -1.0, 0.5, 0.5, 3.0])
    M = 200_000
    idx = np.asarray(sel.sample_best_of_n(jax.random.key(7), p, y, 4, M))
    freq = np.bincount(idx, minlength=5) / M
    law = np.asarray(sel.best_of_n_law(p, y, 4))
    se = np.sqrt(law * (1 - law) / M)
    # tolerance: 5 standard errors per entry (fixed key)
    np.testing.assert_array_less(np.abs(freq - law), 5 * se + 1e-12)


def test_best_of_n_kl_bound_and_binary_counterexample():
    rng = np.random.default_rng(4)
    for _ in range(10):
        # one shape (one compilation); supports of 2..40 items, the rest with p = 0
        n = int(rng.integers(2, 41))
        p = np.zeros(40)
        p[rng.permutation(40)[:n]] = rng.dirichlet(np.ones(n) * rng.uniform(0.2, 3))
        y = rng.normal(size=40)
        if rng.uniform() < 0.3:
            y = np.round(y)  # ties
        for N in (1, 2, 3, 8, 64, 1000):
            kl = float(sel.best_of_n_kl(p, y, N))
            assert -1e-12 <= kl <= float(sel.best_of_n_kl_bound(N)) + 1e-12
    # the bound is approached without ties and with many small atoms
    n = 4000
    p, y = np.full(n, 1 / n), np.arange(n, dtype=float)
    np.testing.assert_allclose(sel.best_of_n_kl(p, y, 4), sel.best_of_n_kl_bound(4), atol=2e-3)
    np.testing.assert_allclose(sel.best_of_n_win_rate(p, y, 4).win, 4 / 5, atol=1e-3)
    # two-point counterexample: KL <= log 2 for every N while the formula grows without bound
    p2, y2 = np.array([0.5, 0.5]), np.array([0.0, 1.0])
    Ns = [1, 2, 4, 16, 256, 10_000]
    kls = np.array([float(sel.best_of_n_kl(p2, y2, N)) for N in Ns])
    exact = [np.log(2) - (-(a * np.log(a) + (1 - a) * np.log1p(-a)) if 0 < a < 1 else 0.0)
             for a in (0.5**N for N in Ns)]
    np.testing.assert_allclose(kls, exact, atol=1e-14)
    assert np.all(kls <= np.log(2))
    gap = np.asarray(sel.best_of_n_kl_bound(np.array(Ns, dtype=float))) - kls
    assert gap[-1] > 7.0 and np.all(np.diff(gap[2:]) > 0)


# --------------------------------------------------------------------------------------------
# Luce curation (Ferbach et al. 2024)
# --------------------------------------------------------------------------------------------
def test_luce_closed_form_matches_enumeration_and_limits():
    p = np.array([0.4, 0.3, 0.2, 0.1])
    r = np.array([0.0, 0.7, 1.5, 2.0])
    for K in (1, 2, 3, 4, 7, 32):
        cf = np.asarray(sel.luce_curation(p, r, K))
        np.testing.assert_allclose(cf, sel.luce_curation_enumerate(p, r, K), atol=1e-12)
        np.testing.assert_allclose(cf.sum(), 1.0, atol=1e-12)
    np.testing.assert_allclose(sel.luce_curation(p, r, 1), p, atol=1e-12)
    # K = 2 by hand: p'(x) = p(x) sum_j p_j 2 e^r(x) / (e^r(x) + e^r_j)
    u = np.exp(r)
    hand = p * (2 * u[:, None] / (u[:, None] + u[None, :]) * p[None, :]).sum(1)
    np.testing.assert_allclose(sel.luce_curation(p, r, 2), hand, atol=1e-13)
    # K -> infinity: the tilt p e^r / Z, error shrinking like 1/K; expected reward increases
    tilt = np.asarray(sel.tilt(p, np.exp(r)))
    errs = [np.abs(np.asarray(sel.luce_curation(p, r, K)) - tilt).max() for K in (50, 200, 800)]
    np.testing.assert_allclose(np.array(errs[:-1]) / np.array(errs[1:]), 4.0, rtol=0.1)
    rewards = [float(np.asarray(sel.luce_curation(p, r, K)) @ r) for K in (1, 2, 4, 32)]
    assert np.all(np.diff(rewards) > 0)
    # a wide reward range (exp(r) spans 1e13) and an item outside the support
    p3, r3 = np.array([0.5, 0.3, 0.2, 0.0]), np.array([-15.0, 0.0, 15.0, 40.0])
    np.testing.assert_allclose(sel.luce_curation(p3, r3, 5),
                               sel.luce_curation_enumerate(p3, r3, 5), atol=1e-12)


def test_luce_closed_form_matches_monte_carlo_to_3_decimals():
    p = np.array([0.4, 0.3, 0.2, 0.1])
    r = np.array([0.0, 0.7, 1.5, 2.0])
    M = 1 << 22  # standard error <= 2.5e-4 per entry, so 1e-3 is >= 4 standard errors
    for K in (2, 4, 32):
        mc = np.asarray(sel.simulate_luce_curation(jax.random.key(K), p, r, K, M))
        cf = np.asarray(sel.luce_curation(p, r, K))
        assert np.sqrt(cf * (1 - cf) / M).max() < 2.5e-4
        np.testing.assert_allclose(mc, cf, atol=1e-3)


# --------------------------------------------------------------------------------------------
# Monte Carlo chaining
# --------------------------------------------------------------------------------------------
def test_chaining_recurrence_inside_band_for_large_buffer():
    # shapes (rounds, batch, buffer, seeds) are shared with the scaling test and the CLI's
    # --quick run, so the kernel compiles once per batch size
    for k, g in enumerate([None, sel.partial_imitation(0.4, 0.6), sel.intrinsic_error(0.05)]):
        run = sel.simulate_chaining(jax.random.key(10 + k), 0.4, 0.8, 0.5, g, rounds=6,
                                    batch=4096, buffer_size=1024, seeds=200)
        assert run.error.shape == (200, 7) and run.acceptance.shape == (200, 6)
        # every round accepts >= buffer_size answers, so the buffer holds that round only
        assert int(np.asarray(run.acceptance).min() * 4096) >= 1024
        _, lo, hi = sel.band(run.error)
        rec = np.asarray(sel.adapt_trajectory(0.4, 0.8, 0.5, g, 6))
        assert np.all((rec >= np.asarray(lo)) & (rec <= np.asarray(hi)))
        # the Monte Carlo mean tracks the recurrence to within 4 standard errors
        se = np.asarray(run.error).std(0) / np.sqrt(200)
        np.testing.assert_array_less(np.abs(np.asarray(run.error).mean(0) - rec), 4 * se + 1e-12)
        # acceptance per round is the acceptance rate of the current error
        acc_pred = np.asarray(sel.acceptance_rate(run.error[:, :-1], 0.8, 0.5))
        np.testing.assert_allclose(np.asarray(run.acceptance).mean(), acc_pred.mean(), atol=2e-3)


def test_chaining_band_width_scales_as_inverse_sqrt_batch():
    g = sel.partial_imitation(0.3, 0.6)
    batches = np.array([256, 1024, 4096])
    widths = []
    for b in batches:
        run = sel.simulate_chaining(jax.random.key(int(b)), 0.3, 0.8, 0.4, g, rounds=6,
                                    batch=int(b), buffer_size=int(b) // 4, seeds=200)
        _, lo, hi = sel.band(run.error[:, -1])
        widths.append(float(hi - lo))
    slope = np.polyfit(np.log(batches), np.log(widths), 1)[0]
    np.testing.assert_allclose(slope, -0.5, atol=0.1)


# --------------------------------------------------------------------------------------------
# phase diagrams, boundaries, convexity
# --------------------------------------------------------------------------------------------
def test_phase_diagrams_are_labelled_and_match_closed_form_boundaries():
    t = np.linspace(0.0, 1.0, 41)[1:]
    f = np.linspace(0.0, 1.0, 41)
    ds = sel.phase_diagram_rates(t, f, 0.3, rounds=8)
    assert isinstance(ds, xr.Dataset) and ds["ratio"].dims == ("tpr", "fpr")
    np.testing.assert_array_equal(ds.coords["fpr"].values, f)
    np.testing.assert_allclose(ds["error"].sel(tpr=0.8, fpr=0.4),
                               sel.boost(0.3, 0.8, 0.4, 8)[-1], rtol=1e-14)
    # the ideal learner lowers the error exactly where FPR < TPR: the level-1 contour is the
    # diagonal, and the region below it is convex
    for lines in (sel.boundary(ds["ratio"], 1.0),
                  sel.boundary(sel.phase_diagram_rates(t, f, 0.3, sel.partial_imitation(0.3, 0.7))
                               ["ratio"], 1.0)):
        assert len(lines) == 1 and len(lines[0]) > 30
        np.testing.assert_allclose(lines[0][:, 1], lines[0][:, 0], atol=1e-9)
    assert sel.is_convex(ds["ratio"], 1.0 - 1e-9).convex
    # ratio = 1/2 after 8 rounds: the wedge FPR = c TPR, to within a grid step, halving with h
    c = sel.rates_boundary(0.3, 0.5, rounds=8)
    errs = []
    for n in (21, 41):
        d = sel.phase_diagram_rates(np.linspace(0, 1, n)[1:], np.linspace(0, 1, n), 0.3, rounds=8)
        (line,) = sel.boundary(d["ratio"], 0.5)
        errs.append(np.abs(line[:, 1] - c * line[:, 0]).max())
        assert errs[-1] < 1.0 / (n - 1)
    np.testing.assert_allclose(errs[0] / errs[1], 2.0, rtol=0.15)
    # partial imitation over (selection, lam)
    L = np.linspace(-1.0, 6.0, 57)
    lam = np.linspace(0.02, 1.0, 50)
    di = sel.phase_diagram_imitation(L, lam, 0.3)
    assert di["ratio"].dims == ("selection", "lam")
    # the loop depends on the rates only through FPR/TPR
    tpr, fpr = 0.6, 0.6 * np.exp(-1.3)
    np.testing.assert_allclose(sel.limit_error(0.3, tpr, fpr, sel.partial_imitation(0.3, 0.8)),
                               float(sel.phase_diagram_imitation([1.3, 2.0], [0.8, 0.9], 0.3)
                                     ["error"][0, 0]), rtol=1e-12)
    for line in sel.boundary(di["ratio"], 0.5):
        inner = line[(line[:, 1] < 0.95) & (line[:, 0] < 5.5)]
        np.testing.assert_allclose(inner[:, 0], sel.imitation_boundary(inner[:, 1], 0.3, 0.5),
                                   atol=0.03)
    # intrinsic error over (selection, mu)
    dm = sel.phase_diagram_intrinsic(np.linspace(0.05, 5, 50), np.linspace(0, 0.98, 50))
    assert dm["error"].dims == ("selection", "mu")
    for line in sel.boundary(dm["error"], 0.2):
        np.testing.assert_allclose(line[:, 1], sel.intrinsic_boundary(line[:, 0], 0.2),
                                   atol=0.01)
    np.testing.assert_allclose(sel.intrinsic_boundary(1.0, 0.2), 0.2 * (1 - np.exp(-1.0)))
    # the general-nu formula agrees with the limit itself
    mu_b = sel.intrinsic_boundary(1.5, 0.2, nu=0.1)
    t15, f15 = sel.selection_rates(1.5)
    np.testing.assert_allclose(sel.limit_error(0.5, t15, f15, sel.intrinsic_error(mu_b, 0.1)),
                               0.2, atol=1e-12)


def test_convexity_verdicts_on_known_regions():
    x = np.linspace(-1, 1, 61)
    X, Y = np.meshgrid(x, x, indexing="ij")
    mk = lambda z: xr.DataArray(z, dims=("a", "b"), coords={"a": x, "b": x})
    assert sel.is_convex(mk(X**2 + Y**2), 0.5).convex  # disc
    assert sel.is_convex(mk(X + 2 * Y), 0.3).convex  # half-plane
    ring = sel.is_convex(mk(X**2 + Y**2), 0.3, side="above")  # square minus a disc
    assert not ring.convex and ring.depth > 0.2 and ring.witness is not None
    lshape = sel.is_convex(mk(np.minimum(X, Y)), 0.0)  # L-shaped {min(x, y) <= 0}
    assert not lshape.convex
    np.testing.assert_allclose(lshape.witness, (x[np.argmin(np.abs(x - 0.0333))],) * 2,
                               atol=0.05)
    assert sel.is_convex(mk(X), 5.0).convex and sel.is_convex(mk(X), -5.0).convex  # full, empty
    # the boundary of a disc lies on the circle up to interpolation error
    (circle,) = sel.boundary(mk(X**2 + Y**2), 0.5)
    np.testing.assert_allclose(np.hypot(circle[:, 0], circle[:, 1]), np.sqrt(0.5), atol=2e-3)


def test_imitation_plane_convexity_matches_the_closed_form_boundary():
    L = np.linspace(0.0, 8.0, 81)
    lam = np.linspace(0.05, 1.0, 77)
    for eps0, target in ((0.3, 0.5), (0.8, 0.7), (0.9, 0.3)):
        ds = sel.phase_diagram_imitation(L, lam, eps0)
        verdict = sel.is_convex(ds["ratio"], target)
        lam_f = np.linspace(1 - target + 1e-3, 1.0, 5001)
        Lb = sel.imitation_boundary(lam_f, eps0, target)
        analytic_convex = bool(np.all(np.diff(Lb, 2) >= -1e-12))  # region = epigraph of L(lam)
        assert verdict.convex == analytic_convex


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------
def test_bad_input_raises_named_errors():
    with pytest.raises(QuasirlValueError, match=r"^eps0 must lie in \[0, 1\], but eps0 = 1.5$"):
        sel.boost(1.5, 0.8, 0.4, 3)
    with pytest.raises(QuasirlValueError, match=r"fpr must lie in \[0, 1\], but fpr\[1\] = -0.1"):
        sel.boost(0.3, 0.8, np.array([0.2, -0.1]), 3)
    with pytest.raises(QuasirlValueError, match="rounds must be >= 0, got -1"):
        sel.boost(0.3, 0.8, 0.4, -1)
    with pytest.raises(QuasirlValueError, match="rounds must be an integer"):
        sel.boost(0.3, 0.8, 0.4, 2.5)
    with pytest.raises(QuasirlValueError, match=r"lam must lie in \[0, 1\]"):
        sel.partial_imitation(0.3, 1.2)
    with pytest.raises(QuasirlValueError, match=r"mu \+ nu must be <= 1"):
        sel.intrinsic_error(0.7, 0.6)
    with pytest.raises(QuasirlValueError, match=r"f must be non-negative, but f\[2\] = -1.0"):
        sel.tilt(np.array([0.2, 0.3, 0.5]), np.array([1.0, 1.0, -1.0]))
    with pytest.raises(QuasirlValueError, match="p must sum to 1"):
        sel.best_of_n_law(np.array([0.2, 0.3]), np.array([0.0, 1.0]), 3)
    with pytest.raises(QuasirlValueError, match="N must be >= 1, got 0"):
        sel.best_of_n_kl(np.array([0.5, 0.5]), np.array([0.0, 1.0]), 0)
    with pytest.raises(QuasirlValueError, match="key must be one JAX random key"):
        sel.simulate_chaining(123, 0.3, 0.8, 0.4)
    with pytest.raises(QuasirlValueError, match="expected a 2-D DataArray"):
        sel.is_convex(xr.DataArray(np.zeros(3), dims=("a",), coords={"a": [0, 1, 2]}), 0.0)
    with pytest.raises(QuasirlValueError, match=r"tpr must be strictly increasing"):
        sel.phase_diagram_rates([0.5, 0.4], [0.1, 0.2], 0.3)
    with pytest.raises(QuasirlValueError, match="enumeration would need"):
        sel.luce_curation_enumerate(np.full(20, 0.05), np.zeros(20), 40)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def test_boost_cli_writes_figures_and_consistent_numbers(tmp_path, capsys):
    assert main(["boost", "--out", str(tmp_path), "--quick"]) == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    for name in s["figures"]:
        assert (tmp_path / name).stat().st_size > 10_000
    for name in s["netcdf"]:
        with xr.open_dataset(tmp_path / name) as ds:
            assert set(ds.data_vars) >= {"error"}
    prm = s["parameters"]
    np.testing.assert_allclose(s["trajectories"][0]["recurrence"],
                               sel.boost(prm["eps0"], prm["tpr"], prm["fpr"], prm["rounds"]),
                               rtol=1e-12)
    assert s["closed_form_max_abs_diff"] < 1e-12
    for plane in ("rates", "imitation", "intrinsic"):
        rep = s["phase_diagrams"][plane]
        assert isinstance(rep["convex"], bool) and rep["boundary_points"] > 5
        assert rep["max_deviation_from_closed_form"] < 0.1
    assert s["phase_diagrams"]["rates"]["diagonal_level_1_max_deviation"] < 1e-9
    assert s["best_of_n"]["bound_holds"]
    out = capsys.readouterr().out
    assert "convex" in out and "imitation" in out


def test_boost_cli_bad_argument_is_one_line(capsys):
    assert main(["boost", "--eps0", "1.5", "--out", "/tmp/unused-quasirl-boost", "--quick"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: eps0 must lie in [0, 1], but eps0 = 1.5"
