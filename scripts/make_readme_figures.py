"""Make the small PNGs shown in the README (docs/figures/), from the same code as the CLI.

    python scripts/make_readme_figures.py [--out docs/figures]

Each figure is computed at full resolution (float64, scoped to this script's computations) and
saved at a modest dpi so that every PNG stays under 200 KB. Takes about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MAX_BYTES = 200_000


def save(fig, path: Path, dpi: int = 100) -> Path:
    import matplotlib.pyplot as plt

    from quasirl.plots._style import RC

    path.parent.mkdir(parents=True, exist_ok=True)
    with plt.rc_context(RC):
        fig.savefig(path, dpi=dpi)
    plt.close(fig)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{path} is {size} bytes, over the {MAX_BYTES} limit")
    print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {size // 1000} KB")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    args = parser.parse_args(argv)

    import jax

    import quasirl as qr
    from quasirl import phase, plots
    from quasirl.cli.converge import _mass_band
    from quasirl.mdp import DEFAULT_LAYOUT

    out = args.out
    with jax.enable_x64(True):
        # 1. convergence on the demo gridworld: F(T) in its band, P*(T) in its band
        mdp = qr.gridworld(layout=DEFAULT_LAYOUT)
        H = 20
        T = np.concatenate([np.geomspace(10.0, 1e-3, 40), [0.0]])
        F = np.asarray(qr.free_energy(mdp, T, H))
        log_W = float(qr.evolve(mdp, 0.0, H).log_normaliser)
        save(plots.plot_free_energy(T, F, float(F[-1]), -log_W,
                                    title=f"Demo gridworld, H = {H}: F(T) -> max R"),
             out / "free_energy.png")
        band = _mass_band(mdp, H, T, log_W)
        save(plots.plot_mass_convergence(T, band["dp_mass"], band, rest=band["dp_rest"],
                                         title=f"Demo gridworld, H = {H}"),
             out / "optimal_path_mass.png")

        # 2. the three phase diagrams
        mu = np.linspace(0.04, 0.5, 40)
        Tm = np.concatenate([[0.0], np.geomspace(0.02, 3.0, 80)])
        save(plots.plot_mdp_phase(phase.mdp_phase_diagram(Tm, mu, L=20, progress=False)),
             out / "mdp_phase.png")
        eig = phase.eigen_phase_diagram(np.geomspace(0.01, 0.5, 240),
                                        sigma=np.geomspace(2.0, 1000.0, 24), L=20,
                                        backend="loop", progress=False)
        save(plots.plot_eigen_phase(eig), out / "eigen_phase.png")
        save(plots.plot_boost_phase(phase.boost_phase_diagrams(n=81)), out / "boost_phase.png")

    return 0


if __name__ == "__main__":
    sys.exit(main())
