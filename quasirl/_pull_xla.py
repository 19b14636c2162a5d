"""The pull recursion of free_energy in XLA: the reference path of the native kernels.

Pull tables list, for each state s', the J transitions entering it (src, log w, r; padding
has log w = -inf). The forward recursion carries u = T log n in value units, normalised each
step by its maximum (``quasirl.semiring``), for a 1-D batch of temperatures on a trailing axis;
:func:`sensitivities_reference` gives the quantities the native adjoint computes, by XLA
autodiff (the native primitives' second-order rules use it).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._mdp import MDP
from .semiring import safe_log, smax, smax_scan, smax_terms, value_weight


class Pull(NamedTuple):
    """Reverse lists: for each state s', the J transitions entering it."""

    src: jax.Array  # [S, J] source state
    logw: jax.Array  # [S, J] log(policy * prob), -inf on padding
    rew: jax.Array  # [S, J] reward, 0 on padding
    log_init: jax.Array  # [S]


def pull_tables(mdp: MDP) -> Pull:
    S, A, K = mdp.shape
    n = S * A * K
    logw = safe_log(mdp.policy[:, :, None] * mdp.prob).reshape(n)
    logw = jnp.concatenate([logw, jnp.full((1,), -jnp.inf, logw.dtype)])
    rew = jnp.concatenate([mdp.reward.reshape(n), jnp.zeros((1,), logw.dtype)])
    src = jnp.where(mdp.pred < n, mdp.pred // (A * K), 0)
    return Pull(src, logw[mdp.pred], rew[mdp.pred], safe_log(mdp.init))


# --------------------------------------------------------------------------------------------
# single-temperature kernels
# --------------------------------------------------------------------------------------------
# Pull tables with at most this many entries per state are reduced term by term (one fused
# loop, no [S, J, B] intermediate); wider (dense) tables go through stacked gathers, of all J
# columns at once where the [S, J, B] terms fit in _STACK_ELEMENTS numbers, else in blocks of
# columns on a leading axis, streamed by two scans (benchmarks/NOTES.md, sections 4 and 16).
_UNROLL_J = 16
_STACK_ELEMENTS = 1 << 24


def _pull_layout(tab: Pull, B: int = 1) -> Pull:
    """Tables as the pull step wants them: unchanged ([S, J]) for J <= _UNROLL_J, else cut
    into nb blocks of Jb columns on a leading axis ([nb, S, Jb]; padding has log w = -inf),
    with nb = 1 (one gather of every column) where S * J * B <= _STACK_ELEMENTS."""
    S, J = tab.src.shape
    if J <= _UNROLL_J:
        return tab
    width = max(_UNROLL_J, _STACK_ELEMENTS // max(S * B, 1))
    nb = -(-J // width)
    jb = -(-J // nb)  # the narrowest blocks that cover J in nb pieces
    pad = nb * jb - J

    def blocks(x, fill):
        x = jnp.pad(x, ((0, 0), (0, pad)), constant_values=fill)
        return jnp.transpose(x.reshape(S, nb, jb), (1, 0, 2))

    return Pull(blocks(tab.src, 0), blocks(tab.logw, -jnp.inf), blocks(tab.rew, 0.0),
                 tab.log_init)


def _terms(src, logw, rew, u, Tb):
    """The gathered terms u(src_j) + T log w_j + r_j, one [S, B] array per column j."""
    return [u[src[:, j]] + value_weight(logw[:, j, None], rew[:, j, None], Tb)
            for j in range(src.shape[1])]


def _pull_step(tab: Pull, u, Tb, maxplus: bool):
    """One pull step for a batch of temperatures on a trailing axis.

    u[S, B] (value units), Tb[1, B]. u'(s') = smax_T over the J entries j entering s' of
    u(src_j) + T log w_j + r_j; the temperature axis is innermost, so each gather reads B
    contiguous numbers and the tables src/logw/rew are read once per step for all B. Sparse
    tables (J <= _UNROLL_J) reduce their J terms in one fused loop; dense ones (blocked by
    :func:`_pull_layout`) stream over blocks of columns, so no [S, J, B] array is ever built.
    """
    if tab.src.ndim == 2:
        xs = _terms(tab.src, tab.logw, tab.rew, u, Tb)
        if maxplus:
            out = xs[0]
            for x in xs[1:]:
                out = jnp.maximum(out, x)
            return out
        return smax_terms(xs, Tb)

    def stacked(blk):  # [S, Jb, B]: one gather for the block's Jb columns
        src, logw, rew = blk
        return u[src] + value_weight(logw[..., None], rew[..., None], Tb[:, None, :])

    if tab.src.shape[0] == 1:  # every column in one block: no scan over blocks
        x = stacked((tab.src[0], tab.logw[0], tab.rew[0]))
        return jnp.max(x, axis=1) if maxplus else smax(x, Tb[:, None, :], axis=1)
    m, out = smax_scan(stacked, (tab.src, tab.logw, tab.rew), Tb, u.shape, u.dtype)
    return m if maxplus else out


def forward_values(tab: Pull, T, horizon: int, maxplus: bool = False):
    """F(T) = T log Z(T) for a 1-D array of temperatures, by the normalised forward recursion.

    The kernel is written for one temperature with the batch on a trailing axis (u is [S, B]):
    each temperature's arithmetic is exactly the single-temperature recursion.
    """
    u0 = value_weight(tab.log_init[:, None], jnp.zeros_like(tab.log_init)[:, None], T[None, :])
    return forward_from(tab, u0, T, horizon, maxplus)


def forward_from(tab: Pull, u0, T, horizon: int, maxplus: bool = False):
    """:func:`forward_values` from a given u0 [S, B] (value units)."""
    Tb = T[None, :]
    tab = _pull_layout(tab, Tb.shape[1])

    # Under reverse-mode autodiff keep only the carry of each step and recompute the step's
    # J gathered terms in the backward pass: memory per step is u itself ([S, B]) instead of
    # every intermediate ([S, B] times ~20), which also makes the backward about twice as fast
    # (benchmarks/NOTES.md). The forward pass and forward-mode autodiff are unaffected.
    @partial(jax.checkpoint, prevent_cse=False)
    def step(carry, _):
        u, acc = carry
        u = _pull_step(tab, u, Tb, maxplus)
        shift = jnp.max(u, axis=0)
        return (u - shift[None, :], acc + shift), None

    shift0 = jnp.max(u0, axis=0)
    (u, acc), _ = jax.lax.scan(step, (u0 - shift0[None, :], shift0), None, length=horizon)
    last = jnp.max(u, axis=0) if maxplus else smax(u, Tb, axis=0)
    return acc + last


def sensitivities_reference(li, src, logw, rew, T, horizon: int):
    """(F, N, rho, dT) of :func:`quasirl._native.pull.pull_forward_backward` by XLA autodiff."""
    tab = Pull(src, logw, rew, li)

    def lane(u, r, lw, t):  # F of one temperature from u_0 = u, at fixed u
        return forward_from(tab._replace(logw=lw, rew=r), u[:, None], t[None], horizon)[0]

    def one(t):
        u = value_weight(li, jnp.zeros_like(li), t)
        F, (rho, N, dT) = jax.value_and_grad(lane, argnums=(0, 1, 3))(u, rew, logw, t)
        return F, N, rho, dT + jnp.sum(rho * jnp.where(li > -jnp.inf, li, 0.0))

    F, N, rho, dT = jax.vmap(one)(T)
    return F, jnp.moveaxis(N, 0, 2), rho.T, dT
