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


def _netcdf_engine() -> str:
    """h5netcdf when h5py is installed (netCDF-4), else scipy (netCDF-3)."""
    import importlib.util

    return "h5netcdf" if importlib.util.find_spec("h5py") is not None else "scipy"


def _plane_report(da, level, side, analytic_err, what):
    from quasirl import selection as sel

    lines = sel.boundary(da, level)
    cv = sel.is_convex(da, level, side=side)
    return lines, {
        "variable": da.name,
        "region": f"{da.name} {'<=' if side == 'below' else '>='} {level:g}",
        "level": float(level),
        "boundary_polylines": len(lines),
        "boundary_points": int(sum(len(s) for s in lines)),
        "boundary": [s.tolist() for s in lines],
        "max_deviation_from_closed_form": analytic_err,
        "closed_form": what,
        "convex": bool(cv.convex),
        "convexity_depth": cv.depth,
        "convexity_witness": cv.witness,
        "hull_deficit": float(cv.hull_deficit),
        "grid_points_inside": cv.inside,
    }


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
    from quasirl._selection_boost import _check_count, _check_unit

    t0 = time.perf_counter()
    for name, v in (("eps0", eps0), ("tpr", tpr), ("fpr", fpr), ("lam", lam), ("mu", mu)):
        _check_unit(name, v)
    _bcheck(0 < eps0 < 1, f"eps0 must lie in (0, 1), got {eps0}")
    _bcheck(tpr > 0, f"tpr must be > 0, got {tpr}")
    _bcheck(0 < target < 1, f"target must lie in (0, 1), got {target}")
    rounds = _check_count("rounds", rounds, 1)
    batch, buffer = _check_count("batch", batch, 1), _check_count("buffer", buffer, 1)
    seeds, grid = _check_count("seeds", seeds, 2), _check_count("grid", grid, 5)
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

    # ---- phase diagrams ----------------------------------------------------------------------
    planes = {}
    g_t = np.linspace(0.0, 1.0, grid)[1:]
    g_f = np.linspace(0.0, 1.0, grid)
    ds_r = sel.phase_diagram_rates(g_t, g_f, eps0, rounds=rounds)
    c = sel.rates_boundary(eps0, target, rounds=rounds)
    lines, rep = _plane_report(ds_r["ratio"], target, "below", None,
                               f"FPR = {c:.6g} TPR (ideal learner, {rounds} rounds)")
    rep["max_deviation_from_closed_form"] = max(
        (float(np.abs(s[:, 1] - c * s[:, 0]).max()) for s in lines), default=None)
    diag_lines = sel.boundary(ds_r["ratio"], 1.0)
    rep["diagonal_level_1_max_deviation"] = max(
        (float(np.abs(s[:, 1] - s[:, 0]).max()) for s in diag_lines), default=None)
    rep["diagonal_region_convex"] = bool(sel.is_convex(ds_r["ratio"], 1.0).convex)
    planes["rates"] = rep
    xs = np.array([0.0, min(1.0, 1.0 / c) if c > 0 else 1.0])
    fig = plots.plot_selection_phase(
        ds_r["ratio"], target, lines, analytic=(xs, c * xs),
        analytic_label=f"closed form FPR = {c:.3g} TPR",
        extra=(np.array([0, 1.0]), np.array([0, 1.0])), extra_label="FPR = TPR (ratio 1)",
        title=f"Ideal learner after {rounds} rounds", xlabel="TPR", ylabel="FPR",
        cbar_label=r"$\varepsilon_n/\varepsilon_0$", vmax=2.0,
        verdict=f"region ratio <= {target:g}: convex = {rep['convex']}")
    plots.savefig(fig, out / "phase_rates.png")
    ds_r.to_netcdf(out / "phase_rates.nc", engine=_netcdf_engine())

    L = np.linspace(-1.0, 6.0, grid)
    lam_ax = np.linspace(0.02, 1.0, grid)
    ds_i = sel.phase_diagram_imitation(L, lam_ax, eps0)
    lines, rep = _plane_report(ds_i["ratio"], target, "below", None,
                               "L = logit(k eps0) - logit(eps0 (1 - (1 - k)/lam))")
    interior = [s[(s[:, 1] < 0.95) & (s[:, 0] < L[-2])] for s in lines]
    rep["max_deviation_from_closed_form"] = max(
        (float(np.abs(s[:, 0] - sel.imitation_boundary(s[:, 1], eps0, target)).max())
         for s in interior if len(s)), default=None)
    planes["imitation"] = rep
    lam_fine = np.linspace(1 - target + 1e-4, 1.0, 400)
    Lb = sel.imitation_boundary(lam_fine, eps0, target)
    keep = Lb <= L[-1]
    fig = plots.plot_selection_phase(
        ds_i["ratio"], target, lines, analytic=(Lb[keep], lam_fine[keep]),
        title=f"Partial imitation, eps0 = {eps0:g} (limit)", xlabel=r"selection $\log(TPR/FPR)$",
        ylabel=r"imitation slope $\lambda$", cbar_label=r"$\varepsilon_\infty/\varepsilon_0$",
        vmax=2.0, verdict=f"region ratio <= {target:g}: convex = {rep['convex']}")
    plots.savefig(fig, out / "phase_imitation.png")
    ds_i.to_netcdf(out / "phase_imitation.nc", engine=_netcdf_engine())

    Ls = np.linspace(0.02, 5.0, grid)
    mu_ax = np.linspace(0.0, 0.98, grid)
    ds_m = sel.phase_diagram_intrinsic(Ls, mu_ax, eps0=eps0)
    level_m = target * eps0  # the same amplification as in the other planes, in absolute terms
    lines, rep = _plane_report(ds_m["error"], level_m, "below", None,
                               "mu = k (1 - FPR/TPR)")
    rep["max_deviation_from_closed_form"] = max(
        (float(np.abs(s[:, 1] - sel.intrinsic_boundary(s[:, 0], level_m)).max())
         for s in lines), default=None)
    planes["intrinsic"] = rep
    fig = plots.plot_selection_phase(
        ds_m["error"], level_m, lines, analytic=(Ls, sel.intrinsic_boundary(Ls, level_m)),
        extra=(Ls, sel.error_threshold(Ls)), extra_label="error threshold mu = 1 - FPR/TPR",
        title="Intrinsic error (two-type quasispecies)", xlabel=r"selection $\log(TPR/FPR)$",
        ylabel=r"mutation rate $\mu$", cbar_label=r"$\varepsilon_\infty$", vmax=1.0,
        verdict=f"region error <= {level_m:g}: convex = {rep['convex']}")
    plots.savefig(fig, out / "phase_intrinsic.png")
    ds_m.to_netcdf(out / "phase_intrinsic.nc", engine=_netcdf_engine())

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
        phase_intrinsic.png (diagrams with numerical and closed-form boundaries and a
        convexity verdict), best_of_n.png, luce_curation.png, phase_*.nc and summary.json.
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
