"""Independent implementations as oracles (issue 16): pymdptoolbox's FiniteHorizon, a
maintained peer for finite-horizon Bellman values (backward induction on dense matrices)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import quasirl as qr

mdptoolbox = pytest.importorskip("mdptoolbox.mdp", reason="pymdptoolbox (test extra) missing")


def finite_horizon(mdp, H):
    """pymdptoolbox's value with H steps to go, [S] (P [A, S, S], R [A, S, S], no discount)."""
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
