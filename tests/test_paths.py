"""quasirl.paths against independent oracles: brute force over every path (itertools, numpy
float64), closed forms, brute force over simple cycles (networkx), dense eigenproblems, and the
core recursions (free_energy, occupancy, evolve, desirability, soft_policy)."""

import itertools
import math
from collections import defaultdict

import jax
import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import all_paths
from scipy.special import logsumexp

import quasirl as qr
from quasirl import paths as qp
from quasirl._validate import QuasirlValueError

TEMPS = [10.0, 1.0, 0.1, 0.01, 0.0]


# --------------------------------------------------------------------------------------------
# oracles
# --------------------------------------------------------------------------------------------
def random_problem(seed, S=3, A=2, stochastic=True, nonuniform=True):
    rng = np.random.default_rng(seed)
    if stochastic:
        P = rng.random((S, A, S)) ** 2 * (rng.random((S, A, S)) < 0.7)
    else:
        P = np.zeros((S, A, S))
        P[np.arange(S)[:, None], np.arange(A)[None, :], rng.integers(0, S, (S, A))] = 1.0
    for s, a in itertools.product(range(S), range(A)):
        if P[s, a].sum() == 0:
            P[s, a, rng.integers(S)] = 1.0
    P /= P.sum(-1, keepdims=True)
    R = np.round(rng.normal(size=(S, A, S)) * 2.0, 3)
    if nonuniform:
        init = rng.random(S)
        init[0] = 0.0
        init /= init.sum()
        policy = rng.random((S, A))
        policy[1, 0] = 0.0
        policy /= policy.sum(-1, keepdims=True)
    else:
        init, policy = np.full(S, 1.0 / S), np.full((S, A), 1.0 / A)
    return P, R, init, policy


def dense_case(seed, S, A, stochastic=True, nonuniform=False):
    P, R, init, policy = random_problem(seed, S=S, A=A, stochastic=stochastic,
                                        nonuniform=nonuniform)
    return qr.MDP(P, R, init=init, policy=policy)


CASES = [
    dict(seed=0, stochastic=True),
    dict(seed=1, stochastic=False),
    dict(seed=2, stochastic=True, nonuniform=False),
    dict(seed=3, stochastic=False, nonuniform=False, S=4, A=3),
]


@pytest.fixture(scope="module", params=range(len(CASES)), ids=lambda i: str(CASES[i]))
def problem(request):
    P, R, init, policy = random_problem(**CASES[request.param])
    H = 3
    mdp = qr.MDP(P, R, init=init, policy=policy)
    return mdp, H, all_paths(P, R, init, policy, H)


@pytest.fixture(scope="module", params=[0, 3], ids=lambda i: str(CASES[i]))
def problem2(request):
    """Two of the cases (stochastic with zeros in init/policy; deterministic, K = 1)."""
    P, R, init, policy = random_problem(**CASES[request.param])
    H = 3
    mdp = qr.MDP(P, R, init=init, policy=policy)
    return mdp, H, all_paths(P, R, init, policy, H)


def sort_rows(states, actions, *rest):
    key = np.concatenate([states, actions], axis=1)
    order = np.lexsort(key.T[::-1])
    return (states[order], actions[order], *[r[order] for r in rest])


def coin(H_unused=None):
    """One state, two self-loops with rewards 1 and 0: path returns are Binomial counts."""
    return qr.MDP.deterministic(np.array([[0, 0]]), np.array([[1.0, 0.0]]))


def risky():
    """One state; 'safe' (w 1/2, r 0) or 'risky' (w 1/4 each: r +1 or r -1, same successor)."""
    nxt = np.zeros((1, 2, 2), dtype=np.int32)
    prob = np.array([[[1.0, 0.0], [0.5, 0.5]]])
    rew = np.array([[[0.0, 0.0], [1.0, -1.0]]])
    return qr.MDP.from_successors(nxt, prob, rew)


# --------------------------------------------------------------------------------------------
# enumeration and the path integral
# --------------------------------------------------------------------------------------------
def test_enumeration_matches_brute_force(problem):
    mdp, H, (bs, ba, blw, bret) = problem
    p = qp.enumerate_paths(mdp, H)
    assert qp.count_paths(mdp, H) == len(bret) == p.states.shape[0]
    assert p.states.shape == (len(bret), H + 1) and p.actions.shape == (len(bret), H)
    got = sort_rows(np.asarray(p.states), np.asarray(p.actions), np.asarray(p.log_weight),
                    np.asarray(p.ret))
    want = sort_rows(bs, ba, blw, bret)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[2], want[2], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got[3], want[3], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("T", TEMPS)
def test_path_integral_equals_free_energy_and_brute_force(problem, T):
    mdp, H, (_, _, blw, bret) = problem
    F = qp.path_integral(mdp, T, H)
    np.testing.assert_allclose(F, qr.free_energy(mdp, T, H), rtol=1e-10, atol=1e-10)
    want = bret.max() if T == 0 else T * logsumexp(blw + bret / T)
    np.testing.assert_allclose(F, want, rtol=1e-10, atol=1e-12)


def test_path_integral_random_mdp_batched():
    """qr.random_mdp (stochastic; the fixture cases above include deterministic random MDPs),
    all five temperatures in one batch; the batch equals the loop; the enumeration count equals
    the DP count."""
    branching = 3
    mdp = qr.random_mdp(jax.random.PRNGKey(branching), 5, 3, branching=branching,
                        reward_scale=3.0)
    H = 4
    F = qp.path_integral(mdp, np.array(TEMPS), H)
    assert F.shape == (len(TEMPS),)
    np.testing.assert_allclose(F, qr.free_energy(mdp, np.array(TEMPS), H), rtol=1e-10,
                               atol=1e-10)
    np.testing.assert_allclose(F, [qp.path_integral(mdp, T, H) for T in TEMPS], rtol=1e-14)
    assert qp.count_paths(mdp, H) == qp.enumerate_paths(mdp, H).ret.shape[0] == 5 * (
        3 * branching) ** H


def test_duplicate_outcomes_merge_into_one_path():
    """A slippery gridworld lists the same successor twice when it bumps into walls: those
    outcomes are one path (no duplicate rows), and the sums still equal the kernels'."""
    mdp = qr.gridworld(layout="S.#\n..G\n#..", slip=0.2)
    H = 3
    p = qp.enumerate_paths(mdp, H)
    key = np.concatenate([p.states, p.actions], axis=1)
    assert np.unique(key, axis=0).shape[0] == key.shape[0]
    P, R = mdp.dense()
    bs, ba, blw, bret = all_paths(P, R, np.asarray(mdp.init), np.asarray(mdp.policy), H)
    assert key.shape[0] == len(bret)
    got = sort_rows(np.asarray(p.states), np.asarray(p.actions), np.asarray(p.log_weight))
    np.testing.assert_allclose(got[2], sort_rows(bs, ba, blw)[2], rtol=1e-12)
    for T in [1.0, 0.05, 0.0]:
        np.testing.assert_allclose(qp.path_integral(mdp, T, H), qr.free_energy(mdp, T, H),
                                   rtol=1e-10, atol=1e-12)
    # same successor with different rewards: separate paths (3 per step in `risky`)
    assert qp.count_paths(risky(), 3) == 27
    assert qp.enumerate_paths(risky(), 3).ret.shape == (27,)


def test_enumeration_limit_names_the_count():
    mdp = dense_case(0, 4, 2, stochastic=False)  # 4 starts x 2 actions per step
    with pytest.raises(QuasirlValueError, match=r"would give 128 paths, more than limit=100"):
        qp.enumerate_paths(mdp, 5, limit=100)
    assert isinstance(QuasirlValueError("x"), ValueError)
    with pytest.raises(ValueError, match=r"would give about 4\.612e\+18 paths"):
        qp.path_integral(mdp, 1.0, 60)
    assert qp.enumerate_paths(mdp, 5, limit=128).ret.shape == (128,)


def test_horizon_zero():
    mdp = dense_case(3, 3, 2)
    p = qp.enumerate_paths(mdp, 0)
    assert p.states.shape == (3, 1) and p.actions.shape == (3, 0)
    np.testing.assert_allclose(qp.path_integral(mdp, np.array([1.0, 0.0]), 0), [0.0, 0.0],
                               atol=1e-15)
    np.testing.assert_allclose(qp.optimal_path_mass(mdp, 1.0, 0), 1.0)
    assert qp.num_optimal_paths(mdp, 0) == 3
    assert qp.best_paths(mdp, 0, 2).states.shape == (2, 1)


# --------------------------------------------------------------------------------------------
# tempered law over paths and optimal-path mass
# --------------------------------------------------------------------------------------------
def test_path_distribution_matches_brute_force(problem):
    mdp, H, (bs, ba, blw, bret) = problem
    Ts = np.array([2.0, 0.1, 0.0])
    paths, prob = qp.path_distribution(mdp, Ts, H)
    assert prob.shape == (3, len(bret))
    got = sort_rows(np.asarray(paths.states), np.asarray(paths.actions), np.asarray(prob).T)[2]
    bs_, ba_, blw_, bret_ = sort_rows(bs, ba, blw, bret)
    for i, T in enumerate(Ts):
        if T > 0:
            want = np.exp(blw_ + bret_ / T - logsumexp(blw_ + bret_ / T))
        else:
            top = bret_ >= bret_.max() - 1e-9
            want = np.where(top, np.exp(blw_ - logsumexp(blw_[top])), 0.0)
        np.testing.assert_allclose(got[:, i], want, rtol=1e-9, atol=1e-15)


def test_optimal_path_mass_dp_equals_enumeration(problem):
    mdp, H, (_, _, blw, bret) = problem
    Ts = np.array([10.0, 1.0, 0.3, 0.1, 0.01, 0.0])
    mass = qp.optimal_path_mass(mdp, Ts, H)
    rest = qp.suboptimal_path_mass(mdp, Ts, H)
    top = bret >= bret.max() - 1e-9
    for i, T in enumerate(Ts):
        if T == 0:
            want = 1.0
        else:
            x = blw + bret / T
            want = np.exp(logsumexp(x[top]) - logsumexp(x))
        np.testing.assert_allclose(mass[i], want, rtol=1e-9)
        np.testing.assert_allclose(rest[i], 1.0 - want, rtol=1e-7, atol=1e-13)
    # the batch equals the loop
    np.testing.assert_allclose(mass, [qp.optimal_path_mass(mdp, T, H) for T in Ts], rtol=1e-13)


def test_optimal_path_mass_closed_form_and_tiny_complement():
    """Coin MDP: P_T(optimal) = (1 + e^{-1/T})^{-H}; its complement stays accurate at 1e-40."""
    H = 7
    Ts = np.array([3.0, 0.5, 0.1, 0.02, 0.01])
    mass = np.asarray(qp.optimal_path_mass(coin(), Ts, H))
    np.testing.assert_allclose(mass, (1 + np.exp(-1 / Ts)) ** -H, rtol=1e-12)
    rest = np.asarray(qp.suboptimal_path_mass(coin(), Ts, H))
    np.testing.assert_allclose(rest, -np.expm1(-H * np.log1p(np.exp(-1 / Ts))), rtol=1e-10)
    assert 1e-44 < rest[-1] < 1e-41


@pytest.mark.parametrize("which", ["coin", "risky"])
def test_mass_decays_like_the_predicted_asymptote(which):
    """Delta, N_2 and W_1 are known by construction; 1 - mass -> (N_2/W_1) e^{-Delta/T}."""
    H = 6
    mdp = coin() if which == "coin" else risky()
    g = qp.return_gap(mdp, H)
    if which == "coin":  # R* = H (one path, w = 2^-H); H paths one short, each w = 2^-H
        want = dict(best=H, delta=1.0, log_w1=-H * np.log(2), log_n2=np.log(H) - H * np.log(2),
                    count_best=1, count_second=H)
    else:  # R* = H (w = 4^-H); one 'safe' step instead: H paths, w = 4^-(H-1) / 2
        want = dict(best=H, delta=1.0, log_w1=-H * np.log(4),
                    log_n2=np.log(H) - (H - 1) * np.log(4) - np.log(2), count_best=1,
                    count_second=H)
    for k, v in want.items():
        np.testing.assert_allclose(getattr(g, k), v, rtol=1e-12, err_msg=k)
    Ts = np.array([0.15, 0.1, 0.06])
    rest = 1.0 - np.asarray(qp.optimal_path_mass(mdp, Ts, H))
    ratio = rest / g.asymptote(Ts)
    assert np.all(np.abs(ratio - 1.0) < 0.05), ratio
    assert np.all(np.diff(np.abs(ratio - 1.0)) < 0)  # the prediction improves as T falls


def test_return_spectrum_against_brute_force(problem):
    mdp, H, (_, _, blw, bret) = problem
    m = 4
    sp = qp.return_spectrum(mdp, H, m)
    levels = defaultdict(list)
    for r, lw in zip(np.round(bret, 9), blw, strict=True):
        levels[r].append(lw)
    keys = sorted(levels, reverse=True)[:m]
    n = len(keys)
    np.testing.assert_allclose(sp.returns[:n], keys, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sp.log_weight[:n], [logsumexp(levels[k]) for k in keys],
                               rtol=1e-12)
    np.testing.assert_array_equal(sp.count[:n], [len(levels[k]) for k in keys])
    assert np.all(np.isneginf(sp.returns[n:])) and np.all(sp.count[n:] == 0)
    assert qp.num_optimal_paths(mdp, H) == len(levels[keys[0]])
    g = qp.return_gap(mdp, H)
    np.testing.assert_allclose(g.delta, keys[0] - keys[1], rtol=1e-10)
    np.testing.assert_allclose(g.n2, np.exp(logsumexp(levels[keys[1]])), rtol=1e-10)


def test_return_spectrum_binomial_closed_form():
    H = 9
    sp = qp.return_spectrum(coin(), H, 5)
    j = np.arange(5)
    counts = np.array([math.comb(H, int(i)) for i in j])
    np.testing.assert_allclose(sp.returns, H - j, rtol=1e-14)
    np.testing.assert_array_equal(sp.count, counts)
    np.testing.assert_allclose(sp.log_weight, np.log(counts) - H * np.log(2), rtol=1e-13)
    # all paths tie: the gap is infinite, there is no second level
    flat = qr.MDP.deterministic(np.array([[0, 0]]), np.array([[0.5, 0.5]]))
    g = qp.return_gap(flat, 4)
    assert g.delta == np.inf and g.count_second == 0 and g.count_best == 16
    np.testing.assert_allclose(g.asymptote(np.array([0.1, 0.0])), [0.0, 0.0])


# --------------------------------------------------------------------------------------------
# k best paths
# --------------------------------------------------------------------------------------------
def check_paths_valid(mdp, paths):
    """Each row is a path of the MDP with the stated weight and return (dense recomputation)."""
    P, R = mdp.dense()
    init, pol = np.asarray(mdp.init), np.asarray(mdp.policy)
    for s, a, lw, r in zip(np.asarray(paths.states), np.asarray(paths.actions),
                           np.asarray(paths.log_weight), np.asarray(paths.ret), strict=True):
        w = np.log(init[s[0]]) + sum(np.log(pol[s[t], a[t]] * P[s[t], a[t], s[t + 1]])
                                     for t in range(len(a)))
        ret = sum(R[s[t], a[t], s[t + 1]] for t in range(len(a)))
        np.testing.assert_allclose([lw, r], [w, ret], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [1, 5, 40])
def test_best_paths_equal_sorted_enumeration(problem, k):
    mdp, H, (bs, ba, blw, bret) = problem
    bp = qp.best_paths(mdp, H, k)
    order = np.argsort(-bret, kind="stable")
    kk = min(k, len(bret))
    assert bp.ret.shape == (kk,)
    np.testing.assert_allclose(bp.ret, bret[order[:kk]], rtol=1e-12, atol=1e-12)
    check_paths_valid(mdp, bp)
    key = {tuple(r) for r in np.concatenate([bp.states, bp.actions], axis=1).tolist()}
    assert len(key) == kk  # distinct paths
    if kk < len(bret) and bret[order[kk - 1]] > bret[order[kk]] + 1e-9:
        want = {tuple(r) for r in np.concatenate([bs, ba], axis=1)[order[:kk]].tolist()}
        assert key == want


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), H=st.integers(1, 4), k=st.integers(1, 30),
       stochastic=st.booleans())
def test_best_paths_and_counts_property(seed, H, k, stochastic):
    P, R, init, policy = random_problem(seed, S=3, A=2, stochastic=stochastic)
    mdp = qr.MDP(P, R, init=init, policy=policy)
    _, _, _, bret = all_paths(P, R, init, policy, H)
    assert qp.count_paths(mdp, H) == len(bret)
    bp = qp.best_paths(mdp, H, k)
    np.testing.assert_allclose(bp.ret, np.sort(bret)[::-1][:k], rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------
# scale: a 10^6-state gridworld through the DP functions
# --------------------------------------------------------------------------------------------
def test_million_state_gridworld_dp():
    """Goal 5 moves from the start, H = 8: the optimal paths are the C(5,2) monotone routes
    times 4^3 ways to idle in the absorbing goal; every DP number equals enumeration on a 12 x 12
    grid, which holds the same reachable corner."""
    H = 8
    big = qr.gridworld(1000, 1000, goal=(2, 3))
    assert big.num_states == 10**6
    small = qr.gridworld(12, 12, goal=(2, 3))
    assert qp.num_optimal_paths(big, H) == math.comb(5, 2) * 4**3
    Ts = np.array([1.0, 0.1, 0.02, 0.0])
    mass = qp.optimal_path_mass(big, Ts, H)
    _, prob = qp.path_distribution(small, Ts, H)
    paths = qp.enumerate_paths(small, H)
    top = np.asarray(paths.ret) >= np.asarray(paths.ret).max() - 1e-9
    np.testing.assert_allclose(mass, np.asarray(prob)[:, top].sum(axis=1), rtol=1e-9)
    g_big, g_small = qp.return_gap(big, H), qp.return_gap(small, H)
    np.testing.assert_allclose(g_big.best, 1.0 - 0.04 * 5, rtol=1e-12)
    np.testing.assert_allclose(g_big[:5], g_small[:5], rtol=1e-12)
    assert g_big.count_second == g_small.count_second
    bp = qp.best_paths(big, H, 50)
    order = np.argsort(-np.asarray(paths.ret), kind="stable")
    np.testing.assert_allclose(bp.ret, np.asarray(paths.ret)[order[:50]], rtol=1e-12)
    assert np.all(np.asarray(bp.states)[:, 5] == 2 * 1000 + 3)  # all at the goal after 5 steps


# --------------------------------------------------------------------------------------------
# the unrolled graph and the tempered flow
# --------------------------------------------------------------------------------------------
def test_unrolled_graph_paths_and_flows(problem2):
    mdp, H, (_, _, blw, bret) = problem2
    G = qp.unrolled_graph(mdp, H, T=0.5)
    assert isinstance(G, nx.DiGraph) and nx.is_directed_acyclic_graph(G)
    assert {d["t"] for _, d in G.nodes(data=True)} == set(range(H + 1))
    src = [n for n in G if n[0] == 0]
    G2 = G.copy()
    for n in src:
        G2.add_edge("root", n, key="root")
    # every layer-0 -> layer-H path of the graph is a path of the MDP, and vice versa
    ends = [n for n in G if n[0] == H]
    n_graph = sum(1 for e in ends for _ in nx.all_simple_edge_paths(G2, "root", e))
    assert n_graph == len(bret)
    for _, _, d in G.edges(data=True):
        assert d["weight"] > 0 and 0 < d["prob"] <= 1 and d["policy"] > 0
    for t in range(H):
        layer = sum(d["flow"] for u, _, d in G.edges(data=True) if u[0] == t)
        np.testing.assert_allclose(layer, 1.0, rtol=1e-12)
    # node flow at the end layer = tempered probability of ending there (brute force)
    states = np.asarray(qp.enumerate_paths(mdp, H).states)
    paths, prob = qp.path_distribution(mdp, 0.5, H)
    for e in ends:
        want = np.asarray(prob)[np.asarray(paths.states)[:, -1] == e[1]].sum()
        np.testing.assert_allclose(G.nodes[e]["flow"], want, rtol=1e-10, atol=1e-15)
    assert states.shape[0] == len(bret)


def test_path_flow_against_occupancy_and_enumeration(problem2):
    mdp, H, _ = problem2
    Ts = np.array([1.0, 0.2, 0.0])
    flow = np.asarray(qp.path_flow(mdp, Ts, H))
    S, A, K = mdp.shape
    assert flow.shape == (3, H, S, A, K)
    np.testing.assert_allclose(flow.sum(axis=(2, 3, 4)), 1.0, rtol=1e-12)
    np.testing.assert_allclose(flow[1].sum(axis=0), qr.occupancy(mdp, 0.2, H), rtol=1e-9,
                               atol=1e-13)
    # per-step flow into each state = tempered law of s_{t+1}, from enumeration (T > 0 and 0)
    paths, prob = qp.path_distribution(mdp, Ts, H)
    st_ = np.asarray(paths.states)
    nxt = np.asarray(mdp.next)
    for i in range(3):
        for t in range(H):
            into = np.zeros(S)
            np.add.at(into, nxt.reshape(-1), flow[i, t].reshape(-1))
            want = np.bincount(st_[:, t + 1], weights=np.asarray(prob)[i], minlength=S)
            np.testing.assert_allclose(into, want, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(flow[1], qp.path_flow(mdp, 0.2, H), rtol=1e-13)


# --------------------------------------------------------------------------------------------
# infinite horizon
# --------------------------------------------------------------------------------------------
def cycle_oracle(mdp):
    """max over simple cycles (networkx) of the mean of the best reward on each edge."""
    P, R = mdp.dense()
    pol = np.asarray(mdp.policy)
    G = nx.DiGraph()
    S, A, _ = P.shape
    for s, a, s2 in itertools.product(range(S), range(A), range(S)):
        if P[s, a, s2] > 0 and pol[s, a] > 0:
            if not G.has_edge(s, s2) or G[s][s2]["r"] < R[s, a, s2]:
                G.add_edge(s, s2, r=R[s, a, s2])
    return max(np.mean([G[c[i]][c[(i + 1) % len(c)]]["r"] for i in range(len(c))])
               for c in nx.simple_cycles(G))


def dense_A(mdp, T):
    P, R = mdp.dense()
    return np.einsum("sa,sap->sp", np.asarray(mdp.policy), P * np.exp(R / T))


INF_CASES = [
    ("stochastic", lambda: dense_case(11, 7, 2)),
    ("deterministic", lambda: dense_case(12, 8, 3, stochastic=False)),
    ("sparse-policy", lambda: dense_case(4, 5, 3, nonuniform=True)),
]


@pytest.mark.parametrize("name,make", INF_CASES, ids=[c[0] for c in INF_CASES])
def test_karp_and_growth_rate_bounds(name, make):
    mdp = make()
    cm = qp.max_cycle_mean(mdp)
    np.testing.assert_allclose(cm.value, cycle_oracle(mdp), rtol=1e-12, atol=1e-12)
    # the returned cycle is a cycle of the MDP with that mean and weight
    P, R = mdp.dense()
    pol = np.asarray(mdp.policy)
    s, a = cm.states, cm.actions
    s2 = np.roll(s, -1)
    assert np.all(P[s, a, s2] > 0)
    np.testing.assert_allclose(R[s, a, s2].mean(), cm.value, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cm.log_weight, np.log(pol[s, a] * P[s, a, s2]).sum(), rtol=1e-12)
    Ts = np.array([5.0, 1.0, 0.3, 0.1, 0.03, 0.0])
    rate = np.asarray(qp.growth_rate(mdp, Ts))
    for T, g in zip(Ts[:3], rate[:3], strict=True):
        rho = np.max(np.abs(np.linalg.eigvals(dense_A(mdp, T))))
        np.testing.assert_allclose(g, T * np.log(rho), rtol=1e-10, atol=1e-12)
    lower = cm.value + Ts / cm.length * cm.log_weight
    assert np.all(lower <= rate + 1e-12) and np.all(rate <= cm.value + 1e-12)
    assert rate[-1] == cm.value
    assert np.all(np.diff(rate) >= -1e-12)  # the rate rises to mu* as T falls


def test_growth_rate_is_the_long_horizon_free_energy_slope():
    """Independent of Perron: F(T, H+1) - F(T, H) -> T log rho (core forward recursion)."""
    mdp = dense_case(13, 7, 2)  # |lambda_2 / rho| <= 0.63 at these T: 300 steps converge
    for T in [1.0, 0.05]:
        slope = qr.free_energy(mdp, T, 301) - qr.free_energy(mdp, T, 300)
        np.testing.assert_allclose(qp.growth_rate(mdp, T), slope, rtol=1e-9, atol=1e-10)


def with_trap(seed=5, trap_reward=-4.0):
    """A random 4-state MDP whose action 1 leaks into an absorbing trap of low growth."""
    P, R, _, _ = random_problem(seed, S=5, A=2, nonuniform=False)
    P[4] = 0.0
    P[4, :, 4] = 1.0
    R[4] = trap_reward
    P[:4, :, 4] = 0.0
    P[:4, :, :4] += 0.05
    P[:4, 0] /= P[:4, 0].sum(-1, keepdims=True)
    P[:4, 1, :4] *= 0.7 / P[:4, 1, :4].sum(-1, keepdims=True)
    P[:4, 1, 4] = 0.3
    return qr.MDP(P, R)


@pytest.mark.parametrize("T", [2.0, 0.5, 0.2])
def test_lineage_chain_identity_and_perron_vectors(T):
    mdp = with_trap()
    L = qp.lineage_chain(mdp, T)
    np.testing.assert_array_equal(L.states, [0, 1, 2, 3])  # the trap is downstream
    np.testing.assert_allclose(L.transition.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(L.action_prob.sum(axis=1), 1.0, rtol=1e-12)
    assert np.all(L.transition >= 0)
    np.testing.assert_allclose(L.stationary @ L.transition, L.stationary, atol=1e-12)
    np.testing.assert_allclose(L.rate, L.mean_reward - T * np.sum(L.stationary * L.kl),
                               rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(L.rate, qp.growth_rate(mdp, T), rtol=1e-12)
    # dense oracle: Perron vectors of A_T restricted to the component
    A = dense_A(mdp, T)[:4, :4]
    lam, vecs = np.linalg.eig(A)
    i = np.argmax(lam.real)
    z = np.abs(vecs[:, i].real)
    Pstar = A * z[None, :] / (lam[i].real * z[:, None])
    np.testing.assert_allclose(L.transition, Pstar, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(L.value, T * np.log(z / z.max()), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("make", [with_trap, lambda: dense_case(13, 7, 2)])
def test_stationary_population_is_the_long_run_population(make):
    mdp = make()
    T = 0.5
    pop = np.asarray(qp.stationary_population(mdp, T))
    np.testing.assert_allclose(pop, qr.evolve(mdp, T, 600).population, rtol=1e-9, atol=1e-14)
    lam, vecs = np.linalg.eig(dense_A(mdp, T).T)
    v = np.abs(vecs[:, np.argmax(lam.real)].real)
    np.testing.assert_allclose(pop, v / v.sum(), rtol=1e-9, atol=1e-14)


LMDP_CASES = [
    ("chain-slip", lambda: qr.chain(7, goal_reward=1.0, step_cost=0.1, slip=0.2)),
    ("grid-pit", lambda: qr.gridworld(layout="S..#\n.#.G\n...X", step_cost=0.05)),
    ("grid-no-cost", lambda: qr.gridworld(layout="S...\n.#.G\n....", step_cost=0.0)),
]


@pytest.mark.parametrize("name,make", LMDP_CASES, ids=[c[0] for c in LMDP_CASES])
def test_lmdp_linear_solve_equals_recursion(name, make):
    mdp = make()
    Ts = np.array([1.0, 0.3, 0.05, 0.0])
    sol = qp.lmdp_desirability(mdp, Ts, )
    H = 2500
    z = np.asarray(qr.desirability(mdp, Ts, H))[:, 0]
    np.testing.assert_allclose(sol.value, z, rtol=1e-9, atol=1e-9)
    ctrl = np.asarray(sol.control)
    np.testing.assert_allclose(ctrl.sum(axis=(2, 3)), 1.0, rtol=1e-12)
    # the controlled dynamics are the soft policy of a long horizon (core kernel)
    pol = np.asarray(qr.soft_policy(mdp, Ts[:3], H))[:, 0]
    np.testing.assert_allclose(ctrl[:3].sum(axis=3), pol, rtol=1e-8, atol=1e-10)
    # scalar T gives the batch row
    np.testing.assert_allclose(qp.lmdp_desirability(mdp, 0.3).value, sol.value[1], rtol=1e-14)


def test_lmdp_zero_temperature_control_is_the_limit():
    mdp = qr.gridworld(layout="S...\n.#.G\n....", step_cost=0.05)
    c0 = np.asarray(qp.lmdp_desirability(mdp, 0.0).control)
    c1 = np.asarray(qp.lmdp_desirability(mdp, 2e-3).control)
    np.testing.assert_allclose(c0, c1, atol=1e-6)


# --------------------------------------------------------------------------------------------
# dtype, bad input
# --------------------------------------------------------------------------------------------
def test_float32_mdp():
    P, R, init, policy = random_problem(2, S=4, A=2)
    mdp = qr.MDP(P.astype(np.float32), R.astype(np.float32), init=init.astype(np.float32),
                 policy=policy.astype(np.float32))
    H = 3
    m = qp.optimal_path_mass(mdp, np.array([1.0, 0.1, 0.0]), H)
    assert m.dtype == np.float32
    _, _, blw, bret = all_paths(P, R.astype(np.float32).astype(np.float64), init, policy, H)
    top = bret >= bret.max() - 1e-6
    want = [np.exp(logsumexp((blw + bret / T)[top]) - logsumexp(blw + bret / T))
            for T in [1.0, 0.1]] + [1.0]
    np.testing.assert_allclose(m, want, rtol=1e-4)
    F = qp.path_integral(mdp, 0.5, H)
    assert F.dtype == np.float32
    np.testing.assert_allclose(F, qr.free_energy(mdp, 0.5, H), rtol=1e-5)


def test_bad_input():
    mdp = dense_case(0, 3, 2)
    with pytest.raises(QuasirlValueError, match="mdp must be a quasirl.MDP, got ndarray"):
        qp.enumerate_paths(np.zeros((3, 2, 3)), 2)
    with pytest.raises(QuasirlValueError, match="horizon must be >= 0, got -1"):
        qp.optimal_path_mass(mdp, 1.0, -1)
    with pytest.raises(QuasirlValueError, match="horizon must be an integer"):
        qp.best_paths(mdp, 2.5, 3)
    with pytest.raises(QuasirlValueError, match=r"T must be finite and >= 0, but T\[1\] = -1"):
        qp.path_integral(mdp, np.array([1.0, -1.0]), 2)
    with pytest.raises(QuasirlValueError, match="k must be >= 1, got 0"):
        qp.best_paths(mdp, 2, 0)
    with pytest.raises(QuasirlValueError, match="limit must be >= 1, got -5"):
        qp.enumerate_paths(mdp, 2, limit=-5)
    with pytest.raises(QuasirlValueError, match="levels must be >= 1, got 0"):
        qp.return_spectrum(mdp, 2, levels=0)
    with pytest.raises(QuasirlValueError, match="lineage_chain needs T > 0"):
        qp.lineage_chain(mdp, 0.0)
    with pytest.raises(QuasirlValueError, match="takes a scalar T"):
        qp.stationary_population(mdp, np.array([1.0, 2.0]))
    with pytest.raises(QuasirlValueError, match="unrolled_graph takes a scalar T"):
        qp.unrolled_graph(mdp, 2, T=np.array([1.0, 2.0]))
    with pytest.raises(QuasirlValueError, match=r"exits must have shape \[S\] = \(3,\)"):
        qp.lmdp_desirability(mdp, 1.0, exits=np.ones(4, dtype=bool))
    with pytest.raises(QuasirlValueError, match="no exit states"):
        qp.lmdp_desirability(mdp, 1.0)
    # several absorbing goals tie for the growth rate: no unique lineage chain
    with pytest.raises(QuasirlValueError, match="attained by .* strongly connected components"):
        qp.lineage_chain(qr.gridworld(layout=qr.mdp.DEFAULT_LAYOUT), 0.5)
    # positive rewards for staying inside: the interior outgrows its exit
    grow = qr.chain(4, goal_reward=0.0, step_cost=-1.0)
    with pytest.raises(QuasirlValueError, match="no finite solution at T = 0.1"):
        qp.lmdp_desirability(grow, 0.1)
    with pytest.raises(QuasirlValueError, match="no finite T = 0 solution"):
        qp.lmdp_desirability(grow, 0.0)

    def traced(r):
        return qp.optimal_path_mass(mdp.replace(reward=r), 1.0, 2)

    with pytest.raises(QuasirlValueError, match="concrete arrays"):
        jax.jit(traced)(mdp.reward)


# --------------------------------------------------------------------------------------------
# the CLI
# --------------------------------------------------------------------------------------------
def test_paths_cli_writes_figures_and_consistent_numbers(tmp_path, capsys):
    import json

    from quasirl.cli import main
    from quasirl.cli.paths import LAYOUT, REWARDS, STEP_COST

    assert main(["paths", "--out", str(tmp_path), "--quick"]) == 0
    for name in ("optimal_mass_asymptote.png", "unrolled_flow.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["num_paths"] == s["num_paths_dp"] == 4**6
    assert s["max_abs_path_integral_minus_free_energy"] < 1e-10
    assert s["max_abs_mass_dp_minus_enumerated"] < 1e-9
    assert abs(s["ratio_at_smallest_T"] - 1.0) < 0.05
    mdp = qr.gridworld(layout=LAYOUT, rewards=REWARDS, step_cost=STEP_COST)
    T = np.asarray(s["temperatures"])
    np.testing.assert_allclose(s["free_energy"], qr.free_energy(mdp, T, 6), rtol=1e-12)
    np.testing.assert_allclose(s["best_return"], 2.0 - 5 * STEP_COST, rtol=1e-12)
    np.testing.assert_allclose(s["delta"], STEP_COST, rtol=1e-9)  # one wasted move
    assert s["num_optimal_paths"] == qp.num_optimal_paths(mdp, 6)
    assert "P(optimal) DP" in capsys.readouterr().out


def test_paths_cli_bad_argument_is_one_line(capsys):
    from quasirl.cli import main

    assert main(["paths", "--horizon", "12", "--out", "/tmp/unused-quasirl"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: horizon must lie in [1, 8] (paths are enumerated), got 12"
    assert main(["paths", "--temps", "x"]) == 2
    assert "Traceback" not in capsys.readouterr().err
