"""Fair numpy references: the same algorithms as the quasirl kernels, vectorised, same dtype.

"Fair" means what a careful numpy user would write for the same recursion: the pull tables are
built once, temperatures sit on the trailing axis (contiguous rows for the gathers), every step
is whole-array numpy (fancy-index gather, max, exp, sum, log) with in-place updates where numpy
allows, and the dtype matches the quasirl run (float32 against float32). The per-step Python
loop costs microseconds against steps of milliseconds. The tables are built here from the MDP's
successor lists, independently of quasirl's reverse lists, so the comparison is also a check.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

_CHUNK = 2**25  # numbers per gathered block (128 MiB in float32)


class Tables(NamedTuple):
    src: np.ndarray  # [S, J] source state of each transition entering s' (0 on padding)
    logw: np.ndarray  # [S, J] log(policy * prob), -inf on padding
    rew: np.ndarray  # [S, J] reward, 0 on padding
    flat: np.ndarray  # [S, J] flat (s, a, k) index of the entry, -1 on padding
    log_init: np.ndarray  # [S]


def pull_tables(mdp, dtype=np.float32) -> Tables:
    """Reverse (pull) lists of an MDP in numpy: for each state, the transitions entering it."""
    S, A, K = mdp.shape
    nxt = np.asarray(mdp.next).reshape(-1)
    w = (np.asarray(mdp.policy, np.float64)[:, :, None] * np.asarray(mdp.prob, np.float64))
    w = w.reshape(-1)
    rew = np.asarray(mdp.reward, np.float64).reshape(-1)
    flat = np.flatnonzero(w > 0)
    dest = nxt[flat]
    order = np.argsort(dest, kind="stable")
    flat, dest = flat[order], dest[order]
    counts = np.bincount(dest, minlength=S)
    J = max(int(counts.max()), 1)
    slot = np.arange(flat.size) - np.repeat(np.cumsum(counts) - counts, counts)
    F = np.full((S, J), -1, np.int64)
    F[dest, slot] = flat
    live = F >= 0
    src = np.where(live, F // (A * K), 0).astype(np.int32)
    with np.errstate(divide="ignore"):
        logw = np.where(live, np.log(np.where(live, w[F], 1.0)), -np.inf).astype(dtype)
        log_init = np.log(np.asarray(mdp.init, np.float64)).astype(dtype)
    return Tables(src, logw, np.where(live, rew[F], 0.0).astype(dtype), F, log_init)


def _weights(tab: Tables, T):
    """c[S, J, B] = T log w + r (-inf on padding), T on the trailing axis."""
    live = np.isfinite(tab.logw)[..., None]
    with np.errstate(invalid="ignore"):
        c = T * np.where(live, tab.logw[..., None], 0) + tab.rew[..., None]
    return np.where(live, c, -np.inf).astype(tab.logw.dtype)


def _smax_rows(x, T, axis):
    """T log sum exp(x / T) along ``axis`` (max at T = 0), -inf safe; T broadcasts on the end."""
    m = x.max(axis=axis)
    fin = np.isfinite(m)
    m0 = np.where(fin, m, 0).astype(x.dtype)
    inv = (1 / np.where(T > 0, T, 1)).astype(x.dtype)
    e = np.expand_dims(m0, axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.exp((x - e) * inv)
        s = y.sum(axis=axis)
        return np.where(fin, m0 + T * np.log(s), -np.inf).astype(x.dtype)


def forward(tab: Tables, T, horizon: int, keep: bool = False):
    """F(T) for 1-D T by the normalised log-space pull recursion (the quasirl algorithm).

    With ``keep=True`` also returns the normalised messages u_t [H+1, S, B] (for the backward
    pass of :func:`forward_backward`).
    """
    dt = tab.logw.dtype
    T = np.asarray(T, dt)[None, :]
    c = _weights(tab, T)  # [S, J, B], built once per call
    inv = (1 / np.where(T > 0, T, 1)).astype(dt)
    with np.errstate(invalid="ignore"):
        u = np.where(np.isfinite(tab.log_init)[:, None],
                     T * np.where(np.isfinite(tab.log_init), tab.log_init, 0)[:, None], -np.inf)
    u = u.astype(dt)
    shift = u.max(axis=0)
    u -= shift
    acc = shift.astype(np.float64)
    kept = [u] if keep else None
    S, J = tab.src.shape
    rows = max(1, _CHUNK // max(J * T.shape[1], 1))  # dense tables: a block of rows at a time
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(horizon):
            out = np.empty_like(u)
            for lo in range(0, S, rows):
                hi = min(lo + rows, S)
                x = u[tab.src[lo:hi]]  # [rows, J, B] gather of contiguous rows
                x += c[lo:hi]
                m = x.max(axis=1)
                fin = np.isfinite(m)
                m0 = np.where(fin, m, 0).astype(dt)
                x -= m0[:, None, :]
                x *= inv
                np.exp(x, out=x)
                s = x.sum(axis=1)
                np.log(s, out=s)
                s *= T
                s += m0
                out[lo:hi] = np.where(fin, s, -np.inf)
            u = out
            shift = u.max(axis=0)
            u -= shift
            acc += shift
            if keep:
                kept.append(u)
    F = (acc + _smax_rows(u, T[0], axis=0)).astype(dt)
    return (F, np.stack(kept)) if keep else F


def forward_backward(tab: Tables, T, horizon: int, shape):
    """(F(T) [B], sum over T of dF/dR [S, A, K]): the forward pass keeps its messages, the
    backward pass carries g_t(s) = dF/du_t(s) through the softmax weights of each step,

        pi_tj(s') = exp((u_t(src_j) + c_j - u_{t+1}(s')) / T),   g_t(src_j) += g_{t+1}(s') pi_tj,
        dF/dr_j += g_{t+1}(s') pi_tj,

    the classic forward-backward algorithm (what reverse-mode autodiff of the forward does).
    """
    dt = tab.logw.dtype
    F, us = forward(tab, T, horizon, keep=True)
    Tr = np.asarray(T, dt)[None, :]
    inv = (1 / Tr).astype(dt)
    c = _weights(tab, Tr)
    S, J = tab.src.shape
    order = np.argsort(tab.src.reshape(-1), kind="stable")
    srcs = tab.src.reshape(-1)[order]
    starts = np.flatnonzero(np.r_[True, srcs[1:] != srcs[:-1]])
    owners = srcs[starts]
    with np.errstate(divide="ignore", invalid="ignore"):
        uH = us[-1]
        g = np.exp((uH - _smax_rows(uH, Tr[0], axis=0)[None, :]) * inv)  # dF/du_H
        grad = np.zeros((S, J), np.float64)
        for t in range(horizon - 1, -1, -1):
            x = us[t][tab.src] + c  # [S, J, B]
            un = _smax_rows(x, Tr[0], axis=1)  # u_{t+1} before its shift
            pi = np.exp((x - un[:, None, :]) * inv)
            pi = np.where(np.isfinite(x), pi, 0)
            contrib = g[:, None, :] * pi  # [S, J, B]
            grad += contrib.sum(axis=2)
            flat = contrib.reshape(S * J, -1)[order]
            g = np.zeros_like(g)
            g[owners] = np.add.reduceat(flat, starts, axis=0)
    out = np.zeros(int(np.prod(shape)), np.float64)
    live = tab.flat >= 0
    np.add.at(out, tab.flat[live], grad[live])
    return F, out.reshape(shape).astype(dt)


def maxplus(tab: Tables, horizon: int):
    """F(0): the max-plus recursion u'(s') = max_j (u(src_j) + r_j) over live entries."""
    live = np.isfinite(tab.logw)
    c = np.where(live, tab.rew, -np.inf).astype(tab.rew.dtype)
    u = np.where(np.isfinite(tab.log_init), 0, -np.inf).astype(tab.rew.dtype)
    acc = 0.0
    for _ in range(horizon):
        u = (u[tab.src] + c).max(axis=1)
        shift = u.max()
        u = u - shift
        acc += float(shift)
    return acc + float(u.max())
