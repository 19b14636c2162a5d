"""Argument checks shared by the sequence modules (genotype-space vectors, lengths, rates,
groupings, models, tolerances, class fitnesses); each raises QuasirlValueError naming the
argument.

Checks inspect concrete values only: a traced argument has its dtype and shape checked (see
quasirl/_validate.py).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .._validate import (
    QuasirlValueError,
    check_finite,
    check_int,
    check_nonnegative,
    check_real,
    is_concrete,
)

# Largest L of the genotype space (vectors of 2^L entries).
MAX_L = 34


def check_numbers(name: str, x, *, bools: bool = False) -> np.ndarray | None:
    """Refuse non-numeric (strings, objects; booleans unless ``bools``) and complex input;
    return x as a numpy array when it is concrete (None for a traced value, whose dtype alone
    is checked)."""
    if not is_concrete(x):
        check_real(name, x)
        return None
    a = np.asarray(x)
    if a.dtype == bool and bools:
        return a
    if a.dtype == object or a.dtype == bool or not np.issubdtype(a.dtype, np.number):
        what = f"dtype {a.dtype}" if a.ndim else repr(x)
        raise QuasirlValueError(f"{name} must be a number or an array of numbers, got {what}")
    check_real(name, a)
    return a


def check_L(L, name: str = "L", limit: int = MAX_L) -> int:
    """A sequence length: an integer in [1, limit]."""
    return check_int(name, L, 1, limit)


def length_of(x, name: str) -> int:
    """L such that x has shape [2^L] (raises otherwise)."""
    shape = np.shape(x)
    if len(shape) != 1:
        raise QuasirlValueError(f"{name} must be a 1-D array of 2^L entries, got shape {shape}")
    n = shape[0]
    L = n.bit_length() - 1
    if n < 2 or (1 << L) != n:
        raise QuasirlValueError(
            f"{name} must have 2^L entries (L >= 1), got {n} (not a power of 2 >= 2)"
        )
    return L


def check_vector(x, name: str) -> int:
    """A finite real vector over the 2^L genotypes (any sign: Q is linear); return L."""
    L = length_of(x, name)
    a = check_numbers(name, x)
    if a is not None:
        check_finite(name, a)
    return L


def check_fitness(fitness, name: str = "fitness") -> int:
    """Validate a full-space fitness vector; return L."""
    L = length_of(fitness, name)
    a = check_numbers(name, fitness)
    if a is not None:
        check_finite(name, a)
        check_nonnegative(name, a)
        if not (a > 0).any():
            raise QuasirlValueError(f"{name} must have a positive entry, but all are 0")
    return L


def check_per_site(x, name: str, L: int):
    """A scalar or a per-site [L] array of numbers: its numpy form (concrete input), else None
    after a shape check of the traced value."""
    if not is_concrete(x):
        check_real(name, x)
        if jnp.ndim(x) > 1 or (jnp.ndim(x) == 1 and jnp.shape(x)[0] != L):
            raise QuasirlValueError(f"{name} must be a scalar or have shape ({L},)")
        return None
    a = check_numbers(name, x)
    if a.ndim > 1 or (a.ndim == 1 and a.shape[0] != L):
        raise QuasirlValueError(
            f"{name} must be a scalar or a per-site array of shape (L,) = ({L},), "
            f"got shape {a.shape}"
        )
    return a


def check_rates(rate, name: str, L: int):
    a = check_per_site(rate, name, L)
    if a is not None:
        af = np.atleast_1d(a)
        bad = ~np.isfinite(af) | (af < 0) | (af > 1)
        if bad.any():
            i = int(np.argwhere(bad)[0][0])
            where = f"{name}[{i}]" if a.ndim == 1 else name
            raise QuasirlValueError(f"{name} must be in [0, 1], but {where} = {af[i].item()!r}")


def site_rates(mu, nu, L: int, dtype):
    """(u, v): per-site rates 0 -> 1 and 1 -> 0 as [L] arrays (nu defaults to mu)."""
    check_rates(mu, "mu", L)
    if nu is not None:
        check_rates(nu, "nu", L)
    u = jnp.broadcast_to(jnp.asarray(mu, dtype), (L,))
    v = u if nu is None else jnp.broadcast_to(jnp.asarray(nu, dtype), (L,))
    return u, v


def check_master(master, L: int) -> int:
    """A genotype index in [0, 2^L)."""
    m = check_int("master", master)
    if not 0 <= m < (1 << L):
        raise QuasirlValueError(f"master must be in [0, 2^L) = [0, {1 << L}), got {m}")
    return m


def check_groups(groups, L: int) -> tuple[int, ...]:
    if groups is None:
        return None
    try:
        g = tuple(int(x) for x in groups)
    except (TypeError, ValueError) as exc:
        raise QuasirlValueError(
            f"groups must be a sequence of positive integers, got {groups!r}"
        ) from exc
    if any(x < 1 for x in g) or sum(g) != L:
        raise QuasirlValueError(
            f"groups must be positive block sizes summing to L = {L}, got {g} (sum {sum(g)})"
        )
    if max(g) > 12:
        raise QuasirlValueError(f"groups must have blocks of at most 12 sites, got {max(g)}")
    return g


def check_model(model, dt):
    if model not in ("discrete", "continuous"):
        raise QuasirlValueError(f"model must be 'discrete' or 'continuous', got {model!r}")
    if model == "continuous":
        a = check_numbers("dt", dt)
        if a is not None and (a.ndim or not (np.isfinite(a) and a > 0)):
            raise QuasirlValueError(f"dt must be a finite number > 0, got {dt!r}")


def default_tol(dtype) -> float:
    return 1e-12 if jnp.dtype(dtype).itemsize >= 8 else 1e-5


def check_tol(tol, dtype):
    """The power iteration's tolerance: a finite number > 0 (default :func:`default_tol`)."""
    if tol is None:
        return default_tol(dtype)
    a = check_numbers("tol", tol)
    if a is not None and (a.ndim or not (np.isfinite(a) and a > 0)):
        raise QuasirlValueError(f"tol must be a finite number > 0, got {tol!r}")
    return tol


def check_class_fitness(f, L=None) -> np.ndarray:
    """Class fitnesses f_of_distance [L+1]: finite, non-negative, one positive; as float64."""
    a = np.asarray(f)
    if a.dtype == object or a.dtype == bool or not np.issubdtype(a.dtype, np.number):
        raise QuasirlValueError(
            f"f_of_distance must be an array of numbers, got dtype {a.dtype}")
    check_real("f_of_distance", a)
    a = a.astype(np.float64)
    if a.ndim != 1 or a.size < 2:
        raise QuasirlValueError(
            f"f_of_distance must be a 1-D array of L + 1 >= 2 class fitnesses, got shape {a.shape}"
        )
    if L is not None and a.size != L + 1:
        raise QuasirlValueError(
            f"f_of_distance must have L + 1 = {L + 1} entries, got {a.size}"
        )
    check_finite("f_of_distance", a)
    check_nonnegative("f_of_distance", a)
    if not (a > 0).any():
        raise QuasirlValueError("f_of_distance must have a positive entry, but all are 0")
    return a
