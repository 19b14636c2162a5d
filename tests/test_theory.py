"""The dictionary of docs/theory.md, section 4, held against plain numpy recursions written from
the textbook definitions (soft value iteration, causal soft values, Todorov's linear Bellman
equation) and against path enumeration (the Gibbs variational principle)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracles import all_paths
from scipy.special import logsumexp

import quasirl as qr


def _dense(mdp):
    P, R = mdp.dense()
    return P, R, np.asarray(mdp.init, np.float64), np.asarray(mdp.policy, np.float64)


def soft_vi(P, R, H, T, policy=None, causal=True):
    """Finite-horizon soft value iteration, V_t [H+1, S] (V_H = 0).

    causal: Q(s, a) = sum_s' P (R + V_{t+1}(s')) (Ziebart); else the optimistic
    Q(s, a) = T log sum_s' P exp((R + V_{t+1})/T). policy=None: no prior (plain log-sum-exp
    over actions), else V(s) = T log sum_a policy(a|s) exp(Q/T)."""
    S, A, _ = P.shape
    V = np.zeros((H + 1, S))
    with np.errstate(divide="ignore"):
        logP = np.log(P)
        logpi = np.zeros((S, A)) if policy is None else np.log(policy)
    for t in range(H - 1, -1, -1):
        if causal:
            Q = np.sum(P * (R + V[t + 1][None, None, :]), axis=2)
        else:
            Q = T * logsumexp(logP + (R + V[t + 1][None, None, :]) / T, axis=2)
        V[t] = T * logsumexp(logpi + Q / T, axis=1)
    return V


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("T", [0.3, 1.0, 2.5])
def test_desirability_is_soft_value_iteration_shifted_by_log_A(seed, T):
    S, A, H = 7, 3, 6
    mdp = qr.random_mdp(jax.random.key(seed), S, A, 1, reward_scale=1.5)  # deterministic
    P, R, init, _ = _dense(mdp)
    V = soft_vi(P, R, H, T)  # Ziebart's soft VI, no prior
    z = np.asarray(qr.desirability(mdp, T, H))
    shift = (H - np.arange(H + 1))[:, None] * T * np.log(A)
    np.testing.assert_allclose(z, V - shift, rtol=1e-12, atol=1e-12)
    # the soft policies agree (the shift does not depend on the action)
    Q = np.stack([np.sum(P * (R + V[t + 1]), axis=2) for t in range(H)])  # [H, S, A]
    np.testing.assert_allclose(qr.soft_policy(mdp, T, H),
                               np.exp((Q - V[:-1, :, None]) / T), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(qr.free_energy(mdp, T, H),
                               T * logsumexp(np.log(init) + (V[0] - shift[0]) / T),
                               rtol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_quasispecies_values_are_the_optimistic_ones_and_exceed_the_causal(seed):
    S, A, H, T = 6, 2, 5, 0.7
    mdp = qr.random_mdp(jax.random.key(seed), S, A, 3, reward_scale=1.0)  # stochastic
    P, R, _, pol = _dense(mdp)
    z = np.asarray(qr.desirability(mdp, T, H))
    np.testing.assert_allclose(z, soft_vi(P, R, H, T, pol, causal=False), rtol=1e-12,
                               atol=1e-12)
    causal = soft_vi(P, R, H, T, pol, causal=True)
    assert np.all(z >= causal - 1e-12) and np.any(z > causal + 1e-6)  # Jensen, strict here
    # deterministic dynamics: the two coincide
    det = qr.random_mdp(jax.random.key(seed), S, A, 1)
    Pd, Rd, _, pd = _dense(det)
    np.testing.assert_allclose(soft_vi(Pd, Rd, H, T, pd, causal=True),
                               np.asarray(qr.desirability(det, T, H)), rtol=1e-12, atol=1e-12)
    # at T = 0: optimal_value (max over outcomes) >= bellman_value (expectimax)
    assert float(qr.optimism_gap(mdp, H)) >= 0.0


@pytest.mark.parametrize("seed", range(3))
def test_free_energy_is_the_gibbs_variational_maximum(seed):
    S, A, H, T = 4, 2, 3, 0.8
    mdp = qr.random_mdp(jax.random.key(seed), S, A, 2)
    P, R, init, pol = _dense(mdp)
    _, _, lw, ret = all_paths(P, R, init, pol, H)
    w = np.exp(lw)
    F = float(qr.free_energy(mdp, T, H))
    q = w * np.exp(ret / T)
    q /= q.sum()  # the tempered law attains the maximum
    np.testing.assert_allclose(q @ ret - T * np.sum(q * np.log(q / w)), F, rtol=1e-12)
    rng = np.random.default_rng(seed)
    for _ in range(20):  # any other law of paths does worse
        o = rng.dirichlet(np.ones(len(w)))
        assert o @ ret - T * np.sum(o * np.log(o / w)) <= F + 1e-12


def test_state_rewards_give_todorovs_linear_bellman_equation():
    S, A, H, T = 8, 3, 7, 0.5
    m = qr.random_mdp(jax.random.key(5), S, A, 2)
    r = np.random.default_rng(5).normal(size=S)
    mdp = m.replace(reward=jnp.broadcast_to(jnp.asarray(r)[:, None, None], m.shape))
    P, _, init, pol = _dense(mdp)
    passive = np.einsum("sa,sat->st", pol, P)
    Z = np.ones(S)
    for _ in range(H):
        Z = np.exp(r / T) * (passive @ Z)
    np.testing.assert_allclose(np.exp(np.asarray(qr.desirability(mdp, T, H))[0] / T), Z,
                               rtol=1e-12)
    np.testing.assert_allclose(qr.free_energy(mdp, T, H), T * np.log(init @ Z), rtol=1e-12)
