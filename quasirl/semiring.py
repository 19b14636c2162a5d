"""The one place where the T -> 0 limit lives.

All kernels work in *value units*: a population n is carried as u = T * log n, so that
one replication step is a temperature-T soft maximum

    smax_T(x) = T * log sum_j exp(x_j / T)      (T > 0)
    smax_0(x) = max_j x_j                        (T = 0, the max-plus / tropical semiring)

and the free energy F(T) = T log Z(T) is a sum of O(reward) quantities for every T >= 0. At
T = 0 the formula below returns the maximum *exactly* (it adds 0 * log(...) to it); it is not a
small-T approximation. Impossible entries are -inf; their gradient is 0, never NaN (double
``where`` around every log and division).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def safe_log(w):
    """log w with log 0 = -inf and a zero (not NaN) gradient at w = 0."""
    pos = w > 0
    return jnp.where(pos, jnp.log(jnp.where(pos, w, 1.0)), -jnp.inf)


def _safe_T(T):
    return jnp.where(T > 0, T, jnp.ones_like(T))


def smax(x, T, axis=-1):
    """Temperature-T soft maximum along ``axis``; the exact max at T = 0.

    x may hold -inf (impossible entries). If every entry is -inf the result is -inf.
    """
    m = jnp.max(x, axis=axis, keepdims=True)
    finite = jnp.isfinite(m)
    m0 = jnp.where(finite, m, 0.0)
    Ts = _safe_T(T)
    # -inf entries contribute exp(-inf) = 0; keep them out of the division so that the
    # gradient with respect to T stays finite (double where).
    live = x > -jnp.inf
    e = jnp.where(live, jnp.exp((jnp.where(live, x, m0) - m0) / Ts), 0.0)
    s = jnp.sum(e, axis=axis, keepdims=True)
    # s >= 1 wherever m is finite (the maximiser contributes exp(0)); guard the log anyway.
    s = jnp.where(finite, s, 1.0)
    out = jnp.where(finite, m0 + T * jnp.log(s), -jnp.inf)
    return jnp.squeeze(out, axis=axis)


def smax_terms(xs, T):
    """Elementwise soft maximum over a short list of same-shape arrays; the exact max at T = 0.

    ``smax_terms([x_1, ..., x_J], T)`` equals ``smax(stack(xs), T, axis=0)`` without building
    the stacked array: XLA fuses the J terms into one loop, which is what makes the pull kernels
    fast for sparse MDPs (J = in-degree). Same -inf and gradient conventions as :func:`smax`.
    """
    m = xs[0]
    for x in xs[1:]:
        m = jnp.maximum(m, x)
    finite = m > -jnp.inf
    m0 = jnp.where(finite, m, 0.0)
    inv = 1.0 / _safe_T(T)
    s = None
    for x in xs:
        live = x > -jnp.inf
        e = jnp.where(live, jnp.exp((jnp.where(live, x, m0) - m0) * inv), 0.0)
        s = e if s is None else s + e
    s = jnp.where(finite, s, 1.0)
    return jnp.where(finite, m0 + T * jnp.log(s), -jnp.inf)


def smax_scan(terms, blocks, T, shape, dtype):
    """Soft maximum over many terms produced block by block; the exact max at T = 0.

    ``terms(block)`` returns the terms of one slice of ``blocks`` (a pytree of arrays with a
    leading block axis) as one array whose axis 1 runs over the block's terms (so its shape is
    ``shape`` with that axis inserted). Two passes of ``lax.scan`` over the blocks, the max and
    then the shifted sum of exponentials, so memory stays at one block however many terms
    there are (dense MDPs: S * A terms per state). Each block is one gather and one
    reduction, which keeps the traced program (and its derivative) small: compile time does
    not grow with the block width. Same conventions as :func:`smax`.
    """

    def top(m, blk):
        return jnp.maximum(m, jnp.max(terms(blk), axis=1)), None

    m, _ = jax.lax.scan(top, jnp.full(shape, -jnp.inf, dtype), blocks)
    finite = m > -jnp.inf
    m0 = jnp.where(finite, m, 0.0)
    inv = jnp.expand_dims(1.0 / _safe_T(T), 1)
    m1 = jnp.expand_dims(m0, 1)

    def total(s, blk):
        x = terms(blk)
        live = x > -jnp.inf
        e = jnp.where(live, jnp.exp((jnp.where(live, x, m1) - m1) * inv), 0.0)
        return s + jnp.sum(e, axis=1), None

    s, _ = jax.lax.scan(total, jnp.zeros(shape, dtype), blocks)
    s = jnp.where(finite, s, 1.0)
    return m, jnp.where(finite, m0 + T * jnp.log(s), -jnp.inf)


def value_weight(logw, r, T):
    """The value-unit weight of a transition: T*log w + r, and -inf where w = 0 (any T)."""
    ok = logw > -jnp.inf
    return jnp.where(ok, T * jnp.where(ok, logw, 0.0) + jnp.where(ok, r, 0.0), -jnp.inf)


def tie_tolerance(scale, dtype):
    """Absolute tolerance for deciding that two max-plus values are tied.

    Path returns summed in different orders differ by a few ulps of the largest partial sum;
    the tolerance is 1000 ulps of ``scale`` (plus one), so genuine gaps larger than that count.
    """
    eps = jnp.finfo(dtype).eps
    return 1000.0 * eps * (1.0 + scale)


def smax_weighted(x, lw, axis=-1, tol=None):
    """Max-plus with multiplicities, the T -> 0 limit *including the prefactor*.

    Entry j stands for W_j * exp(x_j / T) as T -> 0. The sum over j is W * exp(m / T) with
    m = max_j x_j and W = sum of W_j over the j that attain the max (within ``tol``).
    Returns (m, log W); lw = log W_j may hold -inf.
    """
    m = jnp.max(x, axis=axis, keepdims=True)
    finite = jnp.isfinite(m)
    m0 = jnp.where(finite, m, 0.0)
    if tol is None:
        tol = tie_tolerance(jnp.abs(m0), x.dtype)
    tied = x >= m0 - tol
    lw_t = jnp.where(tied, lw, -jnp.inf)
    mw = jnp.max(lw_t, axis=axis, keepdims=True)
    okw = jnp.isfinite(mw)
    mw0 = jnp.where(okw, mw, 0.0)
    sw = jnp.sum(jnp.exp(lw_t - mw0), axis=axis, keepdims=True)
    sw = jnp.where(okw, sw, 1.0)
    logW = jnp.where(finite & okw, mw0 + jnp.log(sw), -jnp.inf)
    m = jnp.where(finite, m0, -jnp.inf)
    return jnp.squeeze(m, axis=axis), jnp.squeeze(logW, axis=axis)
