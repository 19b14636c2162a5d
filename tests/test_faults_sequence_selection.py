"""Faults of quasirl.sequence and quasirl.selection (issue #15, "Nothing silently wrong").

Each test holds one fault to its fix: a result that used to be silently wrong (NaN, a
clipped or out-of-range error rate, an infinite superiority) is now right against an
independent reference (the same landscape scaled down, float64, 50-digit decimal arithmetic),
and input that used
to raise a raw numpy/JAX error or run for a long time raises a QuasirlValueError saying what
is wrong, with the value and where.
"""

from decimal import Decimal, localcontext

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import quasirl as qr
from quasirl import selection as sel
from quasirl import sequence as S
from quasirl._validate import QuasirlValueError

KERNELS = [
    "xla",
    pytest.param("native", marks=pytest.mark.skipif(
        not qr.kernel_status()["in_use"],
        reason=f"native kernel not in use here: {qr.kernel_status()['reason']}")),
]
F32 = np.float32


# --------------------------------------------------------------------------------------------
# 1. fitness near the float32 maximum
# --------------------------------------------------------------------------------------------
def _landscape(L, peak, rest, dtype):
    f = np.full(1 << L, rest, dtype)
    f[0] = peak
    return f


@pytest.mark.parametrize("kernel", KERNELS)
def test_float32_fitness_near_max_is_finite_and_scale_invariant(kernel):
    """Peak 1e38 over a background of 1e37 in float32 (once all NaN) equals the same landscape
    scaled down to 10 over 1 (distribution; mean fitness times 1e37) and float64."""
    L, mu, G = 6, F32(0.02), 40
    big = _landscape(L, 1e38, 1e37, F32)
    small = _landscape(L, 10.0, 1.0, F32)
    ref64 = S.stationary(big.astype(np.float64), 0.02, kernel="xla")

    ev_big = S.evolve(big, mu, G, kernel=kernel)
    ev_small = S.evolve(small, mu, G, kernel=kernel)
    assert ev_big.distribution.dtype == jnp.float32
    assert np.isfinite(np.asarray(ev_big.mean_fitness)).all()
    np.testing.assert_allclose(ev_big.distribution, ev_small.distribution, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(np.asarray(ev_big.mean_fitness, np.float64) / 1e37,
                               ev_small.mean_fitness, rtol=1e-5)

    st_big = S.stationary(big, mu, kernel=kernel)
    st_small = S.stationary(small, mu, kernel=kernel)
    assert bool(st_big.converged)
    np.testing.assert_allclose(st_big.distribution, st_small.distribution, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(st_big.distribution, ref64.distribution, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(float(st_big.mean_fitness), float(ref64.mean_fitness), rtol=1e-5)
    np.testing.assert_allclose(float(st_big.mean_fitness) / 1e37, float(st_small.mean_fitness),
                               rtol=1e-5)


@pytest.mark.parametrize("kernel", KERNELS)
def test_float32_single_peak_1e38_matches_float64(kernel):
    """The issue's case: a single peak of 1e38 over 1 in float32 against float64."""
    L, mu = 6, F32(0.01)
    f = _landscape(L, 1e38, 1.0, F32)
    st = S.stationary(f, mu, kernel=kernel)
    ref = S.stationary(f.astype(np.float64), 0.01, kernel="xla")
    assert np.isfinite(np.asarray(st.distribution)).all()
    np.testing.assert_allclose(st.distribution, ref.distribution, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(float(st.mean_fitness), float(ref.mean_fitness), rtol=1e-5)
    ev = S.evolve(f, mu, 30, kernel=kernel)
    ev64 = S.evolve(f.astype(np.float64), 0.01, 30, kernel="xla")
    np.testing.assert_allclose(ev.distribution, ev64.distribution, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(np.asarray(ev.mean_fitness, np.float64), ev64.mean_fitness,
                               rtol=1e-5)


def test_float32_huge_fitness_wright_fisher_mean_is_finite():
    """f . n overflowed for a population of 1000 at fitness 1e38 (mean fitness inf/NaN)."""
    key = jax.random.key(3)
    big = _landscape(4, 1e38, 1e37, F32)
    small = _landscape(4, 10.0, 1.0, F32)
    wb = S.wright_fisher(key, big, F32(0.02), 1000, 8)
    ws = S.wright_fisher(key, small, F32(0.02), 1000, 8)
    assert np.isfinite(np.asarray(wb.mean_fitness)).all()
    np.testing.assert_allclose(np.asarray(wb.mean_fitness, np.float64) / 1e37, ws.mean_fitness,
                               rtol=1e-3)
    table = np.array([1e38, 1e37, 1e37, 1e37, 1e37], F32)
    pop = S.wright_fisher_individuals(key, table, F32(0.02), 1000, 4)
    assert np.isfinite(np.asarray(pop.mean_fitness)).all()
    assert 1e37 <= float(pop.mean_fitness[-1]) <= 1e38


def test_superiority_of_a_huge_peak_is_not_infinite():
    # f.sum() - f[m] lost the background entirely: sigma came out inf
    f = _landscape(3, 1e20, 2.0, np.float64)
    assert S.superiority(f) == pytest.approx(5e19, rel=1e-12)


# --------------------------------------------------------------------------------------------
# 2. adaptation maps that leave [0, 1]
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("g, value", [
    (lambda w: w + 2.0, "2.04545"),
    (lambda w: w - 1.0, "-0.95454"),
    (lambda w: w * jnp.nan, "nan"),
])
def test_adapt_trajectory_refuses_a_map_leaving_the_unit_interval(g, value):
    with pytest.raises(QuasirlValueError, match=rf"g must map \[0, 1\] into \[0, 1\].*round 1 "
                                                rf".*eps_1 = {value}"):
        sel.adapt_trajectory(0.3, 0.9, 0.1, g, 5)


def test_map_leaving_the_unit_interval_names_round_and_index():
    # the ideal learner with odds shrinking 9x a round, except that it jumps to 1.5 once the
    # wrong fraction falls below 1e-3: in round 3 from eps0 = 0.3, in round 4 from 0.5
    g = lambda w: jnp.where(w < 1e-3, 1.5, w)  # noqa: E731
    with pytest.raises(QuasirlValueError, match=r"round 3 .*at index \[1\]"):
        sel.adapt_trajectory(np.array([0.5, 0.3]), 0.9, 0.1, g, 6)
    with pytest.raises(QuasirlValueError, match=r"round 3 .*at index \[1\]"):
        sel.limit_error(np.array([0.5, 0.3]), 0.9, 0.1, g, rounds=50)


def test_every_loop_function_refuses_a_map_leaving_the_unit_interval():
    g = lambda w: w + 2.0  # noqa: E731
    match = r"g must map \[0, 1\] into \[0, 1\]"
    for call in (lambda: sel.step_map(0.3, 0.9, 0.1, g),
                 lambda: sel.lowers_error(0.3, 0.9, 0.1, g),
                 lambda: sel.limit_error(0.3, 0.9, 0.1, g),
                 lambda: sel.stability(0.3, 0.9, 0.1, g),
                 lambda: sel.fixed_points(0.9, 0.1, g),
                 lambda: sel.simulate_chaining(jax.random.key(0), 0.3, 0.9, 0.1, g, rounds=3,
                                               batch=16, buffer_size=16, seeds=2)):
        with pytest.raises(QuasirlValueError, match=match):
            call()
    # affine maps are checked at their ends: g(0) = a, g(1) = a + b (the analytic limit used
    # to clip an orbit of 2.05, 4.05, ... to 1)
    for bad, where in ((sel.Affine(2.0, 1.0), r"g\(0\) = 2.0"),
                       (sel.Affine(0.5, 0.7), r"g\(1\) = 1.2"),
                       (sel.Imitation(0.5, 1.5), r"g\(0\) = -0.25")):
        with pytest.raises(QuasirlValueError, match=where):
            sel.limit_error(0.3, 0.9, 0.1, bad)
        with pytest.raises(QuasirlValueError, match=where):
            sel.adapt_trajectory(0.3, 0.9, 0.1, bad, 3)


def test_maps_inside_the_unit_interval_still_pass():
    traj = sel.adapt_trajectory(0.3, 0.9, 0.1, lambda w: 0.5 * w + 0.25, 4)
    assert np.all((np.asarray(traj) >= 0) & (np.asarray(traj) <= 1))
    run = sel.simulate_chaining(jax.random.key(0), 0.3, 0.9, 0.1, sel.partial_imitation(0.3, 1.0),
                                rounds=3, batch=16, buffer_size=16, seeds=2)
    assert run.error.shape == (2, 4)


# --------------------------------------------------------------------------------------------
# 3. shapes that do not broadcast
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, match", [
    (lambda: sel.boost(np.full(3, 0.3), np.full(4, 0.9), 0.1, 2),
     r"eps0 and tpr .* eps0 has shape \(3,\) and tpr has shape \(4,\)"),
    (lambda: sel.acceptance_rate(0.3, np.full(3, 0.9), np.full(2, 0.1)),
     r"tpr and fpr .* tpr has shape \(3,\) and fpr has shape \(2,\)"),
    (lambda: sel.adapt_trajectory(np.full(3, 0.3), 0.9, 0.1,
                                  sel.partial_imitation(0.3, np.full(2, 0.5)), 4),
     r"eps0 and g.lam .* \(3,\) .* \(2,\)"),
    (lambda: sel.limit_error(np.full(3, 0.3), np.full((2, 1), 0.9), np.full(4, 0.1)),
     r"eps0 and fpr .* \(3,\) .* \(4,\)"),
    (lambda: sel.fixed_points(np.full(3, 0.9), np.full(2, 0.1)), r"tpr and fpr"),
    (lambda: sel.intrinsic_error(np.full(3, 0.1), np.full(2, 0.1)), r"mu and nu"),
    (lambda: sel.kl_divergence(np.full(2, 0.5), np.full(3, 1 / 3)), r"q and p"),
    (lambda: sel.kl_regularised_objective(np.full(2, 0.5), np.full(2, 0.5), np.ones(3), 1.0),
     r"pi and r"),
])
def test_shapes_that_do_not_broadcast_name_both_arguments(call, match):
    with pytest.raises(QuasirlValueError, match=match):
        call()


# --------------------------------------------------------------------------------------------
# 4. best-of-N for huge N
# --------------------------------------------------------------------------------------------
def _bon_two_points(q, N):
    """Exact law and KL of best-of-N for p = [p0, q], y = [0, 1] (50 digits): the best item
    is kept unless all N draws miss it, pi_0 = (1 - q)^N, and KL = sum pi log(pi / p)."""
    with localcontext() as ctx:
        ctx.prec = 50
        q = Decimal(float(q))  # the float the library sees, exactly
        pi0 = (Decimal(N) * (1 - q).ln()).exp()
        pi1 = 1 - pi0

        def kl(p0):
            return float(pi0 * (pi0 / Decimal(float(p0))).ln() + pi1 * (pi1 / q).ln())

        return float(pi0), float(pi1), kl


def test_best_of_n_kl_for_huge_n_matches_50_digit_arithmetic():
    # N = 10^20 overflowed int64 on the way into the jitted kernel (OverflowError)
    q, N = 1e-21, 10**20
    p, y = np.array([1.0, q]), np.array([0.0, 1.0])
    pi0, pi1, kl = _bon_two_points(q, N)
    np.testing.assert_allclose(float(sel.best_of_n_kl(p, y, N)), kl(1.0), rtol=1e-12)
    np.testing.assert_allclose(sel.best_of_n_law(p, y, N), [pi0, pi1], rtol=1e-12)
    wr = sel.best_of_n_win_rate(p, y, N)
    np.testing.assert_allclose(float(wr.win), pi1 * (1 - q), rtol=1e-12)
    # the N = 10^12, with an atom small enough that the law is not trivial
    q, N = 1e-13, 10**12
    p = np.array([1 - q, q])
    pi0, pi1, kl = _bon_two_points(q, N)
    np.testing.assert_allclose(float(sel.best_of_n_kl(p, y, N)), kl(p[0]), rtol=1e-9)
    with pytest.raises(QuasirlValueError, match=r"N = 10{31} exceeds the best-of-N limit 1e\+30"):
        sel.best_of_n_kl(p, y, 10**31)


@pytest.mark.parametrize("N", [1, 2, 10**12, 10**20, 10**400])
def test_best_of_n_kl_bound_for_huge_n_matches_50_digit_arithmetic(N):
    with localcontext() as ctx:
        ctx.prec = 50
        n = Decimal(N)
        bound = float(n.ln() - (n - 1) / n)
        win = float(n / (n + 1))
    np.testing.assert_allclose(float(sel.best_of_n_kl_bound(N)), bound, rtol=1e-14)
    np.testing.assert_allclose(float(sel.win_rate_bound(N)), win, rtol=1e-15)


@pytest.mark.parametrize("N", [0, -1, np.nan, 0.5])
def test_best_of_n_bounds_refuse_n_below_one(N):
    # these were NaN or -inf, silently
    with pytest.raises(QuasirlValueError, match="N must be"):
        sel.best_of_n_kl_bound(N)
    with pytest.raises(QuasirlValueError, match="N must be"):
        sel.win_rate_bound(N)


def test_sample_best_of_n_refuses_a_draw_beyond_its_limit():
    # samples * N = 10^13 draws: an out-of-memory error from XLA before
    with pytest.raises(QuasirlValueError, match=r"samples \* N = 10 \* 10{12}.*2\^28"):
        sel.sample_best_of_n(jax.random.key(0), np.full(2, 0.5), np.arange(2.0), 10**12, 10)


# --------------------------------------------------------------------------------------------
# 5. Wright-Fisher beyond int32 / 6. the class reduction beyond its limit
# --------------------------------------------------------------------------------------------
def test_wright_fisher_population_beyond_int32_is_refused_with_the_limit():
    key = jax.random.key(0)
    with pytest.raises(QuasirlValueError, match=r"N = 2147483648 exceeds .* 2\^31 - 1"):
        S.wright_fisher(key, S.single_peak(3, 2.0), 0.01, 2**31, 2)
    with pytest.raises(QuasirlValueError, match=r"N = 2147483648 exceeds .* 2\^31 - 1"):
        S.wright_fisher_individuals(key, np.array([2.0, 1.0, 1.0]), 0.01, 2**31, 2)
    assert "2^31 - 1" in S.wright_fisher.__doc__


def test_class_stationary_beyond_its_limit_is_refused_at_once():
    f = np.ones(5001)
    f[0] = 10.0
    for call in (lambda: S.class_stationary(f, 1e-4),
                 lambda: S.class_stationary(f, 1e-4, model="continuous"),
                 lambda: S.class_matrix(5000, 1e-4),
                 lambda: S.class_iterate(f, 1e-4, 2),
                 lambda: S.error_threshold(f, space="classes")):
        with pytest.raises(QuasirlValueError, match=r"L = 5000 exceeds the class reduction's "
                                                    r"limit of 2000: .*O\(L\^3\) time"):
            call()
    assert "2000" in S.class_stationary.__doc__


# --------------------------------------------------------------------------------------------
# 7. other bad input: raw errors, silent casts, silent NaN
# --------------------------------------------------------------------------------------------
KEY = jax.random.key(0)
F4 = np.array([2.0, 1.0, 1.0, 1.0])
P2, Y2 = np.array([0.5, 0.5]), np.array([0.0, 1.0])


@pytest.mark.filterwarnings("error")  # a ComplexWarning would be a silent cast
@pytest.mark.parametrize("call, match", [
    # complex input: refused, never cast
    (lambda: S.evolve(F4, 0.1 + 0j, 3), "mu must be real"),
    (lambda: S.mutate(F4 + 0j, 0.1), "x must be real"),
    (lambda: S.evolve(F4, 0.1, 3, x0=F4 + 0j), "x0 must be real"),
    (lambda: S.single_peak(3, 2.0 + 1j), "sigma must be real"),
    (lambda: S.class_stationary(np.array([2.0, 1.0, 1.0]) + 0j, 0.1), "f_of_distance must be "
                                                                      "real"),
    (lambda: S.class_matrix(3, 0.1 + 0j), "mu must be real"),
    (lambda: sel.boost(0.3 + 0j, 0.9, 0.1, 3), "eps0 must be real"),
    (lambda: sel.temper(P2, Y2, 1.0 + 0j), "T must be real"),
    (lambda: sel.kl_divergence(P2 + 0j, P2), "q must be real"),
    (lambda: sel.phase_diagram_imitation(np.array([0.5, 1.0]) + 0j, [0.1, 0.2], 0.3),
     "selection must be real"),
    # raw TypeError / ValueError from numpy or JAX
    (lambda: S.mutate(F4, "a"), "mu must be a number"),
    (lambda: S.evolve(F4, 0.1, 3, model="continuous", dt="a"), "dt must be a number"),
    (lambda: S.stationary(F4, 0.1, tol="a"), "tol must be a number"),
    (lambda: S.wright_fisher(3, F4, 0.1, 10, 3), "key must be one JAX random key"),
    (lambda: S.swetina_schuster(5, "a", 0.1), "sigma must be a number"),
    (lambda: S.cerf_dalmau(10.0, 0.5, 3, terms=-1), "terms must be >= 1"),
    (lambda: S.superiority(F4, master=10), r"master must be in \[0, 2\^L\)"),
    (lambda: S.error_threshold(F4, bracket=(0.1, 0.2, 0.3)), "bracket must be a pair"),
    (lambda: sel.simulate_luce_curation(3, P2, Y2, 3, 10), "key must be one JAX random key"),
    (lambda: sel.sample_best_of_n(KEY, np.full((2, 2), 0.5), np.ones((2, 2)), 2, 10),
     "p must be 1-D"),
    (lambda: sel.phase_diagram_rates([0.5, 0.9], [0.1, 0.2], np.array([0.3, 0.4])),
     r"eps0 must be a number, got shape \(2,\)"),
    (lambda: sel.band(np.ones((3, 2)), axis=5), r"axis must be an integer in \[-2, 2\)"),
    # silently wrong before: NaN out, a wrong model, a clipped or ignored argument
    (lambda: S.mutate(np.array([np.nan, 1.0, 1.0, 1.0]), 0.1), r"x\[0\] = nan"),
    (lambda: S.class_iterate(np.array([2.0, 1.0, 1.0]), 0.1, 3, y0=np.zeros(3)),
     "y0 must put mass on a class of positive fitness"),
    (lambda: S.error_threshold(F4, model="ode"), "model must be"),
    (lambda: S.error_threshold(F4, tol=-1.0), "tol must be a finite number > 0"),
    (lambda: S.error_threshold(F4, max_iter=0), "max_iter must be >= 1"),
    (lambda: S.stationary(F4, 0.1, accelerate="no"), "accelerate must be True or False"),
    (lambda: S.superiority(F4, space="cube"), "space must be"),
    (lambda: sel.kl_divergence(np.array([np.nan, 1.0]), P2), r"q must be finite, but q\[0\]"),
    (lambda: sel.kl_divergence(np.array([1.5, -0.5]), P2), "q must be non-negative"),
    (lambda: sel.kl_regularised_objective(P2, P2, Y2, -1.0), "beta must be a finite number"),
    (lambda: sel.luce_curation(P2, Y2, 3, nodes=1), "nodes must be >= 2"),
    (lambda: sel.rates_boundary(2.0, 0.5), r"eps0 must lie in \(0, 1\)"),
    (lambda: sel.intrinsic_boundary([0.5], 2.0), r"target must lie in \[0, 1\]"),
])
def test_bad_input_raises_a_clear_error(call, match):
    with pytest.raises(QuasirlValueError, match=match):
        call()



def test_gradient_through_the_scaled_fitness_matches_finite_differences():
    """The max-fitness scale is a constant for autodiff: d/df of the mean fitness and of a
    genotype's frequency still equal central differences."""
    f = np.random.default_rng(0).uniform(0.5, 3.0, 16)

    def fn(f):
        tr = S.evolve(f, 0.05, 12, kernel="xla")
        return tr.mean_fitness[-1] + tr.distribution[3]

    grad = np.asarray(jax.grad(fn)(jnp.asarray(f)))
    h, eye = 1e-6, np.eye(16)
    fd = np.array([(fn(f + h * eye[i]) - fn(f - h * eye[i])) / (2 * h) for i in range(16)])
    np.testing.assert_allclose(grad, fd, rtol=1e-7, atol=1e-8)
