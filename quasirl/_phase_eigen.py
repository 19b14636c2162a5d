"""Eigen's error threshold as a phase diagram: master fraction over (mu, sigma) or (mu, L).

Model: binary sequences of length L, per-site error rate mu (symmetric), single-peak landscape
(the master sequence has fitness sigma, every other sequence 1), discrete generations
x' = Q diag(f) x / f.x. The stationary state is computed exactly by the (L+1)-class reduction
of :mod:`quasirl.sequence` (Swetina & Schuster 1982), which is exact for this landscape.

Theory (Eigen 1971): neglecting back mutations, the master fraction is
x0 = (sigma Q - 1) / (sigma - 1) with Q = (1 - mu)^L, which vanishes at

    mu_c = 1 - sigma^(-1/L)        (~ ln(sigma) / L for small mu).

With back mutations x0 never reaches 0: beyond mu_c the population is nearly uniform over the
2^L sequences, x0 ~ 2^-L, and the collapse between the two regimes is where ln x0 falls
fastest. The numeric threshold is therefore the inflection of the log order parameter, the mu
of steepest descent of ln x0 (the extremum of d ln x0 / d mu on the grid, refined by a parabola
through the three points around it; only master fractions above 1e-12, which the class solver
resolves, are used). At L = 20 it lies within 2% of mu_c for 20 <= sigma <= 1000; it is
2.1% above at sigma = 10 and 3.4% at sigma = 3 (as sigma -> 1 the threshold is smeared and the
no-back-mutation formula is not meant to hold). The figure's colour is the normalised order
parameter phi = -log2(x0) / L, 0 for a pure master population and 1 for a uniform one.
"""

from __future__ import annotations

import numpy as np

from . import _validate as V

RESOLVED = 1e-12  # smallest master fraction trusted from the class solver's Perron vector


def eigen_critical_mu(sigma, L):
    """Eigen's single-peak error threshold mu_c = 1 - sigma^(-1/L) (numpy; broadcasts)."""
    sigma = np.asarray(sigma, dtype=float)
    L = np.asarray(L, dtype=float)
    return -np.expm1(-np.log(sigma) / L)


def steepest_descent(mu, x0, floor: float = RESOLVED) -> float:
    """mu at which ln x0 falls fastest (the inflection of the log order parameter).

    mu: increasing grid; x0: positive values there. The derivative d ln x0 / d mu is taken by
    second-order finite differences (numpy.gradient, non-uniform grids allowed) over the points
    with x0 > ``floor``; its minimum is refined by the vertex of the parabola through the three
    points around it. NaN when fewer than 3 points are resolved.
    """
    mu = np.asarray(mu, dtype=float)
    x0 = np.asarray(x0, dtype=float)
    ok = x0 > floor
    if ok.sum() < 3:
        return float("nan")
    m, y = mu[ok], np.log(x0[ok])
    d = np.gradient(y, m)
    i = int(np.argmin(d))
    if i == 0 or i == d.size - 1:
        return float(m[i])
    a, b, c = m[i - 1:i + 2]
    fa, fb, fc = d[i - 1:i + 2]
    den = (b - a) * (fb - fc) - (b - c) * (fb - fa)
    if den == 0:
        return float(b)
    vertex = b - 0.5 * ((b - a) ** 2 * (fb - fc) - (b - c) ** 2 * (fb - fa)) / den
    return float(np.clip(vertex, a, c))


def _master_point(mu, sigma, L):
    """Stationary master fraction and mean fitness on the single peak (class reduction)."""
    from . import sequence

    f = np.ones(int(L) + 1)
    f[0] = float(sigma)
    st = sequence.class_stationary(f, float(mu))
    y0 = float(st.distribution[0])
    return {"master": y0, "phi": -np.log2(max(y0, 1e-300)) / int(L),
            "mean_fitness": float(st.mean_fitness)}


def _fixed_L(L):
    def master_sigma(mu, sigma):
        return _master_point(mu, sigma, L)
    return master_sigma


def _fixed_sigma(sigma):
    def master_length(mu, L):
        return _master_point(mu, sigma, L)
    return master_length


def eigen_phase_diagram(mu, sigma=None, L=None, level: float = 0.5, **sweep_kw):
    """Master-sequence fraction of Eigen's model over (mu, sigma) at fixed L, or over (mu, L).

    Give a 1-D ``mu`` grid (fine near the threshold: the boundary is read off it) and either
    an array ``sigma`` with a scalar ``L`` (the (mu, sigma) plane) or an array ``L`` with a
    scalar ``sigma`` (the (mu, L) plane). Each point is the
    exact stationary state of the single-peak landscape by the (L+1)-class reduction
    (:func:`quasirl.sequence.class_stationary`), swept with :func:`quasirl.phase.sweep`
    (``sweep_kw`` go there). Returns an ``xarray.Dataset`` with

      master[param, mu]  stationary fraction of the master sequence x0
      phi[param, mu]     order parameter -log2(x0) / L (0 ordered, 1 uniform)
      mean_fitness[param, mu]
      mu_boundary[param] numeric threshold: steepest descent of ln x0 (:func:`steepest_descent`)
      mu_half[param]     where phi crosses ``level`` (interpolated in log mu): x0 at the
                         geometric midpoint of 1 and 2^-L for level 1/2 (NaN where x0 that
                         small is not resolved, L >~ 80)
      mu_c[param]        theory 1 - sigma^(-1/L)
      master_theory[param, mu]  no-back-mutation x0 = (sigma (1-mu)^L - 1)/(sigma - 1), >= 0

    Reference: M. Eigen, Naturwissenschaften 58, 465 (1971); J. Swetina and P. Schuster,
    Biophys. Chem. 16, 329 (1982) for the class reduction.
    """
    from ._phase_geometry import boundary_curve
    from ._phase_sweep import sweep

    mu = np.asarray(mu, dtype=float)
    if mu.ndim != 1 or mu.size < 2:
        raise V.QuasirlValueError(f"mu must be a 1-D grid of at least 2 values, got shape "
                                  f"{mu.shape}")
    bad = ~np.isfinite(mu) | (mu <= 0) | (mu > 0.5)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise V.QuasirlValueError(f"mu must lie in (0, 0.5], but mu[{i}] = {float(mu[i])!r}")
    if np.any(np.diff(mu) <= 0):
        i = int(np.flatnonzero(np.diff(mu) <= 0)[0]) + 1
        raise V.QuasirlValueError(f"mu must be strictly increasing, but mu[{i}] <= mu[{i - 1}]")
    if sigma is None or L is None or (np.ndim(sigma) == 1) == (np.ndim(L) == 1):
        raise V.QuasirlValueError(
            "give an array sigma with a scalar L (the (mu, sigma) plane) or an array L with a "
            "scalar sigma (the (mu, L) plane)")
    if not 0 < level < 1:
        raise V.QuasirlValueError(f"level must lie in (0, 1), got {level}")
    if np.ndim(sigma) == 1:
        s = np.asarray(sigma, dtype=float)
        bad = ~np.isfinite(s) | (s <= 1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise V.QuasirlValueError(f"sigma must be > 1, but sigma[{i}] = {float(s[i])!r}")
        Ls = V.check_horizon(L, "L")
        if Ls < 1:
            raise V.QuasirlValueError(f"L must be >= 1, got {Ls}")
        sweep_kw.setdefault("tag", f"single peak, class reduction, L={Ls}")
        ds = sweep(_fixed_L(Ls), sigma=s, mu=mu, **sweep_kw)
        param, sig, Lg = "sigma", s[:, None], float(Ls)
        mu_c = eigen_critical_mu(s, Ls)
        ds.attrs["L"] = Ls
    else:
        Larr = np.asarray(L)
        if Larr.dtype.kind not in "iu" or np.any(Larr < 1):
            raise V.QuasirlValueError(f"L must be integers >= 1, got {L!r}")
        if not (np.isfinite(sigma) and sigma > 1):
            raise V.QuasirlValueError(f"sigma must be > 1, got {sigma!r}")
        sweep_kw.setdefault("tag", f"single peak, class reduction, sigma={float(sigma)!r}")
        ds = sweep(_fixed_sigma(float(sigma)), L=Larr.astype(np.int64), mu=mu, **sweep_kw)
        param, sig, Lg = "L", float(sigma), Larr[:, None].astype(float)
        mu_c = eigen_critical_mu(sigma, Larr)
        ds.attrs["sigma"] = float(sigma)
    Q = np.exp(Lg * np.log1p(-mu[None, :]))
    ds["master_theory"] = ((param, "mu"), np.clip((sig * Q - 1) / (sig - 1), 0.0, 1.0))
    ds["mu_boundary"] = (param, np.array([steepest_descent(mu, row)
                                          for row in ds["master"].transpose(param, "mu").values]))
    half = boundary_curve(ds["phi"], level, along=param, across="mu", which="first",
                          scale="log")
    # phi's crossing needs x0 = 2^(-L level) resolved; blank it where that is below RESOLVED
    Lrow = np.full(half.size, float(Lg)) if np.ndim(Lg) == 0 else np.ravel(Lg)
    ds["mu_half"] = half.where(Lrow * level * np.log(2) < -np.log(RESOLVED))
    ds["mu_c"] = (param, mu_c)
    ds.attrs.update(model="single peak, class reduction", level=float(level), plane=param)
    ds["mu"].attrs["long_name"] = "per-site error rate mu"
    ds["master"].attrs["long_name"] = "master fraction x0"
    return ds
