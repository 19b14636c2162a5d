"""pyproject.toml's lower bound on jax is a version quasirl runs on.

When the installed jax is that version, the whole suite is the check. Otherwise the oldest
admitted jax and jaxlib are installed into a folder of their own (cached under the quasirl
cache) and put ahead of the installed ones for a smoke run of every JAX feature quasirl uses
(tests/jax_smoke.py) and the tests that told 0.10.1 from 0.10.2 (benchmarks/NOTES.md, 14).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from quasirl._native.build import cache_dir

ROOT = Path(__file__).resolve().parents[1]


def lower_bound(name: str) -> str:
    text = (ROOT / "pyproject.toml").read_text()
    m = re.search(rf'"{name}>=([0-9][0-9.]*)"', text)
    assert m, f"pyproject.toml has no lower bound for {name}"
    return m.group(1)


def test_jax_and_jaxlib_bounds_agree_and_are_not_above_the_installed():
    import jaxlib

    bound = lower_bound("jax")
    assert lower_bound("jaxlib") == bound
    version = tuple(int(x) for x in bound.split("."))
    assert tuple(int(x) for x in jax.__version__.split(".")[:3]) >= version
    assert tuple(int(x) for x in jaxlib.__version__.split(".")[:3]) >= version


@pytest.mark.slow
def test_oldest_admitted_jax_runs_quasirl(tmp_path):
    bound = lower_bound("jax")
    if jax.__version__ == bound:
        pytest.skip(f"the installed jax is the lower bound {bound}: the whole suite checks it")
    target = cache_dir() / f"jax-{bound}"
    if not (target / ".complete").exists():
        got = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                              "--target", str(target), f"jax=={bound}", f"jaxlib=={bound}"],
                             capture_output=True, text=True, timeout=900)
        if got.returncode != 0:
            pytest.skip(f"could not install jax {bound} (offline?): {got.stderr[-300:]}")
        (target / ".complete").touch()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(ROOT)]),
           "QUASIRL_CACHE_DIR": str(tmp_path / "native")}
    smoke = subprocess.run([sys.executable, str(ROOT / "tests" / "jax_smoke.py")],
                           capture_output=True, text=True, env=env, timeout=900)
    assert smoke.returncode == 0, smoke.stderr[-3000:]
    r = json.loads(smoke.stdout.strip().splitlines()[-1])
    assert r["jax"] == bound and r["native"] and r["finite"], r
    assert abs(r["occupancy"] - 9) < 1e-4 and r["grad_vs_xla"] < 1e-5
    assert abs(r["mass"] - 1) < 1e-5
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "tests/test_kernels.py", "tests/test_sequence.py", "-k",
                            "chebyshev or agree or refuses"],
                           capture_output=True, text=True, env=env, timeout=1800, cwd=ROOT)
    assert tests.returncode == 0, tests.stdout[-3000:]
