"""`quasirl converge`: F(T) and the optimal-path mass converging to the T -> 0 limit."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import typer

from quasirl._jsonio import write_json
from quasirl.cli._stages import Stages

EXAMPLE = "Example: quasirl converge --mdp random --seed 3 --horizon 8 --out quasirl-out/converge"
WORLDS = ("gridworld", "chain", "random")
DEFAULT_HORIZON = {"gridworld": 20, "chain": 12, "random": 8}
MAX_HORIZON = 2**31 - 1
# Memory of a run, fitted to the peak RSS of chains, gridworlds and random MDPs of 5e4..4e5
# states at 9 and 41 temperatures (2-core EPYC) and rounded up, so that the estimate is high by
# up to ~2x: bytes per outcome (s, a, k) to build the MDP; per state, per temperature and per
# outcome for the kernels (populations and their pull tables, all S states); per entry of the
# reverse lists (states x in-degree J) and temperature for the path dynamic programmes, which
# run on the states reachable within the horizon.
_BUILD_BYTES = 256
_STATE_TEMP_BYTES = 80
_OUTCOME_BYTES = 128
_PATH_BYTES = 64


def _shape(world: str, size: int | None, slip: float, horizon: int):
    """(S, A, K, J, reachable) of a built-in MDP before it is built: J bounds the in-degree
    (for the random MDP a typical maximum; the built MDP is checked again with its own)."""
    if world == "gridworld":
        K = 1 if slip == 0 else 3
        if size is None:
            from quasirl._models import DEFAULT_LAYOUT, _parse_layout

            S = _parse_layout(DEFAULT_LAYOUT).size
            return S, 4, K, 6 * K, S
        S = size * size  # corner start: at most (H+1)(H+2)/2 cells within H steps
        return S, 4, K, 6 * K, min(S, (horizon + 1) * (horizon + 2) // 2)
    if world == "chain":
        S, K = (8 if size is None else size), (1 if slip == 0 else 2)
        return S, 2, K, 2 * K + 1, min(S, horizon + 1)
    S = 12 if size is None else size
    return S, 3, 2, 20, S  # uniform start: every state


def memory_estimate(world: str, size: int | None, slip: float, horizon: int, n_temps: int,
                    J: int | None = None) -> int:
    """Estimated peak bytes of :func:`run_converge` (rough, on the high side)."""
    S, A, K, J0, reach = _shape(world, size, slip, horizon)
    J = J0 if J is None else J
    B = n_temps + 1
    return (S * A * K * (_BUILD_BYTES + _OUTCOME_BYTES) + S * B * _STATE_TEMP_BYTES
            + reach * J * (B + 4) * _PATH_BYTES)


def _check_memory(world, size, slip, horizon, n_temps, J=None) -> None:
    from quasirl._validate import check_memory

    need = memory_estimate(world, size, slip, horizon, n_temps, J)
    # name the option that makes it big: --temps when the default 40 would need a tenth
    name = "--size"
    if size is None or memory_estimate(world, size, slip, horizon, 40, J) < need / 10:
        name = "--temps"
    S = _shape(world, size, slip, horizon)[0]
    what = {"gridworld": "gridworld", "chain": "chain", "random": "random MDP"}[world]
    check_memory(name, need, f"converge on the {what} of {S:,} states at {n_temps + 1:,} "
                             f"temperatures")


def build_mdp(world: str, size: int | None = None, seed: int = 0, slip: float = 0.0):
    """The built-in MDPs of ``quasirl converge``; returns (mdp, description)."""
    import jax
    import jax.numpy as jnp

    import quasirl as qr
    from quasirl._models import DEFAULT_LAYOUT
    from quasirl._validate import QuasirlValueError

    f64 = jnp.float64 if jax.config.jax_enable_x64 else None
    if world == "gridworld":
        if size is not None:
            mdp = qr.gridworld(size, size, step_cost=0.04, slip=slip, dtype=f64)
            return mdp, f"{size}x{size} gridworld, goal +1, step cost 0.04, slip {slip:g}"
        return (qr.gridworld(layout=DEFAULT_LAYOUT, slip=slip, dtype=f64),
                f"the demo gridworld (goals +1/+3, pit -3), slip {slip:g}")
    if world == "chain":
        n = 8 if size is None else size
        mdp = qr.chain(n, goal_reward=1.0, step_cost=0.05, slip=slip, dtype=f64)
        return mdp, f"{n}-state chain, goal +1, step cost 0.05, slip {slip:g}"
    if world == "random":
        S = 12 if size is None else size
        mdp = qr.random_mdp(jax.random.key(seed), S, 3, branching=2, dtype=f64)
        return mdp, f"random MDP, S={S}, A=3, 2 successors, N(0,1) rewards, seed {seed}"
    raise QuasirlValueError(f"--mdp must be one of {', '.join(WORLDS)}, got {world!r}")


def run_converge(out: Path, world: str = "gridworld", horizon: int | None = None,
                 n_temps: int = 40, t_max: float = 10.0, t_min: float = 1e-3,
                 size: int | None = None, seed: int = 0, slip: float = 0.0) -> dict:
    """Sweep T down to exactly 0 on a built-in MDP; write figures and convergence.json.

    Bounds (rigorous for every MDP whose path weights sum to 1): with R* the best return and W
    the total weight of the best paths (from the T = 0 max-plus evolution),
    R* + T log W <= F(T) <= R*, and the optimal-path mass P*(T) = W exp((R* - F)/T) from the
    kernels, held against the dynamic programme of ``quasirl.paths`` (which also gives 1 - P*
    without cancellation) and its band from the return gap (:func:`_mass_band`).

    A run whose memory (:func:`memory_estimate`) would exceed half of this machine's is refused
    up front with a QuasirlValueError naming --size or --temps.
    """
    import quasirl as qr
    from quasirl import plots
    from quasirl._validate import QuasirlValueError, check_horizon, check_int

    if world not in WORLDS:
        raise QuasirlValueError(f"--mdp must be one of {', '.join(WORLDS)}, got {world!r}")
    H = DEFAULT_HORIZON[world] if horizon is None else check_horizon(horizon)
    H = check_int("horizon", H, minimum=1, maximum=MAX_HORIZON)
    n_temps = check_int("--temps", n_temps, minimum=1)
    size = None if size is None else check_int("--size", size)
    if not 0 < t_min < t_max:
        raise QuasirlValueError(f"need 0 < t_min < t_max, got t_min={t_min}, t_max={t_max}")
    if size is None or size >= 1:  # (smaller sizes: the constructors say what is wrong)
        _check_memory(world, size, slip, H, n_temps)  # before building anything
    mdp, description = build_mdp(world, size, seed, slip)
    _check_memory(world, size, slip, H, n_temps, J=int(mdp.pred.shape[1]))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    T = np.concatenate([np.geomspace(t_max, t_min, n_temps), [0.0]])
    stages = Stages(4, "converge")
    stages.next(f"F(T) at {len(T)} temperatures, horizon {H:,}")
    F = np.asarray(qr.free_energy(mdp, T, H), dtype=float)
    stages.next("the T = 0 limit")
    limit = qr.evolve(mdp, 0.0, H)
    R_star, log_W = float(F[-1]), float(limit.log_normaliser)
    pos = T > 0
    mass = np.ones_like(T)
    mass[pos] = np.exp(np.minimum(log_W + (R_star - F[pos]) / T[pos], 0.0))
    gap = R_star - F
    tol = 1e-9 * (1 + abs(R_star))
    bound_ok = bool(np.all((gap >= -tol) & (gap <= -T * log_W + tol)))
    stages.next("optimal-path mass by dynamic programming")
    band = _mass_band(mdp, H, T, log_W)

    stages.next("figures")
    fig = plots.plot_free_energy(T, F, R_star, -log_W,
                                 title=f"{description}, H = {H}: F(T) -> max R")
    plots.savefig(fig, out / "free_energy.png")
    fig = plots.plot_mass_convergence(T, band["dp_mass"], band, rest=band["dp_rest"],
                                      title=f"{description}, H = {H}")
    plots.savefig(fig, out / "optimal_path_mass.png")
    bellman = float(qr.bellman_value(mdp, H))
    summary = {
        "mdp": world,
        "description": description,
        "horizon": H,
        "max_return": R_star,
        "log_weight_optimal_paths": log_W,
        "bellman_value": bellman,
        "optimism_gap": R_star - bellman,
        "temperatures": T.tolist(),
        "free_energy": F.tolist(),
        "gap_max_return_minus_F": gap.tolist(),
        "bound_ok": bound_ok,
        "monotone_ok": bool(np.all(np.diff(F) >= -tol)),
        "optimal_path_mass": mass.tolist(),
        "return_gap": band["delta"],
        "log_weight_second_best": band["log_n2"],
        "mass_band_lower": band["lower"].tolist(),
        "mass_band_upper": band["upper"].tolist(),
        "mass_in_band": bool(np.all((band["dp_mass"] >= band["lower"] - 1e-12)
                                    & (band["dp_mass"] <= band["upper"] + 1e-12))),
        "suboptimal_mass": band["dp_rest"].tolist(),
        "suboptimal_in_band": bool(np.all((band["dp_rest"] >= band["rest_lower"] * (1 - 1e-9))
                                          & (band["dp_rest"] <= band["rest_upper"] * (1 + 1e-9)))),
        "mass_dp_max_abs_diff": float(np.abs(band["dp_mass"] - mass).max()),
        "seconds": time.perf_counter() - t0,
        "figures": ["free_energy.png", "optimal_path_mass.png"],
    }
    write_json(out / "convergence.json", summary, indent=2)
    stages.close()
    return summary


def _mass_band(mdp, H, T, log_W):
    """Rigorous band for the optimal-path mass from the return gap to the next-best paths.

    Every non-optimal path returns at most R* - D, the second-best ones exactly R* - D, and the
    path weights sum to 1, so with W = W_1 and N_2 from :func:`quasirl.paths.return_gap`
    W / (W + (1 - W) e^{-D/T}) <= P*(T) <= W / (W + N_2 e^{-D/T}); the upper edge is the
    T -> 0 asymptote. Also returns the dynamic-programming mass of ``quasirl.paths``.
    """
    from scipy.special import expit

    from quasirl import paths

    gap = paths.return_gap(mdp, H)
    pos = T > 0
    lower, upper = np.ones_like(T), np.ones_like(T)
    rest_lower, rest_upper = np.zeros_like(T), np.zeros_like(T)  # the same band for 1 - P*
    if np.isfinite(gap.delta):
        log_rest = np.log(-np.expm1(gap.log_w1))  # log(1 - W)
        x = -gap.delta / T[pos]
        lower[pos] = expit(-(log_rest - gap.log_w1 + x))
        upper[pos] = expit(-(gap.log_n2 - gap.log_w1 + x))
        rest_upper[pos] = expit(log_rest - gap.log_w1 + x)
        rest_lower[pos] = expit(gap.log_n2 - gap.log_w1 + x)
    dp = np.asarray(paths.optimal_path_mass(mdp, T, H), dtype=float)
    rest = np.asarray(paths.suboptimal_path_mass(mdp, T, H), dtype=float)
    return {"lower": lower, "upper": upper, "rest_lower": rest_lower, "rest_upper": rest_upper,
            "dp_mass": dp, "dp_rest": rest, "delta": gap.delta,
            "log_w1": gap.log_w1, "log_n2": gap.log_n2, "log_w1_kernels": log_W}


def register(app: typer.Typer) -> None:
    @app.command("converge", epilog=EXAMPLE)
    def converge(
        out: Path = typer.Option(Path("quasirl-out/converge"), help="output folder"),
        mdp: str = typer.Option("gridworld", help=f"built-in MDP: {', '.join(WORLDS)}"),
        horizon: int = typer.Option(None, help="path length H (default per MDP)"),
        size: int = typer.Option(None, help="states (chain, random) or side (gridworld)"),
        seed: int = typer.Option(0, help="seed of the random MDP"),
        slip: float = typer.Option(0.0, help="slip probability (chain, gridworld)"),
        temps: int = typer.Option(40, help="temperatures on the log grid (plus T = 0)"),
        quick: bool = typer.Option(False, help="small sweep (for tests)"),
    ) -> None:
        """Convergence of F(T) and of the optimal-path mass to the T -> 0 limit, with bounds.

        Writes free_energy.png (F(T) inside R* + T log W <= F <= R*), optimal_path_mass.png
        (mass on the best paths against 1/T inside its band) and convergence.json.
        """
        import jax
        from rich.console import Console
        from rich.table import Table

        with jax.enable_x64(True):  # scoped: float64 for the bound checks, no global change
            s = run_converge(out, mdp, horizon, n_temps=8 if quick else temps, size=size,
                             seed=seed, slip=slip)
        table = Table(title=f"quasirl converge: {s['description']}, H = {s['horizon']}, "
                            f"max R = {s['max_return']:.4f}")
        for col in ("T", "F(T)", "max R - F", "bound -T log W", "P(optimal paths)"):
            table.add_column(col, justify="right")
        T = np.asarray(s["temperatures"])
        for i in sorted(set(np.linspace(0, len(T) - 1, 7).round().astype(int).tolist())):
            table.add_row(f"{T[i]:.4g}", f"{s['free_energy'][i]:.6f}",
                          f"{s['gap_max_return_minus_F'][i]:.3g}",
                          f"{-T[i] * s['log_weight_optimal_paths']:.3g}",
                          f"{s['optimal_path_mass'][i]:.4f}")
        console = Console()
        console.print(table)
        console.print(f"bounds hold: {s['bound_ok']}, F monotone: {s['monotone_ok']}, "
                      f"mass in band: {s['mass_in_band']}, optimism gap (max R - Bellman): "
                      f"{s['optimism_gap']:.4g}; {s['seconds']:.1f} s; figures in {out}/")
