"""`quasirl boost`: the boosting recurrence against Monte Carlo, phase diagrams, best-of-N."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import typer

from quasirl._jsonio import write_json

EXAMPLE = ("Example: quasirl boost --eps0 0.3 --tpr 0.8 --fpr 0.4 --lam 0.6 --mu 0.05 "
           "--out quasirl-out/boost")


def _bcheck(cond: bool, msg: str) -> None:
    from quasirl._validate import QuasirlValueError

    if not cond:
        raise QuasirlValueError(msg)


# The planes of quasirl.phase.boost_phase_diagrams: (field, numeric boundary, closed form).
PLANES = {"rates": ("ratio", "fpr_boundary", "fpr_theory"),
          "imitation": ("ratio", "selection_boundary", "selection_theory"),
          "intrinsic": ("error", "mu_boundary", "mu_theory")}


def _num(x):
    """A float for JSON, None where it is NaN (no boundary point to compare)."""
    return float(x) if np.isfinite(x) else None


def _curve(ds, name):
    """(x, y) of a curve of the Dataset over its dimension, in the field's (dims[0], dims[1])
    order, as drawn on the plane."""
    field = ds[ds.attrs["field"]]
    along = ds[name].dims[0]
    t, v = ds[along].values, ds[name].values
    return (t, v) if field.dims[0] == along else (v, t)


def _polylines(ds, name):
    """The numeric boundary as polylines [m, 2] (columns in the field's dims order): one per
    run of consecutive grid lines on which the field crosses the level."""
    x, y = _curve(ds, name)
    ok = np.isfinite(x) & np.isfinite(y)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], ok.astype(int), [0]])))
    return [np.column_stack([x[i:j], y[i:j]]) for i, j in zip(edges[::2], edges[1::2],
                                                               strict=True)]


def plane_report(ds, name: str, closed_form: str) -> tuple[list, dict]:
    """The JSON report of one plane of :func:`quasirl.phase.boost_phase_diagrams`: its numeric
    boundary, largest deviation from the closed form and convexity verdict, read from the
    Dataset (nothing is recomputed here)."""
    field, bname, _ = PLANES[name]
    lines = _polylines(ds, bname)
    level = float(ds.attrs["level"])
    rep = {
        "variable": field,
        "region": f"{field} <= {level:g}",
        "level": level,
        "boundary_polylines": len(lines),
        "boundary_points": int(sum(len(s) for s in lines)),
        "boundary": [s.tolist() for s in lines],
        "boundary_points_compared": int(ds.attrs["boundary_points"]),
        "boundary_mismatch_points": int(ds.attrs["boundary_mismatch_points"]),
        "max_deviation_from_closed_form": _num(ds.attrs["max_abs_dev"]),
        "closed_form": closed_form,
        "convex": bool(ds.attrs["convex"]),
        "convexity_depth": float(ds.attrs["convex_depth"]),
        "convexity_witness": ds.attrs["convex_witness"] or None,
        "hull_deficit": float(ds.attrs["hull_deficit"]),
        "grid_points_inside": int(ds.attrs["region_points"]),
    }
    if name == "rates":
        rep["slope_theory"] = float(ds.attrs["slope_theory"])
        rep["diagonal_level_1_max_deviation"] = _num(ds.attrs["exact_dev_limit"])
        rep["diagonal_region_convex"] = bool(ds.attrs["convex_limit"])
    return lines, rep


def boost_planes(eps0: float, rounds: int, target: float, grid: int) -> dict:
    """The CLI's three planes: :func:`quasirl.phase.boost_phase_diagrams` in float64, with the
    intrinsic plane started at eps0 and its amplifying region error <= target eps0 (the same
    amplification as in the other planes, in absolute terms)."""
    import jax

    from quasirl import phase

    with jax.enable_x64(True):  # scoped float64, as in `quasirl phase`
        return phase.boost_phase_diagrams(eps0=eps0, rounds=rounds, target=target, n=grid,
                                          eps0_intrinsic=eps0, level_intrinsic=target * eps0)


def run_boost(out: Path, eps0: float = 0.3, tpr: float = 0.8, fpr: float = 0.4,
              lam: float = 0.6, mu: float = 0.05, rounds: int = 12, batch: int = 1024,
              buffer: int = 256, seeds: int = 200, grid: int = 81, target: float = 0.5,
              seed: int = 0) -> dict:
    """Trajectories (recurrence vs Monte Carlo), three phase diagrams, best-of-N and Luce.

    Writes PNGs, phase_*.nc and summary.json under ``out``; returns the summary.
    """
    import jax
    import jax.numpy as jnp

    from quasirl import plots
    from quasirl import selection as sel
    from quasirl._phase_sweep import netcdf_engine
    from quasirl._selection_boost import _check_unit
    from quasirl._validate import check_int

    t0 = time.perf_counter()
    for name, v in (("eps0", eps0), ("tpr", tpr), ("fpr", fpr), ("lam", lam), ("mu", mu)):
        _check_unit(name, v)
    _bcheck(0 < eps0 < 1, f"eps0 must lie in (0, 1), got {eps0}")
    _bcheck(tpr > 0, f"tpr must be > 0, got {tpr}")
    _bcheck(0 < target < 1, f"target must lie in (0, 1), got {target}")
    rounds = check_int("rounds", rounds, minimum=1)
    batch, buffer = check_int("batch", batch, minimum=1), check_int("buffer", buffer, minimum=1)
    seeds, grid = check_int("seeds", seeds, minimum=2), check_int("grid", grid, minimum=5)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    # ---- trajectories: recurrence vs Monte Carlo -------------------------------------------
    scenarios = [("ideal learner", sel.ideal()),
                 (f"imitation lam={lam:g}", sel.partial_imitation(eps0, lam)),
                 (f"intrinsic error mu={mu:g}", sel.intrinsic_error(mu))]
    key = jax.random.key(seed)
    rec, mean, lo, hi, traj = [], [], [], [], []
    for k, (label, g) in enumerate(scenarios):
        r = np.asarray(sel.adapt_trajectory(eps0, tpr, fpr, g, rounds))
        run = sel.simulate_chaining(jax.random.fold_in(key, k), eps0, tpr, fpr, g, rounds,
                                    batch, buffer, seeds)
        m, a, b = (np.asarray(x) for x in sel.band(run.error))
        fp = sel.fixed_points(tpr, fpr, g)
        inside = (r >= a - 1e-12) & (r <= b + 1e-12)
        rec.append(r), mean.append(m), lo.append(a), hi.append(b)
        traj.append({
            "label": label, "recurrence": r.tolist(), "mc_mean": m.tolist(),
            "mc_band_2.5": a.tolist(), "mc_band_97.5": b.tolist(),
            "recurrence_inside_band": float(inside.mean()),
            "mc_acceptance_mean": np.asarray(run.acceptance).mean(0).tolist(),
            "acceptance_recurrence": np.asarray(sel.acceptance_rate(r[:-1], tpr, fpr)).tolist(),
            "limit": float(sel.limit_error(eps0, tpr, fpr, g)),
            "fixed_points": [float(v) for v in np.asarray(fp.values) if np.isfinite(v)],
            "fixed_point_slopes": [float(v) for v in np.asarray(fp.slope) if np.isfinite(v)],
            "lowers_error": bool(sel.lowers_error(eps0, tpr, fpr, g)),
        })
    closed = np.asarray(sel.boost_closed_form(eps0, tpr, fpr, rounds))
    fig = plots.plot_error_trajectories(
        np.stack(rec), np.stack(mean), np.stack(lo), np.stack(hi), [s[0] for s in scenarios],
        title=f"Error under iterated selection: eps0 = {eps0:g}, TPR = {tpr:g}, FPR = {fpr:g}\n"
              f"Monte Carlo: batch {batch}, buffer {buffer}, {seeds} seeds")
    plots.savefig(fig, out / "trajectories.png")

    # ---- phase diagrams: quasirl.phase.boost_phase_diagrams, as `quasirl phase` --------------
    planes = {}
    diagrams = boost_planes(eps0, rounds, target, grid)
    rates, imit, intr = diagrams["rates"], diagrams["imitation"], diagrams["intrinsic"]
    c = float(rates.attrs["slope_theory"])
    lines, planes["rates"] = plane_report(
        rates, "rates", f"FPR = {c:.6g} TPR (ideal learner, {rounds} rounds)")
    fig = plots.plot_selection_phase(
        rates["ratio"], target, lines, analytic=_curve(rates, "fpr_theory"),
        analytic_label=f"closed form FPR = {c:.3g} TPR",
        extra=_curve(rates, "fpr_boundary_limit"), extra_label="FPR = TPR (ratio 1, n -> inf)",
        title=f"Ideal learner after {rounds} rounds", xlabel="TPR", ylabel="FPR",
        cbar_label=r"$\varepsilon_n/\varepsilon_0$", vmax=2.0,
        verdict=f"region ratio <= {target:g}: convex = {planes['rates']['convex']}")
    plots.savefig(fig, out / "phase_rates.png")

    lines, planes["imitation"] = plane_report(
        imit, "imitation", "L = logit(k eps0) - logit(eps0 (1 - (1 - k)/lam)), k = target")
    fig = plots.plot_selection_phase(
        imit["ratio"], target, lines, analytic=_curve(imit, "selection_theory"),
        title=f"Partial imitation, eps0 = {eps0:g} (limit)", xlabel=r"selection $\log(TPR/FPR)$",
        ylabel=r"imitation slope $\lambda$", cbar_label=r"$\varepsilon_\infty/\varepsilon_0$",
        vmax=2.0, verdict=f"region ratio <= {target:g}: convex = {planes['imitation']['convex']}")
    plots.savefig(fig, out / "phase_imitation.png")

    level_m = float(intr.attrs["level"])  # target eps0
    lines, planes["intrinsic"] = plane_report(intr, "intrinsic",
                                              f"mu = k (1 - FPR/TPR), k = {level_m:g}")
    fig = plots.plot_selection_phase(
        intr["error"], level_m, lines, analytic=_curve(intr, "mu_theory"),
        extra=_curve(intr, "mu_threshold"), extra_label="error threshold mu = 1 - FPR/TPR",
        title="Intrinsic error (two-type quasispecies)", xlabel=r"selection $\log(TPR/FPR)$",
        ylabel=r"mutation rate $\mu$", cbar_label=r"$\varepsilon_\infty$", vmax=1.0,
        verdict=f"region error <= {level_m:g}: convex = {planes['intrinsic']['convex']}")
    plots.savefig(fig, out / "phase_intrinsic.png")
    for name, d in diagrams.items():
        d.to_netcdf(out / f"phase_{name}.nc", engine=netcdf_engine())

    # ---- best-of-N and Luce curation ----------------------------------------------------------
    rng = np.random.default_rng(seed)
    Ns = np.unique(np.round(np.geomspace(1, 1024, 12)).astype(int))
    kls = []
    for _ in range(4):
        p = rng.dirichlet(np.ones(12))
        y = rng.normal(size=12)
        kls.append([float(sel.best_of_n_kl(p, y, int(n))) for n in Ns])
    kl_bin = [float(sel.best_of_n_kl(np.array([0.5, 0.5]), np.array([0.0, 1.0]), int(n)))
              for n in Ns]
    bound = np.asarray(sel.best_of_n_kl_bound(Ns))
    fig = plots.plot_best_of_n(Ns, kls, bound, kl_bin)
    plots.savefig(fig, out / "best_of_n.png")
    p_l = np.array([0.35, 0.25, 0.2, 0.12, 0.08])
    r_l = np.array([0.0, 0.5, 1.0, 1.5, 2.0])
    Ks = [1, 2, 4, 32]
    curated = np.stack([np.asarray(sel.luce_curation(p_l, r_l, K)) for K in Ks])
    tilted = np.asarray(sel.tilt(p_l, np.exp(r_l)))
    fig = plots.plot_luce_curation(r_l, p_l, curated, Ks, tilted)
    plots.savefig(fig, out / "luce_curation.png")

    summary = {
        "parameters": {"eps0": eps0, "tpr": tpr, "fpr": fpr, "lam": lam, "mu": mu,
                       "rounds": rounds, "batch": batch, "buffer": buffer, "seeds": seeds,
                       "grid": grid, "target": target, "seed": seed},
        "closed_form_max_abs_diff": float(np.abs(closed - rec[0]).max()),
        "trajectories": traj,
        "phase_diagrams": planes,
        "best_of_n": {"N": Ns.tolist(), "bound": bound.tolist(), "kl_random": kls,
                      "kl_two_point": kl_bin,
                      "bound_holds": bool(np.all(np.asarray(kls) <= bound + 1e-6))},
        "luce": {"p": p_l.tolist(), "r": r_l.tolist(), "K": Ks, "curated": curated.tolist(),
                 "tilt": tilted.tolist(),
                 "expected_reward": [float(c @ r_l) for c in curated]},
        "seconds": time.perf_counter() - t0,
        "figures": ["trajectories.png", "phase_rates.png", "phase_imitation.png",
                    "phase_intrinsic.png", "best_of_n.png", "luce_curation.png"],
        "netcdf": ["phase_rates.nc", "phase_imitation.nc", "phase_intrinsic.nc"],
        "x64": bool(jnp.zeros(()).dtype == jnp.float64),
    }
    write_json(out / "summary.json", summary, indent=2)
    return summary


def register(app: typer.Typer) -> None:
    @app.command("boost", epilog=EXAMPLE)
    def boost(
        out: Path = typer.Option(Path("quasirl-out/boost"), help="output folder"),
        eps0: float = typer.Option(0.3, help="initial error rate eps0"),
        tpr: float = typer.Option(0.8, help="evaluator: P(accept | right)"),
        fpr: float = typer.Option(0.4, help="evaluator: P(accept | wrong)"),
        lam: float = typer.Option(0.6, help="imitation slope for the partial-imitation learner"),
        mu: float = typer.Option(0.05, help="intrinsic error rate (right -> wrong)"),
        rounds: int = typer.Option(12, help="rounds of the loop"),
        batch: int = typer.Option(1024, help="answers per round (Monte Carlo)"),
        buffer: int = typer.Option(256, help="rolling buffer size (Monte Carlo)"),
        seeds: int = typer.Option(200, help="independent Monte Carlo runs"),
        grid: int = typer.Option(81, help="points per phase-diagram axis"),
        target: float = typer.Option(0.5, help="amplifying region: error ratio <= target"),
        seed: int = typer.Option(0, help="random seed (JAX key)"),
        quick: bool = typer.Option(False, help="small run (for tests)"),
    ) -> None:
        """Selection theory of cherry-picking: recurrence vs Monte Carlo and phase diagrams.

        Writes trajectories.png (recurrence vs Monte Carlo 95% bands for the ideal learner,
        partial imitation and intrinsic error), phase_rates.png, phase_imitation.png and
        phase_intrinsic.png (the planes of `quasirl phase --diagram boost`, with numerical and
        closed-form boundaries and a convexity verdict), best_of_n.png, luce_curation.png,
        phase_*.nc and summary.json.
        """
        from rich.console import Console
        from rich.table import Table

        if quick:
            rounds, batch, buffer, seeds, grid = 6, 256, 64, 200, 25
        s = run_boost(out, eps0=eps0, tpr=tpr, fpr=fpr, lam=lam, mu=mu, rounds=rounds,
                      batch=batch, buffer=buffer, seeds=seeds, grid=grid, target=target,
                      seed=seed)
        console = Console()
        t1 = Table(title=f"quasirl boost: eps0 = {eps0:g}, TPR = {tpr:g}, FPR = {fpr:g}")
        for col in ("learner", f"eps_{rounds} (recurrence)", "MC mean", "MC 95% band",
                    "in band", "limit", "lowers error"):
            t1.add_column(col, justify="right")
        for tr in s["trajectories"]:
            t1.add_row(tr["label"], f"{tr['recurrence'][-1]:.4g}", f"{tr['mc_mean'][-1]:.4g}",
                       f"[{tr['mc_band_2.5'][-1]:.3g}, {tr['mc_band_97.5'][-1]:.3g}]",
                       f"{tr['recurrence_inside_band']:.0%}", f"{tr['limit']:.4g}",
                       str(tr["lowers_error"]))
        t2 = Table(title="phase diagrams: boundary and convexity of the amplifying region")
        for col in ("plane", "region", "boundary pts", "max dev. closed form", "convex",
                    "depth"):
            t2.add_column(col, justify="right")
        for name, p in s["phase_diagrams"].items():
            dev = p["max_deviation_from_closed_form"]
            t2.add_row(name, p["region"], str(p["boundary_points"]),
                       "n/a" if dev is None else f"{dev:.2g}", str(p["convex"]),
                       f"{p['convexity_depth']:.2g}")
        console.print(t1)
        console.print(t2)
        bon = s["best_of_n"]
        prec = "float64" if s["x64"] else "float32; set JAX_ENABLE_X64=1 for float64"
        console.print(f"recurrence = closed form to {s['closed_form_max_abs_diff']:.1e} ({prec}); "
                      f"best-of-N KL <= log N - (N-1)/N: {bon['bound_holds']}; "
                      f"two-point KL at N = {bon['N'][-1]}: {bon['kl_two_point'][-1]:.4f} "
                      f"(bound {bon['bound'][-1]:.3f}); {s['seconds']:.1f} s; figures in {out}/")
