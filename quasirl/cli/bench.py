"""`quasirl bench`: the benchmark runner (benchmarks/ in a source checkout) from the CLI."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

EXAMPLE = ("Example: quasirl bench --quick --only mdp,B4 --out quasirl-out/bench   "
           "(full run: quasirl bench; same as python -m benchmarks)")


def _runner():
    """benchmarks.runner from the checkout this quasirl was imported from (or the cwd)."""
    from .._validate import QuasirlValueError

    root = Path(__file__).resolve().parents[2]
    if (root / "benchmarks" / "runner.py").is_file() and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        from benchmarks import runner
    except ImportError as exc:
        raise QuasirlValueError(
            "quasirl bench needs the benchmarks/ folder of a source checkout "
            f"(looked in {root} and the current directory): {exc}"
        ) from exc
    return runner


def register(app: typer.Typer) -> None:
    @app.command("bench", epilog=EXAMPLE)
    def bench(
        out: Path = typer.Option(Path("quasirl-out/bench"), help="output folder"),
        quick: bool = typer.Option(False, help="tiny sizes, seconds (for tests)"),
        only: str = typer.Option("mdp,B1,B2,B3,B4,B5",
                                 help="comma-separated scenarios: mdp,B1,B2,B3,B4,B5"),
        repeats: int = typer.Option(0, help="timed repeats (0: the runner's default, 3)"),
        b1_horizon: int = typer.Option(0, help="B1 forward horizon (0: default 1000)"),
    ) -> None:
        """Benchmarks against fair numpy references and the measured roofline floor.

        Measures the device's bandwidth, matmul and exp rates, runs the scenarios (mdp: the
        500 x 500 gridworld; B1: 10^6 states, 32 temperatures, H = 1000, forward and
        forward-backward; B2: dense MDP; B3: Eigen's model; B4: max-plus vs exp-space kernels;
        B5: path enumeration vs DP) and writes bench.json and bench.png under --out, with a
        table of time, floor, fraction of floor and speed-up over numpy.
        """
        from .._validate import QuasirlValueError

        if repeats < 0:
            raise QuasirlValueError(f"repeats must be >= 0, got {repeats}")
        if b1_horizon < 0:
            raise QuasirlValueError(f"b1-horizon must be >= 0, got {b1_horizon}")
        runner = _runner()
        names = [s.strip() for s in only.split(",") if s.strip()]
        bad = [s for s in names if s not in runner.SCENARIOS]
        if bad:
            raise QuasirlValueError(
                f"--only: unknown scenario(s) {bad}; choose from {list(runner.SCENARIOS)}")
        argv = ["--out", str(out), "--only", ",".join(names)]
        if quick:
            argv.append("--quick")
        if repeats:
            argv += ["--repeats", str(repeats)]
        if b1_horizon:
            argv += ["--b1-horizon", str(b1_horizon)]
        status = runner.main(argv)
        if status:
            raise typer.Exit(status)
