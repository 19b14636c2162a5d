"""Building the native CPU kernels, and what happens where they cannot be built.

Each case runs in a fresh Python process with its own empty cache directory: a fresh build,
a build for 8-lane vectors (x86-64-v3, no AVX-512: the other code path of both kernels), a
compiler that fails, and QUASIRL_NATIVE=0. In every case the public functions must give the
XLA path's results (to float32 rounding where a kernel ran, exactly where none did).
"""

import json
import os
import platform
import shutil
import subprocess
import sys

import pytest

needs_compiler = pytest.mark.skipif(
    not (os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")),
    reason="no C++ compiler: the kernels cannot be built here (the fallback test still runs)",
)

_PROBE = """
import json, numpy as np, jax, jax.numpy as jnp
import quasirl as qr
from quasirl import sequence as S
from quasirl import _dynamics as D
st = S.kernel_status()
f = S.single_peak(14, 3.0).astype(np.float32)
x = jnp.asarray(np.random.default_rng(0).random(1 << 14), jnp.float32)
auto = np.asarray(S.stationary(f, 0.02).distribution)
xla = np.asarray(S.stationary(f, 0.02, kernel="xla").distribution)
mut = np.asarray(S.mutate(x, 0.03))
mut_x = np.asarray(S.mutate(x, 0.03, kernel="xla"))
mdp = qr.gridworld(30, 20, dtype=np.float32)
fe_err = grad_err = 0.0
def total(r, T, native):
    return jnp.sum(D._free_energy_batch(mdp.replace(reward=r), T, 60, native=native))
# 20 lanes (padding at 8 and 16 lanes): with T = 0 lanes (value units), all T > 0 (log2 units)
for T in (jnp.asarray([0.0, 0.01, 0.3, 1.0, 7.0] * 4, jnp.float32),
          jnp.asarray(np.geomspace(0.01, 7.0, 20), jnp.float32)):
    fe = np.asarray(qr.free_energy(mdp, T, 60))
    fe_x = np.asarray(D._free_energy_batch(mdp, T, 60, native=False))
    fe_err = max(fe_err, float(np.abs(fe - fe_x).max()))
    # the adjoint kernel; T > 0 only: at T = 0 the gridworld's tied maxima make the gradient
    # a choice of subgradient (the kernel splits exact ties, XLA ties within a tolerance)
    Tp = T[T > 0]
    g = np.asarray(jax.grad(total)(mdp.reward, Tp, None))  # native where built
    g_x = np.asarray(jax.grad(total)(mdp.reward, Tp, False))
    grad_err = max(grad_err, float(np.abs(g - g_x).max() / np.abs(g_x).max()))
try:
    S.stationary(f, 0.02, kernel="native")
    err = None
except ValueError as e:
    err = str(e)
print(json.dumps({"status": {k: st[k] for k in ("available", "reason", "path")},
                  "stationary": float(np.abs(auto - xla).max()),
                  "mutate": float(np.abs(mut - mut_x).max() / np.abs(mut_x).max()),
                  "free_energy": fe_err, "grad": grad_err, "err": err}))
"""


def _probe(env_extra, tmp_path):
    env = {**os.environ, "QUASIRL_CACHE_DIR": str(tmp_path / "cache"), **env_extra}
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _agree(r):
    assert r["stationary"] <= 1e-6 and r["mutate"] <= 2e-6 and r["free_energy"] <= 2e-5, r
    assert r["grad"] <= 1e-5, r


@needs_compiler
def test_fresh_build_into_an_empty_cache(tmp_path):
    r = _probe({}, tmp_path)
    assert r["status"]["available"], r["status"]["reason"]
    assert r["status"]["path"].startswith(str(tmp_path / "cache"))
    assert r["err"] is None
    _agree(r)
    again = _probe({}, tmp_path)  # the second process finds the cached library
    assert again["status"]["path"] == r["status"]["path"]


@needs_compiler
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 targets")
def test_eight_lane_build(tmp_path):
    r = _probe({"QUASIRL_NATIVE_MARCH": "x86-64-v3"}, tmp_path)
    assert r["status"]["available"], r["status"]["reason"]
    _agree(r)


def test_fallback_without_a_compiler_and_when_disabled(tmp_path):
    for env, why in (({"CXX": "/bin/false"}, "failed"), ({"QUASIRL_NATIVE": "0"},
                                                         "QUASIRL_NATIVE=0")):
        r = _probe(env, tmp_path)
        assert not r["status"]["available"] and why in r["status"]["reason"]
        assert "not available here" in r["err"] and why in r["err"]
        assert r["stationary"] == 0 and r["mutate"] == 0 and r["free_energy"] == 0
