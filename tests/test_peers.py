"""Independent implementations as oracles (issue 16).

* pymdptoolbox's FiniteHorizon (test extra): finite-horizon Bellman values by backward
  induction on dense matrices, against ``bellman_value`` and ``optimal_value``.
* Causal soft value iteration (Ziebart 2010, the MaxEnt IRL recursion), against
  ``desirability``, ``soft_policy``, ``free_energy`` and ``paths.path_flow``, in the mapping of
  docs/theory.md section 4: z_t = V_t - (H - t) T log A (uniform exploration prior), ``init``
  inside the log, equality on deterministic MDPs (ties included) and z >= V - shift on
  stochastic ones (Jensen: the population lets lucky outcomes replicate). Two peers run the
  same tests: the ``imitation`` library's ``mce_partition_fh`` / ``mce_occupancy_measures``
  when it is installed (marker ``peer``; it is not in the test extra, see IMITATION_SKIP), and
  always a plain numpy transcription of Ziebart's recurrences with imitation's conventions.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp, softmax

import quasirl as qr


# --------------------------------------------------------------------------------------------
# pymdptoolbox: Bellman values
# --------------------------------------------------------------------------------------------
def finite_horizon(mdp, H):
    """pymdptoolbox's value with H steps to go, [S] (P [A, S, S], R [A, S, S], no discount)."""
    mdptoolbox = pytest.importorskip("mdptoolbox.mdp",
                                     reason="pymdptoolbox (test extra) missing")
    P, R = mdp.dense()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no discount, convergence can not be assumed"
        fh = mdptoolbox.FiniteHorizon(np.transpose(P, (1, 0, 2)), np.transpose(R, (1, 0, 2)),
                                      1.0, H)
        fh.run()
    return np.asarray(fh.V)[:, 0]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("K", [1, 3])
def test_bellman_and_optimal_values_against_pymdptoolbox(seed, K):
    S, A, H = 6, 3, 5
    mdp = qr.random_mdp(jax.random.key(seed), S, A, K, reward_scale=1.0)
    if seed % 2:  # integer rewards: tied optimal actions
        mdp = mdp.replace(reward=jnp.round(mdp.reward * 2.0))
    peer = finite_horizon(mdp, H)
    np.testing.assert_allclose(qr.bellman_value(mdp, H, per_state=True), peer, rtol=1e-12,
                               atol=1e-12)
    best_start = peer.max()  # uniform init: every state may start
    np.testing.assert_allclose(qr.bellman_value(mdp, H), best_start, rtol=1e-12)
    if K == 1:  # deterministic: the max-plus path value is the Bellman value
        np.testing.assert_allclose(qr.optimal_value(mdp, H), best_start, rtol=1e-12)
        np.testing.assert_allclose(qr.free_energy(mdp, 0.0, H), best_start, rtol=1e-12)
    else:  # stochastic: the population's value is optimistic
        assert float(qr.optimal_value(mdp, H)) >= best_start - 1e-12


# --------------------------------------------------------------------------------------------
# causal soft value iteration (MaxEnt IRL): imitation, and a numpy transcription
# --------------------------------------------------------------------------------------------
# Measured here (2026-12-07, Python 3.11, pip; benchmarks/README.md, "Peers as test oracles"):
# `pip install imitation torch==2.13.0` in a venv holding only jax 0.10.2 and numpy 2 adds 86
# packages, ~1.5 GB (CPU torch 754 MB, pyarrow 170 MB, pandas 84 MB, sympy 80 MB, ...); over
# `make test`'s venv (.[test,lm], torch already there) 48 packages, ~390 MiB (pyarrow 168,
# scikit-learn 46, pygame 35, SQLAlchemy 27, tensorboard 40 with its data server, grpcio 18),
# and it would downgrade huggingface_hub 2.4.0 to 0.36.2 (huggingface-sb3 ~= 3.0 needs < 1),
# which transformers 5.25 of the lm extra refuses (it needs >= 2.4). rlax 0.1.9 installs with
# jax 0.10.2 (+70 MB: tfp-nightly, distrax, chex) but has no tabular soft value iteration, only
# per-transition TD targets and losses.
IMITATION_SKIP = (
    "imitation (MCE IRL peer) not installed: it is not in the test extra because it adds 48 "
    "packages (~390 MiB: pyarrow, scikit-learn, pygame, tensorboard, stable-baselines3, "
    "gymnasium, sacred, optuna, datasets) to make test's venv and downgrades huggingface_hub "
    "below what transformers (lm extra) needs; the numpy transcription of the same recurrences "
    "runs instead. To run it: a separate venv with `pip install imitation torch==2.13.0`"
)


def ziebart_fh(P, r, init, H):
    """Finite-horizon causal soft value iteration with imitation's conventions, T = 1.

    Ziebart (2010) eqs. (9.1)-(9.3) as ``imitation.algorithms.mce_irl.mce_partition_fh``
    computes them for a state reward r[s] collected at each of the H steps:
    Q_{H-1}(s, a) = r(s), Q_t(s, a) = r(s) + sum_s' P(s'|s, a) V_{t+1}(s'),
    V_t(s) = log sum_a exp Q_t(s, a), pi_t(a|s) = exp(Q_t - V_t); and the state visitation
    D[H+1, S] of ``mce_occupancy_measures``: D_0 = init, D_{t+1}(s') = sum_{s,a} D_t(s)
    pi_t(a|s) P(s'|s, a). Returns (V [H, S], pi [H, S, A], D [H+1, S]).
    """
    S, A, _ = P.shape
    V, Q = np.zeros((H, S)), np.zeros((H, S, A))
    for t in range(H - 1, -1, -1):
        future = P @ V[t + 1] if t < H - 1 else np.zeros((S, A))
        Q[t] = r[:, None] + future
        V[t] = logsumexp(Q[t], axis=1)
    pi = np.exp(Q - V[:, :, None])
    D = np.zeros((H + 1, S))
    D[0] = init
    for t in range(H):
        D[t + 1] = np.einsum("s,sa,sat->t", D[t], pi[t], P)
    return V, pi, D


def imitation_fh(P, r, init, H):
    """The same three arrays from the ``imitation`` library (seals' tabular MDP)."""
    mce = pytest.importorskip("imitation.algorithms.mce_irl", reason=IMITATION_SKIP)
    from seals.base_envs import TabularModelPOMDP

    env = TabularModelPOMDP(transition_matrix=P, observation_matrix=np.eye(P.shape[0]),
                            reward_matrix=r, horizon=H, initial_state_dist=init)
    V, _, pi = mce.mce_partition_fh(env)
    D, _ = mce.mce_occupancy_measures(env, pi=pi)
    return V, pi, D


PEERS = [pytest.param(ziebart_fh, id="numpy"),
         pytest.param(imitation_fh, id="imitation", marks=pytest.mark.peer)]


def _peer_at(peer, P, r, init, H, T):
    """The peer at temperature T: V_T(r) = T V_1(r / T), the policy and occupancy unchanged."""
    V, pi, D = peer(P, r / T, init, H)
    return T * V, pi, D


def _deterministic(rng, S, A):
    """A deterministic MDP with ties: half the states send two actions to the same successor
    and the state rewards are small integers (tied paths)."""
    nxt = rng.integers(0, S, (S, A))
    nxt[::2, 1] = nxt[::2, 0]
    P = np.zeros((S, A, S))
    P[np.arange(S)[:, None], np.arange(A)[None, :], nxt] = 1.0
    return P, rng.integers(-2, 3, S).astype(np.float64)


def _stochastic(rng, S, A):
    """Dirichlet transitions on random supports of 2 to S successors; Gaussian state rewards."""
    P = rng.dirichlet(np.ones(S), size=(S, A)) * (rng.random((S, A, S)) < 0.5)
    two = np.argsort(rng.random((S, A, S)), axis=-1)[..., :2]  # at least two outcomes
    np.put_along_axis(P, two, np.take_along_axis(P, two, axis=-1) + 0.1, axis=-1)
    return P / P.sum(-1, keepdims=True), rng.normal(size=S)


def _init(rng, S):
    init = rng.dirichlet(np.ones(S))
    init[0] = 0.0  # a state that never starts
    return init / init.sum()


def _quasirl(P, r, init):
    S, A, _ = P.shape
    return qr.MDP(P, np.broadcast_to(r[:, None], (S, A)), init=init)


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("T", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("seed", range(4))
def test_deterministic_mdps_equal_causal_soft_value_iteration(peer, T, seed):
    S, A, H = 7, 3, 6
    rng = np.random.default_rng(seed)
    P, r = _deterministic(rng, S, A)
    init = _init(rng, S)
    mdp = _quasirl(P, r, init)
    V, pi, _ = _peer_at(peer, P, r, init, H, T)
    shift = (H - np.arange(H))[:, None] * T * np.log(A)  # the uniform prior, per step to go
    z = np.asarray(qr.desirability(mdp, T, H))
    np.testing.assert_allclose(z[:H], V - shift, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(qr.soft_policy(mdp, T, H), pi, rtol=1e-10, atol=1e-10)
    # init inside the log: F = T log sum_s init(s) exp(z_0(s) / T)
    F = T * logsumexp((V[0] - shift[0]) / T, b=init)
    np.testing.assert_allclose(qr.free_energy(mdp, T, H), F, rtol=1e-10, atol=1e-10)
    # occupancy: the tempered path law is the MCE law started from the tempered start law
    # init(s) exp(V_0(s) / T) / Z (MCE keeps the start law fixed; the population selects it)
    with np.errstate(divide="ignore"):
        start = softmax(np.log(init) + V[0] / T)
    _, _, D = _peer_at(peer, P, r, start, H, T)
    flow = np.asarray(qr.paths.path_flow(mdp, T, H))  # [H, S, A, K=1]
    np.testing.assert_allclose(flow.sum((2, 3)), D[:H], rtol=1e-10, atol=1e-12)
    last = np.einsum("sa,sat->t", flow[H - 1, :, :, 0], P)  # where the last step lands
    np.testing.assert_allclose(last, D[H], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(qr.occupancy(mdp, T, H)).sum((1, 2)), D[:H].sum(0),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("seed", range(4))
def test_stochastic_mdps_exceed_causal_soft_value_iteration(peer, seed):
    S, A, H, T = 6, 3, 5, 0.7
    rng = np.random.default_rng(100 + seed)
    P, r = _stochastic(rng, S, A)
    init = _init(rng, S)
    mdp = _quasirl(P, r, init)
    V, _, _ = _peer_at(peer, P, r, init, H, T)
    causal = V - (H - np.arange(H))[:, None] * T * np.log(A)
    z = np.asarray(qr.desirability(mdp, T, H))[:H]
    # Jensen: E exp X >= exp E X at every (t, s), strictly where outcomes differ in value
    assert np.all(z >= causal - 1e-12)
    assert np.all(z[:H - 1] > causal[:H - 1] + 1e-9)  # every (s, a) has two outcomes
    np.testing.assert_allclose(z[H - 1], causal[H - 1], rtol=1e-12, atol=1e-12)  # one step
    # ... and so for the free energy, init inside the log
    F_causal = T * logsumexp(causal[0] / T, b=init)
    assert float(qr.free_energy(mdp, T, H)) > F_causal + 1e-9
