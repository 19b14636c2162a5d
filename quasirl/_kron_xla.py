"""Eigen's mutation operator Q = (x)_j M_j applied by XLA: grouped Kronecker blocks.

The reference path of Q (and the native kernel's tangent, :mod:`quasirl._native.kron`): the
sites are cut into consecutive groups, each group's 2^g x 2^g Kronecker block is formed, and
the blocks are applied as small matrix products over a [2^g, ...] view of the vector, so no
2^L x 2^L matrix ever exists.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST  # no TF32 shortcuts on GPUs: the blocks are tiny anyway


def site_matrices(u, v):
    """[L, 2, 2] per-site column-stochastic matrices M[new, old]."""
    return jnp.stack([jnp.stack([1 - u, v], -1), jnp.stack([u, 1 - v], -1)], -2)


def blocks(u, v, groups: tuple[int, ...]):
    """The Kronecker blocks of consecutive sites, in site order (a list of [2^g, 2^g])."""
    M = site_matrices(u, v)
    out, start = [], 0
    for g in groups:
        B = M[start]
        for j in range(start + 1, start + g):
            B = jnp.kron(B, M[j])
        out.append(B)
        start += g
    return out


def apply_blocks(y, bl, scale=None):
    """Q y for the blocks ``bl`` (site order); ``scale`` (a scalar) is folded into the last
    block applied, so that a normalisation costs nothing."""
    n = len(bl)
    for i in range(n - 1, -1, -1):
        B = bl[i]
        if i == 0 and scale is not None:
            B = B * scale
        X = y.reshape(-1, B.shape[0])
        y = jax.lax.dot_general(B, X, (((1,), (1,)), ((), ())), precision=_HIGHEST).reshape(-1)
    return y


def reference(x, w, u, v, scale, weighted: bool, normalize: bool, groups):
    """The XLA path: (c Q (w * x), sum(w * x)) with grouped Kronecker blocks."""
    y = w * x if weighted else x
    s = jnp.sum(y)
    c = scale / s if normalize else scale
    return apply_blocks(y, blocks(u, v, groups), c), s
