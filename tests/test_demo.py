"""`quasirl demo` end to end, small sweep: figures written, numbers consistent with the core."""

import json

import numpy as np

import quasirl as qr
from quasirl.cli import main


def test_demo_cli_writes_figures_and_consistent_numbers(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--quick", "--horizon", "12"]) == 0
    for name in ("free_energy.png", "optimal_path_mass.png", "soft_policy_maps.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["bound_ok"] and s["monotone_ok"]
    mdp = qr.gridworld(layout=qr.mdp.DEFAULT_LAYOUT)
    T = np.asarray(s["temperatures"])
    np.testing.assert_allclose(s["free_energy"], qr.free_energy(mdp, T, 12), rtol=1e-12)
    np.testing.assert_allclose(s["max_return"], qr.optimal_value(mdp, 12), rtol=1e-12)
    mass = np.asarray(s["optimal_path_mass"])
    assert mass[-1] == 1.0 and np.all(np.diff(mass) >= -1e-12)
    assert "max R - F" in capsys.readouterr().out


def test_demo_bad_argument_is_one_line(capsys):
    assert main(["demo", "--horizon", "-3", "--out", "/tmp/unused-quasirl"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: horizon must be >= 0, got -3"
    assert main(["demo", "--horizon", "many"]) == 2
    assert "Traceback" not in capsys.readouterr().err
