"""kernel="auto" | "native" | "xla" on the public functions, and quasirl.kernel_status()."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import quasirl as qr
from quasirl import sequence as S

native_here = pytest.mark.skipif(not qr.kernel_status()["in_use"],
                                 reason=f"native kernels not in use: "
                                        f"{qr.kernel_status()['reason']}")


def test_kernel_status_reports_the_build_and_every_function():
    st = qr.kernel_status()
    for key in ("available", "reason", "path", "backend", "march", "lanes", "avx512", "clzero",
                "openmp", "threads", "in_use", "functions"):
        assert key in st, key
    assert set(st["functions"]) >= {"free_energy", "log_partition", "occupancy", "evolve",
                                    "soft_policy", "sequence.evolve", "sequence.stationary"}
    if st["in_use"]:
        assert st["lanes"] in (8, 16) and st["threads"] >= 1 and st["reason"] is None
        assert st["functions"]["evolve"].startswith("XLA")
        assert st["functions"]["free_energy"].startswith("native")


@pytest.mark.parametrize("call", [
    lambda m, k: qr.free_energy(m, 0.5, 3, kernel=k),
    lambda m, k: qr.log_partition(m, 0.5, 3, kernel=k),
    lambda m, k: qr.occupancy(m, 0.5, 3, kernel=k),
    lambda m, k: qr.evolve(m, 0.5, 3, kernel=k),
    lambda m, k: qr.soft_policy(m, 0.5, 3, kernel=k),
])
def test_unknown_kernel_is_a_clear_error(call):
    mdp = qr.chain(4)
    with pytest.raises(ValueError, match="kernel must be 'auto', 'native' or 'xla', got 'gpu'"):
        call(mdp, "gpu")


def test_native_refuses_what_it_cannot_run_and_says_why():
    m64 = qr.chain(5)  # float64
    with pytest.raises(ValueError, match="free_energy: kernel='native' cannot run here: .*"
                                         "float32 MDPs, this one is float64"):
        qr.free_energy(m64, 0.5, 4, kernel="native")
    dense = qr.random_mdp(jax.random.key(0), 80, 2, 80, dtype=np.float32)
    assert dense.pred.shape[1] > 64
    with pytest.raises(ValueError, match="occupancy: .*up to 64 transitions may enter a state"):
        qr.occupancy(dense, 0.5, 2, kernel="native")
    for fn in (qr.evolve, qr.soft_policy):
        with pytest.raises(ValueError, match=f"{fn.__name__} has no native kernel"):
            fn(m64, 0.5, 3, kernel="native")
    f = S.single_peak(6, 2.0)
    with pytest.raises(ValueError, match="groups sets the XLA path's blocks"):
        S.stationary(f, 0.01, groups=(3, 3), kernel="native")


@native_here
def test_auto_native_and_xla_agree_on_every_entry_point():
    mdp = qr.gridworld(7, 6, dtype=np.float32)
    T = np.array([0.0, 0.05, 0.7], np.float32)
    H = 15
    for fn in (qr.free_energy, qr.log_partition):
        t = T[1:] if fn is qr.log_partition else T
        auto, nat, xla = (np.asarray(fn(mdp, t, H, kernel=k)) for k in ("auto", "native", "xla"))
        np.testing.assert_array_equal(auto, nat)  # auto runs the native kernel here
        np.testing.assert_allclose(nat, xla, rtol=2e-5, atol=2e-5)
    occ = [np.asarray(qr.occupancy(mdp, 0.3, H, kernel=k)) for k in ("native", "xla")]
    np.testing.assert_allclose(occ[0], occ[1], rtol=1e-4, atol=1e-5)
    # every T = 0: auto takes XLA's max-plus recursion, native its own T = 0 lanes
    zero = jnp.zeros(3, jnp.float32)
    np.testing.assert_allclose(np.asarray(qr.free_energy(mdp, zero, H, kernel="native")),
                               np.asarray(qr.free_energy(mdp, zero, H)), rtol=1e-6)
    a, x = qr.evolve(mdp, 0.3, H), qr.evolve(mdp, 0.3, H, kernel="xla")  # XLA for both
    for u, v in zip(a[:3], x[:3], strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    np.testing.assert_array_equal(np.asarray(qr.soft_policy(mdp, 0.3, H)),
                                  np.asarray(qr.soft_policy(mdp, 0.3, H, kernel="xla")))
