"""The core benchmark: deterministic 500 x 500 gridworld (S = 250,000), A = 4, 32 temperatures,
H = 1000, float32: qr.free_energy against the fair vectorised numpy reference in the same run,
with the fraction of the measured memory-bandwidth floor. Targets: >= 3x numpy, >= 30% of the
bandwidth floor (CPU).

    python -m benchmarks.bench_mdp                 # full size (a few minutes on 2 cores)
    python -m benchmarks.bench_mdp --quick         # seconds
    python -m benchmarks --only mdp                # the same, through the runner
"""

from __future__ import annotations

import numpy as np

from .b1_gridworld import forward_rows, temperatures


def run(ceil, *, side=500, temps=32, horizon=1000, numpy_steps=20, repeats=3,
        dtype=np.float32):
    import quasirl as qr

    mdp = qr.gridworld(side, side, dtype=dtype)
    T = temperatures(temps, dtype)
    row = forward_rows("mdp", mdp, T, horizon, ceil, repeats=repeats, numpy_steps=numpy_steps)
    row["targets"] = {"speedup_min": 3.0, "frac_bw_floor_min": 0.30}
    row["targets_met"] = {"speedup": row["speedup"] >= 3.0,
                          "frac_bw_floor": row["frac_bw_floor"] >= 0.30}
    return [row]


if __name__ == "__main__":
    import sys

    from .runner import main

    sys.exit(main(["--only", "mdp", *sys.argv[1:]]))
