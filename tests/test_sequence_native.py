"""The native CPU kernel for Eigen's mutation operator against independent oracles.

Oracles: the dense 2^L x 2^L matrix (numpy.kron, L <= 10) and the XLA path of grouped
Kronecker blocks (its own tests hold it to the dense matrix and a dense eigen-decomposition);
loops for vmap; the XLA path's derivatives for grad. Building, the 8-lane build and the
fallback when no kernel can be built: tests/test_native_build.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import quasirl as qr
from quasirl import sequence as S
from quasirl._validate import QuasirlValueError
from quasirl.sequence._checks import site_rates
from quasirl.sequence._kron import apply_q, default_groups, resolve_kernel

pytestmark = pytest.mark.skipif(
    not qr.kernel_status()["available"],
    reason=f"native kernel not built here: {qr.kernel_status()['reason']}",
)


def dense_q(u, v):
    Q = np.ones((1, 1))
    for uj, vj in zip(u, v, strict=True):
        Q = np.kron(Q, np.array([[1 - uj, vj], [uj, 1 - vj]]))
    return Q


def _rates(L, kind, rng, dtype):
    if kind == "scalar":
        return site_rates(0.013, None, L, dtype)
    return site_rates(rng.uniform(0, 0.3, L), rng.uniform(0, 0.3, L), L, dtype)


def _both(x, w, u, v, scale, weighted, normalize):
    L = x.shape[0].bit_length() - 1
    g = default_groups(L, x.dtype)
    kw = dict(weighted=weighted, normalize=normalize, groups=g)
    yn, sn = jax.jit(lambda *a: apply_q(*a, native=True, **kw))(x, w, u, v, scale)
    yx, sx = jax.jit(lambda *a: apply_q(*a, native=False, **kw))(x, w, u, v, scale)
    return np.asarray(yn), float(sn), np.asarray(yx), float(sx)


# L < log2(lanes) (scalar path), = block size, and above it (pass B), both dtypes
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("L", [1, 2, 3, 4, 5, 7, 10, 12, 13, 14, 16])
@pytest.mark.parametrize("kind", ["scalar", "per-site"])
def test_native_equals_dense_and_xla(L, dtype, kind):
    rng = np.random.default_rng(L)
    n = 1 << L
    x = jnp.asarray(rng.random(n), dtype)
    w = jnp.asarray(rng.uniform(0.1, 2.0, n), dtype)
    u, v = _rates(L, kind, rng, dtype)
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    for weighted, normalize, scale in [(True, True, 1.0), (True, False, 0.7), (False, False, 1.0),
                                       (False, True, 2.5)]:
        yn, sn, yx, sx = _both(x, w, u, v, scale, weighted, normalize)
        assert yn.dtype == dtype
        np.testing.assert_allclose(yn, yx, rtol=rtol, atol=rtol * np.abs(yx).max())
        np.testing.assert_allclose(sn, sx, rtol=rtol)
        if L <= 10:
            z = np.asarray(x, np.float64) * (np.asarray(w, np.float64) if weighted else 1)
            ref = dense_q(np.asarray(u, np.float64), np.asarray(v, np.float64)) @ z
            ref *= scale / z.sum() if normalize else scale
            np.testing.assert_allclose(yn, ref, rtol=10 * rtol, atol=10 * rtol * np.abs(ref).max())
            np.testing.assert_allclose(sn, z.sum(), rtol=rtol)


@pytest.mark.parametrize("L, dtype", [(22, np.float32), (24, np.float64)])
def test_native_large_L_two_tile_passes(L, dtype):
    """L = 22 float32 (the benchmark size: one tile pass) and L = 24 float64 (two tile
    passes of 6 bits after the 12-bit blocks)."""
    rng = np.random.default_rng(0)
    n = 1 << L
    x = jnp.asarray(rng.random(n), dtype)
    w = jnp.asarray(rng.uniform(0.5, 1.5, n), dtype)
    u, v = _rates(L, "per-site", rng, dtype)
    yn, sn, yx, sx = _both(x, w, u, v, 1.0, True, True)
    rtol = 1e-11 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(yn, yx, rtol=rtol, atol=rtol * np.abs(yx).max())
    np.testing.assert_allclose(sn, sx, rtol=rtol)
    np.testing.assert_allclose(yn.sum(), 1.0, rtol=10 * rtol)


def test_public_functions_agree_across_kernels():
    L = 11
    f = S.single_peak(L, 5.0)
    for fn in (
        lambda k: S.stationary(f, 0.02, kernel=k).distribution,
        lambda k: S.evolve(f, 0.02, 30, kernel=k, save_every=10).distribution,
        lambda k: S.evolve(f, 0.02, 30, kernel=k, model="continuous").distribution,
        lambda k: S.mutate(jnp.arange(1 << L, dtype=float), 0.05, 0.01, kernel=k),
        lambda k: S.wright_fisher(jax.random.key(3), f, 0.02, 500, 20, kernel=k).counts,
    ):
        a, b = np.asarray(fn("native")), np.asarray(fn("xla"))
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12 * np.abs(b).max())
    tr = S.evolve(f, 0.02, 25, kernel="native")
    # the recorded mean fitness is f . x_t for every t (the kernel's sum for t < G)
    xs = [np.asarray(S.evolve(f, 0.02, t, kernel="xla").distribution) for t in (0, 1, 24, 25)]
    np.testing.assert_allclose(np.asarray(tr.mean_fitness)[[0, 1, 24, 25]],
                               [np.asarray(f) @ x for x in xs], rtol=1e-12)


def test_native_grad_jvp_vmap_jit():
    L = 9
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.random(1 << L))
    w = jnp.asarray(rng.uniform(0.5, 1.5, 1 << L))
    g = default_groups(L, x.dtype)

    def loss(native):
        def fn(x, w, mu, nu):
            u, v = site_rates(mu, nu, L, x.dtype)
            y, s = apply_q(x, w, u, v, 1.0, weighted=True, normalize=True, groups=g,
                           native=native)
            return jnp.sum(y ** 2 * jnp.arange(y.size)) + s

        return fn

    args = (x, w, jnp.asarray(0.03), jnp.asarray(rng.uniform(0, 0.2, L)))
    gn = jax.grad(loss(True), argnums=(0, 1, 2, 3))(*args)
    gx = jax.grad(loss(False), argnums=(0, 1, 2, 3))(*args)
    for a, b in zip(gn, gx, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    tn = jax.jvp(loss(True), args, tuple(jnp.ones_like(a) for a in args))
    tx = jax.jvp(loss(False), args, tuple(jnp.ones_like(a) for a in args))
    np.testing.assert_allclose(tn, tx, rtol=1e-10)
    # vmap over mu equals a loop; jit gives the same bits as eager
    mus = jnp.asarray([0.0, 0.01, 0.2, 0.5])
    vm = jax.vmap(lambda m: S.mutate(x, m, kernel="native"))(mus)
    loop = np.stack([np.asarray(S.mutate(x, float(m), kernel="xla")) for m in mus])
    np.testing.assert_allclose(vm, loop, rtol=1e-12)
    jit = jax.jit(lambda x: S.mutate(x, 0.01, kernel="native"))(x)
    np.testing.assert_array_equal(np.asarray(jit), np.asarray(S.mutate(x, 0.01, kernel="native")))


def test_native_is_deterministic_and_keeps_subnormals():
    L = 20
    x = jnp.asarray(np.random.default_rng(2).random(1 << L), jnp.float32)
    a = np.asarray(S.mutate(x, 0.01, kernel="native"))
    b = np.asarray(S.mutate(x, 0.01, kernel="native"))
    np.testing.assert_array_equal(a, b)
    # the shared library did not switch the process to flush-to-zero (no -ffast-math; XLA's
    # own computations flush subnormals with or without it, numpy's must not)
    tiny = np.finfo(np.float32).smallest_subnormal
    assert np.float32(tiny) * np.float32(1.5) > 0


def test_kernel_argument_errors():
    f = S.single_peak(6, 2.0)
    with pytest.raises(QuasirlValueError, match="kernel must be 'auto', 'native' or 'xla'"):
        S.stationary(f, 0.01, kernel="fast")
    with pytest.raises(QuasirlValueError, match="groups sets the XLA path"):
        S.evolve(f, 0.01, 3, kernel="native", groups=(3, 3))
    assert resolve_kernel("auto", None) is True
    assert resolve_kernel("auto", (3, 3)) is False
    assert resolve_kernel("xla", None) is False
