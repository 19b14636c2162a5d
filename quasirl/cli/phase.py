"""`quasirl phase`: phase diagrams with their theory curves, swept in process or on Dask."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import typer

EXAMPLE = (
    "Example: quasirl phase --diagram mdp --out quasirl-out/phase   "
    "(on a cluster: --scheduler tcp://127.0.0.1:8786; resumable: --store sweeps/)"
)
DIAGRAMS = ("mdp",)


def _sweep_kw(scheduler, dask, store, name):
    kw = {"progress": True}
    if scheduler or dask:
        kw["backend"] = "dask"
        kw["scheduler"] = scheduler or None
    if store is not None:
        kw["store"] = Path(store) / name
    return kw


def _mdp(out: Path, quick: bool, L: int, kw: dict) -> dict:
    from quasirl import phase, plots
    from quasirl._phase_sweep import netcdf_engine

    mu = np.linspace(0.04, 0.5, 12 if quick else 40)
    T = np.concatenate([[0.0], np.geomspace(0.02, 3.0, 16 if quick else 80)])
    ds = phase.mdp_phase_diagram(T, mu, L=L, **kw)
    ds.to_netcdf(out / "mdp_phase.nc", engine=netcdf_engine())
    plots.savefig(plots.plot_mdp_phase(ds), out / "mdp_phase.png")
    x = -L * np.log1p(-ds["mu"].values)
    rel = np.abs(ds["T_boundary"].values / ds["T_c"].values - 1)
    applies = (x >= 2.0) & np.isfinite(rel)
    return {
        "diagram": "mdp",
        "grid": f"{ds.sizes['mu']} mu x {ds.sizes['T']} T",
        "backend": ds.attrs["backend"],
        "theory": "T_c = dr / (-L ln(1 - mu))",
        "max_rel_dev": float(rel[applies].max()) if applies.any() else float("nan"),
        "where": "-L ln(1 - mu) >= 2",
        "max_abs_dev_mass_vs_closed_form": float(np.abs(ds["mass"] - ds["mass_theory"]).max()),
        "figures": ["mdp_phase.png"],
        "data": "mdp_phase.nc",
    }


def run_phase(out: Path, diagrams=("mdp",), quick: bool = False, scheduler: str | None = None,
              dask: bool = False, store: Path | None = None, L: int = 20) -> dict:
    """Compute the requested phase diagrams; write PNG + netCDF + summary.json under ``out``."""
    from quasirl._validate import QuasirlValueError

    unknown = [d for d in diagrams if d not in DIAGRAMS]
    if unknown:
        raise QuasirlValueError(f"--diagram must be among {', '.join(DIAGRAMS)} or all, "
                                f"got {unknown[0]!r}")
    if L < 2:
        raise QuasirlValueError(f"--L must be >= 2, got {L}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for d in diagrams:
        t0 = time.perf_counter()
        kw = _sweep_kw(scheduler, dask, store, d)
        row = {"mdp": _mdp}[d](out, quick, L, kw)
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
    summary = {"diagrams": rows, "scheduler": scheduler, "quick": quick}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
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
        for col in ("diagram", "grid", "backend", "max |rel. dev.|", "seconds"):
            table.add_column(col, justify="right")
        for r in s["diagrams"]:
            table.add_row(r["diagram"], r["grid"], r["backend"], f"{r['max_rel_dev']:.2%}",
                          f"{r['seconds']:.1f}")
        console = Console()
        console.print(table)
        for r in s["diagrams"]:
            console.print(f"{r['diagram']}: {r['theory']} (deviation taken where {r['where']})")
        console.print(f"figures and data in {out}/")
