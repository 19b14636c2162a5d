"""The MDP phase diagram: optimal-path mass over (T, per-step exploration noise mu).

Model (the "route chain"). States 0..L-1 lie on a route, g = L is the goal and o = L+1 an
off-route sink. In a route state i, action 0 moves forward to i+1 (reward dr on entering g,
0 otherwise) and each of the other A-1 actions leaves the route for o (reward 0); g and o are
absorbing with reward 0. The exploration policy on the route takes the forward action with
probability 1 - mu and each other action with mu/(A-1): mu is the per-step exploration noise
(the mutation rate). Start in state 0; horizon H >= L.

Derivation. Exactly one path has the maximal return dr: the one that stays on the route for L
steps, with weight w = (1-mu)^L. Every other path falls off the route and returns 0; their
weights add up to 1 - w. So Z(T) = w e^{dr/T} + (1 - w) and the optimal-path mass (the
tempered probability of the route, = the fraction of the final population at g) is

    P*(T, mu) = w e^{dr/T} / (w e^{dr/T} + 1 - w).

The ordered phase P* > 1/2 ends where w e^{dr/T} = 1 - w. On a long route, w << 1, this is
w e^{dr/T} = 1: the selective advantage sigma = e^{dr/T} of the route balances its mutational
loss (1-mu)^L, Eigen's error threshold sigma (1-mu)^L = 1 with sigma = e^{dr/T}. Hence

    T_c(mu) = dr / (-L ln(1 - mu))          (equivalently mu_c(T) = 1 - e^{-dr/(L T)}).

The exact crossing is T*(mu) = dr / (-L ln(1-mu) + ln(1 - w)); T_c / T* = 1 + ln(1-w)/(-ln w),
so the prediction is low by less than 10% once -L ln(1-mu) >= 2 (roughly mu L >= 2), and by
less than 1% once -L ln(1-mu) >= 4.6. Reference: M. Eigen, Naturwissenschaften 58, 465 (1971)
for the threshold; the MDP reading is quasirl's (docs/theory.md).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from . import _validate as V
from ._mdp import MDP

# Memory of the route chain. The off-route sink is entered from every route state, so the
# padded reverse lists (``MDP.pred``) have J = L (A - 1) + A columns and (L + 2) J entries:
# quadratic in L. Bytes per entry: the table and its JAX copy while building (8), the pull
# tables of a sweep (src, log w, r: 20, rounded up), and, per grid point evaluated at once (a
# vmapped chunk), the terms of one step (~55 measured as peak RSS at L = 100..400 with 4..405
# points per chunk, rounded up).
_BUILD_BYTES = 8
_SWEEP_BYTES = 32
_POINT_BYTES = 64


def route_memory(L: int, n_actions: int = 2, points: int = 0) -> int:
    """Estimated peak bytes of :func:`route_chain` alone (``points`` = 0) or of a phase-diagram
    sweep over it that evaluates ``points`` grid points at once (rough: within ~2x)."""
    entries = (L + 2) * (L * (n_actions - 1) + n_actions)
    per = _BUILD_BYTES + (_SWEEP_BYTES + _POINT_BYTES * points if points else 0)
    return entries * per


def _points_at_once(n_points: int, sweep_kw: dict) -> int:
    """How many grid points :func:`quasirl.phase.sweep` evaluates at once in this process
    (0 when they run on a remote Dask cluster, whose memory is not this machine's)."""
    from ._phase_sweep import default_chunk_size

    chunk = sweep_kw.get("chunk_size")
    if not V.is_int(chunk) or chunk < 1:
        chunk = default_chunk_size(n_points)  # (a bad chunk_size is refused by sweep)
    chunk = min(chunk, n_points)
    backend, scheduler = sweep_kw.get("backend", "auto"), sweep_kw.get("scheduler")
    if scheduler is not None and scheduler != "local":
        return 0
    if backend == "loop":
        return 1
    if backend == "dask" or scheduler == "local":
        workers = sweep_kw.get("n_workers", 1) * sweep_kw.get("threads_per_worker", 2)
        return chunk * workers if isinstance(workers, int) else chunk
    return chunk


def check_phase_memory(L: int, n_points: int, n_actions: int = 2, sweep_kw=None,
                       option: str = "L") -> None:
    """Refuse up front (:func:`quasirl._validate.check_memory`, naming ``option``) an MDP phase
    diagram on a route of length L over ``n_points`` grid points, swept with ``sweep_kw``, that
    would not fit in memory."""
    points = _points_at_once(n_points, dict(sweep_kw or {}))
    V.check_memory(option, route_memory(L, n_actions, points),
                   f"the MDP phase diagram at L = {L:,} (route-chain tables of (L+2) x "
                   f"(L(A-1)+A) entries, {points:,} grid points at once)")


def _check_L(L, name="L"):
    L = V.check_horizon(L, name)
    if L < 1:
        raise V.QuasirlValueError(f"{name} must be >= 1, got {L}")
    return L


def _check_actions(n_actions):
    n = V.check_horizon(n_actions, "n_actions")
    if n < 2:
        raise V.QuasirlValueError(f"n_actions must be >= 2 (forward + a way off), got {n}")
    return n


def _check_mu(mu, name="mu"):
    if V.is_concrete(mu):
        a = np.atleast_1d(np.asarray(mu, dtype=float))
        bad = ~np.isfinite(a) | (a < 0) | (a >= 1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            where = f"{name}[{i}]" if np.ndim(mu) else name
            raise V.QuasirlValueError(f"{name} must lie in [0, 1), but {where} = {float(a[i])!r}")


def route_policy(L: int, mu, n_actions: int = 2, dtype=None):
    """Exploration policy [L+2, A] of :func:`route_chain`: forward 1-mu, each other mu/(A-1).

    Jittable in ``mu`` (a scalar); absorbing states (g, o) explore uniformly, which does not
    change any path weight (all their actions lead back to themselves).
    """
    dt = dtype or jnp.result_type(float)
    mu = jnp.asarray(mu, dtype=dt)
    on = jnp.concatenate([(1.0 - mu)[None], jnp.broadcast_to(mu / (n_actions - 1),
                                                             (n_actions - 1,))])
    route = jnp.broadcast_to(on, (L, n_actions))
    absorbing = jnp.full((2, n_actions), 1.0 / n_actions, dtype=dt)
    return jnp.concatenate([route, absorbing], axis=0)


def route_chain(L: int, delta_r: float = 1.0, mu: float = 0.1, n_actions: int = 2,
                dtype=None) -> MDP:
    """The route chain of the MDP phase diagram (see the module docstring for the model).

    L: route length (steps to the goal); delta_r: reward for reaching the goal (the gap to every
    other path); mu: per-step exploration noise in [0, 1); n_actions: A >= 2. State L is the
    goal, L+1 the off-route sink.
    """
    L = _check_L(L)
    A = _check_actions(n_actions)
    _check_mu(mu)
    V.check_finite("delta_r", delta_r)
    if not delta_r > 0:
        raise V.QuasirlValueError(f"delta_r must be > 0, got {delta_r}")
    V.check_memory("L", route_memory(L, A),
                   f"route_chain(L={L:,}) (reverse lists of (L+2) x (L(A-1)+A) entries)")
    S = L + 2
    goal, off = L, L + 1
    nxt = np.empty((S, A), dtype=np.int32)
    nxt[:L, 0] = np.arange(1, L + 1)
    nxt[:L, 1:] = off
    nxt[goal], nxt[off] = goal, off
    rew = np.zeros((S, A))
    rew[L - 1, 0] = delta_r
    dt = dtype or jnp.result_type(float)
    init = np.zeros(S)
    init[0] = 1.0
    mdp = MDP.deterministic(nxt, rew.astype(dt), init=init.astype(dt))
    return mdp.replace(policy=route_policy(L, mu, A, dt))


def route_mass(T, mu, L: int, delta_r: float = 1.0):
    """Closed-form optimal-path mass P*(T, mu) of the route chain (numpy; broadcasts).

    logit P* = L ln(1 - mu) - ln(1 - (1 - mu)^L) + delta_r / T; P* = 1 at T = 0 (any mu < 1)
    and at mu = 0.
    """
    T = np.asarray(T, dtype=float)
    mu = np.asarray(mu, dtype=float)
    log_w = L * np.log1p(-mu)
    with np.errstate(divide="ignore"):
        log_rest = np.log(-np.expm1(log_w))  # ln(1 - w); -inf at mu = 0
        logit = log_w - log_rest + np.where(T > 0, delta_r / np.where(T > 0, T, 1.0), np.inf)
    return np.where(np.isposinf(logit), 1.0, 1.0 / (1.0 + np.exp(-np.minimum(logit, 700.0))))


def critical_temperature(mu, L: int, delta_r: float = 1.0, exact: bool = False):
    """Predicted boundary T_c(mu) = delta_r / (-L ln(1 - mu)) of the MDP phase diagram.

    With ``exact=True`` the exact crossing of P* = 1/2 for the route chain,
    delta_r / (-L ln(1 - mu) + ln(1 - (1 - mu)^L)), which T_c approaches when (1-mu)^L << 1
    (inf where it does not exist, i.e. (1 - mu)^L >= 1/2). See the module docstring.
    """
    _check_mu(mu)
    L = _check_L(L)
    mu = np.asarray(mu, dtype=float)
    x = -L * np.log1p(-mu)
    with np.errstate(divide="ignore"):
        if exact:
            d = x + np.log(-np.expm1(-x))
            return np.where(d > 0, delta_r / np.where(d > 0, d, 1.0), np.inf)
        return np.where(x > 0, delta_r / np.where(x > 0, x, 1.0), np.inf)


def mdp_phase_diagram(T, mu, L: int = 20, delta_r: float = 1.0, n_actions: int = 2,
                      horizon: int | None = None, level: float = 0.5, **sweep_kw):
    """Optimal-path mass over (mu, T) on the route chain, with its boundary and the theory.

    The mass is computed by the quasispecies dynamics (``quasirl.evolve``: the fraction of the
    population at the goal after ``horizon`` steps, default L), swept with
    :func:`quasirl.phase.sweep` (``sweep_kw`` go there: backend, scheduler, store, progress).
    Returns an ``xarray.Dataset`` with

      mass[mu, T]        optimal-path mass from the dynamics
      mass_theory[mu, T] the closed form P*(T, mu) (module docstring)
      T_boundary[mu]     numeric boundary: where mass crosses ``level`` (interpolated in log T)
      T_c[mu]            prediction delta_r / (-L ln(1 - mu));  T_exact[mu] exact crossing

    Memory grows as L^2 times the grid points evaluated at once (:func:`route_memory`): a
    diagram that would need more than half of this machine's memory is refused up front.
    """
    from ._dynamics import evolve
    from ._phase_geometry import boundary_curve
    from ._phase_sweep import sweep

    L = _check_L(L)
    A = _check_actions(n_actions)
    H = L if horizon is None else V.check_horizon(horizon)
    if H < L:
        raise V.QuasirlValueError(f"horizon must be >= L = {L} (to reach the goal), got {H}")
    T_arr, _ = V.check_temperature(np.atleast_1d(np.asarray(T, dtype=float)), "T")
    _check_mu(np.asarray(mu, dtype=float))
    if not 0 < level < 1:
        raise V.QuasirlValueError(f"level must lie in (0, 1), got {level}")
    check_phase_memory(L, T_arr.shape[0] * np.size(mu), A, sweep_kw)
    # The sweep ships fn to Dask workers by pickling: carry the MDP's arrays as numpy (a worker
    # unpickles JAX arrays before it enters the client's precision), not the object.
    leaves = [np.asarray(x) for x in route_chain(L, delta_r, 0.0, A).tree_flatten()[0]]

    def optimal_mass(mu, T):
        base = MDP.tree_unflatten(None, leaves)
        mdp = base.replace(policy=route_policy(L, mu, A, base.prob.dtype))
        return {"mass": evolve(mdp, T, H).population[L]}

    sweep_kw.setdefault("tag", f"route chain L={L} delta_r={float(delta_r)!r} A={A} H={H}")
    ds = sweep(optimal_mass, mu=np.asarray(mu, dtype=float), T=np.asarray(T_arr), **sweep_kw)
    ds["mass_theory"] = (("mu", "T"), route_mass(ds.T.values[None, :], ds.mu.values[:, None],
                                                  L, delta_r))
    Tpos = ds.mass.where(ds.T > 0, drop=True)
    ds["T_boundary"] = boundary_curve(Tpos, level, along="mu", across="T", which="last",
                                      scale="log")
    ds["T_c"] = ("mu", critical_temperature(ds.mu.values, L, delta_r))
    ds["T_exact"] = ("mu", critical_temperature(ds.mu.values, L, delta_r, exact=True))
    ds.attrs.update(model="route chain", L=L, delta_r=float(delta_r), n_actions=A, horizon=H,
                    level=float(level))
    ds.mass.attrs["long_name"] = "optimal-path mass P*"
    ds.T.attrs.update(long_name="temperature T", units="reward units")
    ds.mu.attrs["long_name"] = "per-step exploration noise mu"
    return ds
