"""The infinite-horizon limit: growth rate, max cycle mean, lineage chain, first-exit problems.

The one-step replication operator is A_T(s, s') = sum_{a,k -> s'} policy(a|s) P_k exp(r/T), so
the population after t steps is init A_T^t and grows like rho(A_T)^t (Perron-Frobenius). In
value units the growth rate is T log rho(A_T); as T -> 0 it tends to the maximum cycle mean
mu* (the tropical eigenvalue), which Karp's algorithm computes exactly, and in between

    mu* + (T / l*) log(prod of weights around the best cycle) <= T log rho(A_T) <= mu*.

Numerics: for each strongly connected component C the matrix is *balanced* with the max-plus
potential phi of C (longest walks in the reduced weights r - mu_C, from Karp's table):
A~(s, s') = w exp((r - mu_C + phi(s) - phi(s')) / T) has entries <= w, the same spectrum up to
the factor exp(mu_C / T), and no overflow at any T > 0; rho(A_T) = max_C exp(mu_C/T) rho(A~_C).
Dense linear algebra per component: for components of up to a few thousand states (Karp is
O(n * edges) time and O(n^2) memory).

Linearly solvable MDPs (Todorov 2007, "Linearly-solvable Markov decision problems"; 2009 PNAS
"Efficient computation of optimal actions"): with exits X absorbing, the first-exit desirability
solves z = A_T z on the interior with z = 1 on X, a sparse linear system; T log z is the value
and w exp(r/T) z(s') / z(s) the optimal controlled dynamics.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from . import _validate as V
from ._mdp import MDP
from ._paths_graph import Edges, check_mdp, edge_table


# --------------------------------------------------------------------------------------------
# strongly connected components and Karp's algorithm
# --------------------------------------------------------------------------------------------
class _Component(NamedTuple):
    nodes: np.ndarray  # [n] state indices
    edges: np.ndarray  # [m] indices into the edge table (both ends in the component)
    u: np.ndarray  # [m] local source
    v: np.ndarray  # [m] local target
    mu: float  # max cycle mean
    phi: np.ndarray  # [n] potential: r - mu + phi(u) - phi(v) <= 0 on every edge
    cycle: np.ndarray  # local nodes of one cycle attaining mu, in order
    cycle_edges: np.ndarray  # its edges (indices into the edge table)


def _segmax(x, seg_starts, targets, size):
    out = np.full(size, -np.inf)
    if x.size:
        out[targets] = np.maximum.reduceat(x, seg_starts)
    return out


def _karp(n, u, v, w):
    """Karp (1978): mu = max_v min_k (D_n(v) - D_k(v)) / (n - k), D_k(v) the best walk of
    exactly k edges from node 0. Returns (mu, D[0..n-1])."""
    order = np.argsort(v, kind="stable")
    u, v, w = u[order], v[order], w[order]
    new = np.ones(v.size, dtype=bool)
    new[1:] = v[1:] != v[:-1]
    starts = np.flatnonzero(new)
    targets = v[starts]
    D = np.full((n + 1, n), -np.inf)
    D[0, 0] = 0.0
    for k in range(1, n + 1):
        D[k] = _segmax(D[k - 1][u] + w, starts, targets, n)
    ks = np.arange(n)
    with np.errstate(invalid="ignore"):
        ratio = (D[n][None, :] - D[:n]) / (n - ks)[:, None]
    ratio = np.where(np.isfinite(D[:n]), ratio, np.inf)
    worst = ratio.min(axis=0)
    ok = np.isfinite(D[n])
    return float(worst[ok].max()), D[:n]


def _components(edges: Edges, reward_scale: float):
    """Cyclic strongly connected components with Karp's mu, a potential and a best cycle."""
    import networkx as nx

    G = nx.DiGraph()
    G.add_nodes_from(range(edges.n))
    G.add_edges_from(zip(edges.src.tolist(), edges.dst.tolist(), strict=True))
    comp_of = np.full(edges.n, -1)
    comps = []
    for nodes in nx.strongly_connected_components(G):
        nodes = np.array(sorted(nodes))
        if nodes.size == 1 and not G.has_edge(nodes[0], nodes[0]):
            continue
        comp_of[nodes] = len(comps)
        comps.append(nodes)
    out = []
    for c, nodes in enumerate(comps):
        n = nodes.size
        local = np.full(edges.n, -1)
        local[nodes] = np.arange(n)
        eids = np.flatnonzero((comp_of[edges.src] == c) & (comp_of[edges.dst] == c))
        u, v, w = local[edges.src[eids]], local[edges.dst[eids]], edges.rew[eids]
        mu, D = _karp(n, u, v, w)
        phi = np.max(D - np.arange(n)[:, None] * mu, axis=0)
        # a cycle of tight edges (zero reduced weight) has mean mu: find one
        slack = w - mu + phi[u] - phi[v]
        tol = 1000.0 * np.finfo(np.float64).eps * (1.0 + n * (reward_scale + abs(mu)))
        cyc = None
        for factor in (1.0, 10.0, 100.0, 1e4):
            tight = slack >= -tol * factor
            T = nx.DiGraph()
            best: dict = {}
            for i in np.flatnonzero(tight):
                key = (int(u[i]), int(v[i]))
                # among parallel tight edges keep the heaviest (tightest lower bound)
                if key not in best or edges.logw[eids[i]] > edges.logw[eids[best[key]]]:
                    best[key] = i
            T.add_edges_from(best)
            try:
                found = nx.find_cycle(T)
            except nx.NetworkXNoCycle:
                continue
            cyc = (np.array([a for a, _ in found]), np.array([eids[best[e]] for e in found]))
            break
        if cyc is None:  # pragma: no cover - the tight graph always holds a critical cycle
            raise RuntimeError("Karp: no critical cycle found in the tight subgraph")
        out.append(_Component(nodes, eids, u, v, mu, phi, cyc[0], cyc[1]))
    return out


class CycleMean(NamedTuple):
    """The maximum mean reward over cycles of positive weight, and one cycle attaining it.

    value: mu* = max over cycles of (sum of rewards) / length; states: [l] the cycle's states
    s_0 -> s_1 -> ... -> s_0; actions: [l] the action taken from each; log_weight: log of the
    product of policy * P around the cycle.
    """

    value: float
    states: np.ndarray
    actions: np.ndarray
    log_weight: float

    @property
    def length(self) -> int:
        return int(self.states.size)


def _best(mdp):
    edges = edge_table(check_mdp(mdp))
    scale = float(np.abs(edges.rew).max()) if edges.E else 0.0
    return edges, _components(edges, scale)


def max_cycle_mean(mdp: MDP) -> CycleMean:
    """mu*, the maximum cycle mean of the transition graph (edges of positive weight).

    Karp's algorithm (Karp 1978, "A characterization of the minimum cycle mean in a digraph") on
    each strongly connected component (networkx), O(n * edges) per component; a cycle
    attaining it is read off the tight edges of the max-plus potential. mu* is the T -> 0
    limit of the growth rate T log rho(A_T), and the value per step of the best infinite path.
    """
    edges, comps = _best(mdp)
    c = max(comps, key=lambda c: c.mu)
    e = c.cycle_edges
    return CycleMean(c.mu, edges.states[edges.src[e]], edges.act[e],
                     float(edges.logw[e].sum()))


# --------------------------------------------------------------------------------------------
# growth rate: the Perron root of the balanced component matrices
# --------------------------------------------------------------------------------------------
def _balanced_log(edges, c, T):
    """log of the balanced matrix entries of component c at temperature T > 0 (per edge)."""
    w = edges.rew[c.edges]
    return edges.logw[c.edges] + (w - c.mu + c.phi[c.u] - c.phi[c.v]) / T


def _balanced(edges, c, T):
    n = c.nodes.size
    A = np.zeros((n, n))
    np.add.at(A, (c.u, c.v), np.exp(_balanced_log(edges, c, T)))
    return A


def _component_rate(edges, c, T):
    if T == 0:
        return c.mu
    rho = np.max(np.linalg.eigvals(_balanced(edges, c, T)).real)
    return c.mu + T * np.log(rho)


def growth_rate(mdp: MDP, T):
    """T log rho(A_T): the growth rate per step of the population (value units); mu* at T = 0.

    rho is the Perron root of the one-step replication operator A_T(s, s') = sum over actions
    and outcomes into s' of policy * P * exp(r / T), over all states; T a scalar or 1-D array.
    Bounds: mu* + (T / l*) log(prod of weights around the best cycle) <= rate <= mu*.
    """
    t, batched = V.check_temperature(T)
    edges, comps = _best(mdp)
    Ts = np.atleast_1d(np.asarray(t, dtype=np.float64))
    out = np.array([max(_component_rate(edges, c, float(x)) for c in comps) for x in Ts])
    out = jnp.asarray(out, dtype=mdp.prob.dtype)
    return out if batched else out[0]


# --------------------------------------------------------------------------------------------
# Perron vectors: the lineage (tilted) chain and the stationary population
# --------------------------------------------------------------------------------------------
class Lineage(NamedTuple):
    """The lineage chain on the dominant strongly connected component C* (T > 0).

    states [n]: the states of C*; rate: T log rho; transition [n, n]: P*(s'|s) =
    A_T(s, s') z(s') / (rho z(s)); action_prob [n, A]: P*(a|s), the long-run fraction of the
    surviving lineage at s that takes a; stationary [n]: the stationary law pi* of P* (where
    ancestral lineages spend their time, pi* proportional to left * right Perron vectors);
    population [n]: the population's long-run distribution over C* (left Perron vector);
    value [n]: T log z, the right Perron vector in value units (max 0); kl [n]:
    KL(P*(.|s) || policy * P(.|s)) over actions and outcomes; mean_reward: E_pi*[r] under P*.
    Identity: rate = mean_reward - T * sum_s pi*(s) kl(s).
    """

    states: np.ndarray
    rate: float
    transition: np.ndarray
    action_prob: np.ndarray
    stationary: np.ndarray
    population: np.ndarray
    value: np.ndarray
    kl: np.ndarray
    mean_reward: float


def _scalar_positive_T(T, what):
    t, batched = V.check_temperature(T)
    if batched:
        raise V.QuasirlValueError(f"{what} takes a scalar T, got shape {np.shape(T)}")
    T = float(t)
    if T == 0:
        raise V.QuasirlValueError(
            f"{what} needs T > 0 (at T = 0 the Perron vectors degenerate onto the critical "
            "cycles; use max_cycle_mean)"
        )
    return T


def _dominant(edges, comps, T):
    rates = np.array([_component_rate(edges, c, T) for c in comps])
    i = int(np.argmax(rates))
    close = np.flatnonzero(rates >= rates[i] - 1e-9 * (1.0 + abs(rates[i])))
    if close.size > 1:
        sets = "; ".join(str(edges.states[comps[j].nodes][:6].tolist()) for j in close)
        raise V.QuasirlValueError(
            f"the growth rate {rates[i]:.6g} at T = {T:g} is attained by {close.size} strongly "
            f"connected components (states {sets}); the long-run population then depends on "
            "the start, and the lineage chain is not unique"
        )
    return comps[i], float(rates[i])


def _perron(A):
    """(rho, right, left) Perron root and vectors of an irreducible nonnegative matrix."""
    import scipy.linalg

    lam, left, right = scipy.linalg.eig(A, left=True, right=True)
    i = int(np.argmax(lam.real))
    z = np.abs(right[:, i].real)
    v = np.abs(left[:, i].real)
    return float(lam[i].real), z / z.max(), v / v.max()


def _lineage(mdp, T):
    edges, comps = _best(mdp)
    c, rate = _dominant(edges, comps, T)
    n = c.nodes.size
    rho, z, v = _perron(_balanced(edges, c, T))
    # every edge leaving a state of C*: to C* (tilted) or out of it (z = 0 there: P* = 0)
    local = np.full(edges.n, -1)
    local[c.nodes] = np.arange(n)
    out_e = np.flatnonzero(local[edges.src] >= 0)
    inside = local[edges.dst[out_e]] >= 0
    pstar = np.zeros(out_e.size)
    lb = _balanced_log(edges, c, T)  # aligned with c.edges
    pos = {int(e): i for i, e in enumerate(c.edges)}
    for j in np.flatnonzero(inside):
        e = out_e[j]
        i = pos[int(e)]
        pstar[j] = np.exp(lb[i]) * z[c.v[i]] / (rho * z[c.u[i]])
    su = local[edges.src[out_e]]
    # renormalise away the last ulps (rows sum to 1 up to the eigenvector's accuracy)
    pstar /= np.bincount(su, weights=pstar, minlength=n)[su]
    transition = np.zeros((n, n))
    np.add.at(transition, (su[inside], local[edges.dst[out_e[inside]]]), pstar[inside])
    action_prob = np.zeros((n, mdp.num_actions))
    np.add.at(action_prob, (su, edges.act[out_e]), pstar)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(pstar > 0, pstar * (np.log(pstar) - edges.logw[out_e]), 0.0)
    kl = np.bincount(su, weights=terms, minlength=n)
    stat = v * z
    stat /= stat.sum()
    mean_r = float(np.sum(stat[su] * pstar * edges.rew[out_e]))
    log_pop = np.log(v) + c.phi / T
    pop = np.exp(log_pop - log_pop.max())
    value = T * np.log(z) - c.phi
    return (edges, c, rate, log_pop, Lineage(edges.states[c.nodes], rate, transition, action_prob,
                                             stat, pop / pop.sum(), value - value.max(), kl,
                                             mean_r))


def lineage_chain(mdp: MDP, T) -> Lineage:
    """The lineage ('tilted') chain P*(s'|s) = A_T(s, s') z(s') / (rho z(s)) at one T > 0.

    z is the right Perron vector of A_T (the reproductive value of each state), restricted to
    the strongly connected component C* that sets the growth rate (ancestral lineages of the
    long-run population live there). It is row-stochastic, and the variational identity
    T log rho = E_pi*[r] - T E_pi*[KL(P*(.|s) || policy P(.|s))] holds (Donsker-Varadhan; the
    population's growth is the reward its lineages collect minus T times the price of tilting
    them away from the exploration dynamics). Raises if several components tie for the rate.
    """
    T = _scalar_positive_T(T, "lineage_chain")
    return _lineage(mdp, T)[-1]


def stationary_population(mdp: MDP, T):
    """The long-run distribution of the population over all states at one T > 0, [S].

    The normalised left Perron vector of A_T: n_t / sum(n_t) tends to it from any start that
    reaches the dominant component C* (if C* is aperiodic). It lives on C* and on the states
    downstream of C*, which C* feeds: there v_D = v_C A_CD (rho I - A_DD)^(-1).
    """
    import networkx as nx

    T = _scalar_positive_T(T, "stationary_population")
    edges, c, rate, log_pop, _ = _lineage(mdp, T)
    S = edges.n
    out = np.full(S, -np.inf)
    out[c.nodes] = log_pop
    G = nx.DiGraph()
    G.add_edges_from(zip(edges.src.tolist(), edges.dst.tolist(), strict=True))
    down = set()
    for s in c.nodes:
        down |= nx.descendants(G, int(s))
    down = np.array(sorted(down - set(c.nodes.tolist())), dtype=np.int64)
    if down.size:
        m = down.size
        dl = np.full(S, -1)
        dl[down] = np.arange(m)
        shift = log_pop.max()
        # b(d) = sum over edges C* -> d of v(u) A(u, d) / rho, in log space, then rescaled
        e_cd = np.flatnonzero(np.isin(edges.src, c.nodes) & (dl[edges.dst] >= 0))
        lb = out[edges.src[e_cd]] - shift + edges.logw[e_cd] + (edges.rew[e_cd] - rate) / T
        b = np.zeros(m)
        np.add.at(b, dl[edges.dst[e_cd]], np.exp(lb))
        e_dd = np.flatnonzero((dl[edges.src] >= 0) & (dl[edges.dst] >= 0))
        B = np.zeros((m, m))
        np.add.at(B, (dl[edges.src[e_dd]], dl[edges.dst[e_dd]]),
                  np.exp(edges.logw[e_dd] + (edges.rew[e_dd] - rate) / T))
        y = np.linalg.solve((np.eye(m) - B).T, b)
        if not (np.all(np.isfinite(y)) and np.all(y >= -1e-12 * max(y.max(), 1e-300))):
            raise V.QuasirlValueError(
                f"T = {T:g} is too small for the dense solve of the population downstream of "
                "the dominant component (its entries overflow); use a larger T"
            )
        with np.errstate(divide="ignore"):
            out[down] = np.log(np.maximum(y, 0.0)) + shift
    pop = np.exp(out - out.max())
    return jnp.asarray(pop / pop.sum(), dtype=mdp.prob.dtype)


# --------------------------------------------------------------------------------------------
# linearly solvable MDPs: first-exit desirability
# --------------------------------------------------------------------------------------------
class LMDPSolution(NamedTuple):
    """First-exit solution (leading temperature axis when T is an array).

    value [S]: T log z (0 on exits, -inf where no exit can be reached); control [S, A, K]: the
    optimal controlled dynamics policy(a|s) P_k exp(r/T) z(s') / z(s) on outcome slots (the
    passive policy * P on exits and on states that cannot exit).
    """

    value: jnp.ndarray
    control: jnp.ndarray


def _default_exits(mdp):
    S = mdp.num_states
    nxt = np.asarray(mdp.next)
    live = (np.asarray(mdp.prob) > 0) & (np.asarray(mdp.policy)[:, :, None] > 0)
    stay = (nxt == np.arange(S)[:, None, None]) & (np.asarray(mdp.reward) == 0)
    return np.all(stay | ~live, axis=(1, 2))


def _reach_exits(edges, exits):
    """States from which some exit can be reached (reverse breadth-first search)."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import breadth_first_order

    S = edges.n
    src = np.concatenate([edges.dst, np.full(int(exits.sum()), S)])
    dst = np.concatenate([edges.src, np.flatnonzero(exits)])
    G = sp.csr_matrix((np.ones(src.size), (src, dst)), shape=(S + 1, S + 1))
    order = breadth_first_order(G, S, directed=True, return_predecessors=False)
    reach = np.zeros(S + 1, dtype=bool)
    reach[order] = True
    return reach[:S]


def _maxplus_exit_value(edges, exits, interior):
    """Longest walk to an exit (Bellman-Ford); None if a positive cycle makes it infinite."""
    S = edges.n
    e = np.flatnonzero(interior[edges.src])
    src, dst, r = edges.src[e], edges.dst[e], edges.rew[e]
    starts = np.flatnonzero(np.r_[True, src[1:] != src[:-1]]) if e.size else e
    Vx = np.where(exits, 0.0, -np.inf)
    for _ in range(S + 1):
        Vn = Vx.copy()
        if e.size:
            Vn[src[starts]] = np.maximum.reduceat(r + Vx[dst], starts)
        if np.array_equal(Vn, Vx):
            return Vx
        Vx = Vn
    return None


def _sparse_solve(m, rows, cols, vals, b):
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    M = sp.identity(m, format="csr") - sp.csr_matrix((vals, (rows, cols)), shape=(m, m))
    y = spsolve(M.tocsc(), b)
    return np.atleast_1d(y)


def _lmdp_one(mdp, edges, exits, reach, V0, T):
    S, A, K = mdp.shape
    interior = ~exits & reach
    il = np.full(S, -1)
    il[interior] = np.arange(int(interior.sum()))
    m = int(interior.sum())
    e = np.flatnonzero(interior[edges.src] & reach[edges.dst])
    src, dst = edges.src[e], edges.dst[e]
    if T == 0:
        if V0 is None:
            raise V.QuasirlValueError(
                "the first-exit problem has no finite T = 0 solution: a cycle of positive "
                "reward avoids the exits"
            )
        phi = V0
        slack = edges.rew[e] + V0[dst] - V0[src]
        tol = 1000.0 * np.finfo(np.float64).eps * (1.0 + S * float(np.abs(edges.rew).max()))
        logc = np.where(slack >= -tol, edges.logw[e], -np.inf)
    else:
        phi = np.where(reach, V0, 0.0) if V0 is not None else np.zeros(S)
        logc = edges.logw[e] + (edges.rew[e] + phi[dst] - phi[src]) / T
    c = np.exp(logc)
    to_int = il[dst] >= 0
    b = np.zeros(m)
    np.add.at(b, il[src[~to_int]], c[~to_int])  # exits have y = 1 in the balanced frame
    y = _sparse_solve(m, il[src[to_int]], il[dst[to_int]], c[to_int], b) if m else np.zeros(0)
    if not (np.all(np.isfinite(y)) and np.all(y > 0)):
        raise V.QuasirlValueError(
            f"the first-exit problem has no finite solution at T = {T:g}: the interior "
            "population grows faster than it exits (rho of the interior operator >= 1)"
        )
    yy = np.where(exits, 1.0, 0.0)
    yy[interior] = y
    with np.errstate(divide="ignore"):
        value = np.where(reach, phi, 0.0) + (T * np.log(yy) if T > 0 else np.where(
            yy > 0, 0.0, -np.inf))
    value = np.where(reach, value, -np.inf)
    control = np.asarray(mdp.policy, dtype=np.float64)[:, :, None] * np.asarray(
        mdp.prob, dtype=np.float64)
    ctrl = c * yy[dst] / yy[src]
    control[interior] = 0.0
    np.add.at(control, (src, edges.act[e], edges.out[e]), ctrl)
    return value, control


def lmdp_desirability(mdp: MDP, T, exits=None) -> LMDPSolution:
    """First-exit desirability of a linearly solvable MDP, by one sparse linear solve per T.

    z(s) = sum over actions and outcomes of policy * P * exp(r/T) * z(s') on the interior,
    z = 1 on the exits, i.e. (I - A_NN) z_N = A_NX 1 (Todorov 2007): the limit of the backward
    quasispecies recursion (:func:`quasirl.desirability`) as the horizon grows. ``exits`` is a
    bool mask [S]; by default the absorbing states whose every move stays put with reward 0.
    The system is solved in the frame balanced by the T = 0 solution (longest walk to an exit),
    so no entry overflows; T = 0 is that max-plus solution, with the control its T -> 0+ limit.
    Raises when the interior population outgrows its exits (rho(A_NN) >= 1).
    """
    t, batched = V.check_temperature(T)
    edges = edge_table(check_mdp(mdp))
    S = mdp.num_states
    if exits is None:
        ex = _default_exits(mdp)
    else:
        V.check_shape("exits", exits, (S,), "[S]")
        ex = np.asarray(exits)
        if ex.dtype != bool:
            raise V.QuasirlValueError(f"exits must be a bool mask, got dtype {ex.dtype}")
    if not ex.any():
        raise V.QuasirlValueError(
            "the MDP has no exit states: pass exits=<bool mask [S]> (absorbing states whose "
            "moves all stay put with reward 0 are exits by default)"
        )
    reach = _reach_exits(edges, ex)
    V0 = _maxplus_exit_value(edges, ex, ~ex & reach)
    Ts = np.atleast_1d(np.asarray(t, dtype=np.float64))
    sols = [_lmdp_one(mdp, edges, ex, reach, V0, float(x)) for x in Ts]
    dt = mdp.prob.dtype
    value = jnp.asarray(np.stack([s[0] for s in sols]), dtype=dt)
    control = jnp.asarray(np.stack([s[1] for s in sols]), dtype=dt)
    if not batched:
        value, control = value[0], control[0]
    return LMDPSolution(value, control)
