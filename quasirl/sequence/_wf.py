"""Finite populations: Wright-Fisher on the genotype space and with N explicit bit-strings.

Both follow the deterministic map's order (selection, then mutation) and add drift: the N
offspring of a generation are drawn independently from p = Q diag(f) x / (f . x), x the
parents' genotype frequencies, i.e. n' ~ Multinomial(N, p). The genotype-space version holds
the count vector [2^L] (moderate L); the individual-based version holds N genomes [N, L]
(any L: selection by fitness-proportional choice of parents, then each site of each offspring
flips with its mutation probability), which is the same process.

Multinomial draws use the inverse CDF: N uniforms located by binary search in the cumulative
sum of p (O(2^L + N log 2^L) per generation), exact up to the rounding of that cumulative sum.
Keys are explicit; the same key gives the same run.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._validate import (
    QuasirlValueError,
    check_finite,
    check_int,
    check_key,
    check_nonnegative,
    float_dtype,
    is_concrete,
)
from . import _chunks
from ._checks import (
    check_fitness,
    check_groups,
    check_L,
    check_master,
    check_numbers,
    site_rates,
)
from ._kron import apply_q, class_sum, default_groups, relabel, resolve_kernel, scale_by_max

MAX_INDIVIDUAL_L = 100_000

# Counts and individual indices are int32, and each generation draws N uniforms (O(N) memory).
MAX_N = 2**31 - 1


def _check_population(N) -> int:
    N = check_int("N", N, minimum=1)
    if N > MAX_N:
        raise QuasirlValueError(
            f"N = {N} exceeds the largest population these simulations hold, 2^31 - 1 = {MAX_N}"
            f" (counts and indices are int32, and each generation draws N uniforms); for "
            f"larger populations the deterministic map (evolve, stationary) is the N -> "
            f"infinity limit")
    return N


class WrightFisher(NamedTuple):
    """Result of :func:`wright_fisher`.

    counts: final genotype counts [2^L] (sum N); master: fraction at ``master`` for
    generations 0..G [G+1]; mean_fitness: f . n / N [G+1]; classes: Hamming-class fractions
    every ``save_every`` generations [G // save_every + 1, L+1] or None.
    """

    counts: jax.Array
    master: jax.Array
    mean_fitness: jax.Array
    classes: jax.Array | None


class Population(NamedTuple):
    """Result of :func:`wright_fisher_individuals`.

    genomes: final population [N, L] (uint8 bits, site j in column j); master: fraction of
    genomes equal to the master (all zeros) [G+1]; mean_fitness [G+1]; mean_distance: mean
    Hamming distance to the master [G+1]; classes: fraction in each Hamming class every
    ``save_every`` generations [G // save_every + 1, L+1] or None.
    """

    genomes: jax.Array
    master: jax.Array
    mean_fitness: jax.Array
    mean_distance: jax.Array
    classes: jax.Array | None


def _sample_counts(key, p, N: int):
    """Multinomial(N, p / sum p) counts by the inverse CDF."""
    cdf = jnp.cumsum(p)
    u = jax.random.uniform(key, (N,), cdf.dtype) * cdf[-1]
    idx = jnp.searchsorted(cdf, u, side="right")
    idx = jnp.minimum(idx, p.shape[0] - 1)
    return jnp.zeros(p.shape, jnp.int32).at[idx].add(1)


def _sample_indices(key, w, N: int):
    cdf = jnp.cumsum(w)
    u = jax.random.uniform(key, (N,), cdf.dtype) * cdf[-1]
    return jnp.minimum(jnp.searchsorted(cdf, u, side="right"), w.shape[0] - 1)


_STATIC = ("N", "groups", "native", "master", "record", "size", "fixed")


@partial(jax.jit, static_argnames=_STATIC)
def _wf_chunk(key, f, u, v, n, steps, t0, every, N, groups, native, master, record, size,
              fixed):
    """``steps`` <= size generations from counts n (:mod:`._chunks`); generation t draws with
    fold_in(key, t), so a run's first G generations do not depend on how many follow."""
    L = len(u)
    inv_n = 1.0 / N
    f, back = scale_by_max(f)  # f * n stays finite for fitness near the dtype's largest value

    def mean(n):
        return back(jnp.dot(f, n.astype(f.dtype)) * inv_n)

    def one(n, t):
        x = n.astype(f.dtype)
        p, _ = apply_q(x, f, u, v, 1, weighted=True, normalize=True, groups=groups,
                       native=native)
        n = _sample_counts(jax.random.fold_in(key, t), p, N)
        return n, (n[master] * inv_n, mean(n))

    def classes(n):
        return class_sum(relabel(n.astype(f.dtype) * inv_n, L, master), L)

    start = ((n[master] * inv_n).astype(f.dtype), mean(n), classes(n) if record else None)
    n, ys, recs = _chunks.loop(one, classes if record else None, n, steps, t0, every, size,
                               fixed)
    return n, ys, recs, start, None


def _run(chunk, state0, generations, save_every, size, traced):
    """(final state, per-step outputs with the start prepended, classes or None)."""
    state, ys, recs, start, _, _ = _chunks.run(chunk, state0, generations, save_every, (),
                                               size, traced)
    series = [_chunks.cat(s0, y) for s0, y in zip(start[:-1], ys, strict=True)]
    cl = None if save_every is None else _chunks.cat(start[-1][None], recs)
    return state, series, cl


def wright_fisher(
    key, fitness, mu, N: int, generations: int, n0=None, *, nu=None,
    save_every: int | None = None, master: int = 0, groups=None, kernel: str = "auto",
) -> WrightFisher:
    """Wright-Fisher population of N on the 2^L genotypes (counts, multinomial sampling).

    Each generation n' ~ Multinomial(N, Q diag(f) n / (f . n)): selection and mutation as in
    the deterministic map (:func:`evolve`), then drift. As N -> infinity the frequencies follow
    the deterministic trajectory; for finite N the master class can be lost, which lowers the
    error threshold (Nowak & Schuster 1989, J. Theor. Biol. 137:375).
    key: a JAX key (same key, same run); fitness [2^L]; mu, nu: see :func:`mutate`;
    N: population size, 1 <= N <= 2^31 - 1 (counts are int32 and each generation draws N
    uniforms); n0: initial counts [2^L] summing to N (default all N at ``master``); groups,
    kernel: how Q is applied (see :func:`mutate`).
    Generation t draws with ``jax.random.fold_in(key, t)``, so the first G generations of a
    longer run are the run of G generations. The number of generations is a run-time value
    (compiled chunks, as in :func:`evolve`): a new one compiles nothing.
    """
    check_key(key)
    L = check_fitness(fitness)
    N = _check_population(N)
    generations = check_int("generations", generations, minimum=0)
    if save_every is not None:
        save_every = check_int("save_every", save_every, minimum=1)
    master = check_master(master, L)
    dtype = float_dtype(fitness, mu, nu)
    f = jnp.asarray(fitness, dtype)
    u, v = site_rates(mu, nu, L, dtype)
    g = check_groups(groups, L)
    native = resolve_kernel(kernel, g, "sequence.wright_fisher")
    g = g or default_groups(L, dtype)
    if n0 is None:
        n0 = jnp.zeros((1 << L,), jnp.int32).at[master].set(N)
    else:
        if np.shape(n0) != (1 << L,):
            raise QuasirlValueError(f"n0 must have shape (2^L,) = ({1 << L},), got {np.shape(n0)}")
        if is_concrete(n0):
            a = np.asarray(n0)
            if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
                raise QuasirlValueError(f"n0 must hold integer counts, got dtype {a.dtype}")
            check_nonnegative("n0", a)
            if int(a.sum()) != N:
                raise QuasirlValueError(f"n0 must sum to N = {N}, but it sums to {int(a.sum())}")
            if not (a * np.asarray(fitness, np.float64)).sum() > 0:
                raise QuasirlValueError("n0 must hold a genotype of positive fitness")
        n0 = jnp.asarray(n0, jnp.int32)
    size = _chunks.chunk_size(1 << L)

    def chunk(n, steps, t0, every, size, fixed):
        return _wf_chunk(key, f, u, v, n, steps, t0, every, N, g, native, master,
                         save_every is not None, size, fixed)

    n, (xm, mf), cl = _run(chunk, n0, generations, save_every, size,
                           not is_concrete(key, f, u, v, n0))
    return WrightFisher(n, xm, mf, cl)


# --------------------------------------------------------------------------------------------
# individual-based
# --------------------------------------------------------------------------------------------
@partial(jax.jit, static_argnames=("fitness_fn", "record", "size", "fixed"))
def _individual_chunk(key, g, u, v, table, steps, t0, every, fitness_fn, record, size, fixed):
    """``steps`` <= size generations of N genomes (:mod:`._chunks`); generation t draws with
    fold_in(key, t)."""
    N, L = g.shape
    fn = fitness_fn if fitness_fn is not None else (
        lambda g: table[jnp.sum(g, axis=1, dtype=jnp.int32)])

    def stats(g):
        d = jnp.sum(g, axis=1, dtype=jnp.int32)
        w, back = scale_by_max(fn(g).astype(u.dtype))
        return (jnp.mean((d == 0).astype(u.dtype)), back(jnp.mean(w)),
                jnp.mean(d.astype(u.dtype)))

    def one(g, t):
        k_sel, k_mut = jax.random.split(jax.random.fold_in(key, t))
        w, _ = scale_by_max(fn(g).astype(u.dtype))
        parents = _sample_indices(k_sel, w, N)
        g = g[parents]
        rate = jnp.where(g == 0, u[None, :], v[None, :])
        flips = jax.random.uniform(k_mut, (N, L), u.dtype) < rate
        g = g ^ flips.astype(g.dtype)
        return g, stats(g)

    def classes(g):
        d = jnp.sum(g, axis=1, dtype=jnp.int32)
        return jnp.zeros((L + 1,), u.dtype).at[d].add(1.0 / N)

    start = (*stats(g), classes(g) if record else None)
    g, ys, recs = _chunks.loop(one, classes if record else None, g, steps, t0, every, size,
                               fixed)
    return g, ys, recs, start, None


def wright_fisher_individuals(
    key, fitness, mu, N: int, generations: int, L: int | None = None, *, nu=None,
    genomes0=None, save_every: int | None = None,
) -> Population:
    """Individual-based Wright-Fisher: N bit-strings of length L, any L (no 2^L vector).

    Each generation draws N parents with probability proportional to fitness (with
    replacement), copies them, and flips each site 0 -> 1 with probability mu_j and 1 -> 0 with
    nu_j (default mu). The same process as :func:`wright_fisher` on counts.
    fitness: an array [L+1] of fitness by Hamming distance to the all-zeros master, or a
    callable mapping genomes [N, L] (uint8) to fitnesses [N] (traceable by JAX; it is a static
    argument of the compiled kernel, so pass the same function object to reuse it).
    N: population size, 1 <= N <= 2^31 - 1 (memory: the genomes are N x L bytes);
    L: sequence length (default len(fitness) - 1 for a table); genomes0: [N, L] start
    (default all master). Generation t draws with ``jax.random.fold_in(key, t)``; the number
    of generations is a run-time value, as in :func:`wright_fisher`.
    """
    check_key(key)
    N = _check_population(N)
    generations = check_int("generations", generations, minimum=0)
    if save_every is not None:
        save_every = check_int("save_every", save_every, minimum=1)
    table = None
    if callable(fitness):
        if L is None:
            raise QuasirlValueError("L must be given when fitness is a callable")
        L = check_L(L, limit=MAX_INDIVIDUAL_L)
        fn = fitness
    else:
        check_numbers("fitness", fitness)
        table = jnp.asarray(fitness)
        if table.ndim != 1 or table.shape[0] < 2:
            raise QuasirlValueError(
                f"fitness must be a callable or a 1-D array [L+1] of class fitnesses, "
                f"got shape {table.shape}"
            )
        if L is None:
            L = table.shape[0] - 1
        L = check_L(L, limit=MAX_INDIVIDUAL_L)
        if table.shape[0] != L + 1:
            raise QuasirlValueError(
                f"fitness must have L + 1 = {L + 1} entries, got {table.shape[0]}"
            )
        if is_concrete(table):
            check_finite("fitness", np.asarray(table))
            check_nonnegative("fitness", np.asarray(table))
            if not (np.asarray(table) > 0).any():
                raise QuasirlValueError("fitness must have a positive entry, but all are 0")
        fn = None
    dtype = float_dtype(table, mu, nu)
    if table is not None:
        table = table.astype(dtype)
    u, v = site_rates(mu, nu, L, dtype)
    if genomes0 is None:
        g0 = jnp.zeros((N, L), jnp.uint8)
    else:
        if np.shape(genomes0) != (N, L):
            raise QuasirlValueError(
                f"genomes0 must have shape (N, L) = ({N}, {L}), got {np.shape(genomes0)}"
            )
        check_numbers("genomes0", genomes0, bools=True)
        g0 = jnp.asarray(genomes0)
        if is_concrete(g0):
            a = np.asarray(g0)
            bad = (a != 0) & (a != 1)
            if bad.any():
                i = tuple(int(t) for t in np.argwhere(bad)[0])
                raise QuasirlValueError(
                    f"genomes0 must hold bits 0/1, but genomes0{list(i)} = {a[i].item()!r}"
                )
        g0 = g0.astype(jnp.uint8)
    table = table if table is not None else jnp.zeros(1, dtype)
    size = _chunks.chunk_size(N * L)

    def chunk(g, steps, t0, every, size, fixed):
        return _individual_chunk(key, g, u, v, table, steps, t0, every, fn,
                                 save_every is not None, size, fixed)

    g, (xm, mf, md), cl = _run(chunk, g0, generations, save_every, size,
                               not is_concrete(key, u, v, table, g0))
    return Population(g, xm, mf, md, cl)
