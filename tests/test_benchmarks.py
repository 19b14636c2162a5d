"""The benchmark runner at tiny sizes: well-formed JSON, references that agree with quasirl,
the exp-space crossover where float32 predicts it, and the `quasirl bench` command."""

import json
import math

import jax
import numpy as np
import pytest

import quasirl as qr
from benchmarks import b4_kernels, reference
from benchmarks.runner import main as bench_main
from quasirl.cli import main as cli_main

ROW_KEYS = {"scenario", "case", "compile_s", "min_s", "median_s", "bytes", "flops",
            "transcendentals", "floor_s", "floor_bw_s", "frac_floor", "frac_bw_floor", "bound"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    status = bench_main(["--quick", "--only", "mdp,B1,B2,B4", "--out", str(out), "--no-plot"])
    return status, json.loads((out / "bench.json").read_text())


def test_quick_runner_json_is_well_formed(quick_run):
    status, rec = quick_run
    assert status == 0, rec["errors"]
    assert rec["errors"] == {}
    m = rec["machine"]
    for key in ("date", "commit", "cpu_model", "loadavg_start", "loadavg_end", "device"):
        assert key in m
    c = rec["ceilings"]
    assert c["bandwidth_Bps"] > 1e8 and c["matmul_flops"] > 1e8 and c["exp_per_s"] > 1e6
    cases = {(r["scenario"], r["case"]) for r in rec["results"]}
    assert {("mdp", "forward"), ("B1", "forward"), ("B1", "forward-backward"),
            ("B2", "forward dense"), ("B4", "max-plus T = 0")} <= cases
    for r in rec["results"]:
        assert ROW_KEYS <= set(r), r["case"]
        assert 0 < r["min_s"] <= r["median_s"]
        assert r["bytes"] > 0 and r["flops"] > 0
        assert math.isclose(r["frac_floor"], r["floor_s"] / r["min_s"], rel_tol=1e-9)
        assert r["floor_s"] == max(r["floor_bw_s"], r["floor_flop_s"], r["floor_exp_s"])
        if r.get("numpy_s"):
            assert math.isclose(r["speedup"], r["numpy_s"] / r["min_s"], rel_tol=1e-9)


def test_quick_runner_quasirl_agrees_with_numpy(quick_run):
    _, rec = quick_run
    checked = [r for r in rec["results"] if "rel_err" in r]
    assert len(checked) >= 5
    for r in checked:  # float32 on both sides, up to 20 steps
        assert r["rel_err"] < 1e-4, (r["scenario"], r["case"], r["rel_err"])
    fb = next(r for r in rec["results"] if r["case"] == "forward-backward")
    # occupancies of all B temperatures sum to B * H (one transition per step per path)
    np.testing.assert_allclose(fb["occupancy_sum"], fb["temps"] * fb["horizon"], rtol=1e-4)


def test_quick_runner_b4_crossover_and_exact_maxplus(quick_run):
    _, rec = quick_run
    info = next(r for r in rec["results"] if r["scenario"] == "B4")["accuracy"]
    T = np.array(info["T"])
    finite = np.array([x is not None for x in info["F_exp32"]])
    Tc = info["T_c_predicted"]
    # exp-space is finite above the float32 prediction and not below it (grid resolution)
    assert finite[T > 1.05 * Tc].all() and not finite[T < 0.95 * Tc].any()
    assert info["T_c_measured"] >= Tc * 0.95
    assert info["T_c_nonfinite"] <= Tc * 1.001
    assert info["maxplus_F0"] == info["maxplus_closed_form"]  # exact float32 sums: bit for bit
    assert info["log_space_in_bound_below_T_c"]
    assert info["log_space_max_rel_err"] < 1e-4


@pytest.mark.parametrize("mdp", [
    qr.gridworld(5, 6, dtype=np.float64),
    qr.gridworld(4, 4, slip=0.2, dtype=np.float64),
    qr.random_mdp(jax.random.key(3), 24, 3, branching=20, dtype=np.float64),  # J > 16: blocks
], ids=["grid", "slip", "dense"])
def test_numpy_references_match_quasirl(mdp):
    tab = reference.pull_tables(mdp, np.float64)
    T = np.array([0.05, 0.5, 2.0, 0.0])
    H = 6
    np.testing.assert_allclose(reference.forward(tab, T, H), qr.free_energy(mdp, T, H),
                               rtol=1e-11)
    np.testing.assert_allclose(reference.maxplus(tab, H), qr.optimal_value(mdp, H), rtol=1e-12)
    if mdp.shape[2] == 3:  # the gradient (slow to compile) once, on the stochastic gridworld
        F, g = reference.forward_backward(tab, T[:3], H, mdp.shape)
        gq = jax.grad(lambda r: qr.free_energy(mdp.replace(reward=r), T[:3], H).sum())(
            mdp.reward)
        np.testing.assert_allclose(g, gq, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(g.sum(), 3 * H, rtol=1e-10)


def test_expspace_kernel_exact_above_and_broken_below_crossover():
    m = qr.gridworld(4, 4, dtype=np.float32)
    m64 = qr.gridworld(4, 4, dtype=np.float64)
    Tc = 1.0 / (b4_kernels.FLT_MIN_LOG - np.log(4))
    T = np.array([3 * Tc, 10 * Tc, 0.5 * Tc], np.float32)
    H = 12
    F_exp = np.asarray(b4_kernels.expspace_free_energy(m, T, H))
    F_ref = reference.forward(reference.pull_tables(m64, np.float64), T.astype(np.float64), H)
    np.testing.assert_allclose(F_exp[:2], F_ref[:2], rtol=1e-5)
    assert not np.isfinite(F_exp[2])
    np.testing.assert_allclose(qr.free_energy(m, T, H), F_ref, rtol=1e-5)


def test_cli_bench_quick_writes_json_and_png(tmp_path):
    assert cli_main(["bench", "--quick", "--only", "mdp", "--out", str(tmp_path)]) == 0
    rec = json.loads((tmp_path / "bench.json").read_text())
    assert rec["results"][0]["scenario"] == "mdp"
    assert (tmp_path / "bench.png").stat().st_size > 5000


def test_cli_bench_bad_arguments(tmp_path, capsys):
    assert cli_main(["bench", "--only", "B9", "--out", str(tmp_path)]) == 2
    assert "unknown scenario(s) ['B9']" in capsys.readouterr().err
    assert cli_main(["bench", "--repeats", "-1", "--out", str(tmp_path)]) == 2
    assert bench_main(["--only", "B1,nope", "--out", str(tmp_path)]) == 2
