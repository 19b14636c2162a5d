"""The number of generations as a run-time value: dynamics run in compiled chunks.

A ``lax.scan`` of G steps is compiled for each G (0.3 s at L = 16, against 27 ms to run 100
generations). Here one program runs n <= ``size`` steps, n, the first generation's index and
the record period being run-time values, so a kernel compiles once per shape (L, dtype,
population size ...) and any number of generations reuses it. The chunks' per-step outputs
are put together on the host (numpy, no compilation) or, under a JAX transformation, with
static slices. Chunk boundaries also fall on the generations whose full state is saved.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .._validate import QuasirlValueError, check_int, check_memory, is_concrete, is_int


def chunk_size(state_elements: int) -> int:
    """Steps per chunk: about 2^22 state elements per chunk, 64 to 4096 steps (the per-step
    outputs are [size] buffers, so the size only bounds dispatch overhead)."""
    return int(min(4096, max(64, (1 << 22) // max(int(state_elements), 1))))


def loop(one: Callable, record: Callable | None, x, n, t0, every, size: int,
         fixed: bool = False):
    """Inside a compiled program: x_{t+1}, y_t = one(x_t, t) for t = t0 .. t0 + n - 1.

    n (<= size), t0 and every are traced integers. Returns (x, ys, recs): ys the pytree of
    per-step outputs in [size]-row buffers (row i for step t0 + i; rows >= n are zero), recs
    [size, ...] with record(x_{t+1}) in row i where (t + 1) % every == 0 (None without record).
    ``fixed``: exactly ``size`` steps as a ``lax.scan`` (n ignored), which reverse-mode
    autodiff can differentiate (a loop with a run-time trip count it cannot).
    """
    y_shape = jax.eval_shape(lambda z: one(z, t0)[1], x)
    ys0 = jax.tree_util.tree_map(lambda s: jnp.zeros((size, *s.shape), s.dtype), y_shape)
    recs0 = None
    if record is not None:
        r = jax.eval_shape(record, x)
        recs0 = jnp.zeros((size, *r.shape), r.dtype)

    def body(i, carry):
        x, ys, recs = carry
        x, y = one(x, t0 + i)
        ys = jax.tree_util.tree_map(lambda b, v: b.at[i].set(v), ys, y)
        if recs is not None:
            hit = (t0 + i + 1) % jnp.maximum(every, 1) == 0
            recs = jax.lax.cond(hit, lambda r: r.at[i].set(record(x)), lambda r: r, recs)
        return x, ys, recs

    if fixed:
        out, _ = jax.lax.scan(lambda c, i: (body(i, c), None), (x, ys0, recs0),
                              jnp.arange(size))
        return out
    return jax.lax.fori_loop(0, n, body, (x, ys0, recs0))


def check_save_at(save_at, generations: int, state_bytes: int) -> tuple[int, ...]:
    """``save_at``: generations (0..G) whose full state is returned, in the order given."""
    if save_at is None:
        return ()
    if is_int(save_at):
        save_at = (save_at,)
    try:
        items = list(save_at)
    except TypeError:
        raise QuasirlValueError(
            f"save_at must be a sequence of generations, got {save_at!r}") from None
    out = tuple(check_int(f"save_at[{i}]", g, minimum=0, maximum=generations)
                for i, g in enumerate(items))
    check_memory("save_at", len(out) * float(state_bytes), f"saving {len(out)} full states")
    return out


def run(chunk: Callable, x0, generations: int, every: int | None, save_at: Sequence[int],
        size: int, traced: bool = False):
    """Drive ``chunk(x, n, t0, every, size, fixed) -> (x, ys, recs, start, end)`` over
    ``generations`` steps: chunks of ``size`` steps with run-time n; where the inputs are
    ``traced`` (under jit, grad, vmap: the caller compiles anyway), chunks of exactly n steps
    (``fixed``, static), so that reverse-mode autodiff works.

    Returns (x_G, ys [G] per leaf, recs at t = every, 2 every, ... <= G (or None), start (the
    chunk's summary of x_0), end (of x_G), saved states in the order of ``save_at``); ys and
    recs are numpy arrays where the inputs are concrete (joining them compiles nothing), JAX
    arrays under a transformation. :func:`cat` puts the pieces together."""
    marks = set(save_at)
    saved = {0: x0} if 0 in marks else {}
    pieces = []
    x, t, start, end = x0, 0, None, None
    while True:  # one call even for G = 0: it gives the summaries of x_0
        stop = min([generations, t + (generations if traced else size)]
                   + [m for m in marks if m > t])
        n = stop - t
        x, ys, recs, s, end = chunk(x, n, t, 0 if every is None else every,
                                    n if traced else size, traced)
        start = s if start is None else start
        pieces.append((t, stop - t, ys, recs))
        t = stop
        if t in marks:
            saved[t] = x
        if t >= generations:
            break
    host = is_concrete([p[2] for p in pieces])
    xp = np if host else jnp
    ys = jax.tree_util.tree_map(
        lambda *bufs: xp.concatenate([xp.asarray(b)[:p[1]] for b, p in zip(bufs, pieces,
                                                                           strict=True)]),
        *[p[2] for p in pieces])
    recs = None
    if every is not None and pieces[0][3] is not None:
        recs = xp.concatenate([
            xp.asarray(r)[np.flatnonzero((t0 + np.arange(n) + 1) % every == 0)]
            for t0, n, _, r in pieces])
    return x, ys, recs, start, end, [saved[m] for m in save_at]


def cat(*parts):
    """Concatenate host (numpy) or traced parts along axis 0 into one JAX array; scalars count
    as one row."""
    if is_concrete(parts):
        return jnp.asarray(np.concatenate([np.atleast_1d(np.asarray(p)) for p in parts]))
    return jnp.concatenate([jnp.atleast_1d(p) for p in parts])
