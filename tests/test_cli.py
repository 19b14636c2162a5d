"""The `quasirl` command: converge and phase in detail, then every subcommand end to end."""

import json
from pathlib import Path

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


def test_phase_cli_writes_every_diagram(tmp_path, capsys):
    import xarray as xr

    assert main(["phase", "--quick", "--out", str(tmp_path)]) == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    rows = {r["diagram"]: r for r in s["diagrams"]}
    assert set(rows) == {"mdp", "eigen", "boost/rates", "boost/imitation", "boost/intrinsic"}
    assert rows["mdp"]["deviation"] < 0.10 and rows["eigen"]["deviation"] < 0.02
    assert rows["boost/rates"]["ideal_limit_exact_dev"] == 0.0
    for name in ("mdp_phase.png", "eigen_phase.png", "boost_phase.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    ds = xr.open_dataset(tmp_path / "mdp_phase.nc").load()
    np.testing.assert_allclose(ds["mass"], ds["mass_theory"], rtol=1e-9, atol=1e-12)
    assert "numeric boundary vs theory" in capsys.readouterr().out
    assert main(["phase", "--diagram", "mdp,nope", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --diagram must be among mdp, eigen, boost or all, got 'nope'")


# Every subcommand, small parameters: (arguments, a bad argument that must give one line).
SUBCOMMANDS = {
    "demo": (["--quick", "--horizon", "8"], ["--horizon", "-3"]),
    "converge": (["--quick", "--mdp", "chain"], ["--mdp", "torus"]),
    "paths": (["--quick"], ["--horizon", "99"]),
    "eigen": (["--quick"], ["--sigma", "0.5"]),
    "boost": (["--quick"], ["--tpr", "1.5"]),
    "phase": (["--quick", "--diagram", "boost"], ["--diagram", "nope"]),
    "bench": (["--quick", "--only", "B5"], ["--only", "nope"]),
    "lm calibrate": (["--model", "synthetic", "--quick"], ["--model", "nope"]),
    "lm transfer": (["--model", "synthetic", "--quick"], ["--model", "nope"]),
    "lm run": (["--model", "synthetic", "--quick"], ["--model", "nope"]),
    "lm validate": (["--model", "synthetic", "--quick"], ["--model", "nope"]),
    "lm tree": (["--model", "synthetic-tokens", "--quick"],
                ["--model", "synthetic-tokens", "--depth", "0"]),
}


# Maintenance commands write no figures: (arguments, a bad argument that must give one line).
RUN = Path(__file__).resolve().parents[1] / "results" / "smollm2-135m-capitals-seed1"
MAINTENANCE = {
    "build-native": (["--status"], ["--march", "x86-64-v99"]),
    "lm summary": ([str(RUN)], [str(RUN / "not-a-run")]),
}


def _check_outputs(cmd, out):
    pngs = sorted(out.rglob("*.png"))
    assert pngs, f"{cmd} wrote no figure"
    for p in pngs:
        assert p.stat().st_size > 5_000, f"{cmd}: {p.name} is nearly empty"
    assert list(out.rglob("*.json")) or list(out.rglob("*.nc")), f"{cmd} wrote no data"


def test_every_subcommand_runs_small_and_fails_in_one_line(tmp_path, capsys):
    from quasirl.cli import app

    registered = {c.name for c in app.registered_commands}
    for group in app.registered_groups:
        registered |= {f"{group.name} {c.name}" for c in group.typer_instance.registered_commands}
    assert set(SUBCOMMANDS) <= registered
    for cmd in sorted(registered):
        capsys.readouterr()
        assert main([*cmd.split(), "--help"]) == 0
        help_text = capsys.readouterr().out
        assert "Example" in help_text, f"{cmd} --help shows no example"
        out = tmp_path / cmd.replace(" ", "_")
        if cmd in MAINTENANCE:
            good, bad = MAINTENANCE[cmd]
            assert main([*cmd.split(), *good]) == 0, cmd
            capsys.readouterr()
            assert main([*cmd.split(), *bad]) == 2, cmd
            err = capsys.readouterr().err.strip()
            assert err.startswith("error: ") and "\n" not in err, f"{cmd}: {err!r}"
            continue
        if cmd not in SUBCOMMANDS:
            # a subcommand added after this table: its --quick mode must still write figures
            assert "--quick" in help_text, f"{cmd} has no --quick mode; add it to SUBCOMMANDS"
            assert main([*cmd.split(), "--quick", "--out", str(out)]) == 0, cmd
            _check_outputs(cmd, out)
            continue
        good, bad = SUBCOMMANDS[cmd]
        assert main([*cmd.split(), *good, "--out", str(out)]) == 0, cmd
        _check_outputs(cmd, out)
        capsys.readouterr()
        assert main([*cmd.split(), *bad, "--out", str(tmp_path / "bad")]) == 2, cmd
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, f"{cmd}: {err!r}"


def _boundary_points(ds, bname):
    """The numeric boundary of a boost_phase_diagrams plane as points in its field's dims."""
    b = ds[bname]
    along = b.dims[0]
    ok = np.isfinite(b.values)
    cols = {along: ds[along].values[ok], bname.removesuffix("_boundary"): b.values[ok]}
    return np.column_stack([cols[d] for d in ds[ds.attrs["field"]].dims])


def test_boost_cli_phase_numbers_are_boost_phase_diagrams(tmp_path):
    """`quasirl boost` draws and reports the planes of quasirl.phase.boost_phase_diagrams, the
    function behind `quasirl phase --diagram boost`: the same Datasets, boundaries, closed-form
    deviations and convexity verdicts, so the two commands cannot drift apart."""
    import xarray as xr

    from quasirl import phase
    from quasirl.cli.boost import PLANES

    eps0, target, rounds, grid = 0.2, 0.4, 4, 17
    assert main(["boost", "--eps0", str(eps0), "--target", str(target), "--rounds", str(rounds),
                 "--grid", str(grid), "--batch", "32", "--buffer", "8", "--seeds", "2",
                 "--out", str(tmp_path)]) == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    planes = phase.boost_phase_diagrams(eps0=eps0, rounds=rounds, target=target, n=grid,
                                        eps0_intrinsic=eps0, level_intrinsic=target * eps0)
    assert set(s["phase_diagrams"]) == set(planes) == set(PLANES)
    for name, ds in planes.items():
        with xr.open_dataset(tmp_path / f"phase_{name}.nc") as written:
            xr.testing.assert_identical(written.load(), ds)
        rep = s["phase_diagrams"][name]
        field, bname, _ = PLANES[name]
        assert rep["variable"] == ds.attrs["field"] == field
        assert rep["level"] == ds.attrs["level"]
        assert rep["max_deviation_from_closed_form"] == ds.attrs["max_abs_dev"]
        assert rep["boundary_points_compared"] == ds.attrs["boundary_points"]
        assert rep["convex"] == bool(ds.attrs["convex"])
        assert rep["convexity_depth"] == ds.attrs["convex_depth"]
        assert rep["hull_deficit"] == ds.attrs["hull_deficit"]
        assert rep["grid_points_inside"] == ds.attrs["region_points"]
        pts = np.concatenate([np.asarray(line) for line in rep["boundary"]])
        np.testing.assert_array_equal(pts, _boundary_points(ds, bname))
        assert rep["boundary_points"] == len(pts) > 5
    rates = s["phase_diagrams"]["rates"]
    assert rates["slope_theory"] == planes["rates"].attrs["slope_theory"]
    assert rates["diagonal_level_1_max_deviation"] == planes["rates"].attrs["exact_dev_limit"]
    assert rates["diagonal_region_convex"] == bool(planes["rates"].attrs["convex_limit"])
    assert s["phase_diagrams"]["intrinsic"]["level"] == target * eps0
    # and `quasirl phase --diagram boost` reports the same function's numbers
    assert main(["phase", "--quick", "--diagram", "boost", "--out", str(tmp_path / "p")]) == 0
    rows = json.loads((tmp_path / "p" / "summary.json").read_text())["diagrams"]
    for row, (name, ds) in zip(rows, phase.boost_phase_diagrams(n=21).items(), strict=True):
        assert row["diagram"] == f"boost/{name}"
        assert row["deviation"] == ds.attrs["max_abs_dev"]
        assert row["convex"] == bool(ds.attrs["convex"])
