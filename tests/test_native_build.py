"""Building the native CPU kernels: when it happens, and what happens where it cannot.

Each case runs in a fresh Python process with its own cache directory. The build happens
when quasirl is imported (or by ``quasirl build-native``), never inside a traced call; where
no compiler works, or with QUASIRL_NATIVE=0, every public function takes the XLA path and
gives its results exactly, and kernel='native' says why it cannot run. (The builds for every
instruction set, against the float64 XLA path: test_native_isa.py.)
"""

import json
import os
import subprocess
import sys

import pytest

from quasirl._native import build as B

needs_compiler = pytest.mark.skipif(B.compiler() is None, reason="no C++ compiler")

_NO_COMPILER_IN_CALLS = """
import json, os, subprocess, jax, jax.numpy as jnp, numpy as np
import quasirl as qr                      # builds here, into an empty cache
st = qr.kernel_status()
built = st["path"] is not None and os.path.exists(st["path"])
def refuse(*a, **k):
    raise AssertionError(f"a process was started inside a call: {a[:1]}")
subprocess.run = subprocess.Popen = refuse  # no compiler from here on
mdp = qr.gridworld(6, 5, dtype=np.float32)
f = jax.jit(lambda r, t: jnp.sum(qr.free_energy(mdp.replace(reward=r), t, 9)))
g = jax.grad(f)(mdp.reward, jnp.asarray([0.1, 1.0], jnp.float32))
occ = qr.occupancy(mdp, 0.5, 9)
x = qr.sequence.mutate(jnp.ones(1 << 10, jnp.float32) / 1024, 0.01)
print(json.dumps({"built": built, "in_use": st["in_use"], "march": st["march"],
                  "occ": float(occ.sum()), "grad": float(g.sum()), "mass": float(x.sum())}))
"""


@needs_compiler
def test_built_on_import_never_inside_a_traced_call(tmp_path):
    env = {**os.environ, "QUASIRL_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("QUASIRL_NATIVE_MARCH", None)
    out = subprocess.run([sys.executable, "-c", _NO_COMPILER_IN_CALLS], capture_output=True,
                         text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr
    assert "compiling the native CPU kernels" in out.stderr  # said once, on import
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["built"] and r["in_use"] and r["march"] == "native", r
    assert abs(r["occ"] - 9) < 1e-4 and abs(r["grad"] - 18) < 1e-3 and abs(r["mass"] - 1) < 1e-5
    # quasirl build-native finds the same library; --status reports it
    cli = [sys.executable, "-c", "import sys; from quasirl.cli import main; sys.exit(main())"]
    b = subprocess.run([*cli, "build-native"], capture_output=True, text=True, env=env,
                       timeout=900)
    assert b.returncode == 0 and "native: " in b.stdout, b.stdout + b.stderr
    assert "compiling" not in b.stderr
    s = subprocess.run([*cli, "build-native", "--status"], capture_output=True, text=True,
                       env=env, timeout=900)
    assert s.returncode == 0, s.stderr
    st = json.loads(s.stdout)
    assert st["available"] and st["functions"]["evolve"].startswith("XLA"), st


_FALLBACK = """
import json, numpy as np, jax, jax.numpy as jnp
import quasirl as qr
from quasirl import sequence as S
st = qr.kernel_status()
f = S.single_peak(12, 3.0).astype(np.float32)
x = jnp.asarray(np.random.default_rng(0).random(1 << 12), jnp.float32)
mdp = qr.gridworld(10, 8, dtype=np.float32)
T = jnp.asarray([0.0, 0.05, 1.0], jnp.float32)
pairs = [(S.stationary(f, 0.02).distribution, S.stationary(f, 0.02, kernel="xla").distribution),
         (S.mutate(x, 0.03), S.mutate(x, 0.03, kernel="xla")),
         (qr.free_energy(mdp, T, 30), qr.free_energy(mdp, T, 30, kernel="xla")),
         (qr.occupancy(mdp, 0.2, 30), qr.occupancy(mdp, 0.2, 30, kernel="xla"))]
errs = []
for call in (lambda: S.stationary(f, 0.02, kernel="native"),
             lambda: qr.free_energy(mdp, T, 30, kernel="native")):
    try:
        call()
        errs.append(None)
    except ValueError as e:
        errs.append(str(e))
print(json.dumps({"status": {k: st[k] for k in ("available", "reason", "in_use")},
                  "diff": [float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in pairs],
                  "errs": errs}))
"""


def test_fallback_without_a_compiler_and_when_disabled(tmp_path):
    for env_extra, why in (({"CXX": "/bin/false"}, "failed"),
                           ({"QUASIRL_NATIVE": "0"}, "QUASIRL_NATIVE=0")):
        env = {**os.environ, "QUASIRL_CACHE_DIR": str(tmp_path / "cache"), **env_extra}
        out = subprocess.run([sys.executable, "-c", _FALLBACK], capture_output=True, text=True,
                             env=env, timeout=600)
        assert out.returncode == 0, out.stderr
        r = json.loads(out.stdout.strip().splitlines()[-1])
        assert not r["status"]["available"] and not r["status"]["in_use"]
        assert why in r["status"]["reason"]
        assert r["diff"] == [0.0, 0.0, 0.0, 0.0]  # the XLA path, bit for bit
        for e in r["errs"]:
            assert e and "kernel='native' cannot run here" in e and why in e, e
