"""Quasispecies dynamics on an MDP: forward populations, backward desirabilities, soft policy.

Forward step (docs/theory.md):
n_{t+1}(s') = sum_{s,a} n_t(s) policy(a|s) P(s'|s,a) exp(R(s,a,s')/T), n_0 = init,
sum_s n_H(s) = Z(T). The kernels carry u = T log n (value units, see ``quasirl.semiring``),
normalise each step by its maximum and add the shift to an accumulator, so F(T) = T log Z is a
sum of O(reward) numbers for every T >= 0 and the same code is the max-plus recursion at T = 0.

Jit policy: the private ``_*_batch`` functions are jitted (horizon static) and vmapped over a
1-D array of temperatures; public functions validate on concrete input, call them once, and
strip the batch axis for scalar T. Helpers are plain functions.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _kernels
from . import _validate as V
from ._mdp import MDP
from ._native import pull as _native_pull
from ._native import pull_ad as _native_ad
from ._pull_xla import Pull, forward_values, pull_tables
from .semiring import safe_log, smax, smax_weighted, tie_tolerance, value_weight


# --------------------------------------------------------------------------------------------
# tables shared by all temperatures (computed once per call, inside jit)
# --------------------------------------------------------------------------------------------
class _Push(NamedTuple):
    """Forward lists: outcome (a, k) of state s, flattened to [S, A*K]."""

    next: jax.Array  # [S, A*K]
    logw: jax.Array  # [S, A*K] log(policy * prob)
    rew: jax.Array  # [S, A*K]
    log_init: jax.Array


def _push_tables(mdp: MDP) -> _Push:
    S, A, K = mdp.shape
    logw = safe_log(mdp.policy[:, :, None] * mdp.prob).reshape(S, A * K)
    return _Push(
        mdp.next.reshape(S, A * K), logw, mdp.reward.reshape(S, A * K), safe_log(mdp.init)
    )


def _evolve_one(tab: Pull, T, steps: int, save_every: int | None):
    """Normalised population after ``steps`` steps, its log normaliser and F; T >= 0.

    At T = 0 the population is the T -> 0 limit: the states reached by max-return paths, in
    proportion to those paths' total weight, and the 'log normaliser' is the log of that total
    weight W (Z ~ W exp(F/T) as T -> 0).
    """
    c = value_weight(tab.logw, tab.rew, T)
    u0 = value_weight(tab.log_init, jnp.zeros_like(tab.log_init), T)
    lw_c = tab.logw
    is0 = T == 0

    def normalise(u, lW):
        m = jnp.max(u)
        return u - m, lW, m

    def step(carry, _):
        u, lW, acc = carry
        x = u[tab.src] + c
        u_soft = smax(x, T, axis=1)
        u_max, lW_new = smax_weighted(x, lW[tab.src] + lw_c, axis=1)
        u_new = jnp.where(is0, u_max, u_soft)
        u_new, lW_new, shift = normalise(u_new, lW_new)
        return (u_new, lW_new, acc + shift), None

    def population(carry):
        u, lW, acc = carry
        Ts = jnp.where(T > 0, T, 1.0)
        F_soft = acc + smax(u, T, axis=0)
        n_soft = jnp.exp((u - smax(u, T, axis=0)) / Ts)
        tol = tie_tolerance(jnp.abs(acc), u.dtype)
        top = u >= jnp.max(u) - tol
        lw_top = jnp.where(top, lW, -jnp.inf)
        logW = smax(lw_top, 1.0, axis=0)
        n_zero = jnp.exp(lw_top - logW)
        n = jnp.where(is0, n_zero, n_soft)
        logZ = jnp.where(is0, logW, F_soft / Ts)
        F = jnp.where(is0, acc + jnp.max(u), F_soft)
        return n, logZ, F

    u0n, lW0, m0 = normalise(u0, tab.log_init)
    carry = (u0n, lW0, m0)
    if save_every is None:
        carry, _ = jax.lax.scan(step, carry, None, length=steps)
        return (*population(carry), None)
    blocks, rest = divmod(steps, save_every)

    def block(carry, _):
        carry, _ = jax.lax.scan(step, carry, None, length=save_every)
        return carry, population(carry)[0]

    first = population(carry)[0]
    carry, traj = jax.lax.scan(block, carry, None, length=blocks)
    carry, _ = jax.lax.scan(step, carry, None, length=rest)
    traj = jnp.concatenate([first[None], traj], axis=0)
    return (*population(carry), traj)


def _backward(tab: _Push, T, horizon: int):
    """Desirabilities in value units: z[t, s] = T log sum over futures from (t, s).

    Also returns q[t, s, a*K+k] = value-unit weight of each outcome plus z[t+1] of its successor.
    """
    c = value_weight(tab.logw, tab.rew, T)  # [S, A*K]

    def step(z, _):
        q = c + z[tab.next]
        return smax(q, T, axis=1), (z, q)

    zH = jnp.zeros(tab.next.shape[0], c.dtype)
    z0, (zs, qs) = jax.lax.scan(step, zH, None, length=horizon, reverse=True)
    return z0, zs, qs


def _soft_policy_one(tab: _Push, T, horizon: int, A: int):
    S = tab.next.shape[0]
    _, _, qs = _backward(tab, T, horizon)  # qs[t, s, a*K+k]
    H = qs.shape[0]
    qa = smax(qs.reshape(H, S, A, -1), T, axis=3)  # [H, S, A]
    zt = smax(qa, T, axis=2)  # z_t(s) = smax_a q_t(s, a)
    Ts = jnp.where(T > 0, T, 1.0)
    soft = jnp.exp((qa - zt[..., None]) / Ts)
    tol = tie_tolerance(jnp.abs(zt), qa.dtype)[..., None]
    tied = (qa >= zt[..., None] - tol) & jnp.isfinite(qa)
    greedy = tied / jnp.sum(tied, axis=2, keepdims=True)
    return jnp.where(T > 0, soft, greedy)


# --------------------------------------------------------------------------------------------
# batched, jitted entry points (vmap over temperatures)
# --------------------------------------------------------------------------------------------
# The native CPU kernel (quasirl/_native/) runs the float32 forward recursion of sparse MDPs
# (at most _kernels.NATIVE_MAX_J entries enter a state) and its adjoint; the XLA path does
# everything else: float64, dense tables, T = 0 alone (its max-plus kernel has no exp to
# save), and second derivatives.
def _native_obstacles(mdp: MDP) -> tuple[str | None, ...]:
    dtype = np.dtype(mdp.prob.dtype)
    J = mdp.pred.shape[1]
    return (None if dtype == np.float32 else
            f"the native kernel runs float32 MDPs, this one is {dtype} (build it from "
            "float32 arrays or with dtype=np.float32, or use kernel='xla')",
            None if J <= _kernels.NATIVE_MAX_J else
            f"up to {_kernels.NATIVE_MAX_J} transitions may enter a state for the native "
            f"kernel, this MDP has {J} (dense: kernel='xla')")


def _one_eager_lane(mdp: MDP, t) -> bool:
    """One temperature, outside any transformation: "auto" runs XLA. The native kernel pads
    the temperatures to 16 (8) lanes and pays a fixed cost per step, so for a single
    temperature XLA's recursion is 2-3x faster per step at every size measured (64 to 62,500
    states, benchmarks/README.md); with derivatives (its own adjoint) or several temperatures
    the native kernel wins (3-5x at 32), and under jit/vmap/grad the lane count is not known
    here, so those keep the native path."""
    return t.shape[0] == 1 and V.is_concrete(mdp, t)


def _use_native(mdp: MDP, kernel: str, maxplus: bool, what: str) -> bool:
    """Resolve ``kernel`` for the free-energy recursion of ``mdp`` (before any trace)."""
    return _kernels.resolve(kernel, what, _native_obstacles(mdp), prefer_xla=maxplus)


def _native_inputs(mdp: MDP):
    """The native kernels' differentiable inputs: log init [S], log w and r [S, J] (the
    source indices, an integer table, come from ``pull_tables(mdp).src``; u_0 = T log init
    is formed in the kernel)."""
    tab = pull_tables(mdp)
    return tab.log_init, tab.logw, tab.rew


@partial(jax.custom_jvp, nondiff_argnums=(2,))
def _forward_native(mdp: MDP, T, horizon: int):
    li, logw, rew = _native_inputs(mdp)
    return _native_pull.pull_forward(li, pull_tables(mdp).src, logw, rew, T, horizon)


@_forward_native.defjvp
def _forward_native_jvp(horizon, primals, tangents):
    # The tangent is linear in the tangents of the kernel's inputs (log init, log w, r, T):
    # one primitive (quasirl._native.pull_ad) whose transpose, in reverse mode, runs the adjoint
    # kernel contracted with the cotangent of F.
    mdp, T = primals
    (li, logw, rew), (dli, dlogw, drew) = jax.jvp(_native_inputs, (mdp,), (tangents[0],))
    src = pull_tables(mdp).src
    F, token = _native_ad.keep(li, src, logw, rew, T, horizon)  # the forward, kept
    dF = _native_ad.tangent(li, src, logw, rew, T, token, drew, dlogw, tangents[1], dli,
                            horizon)
    return F, dF


@partial(jax.jit, static_argnames=("horizon", "maxplus", "native"))
def _free_energy_batch(mdp: MDP, T, horizon: int, maxplus: bool = False, native: bool = False):
    """F for a 1-D array of temperatures: the native kernel (``native``, resolved by the
    caller) or the XLA recursion (max-plus when every T is 0: ``maxplus``)."""
    if native:
        return _forward_native(mdp, T, horizon)
    return forward_values(pull_tables(mdp), T, horizon, maxplus)


@partial(jax.jit, static_argnames=("steps", "save_every"))
def _evolve_batch(mdp: MDP, T, steps: int, save_every: int | None):
    tab = pull_tables(mdp)
    return jax.vmap(lambda t: _evolve_one(tab, t, steps, save_every))(T)


@partial(jax.jit, static_argnames=("horizon",))
def _desirability_batch(mdp: MDP, T, horizon: int):
    tab = _push_tables(mdp)

    def one(t):
        z0, zs, _ = _backward(tab, t, horizon)
        return jnp.concatenate([z0[None], zs], axis=0)

    return jax.vmap(one)(T)


@partial(jax.jit, static_argnames=("horizon",))
def _soft_policy_batch(mdp: MDP, T, horizon: int):
    tab = _push_tables(mdp)
    A = mdp.num_actions
    return jax.vmap(lambda t: _soft_policy_one(tab, t, horizon, A))(T)


@partial(jax.jit, static_argnames=("horizon",))
def _bellman_batch(mdp: MDP, horizon: int):
    S, A, K = mdp.shape
    allowed = mdp.policy > 0

    def step(V, _):
        Q = jnp.sum(mdp.prob * (mdp.reward + V[mdp.next]), axis=2)
        return jnp.max(jnp.where(allowed, Q, -jnp.inf), axis=1), None

    V0, _ = jax.lax.scan(step, jnp.zeros(S, mdp.prob.dtype), None, length=horizon)
    return V0


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
def _check(mdp, horizon, name="horizon"):
    if not isinstance(mdp, MDP):
        raise V.QuasirlValueError(f"mdp must be a quasirl.MDP, got {type(mdp).__name__}")
    return V.check_horizon(horizon, name)


# Rounding: the kernels carry u = T log n, whose terms T log(policy * prob) are large at large T
# and cancel in F (the prior weights sum to 1, F tends to the prior-averaged return as T -> oo).
# Each step adds a rounding error of about eps * T * |log w|, so F is off by about
# eps(dtype) * T * Lambda, Lambda = max|log init| + H max|log(policy * prob)| (measured: 1/40 to
# 1/2 of that bound). Temperatures whose bound exceeds RANGE_TOL of the return scale
# max(1, H max|R|) are refused: with float32 that is T above ~1e3-1e4 on typical MDPs, with
# float64 ~5e8 times higher (docs/reliability.md).
RANGE_TOL = 1e-3


def temperature_limit(mdp: MDP, horizon: int) -> float:
    """The largest T at which F and its derivatives keep the rounding bound above (inf when
    the path prior is deterministic); needs concrete MDP arrays."""
    eps = float(np.finfo(np.dtype(mdp.prob.dtype)).eps)
    w = np.asarray(mdp.policy)[:, :, None] * np.asarray(mdp.prob)
    init = np.asarray(mdp.init)
    live = w > 0
    lw = float(np.max(-np.log(w[live]), initial=0.0))
    li = float(np.max(-np.log(init[init > 0]), initial=0.0))
    lam = li + horizon * lw
    rbar = float(np.max(np.abs(np.asarray(mdp.reward)[live]), initial=0.0))
    if lam == 0:
        return float("inf")
    return RANGE_TOL * max(1.0, horizon * rbar) / (eps * lam)


def _range_error(mdp, horizon: int, T: float, limit: float) -> str:
    dt = np.dtype(mdp.prob.dtype)
    return (f"T = {T:g} is beyond the range that {dt} computes this MDP at horizon {horizon}: "
            f"T <= {limit:.3g} (rounding grows as eps * T * |log prior weight|; at larger T, F "
            f"tends to the prior-averaged return)"
            + (". Use float64 (jax_enable_x64) for larger T" if dt != np.float64 else ""))


def _temperatures(mdp, T, horizon: int | None = None):
    """Checked temperatures as a 1-D array of the MDP's dtype, and whether T was batched.

    With ``horizon``, T beyond :func:`temperature_limit` is refused (at run time when T is
    traced and the MDP concrete; not at all when the MDP itself is traced)."""
    concrete_mdp = horizon is not None and V.is_concrete(
        mdp.prob, mdp.policy, mdp.init, mdp.reward)
    limit = None
    if concrete_mdp and not V.is_concrete(T):
        L = temperature_limit(mdp, horizon)
        limit = (L, _range_error(mdp, horizon, float("nan"), L).replace("T = nan", "a traced T")
                 + " (checked under jit at run time)")
    t, batched = V.check_temperature(T, limit=limit)
    if concrete_mdp and V.is_concrete(t):
        tmax = float(np.max(np.asarray(t, np.float64)))
        eps = float(np.finfo(np.dtype(mdp.prob.dtype)).eps)
        # cheap screen before looking at the arrays: |log w| <= 745 for any float
        if eps * tmax * (horizon + 1) * 745.0 > RANGE_TOL:
            L = temperature_limit(mdp, horizon)
            if tmax > L:
                raise V.QuasirlValueError(_range_error(mdp, horizon, tmax, L))
    t = jnp.atleast_1d(t).astype(mdp.prob.dtype)
    return t, batched


def _all_zero(t) -> bool:
    return V.is_concrete(t) and bool(np.all(np.asarray(t) == 0))


def free_energy(mdp: MDP, T, horizon: int, *, kernel: str = "auto"):
    """F(T) = T log Z(T), Z(T) = sum over paths of w_p exp(R_p / T); exact max-plus at T = 0.

    T is a scalar or a 1-D array (results on a leading axis); entries may be 0. At T = 0 the
    result is the maximum return over paths of positive weight. Differentiable in the rewards,
    init and policy at every T >= 0 (the gradient with respect to R is the expected transition
    occupancy under the tempered path distribution).

    kernel: "auto" (default) runs the native CPU kernel (float32, all temperatures in one call,
    its own adjoint for derivatives; :func:`quasirl.kernel_status`) for float32 MDPs with at
    most 64 transitions into a state, on a CPU backend, unless every T is 0 (then XLA's
    max-plus recursion) or the call is one temperature outside any JAX transformation (then
    XLA's recursion, 2-3x faster for a single lane); else the XLA recursion. "native" forces
    the native kernel (a QuasirlValueError says why where it cannot run), "xla" the XLA
    recursion (float32 or float64). Both agree to float32 rounding, under jit, vmap and every
    order of derivative.
    """
    horizon = _check(mdp, horizon)
    t, batched = _temperatures(mdp, T, horizon)
    maxplus = _all_zero(t)
    native = _use_native(mdp, kernel, maxplus or _one_eager_lane(mdp, t), "free_energy")
    out = _free_energy_batch(mdp, t, horizon, maxplus=maxplus and not native, native=native)
    return out if batched else out[0]


def log_partition(mdp: MDP, T, horizon: int, *, kernel: str = "auto"):
    """log Z(T) for T > 0 (scalar or 1-D array); ``kernel`` as for :func:`free_energy`."""
    horizon = _check(mdp, horizon)
    t, batched = _temperatures(mdp, T, horizon)
    if V.is_concrete(t) and bool(np.any(np.asarray(t) == 0)):
        raise V.QuasirlValueError(
            "log_partition needs T > 0 (log Z diverges as T -> 0); use free_energy at T = 0"
        )
    native = _use_native(mdp, kernel, _one_eager_lane(mdp, t), "log_partition")
    out = _free_energy_batch(mdp, t, horizon, native=native) / t
    return out if batched else out[0]


def optimal_value(mdp: MDP, horizon: int):
    """max over paths with positive weight of the return: F(0), by the max-plus recursion."""
    return free_energy(mdp, 0.0, horizon)


class Evolution(NamedTuple):
    """Result of :func:`evolve` (leading temperature axis when T is an array).

    population: normalised population n_steps / sum(n_steps)  [S]
    log_normaliser: log Z = log sum n_steps for T > 0; at T = 0 the log of the total weight W of
        the max-return paths (Z ~ W exp(value / T) as T -> 0)
    value: T log Z (the free energy; the max return at T = 0)
    trajectory: populations at steps 0, k, 2k, ... when save_every = k, else None
    """

    population: jax.Array
    log_normaliser: jax.Array
    value: jax.Array
    trajectory: jax.Array | None


def evolve(mdp: MDP, T, steps: int, save_every: int | None = None, *,
           kernel: str = "auto") -> Evolution:
    """Iterate the quasispecies equation for ``steps`` steps from n_0 = init.

    ``save_every=k`` keeps the populations every k steps (memory grows as steps/k * S); the
    default keeps only the final one. ``kernel``: "auto" or "xla" (the XLA recursion); there
    is no native kernel for populations, so "native" raises a QuasirlValueError.
    """
    steps = _check(mdp, steps, "steps")
    _kernels.xla_only(kernel, "evolve")
    if save_every is not None:
        save_every = V.check_horizon(save_every, "save_every")
        if save_every == 0:
            raise V.QuasirlValueError("save_every must be >= 1 (or None), got 0")
    t, batched = _temperatures(mdp, T, steps)
    n, logZ, F, traj = _evolve_batch(mdp, t, steps, save_every)
    if not batched:
        n, logZ, F = n[0], logZ[0], F[0]
        traj = None if traj is None else traj[0]
    return Evolution(n, logZ, F, traj)


def desirability(mdp: MDP, T, horizon: int):
    """Backward desirabilities in value units, [H+1, S]: T log of the tempered weight of all
    futures from state s at time t (the max-plus value-to-go at T = 0); row H is 0."""
    horizon = _check(mdp, horizon)
    t, batched = _temperatures(mdp, T, horizon)
    out = _desirability_batch(mdp, t, horizon)
    return out if batched else out[0]


def soft_policy(mdp: MDP, T, horizon: int, *, kernel: str = "auto"):
    """pi_t(a|s), [H, S, A]: the fraction of the surviving lineage at (t, s) that takes a.

    Forward population times backward desirability, normalised over actions; at T = 0 the
    greedy finite-horizon max-plus policy with ties split evenly. (As T -> 0+ the soft policy
    tends to the greedy one wherever the best action is unique; at exact ties its limit splits
    in proportion to the weight of each action's optimal continuations, while T = 0 splits
    evenly, as a Bellman controller would.) ``kernel``: "auto" or "xla"; there is no native
    kernel for the backward recursion, so "native" raises a QuasirlValueError.
    """
    horizon = _check(mdp, horizon)
    _kernels.xla_only(kernel, "soft_policy")
    t, batched = _temperatures(mdp, T, horizon)
    if horizon == 0:  # no decisions: an empty [0, S, A] table
        S, A, _ = mdp.shape
        out = jnp.zeros((t.shape[0], 0, S, A), mdp.prob.dtype)
    else:
        out = _soft_policy_batch(mdp, t, horizon)
    return out if batched else out[0]


def bellman_value(mdp: MDP, horizon: int, per_state: bool = False):
    """Expectimax finite-horizon Bellman value: V_t(s) = max_a sum_s' P (R + V_{t+1}(s')).

    Actions range over the support of the exploration policy. Returns max over start states in
    the support of init of V_0 (the same treatment of the start as :func:`optimal_value`, so the
    two differ only through transition noise), or V_0 [S] with ``per_state=True``.
    """
    horizon = _check(mdp, horizon)
    V0 = _bellman_batch(mdp, horizon)
    if per_state:
        return V0
    return jnp.max(jnp.where(mdp.init > 0, V0, -jnp.inf))


def optimism_gap(mdp: MDP, horizon: int):
    """optimal_value - bellman_value >= 0: the optimism of selection / RL-as-inference.

    Zero for deterministic MDPs; positive when the population's T -> 0 limit relies on lucky
    outcomes of stochastic transitions that a controller cannot choose.
    """
    return optimal_value(mdp, horizon) - bellman_value(mdp, horizon)


def _log_optimal_weight(tab: Pull, horizon: int):
    """log W: the total weight of the max-return paths (ties within
    :func:`quasirl.semiring.tie_tolerance`), by the max-plus recursion with weights. The same
    quantity as :func:`_evolve_one`'s T = 0 branch, without its T > 0 branch: this is the
    program that :func:`_occupancy_limit` differentiates, so it is kept minimal."""
    c = value_weight(tab.logw, tab.rew, jnp.zeros((), tab.logw.dtype))

    def step(carry, _):
        u, lW, acc = carry
        u, lW = smax_weighted(u[tab.src] + c, lW[tab.src] + tab.logw, axis=1)
        m = jnp.max(u)
        return (u - m, lW, acc + m), None

    u0 = value_weight(tab.log_init, jnp.zeros_like(tab.log_init), jnp.zeros((), c.dtype))
    m0 = jnp.max(u0)
    (u, lW, acc), _ = jax.lax.scan(step, (u0 - m0, tab.log_init, m0), None, length=horizon)
    top = u >= jnp.max(u) - tie_tolerance(jnp.abs(acc), u.dtype)
    return smax(jnp.where(top, lW, -jnp.inf), 1.0, axis=0)


@partial(jax.jit, static_argnames=("horizon",))
def _occupancy_limit(mdp: MDP, horizon: int):
    """The T -> 0+ limit of the occupancy: uses of each outcome on the max-return paths, each
    path counted in proportion to its weight w_p. It is d log W / d log w, W the total weight
    of the optimal paths (the max-plus recursion with weights, quasirl.semiring.smax_weighted):
    at T = 0 the values u do not depend on log w, so only the weights carry the derivative."""
    leaves, treedef = jax.tree_util.tree_flatten(mdp)
    slot = MDP.__slots__.index("prob")

    def logW(delta):
        scaled = [*leaves]
        scaled[slot] = mdp.prob * jnp.exp(delta)
        return _log_optimal_weight(pull_tables(jax.tree_util.tree_unflatten(treedef, scaled)),
                                   horizon)

    return jax.grad(logW)(jnp.zeros_like(mdp.prob))


@partial(jax.jit, static_argnames=("horizon", "native"))
def _occupancy_batch(mdp: MDP, t, horizon: int, native: bool):
    """dF/dR at the temperatures t (one lane): one compiled program for the forward pass and
    its adjoint (under an outer jit the two are compiled once, together)."""

    def F(r):  # the soft recursion at every T (its T = 0 lanes are the max)
        return _free_energy_batch(mdp.replace(reward=r), t, horizon, native=native)[0]

    return jax.grad(F)(mdp.reward)


def occupancy(mdp: MDP, T, horizon: int, *, kernel: str = "auto"):
    """Expected number of uses of each transition outcome, [S, A, K], under the tempered path
    distribution: dF/dR for T > 0 (scalar T only). ``kernel`` as for :func:`free_energy` (the
    native path is its adjoint kernel).

    At T = 0 it is the T -> 0+ limit: the max-return paths (ties within
    :func:`quasirl.semiring.tie_tolerance`), each counted in proportion to its weight, so it
    equals ``paths.path_flow(mdp, 0.0, H).sum(0)``. (The gradient of ``free_energy`` at T = 0 is
    instead a subgradient of the max: with tied optimal paths it splits evenly at each tie of
    the recursion, and can differ from this limit.)"""
    horizon = _check(mdp, horizon)
    t, batched = _temperatures(mdp, T, horizon)
    if batched:
        raise V.QuasirlValueError("occupancy takes a scalar T")
    if _all_zero(t):
        if _kernels.check_kernel(kernel) == "native":
            raise V.QuasirlValueError(
                "occupancy: kernel='native' cannot run at T = 0: the T -> 0+ limit is computed "
                "by the XLA max-plus recursion with weights (use kernel='auto' or 'xla')")
        return _occupancy_limit(mdp, horizon)
    native = _use_native(mdp, kernel, False, "occupancy")
    return _occupancy_batch(mdp, t, horizon, native)
