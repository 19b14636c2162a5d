"""One build of the native kernels against the float64 XLA path, for tests/test_native_isa.py.

Run as a script in a fresh process whose environment picks the build
(``QUASIRL_NATIVE_MARCH``, ``QUASIRL_CACHE_DIR``, ``QUASIRL_NATIVE_WERROR=1``). For each
OpenMP team size in ``--threads`` it runs the native forward kernel, the reverse-mode adjoint
(contracted over temperatures), the forward-mode kernel (N per temperature), the
checkpointed adjoint, the adjoint from a kept forward pass (also with a token of another MDP
of the same shape), the occupancy, gradients of two same-shape MDPs interleaved under jit
and vmap, Eigen's operator, and a Hypothesis property (the occupancy of every transition
sums to the horizon, for every temperature, on random MDPs). It prints one JSON line: the
build's status and, per team size, the largest error of each check (relative to the float64
XLA path's scale) and the bit-equality checks. The parent asserts the tolerances.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import quasirl as qr  # noqa: E402
from quasirl import _dynamics as D  # noqa: E402
from quasirl import _native  # noqa: E402
from quasirl import sequence as S  # noqa: E402
from quasirl._native import pull as NP  # noqa: E402
from quasirl._pull_xla import pull_tables  # noqa: E402

# lanes with T = 0 (value units) and all T > 0 (log2 units); 20 lanes pad both vector widths
MIXED = np.array([0.0, 1e-3, 0.01, 0.05, 0.3, 1.0, 4.0, 1e3] * 2 + [0.2, 0.0, 7.0], np.float32)
POSITIVE = np.geomspace(1e-3, 1e3, 20).astype(np.float32)


def to64(mdp):
    return jax.tree_util.tree_map(
        lambda x: jnp.asarray(x, jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x,
        mdp)


def mdps():
    """A grid (deterministic, uniform start), a random stochastic MDP with padding (policy
    zeros) and unreachable states (init zeros), and a banded chain (sources in both threads'
    ranges of states)."""
    grid = qr.gridworld(12, 9, dtype=np.float32)
    rnd = qr.random_mdp(jax.random.key(4), 50, 3, 2, reward_scale=2.0, dtype=np.float32)
    mask = np.ones((50, 3), np.float32)
    mask[::4, 1:] = 0
    rnd = rnd.replace(policy=jnp.asarray(mask / mask.sum(axis=1, keepdims=True)),
                      init=jnp.asarray(np.r_[np.ones(10), np.zeros(40)] / 10, jnp.float32))
    chain = qr.chain(61, slip=0.2, dtype=np.float32)
    return {"grid": (grid, 25), "random": (rnd, 9), "chain": (chain, 40)}


def F(mdp, T, H, native):
    return D._free_energy_batch(mdp, jnp.asarray(T, mdp.prob.dtype), H, native=native)


def total(r, mdp, T, H, native):
    return jnp.sum(F(mdp.replace(reward=r), T, H, native))


def rel(a, b, scale=None):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    s = float(np.abs(b).max(initial=0.0)) if scale is None else scale
    return float(np.abs(a - b).max(initial=0.0) / max(s, 1e-30))


def kernel_args(mdp, T):
    li, logw, rew = D._native_inputs(mdp)
    return li, pull_tables(mdp).src, logw, rew, jnp.asarray(T, jnp.float32)


def same(xs, ys) -> bool:
    return all(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
               for a, b in zip(xs, ys, strict=True))


def ref_grad(m, T, H):
    m = to64(m)
    return np.asarray(jax.grad(total)(m.reward, m, np.asarray(T, np.float64), H, False))


def references(path: str | None) -> dict:
    """The float64 XLA path's values the checks compare with: the same for every build, so
    the first probe computes them and writes ``path`` (npz), the others read it."""
    if path and os.path.exists(path):
        with np.load(path) as z:
            return dict(z)
    ref = {}
    for name, (mdp, H) in mdps().items():
        m64 = to64(mdp)
        for k, T in enumerate((MIXED, POSITIVE)):
            ref[f"{name}/F{k}"] = np.asarray(F(m64, T.astype(np.float64), H, False))
        ref[f"{name}/grad"] = ref_grad(mdp, POSITIVE, H)
        ref[f"{name}/jvp"] = np.asarray(jax.jvp(
            lambda r, m=m64, H=H: F(m.replace(reward=r), POSITIVE.astype(np.float64), H, False),
            (m64.reward,), (jnp.ones_like(m64.reward),))[1])
        ref[f"{name}/occupancy"] = np.asarray(qr.occupancy(m64, 0.3, H, kernel="xla"))
    a, b = pair()
    for k, m in enumerate((a, b, a.replace(reward=b.reward), a.replace(reward=-a.reward))):
        ref[f"pair/{k}"] = ref_grad(m, POSITIVE, 12)
    for L, x, f in kron_inputs():
        x64, f64 = jnp.asarray(x, jnp.float64), jnp.asarray(f, jnp.float64)
        ref[f"kron/{L}/mutate"] = np.asarray(S.mutate(x64, 0.03, kernel="xla"))
        ref[f"kron/{L}/stationary"] = np.asarray(
            S.stationary(f64, 0.02, tol=1e-12, kernel="xla").distribution)
    if path:
        tmp = path + ".tmp.npz"
        np.savez(tmp, **ref)
        os.replace(tmp, path)
    return ref


def kron_inputs():
    """Eigen's operator below the lane count, below and above the block size: (L, x, f)."""
    return [(L, np.random.default_rng(L).random(1 << L), np.asarray(S.single_peak(L, 3.0)))
            for L in (2, 10, 15)]


def pair():
    """Two MDPs of one shape."""
    return (qr.random_mdp(jax.random.key(21), 40, 3, 2, dtype=np.float32),
            qr.random_mdp(jax.random.key(22), 40, 3, 2, dtype=np.float32))


def checks(ref: dict, examples: int) -> dict:
    out = {"F": 0.0, "grad": 0.0, "jvp": 0.0, "occupancy": 0.0, "occupancy_sum": 0.0,
           "interleaved": 0.0, "kron": 0.0}
    bits = {"checkpointed": True, "kept": True, "kept_other_mdp": True, "streamed": True}
    for name, (mdp, H) in mdps().items():
        w = np.asarray(mdp.policy)[:, :, None] * np.asarray(mdp.prob)
        big = float(-np.log(w[w > 0]).min()) + 1.0
        # the forward with streaming stores (u far larger than the caches) on a small problem
        os.environ["QUASIRL_NATIVE_STREAM"] = "1"
        streamed = F(mdp, MIXED, H, True)
        del os.environ["QUASIRL_NATIVE_STREAM"]
        bits["streamed"] &= same([streamed], [F(mdp, MIXED, H, True)])
        for k, T in enumerate((MIXED, POSITIVE)):
            # float32 rounding: ~ulp of the value, plus ~ulp(T log w) per step (F = T log Z
            # carries terms T log w that cancel)
            scale = 1.0 + np.abs(ref[f"{name}/F{k}"]) + T.astype(np.float64) * big * (H + 1)
            err = np.abs(np.asarray(F(mdp, T, H, True), np.float64) - ref[f"{name}/F{k}"])
            out["F"] = max(out["F"], float((err / scale).max()))
        # reverse mode (the contracted adjoint), T > 0: at T = 0 tied maxima make the gradient
        # a choice of subgradient (the kernel splits exact ties, XLA ties within a tolerance)
        gn = jax.grad(total)(mdp.reward, mdp, POSITIVE, H, True)
        out["grad"] = max(out["grad"], rel(gn, ref[f"{name}/grad"]))
        n = POSITIVE.size * H
        out["occupancy_sum"] = max(out["occupancy_sum"], abs(float(jnp.sum(gn)) - n) / n)
        # forward mode (the kernel returning N per temperature), in the rewards
        tn = jax.jvp(lambda r, m=mdp, H=H: F(m.replace(reward=r), POSITIVE, H, True),
                     (mdp.reward,), (jnp.ones_like(mdp.reward),))[1]
        out["jvp"] = max(out["jvp"], rel(tn, ref[f"{name}/jvp"], float(H)))
        out["occupancy"] = max(out["occupancy"], rel(qr.occupancy(mdp, 0.3, H, kernel="native"),
                                                     ref[f"{name}/occupancy"]))
        # the checkpointed adjoint and the kept pass: the same arithmetic, the same bits
        args = kernel_args(mdp, MIXED)
        W = jnp.asarray(np.random.default_rng(0).normal(size=(2, MIXED.size)), jnp.float32)
        fresh = NP.pull_adjoint(*args, W, H)
        os.environ["QUASIRL_FB_MEMORY"] = "1"
        bits["checkpointed"] &= same(NP.pull_adjoint(*args, W, H), fresh)
        del os.environ["QUASIRL_FB_MEMORY"]
        _, token = NP.pull_keep(*args, H)
        bits["kept"] &= same(NP.pull_adjoint(*args, W, H, token), fresh)
        # a token kept for another MDP of the same shape: its fingerprint does not match
        other = kernel_args(mdp.replace(reward=mdp.reward + 0.25), MIXED)
        _, token = NP.pull_keep(*other, H)
        bits["kept_other_mdp"] &= same(NP.pull_adjoint(*args, W, H, token), fresh)
    # two MDPs of one shape, gradients interleaved, under jit and under vmap
    a, b = pair()
    g = jax.jit(jax.grad(total), static_argnums=(3, 4))
    for m, k in ((a, 0), (b, 1), (a, 0), (b, 1)):
        out["interleaved"] = max(out["interleaved"],
                                 rel(g(m.reward, m, POSITIVE, 12, True), ref[f"pair/{k}"]))
    rs = jnp.stack([a.reward, b.reward, -a.reward])
    gv = jax.vmap(lambda r: jax.grad(total)(r, a, POSITIVE, 12, True))(rs)
    for k, key in enumerate(("pair/0", "pair/2", "pair/3")):
        out["interleaved"] = max(out["interleaved"], rel(gv[k], ref[key]))
    # Eigen's operator, float32 and float64, against float64 XLA
    for L, x, f in kron_inputs():
        for dt in (np.float32, np.float64):
            mut = S.mutate(jnp.asarray(x, dt), dt(0.03), kernel="native")
            st_ = S.stationary(jnp.asarray(f, dt), dt(0.02), kernel="native").distribution
            out["kron"] = max(out["kron"], rel(mut, ref[f"kron/{L}/mutate"]),
                              rel(st_, ref[f"kron/{L}/stationary"]))
    out["property"] = occupancy_property(examples)
    out.update(bits)
    return out


def occupancy_property(examples: int) -> str | None:
    """None where the property held on every example, else Hypothesis's report."""

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(S_=st.integers(1, 24), A=st.integers(1, 3), K=st.integers(1, 3),
           seed=st.integers(0, 99), H=st.integers(0, 12),
           temps=st.lists(st.sampled_from([0.0, 1e-3, 0.05, 0.3, 1.0, 4.0, 1e3]), min_size=1,
                          max_size=20))
    def prop(S_, A, K, seed, H, temps):
        mdp = qr.random_mdp(jax.random.key(seed), S_, A, min(K, S_), reward_scale=2.0,
                            dtype=np.float32)
        g = np.asarray(jax.grad(total)(mdp.reward, mdp, np.asarray(temps, np.float32), H, True),
                       np.float64)
        np.testing.assert_allclose(g.sum(), len(temps) * H, rtol=2e-5, atol=1e-5)
        assert np.all(g >= -1e-6), g.min()

    try:
        prop()
    except Exception as exc:  # an AssertionError, or Hypothesis's group of distinct (or flaky)
        return f"{type(exc).__name__}: {exc}"[-2000:]  # failures
    return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2,3")
    ap.add_argument("--examples", type=int, default=8)
    ap.add_argument("--refs", default=None, help="npz of the float64 references (read, or "
                                                 "computed and written)")
    ap.add_argument("--refs-only", action="store_true", help="compute --refs and stop")
    args = ap.parse_args()
    st_ = qr.kernel_status()
    report = {"status": {k: st_.get(k) for k in ("available", "reason", "path", "march",
                                                  "lanes", "avx512", "clzero", "openmp")}}
    if args.refs_only:
        references(args.refs)
    elif st_["available"]:
        ref = references(args.refs)
        for n in (int(t) for t in args.threads.split(",")):
            _native.set_threads(n)
            report[str(n)] = checks(ref, args.examples)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
