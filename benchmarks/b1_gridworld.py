"""B1: deterministic gridworld, S = side^2 (10^6), A = 4, 32 temperatures, H = 1000.

forward:          qr.free_energy(mdp, T[32], H)                  (the public entry point)
forward-backward: value and gradient of sum_T F(T) with respect to the rewards, i.e. F and the
                  tempered transition occupancies dF/dR for every temperature (the two-message
                  computation behind occupancy / soft policies), through the public API.

The numpy reference runs the same algorithm (reference.forward / reference.forward_backward)
for ``numpy_steps`` steps; its time is scaled linearly to the full horizon (the per-step work
is identical every step) and the row says so. Both are checked against each other on the
numpy horizon (rel_err).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import quasirl as qr

from . import accounting as acc
from . import reference as ref
from ._harness import rel_err, time_jax, time_numpy, timed_row


def temperatures(n: int, dtype=np.float32):
    """n temperatures log-spaced over [0.01, 10] (reward scale 1, step cost 0.04)."""
    return np.geomspace(0.01, 10.0, n).astype(dtype)


def forward_rows(name, mdp, T, horizon, ceil, *, repeats, numpy_steps, numpy_repeats=2):
    """Time qr.free_energy at ``horizon`` and the numpy reference at ``numpy_steps``."""
    dt = np.dtype(mdp.prob.dtype)
    S = mdp.num_states
    E = acc.live_transitions(mdp)
    B = len(T)
    Tj = jnp.asarray(T)
    F, tq = time_jax(lambda: qr.free_energy(mdp, Tj, horizon), repeats=repeats,
                     compile=lambda: jax.jit(qr.free_energy, static_argnums=2).lower(
                         mdp, Tj, horizon).compile())
    hn = min(numpy_steps, horizon)
    tab = ref.pull_tables(mdp, dt)
    Fn, tn = time_numpy(lambda: ref.forward(tab, T, hn), repeats=numpy_repeats)
    Fq_short = F if hn == horizon else qr.free_energy(mdp, Tj, hn)
    counts = acc.scaled(acc.forward_step(S, E, B, dt.itemsize), horizon)
    return timed_row(
        name, "forward", tq, ceil, S=S, A=mdp.num_actions, E=E, J=int(mdp.pred.shape[1]),
        temps=B, horizon=horizon, dtype=str(dt), per_step_ms=tq["min_s"] / horizon * 1e3,
        numpy_s=tn["min_s"] * horizon / hn, numpy_steps=hn,
        numpy_median_s=tn["median_s"] * horizon / hn, rel_err=rel_err(Fq_short, Fn),
        F_min_T=float(np.asarray(F)[0]), **counts,
    )


def fb_rows(name, mdp, T, horizon, ceil, *, repeats, numpy_steps, numpy_repeats=2):
    """Time value_and_grad of sum_T F(T) w.r.t. the rewards, and the numpy forward-backward."""
    dt = np.dtype(mdp.prob.dtype)
    S = mdp.num_states
    E = acc.live_transitions(mdp)
    B = len(T)
    Tj = jnp.asarray(T)

    def total(r, m, t, h):  # the MDP is an argument: closed-over arrays would be constants
        return jnp.sum(qr.free_energy(m.replace(reward=r), t, h))

    vg = jax.jit(jax.value_and_grad(total), static_argnums=3)
    (_, g), tq = time_jax(lambda: vg(mdp.reward, mdp, Tj, horizon), repeats=repeats,
                          compile=lambda: vg.lower(mdp.reward, mdp, Tj, horizon).compile())
    hn = min(numpy_steps, horizon)
    tab = ref.pull_tables(mdp, dt)
    (_, gn), tn = time_numpy(lambda: ref.forward_backward(tab, T, hn, mdp.shape),
                             repeats=numpy_repeats)
    g_short = g if hn == horizon else vg(mdp.reward, mdp, Tj, hn)[1]
    counts = acc.scaled(acc.added(acc.forward_step(S, E, B, dt.itemsize),
                                  acc.backward_step(S, E, B, dt.itemsize)), horizon)
    return timed_row(
        name, "forward-backward", tq, ceil, S=S, A=mdp.num_actions, E=E,
        J=int(mdp.pred.shape[1]), temps=B, horizon=horizon, dtype=str(dt),
        per_step_ms=tq["min_s"] / horizon * 1e3, numpy_s=tn["min_s"] * horizon / hn,
        numpy_steps=hn, numpy_median_s=tn["median_s"] * horizon / hn,
        rel_err=rel_err(g_short, gn), occupancy_sum=float(np.sum(np.asarray(g))), **counts,
    )


def run(ceil, *, side=1000, temps=32, horizon=1000, fb_horizon=10, numpy_steps=10, repeats=3,
        dtype=np.float32, forward=True, fb=True):
    """B1 rows: forward at ``horizon`` and forward-backward at ``fb_horizon``."""
    mdp = qr.gridworld(side, side, dtype=dtype)
    T = temperatures(temps, dtype)
    rows = []
    if forward:
        rows.append(forward_rows("B1", mdp, T, horizon, ceil, repeats=repeats,
                                 numpy_steps=numpy_steps))
    if fb:
        rows.append(fb_rows("B1", mdp, T, fb_horizon, ceil, repeats=repeats,
                            numpy_steps=min(numpy_steps, fb_horizon)))
    return rows
