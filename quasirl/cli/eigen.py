"""`quasirl eigen`: Eigen's error threshold, class distributions and Wright-Fisher drift."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import typer

from quasirl._jsonio import write_json

EXAMPLE = (
    "Example: quasirl eigen --L 10,20,50,100 --sigma 10 --wf-N 30,300,3000 --out quasirl-out/eigen"
)


def _ints(text: str, name: str, lo: int, hi: int) -> list[int]:
    from quasirl._validate import QuasirlValueError, check_int

    try:
        vals = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError as exc:
        raise QuasirlValueError(f"{name} must be comma-separated integers, got {text!r}") from exc
    if not vals:
        raise QuasirlValueError(f"{name} must be comma-separated integers, got {text!r}")
    return [check_int(name, v, minimum=lo, maximum=hi) for v in vals]


def run_eigen(out: Path, Ls=(10, 20, 50, 100), sigma: float = 10.0, points: int = 60,
              full_L: int = 10, class_L: int = 50, wf_L: int = 10, wf_N=(30, 300, 3000),
              wf_mu_ratio: float = 0.7, generations: int = 300, replicates: int = 2,
              seed: int = 0) -> dict:
    """Compute everything, write eigen_*.png and eigen.json under ``out``; return the numbers.

    Master fraction vs mu for each L (exact class reduction) with Eigen's threshold and the
    numeric one, full-space points (Kronecker power iteration) for L = full_L; the stationary
    class distribution at L = class_L for mu below, near and above the threshold; Wright-Fisher
    runs (genotype space, L = wf_L, mu = wf_mu_ratio x threshold) beside the deterministic map.
    """
    import jax

    from quasirl import plots
    from quasirl import sequence as S
    from quasirl._validate import QuasirlValueError, check_int

    t0 = time.perf_counter()
    if not (math.isfinite(sigma) and sigma > 1):
        raise QuasirlValueError(f"sigma must be a finite number > 1, got {sigma!r}")
    points = check_int("points", points, minimum=8)
    if not 0 < wf_mu_ratio:
        raise QuasirlValueError(f"wf-mu-ratio must be > 0, got {wf_mu_ratio}")
    generations = check_int("generations", generations, minimum=1)
    replicates = check_int("replicates", replicates, minimum=1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def sharp(L):
        return np.r_[sigma, np.ones(L)]

    # ---- master fraction vs mu, thresholds ---------------------------------------------------
    sweeps, thresholds, rows = {}, {}, []
    for L in Ls:
        muc = 1 - sigma ** (-1 / L)
        mus = np.geomspace(0.1 * muc, min(0.5, 3 * muc), points)
        x0 = np.array([S.class_stationary(sharp(L), m).distribution[0] for m in mus])
        th = S.error_threshold(sharp(L), space="classes")
        sweeps[L] = (mus, x0)
        thresholds[L] = (th.mu_theory, th.mu_c)
        rows.append({"L": L, "sigma": sigma, "mu_theory": th.mu_theory, "mu_c": th.mu_c,
                     "rel_diff": th.mu_c / th.mu_theory - 1, "ln_sigma_over_L": math.log(sigma) / L,
                     "mu": mus.tolist(), "master": x0.tolist()})
    full = {}
    with jax.enable_x64(True):  # scoped float64 for the full-space check
        muc = 1 - sigma ** (-1 / full_L)
        fm = np.geomspace(0.15 * muc, min(0.5, 2.5 * muc), 9)
        f = S.single_peak(full_L, sigma)
        fx = np.array([float(S.stationary(f, m).distribution[0]) for m in fm])
        ref = np.array([S.class_stationary(sharp(full_L), m).distribution[0] for m in fm])
    full[full_L] = (fm, fx)
    fig = plots.plot_master_fraction(sweeps, sigma=sigma, thresholds=thresholds, full_space=full)
    plots.savefig(fig, out / "eigen_master.png")

    # ---- class distribution at the stationary state -----------------------------------------
    muc = 1 - sigma ** (-1 / class_L)
    classes = {}
    for ratio in (0.25, 0.75, 1.0, 1.25, 2.0):
        y = S.class_stationary(sharp(class_L), min(0.5, ratio * muc)).distribution
        classes[f"mu = {ratio:g} mu_c"] = y
    fig = plots.plot_class_distribution(class_L, classes,
                                        title=f"Stationary class distribution\nL = {class_L}, "
                                              f"sigma = {sigma:g}, mu_c = {muc:.4g}")
    plots.savefig(fig, out / "eigen_classes.png")

    # ---- Wright-Fisher beside the deterministic map -------------------------------------------
    muc = 1 - sigma ** (-1 / wf_L)
    mu = min(0.5, wf_mu_ratio * muc)
    f = S.single_peak(wf_L, sigma)
    det = np.asarray(S.evolve(f, mu, generations, x0=np.eye(1, 1 << wf_L)[0]).master)
    det_stat = float(S.class_stationary(sharp(wf_L), mu).distribution[0])
    key = jax.random.key(seed)
    wf = {}
    for i, N in enumerate(wf_N):
        keys = jax.random.split(jax.random.fold_in(key, i), replicates)
        wf[N] = np.stack([np.asarray(S.wright_fisher(k, f, mu, N, generations).master)
                          for k in keys])
    fig = plots.plot_wright_fisher(det, wf, stationary=det_stat,
                                   title=f"Wright-Fisher vs deterministic\nL = {wf_L}, "
                                         f"sigma = {sigma:g}, mu = {mu:.3g} "
                                         f"({wf_mu_ratio:g} mu_c)")
    plots.savefig(fig, out / "eigen_wf.png")
    burn = generations // 3
    summary = {
        "sigma": sigma,
        "thresholds": [{k: v for k, v in r.items() if k not in ("mu", "master")} for r in rows],
        "master_fraction": [{"L": r["L"], "mu": r["mu"], "master": r["master"]} for r in rows],
        "full_space": {"L": full_L, "mu": fm.tolist(), "master": fx.tolist(),
                       "class_reduction": ref.tolist(),
                       "max_abs_diff": float(np.abs(fx - ref).max())},
        "classes": {"L": class_L, "mu_c": 1 - sigma ** (-1 / class_L),
                    "distributions": {k: v.tolist() for k, v in classes.items()}},
        "wright_fisher": {
            "L": wf_L, "mu": mu, "generations": generations, "deterministic": det.tolist(),
            "deterministic_stationary": det_stat,
            "runs": {str(N): tr.tolist() for N, tr in wf.items()},
            "time_average_after_burn_in": {str(N): float(tr[:, burn:].mean()) for N, tr in
                                           wf.items()},
            "burn_in": burn,
        },
        "seconds": time.perf_counter() - t0,
    }
    write_json(out / "eigen.json", summary, indent=1)
    return summary


def register(app: typer.Typer) -> None:
    @app.command("eigen", epilog=EXAMPLE)
    def eigen(
        out: Path = typer.Option(Path("quasirl-out/eigen"), help="output folder"),
        L: str = typer.Option("10,20,50,100", "--L", help="sequence lengths (comma-separated)"),
        sigma: float = typer.Option(10.0, help="sharp-peak superiority sigma (> 1)"),
        points: int = typer.Option(60, help="mu values per master-fraction curve"),
        full_L: int = typer.Option(10, "--full-L", help="L of the full-space check (2^L states)"),
        class_L: int = typer.Option(50, "--class-L", help="L of the class-distribution figure"),
        wf_L: int = typer.Option(10, "--wf-L", help="L of the Wright-Fisher runs"),
        wf_N: str = typer.Option("30,300,3000", "--wf-N", help="population sizes (comma list)"),
        wf_mu_ratio: float = typer.Option(0.7, "--wf-mu-ratio",
                                          help="Wright-Fisher mu as a fraction of mu_c"),
        generations: int = typer.Option(300, help="Wright-Fisher generations"),
        replicates: int = typer.Option(2, help="Wright-Fisher runs per N"),
        seed: int = typer.Option(0, help="random seed (JAX key)"),
        quick: bool = typer.Option(False, help="small run (for tests)"),
    ) -> None:
        """Eigen's quasispecies on sequences: error threshold, class distribution, drift.

        Writes eigen_master.png (stationary master fraction vs mu for several L, the exact
        class reduction, with Eigen's 1 - sigma^(-1/L) and the numeric threshold, and
        full-space points from the Kronecker power iteration), eigen_classes.png (the
        stationary Hamming-class distribution below, at and above the threshold),
        eigen_wf.png (Wright-Fisher master fraction for several N beside the deterministic
        curve) and eigen.json (all the numbers).
        """
        from rich.console import Console
        from rich.table import Table

        from quasirl._validate import check_int

        Ls = _ints(L, "L", 2, 5000)
        Ns = _ints(wf_N, "wf-N", 1, 10**7)
        for name, v, hi in (("full-L", full_L, 24), ("class-L", class_L, 5000),
                            ("wf-L", wf_L, 20)):
            check_int(name, v, minimum=2, maximum=hi)
        if quick:
            Ls, points, full_L, class_L, wf_L = [8, 16, 32], 24, 8, 20, 6
            Ns, generations, replicates = [20, 2000], 60, 1
        s = run_eigen(out, Ls=Ls, sigma=sigma, points=points, full_L=full_L, class_L=class_L,
                      wf_L=wf_L, wf_N=Ns, wf_mu_ratio=wf_mu_ratio, generations=generations,
                      replicates=replicates, seed=seed)
        t = Table(title=f"quasirl eigen: sharp peak sigma = {sigma:g}")
        for col in ("L", "1 - sigma^(-1/L)", "numeric mu_c", "difference", "ln(sigma)/L"):
            t.add_column(col, justify="right")
        for r in s["thresholds"]:
            t.add_row(str(r["L"]), f"{r['mu_theory']:.5g}", f"{r['mu_c']:.5g}",
                      f"{100 * r['rel_diff']:+.2f}%", f"{r['ln_sigma_over_L']:.5g}")
        console = Console()
        console.print(t)
        w = s["wright_fisher"]
        avg = ", ".join(f"N={n}: {v:.3f}" for n, v in w["time_average_after_burn_in"].items())
        console.print(f"full space L = {s['full_space']['L']} vs class reduction: max |diff| "
                      f"{s['full_space']['max_abs_diff']:.1e}; Wright-Fisher master fraction "
                      f"(time average) {avg} vs deterministic {w['deterministic_stationary']:.3f}; "
                      f"{s['seconds']:.1f} s; figures in {out}/")
