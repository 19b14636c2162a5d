"""Soft selection on a finite support: tilting, KL-regularised optimum, best-of-N, Luce curation.

Keeping a sample y ~ p with probability f(y) turns p into the tilted law p f / Z, Z = E_p[f]
(docs/theory.md, "Selection on samples"). With f = exp(r / T) k rounds of it equal one round
at T / k, and the tilt at T = beta is the maximiser of E_pi[r] - beta KL(pi || p), whose value
is beta log Z (the KL-regularised RL optimum). Best-of-N keeps the best of N samples: its law is
F(y)^N - F^-(y)^N, with F(y) = P(Y <= y) and F^-(y) = P(Y < y), and its KL to p is at most
log N - (N-1)/N (Beirami et al. 2024). A Luce-choice curator (Ferbach et al., NeurIPS 2024)
keeps one of K samples with probability proportional to exp(r); retraining on the kept samples
is a finite-K cousin of the tilt by exp(r).

All laws are over items i = 0..n-1 with probabilities p[i] and rewards r[i] (values y[i]);
items with p = 0 are outside the support and get probability 0. Work is in log space.
"""

from __future__ import annotations

import itertools
import math
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from ._selection_boost import _check_broadcast, _float
from ._validate import (
    QuasirlValueError,
    check_distribution,
    check_finite,
    check_int,
    check_key,
    check_real,
    is_concrete,
    is_int,
)
from .semiring import safe_log, smax, value_weight

# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
# Best-of-N: N enters the law as a float (N log F), exact far beyond 2^63; this bound keeps N
# finite in float32 with room to spare.
MAX_BON_N = 10**30
# sample_best_of_n draws samples * N indices at once.
MAX_BON_DRAWS = 2**28


def _numbers(name: str, x):
    """Refuse strings, objects and complex numbers (concrete input); x as a numpy array."""
    if not is_concrete(x):
        check_real(name, x)
        return None
    a = np.asarray(x)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise QuasirlValueError(f"{name} must be a number or an array of numbers, got "
                                f"{f'dtype {a.dtype}' if a.ndim else repr(x)}")
    check_real(name, a)
    return a


def _check_p(p, name: str = "p"):
    if _numbers(name, p) is not None:
        a = np.asarray(p)
        if a.ndim < 1 or a.shape[-1] == 0:
            raise QuasirlValueError(f"{name} must be a non-empty distribution over the last axis, "
                                    f"got shape {a.shape}")
        check_distribution(name, a, axis=-1)
    return _float(p)


def _check_scores(name: str, x, p):
    if _numbers(name, x) is not None:
        check_finite(name, x)
        if np.shape(x) != np.shape(p):
            raise QuasirlValueError(
                f"{name} must have the same shape as p, {tuple(np.shape(p))}, "
                f"got {tuple(np.shape(x))}")
    return _float(x)


def _check_temp(name: str, T):
    if _numbers(name, T) is not None:
        a = np.asarray(T)
        if a.ndim or not np.issubdtype(a.dtype, np.number) or not np.isfinite(a) or a < 0:
            raise QuasirlValueError(f"{name} must be a finite number >= 0, got {T!r}")
    return _float(T)


# --------------------------------------------------------------------------------------------
# tilting
# --------------------------------------------------------------------------------------------
@jax.jit
def _tilt(p, f):
    pf = p * f
    return pf / jnp.sum(pf, axis=-1, keepdims=True)


def tilt(p, f):
    """Soft selection: survival with probability f turns p into p f / Z, Z = sum p f.

    p: distribution over the last axis; f: non-negative survival weights of the same shape
    (any scale: only ratios matter). Raises if nothing survives (Z = 0).
    """
    p = _check_p(p)
    f = _check_scores("f", f, p)
    if is_concrete(f):
        a = np.asarray(f)
        if (a < 0).any():
            idx = tuple(int(i) for i in np.argwhere(a < 0)[0])
            raise QuasirlValueError(f"f must be non-negative, but f{list(idx)} = {float(a[idx])!r}")
        z = (np.asarray(p) * a).sum(axis=-1)
        if (z <= 0).any():
            raise QuasirlValueError("f vanishes on the support of p: nothing survives (Z = 0)")
    return _tilt(p, f)


def _temper(p, r, T):
    logp = safe_log(p)
    live = logp > -jnp.inf
    Ts = jnp.where(T > 0, T, 1.0)
    x = jnp.where(live, logp + r / Ts, -jnp.inf)
    soft = jnp.exp(x - logsumexp(x, axis=-1, keepdims=True))
    # T = 0: all mass on the best items of the support, split in proportion to p
    rl = jnp.where(live, r, -jnp.inf)
    best = live & (rl == jnp.max(rl, axis=-1, keepdims=True))
    hard = jnp.where(best, p, 0.0)
    hard = hard / jnp.sum(hard, axis=-1, keepdims=True)
    return jnp.where(T > 0, soft, hard)


_temper_jit = jax.jit(_temper)


def temper(p, r, T):
    """Tilt by exp(r / T): p exp(r/T) / Z, in log space; T = 0 keeps only the best items.

    p: distribution over the last axis; r: rewards (same shape); T >= 0 a number. At T = 0 the
    mass goes to argmax r over the support of p, split in proportion to p (exact, no small T).
    """
    p = _check_p(p)
    return _temper_jit(p, _check_scores("r", r, p), _check_temp("T", T))


@partial(jax.jit, static_argnames="k")
def _repeated(p, r, T, k):
    f = jnp.exp((r - jnp.max(r, axis=-1, keepdims=True)) / T)
    return jax.lax.fori_loop(0, k, lambda _, q: _tilt(q, f), p)


def repeated_tilt(p, r, T, k: int):
    """k successive rounds of survival with probability proportional to exp(r / T).

    Each round is :func:`tilt` with f = exp((r - max r) / T) (renormalised every round, as a
    population would be). The identity: k rounds at T equal one :func:`temper` at T / k.
    """
    p = _check_p(p)
    T = _check_temp("T", T)
    if is_concrete(T) and float(T) == 0:
        raise QuasirlValueError("T must be > 0 for repeated_tilt (use temper(p, r, 0))")
    return _repeated(p, _check_scores("r", r, p), T, check_int("k", k, minimum=1))


def kl_divergence(q, p):
    """KL(q || p) = sum q log(q / p) over the last axis (0 log 0 = 0; inf off p's support).

    q, p: distributions over the last axis (leading axes broadcast)."""
    _check_broadcast(("q", q), ("p", p))
    q, p = _check_p(q, "q"), _check_p(p)
    lq, lp = safe_log(q), safe_log(p)
    term = jnp.where(q > 0, q * (lq - jnp.where(p > 0, lp, -jnp.inf)), 0.0)
    return jnp.sum(term, axis=-1)


def kl_regularised_objective(pi, p, r, beta):
    """E_pi[r] - beta KL(pi || p): the KL-regularised RL objective of a policy pi.

    pi, p: distributions over the last axis; r: finite rewards; beta >= 0 (leading axes
    broadcast)."""
    _check_broadcast(("pi", pi), ("p", p), ("r", r))
    if _numbers("r", r) is not None:
        check_finite("r", r)
    pi, p, r = _check_p(pi, "pi"), _check_p(p), _float(r)
    beta = _check_temp("beta", beta)
    er = jnp.sum(jnp.where(pi > 0, pi * r, 0.0), axis=-1)
    return er - beta * kl_divergence(pi, p)


@jax.jit
def _kl_opt(p, r, beta):
    value = smax(value_weight(safe_log(p), r, beta), beta, axis=-1)
    return _temper(p, r, beta), value


def kl_regularised_optimum(p, r, beta):
    """Maximiser and value of E_pi[r] - beta KL(pi || p): (pi*, beta log Z).

    pi* = p exp(r / beta) / Z with Z = E_p[exp(r / beta)] (the tilt; Gibbs variational principle,
    e.g. Korbak et al. 2022, "RL with KL penalties is better viewed as Bayesian inference");
    value = beta log Z. At beta = 0 this is the best reward on the support (max-plus limit).
    """
    p = _check_p(p)
    return _kl_opt(p, _check_scores("r", r, p), _check_temp("beta", beta))


# --------------------------------------------------------------------------------------------
# best-of-N
# --------------------------------------------------------------------------------------------
def _cdf_terms(p, y):
    """log F(y_i), log F^-(y_i) and the tie-group mass G_i = F(y_i) - F^-(y_i), per item."""
    order = jnp.argsort(y)
    ys, ps = y[order], p[order]
    cum = jnp.cumsum(ps)
    tail = jnp.cumsum(ps[::-1])[::-1]  # P(Y >= ys[j]), accurate near F = 1
    n = y.shape[0]
    hi = jnp.searchsorted(ys, y, side="right")  # items with ys <= y_i
    lo = jnp.searchsorted(ys, y, side="left")  # items with ys < y_i
    F = jnp.where(hi > 0, cum[jnp.maximum(hi - 1, 0)], 0.0)
    Fm = jnp.where(lo > 0, cum[jnp.maximum(lo - 1, 0)], 0.0)
    S = jnp.where(hi < n, tail[jnp.minimum(hi, n - 1)], 0.0)  # P(Y > y_i)
    Sm = jnp.where(lo < n, tail[jnp.minimum(lo, n - 1)], 0.0)  # P(Y >= y_i)
    logF = jnp.where(F > 0.5, jnp.log1p(-jnp.minimum(S, 0.5)), safe_log(F))
    logFm = jnp.where(Fm > 0.5, jnp.log1p(-jnp.minimum(Sm, 0.5)), safe_log(Fm))
    G = jnp.where(F > 0.5, Sm - S, F - Fm)
    return logF, logFm, G


def _log_bon_group(logF, logFm, N):
    """log(F^N - F^-^N) = N log F + log(1 - exp(N (log F^- - log F)))."""
    gap = jnp.where(logF > -jnp.inf, N * (logFm - jnp.where(logF > -jnp.inf, logF, 0.0)), -1.0)
    safe_gap = jnp.minimum(gap, -1e-300)
    out = N * logF + jnp.log(-jnp.expm1(safe_gap))
    return jnp.where((logF > -jnp.inf) & (gap < 0), out, -jnp.inf)


@jax.jit
def _bon_law(p, y, N):
    logF, logFm, G = _cdf_terms(p, y)
    log_group = _log_bon_group(logF, logFm, N)
    # ties: within a group of equal values the kept item is item i with probability p_i / G
    live = (p > 0) & (G > 0)
    ratio = jnp.where(live, jnp.exp(log_group - safe_log(jnp.where(live, G, 1.0))), 0.0)
    return ratio * p, ratio


def _check_bon_n(N, p) -> jax.Array:
    """N >= 1 samples, at most MAX_BON_N, as a float of p's dtype (N only enters as N log F)."""
    N = check_int("N", N, minimum=1)
    if N > MAX_BON_N:
        raise QuasirlValueError(
            f"N = {N} exceeds the best-of-N limit {MAX_BON_N:.0e}: N enters the law as a float "
            f"(N log F), and far beyond it the law is all on the best item to any precision")
    return jnp.asarray(float(N), p.dtype)


def best_of_n_law(p, y, N: int):
    """Exact law of best-of-N on a finite support, per item: [n].

    p: reference probabilities of the n items; y: their rewards (ties allowed); N >= 1 samples.
    The kept value has law pi_N(y) = F(y)^N - F^-(y)^N (F(y) = P(Y <= y), F^-(y) = P(Y < y));
    within a tie group the kept item is i with probability p_i / P(Y = y) (a uniform tie-break
    among the drawn maximisers). Computed in log space (accurate for large N); N <= 1e30.
    """
    p = _check_p(p)
    y = _check_scores("y", y, p)
    if p.ndim != 1:
        raise QuasirlValueError(f"p must be 1-D for best-of-N, got shape {p.shape}")
    return _bon_law(p, y, _check_bon_n(N, p))[0]


def best_of_n_kl(p, y, N: int):
    """KL(pi_N || p) of best-of-N against the reference (exact, finite support).

    KL = sum over tie groups of pi_N(g) log(pi_N(g) / p(g)), <= log N - (N-1)/N
    (Beirami et al. 2024, "Theoretical guarantees on the best-of-n alignment policy").
    N >= 1 up to 1e30 (computed in log space, exact for huge N).
    """
    p = _check_p(p)
    y = _check_scores("y", y, p)
    if p.ndim != 1:
        raise QuasirlValueError(f"p must be 1-D for best-of-N, got shape {p.shape}")
    law, ratio = _bon_law(p, y, _check_bon_n(N, p))
    return jnp.sum(jnp.where(law > 0, law * safe_log(jnp.where(law > 0, ratio, 1.0)), 0.0))


def _bound_n(N):
    """N >= 1 for the closed-form bounds: an exact Python int (any size), a float64 numpy
    array, or a traced value (unchecked)."""
    if is_int(N):
        if N < 1:
            raise QuasirlValueError(f"N must be >= 1, got {N}")
        return int(N)
    a = _numbers("N", N)
    if a is None:
        return N
    if a.dtype == bool:
        raise QuasirlValueError(f"N must be a number or an array of numbers, got {N!r}")
    a = a.astype(np.float64)
    bad = ~(a >= 1) | ~np.isfinite(a)
    if bad.any():
        i = tuple(np.argwhere(bad)[0]) if a.ndim else ()
        where = f"N{list(i)}" if a.ndim else "N"
        raise QuasirlValueError(f"N must be finite and >= 1, but {where} = {a[i].item()!r}")
    return a


def best_of_n_kl_bound(N):
    """The commonly quoted best-of-N KL, log N - (N-1)/N: an upper bound (Beirami et al. 2024).

    N >= 1: a number (a Python int of any size) or an array. Computed in float64 as
    log N - 1 + 1/N (no overflow for N = 10^12 or 10^400), then returned in the default float.
    """
    n = _bound_n(N)
    if isinstance(n, int):
        return jnp.asarray(math.log(n) - 1 + 1 / n, dtype=jnp.result_type(float))
    if isinstance(n, np.ndarray):
        return jnp.asarray(np.log(n) - 1.0 + 1.0 / n, dtype=jnp.result_type(float))
    n = jnp.asarray(n, dtype=jnp.result_type(float))
    return jnp.log(n) - 1.0 + 1.0 / n


class BestOfNWinRate(NamedTuple):
    """P(best-of-N beats a fresh reference sample) and P(they tie)."""

    win: Any
    tie: Any


def best_of_n_win_rate(p, y, N: int) -> BestOfNWinRate:
    """Win and tie probabilities of best-of-N against one reference sample (exact).

    win = P(Y_N > Y) = sum_y pi_N(y) F^-(y), tie = sum_y pi_N(y) P(Y = y). Always
    win <= N/(N+1) <= win + tie (Beirami et al. 2024), with equality when there are no ties.
    """
    p = _check_p(p)
    y = _check_scores("y", y, p)
    if p.ndim != 1:
        raise QuasirlValueError(f"p must be 1-D for best-of-N, got shape {p.shape}")
    law, _ = _bon_law(p, y, _check_bon_n(N, p))
    _, logFm, G = _cdf_terms(p, y)
    return BestOfNWinRate(jnp.sum(law * jnp.exp(logFm)), jnp.sum(law * G))


def win_rate_bound(N):
    """N / (N + 1): the best-of-N win rate against the reference without ties (N >= 1)."""
    n = _bound_n(N)
    if isinstance(n, int):
        return jnp.asarray(n / (n + 1), dtype=jnp.result_type(float))
    n = jnp.asarray(n, dtype=jnp.result_type(float))
    return n / (n + 1.0)


def _inverse_cdf(key, p, shape):
    cum = jnp.cumsum(p)
    u = jax.random.uniform(key, shape, dtype=p.dtype) * cum[-1]
    return jnp.minimum(jnp.searchsorted(cum, u, side="right"), p.shape[0] - 1)


@partial(jax.jit, static_argnames=("N", "samples"))
def _sample_bon(key, p, y, N, samples):
    idx = _inverse_cdf(key, p, (samples, N))
    # argmax takes the first maximiser; draws are i.i.d., so that is a uniform tie-break
    first = jnp.argmax(y[idx], axis=1)
    return jnp.take_along_axis(idx, first[:, None], axis=1)[:, 0]


def sample_best_of_n(key, p, y, N: int, samples: int):
    """Monte Carlo best-of-N: ``samples`` item indices, each the best of N draws from p.

    All samples * N draws are made at once: at most 2^28 of them."""
    check_key(key)
    p = _check_p(p)
    y = _check_scores("y", y, p)
    if p.ndim != 1:
        raise QuasirlValueError(f"p must be 1-D for best-of-N, got shape {p.shape}")
    N = check_int("N", N, minimum=1)
    samples = check_int("samples", samples, minimum=1)
    if samples * N > MAX_BON_DRAWS:
        raise QuasirlValueError(
            f"sample_best_of_n would draw samples * N = {samples} * {N} = {samples * N} "
            f"indices at once, more than its limit 2^28 = {MAX_BON_DRAWS}; use best_of_n_law "
            f"for the exact law, or fewer samples per call")
    return _sample_bon(key, p, y, N, samples)


# --------------------------------------------------------------------------------------------
# Luce-choice curation (Ferbach et al., NeurIPS 2024)
# --------------------------------------------------------------------------------------------
@partial(jax.jit, static_argnames="nodes")
def _luce(p, r, K, nodes):
    live = p > 0
    rmax = jnp.max(jnp.where(live, r, -jnp.inf))
    rmin = jnp.min(jnp.where(live, r, jnp.inf))
    logu = jnp.where(live, r - rmax, 0.0)  # u = exp(r - max r) in (0, 1] on the support
    logp = safe_log(p)
    # t = exp(s); the integrand ~ t as t -> 0 and decays at least like exp(-t min u)
    s = jnp.linspace(-37.0 - jnp.log(K), math.log(45.0) + (rmax - rmin), nodes)
    t = jnp.exp(s)
    tu = t[:, None] * jnp.exp(logu)[None, :]  # [nodes, n]
    log_phi = logsumexp(jnp.where(live[None, :], logp[None, :] - tu, -jnp.inf),
                        axis=1)  # log E_p exp(-t u)
    log_int = s[:, None] - tu + (K - 1) * log_phi[:, None]  # [nodes, n]
    # trapezoid rule in s: exponentially accurate for this smooth, doubly decaying integrand
    h = s[1] - s[0]
    w = jnp.full((nodes,), h).at[0].set(0.5 * h).at[-1].set(0.5 * h)
    log_I = logsumexp(log_int + jnp.log(w)[:, None], axis=0)
    return jnp.where(live, jnp.exp(logp + jnp.log(K) + logu + log_I), 0.0)


def luce_curation(p, r, K: int, *, nodes: int = 1024):
    """One round of Luce-choice curation in closed form: the law of the kept sample, [n].

    K samples are drawn from p and a curator keeps one with probability exp(r_i) / sum_j
    exp(r_j) (Bradley-Terry / Luce choice); retraining on kept samples gives (Ferbach et al.,
    NeurIPS 2024, "Self-consuming generative models with curated data provably optimize human
    preferences", Lemma 2.1)

        p'(x) = p(x) E[K e^{r(x)} / (e^{r(x)} + sum_{j<K} e^{r(X_j)})],  X_j ~ p i.i.d.

    Writing 1/z = int_0^inf e^{-tz} dt turns the expectation into one integral,
    p'(x) = K p(x) e^{r(x)} int_0^inf e^{-t e^{r(x)}} phi(t)^{K-1} dt, phi(t) = E_p e^{-t e^r},
    evaluated by the trapezoid rule in log t (``nodes`` points: the integrand is analytic in a
    strip, so the rule converges geometrically; more nodes only add summation round-off).
    K = 1 leaves p unchanged;
    K -> infinity gives the tilt p e^r / E_p e^r.
    """
    p = _check_p(p)
    r = _check_scores("r", r, p)
    if p.ndim != 1:
        raise QuasirlValueError(f"p must be 1-D, got shape {p.shape}")
    K = jnp.asarray(check_int("K", K, minimum=1), dtype=p.dtype)
    nodes = check_int("nodes", nodes, minimum=1)
    if nodes < 2:
        raise QuasirlValueError(f"nodes must be >= 2 (the trapezoid rule's points), got {nodes}")
    return _luce(p, r, K, nodes)


def luce_curation_enumerate(p, r, K: int, max_terms: int = 2_000_000):
    """Luce curation by explicit enumeration of the other K-1 draws (numpy; a reference).

    Sums over compositions c of K-1 draws into the n items, weight multinomial(K-1; c) prod
    p^c, of K e^{r(x)} / (e^{r(x)} + sum_j c_j e^{r_j}). Refuses more than ``max_terms``.
    """
    from scipy.special import gammaln

    p = np.asarray(_check_p(p), dtype=np.float64)
    r = np.asarray(_check_scores("r", r, p), dtype=np.float64)
    if p.ndim != 1:
        raise QuasirlValueError(f"p must be 1-D, got shape {p.shape}")
    K = check_int("K", K, minimum=1)
    max_terms = check_int("max_terms", max_terms, minimum=1)
    live = p > 0
    ps, u = p[live], np.exp(r[live] - r[live].max())
    m, k = ps.size, K - 1
    n_terms = math.comb(k + m - 1, m - 1)
    if n_terms > max_terms:
        raise QuasirlValueError(f"enumeration would need {n_terms} compositions "
                                f"(> max_terms = {max_terms}); use luce_curation")
    comps = np.array(list(_compositions(k, m)), dtype=np.float64).reshape(-1, m)
    with np.errstate(divide="ignore"):
        logw = gammaln(k + 1) - gammaln(comps + 1).sum(1) + (comps * np.log(ps)).sum(1)
    w = np.exp(logw)
    others = comps @ u  # [terms]
    H = (w[:, None] * K * u[None, :] / (u[None, :] + others[:, None])).sum(0)
    out = np.zeros_like(p)
    out[live] = ps * H
    return out


def _compositions(k: int, m: int):
    """All tuples of m non-negative integers summing to k (stars and bars)."""
    for bars in itertools.combinations(range(k + m - 1), m - 1):
        prev, c = -1, []
        for b in bars:
            c.append(b - prev - 1)
            prev = b
        c.append(k + m - 2 - prev)
        yield tuple(c)


def _numpy_rng(key) -> np.random.Generator:
    """A numpy generator seeded by the bits of a JAX key (so the key stays the one seed)."""
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return np.random.default_rng(np.asarray(data, dtype=np.uint32).ravel().tolist())


def simulate_luce_curation(key, p, r, K: int, samples: int, chunk: int = 1 << 20):
    """Monte Carlo of one curation round: frequencies of the kept item over ``samples`` trials.

    Each trial draws K items from p and the curator keeps one with probability softmax(r) over
    the K drawn. The draws enter only through their counts c ~ Multinomial(K, p) (sampled as a
    chain of binomials), and the kept item is of type j with probability c_j e^{r_j} /
    sum_i c_i e^{r_i}; so a trial costs O(n), not O(K). Random bits come from a numpy
    generator seeded by ``key`` (a jax.random key).
    """
    check_key(key)
    p = np.asarray(_check_p(p), dtype=np.float64)
    r = np.asarray(_check_scores("r", r, p), dtype=np.float64)
    if p.ndim != 1:
        raise QuasirlValueError(f"p must be 1-D, got shape {p.shape}")
    K = check_int("K", K, minimum=1)
    samples = check_int("samples", samples, minimum=1)
    chunk = min(check_int("chunk", chunk, minimum=1), samples)
    rng = _numpy_rng(key)
    live = p > 0
    u = np.where(live, np.exp(np.where(live, r, 0.0) - r[live].max()), 0.0)
    n = p.size
    counts = np.zeros(n, np.int64)
    done = 0
    while done < samples:
        m = min(chunk, samples - done)
        c = np.zeros((m, n))
        left = np.full(m, K, dtype=np.int64)
        rest = 1.0
        for j in range(n - 1):
            q = min(max(p[j] / rest, 0.0), 1.0) if rest > 0 else 0.0
            c[:, j] = rng.binomial(left, q)
            left -= c[:, j].astype(np.int64)
            rest -= p[j]
        c[:, -1] = left
        cw = np.cumsum(c * u, axis=1)
        x = rng.random(m) * cw[:, -1]
        pick = np.minimum((x[:, None] >= cw).sum(axis=1), n - 1)
        counts += np.bincount(pick, minlength=n)
        done += m
    return jnp.asarray(counts / samples)
