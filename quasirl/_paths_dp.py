"""Path sums by explicit summation and by dynamic programming on the unrolled graph.

* ``path_integral`` and ``path_distribution`` sum over the enumerated paths, as the essay writes
  the population: Z(T) = sum_p w_p exp(R_p / T).
* ``optimal_path_mass`` gets the tempered probability of the max-return paths by a forward
  recursion that never lists a path (O(states) memory), so it runs on graphs far too large to
  enumerate. ``return_spectrum`` is the max-plus recursion with multiplicities carried to the
  m highest distinct returns: Z(T) = sum_j W_j exp(R_j / T) + ..., which gives the number of
  optimal paths (the counting semiring), their weight W_1, and the gap Delta = R_1 - R_2 to the
  next-best paths with their weight N_2, so that 1 - P(optimal) ~ (N_2 / W_1) exp(-Delta / T).
* ``best_paths`` lists the k highest-return paths: the max-plus value-to-go by backward dynamic
  programming, then best-first extension of prefixes ordered by (return so far + value-to-go),
  an exact bound, so complete paths come out in order of return (the lazy form of the k-best
  dynamic programme; cf. Eppstein 1998, "Finding the k shortest paths").
* ``path_flow`` is the tempered probability that a path takes each transition at each step.

Jit policy: the temperature-dependent kernels are written for one temperature, vmapped over a
1-D array of temperatures and jitted at the ``_*_batch`` entry points (horizon static); the
public functions validate, build the tables once and strip the batch axis for scalar T. The
combinatorial recursions (spectrum, counts, k best) run in numpy float64, exact for counts
below 2^53, and return numpy numbers.
"""

from __future__ import annotations

import heapq
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate as V
from ._mdp import MDP
from ._paths_graph import (
    DEFAULT_LIMIT,
    Paths,
    by_dst,
    check_limit,
    check_mdp,
    enumerate_numpy,
    problem,
    pull_table,
    tolerance,
)
from .semiring import safe_log, smax, smax_weighted, value_weight


def _temperatures(T, dtype):
    t, batched = V.check_temperature(T)
    return jnp.atleast_1d(t).astype(dtype), batched


# --------------------------------------------------------------------------------------------
# explicit summation over enumerated paths
# --------------------------------------------------------------------------------------------
@jax.jit
def _integral_batch(lw, ret, T):
    return jax.vmap(lambda t: smax(value_weight(lw, ret, t), t, axis=0))(T)


@jax.jit
def _distribution_batch(lw, ret, T, tol):
    def one(t):
        x = value_weight(lw, ret, t)
        F = smax(x, t, axis=0)
        soft = jnp.exp((x - F) / jnp.where(t > 0, t, 1.0))
        # T -> 0+: the max-return paths, in proportion to their weights
        top = ret >= jnp.max(ret) - tol
        lw_top = jnp.where(top, lw, -jnp.inf)
        limit = jnp.exp(lw_top - smax(lw_top, 1.0, axis=0))
        return jnp.where(t > 0, soft, limit)

    return jax.vmap(one)(T)


def _enumerated(mdp, horizon, limit):
    horizon = V.check_horizon(horizon)
    limit = check_limit(limit)
    edges = problem(mdp, horizon)
    st, act, lw, ret, _ = enumerate_numpy(edges, horizon, limit)
    dt = mdp.prob.dtype
    paths = Paths(jnp.asarray(edges.states[st].astype(np.int32)),
                  jnp.asarray(act.astype(np.int32)), jnp.asarray(lw, dtype=dt),
                  jnp.asarray(ret, dtype=dt))
    return paths, tolerance(edges, horizon, mdp.prob.dtype)


def path_integral(mdp: MDP, T, horizon: int, limit: int = DEFAULT_LIMIT):
    """F(T) = T log sum_p w_p exp(R_p / T) by explicit summation over every path.

    The paths are enumerated (at most ``limit`` of them, else a ``QuasirlValueError`` giving
    the count) and summed by a log-sum-exp in value units; at T = 0 the sum is the max-plus
    sum, max_p R_p, exactly. T is a scalar or 1-D array (results on a leading axis). This is the
    essay's 'summation over all the paths'; it equals :func:`quasirl.free_energy`, which gets
    the same number by recursion.
    """
    paths, _ = _enumerated(mdp, horizon, limit)
    t, batched = _temperatures(T, mdp.prob.dtype)
    out = _integral_batch(paths.log_weight, paths.ret, t)
    return out if batched else out[0]


def path_distribution(mdp: MDP, T, horizon: int, limit: int = DEFAULT_LIMIT):
    """(paths, prob): every path and its tempered probability w_p exp(R_p/T) / Z(T).

    ``prob`` is [N] (or [len(T), N]). At T = 0 it is the T -> 0+ limit: the max-return paths in
    proportion to their weights w_p, every other path 0.
    """
    paths, tol = _enumerated(mdp, horizon, limit)
    t, batched = _temperatures(T, mdp.prob.dtype)
    out = _distribution_batch(paths.log_weight, paths.ret, t, jnp.asarray(tol, t.dtype))
    return paths, (out if batched else out[0])


# --------------------------------------------------------------------------------------------
# forward recursion for the optimal-path mass (O(states) memory)
# --------------------------------------------------------------------------------------------
class _Tab(NamedTuple):
    src: jax.Array  # [n, J] source state of each entering edge (0 on padding)
    logw: jax.Array  # [n, J] log weight, -inf on padding
    rew: jax.Array  # [n, J] reward, 0 on padding
    log_init: jax.Array  # [n]


def _tables(edges, dtype) -> _Tab:
    table = pull_table(edges)  # sentinel E -> the padding entry appended below
    src = np.append(edges.src, 0)[table]
    logw = np.append(edges.logw, -np.inf)[table]
    rew = np.append(edges.rew, 0.0)[table]
    return _Tab(jnp.asarray(src, dtype=jnp.int32), jnp.asarray(logw, dtype=dtype),
                jnp.asarray(rew, dtype=dtype), jnp.asarray(edges.log_init, dtype=dtype))


def _mass_one(tab: _Tab, T, horizon: int, tol):
    """log(Z_suboptimal / Z_optimal) at one temperature, in units of 1 (not value units).

    Along with the max-plus prefix value m_t(s) the recursion carries two tempered sums: 'top',
    the prefixes into (t, s) whose return equals m_t(s), and 'rest', all others. A path is
    optimal iff every prefix attains m_t (proof: an optimal path's prefix could otherwise be
    swapped for a better one), and a top prefix stays top through an edge iff that edge attains
    m_{t+1}(s'), so the optimal paths are the top prefixes at the states with m_H = max R.
    """
    live = tab.logw > -jnp.inf
    c = value_weight(tab.logw, tab.rew, T)
    r = jnp.where(live, tab.rew, -jnp.inf)
    on = tab.log_init > -jnp.inf
    m0 = jnp.where(on, 0.0, -jnp.inf).astype(c.dtype)
    top0 = value_weight(tab.log_init, jnp.zeros_like(tab.log_init), T)
    rest0 = jnp.full_like(top0, -jnp.inf)

    def step(carry, _):
        m, top, rest = carry
        xm = m[tab.src] + r
        m_new = jnp.max(xm, axis=1)
        tight = (xm >= jnp.where(jnp.isfinite(m_new), m_new, 0.0)[:, None] - tol) & jnp.isfinite(
            xm)
        xt = top[tab.src] + c
        top_new = smax(jnp.where(tight, xt, -jnp.inf), T, axis=1)
        rest_new = smax(jnp.concatenate([rest[tab.src] + c, jnp.where(tight, -jnp.inf, xt)],
                                        axis=1), T, axis=1)
        # value units are O(return): no overflow, but keep the numbers small anyway
        shift = jnp.maximum(jnp.max(top_new), jnp.max(rest_new))
        return (m_new, top_new - shift, rest_new - shift), None

    (m, top, rest), _ = jax.lax.scan(step, (m0, top0, rest0), None, length=horizon)
    best = jnp.max(m)
    opt = m >= best - tol
    u_opt = smax(jnp.where(opt, top, -jnp.inf), T, axis=0)
    u_non = smax(jnp.concatenate([rest, jnp.where(opt, -jnp.inf, top)]), T, axis=0)
    d = (u_non - u_opt) / jnp.where(T > 0, T, 1.0)
    return jnp.where(T > 0, d, -jnp.inf)


@partial(jax.jit, static_argnames=("horizon", "sign"))
def _mass_batch(tab: _Tab, T, horizon: int, tol, sign: int):
    """sigmoid(sign * log(Z_suboptimal / Z_optimal)) for each T: the optimal-path mass for
    sign = -1, the suboptimal mass for sign = 1 (one compiled program, no eager op after it)."""
    return jax.nn.sigmoid(sign * jax.vmap(lambda t: _mass_one(tab, t, horizon, tol))(T))


def _mass(mdp, T, horizon, sign: int):
    horizon = V.check_horizon(horizon)
    edges = problem(mdp, horizon)
    dt = mdp.prob.dtype
    t, batched = _temperatures(T, dt)
    tol = jnp.asarray(tolerance(edges, horizon, dt), dt)
    out = _mass_batch(_tables(edges, dt), t, horizon, tol, sign)
    return out if batched else out[0]


def optimal_path_mass(mdp: MDP, T, horizon: int):
    """Tempered probability of the max-return paths, sum_{p optimal} w_p exp(R_p/T) / Z(T).

    Computed by a forward recursion on the unrolled graph (never enumerating a path; memory
    O(states)), for T a scalar or 1-D array; 1 at T = 0 (the limit T -> 0+). As T -> 0,
    1 - mass ~ (N_2 / W_1) exp(-Delta / T) with Delta, N_2, W_1 from :func:`return_gap`.
    """
    return _mass(mdp, T, horizon, -1)


def suboptimal_path_mass(mdp: MDP, T, horizon: int):
    """1 - :func:`optimal_path_mass`, computed directly (accurate when it is 1e-300); 0 at T = 0.
    """
    return _mass(mdp, T, horizon, 1)


# --------------------------------------------------------------------------------------------
# max-plus with multiplicities, to m levels (numpy float64)
# --------------------------------------------------------------------------------------------
class Spectrum(NamedTuple):
    """The m highest distinct path returns (numpy float64, padded with -inf / 0).

    returns [m]: R_1 > R_2 > ...; log_weight [m]: log of the total weight W_j of the paths with
    return R_j; count [m]: how many paths have return R_j (exact below 2^53). Together they give
    the low-temperature expansion Z(T) = sum_j W_j exp(R_j / T).
    """

    returns: np.ndarray
    log_weight: np.ndarray
    count: np.ndarray


def _top_levels(cv, clw, cc, starts, m, tol):
    """Per segment of rows (segments begin at ``starts``), the m highest distinct values of cv
    (values within ``tol`` are one value) with the log-sum of clw and the sum of cc over them."""
    N = cv.shape[0]
    seg = np.repeat(np.arange(starts.size), np.diff(np.append(starts, N)))
    vals = np.full((starts.size, m), -np.inf)
    lws = np.full((starts.size, m), -np.inf)
    cnts = np.zeros((starts.size, m))
    upper = np.full(starts.size, np.inf)
    finite = np.isfinite(cv)
    for j in range(m):
        below = finite & (cv < (upper - tol)[seg][:, None])
        mj = np.maximum.reduceat(np.where(below, cv, -np.inf).max(axis=1), starts)
        sel = below & (cv >= (mj - tol)[seg][:, None])
        lw = np.logaddexp.reduceat(np.logaddexp.reduce(np.where(sel, clw, -np.inf), axis=1),
                                   starts)
        vals[:, j] = mj
        lws[:, j] = np.where(np.isfinite(mj), lw, -np.inf)
        cnts[:, j] = np.add.reduceat(np.where(sel, cc, 0.0).sum(axis=1), starts)
        upper = mj
    return vals, lws, cnts


def _spectrum(edges, horizon: int, m: int):
    tol = tolerance(edges, horizon)
    n = edges.n
    on = edges.log_init > -np.inf
    vals = np.full((n, m), -np.inf)
    lws = np.full((n, m), -np.inf)
    cnts = np.zeros((n, m))
    vals[on, 0] = 0.0
    lws[on, 0] = edges.log_init[on]
    cnts[on, 0] = 1.0
    if horizon > 0:
        perm, starts, targets = by_dst(edges)
        src = edges.src[perm]
        rew = edges.rew[perm][:, None]
        lw_e = edges.logw[perm][:, None]
        for _ in range(horizon):
            v, lw, c = _top_levels(vals[src] + rew, lws[src] + lw_e, cnts[src], starts, m, tol)
            vals = np.full((n, m), -np.inf)
            lws = np.full((n, m), -np.inf)
            cnts = np.zeros((n, m))
            vals[targets], lws[targets], cnts[targets] = v, lw, c
    v, lw, c = _top_levels(vals, lws, cnts, np.zeros(1, dtype=np.int64), m, tol)
    return Spectrum(v[0], lw[0], c[0])


def return_spectrum(mdp: MDP, horizon: int, levels: int = 2) -> Spectrum:
    """The ``levels`` highest distinct returns, with the total weight and number of their paths.

    Max-plus with multiplicities, truncated to the top ``levels`` values per state: each state
    keeps its m best (value, weight, count) triples, and the m best of a sum come from the m best
    of each term. Returns closer than 1000 ulps of the return scale count as equal.
    """
    horizon = V.check_horizon(horizon)
    levels = V.check_int("levels", levels, minimum=1)
    return _spectrum(problem(mdp, horizon), horizon, levels)


def _as_count(c):
    c = float(c)
    return int(c) if c < 2.0**53 else c


def num_optimal_paths(mdp: MDP, horizon: int):
    """Number of max-return paths (of positive weight), by the counting semiring: an int, exact
    below 2^53 (a float beyond)."""
    return _as_count(return_spectrum(mdp, horizon, 1).count[0])


class ReturnGap(NamedTuple):
    """The two highest returns and their path weights; see :func:`return_gap`."""

    best: float  # R_1, the max return
    second: float  # R_2, the next-highest return (-inf if every path is optimal)
    delta: float  # R_1 - R_2 (inf if every path is optimal)
    log_w1: float  # log of W_1, the total weight of the optimal paths
    log_n2: float  # log of N_2, the total weight of the second-best paths
    count_best: int | float
    count_second: int | float

    @property
    def w1(self) -> float:
        return float(np.exp(self.log_w1))

    @property
    def n2(self) -> float:
        return float(np.exp(self.log_n2))

    def asymptote(self, T):
        """(N_2 / W_1) exp(-Delta / T): the leading term of 1 - optimal_path_mass as T -> 0."""
        T = np.asarray(T, dtype=np.float64)
        with np.errstate(divide="ignore"):
            x = self.log_n2 - self.log_w1 - self.delta / T
        return np.where(T > 0, np.exp(x), 0.0)


def return_gap(mdp: MDP, horizon: int) -> ReturnGap:
    """The gap Delta = R_1 - R_2 between the best and the next-best path returns, and N_2.

    N_2 is the weighted count of the second-best paths (sum of their w_p), W_1 that of the best
    ones; they set the rate at which the population concentrates on the optimal paths,
    1 - P_T(optimal) = (N_2/W_1) exp(-Delta/T) (1 + o(1)) as T -> 0.
    """
    sp = return_spectrum(mdp, horizon, 2)
    r1, r2 = float(sp.returns[0]), float(sp.returns[1])
    delta = r1 - r2 if np.isfinite(r2) else np.inf
    return ReturnGap(r1, r2, delta, float(sp.log_weight[0]), float(sp.log_weight[1]),
                     _as_count(sp.count[0]), _as_count(sp.count[1]))


# --------------------------------------------------------------------------------------------
# k best paths
# --------------------------------------------------------------------------------------------
def _value_to_go(edges, horizon):
    """V[t, s] = max return of a continuation of length H - t from s (-inf if none)."""
    n = edges.n
    Vt = np.full((horizon + 1, n), -np.inf)
    Vt[horizon] = 0.0
    if horizon == 0 or edges.E == 0:
        return Vt
    has = edges.indptr[1:] > edges.indptr[:-1]
    starts = edges.indptr[:-1][has]
    for t in range(horizon - 1, -1, -1):
        Vt[t, has] = np.maximum.reduceat(edges.rew + Vt[t + 1][edges.dst], starts)
    return Vt


def best_paths(mdp: MDP, horizon: int, k: int) -> Paths:
    """The k highest-return paths (fewer if there are fewer paths), best first.

    Backward max-plus dynamic programming gives the value-to-go V_t(s); prefixes are then
    extended best first by g_t + V_t(s_t), their best achievable return, so each complete path
    that comes out is the best one left. Work is about k * H * (branching) heap operations after
    an O(H * edges) recursion over the states reachable within the horizon; ties among equal
    returns come out in a fixed but arbitrary order.
    """
    horizon = V.check_horizon(horizon)
    k = V.check_int("k", k, minimum=1)
    edges = problem(mdp, horizon)
    Vt = _value_to_go(edges, horizon)
    tol = tolerance(edges, horizon)
    q = 1.0 / tol
    # node records: (t, state, g, lw, parent, edge)
    nodes: list[tuple] = []
    heap: list[tuple] = []
    counter = 0

    def push(t, s, g, lw, parent, e):
        nonlocal counter
        p = g + Vt[t, s]
        if not np.isfinite(p):
            return
        nodes.append((t, s, g, lw, parent, e))
        # equal bounds (within tol) are extended deepest first: a depth-first walk through ties
        heapq.heappush(heap, (-round(p * q), -t, counter, len(nodes) - 1))
        counter += 1

    for s in np.flatnonzero(edges.log_init > -np.inf):
        push(0, int(s), 0.0, float(edges.log_init[s]), -1, -1)
    done = []
    while heap and len(done) < k:
        *_, i = heapq.heappop(heap)
        t, s, g, lw, _, _ = nodes[i]
        if t == horizon:
            done.append(i)
            continue
        for e in range(edges.indptr[s], edges.indptr[s + 1]):
            push(t + 1, int(edges.dst[e]), g + edges.rew[e], lw + edges.logw[e], i, e)
    states = np.zeros((len(done), horizon + 1), dtype=np.int64)
    eids = np.zeros((len(done), horizon), dtype=np.int64)
    lws = np.zeros(len(done))
    rets = np.zeros(len(done))
    for row, i in enumerate(done):
        lws[row], rets[row] = nodes[i][3], nodes[i][2]
        while i >= 0:
            t, s, _, _, parent, e = nodes[i]
            states[row, t] = s
            if t > 0:
                eids[row, t - 1] = e
            i = parent
    order = np.argsort(-rets, kind="stable")
    dt = mdp.prob.dtype
    return Paths(jnp.asarray(edges.states[states[order]].astype(np.int32)),
                 jnp.asarray(edges.act[eids[order]].astype(np.int32)),
                 jnp.asarray(lws[order], dtype=dt), jnp.asarray(rets[order], dtype=dt))


# --------------------------------------------------------------------------------------------
# tempered flow through each transition
# --------------------------------------------------------------------------------------------
class _FlowTab(NamedTuple):
    next: jax.Array  # [S, A*K]
    logw: jax.Array  # [S, A*K]
    rew: jax.Array  # [S, A*K]
    src: jax.Array  # [S, J] pull lists
    logw_in: jax.Array  # [S, J]
    rew_in: jax.Array  # [S, J]
    log_init: jax.Array


def _flow_tables(mdp: MDP) -> _FlowTab:
    S, A, K = mdp.shape
    n = S * A * K
    logw = safe_log(mdp.policy[:, :, None] * mdp.prob).reshape(n)
    rew = mdp.reward.reshape(n)
    logw_p = jnp.concatenate([logw, jnp.full((1,), -jnp.inf, logw.dtype)])
    rew_p = jnp.concatenate([rew, jnp.zeros((1,), rew.dtype)])
    src = jnp.where(mdp.pred < n, mdp.pred // (A * K), 0)
    return _FlowTab(mdp.next.reshape(S, A * K), logw.reshape(S, A * K), rew.reshape(S, A * K),
                    src, logw_p[mdp.pred], rew_p[mdp.pred], safe_log(mdp.init))


def _flow_one(tab: _FlowTab, T, horizon: int, tol, soft: bool = True, limit: bool = True):
    """flow[t, s, a*K+k]: tempered probability that a path takes outcome (a, k) from s at t.

    T > 0: forward value F_t(s) (value units) + edge + backward desirability Z_{t+1}(s') - F.
    T = 0: the T -> 0+ limit; forward and backward max-plus values with the weights of the
    max-attaining prefixes / suffixes, the edge counting only if it lies on an optimal path.
    ``soft`` / ``limit`` (static) say which of the two recursions the batch needs: a batch
    without T = 0 (or with only T = 0) compiles and runs half the program.
    """
    Ts = jnp.where(T > 0, T, 1.0)
    nxt = tab.next
    out = []
    if soft:
        c_in = value_weight(tab.logw_in, tab.rew_in, T)
        c_out = value_weight(tab.logw, tab.rew, T)
        u0 = value_weight(tab.log_init, jnp.zeros_like(tab.log_init), T)

        def fwd(u, _):
            return smax(u[tab.src] + c_in, T, axis=1), u

        def bwd(z, _):
            return smax(c_out + z[tab.next], T, axis=1), z

        uH, U = jax.lax.scan(fwd, u0, None, length=horizon)
        _, Z = jax.lax.scan(bwd, jnp.zeros_like(u0), None, length=horizon, reverse=True)
        F = smax(uH, T, axis=0)
        out.append(jnp.exp((U[:, :, None] + c_out[None] + Z[:, nxt] - F) / Ts))
    if limit:
        r_in = jnp.where(tab.logw_in > -jnp.inf, tab.rew_in, -jnp.inf)
        r_out = jnp.where(tab.logw > -jnp.inf, tab.rew, -jnp.inf)
        m0 = jnp.where(tab.log_init > -jnp.inf, 0.0, -jnp.inf).astype(tab.logw.dtype)

        def fwd_max(carry, _):
            m, lw = carry
            new = smax_weighted(m[tab.src] + r_in, lw[tab.src] + tab.logw_in, axis=1, tol=tol)
            return new, carry

        def bwd_max(carry, _):
            b, lw = carry
            new = smax_weighted(r_out + b[tab.next], tab.logw + lw[tab.next], axis=1, tol=tol)
            return new, carry

        (mH, lwH), (M, LF) = jax.lax.scan(fwd_max, (m0, tab.log_init), None, length=horizon)
        zero = jnp.zeros_like(m0)
        _, (B, LB) = jax.lax.scan(bwd_max, (zero, zero), None, length=horizon, reverse=True)
        best, lw_best = smax_weighted(mH, lwH, axis=0, tol=tol)
        tight = M[:, :, None] + r_out[None] + B[:, nxt] >= best - tol
        out.append(jnp.where(
            tight, jnp.exp(LF[:, :, None] + tab.logw[None] + LB[:, nxt] - lw_best), 0.0))
    return out[0] if len(out) == 1 else jnp.where(T > 0, out[0], out[1])


@partial(jax.jit, static_argnames=("horizon", "soft", "limit"))
def _flow_batch(mdp: MDP, T, horizon: int, tol, soft: bool, limit: bool):
    # the tables are built inside the compiled program: built eagerly, each of their ~25 ops
    # would be compiled on its own on a first call (~1 s in all)
    tab = _flow_tables(mdp)
    S, A, K = mdp.shape
    flow = jax.vmap(lambda t: _flow_one(tab, t, horizon, tol, soft, limit))(T)
    return flow.reshape(-1, horizon, S, A, K)


def path_flow(mdp: MDP, T, horizon: int):
    """Tempered path flow through each transition, [H, S, A, K] (or [len(T), H, S, A, K]).

    flow[t, s, a, k] is the probability, under the tempered path law w_p exp(R_p/T) / Z, that
    the path takes outcome k of action a from s at step t; it sums to 1 over (s, a, k) at each
    t, and over t it is :func:`quasirl.occupancy`. At T = 0 it is the T -> 0+ limit (the optimal
    paths in proportion to their weights). Memory O(H * S * A * K): for small and mid-sized MDPs.
    """
    check_mdp(mdp)
    horizon = V.check_horizon(horizon)
    dt = mdp.prob.dtype
    t, batched = _temperatures(T, dt)
    scale = horizon * float(np.abs(np.asarray(mdp.reward, dtype=np.float64)).max())
    tol = 1000.0 * float(np.finfo(dt).eps) * (1.0 + scale)
    # which recursions the batch needs (both when T is traced)
    zero = np.asarray(t) == 0 if V.is_concrete(t) else np.array([True, False])
    out = _flow_batch(mdp, t, horizon, jnp.asarray(tol, dt), bool((~zero).any()),
                      bool(zero.any()))
    return out if batched else out[0]
