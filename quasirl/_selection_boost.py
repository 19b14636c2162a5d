"""The boosting recurrence of iterative chaining, adaptation maps, fixed points, Monte Carlo loop.

A model answers with error rate eps; an evaluator accepts a right answer with probability TPR and
a wrong one with probability FPR. The wrong fraction among accepted answers is

    w(eps) = eps FPR / A(eps),        A(eps) = eps FPR + (1 - eps) TPR   (acceptance rate).

An ideal in-context learner copies its buffer, eps_{n+1} = w(eps_n): the odds eps / (1 - eps)
shrink by FPR / TPR every round. A real model adapts only partly, eps_{n+1} = g(w_n), with g an
*adaptation map*. Where nothing is accepted (A = 0) the buffer is empty and carries no
information; we then set w = eps (the model keeps its error rate), in the recurrence and in the
Monte Carlo loop alike.

Affine maps g(w) = a + b w cover the two built-in imperfect learners:

* partial imitation, g(w) = (1 - lam) eps0 + lam w (imitate the buffer with weight lam);
* intrinsic error, the two-type quasispecies with fitness (TPR, FPR) for (right, wrong) and
  mutation matrix Q = [[1 - mu, nu], [mu, 1 - nu]]: g(w) = mu + (1 - mu - nu) w.

For an affine g the fixed points of h = g o w solve the quadratic (multiply eps = h(eps) by A)

    q(eps) = d eps^2 + (t - a d - b r) eps - a t = 0,     d = r - t,  t = TPR, r = FPR,

and h(eps) - eps = -q(eps) / A(eps); h is increasing, so every orbit is monotone and converges
to the nearest fixed point in the direction of h(eps) - eps. Everything here is closed form for
affine g and numeric (iteration, grid + bisection, autodiff slopes) for any other callable.

Jit policy: public entry points validate concrete input and call one jitted kernel (``rounds``,
``batch``, ``buffer_size`` and ``seeds`` static). Adaptation maps are pytrees (NamedTuples), so
they are traced arguments and can be vmapped; a plain Python callable is wrapped in
``jax.tree_util.Partial`` (static, one compilation per function).
"""

from __future__ import annotations

import itertools
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._validate import QuasirlValueError, check_int, check_key, check_real, is_concrete, is_int
from .semiring import safe_log


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def _index(a: np.ndarray, mask: np.ndarray) -> str:
    if a.ndim == 0:
        return ""
    return "[" + ", ".join(str(int(i)) for i in np.argwhere(mask)[0]) + "]"


def _float(x):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def _check_unit(name: str, x, *, positive: bool = False):
    """x: number or array of numbers in [0, 1] ((0, 1] if ``positive``); returns a float array."""
    if not is_concrete(x):
        check_real(name, x)
        return _float(x)
    a = np.asarray(x)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise QuasirlValueError(f"{name} must be a number or an array of numbers, got {x!r}")
    check_real(name, a)  # complex: refused, not cast
    if a.size == 0:
        raise QuasirlValueError(f"{name} must not be empty")
    af = a.astype(np.float64)
    bad = ~np.isfinite(af) | (af < 0) | (af > 1) | ((af <= 0) if positive else False)
    if bad.any():
        where = _index(af, bad)
        value = float(af[tuple(np.argwhere(bad)[0])] if af.ndim else af)
        interval = "(0, 1]" if positive else "[0, 1]"
        raise QuasirlValueError(f"{name} must lie in {interval}, but {name}{where} = {value!r}")
    return _float(x)


def _check_broadcast(*named) -> tuple:
    """``named``: (name, array) pairs whose shapes must broadcast together; their common shape.

    Pairwise compatibility implies joint compatibility, so the first pair that fails names the
    culprits (instead of numpy's or JAX's list of anonymous shapes)."""
    shapes = [(n, tuple(np.shape(x))) for n, x in named]
    try:
        return np.broadcast_shapes(*[sh for _, sh in shapes])
    except ValueError:
        pass
    for (n1, s1), (n2, s2) in itertools.combinations(shapes, 2):
        try:
            np.broadcast_shapes(s1, s2)
        except ValueError:
            raise QuasirlValueError(
                f"{n1} and {n2} must have shapes that broadcast together, but {n1} has shape "
                f"{s1} and {n2} has shape {s2}") from None
    raise AssertionError("unreachable: pairwise broadcastable shapes broadcast jointly")


def _map_params(g) -> list:
    """(name, value) for the parameters of a built-in adaptation map (g.lam, ...)."""
    if isinstance(g, Affine | Imitation | Mutation):
        return [(f"g.{k}", v) for k, v in zip(g._fields, g, strict=True)]
    return []


def _range_tol(dtype) -> float:
    """Rounding allowed outside [0, 1] for an error rate computed in ``dtype``."""
    return 16 * float(jnp.finfo(dtype).eps)


def _map_name(g) -> str:
    f = g.func if isinstance(g, jax.tree_util.Partial) else g
    return getattr(f, "__qualname__", None) or repr(f)


def _where(index) -> str:
    return f" at index {[int(i) for i in index]}" if len(index) else ""


def _check_trajectory(traj, g) -> None:
    """Every eps_n (n >= 1) of a trajectory [..., rounds+1] must be an error rate, in [0, 1]:
    else name the map, the first round that left [0, 1] and the batch index."""
    if not is_concrete(traj):
        return
    t = np.asarray(traj)
    tol = _range_tol(t.dtype)
    later = t[..., 1:]
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(later) | (later < -tol) | (later > 1 + tol)
    if not bad.any():
        return
    rounds = np.where(bad.any(axis=-1), np.argmax(bad, axis=-1), bad.shape[-1])
    idx = np.unravel_index(np.argmin(rounds), rounds.shape) if rounds.ndim else ()
    n = int(rounds[idx]) + 1
    raise QuasirlValueError(
        f"g must map [0, 1] into [0, 1] (it returns the next error rate), but in round {n} "
        f"g = {_map_name(g)} returned eps_{n} = {t[idx + (n,)].item()!r} (from eps_{n - 1} = "
        f"{t[idx + (n - 1,)].item()!r}){_where(idx)}")


def _check_affine_range(g) -> None:
    """An affine map must send [0, 1] into [0, 1]: g(0) = a and g(1) = a + b both in it."""
    params = _map_params(g)
    _check_broadcast(*params)
    if not params or not is_concrete(g):
        return
    a, b = (np.asarray(x, np.float64) for x in g.affine)
    tol = _range_tol(jnp.result_type(*[jnp.asarray(v).dtype for _, v in params]))
    for w, val in ((0, a), (1, a + b)):
        bad = ~np.isfinite(val) | (val < -tol) | (val > 1 + tol)
        if bad.any():
            i = tuple(np.argwhere(bad)[0]) if val.ndim else ()
            raise QuasirlValueError(
                f"g must map [0, 1] into [0, 1] (it returns the next error rate), but "
                f"{g!r} gives g({w}) = {float(val[i])!r}{_where(i)}")


# --------------------------------------------------------------------------------------------
# the selection step
# --------------------------------------------------------------------------------------------
def _bcast(*xs):
    return jnp.broadcast_arrays(*[_float(x) for x in xs])


def _acceptance(eps, tpr, fpr):
    eps, tpr, fpr = _bcast(eps, tpr, fpr)
    return eps * fpr + (1.0 - eps) * tpr


def _wrong(eps, tpr, fpr):
    eps, tpr, fpr = _bcast(eps, tpr, fpr)
    num = eps * fpr
    A = num + (1.0 - eps) * tpr
    pos = A > 0
    return jnp.where(pos, num / jnp.where(pos, A, 1.0), eps)


def acceptance_rate(eps, tpr, fpr):
    """Fraction of answers the evaluator accepts: A = eps FPR + (1 - eps) TPR.

    eps, tpr, fpr: error rate and evaluator rates in [0, 1], numbers or arrays (broadcast).
    """
    _check_broadcast(("eps", eps), ("tpr", tpr), ("fpr", fpr))
    return _acceptance(_check_unit("eps", eps), _check_unit("tpr", tpr), _check_unit("fpr", fpr))


def wrong_fraction(eps, tpr, fpr):
    """Wrong fraction of the accepted answers: w = eps FPR / (eps FPR + (1 - eps) TPR).

    Where nothing is accepted (A = 0) the buffer is empty and w = eps by convention.
    """
    _check_broadcast(("eps", eps), ("tpr", tpr), ("fpr", fpr))
    return _wrong(_check_unit("eps", eps), _check_unit("tpr", tpr), _check_unit("fpr", fpr))


# --------------------------------------------------------------------------------------------
# the ideal learner: recurrence and closed form
# --------------------------------------------------------------------------------------------
def _scan_map(h, eps0, rounds: int):
    def step(e, _):
        e1 = h(e)
        return e1, e1

    _, traj = lax.scan(step, eps0, None, length=rounds)
    return jnp.moveaxis(jnp.concatenate([eps0[None], traj], axis=0), 0, -1)


@partial(jax.jit, static_argnames="rounds")
def _boost(eps0, tpr, fpr, rounds):
    eps0, tpr, fpr = _bcast(eps0, tpr, fpr)

    # carry the two-type population (wrong, right) = (eps, 1 - eps), renormalised each round,
    # so that neither eps near 0 nor eps near 1 loses digits to 1 - eps
    def step(c, _):
        e, k = c
        nw, nr = e * fpr, k * tpr
        A = nw + nr
        pos = A > 0
        As = jnp.where(pos, A, 1.0)
        c1 = (jnp.where(pos, nw / As, e), jnp.where(pos, nr / As, k))
        return c1, c1[0]

    _, traj = lax.scan(step, (eps0, 1.0 - eps0), None, length=rounds)
    return jnp.moveaxis(jnp.concatenate([eps0[None], traj], axis=0), 0, -1)


def boost(eps0, tpr, fpr, rounds: int):
    """Error-rate trajectory of the ideal in-context learner under selection: [..., rounds+1].

    eps0: initial error rate; tpr, fpr: the evaluator's acceptance probabilities for right and
    wrong answers (all in [0, 1], numbers or arrays; leading axes come from broadcasting them).
    Iterates eps_{n+1} = eps_n FPR / (eps_n FPR + (1 - eps_n) TPR) (the essay's recurrence;
    docs/theory.md, "Selection on samples"); see :func:`boost_closed_form` for the solution.
    """
    rounds = check_int("rounds", rounds, minimum=0)
    _check_broadcast(("eps0", eps0), ("tpr", tpr), ("fpr", fpr))
    return _boost(_check_unit("eps0", eps0), _check_unit("tpr", tpr), _check_unit("fpr", fpr),
                  rounds)


@partial(jax.jit, static_argnames="rounds")
def _boost_closed(eps0, tpr, fpr, rounds):
    eps0, tpr, fpr = _bcast(eps0, tpr, fpr)
    interior = (eps0 > 0) & (eps0 < 1)
    e_in = jnp.where(interior, eps0, 0.5)
    logit0 = jnp.log(e_in) - jnp.log1p(-e_in)
    both_zero = (tpr == 0) & (fpr == 0)
    # log(FPR/TPR) in [-inf, inf]; 0 where nothing is ever accepted (the map is the identity)
    rate = jnp.where(both_zero, 0.0, safe_log(fpr) - safe_log(tpr))
    n = jnp.arange(1, rounds + 1, dtype=eps0.dtype).reshape((1,) * eps0.ndim + (rounds,))
    logits = logit0[..., None] + n * rate[..., None]
    later = jnp.where((interior & ~both_zero)[..., None], jax.nn.sigmoid(logits),
                      eps0[..., None])
    return jnp.concatenate([eps0[..., None], later], axis=-1)


def boost_closed_form(eps0, tpr, fpr, rounds: int):
    """Closed form of :func:`boost`: the odds shrink by FPR/TPR each round, [..., rounds+1].

    logit(eps_n) = logit(eps0) + n log(FPR / TPR), i.e. eps_n / (1 - eps_n) =
    (eps0 / (1 - eps0)) (FPR / TPR)^n; eps0 in {0, 1} and TPR = FPR = 0 stay put.
    """
    rounds = check_int("rounds", rounds, minimum=0)
    _check_broadcast(("eps0", eps0), ("tpr", tpr), ("fpr", fpr))
    return _boost_closed(_check_unit("eps0", eps0), _check_unit("tpr", tpr),
                         _check_unit("fpr", fpr), rounds)


def boost_acceptance(eps0, tpr, fpr, rounds: int):
    """Acceptance rate of every round of :func:`boost`, A(eps_n), [..., rounds+1]."""
    traj = boost(eps0, tpr, fpr, rounds)
    t, f = _bcast(tpr, fpr)
    return _acceptance(traj, t[..., None], f[..., None])


# --------------------------------------------------------------------------------------------
# adaptation maps
# --------------------------------------------------------------------------------------------
class Affine(NamedTuple):
    """Adaptation map g(w) = intercept + slope * w (a pytree: vmap over its fields)."""

    intercept: Any
    slope: Any

    def __call__(self, w):
        a, b, w = _bcast(self.intercept, self.slope, w)
        return a + b * w

    @property
    def affine(self):
        return self.intercept, self.slope


class Imitation(NamedTuple):
    """Partial imitation g(w) = (1 - lam) eps0 + lam w: the model copies its buffer with weight
    lam and otherwise answers from its prior error rate eps0."""

    eps0: Any
    lam: Any

    def __call__(self, w):
        e, lam, w = _bcast(self.eps0, self.lam, w)
        return (1.0 - lam) * e + lam * w

    @property
    def affine(self):
        e, lam = _bcast(self.eps0, self.lam)
        return (1.0 - lam) * e, lam


class Mutation(NamedTuple):
    """Intrinsic error: the two-type quasispecies with mutation right -> wrong at rate mu and
    wrong -> right at rate nu: g(w) = w (1 - nu) + (1 - w) mu."""

    mu: Any
    nu: Any

    def __call__(self, w):
        mu, nu, w = _bcast(self.mu, self.nu, w)
        return w * (1.0 - nu) + (1.0 - w) * mu

    @property
    def affine(self):
        mu, nu = _bcast(self.mu, self.nu)
        return mu, 1.0 - mu - nu


def ideal() -> Affine:
    """The ideal in-context learner, g(w) = w (eps_{n+1} = w_n)."""
    return Affine(_float(0.0), _float(1.0))


def partial_imitation(eps0, lam) -> Imitation:
    """Adaptation map of a model that imitates its buffer only partly: g(w) = (1-lam) eps0 + lam w.

    eps0: the model's own error rate without a buffer; lam: imitation slope in [0, 1] (the LM
    bridge measures it; lam = 1 is the ideal learner, lam = 0 ignores the buffer). Both may be
    arrays (the result is a pytree, so it can be vmapped over).
    """
    _check_broadcast(("eps0", eps0), ("lam", lam))
    return Imitation(_check_unit("eps0", eps0), _check_unit("lam", lam))


def intrinsic_error(mu, nu=0.0) -> Mutation:
    """Adaptation map with an intrinsic error rate: the two-type quasispecies (right, wrong).

    mu: probability that imitating a right answer produces a wrong one; nu: the reverse
    (default 0, one-way mutation as in Eigen's single-peak model). g(w) = w(1-nu) + (1-w)mu.
    With selection fitness (TPR, FPR) this is Eigen's x' = Q diag(f) x / f.x for two types.
    """
    _check_broadcast(("mu", mu), ("nu", nu))
    mu = _check_unit("mu", mu)
    nu = _check_unit("nu", nu)
    if is_concrete(mu, nu):
        s = np.asarray(mu + nu)
        bad = s > 1
        if bad.any():
            raise QuasirlValueError(
                f"mu + nu must be <= 1, but (mu + nu){_index(s, bad)} = "
                f"{float(s[tuple(np.argwhere(bad)[0])] if s.ndim else s)!r}")
    return Mutation(mu, nu)


def _as_map(g):
    """An adaptation map as a pytree (NamedTuple maps pass through; callables get wrapped)."""
    if g is None:
        return ideal()
    if isinstance(g, Affine | Imitation | Mutation):
        _check_affine_range(g)
        return g
    if isinstance(g, jax.tree_util.Partial):
        return g
    if callable(g):
        return jax.tree_util.Partial(g)
    raise QuasirlValueError(f"g must be an adaptation map (a callable w -> eps), got {g!r}")


def _kernel_map(g):
    """The map as handed to a jitted kernel: every affine map becomes an ``Affine`` (one pytree
    structure, so imitation, mutation and ideal learners share one compilation)."""
    g = _as_map(g)
    parts = _affine_parts(g)
    return g if parts is None else Affine(*_bcast(*parts))


def _affine_parts(g):
    return g.affine if isinstance(g, Affine | Imitation | Mutation) else None


def step_map(eps, tpr, fpr, g=None):
    """One round of the loop, h(eps) = g(w(eps)); g = None is the ideal learner."""
    g = _as_map(g)
    _check_broadcast(("eps", eps), ("tpr", tpr), ("fpr", fpr), *_map_params(g))
    eps = _check_unit("eps", eps)
    out = g(_wrong(eps, _check_unit("tpr", tpr), _check_unit("fpr", fpr)))
    if is_concrete(out, eps):
        _check_trajectory(jnp.stack(jnp.broadcast_arrays(eps, _float(out)), axis=-1), g)
    return out


@partial(jax.jit, static_argnames="rounds")
def _adapt(eps0, tpr, fpr, g, rounds):
    eps0, tpr, fpr = _bcast(eps0, tpr, fpr)
    h = lambda e: g(_wrong(e, tpr, fpr))
    shape = jnp.broadcast_shapes(eps0.shape, jax.eval_shape(h, eps0).shape)
    e0 = jnp.broadcast_to(eps0, shape)
    tpr, fpr = jnp.broadcast_to(tpr, shape), jnp.broadcast_to(fpr, shape)
    return _scan_map(lambda e: g(_wrong(e, tpr, fpr)), e0, rounds)


def adapt_trajectory(eps0, tpr, fpr, g, rounds: int):
    """Error trajectory of an imperfect learner, eps_{n+1} = g(w_n), eps_0 = eps0: [..., rounds+1].

    g: adaptation map (see :func:`partial_imitation`, :func:`intrinsic_error`, :func:`ideal`, or
    any callable w -> eps mapping [0, 1] into [0, 1]); w_n = wrong_fraction(eps_n, TPR, FPR).
    Leading axes broadcast over eps0, tpr, fpr and the map's parameters (shapes that do not
    broadcast are named). A map that leaves [0, 1] (beyond rounding) or returns NaN raises a
    QuasirlValueError naming the round, the value and the batch index (concrete input only).
    """
    rounds = check_int("rounds", rounds, minimum=0)
    g = _as_map(g)
    _check_broadcast(("eps0", eps0), ("tpr", tpr), ("fpr", fpr), *_map_params(g))
    g = _kernel_map(g)
    traj = _adapt(_check_unit("eps0", eps0), _check_unit("tpr", tpr), _check_unit("fpr", fpr),
                  g, rounds)
    _check_trajectory(traj, g)
    return traj


# --------------------------------------------------------------------------------------------
# fixed points, stability, limits (closed form for affine maps)
# --------------------------------------------------------------------------------------------
class FixedPoints(NamedTuple):
    """Fixed points of h = g o w in [0, 1], ascending, NaN-padded to a fixed count.

    values: [..., k]; slope: h'(eps*) (>= 0 for increasing g); stable: slope < 1
    (asymptotically stable); identity: True where h is the identity map (every eps is fixed,
    neutrally stable; ``values`` are NaN there).
    """

    values: Any
    slope: Any
    stable: Any
    identity: Any


def _quadratic(a, b, t, r):
    """Coefficients of q(eps) = d eps^2 + B eps + C with h(eps) - eps = -q(eps) / A(eps)."""
    d = r - t
    return d, t - a * d - b * r, -a * t


def _roots(d, B, C):
    """Both roots (lo, hi) of d x^2 + B x + C (real by construction), stably; a linear equation
    when d = 0 (second root +inf). NaN where the polynomial vanishes identically."""
    disc = jnp.maximum(B * B - 4.0 * d * C, 0.0)
    s = -0.5 * (B + jnp.where(B >= 0, 1.0, -1.0) * jnp.sqrt(disc))
    s_ok = s != 0
    r1 = jnp.where(s_ok, C / jnp.where(s_ok, s, 1.0), 0.0)
    d_ok = d != 0
    r2 = jnp.where(d_ok, s / jnp.where(d_ok, d, 1.0), jnp.inf)
    # d = 0: B x + C = 0
    B_ok = B != 0
    lin = jnp.where(B_ok, -C / jnp.where(B_ok, B, 1.0), jnp.nan)
    r1 = jnp.where(d_ok, r1, lin)
    r2 = jnp.where(d_ok, r2, jnp.inf)
    # s = 0 with d != 0 means B = 0 and C = 0: double root 0
    return jnp.minimum(r1, r2), jnp.maximum(r1, r2)


def _slope_affine(eps, b, t, r):
    """h'(eps) = b r t / A(eps)^2 (b where nothing is ever accepted; inf at a jump)."""
    A = eps * r + (1.0 - eps) * t
    pos = A > 0
    both = (t == 0) & (r == 0)
    return jnp.where(pos, b * r * t / jnp.where(pos, A * A, 1.0), jnp.where(both, b, jnp.inf))


@jax.jit
def _fixed_affine(a, b, tpr, fpr):
    a, b, t, r = _bcast(a, b, tpr, fpr)
    h = lambda e: a + b * _wrong(e, t, r)
    d, B, C = _quadratic(a, b, t, r)
    lo, hi = _roots(d, B, C)
    both = (t == 0) & (r == 0)
    # nothing is ever accepted: h(eps) = a + b eps (linear)
    b_lt1 = b < 1
    lin = jnp.where(b_lt1, a / jnp.where(b_lt1, 1.0 - b, 1.0), jnp.nan)
    lo = jnp.where(both, lin, lo)
    hi = jnp.where(both, jnp.nan, hi)
    identity = jnp.where(both, b >= 1, (d == 0) & (B == 0) & (C == 0))
    tol = 1e-9

    def keep(x):
        ok = jnp.isfinite(x) & (x >= -tol) & (x <= 1 + tol)
        xc = jnp.clip(jnp.where(ok, x, 0.5), 0.0, 1.0)
        # roots gained by multiplying with A are fixed points only if h agrees there (A = 0)
        ok &= jnp.abs(h(xc) - xc) <= 1e-7
        return jnp.where(ok & ~identity, xc, jnp.nan)

    lo, hi = keep(lo), keep(hi)
    hi = jnp.where(jnp.abs(hi - lo) <= tol, jnp.nan, hi)  # a double root is one fixed point
    vals = jnp.stack([lo, hi], axis=-1)
    vals = jnp.sort(vals, axis=-1)  # NaN sort last
    slope = _slope_affine(vals, b[..., None], t[..., None], r[..., None])
    slope = jnp.where(jnp.isnan(vals), jnp.nan, slope)
    return FixedPoints(vals, slope, slope < 1, identity)


def _fixed_numeric(tpr, fpr, g, grid: int):
    """Fixed points of a general map on scalars: sign changes of h - id on a grid, bisection."""
    t, r = float(tpr), float(fpr)
    h = jax.jit(lambda e: g(_wrong(e, t, r)))
    x = np.linspace(0.0, 1.0, grid)
    hx = np.asarray(h(jnp.asarray(x)))
    tol = _range_tol(hx.dtype)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(hx) | (hx < -tol) | (hx > 1 + tol)
    if bad.any():
        i = int(np.argmax(bad))
        raise QuasirlValueError(
            f"g must map [0, 1] into [0, 1] (it returns the next error rate), but one round "
            f"from eps = {float(x[i])!r} gives g = {_map_name(g)} -> {hx[i].item()!r}")
    f = hx - x
    roots = list(x[f == 0])
    sign_change = np.flatnonzero(np.sign(f[:-1]) * np.sign(f[1:]) < 0)
    lo, hi = jnp.asarray(x[sign_change]), jnp.asarray(x[sign_change + 1])
    flo = jnp.asarray(f[sign_change])

    def bisect(carry, _):
        lo, hi, flo = carry
        mid = 0.5 * (lo + hi)
        fm = h(mid) - mid
        left = jnp.sign(fm) == jnp.sign(flo)
        return (jnp.where(left, mid, lo), jnp.where(left, hi, mid), jnp.where(left, fm, flo)), None

    if sign_change.size:
        (lo, hi, _), _ = lax.scan(bisect, (lo, hi, flo), None, length=80)
        roots += list(np.asarray(0.5 * (lo + hi)))
    vals = np.unique(np.round(np.asarray(roots, dtype=np.float64), 14))
    dh = jax.vmap(jax.grad(lambda e: h(e)))
    slope = np.asarray(dh(jnp.asarray(vals))) if vals.size else np.zeros(0)
    return FixedPoints(vals, slope, slope < 1, np.asarray(False))


def fixed_points(tpr, fpr, g=None, *, grid: int = 4097) -> FixedPoints:
    """Fixed points eps* = g(w(eps*)) in [0, 1] and their stability.

    tpr, fpr: evaluator rates; g: adaptation map (None = ideal learner). For affine maps
    (:func:`ideal`, :func:`partial_imitation`, :func:`intrinsic_error`, :class:`Affine`) the
    answer is analytic (roots of q(eps) = d eps^2 + (t - a d - b r) eps - a t, d = r - t,
    slope h'(eps) = b r t / A(eps)^2) and vectorised: values [..., 2]. For any other callable
    it is numeric (scalar rates only): sign changes of h(eps) - eps on ``grid`` points refined
    by bisection, slopes by autodiff; values [k].
    For the ideal learner 0 is stable iff FPR < TPR (slope FPR / TPR) and 1 iff FPR > TPR.
    """
    g = _as_map(g)
    _check_broadcast(("tpr", tpr), ("fpr", fpr), *_map_params(g))
    tpr, fpr = _check_unit("tpr", tpr), _check_unit("fpr", fpr)
    parts = _affine_parts(g)
    if parts is not None:
        return _fixed_affine(*parts, tpr, fpr)
    if np.ndim(tpr) or np.ndim(fpr):
        raise QuasirlValueError("tpr and fpr must be scalars for a general (non-affine) map g")
    return _fixed_numeric(tpr, fpr, g, check_int("grid", grid, minimum=3))


def stability(eps, tpr, fpr, g=None):
    """Slope h'(eps) of one round h = g o w at eps (a fixed point is stable where it is < 1).

    Computed by forward-mode autodiff of the map, so it applies to any differentiable g.
    For the ideal learner h'(0) = FPR / TPR and h'(1) = TPR / FPR.
    """
    g = _as_map(g)
    _check_broadcast(("eps", eps), ("tpr", tpr), ("fpr", fpr), *_map_params(g))
    eps, tpr, fpr = _check_unit("eps", eps), _check_unit("tpr", tpr), _check_unit("fpr", fpr)
    h, dh = _stability(eps, tpr, fpr, _kernel_map(g))
    if is_concrete(h, eps):
        _check_trajectory(jnp.stack(jnp.broadcast_arrays(eps, h), axis=-1), g)
    return dh


@jax.jit
def _stability(eps, tpr, fpr, g):
    eps, tpr, fpr = _bcast(eps, tpr, fpr)
    return jax.jvp(lambda e: g(_wrong(e, tpr, fpr)), (eps,), (jnp.ones_like(eps),))


@jax.jit
def _limit_affine(eps0, a, b, tpr, fpr):
    eps0, a, b, t, r = _bcast(eps0, a, b, tpr, fpr)
    h = lambda e: a + b * _wrong(e, t, r)
    e1 = h(eps0)
    # the one place an orbit can sit at a point with no acceptances: eps = 1 with FPR = 0,
    # where h(1) = a + b; then the next step lands on a (w = 0 for eps < 1)
    stuck = (e1 == 1) & (r == 0) & (t > 0)
    e1 = jnp.where(stuck & (a + b < 1), a, e1)
    d, B, C = _quadratic(a, b, t, r)
    lo, hi = _roots(d, B, C)
    q1 = (d * e1 + B) * e1 + C
    tol = 1e-12
    near_lo = jnp.abs(lo - e1) <= tol
    near_hi = jnp.abs(hi - e1) <= tol
    up = jnp.where(lo > e1, lo, hi)  # smallest root above e1
    down = jnp.where(hi < e1, hi, lo)  # largest root below e1
    lim = jnp.where(q1 < 0, up, jnp.where(q1 > 0, down, e1))
    lim = jnp.where(near_lo, lo, jnp.where(near_hi, hi, lim))
    identity = (d == 0) & (B == 0) & (C == 0)
    lim = jnp.where(identity, e1, lim)
    # nothing is ever accepted: h(eps) = a + b eps
    both = (t == 0) & (r == 0)
    b_lt1 = b < 1
    lin = jnp.where(b_lt1, a / jnp.where(b_lt1, 1.0 - b, 1.0), eps0)
    return jnp.clip(jnp.where(both, lin, lim), 0.0, 1.0)


@partial(jax.jit, static_argnames="rounds")
def _limit_iterate(eps0, tpr, fpr, g, rounds):
    eps0, tpr, fpr = _bcast(eps0, tpr, fpr)
    h = lambda e: g(_wrong(e, tpr, fpr))
    shape = jnp.broadcast_shapes(eps0.shape, jax.eval_shape(h, eps0).shape)
    e = jnp.broadcast_to(eps0, shape)
    tpr, fpr = jnp.broadcast_to(tpr, shape), jnp.broadcast_to(fpr, shape)
    tol = _range_tol(e.dtype)

    # also keep the first round whose eps left [0, 1] (and its value and predecessor), so
    # that a map that leaves [0, 1] is reported instead of iterated to a meaningless limit
    def body(n, c):
        e, bad_n, bad_v, bad_prev = c
        e1 = g(_wrong(e, tpr, fpr)).astype(e.dtype)
        out = ~jnp.isfinite(e1) | (e1 < -tol) | (e1 > 1 + tol)
        first = out & (bad_n < 0)
        return (e1, jnp.where(first, n + 1, bad_n), jnp.where(first, e1, bad_v),
                jnp.where(first, e, bad_prev))

    init = (e, jnp.full(shape, -1, jnp.int32), jnp.zeros_like(e), jnp.zeros_like(e))
    return lax.fori_loop(0, rounds, body, init)


def limit_error(eps0, tpr, fpr, g=None, *, rounds: int | None = None):
    """Limiting error rate lim_n eps_n of the loop eps_{n+1} = g(w(eps_n)) started at eps0.

    For affine g (and rounds=None) it is analytic: h is increasing, so the orbit is monotone and
    stops at the first root of q(eps) = d eps^2 + (t - a d - b r) eps - a t met in the direction
    of h(eps0) - eps0. Otherwise the map is iterated ``rounds`` times (default 10_000).
    The ideal learner gives 0 for FPR < TPR, eps0 for FPR = TPR and 1 for FPR > TPR.
    """
    g = _as_map(g)
    _check_broadcast(("eps0", eps0), ("tpr", tpr), ("fpr", fpr), *_map_params(g))
    eps0 = _check_unit("eps0", eps0)
    tpr, fpr = _check_unit("tpr", tpr), _check_unit("fpr", fpr)
    parts = _affine_parts(g)
    if parts is not None and rounds is None:
        return _limit_affine(eps0, *parts, tpr, fpr)
    rounds = 10_000 if rounds is None else check_int("rounds", rounds, minimum=0)
    e, bad_n, bad_v, bad_prev = _limit_iterate(eps0, tpr, fpr, _kernel_map(g), rounds)
    if is_concrete(bad_n):
        bn = np.asarray(bad_n)
        if (bn >= 0).any():
            rounds_ = np.where(bn >= 0, bn, np.iinfo(np.int32).max)
            i = np.unravel_index(np.argmin(rounds_), bn.shape) if bn.ndim else ()
            n = int(bn[i])
            raise QuasirlValueError(
                f"g must map [0, 1] into [0, 1] (it returns the next error rate), but in round "
                f"{n} g = {_map_name(g)} returned eps_{n} = {np.asarray(bad_v)[i].item()!r} "
                f"(from eps_{n - 1} = {np.asarray(bad_prev)[i].item()!r}){_where(i)}")
    return e


def lowers_error(eps0, tpr, fpr, g=None):
    """True where the loop ends below its start, lim eps_n < eps0 (boosting lowers the error).

    For an increasing map h = g o w the orbit is monotone, so this holds iff h(eps0) < eps0.
    With partial imitation (0 < lam, 0 < eps0 < 1) that is exactly FPR < TPR, whatever lam.
    """
    _check_broadcast(("eps0", eps0), ("tpr", tpr), ("fpr", fpr), *_map_params(_as_map(g)))
    eps0 = _check_unit("eps0", eps0)
    return step_map(eps0, tpr, fpr, g) < eps0


# --------------------------------------------------------------------------------------------
# Monte Carlo chaining loop
# --------------------------------------------------------------------------------------------
class ChainingRun(NamedTuple):
    """Monte Carlo runs of the loop, one row per seed.

    error: [seeds, rounds+1] model error rate eps_n (eps_0 = eps0); wrong_fraction:
    [seeds, rounds] wrong fraction of the buffer after round n; acceptance: [seeds, rounds]
    accepted / batch in round n; buffer_fill: [seeds, rounds] answers held in the buffer.
    """

    error: Any
    wrong_fraction: Any
    acceptance: Any
    buffer_fill: Any


def _chain_one(key, eps0, tpr, fpr, g, rounds, batch, cap):
    i = jnp.arange(cap)

    def step(carry, k):
        eps, buf, fill = carry
        k_ans, k_eval = jax.random.split(k)
        wrong = jax.random.uniform(k_ans, (batch,), dtype=eps.dtype) < eps
        u = jax.random.uniform(k_eval, (batch,), dtype=eps.dtype)
        acc = jnp.where(wrong, u < fpr, u < tpr)
        n_acc = jnp.sum(acc, dtype=jnp.int32)
        # accepted answers first, in draw order (draws are i.i.d., so the order is random);
        # the newest go to the front of the buffer and the oldest fall off its end (FIFO)
        slot = jnp.where(acc, jnp.cumsum(acc) - 1, batch)
        new = jnp.zeros(batch, bool).at[slot].set(wrong, mode="drop")
        buf = jnp.where(i < n_acc, new[jnp.minimum(i, batch - 1)],
                        buf[jnp.clip(i - n_acc, 0, cap - 1)])
        fill = jnp.minimum(fill + n_acc, cap)
        n_wrong = jnp.sum(buf & (i < fill))
        w = jnp.where(fill > 0, n_wrong / jnp.maximum(fill, 1), eps)
        raw = g(w).astype(eps.dtype)
        # clip rounding only: a map that leaves [0, 1] is reported by simulate_chaining
        eps_next = jnp.clip(raw, 0.0, 1.0)
        return (eps_next, buf, fill), (eps_next, w, n_acc / batch, fill, raw)

    carry = (eps0, jnp.zeros(cap, bool), jnp.zeros((), jnp.int32))
    _, (err, w, acc, fill, raw) = lax.scan(step, carry, jax.random.split(key, rounds))
    return ChainingRun(jnp.concatenate([eps0[None], err]), w, acc, fill), raw


@partial(jax.jit, static_argnames=("rounds", "batch", "cap", "seeds"))
def _chain(key, eps0, tpr, fpr, g, rounds, batch, cap, seeds):
    keys = jax.random.split(key, seeds)
    one = partial(_chain_one, rounds=rounds, batch=batch, cap=cap)
    return jax.vmap(one, in_axes=(0, None, None, None, None))(keys, eps0, tpr, fpr, g)


def simulate_chaining(key, eps0, tpr, fpr, g=None, rounds: int = 10, batch: int = 256,
                      buffer_size: int = 256, seeds: int = 64) -> ChainingRun:
    """Monte Carlo of the chaining loop: finite batches, sampled acceptances, a rolling buffer.

    Each round the model answers ``batch`` questions, each wrong with probability eps_n; the
    evaluator accepts right answers with probability TPR and wrong ones with probability FPR;
    accepted answers enter a FIFO buffer of ``buffer_size`` (the newest kept); the model's next
    error rate is g(w_hat), w_hat the buffer's wrong fraction (eps_n itself while the buffer is
    empty). When a round accepts at least ``buffer_size`` answers the buffer holds that round
    only and the mean-field limit is :func:`adapt_trajectory`; a buffer spanning several
    rounds lags behind it. ``seeds`` independent runs from ``key`` (a jax.random key).
    eps0, tpr, fpr: scalars; g: adaptation map (None = ideal learner).
    """
    rounds = check_int("rounds", rounds, minimum=1)
    batch = check_int("batch", batch, minimum=1)
    cap = check_int("buffer_size", buffer_size, minimum=1)
    seeds = check_int("seeds", seeds, minimum=1)
    vals = {n: _check_unit(n, v) for n, v in (("eps0", eps0), ("tpr", tpr), ("fpr", fpr))}
    for n, v in vals.items():
        if v.ndim:
            raise QuasirlValueError(f"{n} must be a scalar for simulate_chaining, got shape "
                                    f"{v.shape} (vmap over calls to batch parameters)")
    check_key(key)
    g = _kernel_map(g)
    if any(jnp.ndim(leaf) for leaf in jax.tree_util.tree_leaves(g)):
        raise QuasirlValueError("the adaptation map's parameters must be scalars for "
                                "simulate_chaining")
    run, raw = _chain(key, vals["eps0"], vals["tpr"], vals["fpr"], g, rounds, batch, cap, seeds)
    if is_concrete(raw):
        r = np.asarray(raw)
        tol = _range_tol(r.dtype)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(r) | (r < -tol) | (r > 1 + tol)
        if bad.any():
            first = np.where(bad.any(axis=1), np.argmax(bad, axis=1), rounds)
            seed = int(np.argmin(first))
            n = int(first[seed]) + 1
            raise QuasirlValueError(
                f"g must map [0, 1] into [0, 1] (it returns the next error rate), but in round "
                f"{n} of seed {seed} g = {_map_name(g)} returned {r[seed, n - 1].item()!r} "
                f"(from the buffer's wrong fraction "
                f"{np.asarray(run.wrong_fraction)[seed, n - 1].item()!r})")
    return run


def band(x, level: float = 0.95, axis: int = 0):
    """Mean and central ``level`` quantile band across seeds: (mean, lo, hi) along ``axis``."""
    lv = np.asarray(level)
    real = np.issubdtype(lv.dtype, np.floating) or np.issubdtype(lv.dtype, np.integer)
    if lv.ndim or not real or not 0 < lv < 1:
        raise QuasirlValueError(f"level must lie in (0, 1), got {level!r}")
    if is_concrete(x):
        a = np.asarray(x)
        if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise QuasirlValueError(f"x must be an array of numbers, got dtype {a.dtype}")
        check_real("x", a)
    x = jnp.asarray(x)
    if not is_int(axis) or not -x.ndim <= axis < x.ndim:
        raise QuasirlValueError(f"axis must be an integer in [-{x.ndim}, {x.ndim}) for x of "
                                f"shape {x.shape}, got {axis!r}")
    q = jnp.quantile(x, jnp.asarray([(1 - level) / 2, (1 + level) / 2]), axis=axis)
    return jnp.mean(x, axis=axis), q[0], q[1]
