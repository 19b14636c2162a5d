"""Input checks shared by every public entry point.

Checks run only on concrete values: inside a JAX transformation the arrays are tracers and the
checks are skipped (the structure was validated when the concrete object was built).
"""

from __future__ import annotations

import numbers
import os

import jax
import jax.numpy as jnp
import numpy as np

# Rows of a transition matrix, an initial distribution or a policy must sum to 1 within this
# absolute tolerance (loose enough for float32 input, tight enough to catch real mistakes).
SUM_TOL = 1e-6


class QuasirlValueError(ValueError):
    """A public function was given a bad argument; the message says which, what and where."""


def is_concrete(*xs) -> bool:
    """True when none of ``xs`` is a JAX tracer (so its values can be inspected)."""
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(xs))


def error_if(*checks) -> None:
    """Raise QuasirlValueError at run time for the first ``(bad, message)`` pair whose traced
    boolean array ``bad`` holds anywhere.

    The checks that still run under ``jit``/``vmap``/``grad`` (equinox's ``error_if`` idea):
    one host callback that sees the concrete values when the computation runs (measured cost
    ~0.1-0.2 ms per call on a 2-core EPYC, docs/reliability.md). ``message`` is a string, or a
    function of the index of the first bad entry. Under ``jit`` the error reaches the caller
    as JAX's runtime error, with this message in its text. ``QUASIRL_TRACED_CHECKS=0`` in the
    environment turns these checks off (checks on concrete input always run).
    """
    if os.environ.get("QUASIRL_TRACED_CHECKS", "1") == "0":
        return
    messages = [m for _, m in checks]

    def callback(*bads):
        for b, message in zip(bads, messages, strict=True):
            b = np.asarray(b)
            if b.any():
                first = tuple(int(i) for i in np.argwhere(b)[0]) if b.ndim else ()
                raise QuasirlValueError(message(first) if callable(message) else message)

    jax.debug.callback(callback, *[b for b, _ in checks])


def _index(idx) -> str:
    return "[" + ", ".join(str(int(i)) for i in idx) + "]"


def check_real(name: str, x) -> None:
    """Refuse complex input: casting it to float would drop the imaginary part."""
    if np.iscomplexobj(x):
        raise QuasirlValueError(
            f"{name} must be real, got a complex array (dtype {np.asarray(x).dtype}); pass "
            f"{name}.real explicitly if the imaginary part is meant to be dropped"
        )


def check_size(name: str, n, what: str) -> None:
    """A dimension that must be at least 1 (S, A, a horizon of states, ...)."""
    if int(n) < 1:
        raise QuasirlValueError(f"{name} must have at least one {what}, got {int(n)}")


def available_memory() -> int | None:
    """Bytes of memory this process may use: the machine's physical memory, or a container's
    cgroup limit where that is lower (None where the OS says neither)."""
    sizes = []
    try:
        sizes.append(int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE")))
    except (ValueError, OSError, AttributeError):
        pass
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(limit) as fh:
                text = fh.read().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < 1 << 60:
            sizes.append(int(text))
    return min(sizes) if sizes else None


def check_memory(name: str, need: float, what: str, fraction: float = 0.5) -> None:
    """Refuse up front a computation whose estimated memory ``need`` (bytes) exceeds
    ``fraction`` of the machine's memory, with the estimate in the message: a clear error
    instead of a MemoryError (or the OOM killer) minutes later."""
    have = available_memory()
    if have is not None and need > fraction * have:
        raise QuasirlValueError(
            f"{name}: {what} needs about {need / 2**30:.3g} GiB, more than "
            f"{fraction:.0%} of this machine's {have / 2**30:.3g} GiB; choose a smaller {name}"
        )


def check_finite(name: str, x) -> None:
    check_real(name, x)
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


def float_dtype(*xs):
    """The float dtype of a computation: the common type of the floating inputs (canonical:
    float32 unless x64 is on), the default float when none is floating. None, integer, bool
    and non-numeric inputs are skipped (their own checks name them) instead of failing inside
    ``jnp.asarray``."""
    dts = []
    for x in xs:
        if x is None:
            continue
        dt = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
        if np.issubdtype(dt, np.floating):
            dts.append(jax.dtypes.canonicalize_dtype(dt))
    return jnp.result_type(*dts) if dts else jnp.result_type(float)


def is_int(value) -> bool:
    """True for an integer, Python or numpy, and never for a bool (the one integer test;
    :func:`check_int` raises where this is False)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral | np.integer)


def check_int(name: str, value, minimum: int | None = None, maximum: int | None = None) -> int:
    """The one integer check: ``value`` must be an integer (Python or numpy, never a bool)
    within [minimum, maximum] where those are given. Returns it as a Python int.

    Messages: "{name} must be an integer, got {value!r}", then "{name} must be >= {minimum}",
    "{name} must be <= {maximum}" or "{name} must be between {minimum} and {maximum}", each
    with ", got {value}".
    """
    if not is_int(value):
        raise QuasirlValueError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    low = minimum is not None and v < minimum
    high = maximum is not None and v > maximum
    if low or high:
        if minimum is not None and maximum is not None:
            bound = f"between {minimum} and {maximum}"
        elif minimum is not None:
            bound = f">= {minimum}"
        else:
            bound = f"<= {maximum}"
        raise QuasirlValueError(f"{name} must be {bound}, got {v}")
    return v


def check_key(key, name: str = "key") -> None:
    """One JAX random key: a typed key (jax.random.key) or a raw uint32 key
    (jax.random.PRNGKey); a traced key is not inspected."""
    if isinstance(key, jax.core.Tracer):
        return
    ok = isinstance(key, jax.Array) and (
        (jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.ndim == 0)
        or (key.dtype == jnp.uint32 and key.shape == (2,)))
    if not ok:
        raise QuasirlValueError(
            f"{name} must be one JAX random key (jax.random.key(seed)), got {key!r}")


def check_horizon(horizon, name: str = "horizon") -> int:
    return check_int(name, horizon, minimum=0)


def check_temperature(T, name: str = "T", limit: tuple[float, str] | None = None):
    """T: a scalar or 1-D array of temperatures >= 0. Returns (array, batched?).

    A traced T is checked when the computation runs (:func:`error_if`), together with
    ``limit`` = (largest valid T, why) where the caller gives one.
    """
    if not is_concrete(T):
        t = jnp.asarray(T)
        if t.ndim > 1:
            raise QuasirlValueError(f"{name} must be a scalar or a 1-D array, got shape {t.shape}")
        check_real(name, t)
        if not jnp.issubdtype(t.dtype, jnp.floating):
            t = t.astype(jnp.result_type(float))
        # traced: the values are checked when the computation runs
        values = jnp.atleast_1d(t)
        checks = [(~jnp.isfinite(values) | (values < 0),
                   lambda i: f"{name} must be finite and >= 0, but a traced {name}"
                             f"{'[' + str(i[-1]) + ']' if t.ndim else ''} is not (checked "
                             f"under jit at run time)")]
        if limit is not None:
            checks.append((values > limit[0], limit[1]))
        error_if(*checks)
        return t, t.ndim == 1
    check_real(name, T)
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
