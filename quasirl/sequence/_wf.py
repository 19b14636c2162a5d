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


def _scan_record(one, record, carry, keys, save_every):
    """Scan ``one`` over keys; with save_every, also ``record`` the carry every k steps."""
    G = keys.shape[0]
    if save_every is None:
        carry, ys = jax.lax.scan(one, carry, keys)
        return carry, ys, None
    nblk, rest = divmod(G, save_every)

    def blk(c, ks):
        c, ys = jax.lax.scan(one, c, ks)
        return c, (ys, record(c))

    c0 = carry
    carry, (ys, rec) = jax.lax.scan(blk, carry, keys[: nblk * save_every].reshape(
        (nblk, save_every) + keys.shape[1:]))
    ys = jax.tree_util.tree_map(lambda a: a.reshape((-1,) + a.shape[2:]), ys)
    if rest:
        carry, ys2 = jax.lax.scan(one, carry, keys[nblk * save_every:])
        ys = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), ys, ys2)
    rec = jnp.concatenate([record(c0)[None], rec])
    return carry, ys, rec


@partial(jax.jit, static_argnames=("N", "generations", "save_every", "groups", "native",
                                   "master"))
def _wf_kernel(key, f, u, v, n0, N, generations, save_every, groups, native, master):
    L = len(u)
    keys = jax.random.split(key, generations)
    inv_n = 1.0 / N
    f, back = scale_by_max(f)  # f * n stays finite for fitness near the dtype's largest value

    def one(n, k):
        x = n.astype(f.dtype)
        p, _ = apply_q(x, f, u, v, 1, weighted=True, normalize=True, groups=groups,
                       native=native)
        n = _sample_counts(k, p, N)
        return n, (n[master] * inv_n, back(jnp.dot(f, n.astype(f.dtype)) * inv_n))

    def record(n):
        return class_sum(relabel(n.astype(f.dtype) * inv_n, L, master), L)

    n, (xm, mf), cl = _scan_record(one, record, n0, keys, save_every)
    xm = jnp.concatenate([(n0[master] * inv_n)[None].astype(xm.dtype), xm])
    mf = jnp.concatenate([back(jnp.dot(f, n0.astype(f.dtype)) * inv_n)[None], mf])
    return WrightFisher(n, xm, mf, cl)


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
    if generations == 0:
        x = n0.astype(dtype) / N
        cl = None if save_every is None else class_sum(relabel(x, L, master), L)[None]
        fs, back = scale_by_max(f)
        return WrightFisher(n0, x[master][None], back(jnp.dot(fs, x))[None], cl)
    return _wf_kernel(key, f, u, v, n0, N, generations, save_every, g, native, master)


# --------------------------------------------------------------------------------------------
# individual-based
# --------------------------------------------------------------------------------------------
@partial(jax.jit, static_argnames=("fitness_fn", "generations", "save_every"))
def _individual_kernel(key, g0, u, v, table, fitness_fn, generations, save_every):
    N, L = g0.shape
    fn = fitness_fn if fitness_fn is not None else (
        lambda g: table[jnp.sum(g, axis=1, dtype=jnp.int32)])
    keys = jax.random.split(key, generations)

    def stats(g):
        d = jnp.sum(g, axis=1, dtype=jnp.int32)
        w, back = scale_by_max(fn(g).astype(u.dtype))
        return (jnp.mean((d == 0).astype(u.dtype)), back(jnp.mean(w)),
                jnp.mean(d.astype(u.dtype)))

    def one(g, k):
        k_sel, k_mut = jax.random.split(k)
        w, _ = scale_by_max(fn(g).astype(u.dtype))
        parents = _sample_indices(k_sel, w, N)
        g = g[parents]
        rate = jnp.where(g == 0, u[None, :], v[None, :])
        flips = jax.random.uniform(k_mut, (N, L), u.dtype) < rate
        g = g ^ flips.astype(g.dtype)
        return g, stats(g)

    def record(g):
        d = jnp.sum(g, axis=1, dtype=jnp.int32)
        return jnp.zeros((L + 1,), u.dtype).at[d].add(1.0 / N)

    g, (xm, mf, md), cl = _scan_record(one, record, g0, keys, save_every)
    s0 = stats(g0)
    return Population(g, jnp.concatenate([s0[0][None], xm]), jnp.concatenate([s0[1][None], mf]),
                      jnp.concatenate([s0[2][None], md]), cl)


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
    (default all master).
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
    if generations == 0:
        d = jnp.sum(g0, axis=1, dtype=jnp.int32)
        w, back = scale_by_max((fn(g0) if fn is not None else table[d]).astype(dtype))
        cl = None if save_every is None else \
            jnp.zeros((L + 1,), dtype).at[d].add(1.0 / N)[None]
        return Population(g0, jnp.mean((d == 0).astype(dtype))[None], back(jnp.mean(w))[None],
                          jnp.mean(d.astype(dtype))[None], cl)
    return _individual_kernel(key, g0, u, v, table if table is not None else jnp.zeros(1, dtype),
                              fn, generations, save_every)
