"""`quasirl paths`: the population as an explicit sum over paths, and its concentration on the
optimal ones as T -> 0."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import typer

from quasirl._jsonio import write_json

EXAMPLE = "Example: quasirl paths --out quasirl-out/paths --horizon 6"

# A small world with two goals: the near g (+1) and the far G (+2), 0.2 per step. From S the
# best route reaches G in 5 moves; one wasted move (a bump into the edge) is the next best.
LAYOUT = """
S..g
.#..
...G
"""
REWARDS = {"G": 2.0, "g": 1.0}
STEP_COST = 0.2
FLOW_TEMPS = (1.0, 0.2, 0.0)


def run_paths(out: Path, horizon: int = 6, n_temps: int = 40, t_max: float = 3.0,
              t_min: float = 0.01, k_best: int = 5) -> dict:
    """Enumerate, sum and concentrate on the built-in world; write figures and summary.json.

    Returns the numbers written to ``summary.json``. Runs in float64 (scoped ``enable_x64``;
    the global JAX setting is left alone).
    """
    import jax

    with jax.enable_x64(True):
        return _run_paths(out, horizon, n_temps, t_max, t_min, k_best)


def _run_paths(out, horizon, n_temps, t_max, t_min, k_best) -> dict:
    import jax.numpy as jnp

    import quasirl as qr
    from quasirl import paths as qp
    from quasirl import plots
    from quasirl._models import _parse_layout
    from quasirl._validate import QuasirlValueError, check_horizon, check_int

    check_horizon(horizon)
    if not 1 <= horizon <= 8:
        raise QuasirlValueError(f"horizon must lie in [1, 8] (paths are enumerated), got {horizon}")
    n_temps = check_int("temps", n_temps, minimum=2)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    mdp = qr.gridworld(layout=LAYOUT, rewards=REWARDS, step_cost=STEP_COST, dtype=jnp.float64)
    S, A, _ = mdp.shape
    grid = _parse_layout(LAYOUT)
    labels = {i: f"{c} {divmod(i, grid.shape[1])}" for i, c in enumerate(grid.ravel())}

    T = np.concatenate([np.geomspace(t_max, t_min, n_temps), [0.0]])
    paths = qp.enumerate_paths(mdp, horizon)
    n_paths = int(paths.ret.shape[0])
    F_sum = np.asarray(qp.path_integral(mdp, T, horizon))
    F_rec = np.asarray(qr.free_energy(mdp, T, horizon))
    mass = np.asarray(qp.optimal_path_mass(mdp, T, horizon))
    rest = np.asarray(qp.suboptimal_path_mass(mdp, T, horizon))
    _, prob = qp.path_distribution(mdp, T, horizon)
    ret = np.asarray(paths.ret)
    top = ret >= ret.max() - 1e-9
    mass_enum = np.asarray(prob)[:, top].sum(axis=1)
    gap = qp.return_gap(mdp, horizon)
    asym = gap.asymptote(T)
    spectrum = qp.return_spectrum(mdp, horizon, 4)
    best = qp.best_paths(mdp, horizon, k_best)

    fig = plots.plot_mass_asymptote(
        T, mass, asym, gap.delta, float(np.exp(gap.log_n2 - gap.log_w1)), mass_enumerated=mass_enum,
        title=f"Gridworld ({S} states, H = {horizon}): concentration on the optimal paths")
    plots.savefig(fig, out / "optimal_mass_asymptote.png")
    graphs = [qp.unrolled_graph(mdp, horizon, T=t) for t in FLOW_TEMPS]
    fig = plots.plot_unrolled_flow(graphs, FLOW_TEMPS, state_labels=labels)
    plots.savefig(fig, out / "unrolled_flow.png")

    pos = T > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(asym > 0, rest / asym, np.nan)
    cyc = qp.max_cycle_mean(mdp)
    lmdp = qp.lmdp_desirability(mdp, np.array(FLOW_TEMPS))
    start = int(np.flatnonzero(grid.ravel() == "S")[0])
    summary = {
        "world": {"layout": LAYOUT.strip().splitlines(), "rewards": REWARDS,
                  "step_cost": STEP_COST, "states": S, "actions": A},
        "horizon": horizon,
        "num_paths": n_paths,
        "num_paths_dp": qp.count_paths(mdp, horizon),
        "temperatures": T.tolist(),
        "path_integral": F_sum.tolist(),
        "free_energy": F_rec.tolist(),
        "max_abs_path_integral_minus_free_energy": float(np.max(np.abs(F_sum - F_rec))),
        "optimal_path_mass": mass.tolist(),
        "optimal_path_mass_enumerated": mass_enum.tolist(),
        "max_abs_mass_dp_minus_enumerated": float(np.max(np.abs(mass - mass_enum))),
        "suboptimal_path_mass": rest.tolist(),
        "asymptote": asym.tolist(),
        "ratio_to_asymptote": [None if not np.isfinite(r) else float(r) for r in ratio],
        "ratio_at_smallest_T": float(ratio[pos][-1]),
        "best_return": gap.best,
        "second_return": gap.second,
        "delta": gap.delta,
        "log_w1": gap.log_w1,
        "log_n2": gap.log_n2,
        "n2_over_w1": float(np.exp(gap.log_n2 - gap.log_w1)),
        "num_optimal_paths": gap.count_best,
        "num_second_best_paths": gap.count_second,
        "spectrum": {"returns": spectrum.returns.tolist(),
                     "log_weight": spectrum.log_weight.tolist(),
                     "count": spectrum.count.tolist()},
        "best_paths": {"states": np.asarray(best.states).tolist(),
                       "actions": np.asarray(best.actions).tolist(),
                       "returns": np.asarray(best.ret).tolist()},
        "max_cycle_mean": cyc.value,
        "best_cycle_states": cyc.states.tolist(),
        "growth_rate": {f"{t:g}": float(g) for t, g in
                        zip(FLOW_TEMPS, np.asarray(qp.growth_rate(mdp, np.array(FLOW_TEMPS))),
                            strict=True)},
        "lmdp_start_value": {f"{t:g}": float(v) for t, v in
                             zip(FLOW_TEMPS, np.asarray(lmdp.value)[:, start], strict=True)},
        "seconds": time.perf_counter() - t0,
        "figures": ["optimal_mass_asymptote.png", "unrolled_flow.png"],
    }
    write_json(out / "summary.json", summary, indent=2)
    return summary


def register(app: typer.Typer) -> None:
    @app.command("paths", epilog=EXAMPLE)
    def paths(
        out: Path = typer.Option(Path("quasirl-out/paths"), help="output folder"),
        horizon: int = typer.Option(6, help="path length H (1 to 8; paths are enumerated)"),
        temps: int = typer.Option(40, help="number of temperatures on the log grid (plus T=0)"),
        quick: bool = typer.Option(False, help="small sweep (for tests)"),
    ) -> None:
        """Paths: the population as an explicit sum over paths, concentrating on the best ones.

        On a small two-goal gridworld: enumerates every path, checks the explicit path integral
        against the recursive free energy, and measures the mass on the optimal paths against
        1/T with its predicted asymptote N2 exp(-Delta/T) / W1. Writes
        optimal_mass_asymptote.png, unrolled_flow.png (edge widths = tempered path flow at
        T = 1, 0.2 and the T -> 0 limit) and summary.json.
        """
        from rich.console import Console
        from rich.table import Table

        s = run_paths(out, horizon=horizon, n_temps=8 if quick else temps)
        table = Table(title=f"quasirl paths: {s['num_paths']} paths, H = {s['horizon']}, "
                            f"max R = {s['best_return']:.4g}, Delta = {s['delta']:.3g}, "
                            f"N2/W1 = {s['n2_over_w1']:.3g}")
        for col in ("T", "P(optimal) DP", "enumerated", "1 - P", "N2 e^-D/T / W1", "ratio"):
            table.add_column(col, justify="right")
        T = np.asarray(s["temperatures"])
        idx = sorted(set(np.linspace(0, len(T) - 1, 7).round().astype(int).tolist()))
        for i in idx:
            r = s["ratio_to_asymptote"][i]
            table.add_row(f"{T[i]:.4g}", f"{s['optimal_path_mass'][i]:.6f}",
                          f"{s['optimal_path_mass_enumerated'][i]:.6f}",
                          f"{s['suboptimal_path_mass'][i]:.3e}", f"{s['asymptote'][i]:.3e}",
                          "-" if r is None else f"{r:.4f}")
        console = Console()
        console.print(table)
        console.print(f"|path integral - free energy| <= "
                      f"{s['max_abs_path_integral_minus_free_energy']:.1e}; "
                      f"{s['num_optimal_paths']} optimal paths; {s['seconds']:.1f} s; "
                      f"figures in {out}/")
