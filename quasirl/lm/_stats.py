"""Statistics for the validation experiments: Wilson intervals, AUROC, cluster bootstrap.

Samples of one query are correlated (a model that does not know a capital is wrong in all its
samples), so uncertainty comes from resampling *queries* (a cluster bootstrap): each bootstrap
replicate draws queries with replacement and every statistic is recomputed as a weighted sum
with the query multiplicities as weights, all replicates at once.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import integrate
from scipy.stats import norm
from scipy.stats import t as student_t

from .._validate import QuasirlValueError

Z95 = float(norm.ppf(0.975))


def wilson(k, n, z: float = Z95):
    """Wilson score interval for a binomial proportion k / n (vectorised); (lo, hi).

    Reference: E. B. Wilson, J. Am. Stat. Assoc. 22 (1927) 209.
    """
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        den = 1 + z**2 / n
        mid = (p + z**2 / (2 * n)) / den
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / den
    lo, hi = mid - half, mid + half
    empty = n == 0
    return np.where(empty, 0.0, np.clip(lo, 0, 1)), np.where(empty, 1.0, np.clip(hi, 0, 1))


def auroc(scores, labels, weights=None):
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count 1/2.

    ``labels`` are booleans (True = positive: a correct answer). ``weights`` [B, n] (optional)
    gives B weighted versions at once (a bootstrap); returns a scalar or [B]. NaN when a class
    is empty.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    pos, neg = s[y], s[~y]
    if pos.size == 0 or neg.size == 0:
        return np.nan if weights is None else np.full(np.shape(weights)[0], np.nan)
    kernel = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    if weights is None:
        return float(kernel.mean())
    w = np.asarray(weights, dtype=np.float64)
    wp, wn = w[:, y], w[:, ~y]
    num = np.einsum("bi,ij,bj->b", wp, kernel, wn)
    den = wp.sum(1) * wn.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def roc_curve(scores, labels):
    """(FPR, TPR, thresholds) of the rule "accept when score >= threshold", thresholds falling."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    th = np.r_[np.inf, np.unique(s)[::-1]]
    acc = s[None, :] >= th[:, None]
    tpr = (acc & y).sum(1) / max(y.sum(), 1)
    fpr = (acc & ~y).sum(1) / max((~y).sum(), 1)
    return fpr, tpr, th


def youden_threshold(scores, labels) -> float:
    """The threshold maximising TPR - FPR (Youden's J); ties: the highest such threshold.

    Reference: W. J. Youden, Cancer 3 (1950) 32.
    """
    fpr, tpr, th = roc_curve(scores, labels)
    j = tpr - fpr
    best = np.flatnonzero(j == j.max())
    i = best[0]
    if not np.isfinite(th[i]):  # "accept nothing" is optimal only if nothing separates
        i = best[-1]
    return float(th[i])


def cluster_weights(groups, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap weights per sample [n_boot, n] from resampling the distinct ``groups``.

    Returns (weights, group index of each sample). Replicate b gives each sample the number of
    times its group was drawn.
    """
    _, gidx = np.unique(np.asarray(groups), return_inverse=True)
    n_groups = int(gidx.max()) + 1 if gidx.size else 0
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / max(n_groups, 1)),
                             size=n_boot) if n_groups else np.zeros((n_boot, 0))
    return counts[:, gidx].astype(np.float64), gidx


def icc(groups, y) -> float:
    """One-way ANOVA intraclass correlation of y within groups (clipped to [0, 1]): how alike
    the samples of one query are. A round of Q queries x N samples then carries the information
    of Q N / (1 + (N - 1) icc) independent samples (the design effect)."""
    _, g = np.unique(np.asarray(groups), return_inverse=True)
    y = np.asarray(y, dtype=np.float64)
    n_g = np.bincount(g)
    if n_g.size < 2 or np.all(n_g < 2):
        return 0.0
    means = np.bincount(g, y) / n_g
    m = float(np.mean(n_g))
    msb = np.sum(n_g * (means - y.mean()) ** 2) / (n_g.size - 1)
    msw = np.sum((y - means[g]) ** 2) / max(y.size - n_g.size, 1)
    den = msb + (m - 1) * msw
    return float(np.clip((msb - msw) / den, 0.0, 1.0)) if den > 0 else 0.0


def ratio(num_mask, den_mask, weights=None):
    """sum(w * num) / sum(w * den) for boolean masks (num within den); scalar or [B]."""
    num = np.asarray(num_mask, dtype=np.float64)
    den = np.asarray(den_mask, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        if weights is None:
            return float(num.sum() / den.sum()) if den.sum() else np.nan
        return (weights @ num) / (weights @ den)


def percentile_ci(draws, level: float = 0.95):
    """Percentile interval of bootstrap draws (NaN draws ignored); (lo, hi)."""
    d = np.asarray(draws, dtype=np.float64)
    if not np.isfinite(d).any():  # e.g. a rate with no samples of its class
        return (float("nan"), float("nan"))
    a = (1 - level) / 2
    return (float(np.nanquantile(d, a)), float(np.nanquantile(d, 1 - a)))


def expanded_levels(n_clusters: int, level: float = 0.95) -> tuple[float, float]:
    """Quantile levels of the expanded percentile interval for ``n_clusters`` resampled units.

    The plain percentile interval of a mean from n clusters is too narrow by about the factor
    z / (sqrt(n / (n - 1)) t_(n-1)) (the bootstrap variance is (n - 1) / n of the unbiased one
    and ignores that it is estimated); the expanded interval takes the quantiles at
    Phi(-/+ sqrt(n / (n - 1)) t_(n-1, (1 + level) / 2)) instead. n < 2: the plain levels.

    Reference: T. C. Hesterberg, The American Statistician 69 (2015) 371, section 4.4.
    """
    a = (1 - level) / 2
    if n_clusters < 2:
        return a, 1 - a
    lo = float(norm.cdf(-np.sqrt(n_clusters / (n_clusters - 1))
                        * student_t.ppf(1 - a, n_clusters - 1)))
    return lo, 1 - lo


def quadratic_form_sf(q: float, weights) -> float:
    """P(sum_i w_i X_i^2 > q) for independent standard normal X_i and weights w_i >= 0.

    The null distribution of a sum of squared correlated z-scores: with correlation matrix R,
    sum z_j^2 is distributed as sum_i w_i X_i^2 with w the eigenvalues of R. Imhof's inversion
    of the characteristic function, sf = 1/2 + (1/pi) int_0^inf sin theta(u) / (u rho(u)) du,
    theta = (sum arctan(w_i u) - q u) / 2, rho = prod (1 + w_i^2 u^2)^(1/4), its oscillating
    tail as Fourier integrals (QUADPACK's QAWF); absolute accuracy about 1e-10. Weights below
    1e-12 of the largest are dropped (a singular R).

    Reference: J. P. Imhof, Biometrika 48 (1961) 419.
    """
    w = np.asarray(weights, dtype=np.float64).ravel()
    if w.size == 0 or not np.all(np.isfinite(w)) or w.min() < -1e-9 * max(w.max(), 0.0):
        raise QuasirlValueError(f"weights must be finite and >= 0, got {w}")
    if not np.isfinite(q):
        raise QuasirlValueError(f"q must be a finite number, got {q!r}")
    top = float(w.max())
    if top <= 0:
        return float(q < 0)
    w = w[w > 1e-12 * top] / top  # scale-free: u measured in units of 1 / max weight
    x = float(q) / top
    if x <= 0:
        return 1.0

    def amp(u):  # A(u) = sum arctan(w u) / 2 and 1 / (u rho(u))
        return 0.5 * np.arctan(w * u).sum(), np.exp(-0.25 * np.log1p((w * u) ** 2).sum()) / u

    def f(u):
        if u == 0:
            return 0.5 * (w.sum() - x)
        a, r = amp(u)
        return np.sin(a - 0.5 * x * u) * r

    def integral(u0):
        """[0, u0] directly; the slowly decaying oscillating tail as Fourier integrals (QAWF):
        sin(A - x u / 2) = sin A cos(x u / 2) - cos A sin(x u / 2). Also: whether QUADPACK
        warned (QAWF's extrapolation can stall while the amplitude still varies)."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", integrate.IntegrationWarning)
            head = integrate.quad(f, 0.0, u0, limit=1000, epsabs=1e-12, epsrel=1e-10)[0]
            tail_c = integrate.quad(lambda u: np.sin(amp(u)[0]) * amp(u)[1], u0, np.inf,
                                    weight="cos", wvar=0.5 * x, limlst=200, epsabs=1e-12)[0]
            tail_s = integrate.quad(lambda u: np.cos(amp(u)[0]) * amp(u)[1], u0, np.inf,
                                    weight="sin", wvar=0.5 * x, limlst=200, epsabs=1e-12)[0]
        return head + tail_c - tail_s, bool(caught)

    val, stalled = integral(1.0)
    if stalled:  # start the tail where every arctan(w u) has levelled off
        val, _ = integral(float(min(1.0 / w.min(), 200.0)))
    return float(np.clip(0.5 + val / np.pi, 0.0, 1.0))


def linear_fit(x, y, weights=None):
    """Least-squares line y = a + lam x: (a, lam), or [B] arrays of each with ``weights`` [B, n]."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.ones((1, x.size)) if weights is None else np.asarray(weights, dtype=np.float64)
    sw = w.sum(1)
    mx, my = (w @ x) / sw, (w @ y) / sw
    sxx = w @ (x * x) / sw - mx**2
    sxy = w @ (x * y) / sw - mx * my
    with np.errstate(invalid="ignore", divide="ignore"):
        lam = sxy / sxx
    a = my - lam * mx
    if weights is None:
        return float(a[0]), float(lam[0])
    return a, lam
