"""Statistics for the validation experiments: Wilson intervals, AUROC, cluster bootstrap.

Samples of one query are correlated (a model that does not know a capital is wrong in all its
samples), so uncertainty comes from resampling *queries* (a cluster bootstrap): each bootstrap
replicate draws queries with replacement and every statistic is recomputed as a weighted sum
with the query multiplicities as weights, all replicates at once.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

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
