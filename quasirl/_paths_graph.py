"""The time-unrolled graph of an MDP: merged edge tables, reachability, counting, enumeration.

A *path* of horizon H is p = (s0, a0, s1, ..., a_{H-1}, s_H) with positive weight
w_p = init(s0) * prod_t policy(a_t|s_t) P(s_{t+1}|s_t, a_t) (docs/theory.md). The successor lists of
an MDP may list the same successor twice for one action (a gridworld with slip that bumps into a
wall both ways); such outcomes are merged into one *edge* (s, a, s') with their probabilities
summed, so that a path is a sequence of states and actions, as in the essay. Two outcomes with the
same (s, a, s') but different rewards stay separate edges (they are different paths with the same
states). Outcomes of zero weight (policy or probability 0) are dropped.

Everything here is structural combinatorics on concrete arrays, done once per call in numpy
float64 (exact counts, no tracing): the edge table, the states reachable within the horizon (all
path analyses run on that restriction, so a 10^6-state gridworld with a point start costs what its
reachable corner costs), the number of paths by dynamic programming, and explicit enumeration
(the unrolled graph as a networkx object: ``_paths_unrolled``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from . import _validate as V
from ._mdp import MDP

DEFAULT_LIMIT = 1_000_000


class Edges(NamedTuple):
    """Merged positive-weight edges of a (possibly restricted) MDP, sorted by (src, act, out).

    States are numbered 0..n-1; ``states[i]`` is the original index of state i.
    """

    states: np.ndarray  # [n] original state index
    src: np.ndarray  # [E] int64
    act: np.ndarray  # [E] action
    out: np.ndarray  # [E] first successor-list slot k of the merged outcomes
    dst: np.ndarray  # [E]
    logw: np.ndarray  # [E] float64 log(policy * P), finite
    rew: np.ndarray  # [E] float64
    log_init: np.ndarray  # [n] float64, -inf off the support
    indptr: np.ndarray  # [n+1] CSR by src

    @property
    def n(self) -> int:
        return self.log_init.shape[0]

    @property
    def E(self) -> int:
        return self.src.shape[0]


def check_mdp(mdp) -> MDP:
    if not isinstance(mdp, MDP):
        raise V.QuasirlValueError(f"mdp must be a quasirl.MDP, got {type(mdp).__name__}")
    if not V.is_concrete(mdp):
        raise V.QuasirlValueError(
            "quasirl.paths needs an MDP with concrete arrays (the path structure is computed "
            "in numpy); call it outside jit/vmap/grad"
        )
    return mdp


def _csr(src, n):
    return np.concatenate([[0], np.cumsum(np.bincount(src, minlength=n))]).astype(np.int64)


def edge_table(mdp: MDP) -> Edges:
    """Merge duplicate outcomes and drop zero-weight ones (see the module docstring)."""
    S, A, K = mdp.shape
    nxt = np.asarray(mdp.next, dtype=np.int64)
    prob = np.asarray(mdp.prob, dtype=np.float64)
    rew = np.asarray(mdp.reward, dtype=np.float64)
    pol = np.asarray(mdp.policy, dtype=np.float64)
    live = (prob > 0) & (pol[:, :, None] > 0)
    # outcome k merges into the first live slot j < k with the same successor and reward
    psum = np.where(live, prob, 0.0)
    for kk in range(1, K):
        for j in range(kk):
            same = live[:, :, j] & live[:, :, kk] & (nxt[:, :, j] == nxt[:, :, kk]) & (
                rew[:, :, j] == rew[:, :, kk])
            if same.any():
                psum[:, :, j] += np.where(same, psum[:, :, kk], 0.0)
                psum[:, :, kk] = np.where(same, 0.0, psum[:, :, kk])
                live[:, :, kk] &= ~same
    s, a, k = np.nonzero(live)  # C order: sorted by (s, a, k)
    d, r = nxt[s, a, k], rew[s, a, k]
    logw = np.log(pol[s, a]) + np.log(psum[s, a, k])
    init = np.asarray(mdp.init, dtype=np.float64)
    with np.errstate(divide="ignore"):
        log_init = np.where(init > 0, np.log(init), -np.inf)
    return Edges(np.arange(S), s, a, k, d, logw, r, log_init, _csr(s, S))


def gather_ranges(indptr, rows):
    """Indices of the CSR entries of ``rows`` (concatenated), and the row of each."""
    starts = indptr[rows]
    counts = indptr[rows + 1] - starts
    total = int(counts.sum())
    owner = np.repeat(np.arange(rows.size), counts)
    offset = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    return starts[owner] + offset, owner


def restrict(edges: Edges, horizon: int) -> Edges:
    """The sub-problem of states reachable from init within ``horizon`` steps (breadth first).

    Edges are kept only out of states first reached before step ``horizon`` (edges out of a
    state first reached at the last step are never used by a path).
    """
    n = edges.n
    dist = np.full(n, -1, dtype=np.int64)
    frontier = np.flatnonzero(edges.log_init > -np.inf)
    dist[frontier] = 0
    for t in range(1, horizon + 1):
        if frontier.size == 0:
            break
        idx, _ = gather_ranges(edges.indptr, frontier)
        cand = np.unique(edges.dst[idx])
        frontier = cand[dist[cand] < 0]
        dist[frontier] = t
    keep = dist >= 0
    if keep.all() and horizon > 0 and (dist < horizon).all():
        return edges
    new_id = np.cumsum(keep) - 1
    ekeep = keep[edges.src] & (dist[edges.src] < horizon)
    src = new_id[edges.src[ekeep]]
    m = int(keep.sum())
    return Edges(
        edges.states[keep], src, edges.act[ekeep], edges.out[ekeep], new_id[edges.dst[ekeep]],
        edges.logw[ekeep], edges.rew[ekeep], edges.log_init[keep], _csr(src, m),
    )


def problem(mdp: MDP, horizon: int) -> Edges:
    """Validated, merged and restricted edge table for a horizon-``horizon`` path analysis."""
    check_mdp(mdp)
    return restrict(edge_table(mdp), horizon)


def by_dst(edges: Edges):
    """(perm, starts, targets): edges sorted by destination; ``starts`` begin the non-empty
    groups, whose destinations are ``targets``."""
    perm = np.argsort(edges.dst, kind="stable")
    d = edges.dst[perm]
    new = np.ones(d.size, dtype=bool)
    new[1:] = d[1:] != d[:-1]
    starts = np.flatnonzero(new)
    return perm, starts, d[starts]


def pull_table(edges: Edges):
    """Padded reverse lists [n, J] of edge indices (sentinel E), for the JAX kernels."""
    perm, starts, targets = by_dst(edges)
    counts = np.diff(np.append(starts, perm.size))
    J = max(int(counts.max()) if counts.size else 0, 1)
    slot = np.arange(perm.size) - np.repeat(starts, counts)
    table = np.full((edges.n, J), edges.E, dtype=np.int64)
    table[np.repeat(targets, counts), slot] = perm
    return table


def scale_of(edges: Edges, horizon: int) -> float:
    """Largest possible |partial return|: the scale of the tie tolerance."""
    return float(horizon * (np.abs(edges.rew).max() if edges.E else 0.0))


def tolerance(edges: Edges, horizon: int, dtype=np.float64) -> float:
    """Two returns closer than this are the same value: 1000 ulps (of ``dtype``, the precision
    the sums are done in) of the return scale, the rule of
    :func:`quasirl.semiring.tie_tolerance`."""
    return 1000.0 * float(np.finfo(dtype).eps) * (1.0 + scale_of(edges, horizon))


# --------------------------------------------------------------------------------------------
# counting
# --------------------------------------------------------------------------------------------
def _count(edges: Edges, horizon: int) -> float:
    c = (edges.log_init > -np.inf).astype(np.float64)
    for _ in range(horizon):
        c = np.bincount(edges.dst, weights=c[edges.src], minlength=edges.n)
    return float(c.sum())


def _fmt_count(c: float) -> str:
    return str(int(c)) if c < 2.0**53 else f"about {c:.4g}"


def count_paths(mdp: MDP, horizon: int) -> float:
    """Number of paths of positive weight and length ``horizon``, by dynamic programming.

    The counting semiring: c_{t+1}(s') = sum over edges (s, a, s') of c_t(s), c_0 = 1 on the
    support of init; the count is sum_s c_H(s). Exact (an integer-valued float) below 2^53.
    """
    horizon = V.check_horizon(horizon)
    return _count(problem(mdp, horizon), horizon)


# --------------------------------------------------------------------------------------------
# enumeration
# --------------------------------------------------------------------------------------------
class Paths(NamedTuple):
    """Explicit paths (one row each), as JAX arrays.

    states: int [N, H+1]; actions: int [N, H]; log_weight: [N] log w_p (init, policy and
    transition probabilities); ret: [N] the return R_p.
    """

    states: jnp.ndarray
    actions: jnp.ndarray
    log_weight: jnp.ndarray
    ret: jnp.ndarray


def check_limit(limit) -> int:
    return V.check_int("limit", limit, minimum=1)


def enumerate_numpy(edges: Edges, horizon: int, limit: int):
    """(states, actions, logw, ret, edge ids [N, H]) in float64 numpy, local state numbering."""
    count = _count(edges, horizon)
    if count > limit:
        raise V.QuasirlValueError(
            f"enumerating the paths of horizon {horizon} would give {_fmt_count(count)} paths, "
            f"more than limit={limit}; raise limit or use the dynamic-programming functions "
            "(optimal_path_mass, best_paths, return_spectrum)"
        )
    last = np.flatnonzero(edges.log_init > -np.inf)
    states = last[:, None]
    eids = np.zeros((last.size, 0), dtype=np.int64)
    lw = edges.log_init[last]
    ret = np.zeros(last.size)
    for _ in range(horizon):
        idx, owner = gather_ranges(edges.indptr, states[:, -1])
        states = np.concatenate([states[owner], edges.dst[idx][:, None]], axis=1)
        eids = np.concatenate([eids[owner], idx[:, None]], axis=1)
        lw = lw[owner] + edges.logw[idx]
        ret = ret[owner] + edges.rew[idx]
    return states, edges.act[eids], lw, ret, eids


def enumerate_paths(mdp: MDP, horizon: int, limit: int = DEFAULT_LIMIT) -> Paths:
    """Every path of positive weight and length ``horizon``, explicitly.

    The paths are first counted by dynamic programming (:func:`count_paths`); if there are more
    than ``limit`` a ``QuasirlValueError`` (a ValueError) says how many. Paths are listed in
    lexicographic order of (s0, a0, s1, ...). Memory is about N * (2H + 3) numbers.
    """
    horizon = V.check_horizon(horizon)
    limit = check_limit(limit)
    edges = problem(mdp, horizon)
    states, actions, lw, ret, _ = enumerate_numpy(edges, horizon, limit)
    dt = mdp.prob.dtype
    return Paths(
        jnp.asarray(edges.states[states].astype(np.int32)),
        jnp.asarray(actions.astype(np.int32)),
        jnp.asarray(lw, dtype=dt),
        jnp.asarray(ret, dtype=dt),
    )


# --------------------------------------------------------------------------------------------
# the unrolled graph
# --------------------------------------------------------------------------------------------
def layers(edges: Edges, horizon: int):
    """reach[t] = local states reachable with positive weight at exactly step t."""
    cur = np.flatnonzero(edges.log_init > -np.inf)
    out = [cur]
    for _ in range(horizon):
        idx, _ = gather_ranges(edges.indptr, cur)
        cur = np.unique(edges.dst[idx])
        out.append(cur)
    return out
