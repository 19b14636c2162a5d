"""quasirl.sequence against independent oracles.

Oracles: the dense 2^L x 2^L mutation matrix built with numpy.kron (L <= 10) and its
eigen-decomposition; the Walsh functions (eigenvectors of Q in closed form); brute-force loops
over genotypes for landscapes and Hamming classes; a brute-force lumping of the dense matrix
for the class reduction; scipy.linalg.expm for Crow-Kimura; the closed forms of Eigen /
Swetina-Schuster and Cerf-Dalmau; and, for Wright-Fisher, the deterministic model with
tolerances stated in batch-means standard errors (fixed keys).
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from quasirl import sequence as S
from quasirl._validate import QuasirlValueError
from quasirl.cli import main


# --------------------------------------------------------------------------------------------
# one BLAS thread while these tests run: on a loaded 2-core machine OpenBLAS's threads wait on
# each other (a 1024 x 1024 eigh took 10 s with 2 threads and 0.07 s with 1); restored after
# --------------------------------------------------------------------------------------------
def _openblas_handles():
    import ctypes

    paths = set()
    with open("/proc/self/maps") as fh:
        for line in fh:
            if "openblas" in line.lower() and ".so" in line:
                paths.add(line.split()[-1])
    for path in sorted(paths):
        lib = ctypes.CDLL(path)
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and put is not None:
                    yield get, put
                    break
            else:
                continue
            break


@pytest.fixture(autouse=True, scope="module")
def _single_blas_thread():
    import scipy.linalg  # noqa: F401  (load scipy's OpenBLAS too)

    try:
        handles = list(_openblas_handles())
        saved = [(put, get()) for get, put in handles]
        for _, put in handles:
            put(1)
    except OSError:  # not Linux, or no OpenBLAS: nothing to do
        saved = []
    yield
    for put, n in saved:
        put(n)


# --------------------------------------------------------------------------------------------
# oracles
# --------------------------------------------------------------------------------------------
def dense_Q(u, v):
    """Dense Q = kron_j [[1-u_j, v_j], [u_j, 1-v_j]] (site 0 the most significant bit)."""
    Q = np.ones((1, 1))
    for a, b in zip(u, v, strict=True):
        Q = np.kron(Q, np.array([[1 - a, b], [a, 1 - b]]))
    return Q


def popcount(i):
    return bin(int(i)).count("1")


def perron(A):
    w, V = np.linalg.eig(A)
    i = np.argmax(w.real)
    x = np.abs(V[:, i].real)
    order = np.sort(np.abs(w))[::-1]
    return x / x.sum(), w[i].real, order[1] / order[0]


def sharp_classes(L, sigma):
    return np.r_[sigma, np.ones(L)]


def batch_se(series, nbatch=20):
    """Standard error of a time average by batch means."""
    b = np.asarray(series)[: len(series) // nbatch * nbatch].reshape(nbatch, -1).mean(1)
    return b.std(ddof=1) / np.sqrt(nbatch)


# --------------------------------------------------------------------------------------------
# mutation operator
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("L", [1, 2, 5, 8, 10])
def test_mutate_equals_dense_kronecker(L):
    rng = np.random.default_rng(L)
    x = rng.random(1 << L)
    u, v = rng.uniform(0, 0.4, L), rng.uniform(0, 0.4, L)
    cases = [(0.07, None, np.full(L, 0.07), np.full(L, 0.07)), (u, None, u, u), (u, v, u, v),
             (0.1, 0.3, np.full(L, 0.1), np.full(L, 0.3))]
    groupings = [None, (L,), (1,) * L]
    if L >= 5:
        groupings.append((2, L - 4, 2))
    for mu, nu, uu, vv in cases:
        ref = dense_Q(uu, vv) @ x
        for g in groupings:
            np.testing.assert_allclose(S.mutate(x, mu, nu, groups=g), ref, rtol=1e-13,
                                       atol=1e-15)


def test_mutate_point_mass_is_product_bernoulli_at_L16():
    """Q e_m: probability mu^d (1-mu)^(L-d) at distance d from m (closed form, no dense Q)."""
    L, mu, m = 16, 0.03, 0b1010011100001111
    e = np.zeros(1 << L)
    e[m] = 1.0
    d = np.asarray(S.hamming_distance(L, m))
    y = S.mutate(e, mu)
    np.testing.assert_allclose(y, mu**d * (1 - mu) ** (L - d), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(float(jnp.sum(y)), 1.0, rtol=1e-13)


def test_mutate_float32_close_to_float64_and_keeps_dtype():
    rng = np.random.default_rng(3)
    x = rng.random(1 << 12)
    y64 = S.mutate(x, 0.02)
    y32 = S.mutate(x.astype(np.float32), np.float32(0.02))
    assert y32.dtype == jnp.float32 and y64.dtype == jnp.float64
    np.testing.assert_allclose(y32, y64, rtol=2e-5)


def test_mutate_vmap_over_mu_equals_loop():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.random(1 << 9))
    mus = jnp.array([0.0, 0.01, 0.2, 0.5])
    batched = jax.vmap(lambda m: S.mutate(x, m))(mus)
    for i, m in enumerate(mus):
        np.testing.assert_allclose(batched[i], S.mutate(x, float(m)), rtol=1e-14)


@pytest.mark.parametrize("L", [3, 6])
def test_mutation_spectrum_matches_dense_eigenvalues(L):
    rng = np.random.default_rng(L)
    # scalar symmetric: (1-2mu)^k with multiplicity C(L, k)
    sp = S.mutation_spectrum(L, 0.13)
    np.testing.assert_allclose(sp.eigenvalues, (1 - 0.26) ** np.arange(L + 1), rtol=1e-14)
    np.testing.assert_allclose(sp.multiplicity, [math.comb(L, k) for k in range(L + 1)])
    ev = np.sort(np.linalg.eigvals(dense_Q(np.full(L, 0.13), np.full(L, 0.13))).real)
    np.testing.assert_allclose(np.sort(np.repeat(sp.eigenvalues, np.asarray(sp.multiplicity)
                                                  .astype(int))), ev, atol=1e-12)
    # scalar asymmetric: (1 - mu - nu)^k
    sp = S.mutation_spectrum(L, 0.1, 0.25)
    ev = np.sort(np.linalg.eigvals(dense_Q(np.full(L, 0.1), np.full(L, 0.25))).real)
    np.testing.assert_allclose(np.sort(np.repeat(sp.eigenvalues, np.asarray(sp.multiplicity)
                                                  .astype(int))), ev, atol=1e-12)
    # per-site: all 2^L products
    u, v = rng.uniform(0, 0.5, L), rng.uniform(0, 0.5, L)
    sp = S.mutation_spectrum(L, u, v)
    assert sp.eigenvalues.shape == (1 << L,)
    ev = np.sort(np.linalg.eigvals(dense_Q(u, v)).real)
    np.testing.assert_allclose(np.sort(sp.eigenvalues), ev, atol=1e-12)


def test_walsh_functions_are_eigenvectors_at_L14():
    """w_S(i) = (-1)^popcount(i & S) satisfies Q w_S = (1-2mu)^|S| w_S (no dense Q)."""
    L, mu = 14, 0.07
    i = np.arange(1 << L)
    lam = np.asarray(S.mutation_spectrum(L, mu).eigenvalues)
    for Sset in (0, 1, 0b101, 0b11110000001111, (1 << L) - 1):
        w = (-1.0) ** np.array([popcount(t) for t in (i & Sset)])
        np.testing.assert_allclose(S.mutate(w, mu), lam[popcount(Sset)] * w, atol=1e-12)


def test_default_groups_cover_L():
    for L in (1, 5, 13, 22, 30):
        for dt in (jnp.float32, jnp.float64):
            g = S.default_groups(L, dt)
            assert sum(g) == L and max(g) - min(g) <= 1


# --------------------------------------------------------------------------------------------
# landscapes and Hamming classes
# --------------------------------------------------------------------------------------------
def test_hamming_distance_and_class_distribution_brute_force():
    L, m = 7, 0b0110101
    d = np.asarray(S.hamming_distance(L, m))
    np.testing.assert_array_equal(d, [popcount(i ^ m) for i in range(1 << L)])
    x = np.random.default_rng(0).random(1 << L)
    ref = np.zeros(L + 1)
    for i in range(1 << L):
        ref[popcount(i ^ m)] += x[i]
    np.testing.assert_allclose(S.class_distribution(x, m), ref, rtol=1e-13)
    np.testing.assert_allclose(S.class_distribution(x), np.bincount(
        [popcount(i) for i in range(1 << L)], weights=x), rtol=1e-13)


def test_landscapes_brute_force():
    L, m = 6, 0b100110
    sp = np.asarray(S.single_peak(L, 3.5, master=m))
    assert sp[m] == 3.5 and np.all(np.delete(sp, m) == 1.0)
    phi = np.array([5.0, 3.0, 2.5, 1.0, 0.5, 0.25, 0.1])
    for f_d in (phi, lambda k: jnp.asarray(phi)[k]):
        h = np.asarray(S.hamming_landscape(L, f_d, master=m))
        np.testing.assert_allclose(h, [phi[popcount(i ^ m)] for i in range(1 << L)])
    s = np.array([0.1, 0.2, 0.05, 0.3, 0.0, 0.7])
    mult = np.asarray(S.multiplicative(L, s, master=m))
    ref = []
    for i in range(1 << L):
        diff = [((i ^ m) >> (L - 1 - j)) & 1 for j in range(L)]
        ref.append(np.exp(-np.dot(s, diff)))
    np.testing.assert_allclose(mult, ref, rtol=1e-13)
    np.testing.assert_allclose(S.multiplicative(L, 0.2), np.exp(-0.2 * np.asarray(
        S.hamming_distance(L))), rtol=1e-13)


def test_rough_mt_fuji_is_fuji_plus_gaussian_noise():
    L, key = 12, jax.random.key(7)
    base = np.log(np.asarray(S.multiplicative(L, 0.3)))
    np.testing.assert_allclose(S.rough_mt_fuji(key, L, 0.3, 0.0), np.exp(base), rtol=1e-13)
    r = np.log(np.asarray(S.rough_mt_fuji(key, L, 0.3, 0.5))) - base
    eta = r / 0.5
    n = eta.size  # mean and sd of 4096 iid N(0, 1): within 5 standard errors
    assert abs(eta.mean()) < 5 / np.sqrt(n)
    assert abs(eta.std() - 1) < 5 / np.sqrt(2 * n)
    np.testing.assert_array_equal(S.rough_mt_fuji(key, L, 0.3, 0.5),
                                  S.rough_mt_fuji(key, L, 0.3, 0.5))
    assert not np.array_equal(S.rough_mt_fuji(key, L, 0.3, 0.5),
                              S.rough_mt_fuji(jax.random.key(8), L, 0.3, 0.5))


@pytest.mark.parametrize("neighbors", ["adjacent", "random"])
def test_nk_brute_force(neighbors):
    L, K, key = 7, 3, jax.random.key(11)
    t = S.nk_tables(key, L, K, neighbors)
    tab, sites = np.asarray(t.tables), np.asarray(t.sites)
    assert sites.shape == (L, K + 1) and np.all(sites[:, 0] == np.arange(L))
    assert all(len(set(row)) == K + 1 for row in sites)
    if neighbors == "adjacent":
        np.testing.assert_array_equal(sites[:, 1], (np.arange(L) + 1) % L)
    f = np.asarray(S.nk(key, L, K, neighbors))
    ref = []
    for i in range(1 << L):
        bits = [(i >> (L - 1 - j)) & 1 for j in range(L)]
        tot = 0.0
        for s_ in range(L):
            idx = 0
            for mm in sites[s_]:
                idx = 2 * idx + bits[mm]
            tot += tab[s_, idx]
        ref.append(tot / L)
    np.testing.assert_allclose(f, ref, rtol=1e-13)
    np.testing.assert_array_equal(f, S.nk(key, L, K, neighbors))


def test_nk_K0_has_a_single_local_optimum():
    """K = 0 is additive: the only genotype with no fitter one-mutant neighbour is the peak."""
    L = 8
    f = np.asarray(S.nk(jax.random.key(2), L, 0))
    local = [i for i in range(1 << L)
             if all(f[i] >= f[i ^ (1 << j)] for j in range(L))]
    assert local == [int(np.argmax(f))]


# --------------------------------------------------------------------------------------------
# stationary state: dense eigen-decomposition, class reduction, closed forms
# --------------------------------------------------------------------------------------------
def perron_symmetric(f, mu):
    """Perron pair of Q diag(f) for symmetric Q from the symmetric F^1/2 Q F^1/2 (eigh)."""
    L = int(np.log2(f.size))
    sf = np.sqrt(f)
    A = sf[:, None] * dense_Q(np.full(L, mu), np.full(L, mu)) * sf[None, :]
    n = A.shape[0]
    w, V = scipy.linalg.eigh(A, subset_by_index=[n - 1, n - 1])  # the top pair (MRRR)
    x = np.abs(V[:, -1]) / sf
    return x / x.sum(), w[-1]


@pytest.mark.parametrize("L", [1, 3, 6, 8])
def test_stationary_equals_dense_eig(L):
    rng = np.random.default_rng(100 + L)
    f = rng.uniform(0.2, 3.0, 1 << L)
    u, v = rng.uniform(0.01, 0.2, L), rng.uniform(0.01, 0.2, L)
    for mu, nu, uu, vv in ((0.05, None, np.full(L, 0.05), np.full(L, 0.05)), (u, v, u, v)):
        ref, lam, rate = perron(dense_Q(uu, vv) * f[None, :])
        for acc in (True, False):
            st = S.stationary(f, mu, nu=nu, accelerate=acc)
            assert bool(st.converged)
            np.testing.assert_allclose(st.distribution, ref, rtol=0, atol=1e-10)
            np.testing.assert_allclose(float(st.mean_fitness), lam, rtol=1e-10)
            x, mf = st  # unpacks as (distribution, mean fitness)
            np.testing.assert_array_equal(x, st.distribution)
            if not acc and L > 1 and int(st.iterations) >= 40:
                # the reported rate estimates |lambda_2 / lambda_1|
                np.testing.assert_allclose(float(st.rate), rate, rtol=0.05)


def test_stationary_equals_dense_eigh_at_L10():
    rng = np.random.default_rng(10)
    f = rng.uniform(0.2, 3.0, 1 << 10)
    for mu in (0.01, 0.08):
        ref, lam = perron_symmetric(f, mu)
        st = S.stationary(f, mu)
        np.testing.assert_allclose(st.distribution, ref, rtol=0, atol=1e-10)
        np.testing.assert_allclose(float(st.mean_fitness), lam, rtol=1e-10)


def test_stationary_reports_rate_and_error_honestly():
    """Plain power iteration near the threshold: estimated rate vs the dense |l2/l1|, and the
    estimated error vs the true distance to the Perron vector."""
    L, sigma = 8, 10.0
    f = np.asarray(S.single_peak(L, sigma))
    mu = 0.9 * (1 - sigma ** (-1 / L))
    ref, lam, rate = perron(dense_Q(np.full(L, mu), np.full(L, mu)) * f[None, :])
    for tol in (1e-6, 1e-11):
        st = S.stationary(f, mu, tol=tol, accelerate=False)
        true_err = np.abs(np.asarray(st.distribution) - ref).sum()
        assert true_err <= 3 * tol and float(st.error) <= tol
        np.testing.assert_allclose(float(st.rate), rate, rtol=0.02)
        np.testing.assert_allclose(float(st.spectral_gap), 1 - rate, rtol=0.3)
    st = S.stationary(f, mu, max_iter=8, accelerate=False)
    assert not bool(st.converged) and int(st.iterations) == 8


def test_chebyshev_rounds_cut_iterations_near_threshold():
    L, sigma = 14, 10.0
    fc = sharp_classes(L, sigma)
    f = S.single_peak(L, sigma)
    mu = 1.02 * (1 - sigma ** (-1 / L))
    ref = S.class_stationary(fc, mu).distribution
    plain = S.stationary(f, mu, accelerate=False)
    fast = S.stationary(f, mu)
    for st in (plain, fast):
        np.testing.assert_allclose(S.class_distribution(st.distribution), ref, atol=1e-10)
    assert int(fast.iterations) < 0.6 * int(plain.iterations)


@pytest.mark.parametrize("L", [8, 12, 16])
def test_full_space_equals_class_reduction_on_hamming_landscapes(L):
    sigma = 10.0
    muc = 1 - sigma ** (-1 / L)
    phi = 1.0 + 4.0 * np.exp(-0.7 * np.arange(L + 1))  # a smooth Hamming landscape
    for fc, mu in ((sharp_classes(L, sigma), 0.5 * muc), (sharp_classes(L, sigma), 1.01 * muc),
                   (phi, 0.04)):
        f = S.hamming_landscape(L, fc)
        st = S.stationary(f, mu)
        cs = S.class_stationary(fc, mu)
        np.testing.assert_allclose(S.class_distribution(st.distribution), cs.distribution,
                                   rtol=0, atol=1e-10)
        np.testing.assert_allclose(float(st.mean_fitness), cs.mean_fitness, rtol=1e-10)


def test_full_space_L20_stationary_matches_class_reduction():
    """The L = 20 full-space stationary state (10^6 genotypes) in the suite."""
    L, sigma, mu = 20, 10.0, 0.05
    st = S.stationary(S.single_peak(L, sigma), mu)
    cs = S.class_stationary(sharp_classes(L, sigma), mu)
    assert bool(st.converged)
    np.testing.assert_allclose(S.class_distribution(st.distribution), cs.distribution,
                               rtol=0, atol=1e-10)
    # within a class the stationary state is uniform
    d = np.asarray(S.hamming_distance(L))
    x = np.asarray(st.distribution)
    sizes = np.array([math.comb(L, k) for k in range(L + 1)])
    np.testing.assert_allclose(x, (cs.distribution / sizes)[d], rtol=1e-8, atol=1e-18)


def test_stationary_float32_close_to_float64():
    L, mu = 12, 0.06
    f = np.asarray(S.nk(jax.random.key(5), L, 2)) + 0.5
    s64 = S.stationary(f, mu)
    s32 = S.stationary(f.astype(np.float32), np.float32(mu))
    assert s32.distribution.dtype == jnp.float32
    np.testing.assert_allclose(s32.distribution, s64.distribution, atol=1e-5)


def test_class_matrix_is_the_lumped_dense_matrix():
    L, mu, nu = 6, 0.12, 0.31
    Q = dense_Q(np.full(L, mu), np.full(L, nu))
    d = np.array([popcount(i) for i in range(1 << L)])
    Qc = S.class_matrix(L, mu, nu)
    for k in range(L + 1):
        j = int(np.argmax(d == k))  # any representative of class k
        np.testing.assert_allclose(Qc[:, k], np.bincount(d, weights=Q[:, j], minlength=L + 1),
                                   rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose(Qc.sum(0), 1.0, rtol=1e-14)


def test_class_stationary_and_iterate_vs_dense():
    L, mu, nu = 7, 0.08, 0.02
    fc = np.array([6.0, 2.0, 1.5, 1.0, 1.0, 0.7, 0.5, 0.2])
    f = fc[[popcount(i) for i in range(1 << L)]]
    ref, lam, _ = perron(dense_Q(np.full(L, mu), np.full(L, nu)) * f[None, :])
    d = np.array([popcount(i) for i in range(1 << L)])
    cs = S.class_stationary(fc, mu, nu)
    np.testing.assert_allclose(cs.distribution, np.bincount(d, weights=ref), atol=1e-12)
    np.testing.assert_allclose(cs.mean_fitness, lam, rtol=1e-12)
    assert cs.residual < 1e-13
    # the class iteration from the master equals the full-space trajectory, lumped
    traj = S.class_iterate(fc, mu, 30, nu=nu)
    e0 = np.zeros(1 << L)
    e0[0] = 1.0
    ev = S.evolve(f, mu, 30, x0=e0, nu=nu, save_every=10)
    np.testing.assert_allclose(ev.classes, traj[::10], atol=1e-13)


def test_class_reduction_continuous_time_vs_dense_generator():
    L, mu, nu = 6, 0.3, 0.1
    fc = np.array([3.0, 1.5, 1.2, 1.0, 1.0, 0.5, 0.2])
    d = np.array([popcount(i) for i in range(1 << L)])
    W = np.diag(fc[d])
    for j in range(L):  # per-site generator as a Kronecker sum
        Gj = np.array([[-mu, nu], [mu, -nu]])
        W += np.kron(np.kron(np.eye(1 << j), Gj), np.eye(1 << (L - 1 - j)))
    ref, lam, _ = perron(W + 10 * np.eye(1 << L))
    cs = S.class_stationary(fc, mu, nu, model="continuous")
    np.testing.assert_allclose(cs.distribution, np.bincount(d, weights=ref), atol=1e-12)
    np.testing.assert_allclose(cs.mean_fitness, lam - 10, rtol=1e-12)


def test_swetina_schuster_formula_accuracy_is_order_one_over_L():
    """x0 = (sigma Q - 1)/(sigma - 1) neglects back mutation: the exact class-reduced master
    fraction differs by O(1/L) at fixed a = L mu (halving when L doubles)."""
    sigma = 10.0
    for a in (0.2, 1.0, 2.0):
        errs = []
        for L in (50, 100, 200, 400):
            y0 = S.class_stationary(sharp_classes(L, sigma), a / L).distribution[0]
            errs.append(y0 - S.swetina_schuster(L, sigma, a / L))
        errs = np.array(errs)
        assert np.all(errs > 0)  # back mutation only adds to the master class
        assert np.all(errs * np.array([50, 100, 200, 400]) < a)  # |error| < a / L
        np.testing.assert_allclose(errs[1:] / errs[:-1], 0.5, atol=0.05)


@pytest.mark.parametrize("sigma,a", [(10.0, 0.5), (10.0, 1.0), (10.0, 2.0), (2.0, 0.5)])
def test_cerf_dalmau_long_chain_limit_at_L400(sigma, a):
    L = 400
    cs = S.class_stationary(sharp_classes(L, sigma), a / L)
    cd = S.cerf_dalmau(sigma, a, 300)
    np.testing.assert_allclose(cd.sum(), 1.0, atol=1e-9)  # a law on the classes
    np.testing.assert_allclose(cs.distribution[:301], cd, rtol=0, atol=1e-3)


def test_class_reduction_at_L1000():
    L, sigma, a = 1000, 10.0, 1.0
    cs = S.class_stationary(sharp_classes(L, sigma), a / L)
    assert cs.distribution.shape == (L + 1,) and np.all(cs.distribution >= 0)
    np.testing.assert_allclose(cs.distribution.sum(), 1.0, rtol=1e-13)
    assert cs.residual < 1e-12
    np.testing.assert_allclose(cs.distribution[:41], S.cerf_dalmau(sigma, a, 40), atol=4e-4)
    # above the threshold the master class is empty to all practical purposes
    hi = S.class_stationary(sharp_classes(L, sigma), 2 * math.log(sigma) / L)
    assert hi.distribution[0] < 1e-50 and abs(hi.mean_fitness - 1) < 1e-12


# --------------------------------------------------------------------------------------------
# error threshold
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [2.0, 10.0])
def test_error_threshold_class_reduction_L50_within_2_percent(sigma):
    L = 50
    th = S.error_threshold(sharp_classes(L, sigma), space="classes")
    np.testing.assert_allclose(th.mu_theory, 1 - sigma ** (-1 / L), rtol=1e-14)
    assert th.sigma == pytest.approx(sigma)
    assert abs(th.mu_c / th.mu_theory - 1) < 0.02
    # the order parameter collapses across the threshold
    below = th.master[th.mu < 0.8 * th.mu_theory]
    above = th.master[th.mu > 1.3 * th.mu_theory]
    assert below.min() > 1e3 * above.max()


def test_error_threshold_full_space_L20_within_2_percent():
    L, sigma = 20, 100.0
    th = S.error_threshold(S.single_peak(L, sigma), points=7, levels=3)
    assert th.space == "full" and th.L == L
    assert abs(th.mu_c / th.mu_theory - 1) < 0.02
    thc = S.error_threshold(sharp_classes(L, sigma), space="classes", points=7, levels=3)
    np.testing.assert_allclose(th.mu_c, thc.mu_c, rtol=1e-6)  # same search, same answer


# --------------------------------------------------------------------------------------------
# dynamics
# --------------------------------------------------------------------------------------------
def test_evolve_discrete_equals_dense_iteration():
    L, mu = 6, 0.04
    rng = np.random.default_rng(9)
    f = rng.uniform(0.5, 2.0, 1 << L)
    x0 = rng.random(1 << L)
    x0 /= x0.sum()
    A = dense_Q(np.full(L, mu), np.full(L, mu)) * f[None, :]
    xs = [x0]
    for _ in range(25):
        y = A @ xs[-1]
        xs.append(y / y.sum())
    xs = np.array(xs)
    tr = S.evolve(f, mu, 25, x0=x0, save_every=5, master=3)
    np.testing.assert_allclose(tr.distribution, xs[-1], rtol=1e-12)
    np.testing.assert_allclose(tr.mean_fitness, xs @ f, rtol=1e-12)
    np.testing.assert_allclose(tr.master, xs[:, 3], rtol=1e-12)
    d = np.array([popcount(i ^ 3) for i in range(1 << L)])
    np.testing.assert_allclose(tr.classes, np.array([np.bincount(d, weights=x) for x in xs[::5]]),
                               rtol=1e-12)
    # long iteration reaches the stationary state
    far = S.evolve(f, mu, 400)
    np.testing.assert_allclose(far.distribution, S.stationary(f, mu).distribution, atol=1e-12)


def test_crow_kimura_strang_splitting_second_order():
    L, mu, T = 5, 0.2, 2.0
    rng = np.random.default_rng(12)
    f = rng.uniform(0.0, 2.0, 1 << L)
    x0 = np.zeros(1 << L)
    x0[0] = 1.0
    W = np.diag(f)
    for j in range(L):
        Gj = np.array([[-mu, mu], [mu, -mu]])
        W += np.kron(np.kron(np.eye(1 << j), Gj), np.eye(1 << (L - 1 - j)))
    exact = scipy.linalg.expm(T * W) @ x0
    exact /= exact.sum()
    errs = []
    for steps in (20, 40, 80):
        tr = S.evolve(f, mu, steps, x0=x0, model="continuous", dt=T / steps)
        errs.append(np.abs(np.asarray(tr.distribution) - exact).sum())
    assert errs[-1] < 1e-3
    np.testing.assert_allclose(np.array(errs[:-1]) / np.array(errs[1:]), 4.0, rtol=0.1)
    # stationary state: Perron vector of diag(f) + G, to O(dt^2)
    ref, lam, _ = perron(W + 5 * np.eye(1 << L))
    e = [np.abs(np.asarray(S.stationary(f, mu, model="continuous", dt=dt).distribution)
                - ref).sum() for dt in (0.1, 0.05)]
    assert e[1] < 1e-3
    np.testing.assert_allclose(e[0] / e[1], 4.0, rtol=0.1)


def test_gradient_through_evolve_matches_finite_differences():
    """d(mean fitness after 30 generations)/d mu through the scan, against central differences."""
    L = 6
    f = jnp.asarray(np.random.default_rng(1).uniform(0.5, 2.0, 1 << L))

    def final_mean(mu):
        return S.evolve(f, mu, 30).mean_fitness[-1]

    g = float(jax.grad(final_mean)(0.05))
    h = 1e-6
    fd = (float(final_mean(0.05 + h)) - float(final_mean(0.05 - h))) / (2 * h)
    assert np.isfinite(g)
    np.testing.assert_allclose(g, fd, rtol=1e-6)


def test_no_recompilation_for_new_rates():
    from quasirl.sequence._kron import stationary_kernel

    f = S.single_peak(7, 3.0)
    S.stationary(f, 0.01)
    n = stationary_kernel._cache_size()
    S.stationary(f, 0.02)
    S.stationary(f, np.full(7, 0.03))
    assert stationary_kernel._cache_size() == n


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 7 steps, so that runs of a few dozen generations cross several chunk
    boundaries, unaligned with save_every and save_at."""
    from quasirl.sequence import _chunks

    monkeypatch.setattr(_chunks, "chunk_size", lambda n: 7)


@pytest.mark.parametrize("model", ["discrete", "continuous"])
def test_evolve_in_chunks_equals_dense_iteration_and_saves_states(small_chunks, model):
    """Every output of a chunked run (including the full states at save_at) against the dense
    iteration, for numbers of generations that end inside a chunk, on one, and at 0."""
    L, mu, nu, dt = 5, 0.06, 0.03, 0.1
    rng = np.random.default_rng(21)
    f = rng.uniform(0.5, 2.0, 1 << L)
    x0 = rng.random(1 << L)
    x0 /= x0.sum()
    Q = dense_Q(np.full(L, mu), np.full(L, nu))
    if model == "discrete":
        A = Q * f[None, :]
    else:  # Strang: D exp(dt G) D with D = exp(dt f / 2)
        D = np.diag(np.exp(0.5 * dt * f))
        gen = sum(np.kron(np.kron(np.eye(1 << j), [[-mu, nu], [mu, -nu]]),
                          np.eye(1 << (L - 1 - j))) for j in range(L))
        A = D @ scipy.linalg.expm(dt * gen) @ D
    xs = [x0]
    for _ in range(40):
        y = A @ xs[-1]
        xs.append(y / y.sum())
    xs = np.array(xs)
    d = np.array([popcount(i ^ 2) for i in range(1 << L)])
    for G in (0, 7, 14, 23, 40):
        at = [t for t in (G, 0, 3, 7, 15, 22) if t <= G]
        tr = S.evolve(f, mu, G, x0=x0, nu=nu, model=model, dt=dt, save_every=3, save_at=at,
                      master=2)
        np.testing.assert_allclose(tr.distribution, xs[G], rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(tr.saved, xs[at], rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(tr.master, xs[: G + 1, 2], rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(tr.classes, [np.bincount(d, weights=x, minlength=L + 1)
                                                for x in xs[: G + 1 : 3]], rtol=1e-10,
                                   atol=1e-14)
        if model == "discrete":
            np.testing.assert_allclose(tr.mean_fitness, xs[: G + 1] @ f, rtol=1e-10)
        assert tr.mean_fitness.shape == (G + 1,) and tr.saved.shape == (len(at), 1 << L)


def test_a_new_number_of_generations_compiles_nothing():
    """The number of generations, save_every and save_at are run-time values: after one run,
    others with new values add no entry to the compiled kernels' caches (they did before:
    one compilation per number of generations)."""
    from quasirl.sequence._kron import _evolve_chunk
    from quasirl.sequence._wf import _individual_chunk, _wf_chunk

    f = S.single_peak(6, 3.0)
    key = jax.random.key(0)
    S.evolve(f, 0.01, 10)
    S.evolve(f, 0.01, 10, save_every=2)
    S.wright_fisher(key, f, 0.01, 100, 10, save_every=2)
    S.wright_fisher_individuals(key, np.r_[3.0, np.ones(6)], 0.01, 50, 10)
    sizes = [k._cache_size() for k in (_evolve_chunk, _wf_chunk, _individual_chunk)]
    for G in (1, 37, 250):
        S.evolve(f, 0.02, G)
        S.evolve(f, 0.01, G, save_every=5, save_at=[0, G // 2, G])
        S.wright_fisher(key, f, 0.01, 100, G, save_every=3)
        S.wright_fisher_individuals(key, np.r_[3.0, np.ones(6)], 0.01, 50, G)
    assert [k._cache_size() for k in (_evolve_chunk, _wf_chunk, _individual_chunk)] == sizes


def test_evolve_under_jit_and_vmap_equals_eager():
    f = jnp.asarray(np.random.default_rng(3).uniform(0.5, 2.0, 1 << 5))
    eager = S.evolve(f, 0.05, 20, save_every=4, save_at=[5, 20])
    jitted = jax.jit(lambda mu: S.evolve(f, mu, 20, save_every=4, save_at=[5, 20]))(0.05)
    for a, b in zip(eager, jitted, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    mus = jnp.array([0.01, 0.05, 0.1])
    batch = jax.vmap(lambda mu: S.evolve(f, mu, 20, save_at=[5]).saved[0])(mus)
    for mu, row in zip(mus, batch, strict=True):
        np.testing.assert_allclose(row, S.evolve(f, float(mu), 5).distribution, rtol=1e-12)


def test_wright_fisher_prefix_and_chunks_do_not_change_the_run(small_chunks, monkeypatch):
    """Generation t draws with fold_in(key, t): a run of 20 generations is the start of a run
    of 45, and the chunk size (7 here, 4096 by default) does not change a draw."""
    from quasirl.sequence import _chunks

    L, N = 6, 300
    f = S.single_peak(L, 4.0)
    key = jax.random.key(5)
    short = S.wright_fisher(key, f, 0.05, N, 20, save_every=4)
    long = S.wright_fisher(key, f, 0.05, N, 45, save_every=4)
    np.testing.assert_array_equal(long.master[:21], short.master)
    np.testing.assert_array_equal(long.classes[:6], short.classes)
    ind_short = S.wright_fisher_individuals(key, np.r_[4.0, np.ones(L)], 0.05, N, 20)
    monkeypatch.setattr(_chunks, "chunk_size", lambda n: 4096)
    np.testing.assert_array_equal(S.wright_fisher(key, f, 0.05, N, 45, save_every=4).counts,
                                  long.counts)
    ind_long = S.wright_fisher_individuals(key, np.r_[4.0, np.ones(L)], 0.05, N, 33)
    np.testing.assert_array_equal(ind_long.mean_distance[:21], ind_short.mean_distance)


@pytest.mark.parametrize("save_at, match", [
    ([0, 11], r"save_at\[1\] must be between 0 and 10, got 11"),
    ([-1], r"save_at\[0\] must be between 0 and 10, got -1"),
    ([2.5], r"save_at\[0\] must be an integer, got 2.5"),
    ("abc", r"save_at\[0\] must be an integer, got 'a'"),
    (object(), r"save_at must be a sequence of generations"),
])
def test_evolve_refuses_bad_save_at(save_at, match):
    with pytest.raises(QuasirlValueError, match=match):
        S.evolve(S.single_peak(4, 2.0), 0.01, 10, save_at=save_at)


# --------------------------------------------------------------------------------------------
# finite populations
# --------------------------------------------------------------------------------------------
def test_wright_fisher_keys_and_conservation():
    L, N = 7, 500
    f = S.single_peak(L, 5.0)
    a = S.wright_fisher(jax.random.key(1), f, 0.05, N, 50, save_every=10)
    b = S.wright_fisher(jax.random.key(1), f, 0.05, N, 50, save_every=10)
    c = S.wright_fisher(jax.random.key(2), f, 0.05, N, 50, save_every=10)
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.master, b.master)
    assert not np.array_equal(a.master, c.master)
    assert int(a.counts.sum()) == N and a.master.shape == (51,) and a.classes.shape == (6, L + 1)
    np.testing.assert_allclose(a.classes.sum(1), 1.0, rtol=1e-12)
    assert a.master[0] == 1.0  # starts at the master
    np.testing.assert_allclose(a.master[-1], a.counts[0] / N)


def test_wright_fisher_sampling_law_one_generation():
    """One generation from a fixed population: counts ~ Multinomial(N, Q f x / f.x); the mean
    over 400 replicate keys matches N p within 5 standard errors per genotype."""
    L, N, mu, R = 4, 200, 0.1, 400
    rng = np.random.default_rng(0)
    f = rng.uniform(0.5, 2.0, 1 << L)
    n0 = rng.multinomial(N, np.full(1 << L, 1 / (1 << L))).astype(np.int32)
    keys = jax.random.split(jax.random.key(3), R)
    counts = np.asarray(jax.vmap(lambda k: S.wright_fisher(k, f, mu, N, 1, n0).counts)(keys))
    y = dense_Q(np.full(L, mu), np.full(L, mu)) @ (f * n0)
    p = y / y.sum()
    se = np.sqrt(N * p * (1 - p) / R)
    assert np.all(np.abs(counts.mean(0) - N * p) < 5 * se)
    # vmap over keys equals a loop
    for r in (0, 7):
        np.testing.assert_array_equal(counts[r], S.wright_fisher(keys[r], f, mu, N, 1, n0).counts)


def test_wright_fisher_approaches_deterministic_and_threshold_shifts_down_with_N():
    """Time-averaged master fraction: the deviation from the deterministic value shrinks as N
    grows (within 4 batch-means standard errors + 1/N at N = 3000), and small populations
    lose the master at lower mu (the finite-population threshold lies below Eigen's)."""
    L, sigma, G, burn = 8, 10.0, 2000, 200
    f = S.single_peak(L, sigma)
    mus = np.array([0.1, 0.15, 0.175, 0.2, 0.225, 0.25])
    det = np.array([S.class_stationary(sharp_classes(L, sigma), m).distribution[0] for m in mus])
    avg, dev = {}, {}
    for N in (30, 300, 3000):
        keys = jax.random.split(jax.random.key(N), len(mus))
        tr = np.asarray(jax.vmap(lambda k, m, N=N: S.wright_fisher(k, f, m, N, G).master)(
            keys, jnp.asarray(mus)))[:, burn:]
        avg[N] = tr.mean(1)
        dev[N] = np.abs(avg[N] - det)
        if N == 3000:
            se = np.array([batch_se(t) for t in tr])
            assert np.all(dev[N] < 4 * se + 1 / N)
    assert dev[30].max() > dev[300].max() > dev[3000].max()

    def crossing(y, level=0.1):  # mu where the master fraction falls through `level`
        i = int(np.argmax(y < level))
        return mus[i - 1] + (mus[i] - mus[i - 1]) * (y[i - 1] - level) / (y[i - 1] - y[i])

    assert crossing(avg[30]) < crossing(avg[300]) < crossing(det) + 0.003
    assert crossing(det) - crossing(avg[30]) > 0.01


def test_individual_based_matches_genotype_space_statistically():
    L, sigma, mu, N, G, burn = 8, 10.0, 0.1, 2000, 1200, 200
    table = sharp_classes(L, sigma)
    det = S.class_stationary(table, mu)
    pop = S.wright_fisher_individuals(jax.random.key(4), table, mu, N, G, save_every=100)
    m = np.asarray(pop.master)[burn:]
    assert abs(m.mean() - det.distribution[0]) < 4 * batch_se(m) + 1 / N
    md = np.asarray(pop.mean_distance)[burn:]
    k = np.arange(L + 1)
    assert abs(md.mean() - k @ det.distribution) < 4 * batch_se(md) + 1 / N
    assert pop.genomes.shape == (N, L) and pop.genomes.dtype == jnp.uint8
    assert pop.classes.shape == (G // 100 + 1, L + 1)
    np.testing.assert_allclose(pop.classes.sum(1), 1.0, rtol=1e-12)
    # same key, same run; a callable fitness equals the table
    again = S.wright_fisher_individuals(jax.random.key(4), table, mu, N, G, save_every=100)
    np.testing.assert_array_equal(pop.genomes, again.genomes)
    tab = jnp.asarray(table)
    fn = S.wright_fisher_individuals(jax.random.key(4), lambda g: tab[g.sum(1)], mu, N, G, L=L)
    np.testing.assert_array_equal(fn.genomes, pop.genomes)


def test_individual_based_long_genomes_L200():
    """L = 200 (2^200 genotypes: only the individual-based model can hold it) against the
    class reduction at the same L."""
    L, sigma, a, N, G, burn = 200, 10.0, 0.5, 1000, 600, 100
    table = sharp_classes(L, sigma)
    det = S.class_stationary(table, a / L).distribution
    pop = S.wright_fisher_individuals(jax.random.key(6), table, a / L, N, G)
    m = np.asarray(pop.master)[burn:]
    assert abs(m.mean() - det[0]) < 4 * batch_se(m) + 2 / N


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call,match", [
    (lambda: S.single_peak(0, 2.0), "L must be between 1"),
    (lambda: S.single_peak(4.0, 2.0), "L must be an integer"),
    (lambda: S.single_peak(4, -1.0), "sigma must be a finite number > 0"),
    (lambda: S.single_peak(3, 2.0, master=8), r"master must be in \[0, 2\^L\)"),
    (lambda: S.mutate(np.ones(6), 0.1), "not a power of 2"),
    (lambda: S.mutate(np.ones(8), 1.5), r"mu must be in \[0, 1\], but mu = 1.5"),
    (lambda: S.mutate(np.ones(8), [0.1, -0.2, 0.1]), r"mu\[1\] = -0.2"),
    (lambda: S.mutate(np.ones(8), [0.1, 0.2]), r"shape \(L,\) = \(3,\)"),
    (lambda: S.mutate(np.ones(8), 0.1, groups=(2, 2)), "summing to L = 3"),
    (lambda: S.stationary(np.array([1.0, np.nan, 1, 1]), 0.1), r"fitness\[1\] = nan"),
    (lambda: S.stationary(np.array([1.0, -1.0, 1, 1]), 0.1), "non-negative"),
    (lambda: S.stationary(np.zeros(4), 0.1), "positive entry"),
    (lambda: S.stationary(np.ones(4), 0.1, tol=0.0), "tol must be"),
    (lambda: S.stationary(np.ones(4), 0.1, model="ode"), "model must be"),
    (lambda: S.evolve(np.ones(4), 0.1, -1), "generations must be >= 0"),
    (lambda: S.evolve(np.ones(4), 0.1, 3, x0=np.ones(3)), r"x0 must have shape"),
    (lambda: S.class_stationary([2.0, 1.0, 1.0], [0.1, 0.1]), "scalar error rate"),
    (lambda: S.class_stationary([2.0], 0.1), "L \\+ 1 >= 2"),
    (lambda: S.cerf_dalmau(0.5, 0.1, 3), "sigma must be a finite number > 1"),
    (lambda: S.nk(jax.random.key(0), 4, 4), r"K must be an integer in \[0, L - 1\]"),
    (lambda: S.nk(jax.random.key(0), 4, 1, "ring"), "neighbors must be"),
    (lambda: S.wright_fisher(jax.random.key(0), np.ones(4), 0.1, 0, 5), "N must be >= 1"),
    (lambda: S.wright_fisher(jax.random.key(0), np.ones(4), 0.1, 5, 2, n0=np.array([1, 1, 1, 1])),
     "n0 must sum to N = 5"),
    (lambda: S.wright_fisher_individuals(jax.random.key(0), lambda g: g.sum(1), 0.1, 5, 2),
     "L must be given"),
    (lambda: S.wright_fisher_individuals(jax.random.key(0), [2.0, 1.0], 0.1, 2, 2,
                                         genomes0=np.array([[0], [2]])), r"genomes0\[1, 0\] = 2"),
    (lambda: S.error_threshold(np.ones(8), space="cube"), "space must be"),
    (lambda: S.error_threshold(np.ones(8)), "bracket must be given"),
])
def test_bad_input_raises_clear_errors(call, match):
    with pytest.raises(QuasirlValueError, match=match):
        call()


# --------------------------------------------------------------------------------------------
# CLI and figures
# --------------------------------------------------------------------------------------------
def test_cli_eigen_quick(tmp_path):
    assert main(["eigen", "--out", str(tmp_path), "--quick"]) == 0
    pngs = sorted(tmp_path.glob("*.png"))
    assert len(pngs) == 3 and all(p.stat().st_size > 10_000 for p in pngs)
    data = json.loads((tmp_path / "eigen.json").read_text())
    for row in data["thresholds"]:
        assert abs(row["mu_c"] / row["mu_theory"] - 1) < 0.1
    assert set(data) >= {"thresholds", "master_fraction", "classes", "wright_fisher"}


def test_cli_eigen_bad_argument(tmp_path, capsys):
    assert main(["eigen", "--out", str(tmp_path), "--quick", "--sigma", "0.5"]) == 2
    assert "sigma" in capsys.readouterr().err
