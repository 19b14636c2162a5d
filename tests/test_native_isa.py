"""The native kernels built for every instruction set this CPU can run, each checked against
the float64 XLA path with 1, 2 and 3 OpenMP threads.

Code that branches on the instruction set (simd.h: AVX-512 tables and streaming stores,
CLZERO row zeroing; 8 or 16 float lanes) is only as good as the builds that were checked: an
AVX2 + CLZERO build, never made on the AVX-512 machine the kernels were written on, gave
gradients wrong by 20-65%. Each variant of quasirl._native.build.VARIANTS the CPU can run is
built with -Werror into its own cache folder and probed in a fresh process
(tests/native_probe.py: forward, reverse and forward mode, occupancy, the checkpointed and
kept passes, a token of another MDP, gradients of two MDPs interleaved under jit and vmap,
Eigen's operator, and a Hypothesis property: the occupancy sums to the horizon). The others
are skipped with the reason; the summary at the end of the run prints the matrix.
"""

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from quasirl._native import build as B

HERE = Path(__file__).resolve().parent
needs_compiler = pytest.mark.skipif(B.compiler() is None, reason="no C++ compiler")

# largest errors allowed against the float64 XLA path (float32 rounding is ~1e-7 of the scale)
TOLERANCE = {"F": 1e-5, "grad": 1e-5, "jvp": 1e-5, "occupancy": 1e-5, "occupancy_sum": 1e-5,
             "interleaved": 1e-5, "kron": 1e-5}
BITS = ("checkpointed", "kept", "kept_other_mdp", "streamed")
THREADS = (1, 2, 3)

# variant -> the probe's report, or the reason it was skipped (each test also records its
# variant's entry as a user property, which reaches conftest's summary from an xdist worker)
RESULTS: dict[str, dict | str] = {}


def _env(tmp: Path, variant: str) -> dict:
    return {**os.environ, "QUASIRL_NATIVE_MARCH": variant, "QUASIRL_NATIVE_WERROR": "1",
            "QUASIRL_CACHE_DIR": str(tmp / variant.replace("+", "_")),
            "QUASIRL_NATIVE_GRAIN": "1",  # small problems on the whole team
            "OMP_WAIT_POLICY": "passive",  # 3 threads on 2 cores: sleep at barriers, not spin
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}


def _run(cmd, env) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=HERE)


def _matrix(tmp: Path) -> dict:
    """Every runnable variant built and probed, two processes at a time (the float64
    references computed once, beside the first builds)."""
    refs = tmp / "refs.npz"
    probe = [sys.executable, str(HERE / "native_probe.py"), "--refs", str(refs),
             "--threads", ",".join(map(str, THREADS))]
    runnable = [v for v in B.VARIANTS if B.runnable(v)[0]]
    for v in B.VARIANTS:
        if v not in runnable:
            RESULTS[v] = f"skipped: {B.runnable(v)[1]}"
    done = threading.Event()
    ref_error: list[str] = []

    def references():
        r = _run([*probe, "--refs-only"], {**_env(tmp, "refs"), "QUASIRL_NATIVE": "0"})
        if r.returncode != 0:
            ref_error.append(r.stderr[-4000:])
        done.set()

    def variant(v):
        env = _env(tmp, v)
        b = _run([sys.executable, "-m", "quasirl._native", "build", "--march", v, "--werror"],
                 env)
        if b.returncode != 0:
            return v, {"error": f"build failed:\n{b.stdout[-4000:]}\n{b.stderr[-4000:]}"}
        done.wait()
        if ref_error:
            return v, {"error": f"references failed:\n{ref_error[0]}"}
        p = _run(probe, env)
        if p.returncode != 0:
            return v, {"error": f"probe failed:\n{p.stderr[-4000:]}"}
        return v, json.loads(p.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(max_workers=2) as pool:
        pool.submit(references)
        for v, rep in pool.map(variant, runnable):
            RESULTS[v] = rep
    return RESULTS


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    return _matrix(tmp_path_factory.mktemp("isa"))


@needs_compiler
@pytest.mark.parametrize("variant", list(B.VARIANTS))
def test_native_build_agrees_with_float64_xla(matrix, variant, record_property):
    rep = matrix[variant]
    record_property("isa_matrix", json.dumps([variant, rep]))  # for conftest's summary
    if isinstance(rep, str):
        pytest.skip(f"{variant}: {rep}")
    assert "error" not in rep, rep.get("error")
    st = rep["status"]
    assert st["available"], st["reason"]
    # the build has the code paths its instruction set asks for
    avx512 = variant == "native" and "avx512f" in B.cpu_flags() or "v4" in variant
    clzero = "clzero" in variant or variant == "native" and "clzero" in B.cpu_flags()
    assert st["avx512"] == avx512 and st["lanes"] == (16 if avx512 else 8), st
    assert st["clzero"] == clzero, st
    for n in THREADS:
        r = rep[str(n)]
        bad = {k: r[k] for k, tol in TOLERANCE.items() if not r[k] <= tol}
        assert not bad, f"{variant}, {n} threads: errors {bad} above {TOLERANCE}"
        assert all(r[k] for k in BITS), f"{variant}, {n} threads: {r}"
        assert r["property"] is None, f"{variant}, {n} threads: {r['property']}"


def summary_lines(results: dict[str, dict | str]) -> list[str]:
    """The matrix as a table (conftest prints it at the end of the run)."""
    if not results:
        return []
    lines = ["native kernels, ISA matrix (errors against float64 XLA, max over 1-3 threads):",
             f"{'variant':18s} {'ran':5s} {'F':>9s} {'grad':>9s} {'occupancy':>9s} "
             f"{'jvp':>9s} {'kron':>9s}  bits  property"]
    for v, rep in results.items():
        if isinstance(rep, str):
            lines.append(f"{v:18s} no     {rep}")
            continue
        if "error" in rep:
            lines.append(f"{v:18s} FAIL   {rep['error'].splitlines()[0]}")
            continue
        rows = [rep[str(n)] for n in THREADS if str(n) in rep]
        worst = {k: max(r[k] for r in rows) for k in ("F", "grad", "occupancy", "jvp", "kron")}
        bits = all(r[k] for r in rows for k in BITS)
        prop = all(r["property"] is None for r in rows)
        lines.append(f"{v:18s} yes   " + " ".join(f"{worst[k]:9.1e}" for k in worst) +
                     f"  {'same' if bits else 'DIFF'}  {'holds' if prop else 'FAILS'}")
    return lines


def test_matrix_summary_reaches_the_controller_in_variant_order():
    """conftest gathers each variant's report from the tests' user properties (what xdist
    carries from a worker) and prints the table in VARIANTS order, whatever order they came."""
    import conftest

    saved = dict(conftest._ISA_MATRIX)
    conftest._ISA_MATRIX.clear()
    try:
        variants = list(B.VARIANTS)

        class Report:
            user_properties = [("isa_matrix", json.dumps([v, f"skipped: reason {v}"]))
                               for v in reversed(variants)]

        class Terminal:
            lines: list = []

            def write_line(self, line):
                self.lines.append(line)

        conftest.pytest_runtest_logreport(Report())
        term = Terminal()
        conftest.pytest_terminal_summary(term)
        rows = [ln.split()[0] for ln in term.lines[2:]]
        assert rows == variants
        assert all(f"skipped: reason {v}" in ln for v, ln in zip(variants, term.lines[2:],
                                                                    strict=True))
    finally:
        conftest._ISA_MATRIX.clear()
        conftest._ISA_MATRIX.update(saved)
