"""The pull kernels of ``free_energy`` as JAX functions (``jax.ffi.ffi_call``), float32.

Operands, for S states, J entries per state and B temperatures: li = log init [S] (u_0 =
T li), the pull tables src (int32), log w and r [S, J] (padding: log w = -inf) and T [B].
The kernels run once per call on the whole batch of temperatures; under ``vmap`` over
anything else, once per batch entry (``vmap_method="sequential"``).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from . import TARGETS, _lib

# memory the forward-backward kernel may use for the stored u_t before it recomputes segments
# from checkpoints instead (bytes; QUASIRL_FB_MEMORY overrides)
FB_MEMORY = 2 << 30


def _require():
    _lib()  # RuntimeError with the reason where the kernels are not built


def _budget() -> np.int64:
    return np.int64(int(os.environ.get("QUASIRL_FB_MEMORY", FB_MEMORY)))


def _token(token):  # none (0): the kernel runs the forward itself
    return jnp.zeros((2,), jnp.int32) if token is None else token.astype(jnp.int32)


def _pull_operands(li, src, logw, rew, T):
    f32 = jnp.float32
    return (li.astype(f32), src.astype(jnp.int32), logw.astype(f32), rew.astype(f32),
            T.astype(f32))


def pull_forward(li, src, logw, rew, T, horizon: int):
    """F [B] from li = log init [S] (u_0 = T li), the pull tables src/logw/rew [S, J] and
    T [B] (float32): the log-space forward recursion over ``horizon`` steps, normalised each
    step."""
    _require()
    out = jax.ShapeDtypeStruct(T.shape, jnp.float32)
    call = jax.ffi.ffi_call(TARGETS["pull"][0], out, vmap_method="sequential")
    return call(*_pull_operands(li, src, logw, rew, T), horizon=np.int64(horizon))


def pull_forward_backward(li, src, logw, rew, T, horizon: int, token=None):
    """The forward recursion and its adjoint in one call (float32), for B temperatures:
    F [B]; N [S, J, B] = dF/dc for each pull entry (c = T log w + r; 0 on padding), the
    tempered occupancy; rho [S, B] = dF/du_0 (u_0 = T li); dT [B] = dF/dT at fixed init, w
    and r (the summed entropies + sum N log w + sum rho li). At T = 0 the weights at a
    maximum are shared equally (the subgradient JAX takes for max), and dT is the right
    derivative. ``token``: as for :func:`pull_adjoint`."""
    _require()
    S, J = src.shape
    B = T.shape[0]
    f32 = jnp.float32
    out = (jax.ShapeDtypeStruct((B,), f32), jax.ShapeDtypeStruct((S, J, B), f32),
           jax.ShapeDtypeStruct((S, B), f32), jax.ShapeDtypeStruct((B,), f32))
    call = jax.ffi.ffi_call(TARGETS["pull_fb"][0], out, vmap_method="sequential")
    return call(*_pull_operands(li, src, logw, rew, T), _token(token),
                horizon=np.int64(horizon), budget=_budget())


def pull_keep(li, src, logw, rew, T, horizon: int):
    """F [B] as :func:`pull_forward` computes it, and a token [2] (int32) under which the
    kernel keeps the forward pass (tables and trajectory) for :func:`pull_adjoint`: passed
    on as an operand, it orders the two calls and lets the adjoint (or
    :func:`pull_forward_backward`) skip the forward, taking it out, where the fingerprint of
    the adjoint's inputs equals that of the kept pass (else the pass is recomputed: a token
    only finds a pass, it never vouches for it). Kept passes are dropped, least recently
    used first, where they and the free buffers would exceed ``QUASIRL_NATIVE_POOL`` bytes
    (4 GiB; :func:`quasirl._native.memory`, :func:`quasirl._native.release`); an adjoint
    whose pass was dropped recomputes it, to the same bits."""
    _require()
    out = (jax.ShapeDtypeStruct(T.shape, jnp.float32), jax.ShapeDtypeStruct((2,), jnp.int32))
    call = jax.ffi.ffi_call(TARGETS["pull_keep"][0], out, vmap_method="sequential")
    return call(*_pull_operands(li, src, logw, rew, T), horizon=np.int64(horizon),
                budget=_budget())


def pull_adjoint(li, src, logw, rew, T, W, horizon: int, token=None):
    """The forward recursion and its adjoint contracted over temperatures (float32): for
    weights W [K, B], F [B]; G [K, S, J] = sum_b W[k, b] N[:, :, b] and R [K, S] =
    sum_b W[k, b] rho[:, b] (N and rho of :func:`pull_forward_backward`, never formed); dT [B]
    as there. What reverse mode needs: one float per entry and weight per step instead of one
    per entry and temperature. ``token`` (from :func:`pull_keep` on the same inputs) lets it
    reuse that forward pass."""
    _require()
    S, J = src.shape
    B, K = T.shape[0], W.shape[0]
    f32 = jnp.float32
    out = (jax.ShapeDtypeStruct((B,), f32), jax.ShapeDtypeStruct((K, S, J), f32),
           jax.ShapeDtypeStruct((K, S), f32), jax.ShapeDtypeStruct((B,), f32))
    call = jax.ffi.ffi_call(TARGETS["pull_adjoint"][0], out, vmap_method="sequential")
    return call(*_pull_operands(li, src, logw, rew, T), _token(token),
                W.astype(f32), horizon=np.int64(horizon), budget=_budget())
