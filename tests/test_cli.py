"""The `quasirl` command: converge and phase in detail, then every subcommand end to end."""

import json

import numpy as np
import pytest

import quasirl as qr
from quasirl.cli import main


@pytest.mark.parametrize("world", ["chain", "gridworld", "random"])
def test_converge_numbers_match_core_and_paths(world, tmp_path, capsys):
    out = tmp_path / world
    args = ["converge", "--mdp", world, "--quick", "--out", str(out)]
    if world == "gridworld":
        args += ["--size", "4", "--horizon", "7"]
    if world == "random":
        args += ["--horizon", "5"]  # 12 * 6^5 paths: small enough to enumerate
    assert main(args) == 0
    for name in ("free_energy.png", "optimal_path_mass.png"):
        assert (out / name).stat().st_size > 10_000
    s = json.loads((out / "convergence.json").read_text())
    assert s["bound_ok"] and s["monotone_ok"] and s["mass_in_band"] and s["suboptimal_in_band"]
    from quasirl.cli.converge import build_mdp

    mdp, _ = build_mdp(world, 4 if world == "gridworld" else None, 0, 0.0)
    H, T = s["horizon"], np.asarray(s["temperatures"])
    np.testing.assert_allclose(s["free_energy"], qr.free_energy(mdp, T, H), rtol=1e-12)
    # the kernels' mass W exp((R* - F)/T) against brute-force enumeration of every path
    paths = qr.paths.enumerate_paths(mdp, H)
    ret, lw = np.asarray(paths.ret), np.asarray(paths.log_weight)
    best = ret >= ret.max() - 1e-9
    pos = T > 0
    logits = lw[None, :] + ret[None, :] / T[pos, None]
    m = logits.max(axis=1, keepdims=True)
    brute = np.exp(logits - m)[:, best].sum(1) / np.exp(logits - m).sum(1)
    np.testing.assert_allclose(np.asarray(s["optimal_path_mass"])[pos], brute, atol=1e-10)
    second = ret[~best].max()
    np.testing.assert_allclose(s["return_gap"], ret.max() - second, rtol=1e-12)
    assert "max R - F" in capsys.readouterr().out


def test_converge_bad_arguments_are_one_line(capsys):
    assert main(["converge", "--mdp", "torus", "--out", "/tmp/unused-quasirl"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --mdp must be one of gridworld, chain, random, got 'torus'"
    assert main(["converge", "--horizon", "-1", "--out", "/tmp/unused-quasirl"]) == 2
    assert capsys.readouterr().err.strip() == "error: horizon must be >= 0, got -1"
