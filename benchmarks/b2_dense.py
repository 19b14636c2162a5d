"""B2: dense stochastic MDP, S = 4096, A = 4 (every outcome possible: K = S), 16 temperatures.

Every state has S * A = 16384 incoming transitions, so a step touches S^2 A = 6.7e7 entries
per temperature: the kernel is bound by exp throughput (one exp per entry and temperature) and
by reading the dense structure once per step. qr.free_energy streams the reverse lists in blocks
of 16 columns (no [S, J, B] array); the numpy reference gathers blocks of rows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import quasirl as qr

from . import accounting as acc
from . import reference as ref
from ._harness import rel_err, time_jax, time_numpy, timed_row


def dense_mdp(S: int, A: int, seed: int = 0, dtype=np.float32):
    """Dirichlet(1) rows over all S successors, N(0, 1) rewards R[S, A, S']."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(S), size=(S, A))
    P = np.maximum(P, 1e-12)  # every outcome live (K = S), rows renormalised below
    P /= P.sum(-1, keepdims=True)
    R = rng.standard_normal((S, A, S))
    return qr.MDP(P.astype(dtype), R.astype(dtype))


def run(ceil, *, S=4096, A=4, temps=16, horizon=10, numpy_steps=2, repeats=3, seed=0):
    mdp = dense_mdp(S, A, seed)
    T = np.geomspace(0.01, 10.0, temps).astype(np.float32)
    Tj = jnp.asarray(T)
    E = acc.live_transitions(mdp)
    F, t = time_jax(lambda: qr.free_energy(mdp, Tj, horizon), repeats=repeats,
                    compile=lambda: jax.jit(qr.free_energy, static_argnums=2).lower(
                        mdp, Tj, horizon).compile())
    hn = min(numpy_steps, horizon)
    tab = ref.pull_tables(mdp, np.float32)
    Fn, tn = time_numpy(lambda: ref.forward(tab, T, hn), repeats=2)
    Fq = F if hn == horizon else qr.free_energy(mdp, Tj, hn)
    return [timed_row(
        "B2", "forward dense", t, ceil, S=S, A=A, E=E, J=int(mdp.pred.shape[1]), temps=temps,
        horizon=horizon, dtype="float32", per_step_ms=t["min_s"] / horizon * 1e3,
        numpy_s=tn["min_s"] * horizon / hn, numpy_steps=hn, rel_err=rel_err(Fq, Fn),
        **acc.scaled(acc.forward_step(S, E, temps, 4), horizon),
    )]
