"""Fitness landscapes on binary sequences: vectors over the 2^L genotypes.

Genotype i has site j at bit L-1-j of i (site 0 is the most significant bit, as in
``x.reshape([2] * L)``); distances are Hamming distances to ``master`` (default 0, the
all-zeros sequence). Every function returns a fitness vector [2^L] of the default float dtype.
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
    check_key,
    check_nonnegative,
    is_concrete,
    is_int,
)
from ._checks import check_L, check_master, check_numbers, check_per_site
from ._kron import hamming_distance

MAX_LANDSCAPE_L = 30


def _L(L) -> int:
    return check_L(L, limit=MAX_LANDSCAPE_L)


def _scalar(x, name: str, positive: bool = False) -> None:
    if is_concrete(x):
        a = np.asarray(x)
        if a.ndim != 0 or a.dtype == object or not np.issubdtype(a.dtype, np.number):
            raise QuasirlValueError(f"{name} must be a number, got {x!r}")
        check_numbers(name, a)  # complex: refused, not cast
        if not np.isfinite(a) or (positive and a <= 0) or a < 0:
            need = "> 0" if positive else ">= 0"
            raise QuasirlValueError(f"{name} must be a finite number {need}, got {float(a)!r}")


def single_peak(L: int, sigma, master: int = 0):
    """Sharp-peak landscape: fitness sigma at ``master`` and 1 everywhere else  [2^L].

    Eigen's error threshold for it is mu_c = 1 - sigma^(-1/L) ~ ln(sigma) / L.
    """
    L = _L(L)
    master = check_master(master, L)
    _scalar(sigma, "sigma", positive=True)
    dtype = jnp.result_type(float)
    return jnp.ones((1 << L,), dtype).at[master].set(jnp.asarray(sigma, dtype))


def hamming_landscape(L: int, f_of_distance, master: int = 0):
    """Fitness as a function of the Hamming distance d to ``master``: f[i] = phi(d(i))  [2^L].

    f_of_distance: an array [L+1] (phi(d) = f_of_distance[d]) or a callable taking the int
    array of distances and returning fitnesses (it must work on JAX arrays).
    """
    L = _L(L)
    master = check_master(master, L)
    d = hamming_distance(L, master)
    if callable(f_of_distance):
        table = jnp.asarray(f_of_distance(jnp.arange(L + 1)))
        if table.shape != (L + 1,):
            raise QuasirlValueError(
                f"f_of_distance(k) must return L + 1 = {L + 1} values for k = 0..L, "
                f"got shape {table.shape}"
            )
    else:
        check_numbers("f_of_distance", f_of_distance)
        table = jnp.asarray(f_of_distance)
        if table.shape != (L + 1,):
            raise QuasirlValueError(
                f"f_of_distance must have shape (L + 1,) = ({L + 1},), got {table.shape}"
            )
    if is_concrete(table):
        check_finite("f_of_distance", np.asarray(table))
        check_nonnegative("f_of_distance", np.asarray(table))
    if not jnp.issubdtype(table.dtype, jnp.floating):
        table = table.astype(jnp.result_type(float))
    return table[d]


def _per_site(s, L: int, name: str):
    a = check_per_site(s, name, L)
    if a is not None:
        check_finite(name, a)
    return jnp.broadcast_to(jnp.asarray(s, jnp.result_type(float)), (L,))


def _additive_log_fitness(L: int, s, master: int):
    """-sum_j s_j [site j differs from master] over all genotypes, as a Kronecker sum."""
    s = _per_site(s, L, "s")
    out = jnp.zeros((1,), s.dtype)
    for j in range(L):
        mbit = (master >> (L - 1 - j)) & 1
        site = jnp.stack([-s[j], jnp.zeros((), s.dtype)]) if mbit else \
            jnp.stack([jnp.zeros((), s.dtype), -s[j]])
        out = (out[:, None] + site[None, :]).reshape(-1)
    return out


def multiplicative(L: int, s, master: int = 0):
    """Multiplicative (Mount Fuji) landscape: log f = -sum_j s_j [site j != master_j]  [2^L].

    s: selection coefficient per mismatched site (scalar or [L]; s > 0 makes ``master`` the
    single peak). Log-fitness is additive, so f = exp(-s d) for scalar s (d: Hamming distance).
    """
    L = _L(L)
    master = check_master(master, L)
    return jnp.exp(_additive_log_fitness(L, s, master))


def rough_mt_fuji(key, L: int, s, noise, master: int = 0):
    """Rough Mount Fuji: log f = -sum_j s_j [site j != master_j] + noise * eta(i)  [2^L].

    eta(i) ~ N(0, 1) independent over genotypes, drawn from ``key`` (Neidhart, Szendro & Krug
    2014, Genetics 198:699: an additive landscape plus a random house-of-cards part).
    """
    check_key(key)
    L = _L(L)
    master = check_master(master, L)
    _scalar(noise, "noise")
    base = _additive_log_fitness(L, s, master)
    eta = jax.random.normal(key, (1 << L,), base.dtype)
    return jnp.exp(base + jnp.asarray(noise, base.dtype) * eta)


class NKTables(NamedTuple):
    """Kauffman NK model: contribution tables [L, 2^(K+1)] and interacting sites [L, K+1]
    (row i starts with i itself; table index = bits of those sites, first site most
    significant)."""

    tables: jax.Array
    sites: jax.Array


def nk_tables(key, L: int, K: int, neighbors: str = "adjacent") -> NKTables:
    """Draw the NK model's tables from ``key``: phi_i ~ U(0, 1) for each of the 2^(K+1)
    states of site i and its K neighbours ("adjacent": the next K sites cyclically;
    "random": K distinct other sites drawn uniformly)."""
    check_key(key)
    L = _L(L)
    if not is_int(K) or not 0 <= K < L:
        raise QuasirlValueError(f"K must be an integer in [0, L - 1] = [0, {L - 1}], got {K!r}")
    K = int(K)
    k_tab, k_nb = jax.random.split(key)
    tables = jax.random.uniform(k_tab, (L, 1 << (K + 1)), jnp.result_type(float))
    if neighbors == "adjacent":
        sites = (np.arange(L)[:, None] + np.arange(K + 1)[None, :]) % L
        sites = jnp.asarray(sites, jnp.int32)
    elif neighbors == "random":
        keys = jax.random.split(k_nb, L)

        def pick(k, i):
            others = (i + 1 + jax.random.permutation(k, L - 1)) % L
            return jnp.concatenate([i[None], others[:K]])

        sites = jax.vmap(pick)(keys, jnp.arange(L, dtype=jnp.int32)).astype(jnp.int32)
    else:
        raise QuasirlValueError(f"neighbors must be 'adjacent' or 'random', got {neighbors!r}")
    return NKTables(tables, sites)


@partial(jax.jit, static_argnames=("L",))
def _nk_fitness(tables, sites, L: int):
    i = jnp.arange(1 << L, dtype=jnp.uint32)
    Kp1 = sites.shape[1]

    def site(acc, row):
        tab, nb = row
        shifts = (L - 1 - nb).astype(jnp.uint32)
        bits = (i[:, None] >> shifts[None, :]) & 1
        weights = (1 << jnp.arange(Kp1 - 1, -1, -1)).astype(jnp.uint32)
        idx = jnp.sum(bits * weights[None, :], axis=1)
        return acc + tab[idx], None

    acc, _ = jax.lax.scan(site, jnp.zeros((1 << L,), tables.dtype), (tables, sites))
    return acc / L


def nk(key, L: int, K: int, neighbors: str = "adjacent"):
    """Kauffman's NK landscape: f(g) = (1/L) sum_i phi_i(g_i, g_{n_i1}, ..., g_{n_iK})  [2^L].

    K = 0 is additive (a single peak); K = L - 1 is uncorrelated (house of cards). The tables
    are :func:`nk_tables` (same key, same landscape). Kauffman & Weinberger 1989, J. Theor.
    Biol. 141:211.
    """
    t = nk_tables(key, L, K, neighbors)
    return _nk_fitness(t.tables, t.sites, int(L))
