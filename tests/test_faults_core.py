"""Faults of the MDP core (issue 15): nothing silently wrong, every bad input a clear error.

Each test names the case of docs/reliability.md it holds; each failed on the code before the fix
(a wrong number, a raw numpy/JAX error, or no error at all).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracles import all_paths

import quasirl as qr
import quasirl.paths as qp
from quasirl import _dynamics as D
from quasirl._validate import QuasirlValueError


# --------------------------------------------------------------------------------------------
# MDP.dense() and successors merged into one state
# --------------------------------------------------------------------------------------------
def _merged(r1, r2):
    """State 0, one action, two outcomes that both enter state 1, with rewards r1 and r2."""
    nxt = np.array([[[1, 1]], [[1, 1]]])
    prob = np.array([[[0.5, 0.5]], [[1.0, 0.0]]])
    rew = np.array([[[r1, r2]], [[0.0, 0.0]]])
    return qr.MDP.from_successors(nxt, prob, rew, init=np.array([1.0, 0.0]))


def test_dense_refuses_merging_outcomes_with_different_rewards():
    with pytest.raises(QuasirlValueError, match=r"\(state 0, action 0\) enter state 1 with "
                                                r"different rewards"):
        _merged(0.0, 3.0).dense()


def test_dense_merges_outcomes_with_equal_rewards_exactly():
    m = _merged(2.0, 2.0)
    P, R = m.dense()
    np.testing.assert_allclose(P[0, 0], [0.0, 1.0])
    d = qr.MDP(P, R, init=np.array([1.0, 0.0]))
    for T in (0.0, 0.3, 2.0):
        np.testing.assert_allclose(qr.free_energy(d, T, 3), qr.free_energy(m, T, 3),
                                   rtol=1e-12)


# --------------------------------------------------------------------------------------------
# temperatures beyond what the dtype computes
# --------------------------------------------------------------------------------------------
def test_float32_refuses_temperatures_beyond_its_range():
    m = qr.chain(5, slip=0.1, dtype=np.float32)
    for T in (1e8, 1e300, [1.0, 1e8]):  # gave 37.6 (best return 1), -inf
        with pytest.raises(QuasirlValueError, match=r"beyond the range that float32 computes "
                                                    r"this MDP at horizon 10: T <= "):
            qr.free_energy(m, T, 10)
    for f in (lambda: qr.log_partition(m, 1e8, 10), lambda: qr.occupancy(m, 1e8, 10),
              lambda: qr.soft_policy(m, 1e8, 10), lambda: qr.evolve(m, 1e8, 10),
              lambda: qr.desirability(m, 1e8, 10)):
        with pytest.raises(QuasirlValueError, match="beyond the range"):
            f()


@pytest.mark.parametrize("make,H", [(lambda dt: qr.chain(5, slip=0.1, dtype=dt), 10),
                                    (lambda dt: qr.gridworld(4, 5, slip=0.1, dtype=dt), 12),
                                    (lambda dt: qr.random_mdp(jax.random.key(3), 20, 3, 2,
                                                              dtype=dt), 15)])
def test_temperature_limit_keeps_the_stated_accuracy(make, H):
    m32, m64 = make(np.float32), make(np.float64)
    limit = D.temperature_limit(m32, H)
    assert np.isfinite(limit) and limit > 10.0
    rbar = float(np.abs(np.asarray(m64.reward)).max())
    for kernel in ("xla", "native"):
        for T in (limit / 100, limit / 3, limit):
            got = float(qr.free_energy(m32, T, H, kernel=kernel))
            want = float(qr.free_energy(m64, T, H, kernel="xla"))
            assert abs(got - want) <= D.RANGE_TOL * max(1.0, H * rbar)
    # float64 computes the same MDP far beyond (the prior-averaged return as T -> oo)
    assert D.temperature_limit(m64, H) > 1e8 * limit
    mean_return = float(qr.free_energy(m64, 1e6, H))
    np.testing.assert_allclose(float(qr.free_energy(m64, 1e7, H)), mean_return, atol=1e-5)


def test_traced_temperatures_are_checked_when_the_computation_runs():
    m = qr.chain(5, slip=0.1, dtype=np.float32)
    f = jax.jit(lambda T: qr.free_energy(m, T, 10))
    np.testing.assert_allclose(f(1.0), qr.free_energy(m, 1.0, 10), rtol=1e-5)
    # gave 30.96 and -inf
    for T, msg in ((-1.0, "T must be finite and >= 0"), (float("nan"), "T must be finite"),
                   (1e8, "a traced T is beyond the range that float32")):
        with pytest.raises(Exception, match=msg):
            jax.block_until_ready(f(T))
    g = jax.jit(jax.vmap(lambda T: qr.free_energy(m, T, 10)))
    with pytest.raises(Exception, match="T must be finite and >= 0"):
        jax.block_until_ready(g(jnp.asarray([1.0, -2.0])))
    with pytest.raises(Exception, match="T must be finite and >= 0"):
        jax.block_until_ready(jax.grad(lambda T: qr.free_energy(m, T, 10))(-1.0))


# --------------------------------------------------------------------------------------------
# constructors: cells off the grid, empty dimensions, complex numbers
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,msg", [
    (dict(start=(0, -1)), r"start = \(0, -1\) lies off the 3 x 3 grid"),  # started in the goal
    (dict(start=(3, 0)), r"start = \(3, 0\) lies off"),                   # IndexError
    (dict(goal=(-1, 0)), r"goal = \(-1, 0\) lies off"),
    (dict(goal=(0, 7)), r"goal = \(0, 7\) lies off"),
    (dict(start=(0.5, 1)), "must be a pair of integers"),
    (dict(start=3), r"must be a \(row, col\) pair"),
])
def test_gridworld_cells_off_the_grid_are_refused(kw, msg):
    with pytest.raises(QuasirlValueError, match=msg):
        qr.gridworld(3, 3, **kw)


def test_gridworld_start_and_goal_inside_the_grid():
    g = qr.gridworld(3, 3, start=(2, 0), goal=(0, 2))
    np.testing.assert_allclose(np.asarray(g.init)[6], 1.0)
    np.testing.assert_allclose(float(qr.optimal_value(g, 4)), 1.0 - 4 * 0.04, rtol=1e-12)


@pytest.mark.parametrize("build,msg", [
    (lambda: qr.MDP(np.zeros((0, 2, 0)), np.zeros((0, 2))), "at least one state"),
    (lambda: qr.MDP(np.zeros((2, 0, 2)), np.zeros((2, 0))), "at least one action"),
    (lambda: qr.MDP.deterministic(np.zeros((2, 0), int), np.zeros((2, 0))), "at least one act"),
    (lambda: qr.MDP.from_successors(np.zeros((0, 1, 1), int), np.zeros((0, 1, 1)),
                                    np.zeros((0, 1, 1))), "at least one state"),
    (lambda: qr.random_mdp(jax.random.key(0), 4, 0), "A must be >= 1, got 0"),
    (lambda: qr.random_mdp(jax.random.key(0), 0, 2), "S must be >= 1, got 0"),
    (lambda: qr.MDP(np.full((1, 1, 1), 1 + 0j), np.zeros((1, 1))), "P must be real"),
    (lambda: qr.MDP(np.ones((1, 1, 1)), np.full((1, 1), 1 + 2j)), "R must be real"),
    (lambda: qr.chain(3).replace(reward=np.zeros((3, 2, 1)) + 1j), "reward must be real"),
    (lambda: qr.free_energy(qr.chain(3), 1 + 1j, 2), "T must be real"),
])
def test_empty_and_complex_inputs_are_refused(build, msg):
    with pytest.raises(QuasirlValueError, match=msg):
        build()


def test_soft_policy_over_no_steps_is_an_empty_table():
    m = qr.chain(4)
    assert qr.soft_policy(m, 1.0, 0).shape == (0, 4, 2)  # was ZeroDivisionError
    assert qr.soft_policy(m, [1.0, 0.0], 0).shape == (2, 0, 4, 2)


def test_unrolled_graph_refuses_a_graph_beyond_max_edges():
    g = qr.gridworld(1000, 1000)  # 10^6 states: built edge by edge in Python before
    with pytest.raises(QuasirlValueError, match="more than max_edges = 1,000"):
        qp.unrolled_graph(g, 40, max_edges=1000)
    G = qp.unrolled_graph(qr.gridworld(3, 3), 3, max_edges=1000)
    assert G.number_of_edges() <= 1000


# --------------------------------------------------------------------------------------------
# occupancy at T = 0: the T -> 0+ limit, as path_flow
# --------------------------------------------------------------------------------------------
def test_occupancy_at_zero_is_the_limit_and_equals_path_flow_with_ties():
    # two tied optimal first moves of prior weights 0.8 and 0.2 (differed by 1.07 before)
    P = np.zeros((3, 2, 3))
    P[0, 0, 1] = P[0, 1, 2] = 1.0
    P[1, :, 1] = P[2, :, 2] = 1.0
    R = np.zeros((3, 2, 3))
    R[0, 0, 1] = R[0, 1, 2] = 1.0
    m = qr.MDP(P, R, init=np.array([1.0, 0, 0]), policy=np.array([[0.8, 0.2], [.5, .5],
                                                                  [.5, .5]]))
    occ = np.asarray(qr.occupancy(m, 0.0, 3))
    np.testing.assert_allclose(occ[:, :, 0], [[0.8, 0.2], [0.8, 0.8], [0.2, 0.2]], rtol=1e-12)
    np.testing.assert_allclose(occ, qp.path_flow(m, 0.0, 3).sum(0), rtol=1e-12)
    # and the T -> 0+ limit of the tempered occupancy
    np.testing.assert_allclose(occ, qr.occupancy(m, 1e-3, 3), atol=1e-9)
    with pytest.raises(QuasirlValueError, match="cannot run at T = 0"):
        qr.occupancy(m, 0.0, 3, kernel="native")


def test_occupancy_at_zero_against_enumeration_on_tied_stochastic_mdps():
    for seed in range(4):
        m = qr.random_mdp(jax.random.key(seed), 4, 2, 2, reward_scale=1.0)
        # integer rewards: many tied optimal paths
        m = m.replace(reward=jnp.round(m.reward * 2.0))
        H = 3
        P, R = m.dense()
        states, actions, lw, ret = all_paths(P, R, np.asarray(m.init), np.asarray(m.policy), H)
        best = ret >= ret.max() - 1e-9
        w = np.exp(lw[best]) / np.exp(lw[best]).sum()
        want = np.zeros((4, 2, 4))
        for p, (s, a) in enumerate(zip(states[best], actions[best], strict=True)):
            for t in range(H):
                want[s[t], a[t], s[t + 1]] += w[p]
        occ = np.asarray(qr.occupancy(m, 0.0, H))
        dense = np.zeros((4, 2, 4))
        nxt = np.asarray(m.next)
        for k in range(nxt.shape[2]):
            np.add.at(dense, (np.arange(4)[:, None], np.arange(2)[None, :], nxt[:, :, k]),
                      occ[:, :, k])
        np.testing.assert_allclose(dense, want, atol=1e-12)
        np.testing.assert_allclose(occ.sum(), H, rtol=1e-12)


# --------------------------------------------------------------------------------------------
# the property: occupancy sums to H and is the gradient, for both kernels
# --------------------------------------------------------------------------------------------
# (few shapes, so that the compiled kernels are shared between examples; the native kernel's
# own property, on every instruction set, runs in test_native_isa.py)
@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(S=st.sampled_from([1, 5, 12]), A=st.sampled_from([1, 3]), K=st.sampled_from([1, 2]),
       seed=st.integers(0, 99), H=st.sampled_from([1, 6]),
       T=st.sampled_from([0.0, 1e-3, 0.05, 0.3, 1.0, 4.0]))
def test_occupancy_sums_to_the_horizon_and_is_the_gradient(S, A, K, seed, H, T):
    for dt, kernels, tol in ((np.float64, ("xla",), 1e-10), (np.float32, ("native",), 2e-5)):
        m = qr.random_mdp(jax.random.key(seed), S, A, min(K, S), reward_scale=2.0, dtype=dt)
        for kernel in kernels:
            occ = np.asarray(qr.occupancy(m, T, H, kernel=("auto" if T == 0 else kernel)),
                             np.float64)
            np.testing.assert_allclose(occ.sum(), H, rtol=tol)
            assert np.all(occ >= -tol)
            if T > 0:
                g = jax.grad(lambda r, k=kernel, m=m: qr.free_energy(m.replace(reward=r), T,
                                                                     H, kernel=k))(m.reward)
                np.testing.assert_allclose(occ, np.asarray(g, np.float64), rtol=tol,
                                           atol=tol)


def test_one_eager_temperature_runs_on_xla():
    # a 60-state gridworld over a long horizon ran 70x slower natively (a team of threads and
    # 16 padded lanes for one temperature); "auto" now takes XLA there, the native kernel
    # under transformations and for several temperatures
    g = qr.gridworld(6, 10, slip=0.1, dtype=np.float32)
    H = 200
    xla = np.asarray(qr.free_energy(g, 0.3, H, kernel="xla"))
    nat = np.asarray(qr.free_energy(g, 0.3, H, kernel="native"))
    assert xla.tobytes() != nat.tobytes()  # the two kernels round differently here
    assert np.asarray(qr.free_energy(g, 0.3, H)).tobytes() == xla.tobytes()
    jitted = jax.jit(lambda T: qr.free_energy(g, T, H))(0.3)
    assert np.asarray(jitted).tobytes() == nat.tobytes()
    both = np.asarray(qr.free_energy(g, [0.3, 0.3], H))
    assert both[0].tobytes() == nat.tobytes()


@pytest.mark.parametrize("n, match", [
    (2.0, r"set_threads: n must be an integer, got 2.0"),
    (True, r"set_threads: n must be an integer, got True"),
    (0, r"set_threads: n must be between 1 and 2147483647, got 0"),
])
def test_native_set_threads_refuses_non_integers(n, match):
    from quasirl import _native

    with pytest.raises(QuasirlValueError, match=match):
        _native.set_threads(n)
