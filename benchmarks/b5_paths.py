"""B5: explicit path enumeration against dynamic programming: the crossover horizon.

qr.paths.path_integral enumerates every path of positive weight (A^H of them for a
deterministic gridworld with a point start) and sums w_p exp(R_p / T); qr.free_energy gets the
same number by the forward recursion in O(H S J) work. For each H both are timed warm (compile
apart) and checked against each other; the crossover is the smallest H from which enumeration
is slower (1 when DP is faster at every H). Rows: DP time in ``min_s``, the enumeration time
in ``numpy_s`` (the reference of this scenario), so ``speedup`` is DP's advantage.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import quasirl as qr

from . import accounting as acc
from ._harness import rel_err, time_jax, timed_row


def run(ceil, *, sides=(5, 300), max_horizon=12, T=0.5, repeats=3, limit=2_000_000):
    """Rows per (grid side, H). Two worlds: a 5 x 5 grid, where both methods cost their fixed
    overhead and DP wins from H = 1, and a 300 x 300 grid (S = 9e4) with a point start, where
    enumeration only touches the few states reachable in H steps while DP sweeps all S every
    step, so enumeration wins at short horizons and the crossover is a genuine A^H vs H S J one.
    """
    try:
        from quasirl import paths
    except ImportError:  # the paths issue's modules before quasirl/paths.py re-exports them
        from types import SimpleNamespace

        from quasirl import _paths_dp, _paths_graph

        paths = SimpleNamespace(count_paths=_paths_graph.count_paths,
                                path_integral=_paths_dp.path_integral)
    rows = []
    for side in sides:
        rows += _one_world(ceil, paths, side, max_horizon, T, repeats, limit)
    return rows


def _one_world(ceil, paths, side, max_horizon, T, repeats, limit):
    mdp = qr.gridworld(side, side, dtype=np.float32)
    S, E = mdp.num_states, acc.live_transitions(mdp)
    Tj = jnp.asarray(T, jnp.float32)
    rows, crossover = [], None
    for H in range(1, max_horizon + 1):
        n_paths = float(paths.count_paths(mdp, H))
        if n_paths > limit:
            break
        Fd, td = time_jax(lambda H=H: qr.free_energy(mdp, Tj, H), repeats=repeats)
        Fe, te = time_jax(lambda H=H: paths.path_integral(mdp, Tj, H, limit=limit),
                          repeats=repeats)
        if crossover is None and te["min_s"] > td["min_s"]:
            crossover = H
        rows.append(timed_row(
            "B5", f"{side}x{side} H = {H} ({n_paths:.3g} paths)", td, ceil, S=S, E=E,
            horizon=H, temps=1, n_paths=n_paths, numpy_s=te["min_s"],
            enum_median_s=te["median_s"], enum_compile_s=te["compile_s"],
            reference="explicit path enumeration", rel_err=rel_err(Fd, Fe), dtype="float32",
            **acc.scaled(acc.forward_step(S, E, 1, 4), H),
        ))
    for r in rows:
        r["crossover_horizon"] = crossover
    return rows
