"""The native float32 forward kernel of free_energy against independent oracles.

Oracles: every path enumerated (tests/oracles.py) for small MDPs; the XLA float64 recursion
(itself held to the path oracle in test_dynamics.py) for larger ones; the XLA float32 path
for derivatives and vmap.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracles import all_paths, brute_F

import quasirl as qr
from quasirl import _dynamics as D
from quasirl import _native
from quasirl._native import pull as NP
from quasirl._pull_xla import pull_tables

pytestmark = pytest.mark.skipif(not _native.status()["available"],
                                reason=f"native kernels not built: {_native.status()['reason']}")

TEMPS = np.array([0.0, 1e-3, 0.01, 0.05, 0.3, 1.0, 4.0, 1e3], np.float32)
# The kernel has two paths per vector of 16 (AVX-512) or 8 lanes: value units with the maximum
# as reference where a lane has T = 0 (TEMPS), log2 units with the first term as reference
# where every T > 0; 20 positive temperatures run two such vectors at once.
POSITIVE = np.geomspace(1e-3, 1e3, 20).astype(np.float32)


def _native_F(mdp, T, H):
    return np.asarray(D._free_energy_batch(mdp, jnp.asarray(T, jnp.float32), H, native=True))


def _to64(mdp):
    return jax.tree_util.tree_map(
        lambda x: jnp.asarray(x, jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x,
        mdp)


def _f64_F(mdp, T, H):
    m64 = _to64(mdp)
    return np.asarray(D._free_energy_batch(m64, jnp.asarray(T, jnp.float64), H, native=False))


def _close(a, b, scale, T=None, mdp=None, H=0):
    """float32 rounding: 3e-6 of the value scale, plus (T > 0) ~ulp(T log w) per step, since
    F = T log Z carries terms T log w_j that cancel."""
    atol = 3e-6 * scale * np.ones_like(b)
    if T is not None:
        w = np.asarray(mdp.policy, np.float64)[:, :, None] * np.asarray(mdp.prob)
        big = float(np.abs(np.log(w[w > 0])).max(initial=0.0)) + 1.0
        atol = atol + 3e-7 * np.asarray(T, np.float64) * big * (H + 1)
    err = np.abs(np.asarray(a, np.float64) - b)
    assert np.all(err <= atol), f"errors {err} above tolerances {atol}"


def test_native_equals_enumeration_of_every_path():
    mdp = qr.random_mdp(jax.random.key(0), 4, 2, 2, dtype=np.float32)
    H = 4
    P, R = mdp.dense()
    paths = all_paths(P, R, np.asarray(mdp.init, np.float64), np.asarray(mdp.policy, np.float64),
                      H)
    for temps in (TEMPS, POSITIVE):
        got = _native_F(mdp, temps, H)
        want = np.array([brute_F(paths, float(t)) for t in temps])
        _close(got, want, 1 + np.abs(want).max() + float(np.abs(paths[3]).max()), temps, mdp,
               H)


@pytest.mark.parametrize("case", ["grid", "random-deterministic", "random-stochastic",
                                  "sparse-policy-and-init"])
def test_native_equals_float64_recursion(case):
    rng = np.random.default_rng(1)
    if case == "grid":
        mdp, H = qr.gridworld(12, 9, dtype=np.float32), 40
    elif case == "random-deterministic":
        mdp, H = qr.random_mdp(jax.random.key(2), 60, 3, 1, reward_scale=3.0,
                               dtype=np.float32), 25
    elif case == "random-stochastic":
        mdp, H = qr.random_mdp(jax.random.key(3), 40, 4, 3, dtype=np.float32), 25
    else:  # zero-probability actions (padding with log w = -inf) and unreachable states
        mdp = qr.random_mdp(jax.random.key(4), 50, 3, 2, dtype=np.float32)
        pol = np.asarray(mdp.policy) * (rng.random(mdp.policy.shape) < 0.6)
        pol[:, 0] += pol.sum(1) == 0
        pol /= pol.sum(1, keepdims=True)
        init = np.zeros(50, np.float32)
        init[[3, 7]] = 0.5
        mdp, H = mdp.replace(policy=pol.astype(np.float32), init=init), 30
    scale = H * (1 + float(np.abs(np.asarray(mdp.reward)).max()))
    for temps in (TEMPS, POSITIVE):
        got = _native_F(mdp, temps, H)
        want = _f64_F(mdp, temps, H)
        assert np.isfinite(got).all()
        _close(got, want, scale, temps, mdp, H)
    # T = 0 lanes run the max-plus recursion (no exp): float32 rounding of the exact maximum
    got, want = _native_F(mdp, TEMPS, H), _f64_F(mdp, TEMPS, H)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-6)


def test_native_extreme_temperatures_and_rewards():
    # |R| = 1e3 at T = 1e-6: terms 2^(x_j - x_0) far above 2^64, so the first-term reference
    # falls back to the maximum (one and two vectors of lanes)
    mdp = qr.random_mdp(jax.random.key(5), 30, 3, 2, reward_scale=1e3, dtype=np.float32)
    for T in (np.array([1e-6, 1e-3, 1.0, 1e3], np.float32),
              np.geomspace(1e-6, 1e3, 20).astype(np.float32)):
        got, want = _native_F(mdp, T, 15), _f64_F(mdp, T, 15)
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=2e-5)


def test_native_temperatures_outside_the_log2_range():
    # a lane below 1e-20 or above 1e20 sends its vector to the value-unit path; the others
    # are unaffected
    mdp = qr.random_mdp(jax.random.key(6), 25, 3, 2, dtype=np.float32)
    T = np.concatenate([[1e-25, 3e20], np.geomspace(1e-2, 10, 18)]).astype(np.float32)
    got, want = _native_F(mdp, T, 10), _f64_F(mdp, T, 10)
    assert np.isfinite(got).all()
    _close(got, want, 11.0, T, mdp, 10)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-6)  # ~ the max-plus value


def test_native_large_state_space_and_states_without_predecessors():
    # S B 4 bytes > 64 MB: the streamed-store path; state 0 has no entering transition
    S = 600_000
    s = np.arange(S)
    nxt = np.stack([np.minimum(s + 1, S - 1), np.maximum(s - 1, 1)], axis=1)
    rew = np.random.default_rng(7).normal(size=(S, 2)).astype(np.float32)
    init = np.zeros(S, np.float32)
    init[:1000] = 1e-3
    mdp = qr.MDP.deterministic(nxt, rew, init=init)
    assert int(np.sum(np.asarray(mdp.pred)[0] < S * 2)) == 0
    T = np.geomspace(0.05, 5, 32).astype(np.float32)
    got, want = _native_F(mdp, T, 4), _f64_F(mdp, T, 4)
    _close(got, want, 5 * (1 + float(np.abs(rew).max())), T, mdp, 4)


def test_native_horizon_zero_and_batch_shapes():
    mdp = qr.gridworld(5, 4, dtype=np.float32)
    for T in (np.array([0.5], np.float32), np.linspace(0.1, 2, 17).astype(np.float32),
              np.linspace(0.1, 2, 33).astype(np.float32)):  # 1, 17, 33 lanes (padding)
        for H in (0, 1, 7):
            _close(_native_F(mdp, T, H), _f64_F(mdp, T, H), 1 + H, T, mdp, H)


def test_native_is_the_default_and_its_derivatives_agree_with_xla():
    mdp = qr.gridworld(8, 8, dtype=np.float32)
    T = jnp.asarray(TEMPS[1:])
    assert D._use_native(mdp, "auto", False, "free_energy")
    assert not D._use_native(mdp, "auto", True, "free_energy")  # every T = 0: XLA's max-plus
    assert not D._use_native(_to64(mdp), "auto", False, "free_energy")
    np.testing.assert_array_equal(np.asarray(qr.free_energy(mdp, T, 12)), _native_F(mdp, T, 12))

    def total(r, native):
        return jnp.sum(D._free_energy_batch(mdp.replace(reward=r), T, 12, native=native))

    g_n = jax.grad(total)(mdp.reward, True)
    g_x = jax.grad(total)(mdp.reward, False)
    np.testing.assert_allclose(np.asarray(g_n), np.asarray(g_x), rtol=1e-5, atol=1e-5)
    # the jvp's primal is the forward kernel's, bit for bit
    jn = jax.jvp(lambda t: D._free_energy_batch(mdp, t, 12, native=True), (T,), (T,))
    jx = jax.jvp(lambda t: D._free_energy_batch(mdp, t, 12, native=False), (T,), (T,))
    np.testing.assert_array_equal(np.asarray(jn[0]), _native_F(mdp, T, 12))
    # dF/dT is 0 here (every path costs the same): both are float32 rounding of terms ~ H log 4
    # (times the tangent, T)
    assert np.all(np.abs(np.asarray(jn[1]) - np.asarray(jx[1])) <= 3e-6 * 12 * 1.4 * TEMPS[1:])
    rs = jnp.stack([mdp.reward, 0.5 * mdp.reward, -mdp.reward])
    vm = jax.vmap(lambda r: D._free_energy_batch(mdp.replace(reward=r), T, 12, native=True))(rs)
    loop = np.stack([_native_F(mdp.replace(reward=r), T, 12) for r in rs])
    np.testing.assert_array_equal(np.asarray(vm), loop)
    gv = jax.vmap(jax.grad(total), in_axes=(0, None))(rs, True)
    gl = np.stack([np.asarray(jax.grad(total)(r, True)) for r in rs])
    np.testing.assert_allclose(np.asarray(gv), gl, rtol=1e-6)  # XLA may sum in another order


# --------------------------------------------------------------------------------------------
# the adjoint (native forward-backward): reverse and forward mode through it
# --------------------------------------------------------------------------------------------
def test_native_gradient_is_the_occupancy_of_every_path():
    # dF/dR(s, a, s') = expected number of uses of (s, a, s') under the tempered path law
    # (T = 0: the maximal path; generic rewards make it unique)
    mdp = qr.random_mdp(jax.random.key(11), 4, 2, 2, dtype=np.float32)
    H = 4
    P, R = mdp.dense()
    init, policy = np.asarray(mdp.init, np.float64), np.asarray(mdp.policy, np.float64)
    states, actions, lw, ret = all_paths(P, R, init, policy, H)
    k = np.asarray(mdp.next)  # [S, A, K] successors of the sparse form
    for temps in (TEMPS, POSITIVE):
        def total(r, t):
            return jnp.sum(D._free_energy_batch(mdp.replace(reward=r), t, H, native=True))

        g = np.asarray(jax.grad(total)(mdp.reward, jnp.asarray(temps)), np.float64)  # [S,A,K]
        occ = np.zeros_like(R)
        for t_ in temps:
            if t_ == 0:
                p = (ret == ret.max()).astype(float)
                assert p.sum() == 1
            else:
                z = lw + ret / float(t_)
                p = np.exp(z - z.max())
                p /= p.sum()
            for j in range(len(p)):
                for t in range(H):
                    occ[states[j, t], actions[j, t], states[j, t + 1]] += p[j]
        got = np.zeros_like(R)
        for s_, a_, kk in np.ndindex(k.shape):
            got[s_, a_, k[s_, a_, kk]] += g[s_, a_, kk]
        np.testing.assert_allclose(got, occ, rtol=1e-4, atol=1e-5 * H * len(temps))


def test_native_temperature_derivative_and_second_order():
    mdp = qr.random_mdp(jax.random.key(3), 40, 4, 3, dtype=np.float32)
    H = 9
    f = lambda t, native: D._free_energy_batch(mdp, t, H, native=native)  # noqa: E731
    T = jnp.asarray(POSITIVE)
    jn = jax.jvp(lambda t: f(t, True), (T,), (jnp.ones_like(T),))[1]
    jx = jax.jvp(lambda t: f(t, False), (T,), (jnp.ones_like(T),))[1]
    np.testing.assert_allclose(np.asarray(jn), np.asarray(jx), rtol=2e-5, atol=2e-5)
    # at T = 0 the native derivative is the right derivative (finite differences above 0)
    T0 = jnp.asarray([0.0, 0.5], jnp.float32)
    d0 = float(jax.jvp(lambda t: f(t, True), (T0,), (jnp.ones_like(T0),))[1][0])
    m64 = _to64(mdp)
    F64 = lambda t: float(D._free_energy_batch(m64, jnp.asarray([t, 0.5]), H)[0])  # noqa: E731
    fd = (4 * F64(1e-4) - F64(2e-4) - 3 * F64(0.0)) / 2e-4
    np.testing.assert_allclose(d0, fd, rtol=1e-3)
    # second order (through the XLA path) equals the XLA path's
    small = qr.random_mdp(jax.random.key(13), 10, 2, 2, dtype=np.float32)
    g = lambda t, r, native: jnp.sum(  # noqa: E731
        D._free_energy_batch(small.replace(reward=r), t, 5, native=native))
    T5 = jnp.asarray(POSITIVE[2::4])
    hn = jax.hessian(g)(T5, small.reward, True)
    hx = jax.hessian(g)(T5, small.reward, False)
    np.testing.assert_allclose(np.asarray(hn), np.asarray(hx), rtol=1e-3, atol=1e-4)
    mixed = jax.grad(lambda r, native: jnp.sum(jax.grad(g)(T5, r, native)))
    np.testing.assert_allclose(np.asarray(mixed(small.reward, True)),
                               np.asarray(mixed(small.reward, False)), rtol=1e-3, atol=1e-4)


def test_native_adjoint_checkpointed_equals_stored(monkeypatch):
    # with too little memory for every u_t the kernel recomputes segments from checkpoints:
    # the same arithmetic, so the same bits
    mdp = qr.random_mdp(jax.random.key(12), 30, 3, 2, dtype=np.float32)
    T = jnp.asarray(np.r_[0.0, POSITIVE[:19]], jnp.float32)
    tab = pull_tables(mdp)
    args = (tab.log_init, tab.src, tab.logw, tab.rew, T)
    for H in (1, 7, 16):
        whole = NP.pull_forward_backward(*args, H)
        monkeypatch.setenv("QUASIRL_FB_MEMORY", "1")
        parts = NP.pull_forward_backward(*args, H)
        monkeypatch.delenv("QUASIRL_FB_MEMORY")
        for a, b in zip(whole, parts, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_array_equal(np.asarray(whole[0]), _native_F(mdp, np.asarray(T), H))
        np.testing.assert_allclose(np.asarray(whole[1]).sum(axis=(0, 1)), H, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(whole[2]).sum(axis=0), 1.0, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# reverse mode: the adjoint kernel contracted over temperatures, and the kept forward pass
# --------------------------------------------------------------------------------------------
def _kernel_args(mdp, T):
    li, logw, rew = D._native_inputs(mdp)
    return li, pull_tables(mdp).src, logw, rew, T


def test_native_adjoint_contracts_the_sensitivities():
    # G = sum_b W[k, b] N[:, :, b] against the kernel that returns N itself (held to every
    # path in test_native_gradient_is_the_occupancy_of_every_path), on an MDP with padding,
    # unreachable states and sources spread over every thread's range of states
    mdp = qr.random_mdp(jax.random.key(4), 50, 3, 2, dtype=np.float32)
    mask = np.ones((50, 3), np.float32)
    mask[::4, 1:] = 0
    mdp = mdp.replace(policy=jnp.asarray(mask / mask.sum(axis=1, keepdims=True)),
                      init=jnp.asarray(np.r_[np.ones(10), np.zeros(40)] / 10, jnp.float32))
    rng = np.random.default_rng(5)
    for temps, H in ((TEMPS, 7), (POSITIVE, 9), (np.r_[TEMPS, POSITIVE], 3), (POSITIVE[:1], 0)):
        T = jnp.asarray(temps, jnp.float32)
        args = _kernel_args(mdp, T)
        F, N, rho, dT = NP.pull_forward_backward(*args, H)
        live = np.asarray(args[2] > -jnp.inf)
        W64 = lambda W: np.asarray(W, np.float64)  # noqa: E731
        for K in (0, 1, 3):
            W = jnp.asarray(rng.normal(size=(K, len(temps))), jnp.float32)
            F2, G, R, dT2 = NP.pull_adjoint(*args, W, H)
            np.testing.assert_array_equal(np.asarray(F2), np.asarray(F))
            want = np.einsum("kb,sjb->ksj", W64(W), np.asarray(N, np.float64))
            scale = np.abs(np.asarray(W)).sum(axis=1).max(initial=1.0) * max(H, 1)
            np.testing.assert_allclose(np.asarray(G), want, rtol=0, atol=2e-6 * scale)
            assert np.all(np.asarray(G)[:, ~live] == 0)
            np.testing.assert_allclose(np.asarray(R), W64(W) @ np.asarray(rho, np.float64).T,
                                       rtol=0, atol=2e-6 * scale)
            np.testing.assert_allclose(np.asarray(dT2), np.asarray(dT), rtol=0,
                                       atol=3e-6 * (H + 1) * 5)


def test_native_adjoint_kept_and_checkpointed_give_the_same_bits(monkeypatch):
    # the adjoint from the forward pass kept under a token, from a token that is gone, and
    # with checkpoints (segments recomputed, every call) all do the same arithmetic
    mdp = qr.random_mdp(jax.random.key(12), 30, 3, 2, dtype=np.float32)
    T = jnp.asarray(np.r_[0.0, POSITIVE[:19]], jnp.float32)
    args = _kernel_args(mdp, T)
    W = jnp.asarray(np.random.default_rng(0).normal(size=(2, 20)), jnp.float32)
    for H in (1, 7, 16):
        fresh = NP.pull_adjoint(*args, W, H)
        for budget in (None, "1"):
            if budget:
                monkeypatch.setenv("QUASIRL_FB_MEMORY", budget)
            F, token = NP.pull_keep(*args, H)
            np.testing.assert_array_equal(np.asarray(F), np.asarray(fresh[0]))
            assert int(token[0]) != 0 or int(token[1]) != 0
            for tok in (token, token, jnp.asarray([-7, 12345], jnp.int32)):
                got = NP.pull_adjoint(*args, W, H, tok)
                for a, b in zip(got, fresh, strict=True):
                    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
            monkeypatch.delenv("QUASIRL_FB_MEMORY", raising=False)


def test_native_reverse_mode_in_every_input_and_batched():
    # gradients in init, policy, rewards and T together, jacrev / jacfwd of the
    # vector F(T), and a vjp used twice, against the XLA path
    mdp = qr.random_mdp(jax.random.key(14), 25, 3, 2, dtype=np.float32)
    T = jnp.asarray([0.0, 0.02, 0.3, 1.0, 5.0], jnp.float32)
    H = 6

    def F(m, t, native):
        return D._free_energy_batch(m, t, H, native=native)

    def loss(floats, t, native):
        m = mdp.replace(**dict(zip(("init", "policy", "reward"), floats, strict=True)))
        return jnp.sum(jnp.asarray([1.0, -2.0, 0.5, 1.5, 0.25]) * F(m, t, native))

    floats = (mdp.init, mdp.policy, mdp.reward)
    gn = jax.grad(loss, argnums=(0, 1))(floats, T, True)
    gx = jax.grad(loss, argnums=(0, 1))(floats, T, False)
    for a, b in zip(jax.tree_util.tree_leaves(gn[0]), jax.tree_util.tree_leaves(gx[0]),
                    strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-5)
    # dF/dT at T = 0: the native one is the right derivative (forward mode's, held to finite
    # differences above), XLA's is not
    np.testing.assert_allclose(np.asarray(gn[1])[1:], np.asarray(gx[1])[1:], rtol=2e-4,
                               atol=2e-5)
    e0 = jnp.zeros_like(T).at[0].set(1.0)
    d0 = jax.jvp(lambda t: F(mdp, t, True), (T,), (e0,))[1][0]
    np.testing.assert_allclose(float(gn[1][0]), float(d0), rtol=1e-5)
    jr = jax.jacrev(lambda r: F(mdp.replace(reward=r), T, True))(mdp.reward)
    jf = jax.jacfwd(lambda r: F(mdp.replace(reward=r), T, True))(mdp.reward)
    jx = jax.jacrev(lambda r: F(mdp.replace(reward=r), T, False))(mdp.reward)
    np.testing.assert_allclose(np.asarray(jr), np.asarray(jx), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(jf), np.asarray(jx), rtol=1e-5, atol=1e-6)
    _, vjp = jax.vjp(lambda r: F(mdp.replace(reward=r), T, True), mdp.reward)
    ct = jnp.asarray([0.5, 1.0, -1.0, 2.0, 0.0], jnp.float32)
    np.testing.assert_array_equal(np.asarray(vjp(ct)[0]), np.asarray(vjp(ct)[0]))
    np.testing.assert_allclose(np.asarray(vjp(ct)[0]), np.asarray(jnp.tensordot(ct, jx, 1)),
                               rtol=1e-5, atol=1e-6)


_MEMORY_PROBE = """
import json, sys, jax, jax.numpy as jnp, numpy as np
import quasirl as qr
from quasirl import _native, _dynamics as D
mdp = qr.random_mdp(jax.random.key(15), 300, 3, 2, dtype=np.float32)
T = jnp.asarray(np.geomspace(0.01, 10, 20), jnp.float32)
tot = lambda r: jnp.sum(D._free_energy_batch(mdp.replace(reward=r), T, 30, native=True))
g = np.asarray(jax.block_until_ready(jax.grad(tot)(mdp.reward)))
print(json.dumps({"grad": g.ravel().tolist(), "memory": _native.memory()}))
"""


def test_native_memory_kept_between_calls_stays_within_the_limit():
    import json
    import os
    import subprocess
    import sys

    mdp = qr.random_mdp(jax.random.key(15), 300, 3, 2, dtype=np.float32)
    T = jnp.asarray(np.geomspace(0.01, 10, 20), jnp.float32)
    _native.release()  # second-order derivatives (the XLA path's) leave their passes kept

    def tot(r):
        return jnp.sum(D._free_energy_batch(mdp.replace(reward=r), T, 30, native=True))

    g = np.asarray(jax.block_until_ready(jax.grad(tot)(mdp.reward)))
    m = _native.memory()
    assert m["kept"] == 0 and 0 < m["free"] <= m["limit"]  # the adjoint took its pass
    jax.block_until_ready(jax.jvp(tot, (mdp.reward,), (mdp.reward,)))
    assert _native.memory()["kept"] == 0  # so did forward mode's tangent
    args = _kernel_args(mdp, T)
    W = jnp.ones((1, 20), jnp.float32)
    fresh = NP.pull_adjoint(*args, W, 30)
    _, token = jax.block_until_ready(NP.pull_keep(*args, 30))
    assert _native.memory()["kept"] > 0
    _native.release()
    assert _native.memory() == {"free": 0, "kept": 0, "limit": m["limit"]}
    for a, b in zip(NP.pull_adjoint(*args, W, 30, token), fresh, strict=True):  # recomputed
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # a limit smaller than one buffer: nothing is kept, and the gradient is the same
    env = {**os.environ, "QUASIRL_NATIVE_POOL": "1000000"}
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["memory"] == {"free": 0, "kept": 0, "limit": 1000000}
    np.testing.assert_array_equal(np.asarray(r["grad"], np.float32).reshape(g.shape), g)


# --------------------------------------------------------------------------------------------
# conservation: every path of horizon H uses H transitions, so the tempered occupancy of all
# transitions (the gradient of F in the rewards) sums to H for every temperature (the
# Hypothesis property on random MDPs runs for every build in test_native_isa.py)
# --------------------------------------------------------------------------------------------
def test_native_occupancy_sums_to_the_horizon_in_the_issue_cases():
    # the cases that gave 2.375 and 54.75 on AVX2 + CLZERO CPUs (8-lane rows zeroed with
    # 64-byte CLZERO lines wiped the neighbouring row's sums)
    two = qr.MDP(np.full((2, 2, 2), 0.5, np.float32), np.zeros((2, 2), np.float32))
    np.testing.assert_allclose(float(qr.occupancy(two, 1.0, 3).sum()), 3.0, rtol=1e-6)
    chain = qr.chain(30, slip=0.2, dtype=np.float32)
    np.testing.assert_allclose(float(qr.occupancy(chain, 0.1, 200).sum()), 200.0, rtol=1e-5)
