"""B4: the T = 0 max-plus kernel, the log-space kernel and the exp-space (linear) kernel.

The exp-space kernel is the textbook way to iterate n' = sum_j n(src_j) w_j exp(r_j / T): keep the
transition weights W_j = w_j exp((r_j - r_max) / T) in linear space (shifted by the largest
reward so nothing overflows), multiply-add, renormalise every step and carry log of the
normaliser. It needs no exp per step, but in float32 every weight with

    (r_max - r_j) / T - log w_j  >  -log(FLT_MIN) = 87.3

is 0 (below the smallest normal float; XLA flushes denormals), so the paths through those
transitions vanish: predicted crossover T_c = (reward range) / (87.3 - log A) for a uniform
policy. quasirl never iterates in linear space: the log-space kernel carries u = T log n and is
exact for every T > 0, and at T = 0 the max-plus kernel (no exp at all) gives max R exactly.

Two parts:
  accuracy: a gridworld whose goal is reachable within H (rewards multiples of 2^-4, exact in
            float32); F(T) from each kernel against a float64 numpy log-space reference over a
            sweep of T; the largest T where exp-space is not finite, and where its error exceeds
            1e-3, against the prediction; max-plus against the closed-form max R (bit for bit),
            and the log-space F(T) inside its bound 0 <= F(0) - F(T) <= T H log A below T_c.
  speed:    the large gridworld, B temperatures all above T_c, all below T_c, and all 0:
            each kernel's time per step on both sides.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

import quasirl as qr
from quasirl._pull_xla import pull_tables

from . import accounting as acc
from . import reference as ref
from ._harness import rel_err, time_jax, time_numpy, timed_row

FLT_MIN_LOG = float(-np.log(np.finfo(np.float32).tiny))  # 87.34


@partial(jax.jit, static_argnames=("horizon",))
def expspace_free_energy(mdp, T, horizon: int):
    """F(T) by the linear-space recursion with shifted weights (the kernel that underflows).

    n [S, B], W_j [S, B] = w_j exp((r_j - r_max) / T) for each of the J in-degree slots;
    n' = sum_j n(src_j) W_j, normalised by its maximum each step; F = T (log-normalisers +
    log sum n_H) + H r_max.
    """
    tab = pull_tables(mdp)
    Tb = T[None, :]
    live = tab.logw > -jnp.inf
    rmax = jnp.max(jnp.where(live, tab.rew, -jnp.inf))
    J = tab.src.shape[1]
    W = [jnp.where(live[:, j, None],
                   jnp.exp(jnp.where(live[:, j, None], tab.logw[:, j, None], 0.0)
                           + (tab.rew[:, j, None] - rmax) / Tb), 0.0) for j in range(J)]
    n0 = jnp.broadcast_to(jnp.exp(tab.log_init)[:, None], (tab.src.shape[0], T.shape[0]))

    def step(carry, _):
        n, logacc = carry
        n = sum(n[tab.src[:, j]] * W[j] for j in range(J))
        m = jnp.max(n, axis=0)
        return (n / m[None, :], logacc + jnp.log(m)), None

    m0 = jnp.max(n0, axis=0)
    (n, logacc), _ = jax.lax.scan(step, (n0 / m0[None, :], jnp.log(m0)), None, length=horizon)
    return T * (logacc + jnp.log(jnp.sum(n, axis=0))) + horizon * rmax


def numpy_expspace(tab: ref.Tables, T, horizon: int):
    """The same linear-space recursion in numpy (the fair reference for its speed)."""
    dt = tab.logw.dtype
    T = np.asarray(T, dt)[None, :]
    live = np.isfinite(tab.logw)
    rmax = tab.rew[live].max()
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        W = np.where(live[..., None], np.exp(np.where(live, tab.logw, 0)[..., None]
                                             + (tab.rew[..., None] - rmax) / T), 0).astype(dt)
        n = np.broadcast_to(np.exp(tab.log_init)[:, None], (tab.src.shape[0], T.shape[1]))
        m = n.max(axis=0)
        n = n / m
        logacc = np.log(m).astype(np.float64)
        for _ in range(horizon):
            x = n[tab.src]
            x *= W
            n = x.sum(axis=1)
            m = n.max(axis=0)
            n /= m
            logacc += np.log(m)
        return (T[0] * (logacc + np.log(n.sum(axis=0))) + horizon * rmax).astype(dt)


def accuracy(side: int, horizon: int, n_temps: int = 41) -> dict:
    """F(T) of each kernel against a float64 reference over a T sweep; the crossover."""
    # rewards exactly representable in float32 (multiples of 2^-4), so every path return is an
    # exact float32 sum and "exact" for the max-plus kernel means bit for bit
    step_cost, goal = 0.0625, 1.0
    m32 = qr.gridworld(side, side, step_cost=step_cost, goal_reward=goal, dtype=np.float32)
    m64 = qr.gridworld(side, side, step_cost=step_cost, goal_reward=goal, dtype=np.float64)
    d = 2 * (side - 1)
    if d > horizon:
        raise ValueError(f"goal at distance {d} is not reachable within H = {horizon}")
    A = m32.num_actions
    rng = float(goal)  # rewards in {-step_cost, goal - step_cost, 0}: range = goal
    predicted = rng / (FLT_MIN_LOG - np.log(A))
    T = np.geomspace(predicted / 20, predicted * 20, n_temps).astype(np.float32)
    F64 = ref.forward(ref.pull_tables(m64, np.float64), T.astype(np.float64), horizon)
    F_log = np.asarray(qr.free_energy(m32, jnp.asarray(T), horizon), np.float64)
    F_exp = np.asarray(expspace_free_energy(m32, jnp.asarray(T), horizon), np.float64)
    with np.errstate(invalid="ignore"):
        err_exp = np.where(np.isfinite(F_exp), np.abs(F_exp - F64) / np.abs(F64), np.inf)
    err_log = np.abs(F_log - F64) / np.abs(F64)
    bad = err_exp > 1e-3
    measured = float(T[bad].max()) if bad.any() else None
    nonfinite = ~np.isfinite(F_exp)
    F0 = float(qr.optimal_value(m32, horizon))
    F0_closed = max(goal - step_cost * d, -step_cost * horizon)
    gap = F0 - F_log
    bound = T.astype(np.float64) * horizon * np.log(A)
    below = T < predicted
    return {
        "side": side, "horizon": horizon, "reward_range": rng, "flt_min_log": FLT_MIN_LOG,
        "T_c_predicted": predicted, "T_c_measured": measured,
        "T_c_nonfinite": float(T[nonfinite].max()) if nonfinite.any() else None,
        "exp_space_first_bad_to_last_good_ratio": (
            float(T[~bad & (T > measured)].min() / measured) if measured else None),
        "maxplus_F0": F0, "maxplus_closed_form": F0_closed,
        "maxplus_abs_err": abs(F0 - F0_closed),
        "maxplus_abs_err_ulps": abs(F0 - F0_closed) / abs(float(np.spacing(np.float32(F0_closed)))),
        "log_space_max_rel_err": float(err_log.max()),
        "log_space_in_bound_below_T_c": bool(np.all((gap[below] >= -1e-5)
                                                   & (gap[below] <= bound[below] + 1e-5))),
        "T": T.tolist(), "F_ref64": F64.tolist(), "F_log32": F_log.tolist(),
        "F_exp32": [x if np.isfinite(x) else None for x in F_exp.tolist()],
        "err_exp": [x if np.isfinite(x) else None for x in err_exp.tolist()],
        "err_log": err_log.tolist(),
    }


def run(ceil, *, side=500, temps=32, horizon=200, numpy_steps=5, repeats=3,
        acc_side=None, acc_horizon=None):
    acc_side = acc_side or max(min(side // 10, 50), 6)
    acc_horizon = acc_horizon or max(2 * (acc_side - 1) + 20, horizon // 2)
    info = accuracy(acc_side, acc_horizon)
    Tc = info["T_c_predicted"]
    mdp = qr.gridworld(side, side, dtype=np.float32)
    S, E = mdp.num_states, acc.live_transitions(mdp)
    tab = ref.pull_tables(mdp, np.float32)
    hn = min(numpy_steps, horizon)
    sides = {
        "above T_c": np.geomspace(2 * Tc, 100 * Tc, temps).astype(np.float32),
        "below T_c": np.geomspace(Tc / 100, Tc / 2, temps).astype(np.float32),
    }
    rows = []
    common = dict(S=S, E=E, temps=temps, horizon=horizon, dtype="float32", T_c=Tc)
    for label, T in sides.items():
        Tj = jnp.asarray(T)
        _, t = time_jax(lambda Tj=Tj: qr.free_energy(mdp, Tj, horizon), repeats=repeats,
                        compile=lambda Tj=Tj: jax.jit(qr.free_energy, static_argnums=2).lower(
                            mdp, Tj, horizon).compile())
        _, tn = time_numpy(lambda T=T: ref.forward(tab, T, hn), repeats=2)
        rows.append(timed_row("B4", f"log-space {label}", t, ceil, **common,
                              per_step_ms=t["min_s"] / horizon * 1e3,
                              numpy_s=tn["min_s"] * horizon / hn, numpy_steps=hn,
                              **acc.scaled(acc.forward_step(S, E, temps, 4), horizon)))
        _, t = time_jax(lambda Tj=Tj: expspace_free_energy(mdp, Tj, horizon), repeats=repeats,
                        compile=lambda Tj=Tj: expspace_free_energy.lower(mdp, Tj,
                                                                         horizon).compile())
        _, tn = time_numpy(lambda T=T: numpy_expspace(tab, T, hn), repeats=2)
        rows.append(timed_row("B4", f"exp-space {label}", t, ceil, **common,
                              per_step_ms=t["min_s"] / horizon * 1e3,
                              numpy_s=tn["min_s"] * horizon / hn, numpy_steps=hn,
                              **acc.scaled(acc.expspace_step(S, E, temps, 4), horizon)))
    Z = jnp.zeros(temps, jnp.float32)
    # (no ahead-of-time compile here: under an outer jit T is traced, so free_energy could not
    # see that every T is 0 and would compile the log-space program instead)
    F0, t = time_jax(lambda: qr.free_energy(mdp, Z, horizon), repeats=repeats)
    F0n, tn = time_numpy(lambda: ref.maxplus(tab, hn), repeats=2)
    F0_short = qr.free_energy(mdp, Z[:1], hn)
    row = timed_row("B4", "max-plus T = 0", t, ceil, **common,
                    per_step_ms=t["min_s"] / horizon * 1e3,
                    numpy_s=tn["min_s"] * temps * horizon / hn, numpy_steps=hn,
                    numpy_note="numpy max-plus runs one temperature; time x temps",
                    rel_err=rel_err(F0_short[0], F0n),
                    **acc.scaled({k: v * temps for k, v in
                                  acc.maxplus_step(S, E, 4).items()}, horizon))
    row["bytes"] = (2 * temps * S * 4 + E * 8) * horizon  # structure read once for all B
    rows.append(row)
    for r in rows:
        from ._harness import roofline

        roofline(r, ceil)
        r["ns_per_state_temp_step"] = r["min_s"] / (S * temps * horizon) * 1e9
    rows[0]["accuracy"] = info
    return rows
