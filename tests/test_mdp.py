"""The MDP model: sparse storage, constructors and validation at the boundary."""

import jax
import networkx as nx
import numpy as np
import pytest

import quasirl as qr


def test_dense_roundtrip_and_sparse_width():
    rng = np.random.default_rng(0)
    P = rng.random((5, 3, 5)) * (rng.random((5, 3, 5)) < 0.5)
    P[..., 0] += 0.1
    P /= P.sum(-1, keepdims=True)
    R = rng.normal(size=(5, 3, 5))
    m = qr.MDP(P, R)
    S, A, K = m.shape
    assert (S, A) == (5, 3)
    assert K == int((P > 0).sum(-1).max())
    P2, R2 = m.dense()
    np.testing.assert_allclose(P2, P, rtol=1e-15)
    np.testing.assert_allclose(R2[P > 0], R[P > 0], rtol=1e-15)
    np.testing.assert_allclose(m.init, np.full(5, 0.2))
    np.testing.assert_allclose(m.policy, np.full((5, 3), 1 / 3))
    # reverse lists hold exactly the live outcomes
    pred = np.asarray(m.pred)
    live = pred < S * A * K
    assert live.sum() == (np.asarray(m.prob) > 0).sum()
    assert np.all(np.asarray(m.next).reshape(-1)[pred[live]] == np.nonzero(live)[0])


def test_deterministic_has_K1_and_matches_dense():
    nxt = np.array([[1, 2], [2, 0], [0, 0]])
    rew = np.array([[1.0, -1.0], [0.5, 0.0], [2.0, 3.0]])
    m = qr.MDP.deterministic(nxt, rew)
    assert m.shape == (3, 2, 1) and m.is_deterministic
    P = np.zeros((3, 2, 3))
    P[np.arange(3)[:, None], np.arange(2), nxt] = 1
    R = np.broadcast_to(rew[:, :, None], P.shape)
    d = qr.MDP(P, R)
    for T in [1.0, 0.0]:
        np.testing.assert_allclose(qr.free_energy(m, T, 4), qr.free_energy(d, T, 4), rtol=1e-13)


def test_pytree_roundtrip_and_immutability():
    m = qr.chain(5)
    leaves, tree = jax.tree_util.tree_flatten(m)
    m2 = jax.tree_util.tree_unflatten(tree, leaves)
    np.testing.assert_allclose(qr.free_energy(m2, 0.5, 6), qr.free_energy(m, 0.5, 6))
    with pytest.raises(AttributeError):
        m.reward = None
    r = m.replace(reward=np.asarray(m.reward) * 2)
    np.testing.assert_allclose(qr.optimal_value(r, 6), 2 * qr.optimal_value(m, 6))


def test_chain_values():
    m = qr.chain(6, goal_reward=1.0, step_cost=0.1)
    # 5 steps right: 1 - 5 * 0.1, then the goal is absorbing with reward 0
    np.testing.assert_allclose(qr.optimal_value(m, 8), 0.5, rtol=1e-12)
    np.testing.assert_allclose(qr.optimal_value(m, 4), -0.4, rtol=1e-12)
    s = qr.chain(6, goal_reward=1.0, step_cost=0.1, slip=0.2)
    assert s.shape == (6, 2, 2)
    np.testing.assert_allclose(qr.optimal_value(s, 8), 0.5, rtol=1e-12)  # lucky path = same
    assert qr.bellman_value(s, 8) < 0.5


def test_gridworld_layout_and_routes():
    m = qr.gridworld(layout=qr.mdp.DEFAULT_LAYOUT)
    S, A, K = m.shape
    assert A == 4 and K == 1
    # walls and terminals are absorbing with zero reward
    rows = [r.strip() for r in qr.mdp.DEFAULT_LAYOUT.strip().splitlines()]
    flat = "".join(rows)
    W = len(rows[0])
    for s, c in enumerate(flat):
        if c in "#GgX":
            assert np.all(np.asarray(m.next)[s, :, 0] == s)
            assert np.all(np.asarray(m.reward)[s] == 0)
    # the best return is the far goal G (+3) minus its shortest-path step cost
    G = flat.index("G")
    g = nx.grid_2d_graph(len(rows), W)
    g.remove_nodes_from([divmod(i, W) for i, c in enumerate(flat) if c in "#gX"])
    d = nx.shortest_path_length(g, (0, 0), divmod(G, W))
    np.testing.assert_allclose(qr.optimal_value(m, 30), 3.0 - 0.04 * d, rtol=1e-12)


def test_gridworld_large_builds_sparse():
    m = qr.gridworld(1000, 1000)
    assert m.shape == (1_000_000, 4, 1)
    np.testing.assert_allclose(qr.optimal_value(m, 3), -0.12, rtol=1e-12)


def test_gridworld_slip():
    m = qr.gridworld(4, 4, slip=0.2)
    assert m.shape == (16, 4, 3)
    np.testing.assert_allclose(np.asarray(m.prob).sum(-1), 1.0)


def test_random_mdp_reproducible():
    k = jax.random.PRNGKey(4)
    a, b = qr.random_mdp(k, 10, 3, 2), qr.random_mdp(k, 10, 3, 2)
    np.testing.assert_array_equal(a.next, b.next)
    np.testing.assert_array_equal(a.reward, b.reward)
    c = qr.random_mdp(jax.random.PRNGKey(5), 10, 3, 2)
    assert not np.array_equal(a.reward, c.reward)
    assert a.shape == (10, 3, 2)
    assert np.all(np.asarray(a.next)[..., 0] != np.asarray(a.next)[..., 1])


def test_from_graph():
    G = nx.DiGraph()
    G.add_edge("a", "b", reward=1.0)
    G.add_edge("a", "c", reward=0.0)
    G.add_edge("b", "d", reward=0.0)
    G.add_edge("c", "d", reward=5.0)
    G.nodes["a"]["start"] = 1.0
    m = qr.from_graph(G, init="start")
    np.testing.assert_allclose(qr.optimal_value(m, 2), 5.0)
    # a -> {b, c} uniformly, then one edge each: Z = 0.5 e^{1/T} + 0.5 e^{5/T}
    T = 0.7
    want = T * np.log(0.5 * np.exp(1 / T) + 0.5 * np.exp(5 / T))
    np.testing.assert_allclose(qr.free_energy(m, T, 2), want, rtol=1e-12)
    # d has no out-edge: a zero-reward self loop
    np.testing.assert_allclose(qr.free_energy(m, T, 5), want, rtol=1e-12)


def test_mdp_inside_jit_with_traced_P_matches():
    rng = np.random.default_rng(1)
    P = rng.random((3, 2, 3))
    P[0, 0, 1] = 0.0
    P /= P.sum(-1, keepdims=True)
    R = rng.normal(size=(3, 2, 3))
    f = jax.jit(lambda p, r: qr.free_energy(qr.MDP(p, r), 0.5, 3))
    np.testing.assert_allclose(f(P, R), qr.free_energy(qr.MDP(P, R), 0.5, 3), rtol=1e-12)


# --------------------------------------------------------------------------------------------
# validation: each bad input names the argument and the first offending index
# --------------------------------------------------------------------------------------------
def _good():
    P = np.full((3, 2, 3), 1 / 3)
    R = np.zeros((3, 2, 3))
    return P, R


def test_rows_not_summing_to_one():
    P, R = _good()
    P[1, 0, 2] = 0.5
    with pytest.raises(ValueError, match=r"each row of P must sum to 1 \(tolerance 1e-06\), "
                                         r"but P\[1, 0\] sums to 1.1666"):
        qr.MDP(P, R)


def test_negative_probability():
    P, R = _good()
    P[2, 1, 0], P[2, 1, 1] = -0.1, 0.1 + 1 / 3 + 1e-17
    with pytest.raises(ValueError, match=r"P must be non-negative, but P\[2, 1, 0\] = -0.1"):
        qr.MDP(P, R)


def test_nan_and_inf():
    P, R = _good()
    P[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match=r"P must be finite, but P\[0, 1, 1\] = nan"):
        qr.MDP(P, R)
    P, R = _good()
    R[2, 0, 1] = np.inf
    with pytest.raises(ValueError, match=r"R must be finite, but R\[2, 0, 1\] = inf"):
        qr.MDP(P, R)


def test_mismatched_shapes():
    P, R = _good()
    with pytest.raises(ValueError, match=r"R must have shape \[S, A, S'\] = \(3, 2, 3\) or "
                                         r"\[S, A\] = \(3, 2\), got \(3, 3\)"):
        qr.MDP(P, np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"P must have shape \[S, A, S'\] with S' = S"):
        qr.MDP(np.full((3, 2, 4), 0.25), np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"init must have shape \[S\] = \(3,\), got \(4,\)"):
        qr.MDP(P, R, init=np.full(4, 0.25))
    with pytest.raises(ValueError, match=r"policy must have shape \[S, A\]"):
        qr.MDP(P, R, policy=np.full((3, 3), 1 / 3))
    with pytest.raises(ValueError, match=r"reward must have shape \[S, A\] = \(3, 2\)"):
        qr.MDP.deterministic(np.zeros((3, 2), int), np.zeros((3, 3)))


def test_init_and_policy_must_be_distributions():
    P, R = _good()
    with pytest.raises(ValueError, match=r"init must sum to 1 \(tolerance 1e-06\), but it "
                                         r"sums to 0.899"):
        qr.MDP(P, R, init=np.array([0.3, 0.3, 0.3]))
    with pytest.raises(ValueError, match=r"init must be non-negative, but init\[1\] = -0.5"):
        qr.MDP(P, R, init=np.array([1.0, -0.5, 0.5]))
    pol = np.full((3, 2), 0.5)
    pol[2] = [0.7, 0.7]
    with pytest.raises(ValueError, match=r"each row \(state\) of policy must sum to 1 .* "
                                         r"policy\[2\] sums to 1.4"):
        qr.MDP(P, R, policy=pol)


def test_successor_validation():
    with pytest.raises(ValueError, match=r"next_state must lie in \[0, 2\), but "
                                         r"next_state\[1, 0, 0\] = 5"):
        qr.MDP.from_successors(np.array([[[0]], [[5]]]), np.ones((2, 1, 1)), np.zeros((2, 1, 1)))
    with pytest.raises(ValueError, match="next_state must be integers"):
        qr.MDP.from_successors(np.zeros((2, 1, 1)), np.ones((2, 1, 1)), np.zeros((2, 1, 1)))
    with pytest.raises(ValueError, match="branching must lie in"):
        qr.random_mdp(jax.random.PRNGKey(0), 3, 2, branching=4)
    with pytest.raises(ValueError, match=r"layout rows must have equal length"):
        qr.gridworld(layout="S..\n..")
    with pytest.raises(ValueError, match=r"rewards has no entry for layout cell\(s\) \['Q'\]"):
        qr.gridworld(layout="S.Q")


def test_mdp_built_inside_jit_from_numpy_structure():
    """Users write jit(lambda r: free_energy(MDP(P, r), ...)) with P a numpy constant."""
    rng = np.random.default_rng(2)
    P = rng.random((4, 2, 4)) * (rng.random((4, 2, 4)) < 0.5)
    P[..., 0] += 0.1
    P /= P.sum(-1, keepdims=True)
    R = rng.normal(size=(4, 2, 4))
    f = jax.jit(lambda r: qr.free_energy(qr.MDP(P, r), 0.5, 3))
    np.testing.assert_allclose(f(R), qr.free_energy(qr.MDP(P, R), 0.5, 3), rtol=1e-12)
    nxt = rng.integers(0, 4, (4, 2))
    g = jax.jit(lambda r: qr.optimal_value(qr.MDP.deterministic(nxt, r), 3))
    np.testing.assert_allclose(g(R[..., 0]), qr.optimal_value(
        qr.MDP.deterministic(nxt, R[..., 0]), 3), rtol=1e-12)
    assert qr.MDP.deterministic(nxt, R[..., 0]).shape == (4, 2, 1)


def test_pickle_roundtrip():
    import pickle

    m = qr.gridworld(layout=qr.mdp.DEFAULT_LAYOUT, slip=0.1)
    m2 = pickle.loads(pickle.dumps(m))
    for a, b in zip(jax.tree_util.tree_leaves(m), jax.tree_util.tree_leaves(m2), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(qr.free_energy(m2, 0.3, 8), qr.free_energy(m, 0.3, 8))
