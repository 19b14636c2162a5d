"""`quasirl demo`: the main job on the built-in gridworld, T swept down to exactly 0."""

from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np
import typer

from quasirl._jsonio import write_json
from quasirl.cli._stages import Stages

EXAMPLE = "Example: quasirl demo --out quasirl-out/demo --horizon 20"


def run_demo(out: Path, horizon: int = 20, n_temps: int = 36, t_max: float = 10.0,
             t_min: float = 2e-3, map_temps=(1.0, 0.2, 0.0)) -> dict:
    """Sweep T over a log grid down to 0 on the default gridworld; write figures and JSON.

    Returns the numbers written to ``summary.json``.
    """
    from quasirl._validate import QuasirlValueError, check_horizon, check_int, check_memory

    check_horizon(horizon)  # the message every command gives for a negative horizon
    horizon = check_int("horizon", horizon, minimum=1)  # the demo needs at least one step
    n_temps = check_int("temps", n_temps, minimum=1)
    if not 0 < t_min < t_max:
        raise QuasirlValueError(f"need 0 < t_min < t_max, got t_min={t_min}, t_max={t_max}")
    # the largest tables: the soft policy [3, H, S, A] with its backward values (float64),
    # about 4 such tables alive at once
    from quasirl._models import DEFAULT_LAYOUT, _parse_layout

    cells = _parse_layout(DEFAULT_LAYOUT).size
    check_memory("horizon", 4 * len(map_temps) * horizon * cells * 4 * 8.0,
                 f"the demo at horizon {horizon:,}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with jax.enable_x64(True):  # scoped float64: the library never flips global config
        return _demo(out, horizon, n_temps, t_max, t_min, map_temps)


def _demo(out, horizon, n_temps, t_max, t_min, map_temps):
    import jax.numpy as jnp

    import quasirl as qr
    from quasirl import plots
    from quasirl._models import DEFAULT_LAYOUT, DEFAULT_REWARDS, _parse_layout

    t0 = time.perf_counter()
    mdp = qr.gridworld(layout=DEFAULT_LAYOUT, dtype=jnp.float64)
    S, A, _ = mdp.shape
    grid = _parse_layout(DEFAULT_LAYOUT)
    rows, cols = grid.shape
    T = np.concatenate([np.geomspace(t_max, t_min, n_temps), [0.0]])

    stages = Stages(5, "demo")
    stages.next(f"F(T) at {len(T)} temperatures, horizon {horizon:,}")
    F = np.asarray(qr.free_energy(mdp, T, horizon))
    max_return = float(F[-1])
    # Deterministic moves, uniform exploration, a point start: every path has weight A^-H,
    # so the bound is 0 <= max R - F(T) <= T * H * log A.
    neg_log_w = horizon * np.log(A)
    # Probability of the max-return paths, and of the rest, each by its own dynamic programme
    # (no 1 - mass cancellation), with the asymptote N2 exp(-Delta/T) / W1 of the rest.
    stages.next("optimal-path mass")
    mass = np.asarray(qr.paths.optimal_path_mass(mdp, T, horizon))
    rest = np.asarray(qr.paths.suboptimal_path_mass(mdp, T, horizon))
    gap = qr.paths.return_gap(mdp, horizon)
    asymptote = np.asarray(gap.asymptote(np.where(T > 0, T, 1.0)))

    stages.next("soft policies")
    policies = np.asarray(qr.soft_policy(mdp, np.asarray(map_temps), horizon))[:, 0]
    stages.next("occupancies")
    occ = np.stack([np.asarray(qr.occupancy(mdp, t, horizon)).sum(axis=(1, 2))
                    for t in map_temps])
    stages.next("figures")
    flat = grid.ravel()
    labels = {i: c for i, c in enumerate(flat) if c not in "#."}
    walls = flat == "#"

    fig = plots.plot_free_energy(T, F, max_return, neg_log_w,
                                 title=f"Gridworld ({S} states, H = {horizon}): F(T) -> max R")
    plots.savefig(fig, out / "free_energy.png")
    fig = plots.plot_optimal_mass(T, mass, rest=rest, asymptote=asymptote)
    plots.savefig(fig, out / "optimal_path_mass.png")
    fig = plots.plot_policy_maps((rows, cols), map_temps, policies, occ, walls=walls,
                                 labels=labels)
    plots.savefig(fig, out / "soft_policy_maps.png")

    summary = {
        "world": {"layout": DEFAULT_LAYOUT.strip().splitlines(), "rewards": DEFAULT_REWARDS,
                  "step_cost": 0.04, "states": S, "actions": A},
        "horizon": horizon,
        "max_return": max_return,
        "bound_neg_log_w_star": neg_log_w,
        "return_gap_delta": float(gap.delta),
        "second_best_weight_ratio_N2_over_W1": float(gap.n2 / gap.w1),
        "temperatures": T.tolist(),
        "free_energy": F.tolist(),
        "gap_max_return_minus_F": (max_return - F).tolist(),
        "bound_ok": bool(np.all((max_return - F >= -1e-9)
                                & (max_return - F <= T * neg_log_w + 1e-9))),
        "monotone_ok": bool(np.all(np.diff(F) >= -1e-9)),
        "optimal_path_mass": mass.tolist(),
        "suboptimal_path_mass": rest.tolist(),
        "bellman_value": float(qr.bellman_value(mdp, horizon)),
        "seconds": time.perf_counter() - t0,
        "figures": ["free_energy.png", "optimal_path_mass.png", "soft_policy_maps.png"],
    }
    write_json(out / "summary.json", summary, indent=2)
    stages.close()
    return summary


def register(app: typer.Typer) -> None:
    @app.command("demo", epilog=EXAMPLE)
    def demo(
        out: Path = typer.Option(Path("quasirl-out/demo"), help="output folder"),
        horizon: int = typer.Option(20, help="path length H"),
        temps: int = typer.Option(36, help="number of temperatures on the log grid (plus T=0)"),
        quick: bool = typer.Option(False, help="small sweep (for tests)"),
    ) -> None:
        """The main job: a gridworld with competing routes, T swept down to exactly 0.

        Writes free_energy.png (F(T) approaching max R inside its proven bound band),
        optimal_path_mass.png (probability of the optimal paths against 1/T),
        soft_policy_maps.png (soft policy at three temperatures) and summary.json.
        """
        from rich.console import Console
        from rich.table import Table

        s = run_demo(out, horizon=horizon, n_temps=8 if quick else temps)
        table = Table(title=f"quasirl demo: gridworld, H = {s['horizon']}, "
                            f"max R = {s['max_return']:.4f}")
        for col in ("T", "F(T)", "max R - F", "bound T*H*log A", "P(optimal paths)"):
            table.add_column(col, justify="right")
        T = np.asarray(s["temperatures"])
        idx = sorted(set(np.linspace(0, len(T) - 1, 7).round().astype(int).tolist()))
        for i in idx:
            table.add_row(f"{T[i]:.4g}", f"{s['free_energy'][i]:.6f}",
                          f"{s['gap_max_return_minus_F'][i]:.3g}",
                          f"{T[i] * s['bound_neg_log_w_star']:.3g}",
                          f"{s['optimal_path_mass'][i]:.4f}")
        console = Console()
        console.print(table)
        console.print(f"bounds hold: {s['bound_ok']}, F monotone in T: {s['monotone_ok']}, "
                      f"Bellman value {s['bellman_value']:.4f}; {s['seconds']:.1f} s; "
                      f"figures in {out}/")
