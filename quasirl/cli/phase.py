"""`quasirl phase`: phase diagrams with their theory curves, swept in process or on Dask."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import typer

from quasirl._jsonio import write_json

EXAMPLE = (
    "Example: quasirl phase --diagram mdp --out quasirl-out/phase   "
    "(on a cluster: --scheduler tcp://127.0.0.1:8786; resumable: --store sweeps/)"
)
DIAGRAMS = ("mdp", "eigen", "boost")


def _sweep_kw(scheduler, dask, store, name):
    kw = {"progress": None}  # a bar on stderr when it is a terminal, none in logs and pipes
    if scheduler or dask:
        kw["backend"] = "dask"
        kw["scheduler"] = scheduler or None
    if store is not None:
        kw["store"] = Path(store) / name
    return kw


def _mdp_grid(quick: bool):
    """(T, mu) of the MDP diagram."""
    mu = np.linspace(0.04, 0.5, 12 if quick else 40)
    T = np.concatenate([[0.0], np.geomspace(0.02, 3.0, 16 if quick else 80)])
    return T, mu


def _mdp(out: Path, quick: bool, L: int, kw: dict) -> dict:
    from quasirl import phase, plots
    from quasirl._phase_sweep import netcdf_engine

    T, mu = _mdp_grid(quick)
    ds = phase.mdp_phase_diagram(T, mu, L=L, **kw)
    ds.to_netcdf(out / "mdp_phase.nc", engine=netcdf_engine())
    plots.savefig(plots.plot_mdp_phase(ds), out / "mdp_phase.png")
    x = -L * np.log1p(-ds["mu"].values)
    rel = np.abs(ds["T_boundary"].values / ds["T_c"].values - 1)
    applies = (x >= 2.0) & np.isfinite(rel)
    return {
        "diagram": "mdp",
        "grid": f"{ds.sizes['mu']}x{ds.sizes['T']} (mu, T)",
        "backend": ds.attrs["backend"],
        "theory": "T_c = dr / (-L ln(1 - mu))",
        "deviation": float(rel[applies].max()) if applies.any() else float("nan"),
        "deviation_kind": "max |T_boundary / T_c - 1|",
        "where": "-L ln(1 - mu) >= 2",
        "convex": None,
        "max_abs_dev_mass_vs_closed_form": float(np.abs(ds["mass"] - ds["mass_theory"]).max()),
        "figures": ["mdp_phase.png"],
        "data": "mdp_phase.nc",
    }


def _eigen(out: Path, quick: bool, L: int, kw: dict) -> dict:
    from quasirl import phase, plots
    from quasirl._phase_sweep import netcdf_engine

    Le = 20
    mu = np.geomspace(0.01, 0.5, 100 if quick else 240)
    sigma = np.geomspace(20.0, 1000.0, 4) if quick else np.geomspace(2.0, 1000.0, 24)
    ds = phase.eigen_phase_diagram(mu, sigma=sigma, L=Le, **kw)
    ds.to_netcdf(out / "eigen_phase.nc", engine=netcdf_engine())
    plots.savefig(plots.plot_eigen_phase(ds), out / "eigen_phase.png")
    rel = np.abs(ds["mu_boundary"].values / ds["mu_c"].values - 1)
    applies = ds["sigma"].values >= 20
    return {
        "diagram": "eigen",
        "grid": f"{ds.sizes['sigma']}x{ds.sizes['mu']} (sigma, mu), L = {Le}",
        "backend": ds.attrs["backend"],
        "theory": "mu_c = 1 - sigma^(-1/L)",
        "deviation": float(rel[applies].max()),
        "deviation_kind": "max |mu_boundary / mu_c - 1|",
        "where": "sigma >= 20",
        "convex": None,
        "figures": ["eigen_phase.png"],
        "data": "eigen_phase.nc",
    }


def _boost(out: Path, quick: bool, L: int, kw: dict) -> list[dict]:
    from quasirl import phase, plots
    from quasirl._phase_sweep import netcdf_engine

    planes = phase.boost_phase_diagrams(n=21 if quick else 81)
    plots.savefig(plots.plot_boost_phase(planes), out / "boost_phase.png")
    theory = {"rates": "FPR = c TPR (ideal learner, n rounds); FPR = TPR as n -> inf",
              "imitation": "L(lam) = logit(t eps0) - logit(eps0 (1 - (1 - t)/lam))",
              "intrinsic": "mu(L) = (t - w) / (1 - w), w = t e^-L / (t e^-L + 1 - t)"}
    axis = {"rates": "FPR", "imitation": "L", "intrinsic": "mu"}
    rows = []
    for name, ds in planes.items():
        ds.to_netcdf(out / f"boost_{name}.nc", engine=netcdf_engine())
        dims = list(ds["ratio" if "ratio" in ds else "error"].dims)
        row = {
            "diagram": f"boost/{name}",
            "grid": f"{ds.sizes[dims[0]]}x{ds.sizes[dims[1]]} ({dims[0]}, {dims[1]})",
            "backend": "closed form + iteration",
            "theory": theory[name],
            "deviation": float(ds.attrs["max_abs_dev"]),
            "deviation_kind": f"max |numeric - theory| in {axis[name]}",
            "where": "the whole grid",
            "convex": bool(ds.attrs["convex"]),
            "figures": ["boost_phase.png"],
            "data": f"boost_{name}.nc",
        }
        if name == "rates":
            row["ideal_limit_exact_dev"] = float(ds.attrs["exact_dev_limit"])
        rows.append(row)
    return rows


def run_phase(out: Path, diagrams=("mdp",), quick: bool = False, scheduler: str | None = None,
              dask: bool = False, store: Path | None = None, L: int = 20) -> dict:
    """Compute the requested phase diagrams; write PNG + netCDF + summary.json under ``out``."""
    from quasirl._validate import QuasirlValueError, check_int

    unknown = [d for d in diagrams if d not in DIAGRAMS]
    if unknown:
        raise QuasirlValueError(f"--diagram must be among {', '.join(DIAGRAMS)} or all, "
                                f"got {unknown[0]!r}")
    L = check_int("--L", L, minimum=2)
    if "mdp" in diagrams:  # before any diagram starts: refuse what cannot fit in memory
        from quasirl._phase_mdp import check_phase_memory

        T, mu = _mdp_grid(quick)
        check_phase_memory(int(L), T.size * mu.size,
                           sweep_kw=_sweep_kw(scheduler, dask, store, "mdp"), option="--L")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for d in diagrams:
        t0 = time.perf_counter()
        kw = _sweep_kw(scheduler, dask, store, d)
        got = {"mdp": _mdp, "eigen": _eigen, "boost": _boost}[d](out, quick, L, kw)
        got = got if isinstance(got, list) else [got]
        for row in got:
            row["seconds"] = (time.perf_counter() - t0) / len(got)
        rows.extend(got)
    summary = {"diagrams": rows, "scheduler": scheduler, "quick": quick}
    write_json(out / "summary.json", summary, indent=2)
    return summary


def register(app: typer.Typer) -> None:
    @app.command("phase", epilog=EXAMPLE)
    def phase_cmd(
        out: Path = typer.Option(Path("quasirl-out/phase"), help="output folder"),
        diagram: str = typer.Option("all", help=f"comma list of {', '.join(DIAGRAMS)}, or all"),
        scheduler: str = typer.Option(None, help="Dask scheduler address, tcp://host:port"),
        dask: bool = typer.Option(False, help="run the sweeps on an in-process Dask cluster"),
        store: Path = typer.Option(None, help="folder for resumable chunk stores"),
        L: int = typer.Option(20, "--L", help="route length of the MDP diagram"),
        quick: bool = typer.Option(False, help="small grids (for tests)"),
    ) -> None:
        """Phase diagrams with their theory curves.

        mdp: optimal-path mass over (exploration noise mu, temperature T) on a route chain of
        length L, with the numeric boundary P* = 1/2 and T_c(mu) = dr / (-L ln(1 - mu)).
        eigen: master-sequence fraction over (mu, sigma) on the single peak at L = 20, with the
        numeric error threshold and mu_c = 1 - sigma^(-1/L).
        boost: the cherry-picking loop's error over (TPR, FPR), (selection, imitation lam) and
        (selection, intrinsic error mu), with closed-form boundaries and convexity verdicts.
        Writes <diagram>_phase.png, <diagram>_phase.nc and summary.json under --out.
        """
        from rich.console import Console
        from rich.table import Table

        names = DIAGRAMS if diagram.strip() == "all" else tuple(
            d.strip() for d in diagram.split(",") if d.strip())
        import jax

        with jax.enable_x64(True):  # scoped float64 (Dask workers follow the client's precision)
            s = run_phase(out, names, quick=quick, scheduler=scheduler, dask=dask, store=store,
                          L=L)
        table = Table(title="quasirl phase: numeric boundary vs theory")
        for col in ("diagram", "grid", "deviation", "region convex", "seconds"):
            table.add_column(col, justify="right")
        for r in s["diagrams"]:
            table.add_row(r["diagram"], r["grid"], f"{r['deviation']:.3g}",
                          "-" if r["convex"] is None else ("yes" if r["convex"] else "no"),
                          f"{r['seconds']:.1f}")
        console = Console()
        console.print(table)
        for r in s["diagrams"]:
            console.print(f"{r['diagram']}: theory {r['theory']}; deviation = "
                          f"{r['deviation_kind']} over {r['where']}")
        console.print(f"figures and data in {out}/")
