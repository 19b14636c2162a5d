"""quasirl.phase: sweeps (vmap, loop, Dask; resumable stores), boundaries, phase diagrams."""

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import quasirl as qr
from quasirl import phase
from quasirl._validate import QuasirlValueError

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# sweep
# --------------------------------------------------------------------------------------------
_CHAIN = qr.chain(6, goal_reward=1.0, step_cost=0.05)  # built outside any trace


def _free_energy_point(T, scale):
    """A real jittable quasirl computation: F(T) of a chain whose rewards are scaled."""
    mdp = _CHAIN.replace(reward=scale * _CHAIN.reward)
    return {"F": qr.evolve(mdp, T, 8).value,
            "both": qr.evolve(mdp, jnp.stack([T, 2 * T]), 8).value}


def test_sweep_localcluster_equals_in_process():
    T = np.geomspace(0.05, 5.0, 20)
    scale = np.linspace(-1.0, 2.0, 21)  # 420 points
    ref = phase.sweep(_free_energy_point, T=T, scale=scale, progress=False)
    assert ref.attrs["backend"] == "vmap"
    assert ref["F"].dims == ("T", "scale") and ref["both"].dims == ("T", "scale", "both_dim0")
    np.testing.assert_array_equal(ref["T"], T)
    on_dask = phase.sweep(_free_energy_point, T=T, scale=scale, backend="dask", progress=False)
    assert on_dask.attrs["backend"] == "dask" and on_dask.attrs["n_chunks"] == 8
    np.testing.assert_allclose(on_dask["F"], ref["F"], rtol=1e-13, atol=0)
    np.testing.assert_allclose(on_dask["both"], ref["both"], rtol=1e-13, atol=0)
    # An independent oracle for a few points: the core's free energy, point by point.
    for i, j in [(0, 0), (7, 13), (19, 20)]:
        mdp = _CHAIN.replace(reward=scale[j] * _CHAIN.reward)
        np.testing.assert_allclose(ref["F"][i, j], qr.free_energy(mdp, T[i], 8), rtol=1e-12)
    looped = phase.sweep(_free_energy_point, T=T, scale=scale, backend="loop", progress=False)
    np.testing.assert_allclose(looped["F"], ref["F"], rtol=1e-12)


def test_sweep_falls_back_to_dask_for_non_jittable_fn():
    def host_only(a, b):  # float() of a tracer fails, so this cannot be vmapped
        return float(a) ** 2 + 10 * float(b)

    a, b = np.arange(5.0), np.array([1.0, -1.0, 0.5])
    assert not phase.is_vectorizable(host_only, {"a": a, "b": b})
    ds = phase.sweep(host_only, a=a, b=b, name="y", progress=False)
    assert ds.attrs["backend"] == "dask"
    np.testing.assert_allclose(ds["y"], a[:, None] ** 2 + 10 * b[None, :], rtol=0)
    with pytest.raises(QuasirlValueError, match="needs a jittable fn"):
        phase.sweep(host_only, a=a, b=b, backend="vmap", progress=False)


# Dask pickles every task (even in process), so the counter lives in module globals: the
# function is pickled by reference and all its copies share them.
_CALLS: list = []
_LOCK = threading.Lock()
_FAIL_AFTER: list = [None]


def _counting(x, y):
    """A non-jittable fn that counts its calls and fails once _FAIL_AFTER[0] calls were made."""
    v = np.sin(x) * y + x  # fails first under tracing, so the vmap probe leaves no trace
    with _LOCK:
        if _FAIL_AFTER[0] is not None and len(_CALLS) >= _FAIL_AFTER[0]:
            raise RuntimeError("simulated crash")
        _CALLS.append((x, y))
    return {"v": v}


def _reset_counter(fail_after=None):
    _CALLS.clear()
    _FAIL_AFTER[0] = fail_after


def test_sweep_on_dask_resumes_after_a_crash_without_recomputing(tmp_path):
    x, y = np.linspace(0, 1, 16), np.arange(25.0)  # 400 points, 8 chunks of 50
    store = tmp_path / "store"
    _reset_counter(fail_after=3 * 50)
    with pytest.raises(RuntimeError, match="simulated crash"):
        phase.sweep(_counting, x=x, y=y, backend="dask", store=store, progress=False)
    done = sorted(store.glob("chunk-*.nc"))
    assert 1 <= len(done) <= 3
    _reset_counter()
    ds = phase.sweep(_counting, x=x, y=y, backend="dask", store=store, progress=False)
    assert ds.attrs["chunks_loaded"] == len(done)
    assert ds.attrs["chunks_computed"] == 8 - len(done)
    assert len(_CALLS) == 400 - 50 * len(done)  # finished chunks were not recomputed
    np.testing.assert_allclose(ds["v"], np.sin(x)[:, None] * y + x[:, None], rtol=1e-15)
    _reset_counter()
    ds2 = phase.sweep(_counting, x=x, y=y, backend="dask", store=store, progress=False)
    assert _CALLS == [] and ds2.attrs["chunks_computed"] == 0
    stored = xr.open_dataset(store / "result.nc").load()
    xr.testing.assert_allclose(stored["v"], ds["v"])
    with pytest.raises(QuasirlValueError, match="holds a different sweep"):
        phase.sweep(_counting, x=x, y=y[:-1], backend="loop", store=store, progress=False)
    with pytest.raises(QuasirlValueError, match=r"holds a different sweep \(tag differs"):
        phase.sweep(_counting, x=x, y=y, backend="loop", store=store, tag="v2", progress=False)


def test_phase_diagram_store_resumes_and_knows_its_parameters(tmp_path):
    T, mu = np.geomspace(0.05, 2.0, 6), np.linspace(0.1, 0.4, 4)
    a = phase.mdp_phase_diagram(T, mu, L=6, store=tmp_path / "s", progress=False)
    b = phase.mdp_phase_diagram(T, mu, L=6, store=tmp_path / "s", progress=False)
    assert b.attrs["chunks_computed"] == 0 and b.attrs["chunks_loaded"] == a.attrs["n_chunks"]
    xr.testing.assert_identical(a["mass"], b["mass"])
    with pytest.raises(QuasirlValueError, match="tag differs"):  # L=7 must not reuse L=6
        phase.mdp_phase_diagram(T, mu, L=7, store=tmp_path / "s", progress=False)


SLOW_FN = """
import os, time
import numpy as np

CALLS = []

def slow(x, y):
    v = np.cos(x) + y
    CALLS.append((x, y))
    time.sleep(float(os.environ.get("SWEEP_SLEEP", "0")))
    return v
"""


def test_sweep_killed_by_signal_resumes(tmp_path, monkeypatch):
    (tmp_path / "sweepfns.py").write_text(SLOW_FN)
    store = tmp_path / "store"
    script = textwrap.dedent(f"""
        import sys; sys.path[:0] = [{str(tmp_path)!r}, {str(REPO)!r}]
        import numpy as np, sweepfns
        from quasirl.phase import sweep
        sweep(sweepfns.slow, x=np.linspace(0, 1, 6), y=np.arange(10.0), backend="loop",
              chunk_size=6, store={str(store)!r}, progress=False)
    """)
    env = dict(os.environ, SWEEP_SLEEP="0.05", JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.time() + 60
        while len(list(store.glob("chunk-*.nc"))) < 2 and time.time() < deadline:
            assert proc.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = len(list(store.glob("chunk-*.nc")))
    assert 2 <= done < 10
    monkeypatch.syspath_prepend(str(tmp_path))
    import sweepfns

    sweepfns.CALLS.clear()
    ds = phase.sweep(sweepfns.slow, x=np.linspace(0, 1, 6), y=np.arange(10.0), backend="loop",
                     chunk_size=6, store=store, progress=False)
    assert len(sweepfns.CALLS) == 60 - 6 * done
    assert ds.attrs["chunks_loaded"] == done
    assert not list(store.glob(".*.tmp"))  # what the killed writer left is cleaned up
    np.testing.assert_allclose(ds["value"], np.cos(np.linspace(0, 1, 6))[:, None]
                               + np.arange(10.0), rtol=1e-15)


def test_sweep_bad_arguments():
    f = lambda x: x
    cases = [
        (dict(), "at least one axis"),
        (dict(x=[]), "axis 'x' is empty"),
        (dict(x=np.ones((2, 2))), "axis 'x' must be 1-D"),
        (dict(x=[0.0, np.nan]), r"axis 'x' must be finite, but x\[1\] = nan"),
        (dict(x=[1.0], backend="gpu"), "backend must be one of"),
        (dict(x=[1.0], chunk_size=0), "chunk_size must be >= 1"),
        (dict(x=[1.0], backend="loop", scheduler="tcp://127.0.0.1:1"), "only used by backend"),
        (dict(x=[1.0], backend="dask", scheduler="localhost:8786"), "scheduler must be None"),
        (dict(x=["a"], backend="vmap"), "needs numeric axes"),
    ]
    for kw, msg in cases:
        with pytest.raises(QuasirlValueError, match=msg):
            phase.sweep(f, progress=False, **kw)
    with pytest.raises(QuasirlValueError, match="axis 'x' given twice"):
        phase.sweep(f, {"x": [1.0]}, x=[2.0], progress=False)
    with pytest.raises(QuasirlValueError, match="fn must be callable"):
        phase.sweep(3, x=[1.0], progress=False)


def test_sweep_string_axis_and_vmap_chunks_reuse_one_compilation():
    ds = phase.sweep(lambda world, k: len(world) * k, world=["chain", "grid"], k=[1, 2, 3],
                     backend="loop", progress=False)
    np.testing.assert_array_equal(ds["value"], [[5, 10, 15], [4, 8, 12]])
    traces = []

    def f(x):
        traces.append(1)  # runs once per trace, not per call
        return x * 2.0

    ds = phase.sweep(f, x=np.arange(10.0), chunk_size=3, progress=False)  # 4 chunks, last short
    np.testing.assert_array_equal(ds["value"], 2 * np.arange(10.0))
    assert ds.attrs["n_chunks"] == 4 and len(traces) == 2  # probe + one compile for all chunks


# --------------------------------------------------------------------------------------------
# boundaries
# --------------------------------------------------------------------------------------------
def test_crossings_are_exact_for_curves_linear_in_the_warped_coordinate():
    x = np.geomspace(0.01, 10, 17)
    np.testing.assert_allclose(phase.crossings(x, 2 * np.log(x) + 1, 0.0, scale="log"),
                               [np.exp(-0.5)], rtol=1e-13)
    np.testing.assert_allclose(phase.crossings(x, 3.0 / x, 0.75, scale="inverse"), [4.0],
                               rtol=1e-13)
    xl = np.linspace(0, 2 * np.pi, 400)
    np.testing.assert_allclose(phase.crossings(xl, np.sin(xl), 0.5),
                               [np.pi / 6, 5 * np.pi / 6], rtol=2e-4)
    assert phase.crossings(xl, np.sin(xl), 2.0).size == 0
    with pytest.raises(QuasirlValueError, match=r"strictly increasing, but x\[2\] <= x\[1\]"):
        phase.crossings([0, 1, 1], [0, 1, 2], 0.5)
    with pytest.raises(QuasirlValueError, match="scale 'log' needs x > 0"):
        phase.crossings([0, 1], [0, 1], 0.5, scale="log")


def test_boundary_of_a_known_field():
    a = np.linspace(0.5, 2.0, 7)
    b = np.linspace(0.0, 3.0, 301)
    field = xr.DataArray(np.tanh(b[None, :] - a[:, None] ** 2), coords={"a": a, "b": b},
                         dims=("a", "b"))
    bd = phase.boundary_curve(field, 0.0, along="a")
    inside = a**2 <= 3.0
    np.testing.assert_allclose(bd.values[inside], a[inside] ** 2, rtol=1e-5)
    assert np.all(np.isnan(bd.values[~inside]))
    # transposed input and the other orientation give the same boundary
    np.testing.assert_allclose(phase.boundary_curve(field.T, 0.0, along="a"), bd)
    with pytest.raises(QuasirlValueError, match="along='c' is not a dimension"):
        phase.boundary_curve(field, 0.0, along="c")
    with pytest.raises(QuasirlValueError, match="must be an xarray.DataArray"):
        phase.boundary_curve(np.zeros((2, 2)), 0.0, along="a")


# --------------------------------------------------------------------------------------------
# MDP phase diagram
# --------------------------------------------------------------------------------------------
def _brute_force_route_mass(mdp, T, H, goal):
    """Tempered probability of the paths ending at the goal, by enumerating every path."""
    P, R = mdp.dense()
    pol = np.asarray(mdp.policy, dtype=float)
    S, A, _ = P.shape
    s0 = int(np.argmax(np.asarray(mdp.init)))
    terms, hits = [], []
    for acts in itertools.product(range(A), repeat=H):
        s, logw, ret = s0, 0.0, 0.0
        for a in acts:
            s2 = int(np.argmax(P[s, a]))
            logw += np.log(pol[s, a])
            ret += R[s, a, s2]
            s = s2
        terms.append(logw + ret / T)
        hits.append(s == goal)
    terms, hits = np.array(terms), np.array(hits)
    m = terms.max()
    return np.exp(terms[hits] - m).sum() / np.exp(terms - m).sum()


def test_route_chain_mass_matches_brute_force_and_closed_form():
    L, A, H, mu = 3, 3, 5, 0.3
    mdp = phase.route_chain(L, delta_r=0.7, mu=mu, n_actions=A)
    for T in (0.05, 0.3, 2.0):
        brute = _brute_force_route_mass(mdp, T, H, goal=L)
        np.testing.assert_allclose(phase.route_mass(T, mu, L, 0.7), brute, rtol=1e-12)
        np.testing.assert_allclose(qr.evolve(mdp, T, H).population[L], brute, rtol=1e-10)
    assert float(qr.evolve(mdp, 0.0, H).population[L]) == 1.0
    # the policy: forward 1 - mu, the rest shared evenly; absorbing states uniform
    np.testing.assert_allclose(mdp.policy[0], [0.7, 0.15, 0.15], rtol=1e-15)


def test_mdp_phase_boundary_agrees_with_T_c():
    L, dr = 20, 1.0
    mu = np.linspace(0.04, 0.5, 24)
    T = np.concatenate([[0.0], np.geomspace(0.03, 3.0, 48)])
    ds = phase.mdp_phase_diagram(T, mu, L=L, delta_r=dr, progress=False)
    np.testing.assert_allclose(ds["mass"], ds["mass_theory"], rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(ds["mass"].sel(T=0.0), 1.0)
    x = -L * np.log1p(-mu)
    applies = x >= 2.0  # (1 - mu)^L <= e^-2: the route is long compared with 1/mu
    assert applies.sum() >= 18
    np.testing.assert_allclose(ds["T_boundary"][applies], ds["T_c"][applies], rtol=0.10)
    # where (1 - mu)^L is not small the prediction is not expected to hold (and does not)
    shallow = (x < 1.5) & np.isfinite(ds["T_boundary"].values)
    assert shallow.sum() >= 1
    assert np.all(np.abs(ds["T_boundary"][shallow] / ds["T_c"][shallow] - 1) > 0.1)
    # the numeric boundary is the exact crossing up to the grid interpolation
    ok = np.isfinite(ds["T_exact"].values) & (ds["T_exact"].values < 3.0)
    np.testing.assert_allclose(ds["T_boundary"][ok], ds["T_exact"][ok], rtol=5e-3)
    # T_c and mu_c(T) = 1 - exp(-dr / (L T)) are inverse functions
    np.testing.assert_allclose(1 - np.exp(-dr / (L * ds["T_c"].values)), mu, rtol=1e-12)


def test_mdp_phase_bad_arguments():
    with pytest.raises(QuasirlValueError, match=r"mu must lie in \[0, 1\), but mu\[1\] = 1.0"):
        phase.mdp_phase_diagram([0.1], [0.5, 1.0], L=4, progress=False)
    with pytest.raises(QuasirlValueError, match=r"T must be finite and >= 0, but T\[0\] = -1.0"):
        phase.mdp_phase_diagram([-1.0], [0.5], L=4, progress=False)
    with pytest.raises(QuasirlValueError, match="horizon must be >= L = 4"):
        phase.mdp_phase_diagram([0.1], [0.5], L=4, horizon=3, progress=False)
    with pytest.raises(QuasirlValueError, match="n_actions must be >= 2"):
        phase.route_chain(4, n_actions=1)


# --------------------------------------------------------------------------------------------
# a real Dask scheduler and worker on loopback, driven through the CLI
# --------------------------------------------------------------------------------------------
def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_phase_through_a_real_dask_scheduler(tmp_path):
    import distributed

    from quasirl.cli import main

    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    dask_cli = str(Path(sys.executable).parent / "dask")
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    quiet = dict(env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [subprocess.Popen([dask_cli, "scheduler", "--host", "127.0.0.1", "--port",
                               str(port), "--no-dashboard"], **quiet)]
    try:
        procs.append(subprocess.Popen([dask_cli, "worker", addr, "--nthreads", "2",
                                       "--nworkers", "1", "--no-dashboard"], **quiet))
        with distributed.Client(addr, timeout="30s") as client:
            client.wait_for_workers(1, timeout=30)
            worker_pids = client.run(os.getpid)
        assert os.getpid() not in worker_pids.values()  # the work happens in another process
        out = tmp_path / "out"
        assert main(["phase", "--diagram", "mdp", "--quick", "--out", str(out),
                     "--scheduler", addr]) == 0
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
    s = json.loads((out / "summary.json").read_text())
    assert s["scheduler"] == addr and s["diagrams"][0]["backend"] == "dask"
    assert (out / "mdp_phase.png").stat().st_size > 10_000
    ds = xr.open_dataset(out / "mdp_phase.nc").load()
    # the worker computed in float64 (the client's precision) and agrees with the closed form
    assert ds["mass"].dtype == np.float64
    np.testing.assert_allclose(ds["mass"], ds["mass_theory"], rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------------------------
# boosting phase diagrams
# --------------------------------------------------------------------------------------------
def test_boost_phase_diagrams_match_closed_forms():
    n = 41
    planes = phase.boost_phase_diagrams(eps0=0.3, rounds=4, target=0.5, n=n)
    rates, imit, intr = planes["rates"], planes["imitation"], planes["intrinsic"]
    # the field itself against the odds formula: odds_n = odds_0 (FPR/TPR)^n
    t, f = np.meshgrid(rates.tpr.values, rates.fpr.values, indexing="ij")
    odds = (0.3 / 0.7) * (f / t) ** 4
    np.testing.assert_allclose(rates["error"], odds / (1 + odds), rtol=1e-12)
    # ideal learner, many rounds: the amplifying region is exactly FPR <= TPR, boundary exact
    assert rates.attrs["exact_dev_limit"] == 0.0
    np.testing.assert_array_equal(rates["fpr_boundary_limit"], rates.tpr.values)
    np.testing.assert_array_equal(qr.selection.region_mask(rates["ratio_limit"], 1.0), f <= t)
    # finite rounds: FPR = c TPR with c from the closed form, up to the grid interpolation
    c = np.exp((np.log(0.15 / 0.85) - np.log(0.3 / 0.7)) / 4)
    np.testing.assert_allclose(rates.attrs["slope_theory"], c, rtol=1e-12)
    assert rates.attrs["boundary_points"] >= n - 2
    assert rates.attrs["max_abs_dev"] < 0.5 / n  # half a grid step in FPR
    step_L = 5.0 / (n - 1)
    assert imit.attrs["boundary_points"] >= 10 and imit.attrs["boundary_mismatch_points"] == 0
    assert imit.attrs["max_abs_dev"] < 0.5 * step_L
    # intrinsic error: the error is linear in mu below the threshold, so interpolation is exact
    assert intr.attrs["boundary_points"] >= n // 2
    assert intr.attrs["max_abs_dev"] < 1e-12
    np.testing.assert_allclose(intr["mu_theory"].sel(selection=intr.selection[-1]),
                               0.5 * (1 - np.exp(-4.0)), rtol=1e-12)
    # convexity verdicts: each amplifying region is convex by construction (a cone; the
    # epigraph of a convex L(lam); the hypograph of the concave mu(L) = t (1 - e^-L))
    assert [planes[k].attrs["convex"] for k in ("rates", "imitation", "intrinsic")] == [1, 1, 1]
    # ... and the complement of the last one (an epigraph of a concave curve) is not
    assert not phase.is_convex(intr["error"], 0.5, side="above").convex
    assert rates.attrs["convex_limit"] == 1 and rates.attrs["hull_deficit"] == 0.0
    # the intrinsic plane at another level (quasirl boost: target * eps0) and start
    other = phase.boost_phase_diagrams(eps0=0.3, rounds=4, target=0.5, n=n, eps0_intrinsic=0.3,
                                       level_intrinsic=0.15)["intrinsic"]
    assert other.attrs["level"] == 0.15 and other.attrs["eps0"] == 0.3
    assert other.attrs["boundary_points"] >= n // 2 and other.attrs["max_abs_dev"] < 1e-12
    np.testing.assert_allclose(other["mu_theory"].sel(selection=other.selection[-1]),
                               0.15 * (1 - np.exp(-4.0)), rtol=1e-12)


def test_boost_phase_bad_arguments():
    with pytest.raises(QuasirlValueError, match=r"target must lie in \(0, 1\)"):
        phase.boost_phase_diagrams(target=1.0)
    with pytest.raises(QuasirlValueError, match="n must be >= 5, got 3"):
        phase.boost_phase_diagrams(n=3)
    with pytest.raises(QuasirlValueError, match="n must be an integer, got 5.0"):
        phase.boost_phase_diagrams(n=5.0)
    with pytest.raises(QuasirlValueError, match="rounds must be >= 1, got 0"):
        phase.boost_phase_diagrams(rounds=0)
    with pytest.raises(QuasirlValueError, match="rounds must be an integer, got True"):
        phase.boost_phase_diagrams(rounds=True)
    with pytest.raises(QuasirlValueError, match=r"level_intrinsic must lie in \(0, 1\)"):
        phase.boost_phase_diagrams(level_intrinsic=0.0)


# --------------------------------------------------------------------------------------------
# Eigen's error threshold
# --------------------------------------------------------------------------------------------
def test_eigen_phase_boundary_within_2_percent_of_mu_c_at_L20():
    L = 20
    sigma = np.geomspace(20.0, 1000.0, 4)
    mu = np.geomspace(0.05, 0.45, 110)
    ds = phase.eigen_phase_diagram(mu, sigma=sigma, L=L, backend="loop", progress=False)
    mu_c = 1 - sigma ** (-1.0 / L)
    np.testing.assert_allclose(ds["mu_c"], mu_c, rtol=1e-14)
    np.testing.assert_allclose(ds["mu_boundary"], mu_c, rtol=0.02)
    # the sequence module's refined search for the same criterion (steepest ln x0)
    for i in (0, 3):
        f = np.ones(L + 1)
        f[0] = sigma[i]
        ref = qr.sequence.error_threshold(f, space="classes").mu_c
        np.testing.assert_allclose(ds["mu_boundary"][i], ref, rtol=0.01)
    # the field: full genotype space (Kronecker kernels) agrees with the class reduction
    x = qr.sequence.stationary(qr.sequence.single_peak(L, sigma[0]), mu[40])
    np.testing.assert_allclose(np.asarray(x.distribution)[0], ds["master"][0, 40], rtol=1e-6)
    # far below threshold the no-back-mutation formula holds; x0 collapses beyond mu_c
    np.testing.assert_allclose(ds["master"][:, 0], ds["master_theory"][:, 0], rtol=0.05)
    assert np.all(ds["phi"].values[:, -1] > 0.9)


def test_eigen_mu_L_plane_and_bad_arguments():
    L = np.array([10, 20, 40])
    ds = phase.eigen_phase_diagram(np.geomspace(0.01, 0.5, 90), L=L, sigma=50.0,
                                   backend="loop", progress=False)
    assert ds["mu_boundary"].dims == ("L",) and ds.attrs["plane"] == "L"
    np.testing.assert_allclose(ds["mu_boundary"][1:], 1 - 50.0 ** (-1.0 / L[1:]), rtol=0.03)
    assert np.all(np.diff(ds["mu_boundary"].values) < 0)  # longer genomes, lower threshold
    with pytest.raises(QuasirlValueError, match=r"sigma must be > 1, but sigma\[1\] = 1.0"):
        phase.eigen_phase_diagram([0.1, 0.2], sigma=[2.0, 1.0], L=10, progress=False)
    with pytest.raises(QuasirlValueError, match=r"mu must lie in \(0, 0.5\], but mu\[0\] = 0.0"):
        phase.eigen_phase_diagram([0.0, 0.2], sigma=[2.0], L=10, progress=False)
    with pytest.raises(QuasirlValueError, match="give an array sigma with a scalar L"):
        phase.eigen_phase_diagram([0.1, 0.2], sigma=[2.0], L=[10], progress=False)
