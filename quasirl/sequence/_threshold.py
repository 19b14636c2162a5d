"""Eigen's error threshold, located numerically on the class reduction or the full space.

Order parameter: the stationary fraction x_m(mu) of the master sequence (or master class). For
a finite L it falls smoothly from ~(sigma Q - 1)/(sigma - 1) to the level of a random sequence
2^-L; the collapse is sharp on a log scale, so the numeric threshold is the mu where
log x_m falls fastest (the inflection of log x_m, the minimum of d log x_m / d mu). As L grows
it tends to Eigen's mu_c = 1 - sigma^(-1/L) (measured: within 0.7% at L = 50 and 1.8% at
L = 20 for sigma = 10 on the sharp peak).

Search: a grid over the bracket, the steepest segment, a finer grid around it (``levels``
times; each level's grid is warm-started from the nearest stationary state of the previous
one), and a parabola through the three steepest finite-difference slopes at the end.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from .._validate import QuasirlValueError, check_int, float_dtype
from ._checks import (
    check_class_fitness,
    check_fitness,
    check_groups,
    check_master,
    check_model,
    check_numbers,
    check_tol,
)
from ._classes import class_stationary
from ._kron import default_groups, resolve_kernel, stationary_kernel


class Threshold(NamedTuple):
    """Result of :func:`error_threshold`.

    mu_c: the numeric threshold (steepest descent of log master fraction); mu_theory: Eigen's
    1 - sigma^(-1/L) for the landscape's superiority sigma; sigma; L; mu: every mu evaluated
    (sorted) and master: the stationary master fraction there; space: "classes" or "full".
    """

    mu_c: float
    mu_theory: float
    sigma: float
    L: int
    mu: np.ndarray
    master: np.ndarray
    space: str


def superiority(fitness, *, space: str = "full", master: int | None = None) -> float:
    """Eigen's superiority sigma = f_master / (mean fitness of all other genotypes).

    space="full": fitness [2^L], master defaults to the fittest genotype; space="classes":
    class fitness [L+1] with the master class 0, the mean weighted by class sizes C(L, k).
    """
    if space not in ("full", "classes"):
        raise QuasirlValueError(f"space must be 'full' or 'classes', got {space!r}")
    if space == "classes":
        f = check_class_fitness(fitness)
        L = f.size - 1
        logw = np.array([math.lgamma(L + 1) - math.lgamma(k + 1) - math.lgamma(L - k + 1)
                         for k in range(1, L + 1)])
        w = np.exp(logw - logw.max())
        rest = float((w * f[1:]).sum() / w.sum())
        return float(f[0]) / rest if rest > 0 else math.inf
    L = check_fitness(fitness)
    f = np.asarray(fitness, np.float64)
    m = int(np.argmax(f)) if master is None else check_master(master, L)
    # the others summed apart: f.sum() - f[m] loses them all when f[m] is 1e16 times larger
    rest = np.delete(f, m).sum() / (f.size - 1)
    return float(f[m]) / rest if rest > 0 else math.inf


def error_threshold(
    fitness, *, space: str = "full", bracket: tuple[float, float] | None = None,
    points: int = 9, levels: int = 5, nu_ratio: float = 1.0, model: str = "discrete",
    dt: float = 0.1, master: int | None = None, tol: float | None = None,
    max_iter: int = 100_000, groups=None, kernel: str = "auto",
) -> Threshold:
    """Numeric error threshold of a landscape, beside Eigen's mu_c = 1 - sigma^(-1/L).

    fitness: [2^L] (space="full": the Kronecker power iteration, :func:`stationary`) or the
    class fitness [L+1] of a Hamming landscape (space="classes": the exact class reduction,
    usable to L = 1000). The numeric threshold is the mu where the log of the stationary master
    fraction falls fastest; sigma is :func:`superiority` (the sharp peak's sigma).
    bracket: the mu interval searched (default [0.25, 2] x the theoretical value, capped at
    0.5); points per level and levels of refinement; nu_ratio: back-mutation rate / mu;
    master: the master genotype (default the fittest; space="full" only); groups, kernel: how
    Q is applied (space="full"; see :func:`mutate`).
    """
    if space not in ("full", "classes"):
        raise QuasirlValueError(f"space must be 'full' or 'classes', got {space!r}")
    points = check_int("points", points, minimum=4)
    levels = check_int("levels", levels, minimum=1)
    max_iter = check_int("max_iter", max_iter, minimum=1)
    check_model(model, dt)
    a = check_numbers("nu_ratio", nu_ratio)
    if a is None or a.ndim or not (np.isfinite(a) and a >= 0):
        raise QuasirlValueError(f"nu_ratio must be a finite number >= 0, got {nu_ratio!r}")
    nu_ratio = float(a)
    if space == "classes":
        f = check_class_fitness(fitness)
        L = f.size - 1
        sigma = superiority(f, space="classes")
        m = 0
    else:
        L = check_fitness(fitness)
        f = np.asarray(fitness)
        m = int(np.argmax(f)) if master is None else check_master(master, L)
        sigma = superiority(f, master=m)
    mu_theory = 1.0 - sigma ** (-1.0 / L) if sigma > 1 else math.nan
    if bracket is None:
        if not sigma > 1:
            raise QuasirlValueError(
                f"bracket must be given: the master is not fitter than average (sigma = {sigma:g})"
            )
        bracket = (0.25 * mu_theory, min(0.5, 2.0 * mu_theory))
    b = check_numbers("bracket", bracket)
    if b is None or b.shape != (2,):
        raise QuasirlValueError(f"bracket must be a pair of numbers (lo, hi), got {bracket!r}")
    lo, hi = float(b[0]), float(b[1])
    if not (0 <= lo < hi <= 1):
        raise QuasirlValueError(f"bracket must satisfy 0 <= lo < hi <= 1, got {bracket!r}")

    if space == "classes":
        def evaluate(mus, _prev):
            xs = [class_stationary(f, mu, mu * nu_ratio, model=model).distribution for mu in mus]
            return np.array([x[0] for x in xs]), xs
    else:
        dtype = float_dtype(fitness)
        fj = jnp.asarray(fitness, dtype)
        g = check_groups(groups, L)
        native = resolve_kernel(kernel, g, "sequence.error_threshold")
        g = g or default_groups(L, dtype)
        tol_ = check_tol(tol, dtype)
        uniform = jnp.full((1 << L,), 1.0 / (1 << L), dtype)

        def evaluate(mus, prev):
            if prev:
                known = np.array(sorted(prev))
                x0s = [prev[float(known[np.argmin(np.abs(known - mu))])] for mu in mus]
            else:
                x0s = [uniform] * len(mus)
            # one solve per mu (under vmap the Chebyshev/plain branches would both run)
            xs = []
            for mu, x0 in zip(mus, x0s, strict=True):
                u = jnp.full((L,), mu, dtype)
                res = stationary_kernel(fj, u, u * nu_ratio, x0, jnp.asarray(tol_, dtype),
                                         jnp.int32(max_iter), jnp.asarray(dt, dtype), g, native,
                                         model, True)
                xs.append(res.distribution)
            return np.array([float(x[m]) for x in xs]), xs

    seen: dict[float, float] = {}
    states: dict[float, object] = {}
    grid = np.linspace(lo, hi, points)
    for level in range(levels):
        todo = [mu for mu in grid if float(mu) not in seen]
        vals, xs = evaluate(np.array(todo), states)
        for mu, val, x in zip(todo, vals, xs, strict=True):
            seen[float(mu)] = float(val)
            if space == "full":
                states[float(mu)] = x
        y = np.log(np.maximum([seen[float(mu)] for mu in grid], 1e-300))
        slope = np.diff(y) / np.diff(grid)
        i = int(np.argmin(slope))
        if level == levels - 1:
            break
        a = grid[max(i - 1, 0)] if i > 0 else grid[0]
        b = grid[min(i + 2, points - 1)]
        a, b = (grid[i] + a) / 2, (grid[i + 1] + b) / 2
        grid = np.linspace(a, b, points)
    mids = (grid[1:] + grid[:-1]) / 2
    mu_c = float(mids[i])
    if 0 < i < len(slope) - 1:  # vertex of the parabola through three slopes
        s0, s1, s2 = slope[i - 1], slope[i], slope[i + 1]
        h = mids[1] - mids[0]
        den = s0 - 2 * s1 + s2
        if den > 0:
            mu_c = float(mids[i] + 0.5 * h * (s0 - s2) / den)
    mus = np.array(sorted(seen))
    return Threshold(mu_c, float(mu_theory), float(sigma), int(L), mus,
                     np.array([seen[float(x)] for x in mus]), space)
