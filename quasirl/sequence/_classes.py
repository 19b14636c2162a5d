"""The exact (L+1)-class reduction of Eigen's model (the oracle for the full-space code).

For a landscape that depends only on the Hamming distance k to the master sequence (all
zeros), every genotype in class k has the same fitness f_k and the same law of its offspring's
class: of its k wrong sites J ~ Binomial(k, nu) revert and of its L - k right sites
I ~ Binomial(L - k, mu) mutate, so the offspring is in class l = k - J + I. The class masses
y_k then obey y' = Qc diag(f) y / f.y exactly (Swetina & Schuster 1982), with the
(L+1) x (L+1) column-stochastic matrix Qc[l, k] = P(k - J + I = l).

This module is written independently of the Kronecker code (numpy/scipy, float64 whatever
JAX's x64 setting, usable to L = 1000; L <= MAX_CLASS_L = 2000): columns of Qc are
convolutions of two binomial laws (scipy's pmf, exact to rounding: entries that underflow are
below 1e-300). The Perron value
comes from a symmetric eigensolver -- Qc is reversible with respect to the binomial law of
pure mutation, so A[l, k] = sqrt(M[l, k] M[k, l]) with M = Qc diag(f) is a symmetric matrix
with the same spectrum -- and the Perron vector from inverse iteration on M itself (the
similarity that symmetrises M would amplify rounding by up to sqrt(C(L, L/2)) ~ 1e150).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import scipy.linalg
import scipy.stats

from .._validate import QuasirlValueError, check_finite, check_int, check_nonnegative, check_real
from ._checks import check_class_fitness

# The class reduction works on dense (L+1) x (L+1) matrices: O(L^2) memory and O(L^3) time
# (measured on 2 CPU cores: 0.8 s at L = 1000, 4 s at L = 2000, 30 s at L = 5000).
MAX_CLASS_L = 2000
# The closed forms cost O(L) (swetina_schuster) and O(kmax^2 / log sigma) (cerf_dalmau).
MAX_CLOSED_FORM_L = 5000


class ClassStationary(NamedTuple):
    """Stationary class masses y [L+1] (sum 1), the mean fitness f.y and the L1 residual."""

    distribution: np.ndarray
    mean_fitness: float
    residual: float


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def _check_L(L, name="L", limit=MAX_CLASS_L) -> int:
    L = check_int(name, L)
    if limit == MAX_CLASS_L and L > limit:
        raise QuasirlValueError(
            f"{name} = {L} exceeds the class reduction's limit of {limit}: it works on "
            f"dense (L+1) x (L+1) matrices, O(L^2) memory and O(L^3) time (about 4 s at "
            f"L = 2000 and 30 s at L = 5000 on 2 CPU cores)")
    return check_int(name, L, 1, limit)


def _number(name: str, x) -> float:
    """A real number (not an array, a string or a complex number) as a float."""
    a = np.asarray(x)
    if a.ndim != 0 or a.dtype == object or a.dtype == bool \
            or not np.issubdtype(a.dtype, np.number):
        raise QuasirlValueError(f"{name} must be a number, got {x!r}")
    check_real(name, a)
    return float(a)


def _check_rate(rate, name: str) -> float:
    a = np.asarray(rate)
    if a.ndim == 0 and np.iscomplexobj(a):
        check_real(name, a)
    if a.ndim != 0 or a.dtype == object or not np.issubdtype(a.dtype, np.number):
        raise QuasirlValueError(
            f"{name} must be a scalar error rate for the class reduction, got {rate!r} "
            "(per-site rates break the Hamming symmetry: use the full-space functions)"
        )
    r = float(a)
    if not (np.isfinite(r) and 0.0 <= r <= 1.0):
        raise QuasirlValueError(f"{name} must be in [0, 1], got {r!r}")
    return r


# --------------------------------------------------------------------------------------------
# the class matrix
# --------------------------------------------------------------------------------------------
def class_matrix(L: int, mu: float, nu: float | None = None) -> np.ndarray:
    """Mutation matrix between Hamming classes, Qc[l, k] = P(class k -> class l) [L+1, L+1].

    L: sequence length; mu: per-site rate 0 -> 1 (right -> wrong); nu: rate 1 -> 0 (wrong ->
    right; default mu). Column k is the law of k - J + I with J ~ Binomial(k, nu),
    I ~ Binomial(L - k, mu) (Swetina & Schuster 1982); float64 numpy, columns sum to 1.
    L <= MAX_CLASS_L = 2000 (a dense matrix; see :func:`class_stationary`).
    """
    L = _check_L(L)
    u = _check_rate(mu, "mu")
    v = u if nu is None else _check_rate(nu, "nu")
    Q = np.empty((L + 1, L + 1))
    for k in range(L + 1):
        keep = scipy.stats.binom.pmf(np.arange(k, -1, -1), k, v)  # P(k - J = t), t = 0..k
        gain = scipy.stats.binom.pmf(np.arange(L - k + 1), L - k, u)
        Q[:, k] = np.convolve(keep, gain)
    return Q


def class_iterate(f_of_distance, mu: float, generations: int, y0=None, nu=None) -> np.ndarray:
    """Class masses for generations 0..G under y' = Qc diag(f) y / f.y  [G+1, L+1].

    y0 defaults to all mass on the master class (k = 0).
    """
    f = check_class_fitness(f_of_distance)
    L = _check_L(f.size - 1)
    Q = class_matrix(L, mu, nu)
    generations = check_int("generations", generations, minimum=0)
    y = np.zeros(L + 1)
    if y0 is None:
        y[0] = 1.0
    else:
        y = np.asarray(y0)
        if y.dtype == object or y.dtype == bool or not np.issubdtype(y.dtype, np.number):
            raise QuasirlValueError(f"y0 must be an array of numbers, got dtype {y.dtype}")
        check_real("y0", y)
        y = y.astype(np.float64)
        if y.shape != (L + 1,):
            raise QuasirlValueError(f"y0 must have shape (L + 1,) = ({L + 1},), got {y.shape}")
        check_finite("y0", y)
        check_nonnegative("y0", y)
        if not (f * y).sum() > 0:
            raise QuasirlValueError(
                "y0 must put mass on a class of positive fitness (f . y0 = 0): the next "
                "generation would be 0 / 0")
        y = y / y.sum()
    out = [y]
    for _ in range(int(generations)):
        w = Q @ (f * y)
        y = w / w.sum()
        out.append(y)
    return np.stack(out)


def _generator(L: int, u: float, v: float) -> np.ndarray:
    """Crow-Kimura class generator: k -> k+1 at rate u (L - k), k -> k-1 at rate v k."""
    k = np.arange(L + 1, dtype=np.float64)
    G = np.diag(-(u * (L - k) + v * k))
    G[np.arange(1, L + 1), np.arange(L)] = u * (L - k[:-1])
    G[np.arange(L), np.arange(1, L + 1)] = v * k[1:]
    return G


def class_stationary(
    f_of_distance, mu: float, nu: float | None = None, *, model: str = "discrete"
) -> ClassStationary:
    """Exact stationary class distribution of Eigen's model on a Hamming landscape.

    f_of_distance: [L+1] fitness of Hamming class k (distance to the all-zeros master);
    mu, nu: per-site rates 0 -> 1 and 1 -> 0 (nu defaults to mu).
    model="discrete": Perron vector of Qc diag(f) (the generation map x' = Q f x / f.x);
    model="continuous": Crow-Kimura, dy/dt = (diag(f) + G) y - (f.y) y with the mutation
    generator G (per-site rates mu, nu per unit time); Perron vector of diag(f) + G.
    In both cases the Perron value equals the stationary mean fitness f.y.
    L is at most MAX_CLASS_L = 2000: the reduction works on dense (L+1) x (L+1) matrices
    (O(L^2) memory, O(L^3) time, about 4 s at L = 2000 on 2 CPU cores); longer sequences raise.
    """
    f = check_class_fitness(f_of_distance)
    L = _check_L(f.size - 1)
    u = _check_rate(mu, "mu")
    v = u if nu is None else _check_rate(nu, "nu")
    if model == "discrete":
        return _perron(class_matrix(L, u, v) * f[None, :], f, polish=True)
    if model == "continuous":
        return _perron(_generator(L, u, v) + np.diag(f), f, polish=False)
    raise QuasirlValueError(f"model must be 'discrete' or 'continuous', got {model!r}")


def _top_eigenvalue(A: np.ndarray) -> float:
    """Largest eigenvalue of a symmetric matrix; banded solver when the entries beyond a band
    are below 1e-18 of the largest (dropping them moves the eigenvalue by less than that)."""
    n = A.shape[0]
    big = np.abs(A).max()
    off = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
    mask = np.abs(A) > 1e-18 * big / n
    b = int(off[mask].max()) if mask.any() else 0
    if n > 64 and b < n // 4:
        ab = np.zeros((b + 1, n))
        for d in range(b + 1):  # lower form: ab[d, j] = A[j + d, j]
            ab[d, : n - d] = np.diagonal(A, -d)
        w = scipy.linalg.eig_banded(ab, lower=True, eigvals_only=True, select="i",
                                    select_range=(n - 1, n - 1))
        return float(w[-1])
    return float(scipy.linalg.eigh(A, eigvals_only=True, subset_by_index=[n - 1, n - 1])[0])


def _perron(M: np.ndarray, f: np.ndarray, polish: bool) -> ClassStationary:
    """Perron pair of a reversible matrix with nonnegative off-diagonal entries (M[l, k] M[k, l]
    symmetric): the eigenvalue from the symmetrised matrix, the vector by inverse iteration on
    M itself (a few steps: the shift is within rounding of the eigenvalue)."""
    n = M.shape[0]
    A = np.sqrt(np.maximum(M * M.T, 0.0))
    A[np.diag_indices(n)] = np.diag(M)
    lam = _top_eigenvalue(A)
    scale = max(float(np.abs(M).max()), 1e-300)
    y = np.full(n, 1.0 / n)
    for rel in (1e-10, 1e-7):  # back off the shift if the factorisation is exactly singular
        lu = scipy.linalg.lu_factor(M - (lam + rel * scale) * np.eye(n), check_finite=False)
        for _ in range(8):
            w = scipy.linalg.lu_solve(lu, y, check_finite=False)
            if not np.all(np.isfinite(w)):
                break
            w = np.abs(w)  # the Perron vector is positive; the solve may flip its sign
            y_new = w / w.sum()
            change = np.abs(y_new - y).sum()
            y = y_new
            if change < 1e-15:
                break
        if np.all(np.isfinite(y)):
            break
    if polish:
        y = _refine(M, y, lam)
    residual = float(np.abs(M @ y - lam * y).sum())
    return ClassStationary(y, float(f @ y), residual)


def _refine(M: np.ndarray, y: np.ndarray, lam: float, steps: int = 2000) -> np.ndarray:
    """Plain power steps y <- M y / lam for a nonnegative M. A product of nonnegative numbers
    has no cancellation, so each class converges to a relative (not just absolute) accuracy,
    down to the smallest normal double: the inverse iteration leaves classes far below the
    largest at rounding level (~1e-17 of it), and they relax to their true values at the rate
    their own retention allows (a few hundred steps at L = 1000 above the threshold, where the
    master class holds ~1e-301). Stops when no class above 1e-250 moves by 1e-12 relative in
    ten steps (below that, sums touch subnormal numbers and the last digits flicker)."""
    for _ in range(steps // 10):
        y_old = y
        for _ in range(10):
            y = M @ y / lam
        y = y / y.sum()
        big = y_old > 1e-250
        if np.all(np.abs(y[big] - y_old[big]) <= 1e-12 * y_old[big]):
            break
    return y


# --------------------------------------------------------------------------------------------
# closed forms and the threshold on classes
# --------------------------------------------------------------------------------------------
def swetina_schuster(L: int, sigma: float, mu: float) -> float:
    """Eigen's approximate master fraction x0 = (sigma Q - 1) / (sigma - 1), Q = (1 - mu)^L.

    Neglects back mutation into the master class (Eigen 1971; Swetina & Schuster 1982); it
    is exact to O(mu) corrections below the threshold and negative above mu_c = 1 -
    sigma^(-1/L). Returned as is (possibly negative) so that the threshold is its zero.
    """
    L = _check_L(L, limit=MAX_CLOSED_FORM_L)
    Q = (1.0 - _check_rate(mu, "mu")) ** L
    sigma = _number("sigma", sigma)
    if not (np.isfinite(sigma) and sigma > 1.0):
        raise QuasirlValueError(f"sigma must be a finite number > 1, got {sigma!r}")
    return (sigma * Q - 1.0) / (sigma - 1.0)


def cerf_dalmau(sigma: float, a: float, kmax: int, terms: int | None = None) -> np.ndarray:
    """Long-chain stationary class law on the sharp peak, classes k = 0..kmax  [kmax+1].

    L -> infinity with a = L mu fixed and a < ln sigma (Cerf & Dalmau 2016, Bull. Math. Biol.
    78:1238, Theorem 2.1): y_k = (sigma e^-a - 1) (a^k / k!) sum_{i>=1} i^k sigma^-i.
    Above the threshold (a >= ln sigma) the master classes empty: zeros.
    """
    sigma = _number("sigma", sigma)
    a = _number("a", a)
    if not (np.isfinite(sigma) and sigma > 1.0):
        raise QuasirlValueError(f"sigma must be a finite number > 1, got {sigma!r}")
    if not (np.isfinite(a) and a >= 0.0):
        raise QuasirlValueError(f"a must be a finite number >= 0, got {a!r}")
    kmax = _check_L(check_int("kmax", kmax) + 1, "kmax + 1", limit=MAX_CLOSED_FORM_L) - 1
    if terms is not None:
        terms = check_int("terms", terms, minimum=1)
    if a >= math.log(sigma):
        return np.zeros(kmax + 1)
    # terms of the series decay like i^k sigma^-i: take enough i for double precision
    n = terms or int(max(200, 40 * (kmax + 1) / math.log(sigma) + 60 / math.log(sigma)))
    i = np.arange(1, n + 1, dtype=np.float64)
    k = np.arange(kmax + 1, dtype=np.float64)
    log_terms = k[:, None] * np.log(i)[None, :] - i[None, :] * math.log(sigma)
    m = log_terms.max(axis=1, keepdims=True)
    log_series = m[:, 0] + np.log(np.exp(log_terms - m).sum(axis=1))
    from scipy.special import gammaln

    log_y = math.log(sigma * math.exp(-a) - 1.0) + k * math.log(a if a > 0 else 1e-300)
    log_y = log_y - gammaln(k + 1) + log_series
    y = np.exp(log_y)
    if a == 0:
        y[1:] = 0.0
    return y
