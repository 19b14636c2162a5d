"""Input checks shared by every public entry point.

Checks run only on concrete values: inside a JAX transformation the arrays are tracers and the
checks are skipped (the structure was validated when the concrete object was built).
"""

from __future__ import annotations

import numbers

import jax
import numpy as np

# Rows of a transition matrix, an initial distribution or a policy must sum to 1 within this
# absolute tolerance (loose enough for float32 input, tight enough to catch real mistakes).
SUM_TOL = 1e-6


class QuasirlValueError(ValueError):
    """A public function was given a bad argument; the message says which, what and where."""


def is_concrete(*xs) -> bool:
    """True when none of ``xs`` is a JAX tracer (so its values can be inspected)."""
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(xs))


def _index(idx) -> str:
    return "[" + ", ".join(str(int(i)) for i in idx) + "]"


def check_finite(name: str, x) -> None:
    a = np.asarray(x)
    bad = ~np.isfinite(a)
    if bad.any():
        idx = np.argwhere(bad)[0]
        raise QuasirlValueError(
            f"{name} must be finite, but {name}{_index(idx)} = {a[tuple(idx)].item()!r}"
        )


def check_nonnegative(name: str, x) -> None:
    a = np.asarray(x)
    bad = a < 0
    if bad.any():
        idx = np.argwhere(bad)[0]
        raise QuasirlValueError(
            f"{name} must be non-negative, but {name}{_index(idx)} = {a[tuple(idx)].item()!r}"
        )


def check_distribution(name: str, x, axis: int = -1, what: str = "row") -> None:
    """Entries finite, non-negative, and summing to 1 along ``axis`` (within SUM_TOL)."""
    check_finite(name, x)
    check_nonnegative(name, x)
    a = np.asarray(x, dtype=np.float64)
    sums = a.sum(axis=axis)
    bad = np.abs(sums - 1.0) > SUM_TOL
    if np.ndim(sums) == 0:
        if bad:
            raise QuasirlValueError(
                f"{name} must sum to 1 (tolerance {SUM_TOL:g}), but it sums to {float(sums)!r}"
            )
        return
    if bad.any():
        idx = np.argwhere(bad)[0]
        raise QuasirlValueError(
            f"each {what} of {name} must sum to 1 (tolerance {SUM_TOL:g}), but "
            f"{name}{_index(idx)} sums to {float(sums[tuple(idx)])!r}"
        )


def check_shape(name: str, x, shape: tuple, dims: str) -> None:
    if tuple(np.shape(x)) != tuple(shape):
        raise QuasirlValueError(
            f"{name} must have shape {dims} = {tuple(shape)}, got {tuple(np.shape(x))}"
        )


def check_horizon(horizon, name: str = "horizon") -> int:
    if isinstance(horizon, bool) or not isinstance(horizon, numbers.Integral | np.integer):
        raise QuasirlValueError(f"{name} must be an integer, got {horizon!r}")
    if horizon < 0:
        raise QuasirlValueError(f"{name} must be >= 0, got {horizon}")
    return int(horizon)


def check_temperature(T, name: str = "T"):
    """T: a scalar or 1-D array of temperatures >= 0. Returns (array, batched?)."""
    import jax.numpy as jnp

    if not is_concrete(T):
        t = jnp.asarray(T)
        if t.ndim > 1:
            raise QuasirlValueError(f"{name} must be a scalar or a 1-D array, got shape {t.shape}")
        return t, t.ndim == 1
    a = np.asarray(T)
    if a.dtype == object or not np.issubdtype(a.dtype, np.number):
        raise QuasirlValueError(f"{name} must be a number or an array of numbers, got {T!r}")
    if a.ndim > 1:
        raise QuasirlValueError(f"{name} must be a scalar or a 1-D array, got shape {a.shape}")
    if a.ndim == 1 and a.size == 0:
        raise QuasirlValueError(f"{name} must not be empty")
    af = np.atleast_1d(a)
    bad = ~np.isfinite(af) | (af < 0)
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        where = f"{name}[{i}]" if a.ndim == 1 else name
        raise QuasirlValueError(f"{name} must be finite and >= 0, but {where} = {af[i].item()!r}")
    t = jnp.asarray(T)
    if not jnp.issubdtype(t.dtype, jnp.floating):
        t = t.astype(jnp.result_type(float))
    return t, a.ndim == 1
