"""Phase diagrams of the chaining loop, their boundaries, and a convexity test for 2-D regions.

Three planes (each a labelled ``xarray.Dataset`` with coordinates named after its axes):

* ``phase_diagram_rates``: error over the (TPR, FPR) plane, after ``rounds`` rounds or in the
  limit, for a given adaptation map;
* ``phase_diagram_imitation``: limiting error over (selection = log(TPR/FPR), lam) for partial
  imitation. The loop depends on the rates only through FPR/TPR (w is a function of eps and
  FPR/TPR), so the plane uses TPR = min(1, e^L), FPR = min(1, e^-L);
* ``phase_diagram_intrinsic``: limiting error over (selection, mu) for the two-type quasispecies
  with intrinsic error (mutation right -> wrong at rate mu, back at rate nu).

``boundary`` (contour at a level, linear interpolation along grid edges) and ``is_convex`` (is a
sub- or super-level region of a 2-D labelled array convex?) work on any 2-D ``DataArray``;
``quasirl.phase`` reuses them. The closed-form boundaries below are the oracles the numerical
ones are tested against.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
import xarray as xr

from . import _selection_boost as _b
from ._validate import QuasirlValueError, check_int, check_real, is_concrete


# --------------------------------------------------------------------------------------------
# axes
# --------------------------------------------------------------------------------------------
def _reals(name: str, x) -> np.ndarray:
    """x as a float64 array: numbers only (strings, objects and complex numbers refused)."""
    a = np.asarray(x)
    if a.dtype == object or a.dtype == bool or not np.issubdtype(a.dtype, np.number):
        raise QuasirlValueError(f"{name} must be a number or an array of numbers, got "
                                f"{f'dtype {a.dtype}' if a.ndim else repr(x)}")
    check_real(name, a)
    a = a.astype(np.float64)
    if np.isnan(a).any():
        i = tuple(np.argwhere(np.isnan(a))[0])
        raise QuasirlValueError(f"{name} must not be NaN, but {name}{list(i) if i else ''} = nan")
    return a


def _scalar(name: str, x, lo: float, hi: float, *, open_lo=False, open_hi=False) -> float:
    """A number in [lo, hi] (ends open where asked) as a float."""
    a = _reals(name, x)
    if a.ndim:
        raise QuasirlValueError(f"{name} must be a number, got shape {a.shape}")
    v = float(a)
    if not (np.isfinite(v) and (lo < v if open_lo else lo <= v) and (v < hi if open_hi else
                                                                        v <= hi)):
        interval = f"{'(' if open_lo else '['}{lo:g}, {hi:g}{')' if open_hi else ']'}"
        raise QuasirlValueError(f"{name} must lie in {interval}, got {v!r}")
    return v


def _axis(name: str, values, lo=None, hi=None) -> np.ndarray:
    a = _reals(name, values)
    if a.ndim != 1 or a.size < 2:
        raise QuasirlValueError(f"{name} must be a 1-D array of at least 2 values, got shape "
                                f"{a.shape}")
    bad = ~np.isfinite(a)
    if lo is not None:
        bad |= a < lo
    if hi is not None:
        bad |= a > hi
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        rng = f" in [{lo}, {hi}]" if lo is not None else ""
        raise QuasirlValueError(f"{name} must be finite{rng}, but {name}[{i}] = {a[i]!r}")
    if np.any(np.diff(a) <= 0):
        i = int(np.flatnonzero(np.diff(a) <= 0)[0]) + 1
        raise QuasirlValueError(f"{name} must be strictly increasing, but {name}[{i}] = {a[i]!r}"
                                f" <= {name}[{i - 1}] = {a[i - 1]!r}")
    return a


def selection_rates(selection):
    """(TPR, FPR) with log(TPR/FPR) = selection and max(TPR, FPR) = 1."""
    if is_concrete(selection):
        _reals("selection", selection)
    L = jnp.asarray(selection, dtype=jnp.result_type(float))
    return jnp.minimum(1.0, jnp.exp(L)), jnp.minimum(1.0, jnp.exp(-L))


def _logit(x):
    return np.log(x) - np.log1p(-x)


def _dataset(fields: dict, coords: dict, attrs: dict) -> xr.Dataset:
    dims = tuple(coords)
    data = {k: xr.DataArray(np.asarray(v, dtype=np.float64), dims=dims,
                            attrs={"long_name": desc}) for k, (v, desc) in fields.items()}
    return xr.Dataset(data, coords=coords, attrs=attrs)


# --------------------------------------------------------------------------------------------
# phase diagrams
# --------------------------------------------------------------------------------------------
def phase_diagram_rates(tpr, fpr, eps0, g=None, rounds: int | None = None) -> xr.Dataset:
    """Error of the loop over the (TPR, FPR) plane: Dataset with dims ("tpr", "fpr").

    tpr, fpr: increasing 1-D grids in [0, 1]; eps0: start error; g: adaptation map (None =
    ideal learner; its parameters must be scalars); rounds: error after that many rounds, or
    the limit (rounds=None; analytic for affine maps). Variables: ``error``, ``ratio`` =
    error / eps0 (< 1 where selection lowers the error) and ``acceptance`` A(error).
    For the ideal learner ratio < 1 exactly where FPR < TPR (the boundary is the diagonal).
    """
    t = _axis("tpr", tpr, 0.0, 1.0)
    f = _axis("fpr", fpr, 0.0, 1.0)
    e0 = _scalar("eps0", eps0, 0.0, 1.0, open_lo=True, open_hi=True)
    for name, v in _b._map_params(_b._as_map(g)):
        if np.ndim(v):
            raise QuasirlValueError(f"{name} must be a scalar for a phase diagram (the plane "
                                    f"is the grid), got shape {np.shape(v)}")
    T, F = np.meshgrid(t, f, indexing="ij")
    if rounds is None:
        err = _b.limit_error(e0, T, F, g)
    else:
        err = _b.adapt_trajectory(e0, T, F, g, rounds)[..., -1]
    err = np.asarray(err)
    fields = {"error": (err, "error rate eps"), "ratio": (err / e0, "eps / eps0"),
              "acceptance": (np.asarray(_b._acceptance(err, T, F)), "acceptance rate")}
    attrs = {"eps0": e0, "rounds": -1 if rounds is None else int(rounds),
             "map": repr(g if g is not None else "ideal")}
    return _dataset(fields, {"tpr": t, "fpr": f}, attrs)


def phase_diagram_imitation(selection, lam, eps0) -> xr.Dataset:
    """Limiting error with partial imitation over (log(TPR/FPR), lam): dims ("selection", "lam").

    g(w) = (1 - lam) eps0 + lam w, start eps0. Variables ``error`` (the limit, analytic) and
    ``ratio`` = error / eps0. For lam > 0 the loop lowers the error exactly where selection > 0;
    ratio <= kappa < 1 needs lam > 1 - kappa (see :func:`imitation_boundary`).
    """
    L = _axis("selection", selection)
    lam = _axis("lam", lam, 0.0, 1.0)
    e0 = _scalar("eps0", eps0, 0.0, 1.0, open_lo=True, open_hi=True)
    Lg, lg = np.meshgrid(L, lam, indexing="ij")
    t, f = selection_rates(Lg)
    err = np.asarray(_b.limit_error(e0, t, f, _b.partial_imitation(e0, lg)))
    fields = {"error": (err, "limiting error rate"), "ratio": (err / e0, "eps_inf / eps0")}
    return _dataset(fields, {"selection": L, "lam": lam}, {"eps0": e0})


def phase_diagram_intrinsic(selection, mu, nu: float = 0.0, eps0: float = 0.5) -> xr.Dataset:
    """Limiting error of the two-type quasispecies over (log(TPR/FPR), mu).

    Dims ("selection", "mu").

    Selection with fitness (TPR, FPR) for (right, wrong) and mutation right -> wrong at rate mu,
    wrong -> right at rate nu. With nu = 0 the right type survives iff mu < 1 - FPR/TPR (the
    error threshold, :func:`error_threshold`), where the error is mu / (1 - FPR/TPR); beyond it
    the error is 1. Variables ``error`` and ``master`` = 1 - error (fraction right).
    """
    L = _axis("selection", selection)
    mu = _axis("mu", mu, 0.0, 1.0)
    nu = _scalar("nu", nu, 0.0, 1.0)
    e0 = _scalar("eps0", eps0, 0.0, 1.0)
    if e0 >= 1:
        raise QuasirlValueError(f"eps0 must be < 1 (1 is absorbing without back mutation), got "
                                f"{e0!r}")
    if mu[-1] + nu > 1:
        raise QuasirlValueError(f"mu + nu must be <= 1, but mu[{mu.size - 1}] + nu = "
                                f"{mu[-1] + nu!r}")
    Lg, mg = np.meshgrid(L, mu, indexing="ij")
    t, f = selection_rates(Lg)
    err = np.asarray(_b.limit_error(e0, t, f, _b.intrinsic_error(mg, nu)))
    fields = {"error": (err, "limiting error rate"), "master": (1.0 - err, "fraction right")}
    return _dataset(fields, {"selection": L, "mu": mu}, {"eps0": e0, "nu": nu})


# --------------------------------------------------------------------------------------------
# closed-form boundaries (oracles)
# --------------------------------------------------------------------------------------------
def rates_boundary(eps0: float, target: float, lam: float = 1.0, rounds: int | None = None):
    """Slope c of the boundary FPR = c TPR where error / eps0 = target, in the (TPR, FPR) plane.

    Ideal learner after n rounds: c = exp((logit(target eps0) - logit(eps0)) / n). Partial
    imitation in the limit (lam < 1): with x = target eps0, y = eps0 (1 - (1 - target) / lam),
    c = odds(y) / odds(x) (NaN when lam <= 1 - target: unreachable). Ideal learner in the
    limit: c = 1 (every FPR < TPR drives the error to 0).
    """
    eps0 = _scalar("eps0", eps0, 0.0, 1.0, open_lo=True, open_hi=True)
    target = _scalar("target", target, 0.0, 1.0 / eps0, open_lo=True, open_hi=True)
    lam = _scalar("lam", lam, 0.0, 1.0)
    if rounds is not None:
        rounds = check_int("rounds", rounds, minimum=1)
    x = target * eps0
    if lam >= 1:
        if rounds is None:
            return 1.0
        return float(np.exp((_logit(x) - _logit(eps0)) / rounds))
    if rounds is not None:
        raise QuasirlValueError("rates_boundary has no closed form for lam < 1 after finitely "
                                "many rounds; use rounds=None (the limit)")
    y = eps0 * (1.0 - (1.0 - target) / lam) if lam > 0 else -1.0
    if y <= 0:
        return float("nan")
    return float(np.exp(_logit(y) - _logit(x)))


def imitation_boundary(lam, eps0: float, target: float):
    """Selection log(TPR/FPR) at which partial imitation reaches error target * eps0, per lam.

    From eps* = (1 - lam) eps0 + lam w(eps*) with eps* = x = target eps0:
    L(lam) = logit(x) - logit(y), y = eps0 (1 - (1 - target) / lam); +inf for lam <= 1 - target.
    For eps0 < 1/2, L is convex in lam (logit is concave increasing below 1/2, y concave).
    """
    lam = _reals("lam", lam)
    if ((lam < 0) | (lam > 1)).any():
        i = tuple(np.argwhere((lam < 0) | (lam > 1))[0])
        raise QuasirlValueError(f"lam must lie in [0, 1], but lam{list(i) if i else ''} = "
                                f"{lam[i].item()!r}")
    eps0 = _scalar("eps0", eps0, 0.0, 1.0, open_lo=True, open_hi=True)
    target = _scalar("target", target, 0.0, 1.0 / eps0, open_lo=True, open_hi=True)
    x = target * eps0
    with np.errstate(divide="ignore", invalid="ignore"):
        y = eps0 * (1.0 - (1.0 - target) / lam)
        out = _logit(x) - _logit(np.where(y > 0, y, np.nan))
    return np.where(y > 0, out, np.inf)


def error_threshold(selection):
    """Error threshold of the two-type quasispecies (nu = 0): mu_c = 1 - FPR/TPR = 1 - e^-L."""
    return -np.expm1(-_reals("selection", selection))


def intrinsic_boundary(selection, target: float, nu: float = 0.0):
    """Mutation rate mu at which the limiting error equals ``target``, per selection L > 0.

    From target = mu + (1 - mu - nu) w(target): mu = (target - (1 - nu) w) / (1 - w), with
    w = target rho / (target rho + 1 - target), rho = e^-L. For nu = 0: mu = target (1 - e^-L).
    """
    rho = np.exp(-_reals("selection", selection))
    target = _scalar("target", target, 0.0, 1.0)
    nu = _scalar("nu", nu, 0.0, 1.0)
    w = target * rho / (target * rho + 1.0 - target)
    return (target - (1.0 - nu) * w) / (1.0 - w)


# --------------------------------------------------------------------------------------------
# boundaries and convexity of 2-D labelled arrays
# --------------------------------------------------------------------------------------------
def _check_2d(da) -> xr.DataArray:
    if not isinstance(da, xr.DataArray):
        raise QuasirlValueError(f"expected an xarray.DataArray, got {type(da).__name__}")
    if da.ndim != 2:
        raise QuasirlValueError(f"expected a 2-D DataArray, got dims {da.dims}")
    for d in da.dims:
        if d not in da.coords:
            raise QuasirlValueError(f"dimension {d!r} has no coordinate values")
        _axis(str(d), da.coords[d].values)
    return da


def boundary(da, level: float) -> list[np.ndarray]:
    """Contour of a 2-D labelled array at ``level``: a list of polylines in coordinate units.

    Each polyline is an [m, 2] array whose columns follow ``da.dims`` (e.g. (tpr, fpr)); points
    lie on grid edges, placed by linear interpolation of the values at the two ends (marching
    squares via contourpy). NaN cells are masked. Closed loops repeat their first point.
    """
    import contourpy

    da = _check_2d(da)
    z = np.asarray(da.values, dtype=np.float64)
    x0 = np.asarray(da.coords[da.dims[0]].values, dtype=np.float64)
    x1 = np.asarray(da.coords[da.dims[1]].values, dtype=np.float64)
    # contourpy wants z[ny, nx] with x along columns: columns <-> dims[1], rows <-> dims[0]
    gen = contourpy.contour_generator(x=x1, y=x0, z=np.ma.masked_invalid(z),
                                      line_type=contourpy.LineType.Separate)
    return [np.ascontiguousarray(seg[:, ::-1]) for seg in gen.lines(float(level))]


def region_mask(da, level: float, side: str = "below") -> np.ndarray:
    """Boolean grid of the region {value <= level} (side="below") or {value >= level}; NaN out."""
    da = _check_2d(da)
    if side not in ("below", "above"):
        raise QuasirlValueError(f"side must be 'below' or 'above', got {side!r}")
    z = np.asarray(da.values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        m = z <= level if side == "below" else z >= level
    return m & np.isfinite(z)


class Convexity(NamedTuple):
    """Verdict of :func:`is_convex`.

    convex: no grid point outside the region lies inside the convex hull of the grid points
    inside it (deeper than tol); depth: the deepest such point's distance inside the hull, in
    axis-normalised units (each axis scaled to [0, 1]); witness: that point's coordinates (in
    ``dims`` order) or None; hull_deficit: fraction of the grid points in the hull that are
    outside the region; inside: number of grid points in the region.
    """

    convex: bool
    depth: float
    witness: Any
    hull_deficit: float
    inside: int


def is_convex(da, level: float, side: str = "below", tol: float = 1e-9) -> Convexity:
    """Is the region {da <= level} (or {da >= level}) of a 2-D labelled array convex?

    Tests digital convexity of the sampled region S: no grid point outside S lies strictly
    inside (by more than ``tol``) the convex hull of S. A convex region always passes (conv(S)
    lies in the region, so no outside grid point can be inside it); a non-convex one fails as
    soon as the grid resolves a dent. Convexity is judged in the array's coordinates (it is
    invariant under rescaling an axis, not under a non-linear change of axis such as
    lam -> log lam). An empty or full region is convex. Works on any 2-D DataArray whose dims
    have increasing coordinates.
    """
    from scipy.spatial import ConvexHull, QhullError

    da = _check_2d(da)
    inside = region_mask(da, level, side)
    c0 = np.asarray(da.coords[da.dims[0]].values, dtype=np.float64)
    c1 = np.asarray(da.coords[da.dims[1]].values, dtype=np.float64)
    n0 = (c0 - c0[0]) / (c0[-1] - c0[0])
    n1 = (c1 - c1[0]) / (c1[-1] - c1[0])
    P = np.stack(np.meshgrid(n0, n1, indexing="ij"), axis=-1).reshape(-1, 2)
    flat = inside.ravel()
    n_in = int(flat.sum())
    if n_in == 0 or n_in == flat.size:
        return Convexity(True, 0.0, None, 0.0, n_in)
    pin, pout = P[flat], P[~flat]
    try:
        hull = ConvexHull(pin)
        eq = hull.equations  # normal . x + offset <= 0 inside
        depth_out = -np.max(pout @ eq[:, :2].T + eq[:, 2], axis=1)  # > 0: strictly inside
    except QhullError:
        # collinear (or single) inside points: the hull is a segment from a to b
        a, b = pin[np.argmin(pin @ (pin[-1] - pin[0]))], pin[np.argmax(pin @ (pin[-1] - pin[0]))]
        ab = b - a
        L2 = float(ab @ ab)
        s = np.clip(((pout - a) @ ab) / L2, 0.0, 1.0) if L2 > 0 else np.zeros(len(pout))
        # a segment has no interior: outside points are at best on it (depth 0)
        depth_out = -np.linalg.norm(pout - (a + s[:, None] * ab), axis=1)
    inner = depth_out > tol
    n_hull = n_in + int(inner.sum())
    if inner.any():
        k = int(np.argmax(depth_out))
        idx = np.flatnonzero(~flat)[k]
        i, j = np.unravel_index(idx, inside.shape)
        witness = (float(c0[i]), float(c1[j]))
        return Convexity(False, float(depth_out[k]), witness, inner.sum() / n_hull, n_in)
    return Convexity(True, float(max(depth_out.max(), 0.0)), None, 0.0, n_in)
