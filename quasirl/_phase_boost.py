"""Boosting phase diagrams: the selection module's three planes, boundaries, theory, convexity.

The planes, fields and closed-form boundaries come from :mod:`quasirl.selection` (this module
adds no theory of its own); here each plane gets its numeric boundary (level crossings along
one axis, :func:`quasirl.phase.boundary_curve`), the closed-form curve it should follow, their
largest deviation, and the convexity verdict of the amplifying region
(:func:`quasirl.selection.is_convex`).

* rates (TPR, FPR), ideal learner after ``rounds`` rounds: error / eps0 <= target below the
  line FPR = c TPR, c = exp((logit(target eps0) - logit(eps0)) / rounds); in the limit of many
  rounds the boundary of {error / eps0 <= 1} is exactly the diagonal FPR = TPR.
* imitation (log(TPR/FPR), lam): limiting error / eps0 <= target right of
  L(lam) = logit(target eps0) - logit(eps0 (1 - (1 - target) / lam)).
* intrinsic (log(TPR/FPR), mu): limiting error <= t below mu(L) = (t - (1 - nu) w) / (1 - w),
  w = t e^-L / (t e^-L + 1 - t), t = the plane's level (``target`` unless given); the right
  type dies beyond the error threshold mu_c = 1 - e^-L (nu = 0).
"""

from __future__ import annotations

import numpy as np

from ._validate import QuasirlValueError, check_int


def _verdict(ds, field: str, level: float) -> None:
    from . import selection

    v = selection.is_convex(ds[field], level, side="below")
    ds.attrs.update(
        field=field, level=float(level), convex=int(v.convex), convex_depth=float(v.depth),
        convex_witness="" if v.witness is None else repr(v.witness),
        hull_deficit=float(v.hull_deficit), region_points=int(v.inside),
    )


def _deviation(ds, numeric: str, theory: str) -> float:
    a, b = ds[numeric].values, ds[theory].values
    ok = np.isfinite(a) & np.isfinite(b)
    both_nan = ~np.isfinite(a) & ~np.isfinite(b)
    ds.attrs["boundary_points"] = int(ok.sum())
    ds.attrs["boundary_mismatch_points"] = int((~ok & ~both_nan).sum())
    return float(np.abs(a[ok] - b[ok]).max()) if ok.any() else float("nan")


def boost_phase_diagrams(eps0: float = 0.3, rounds: int = 5, target: float = 0.5,
                         n: int = 61, nu: float = 0.0, eps0_intrinsic: float = 0.5,
                         level_intrinsic: float | None = None) -> dict:
    """The three boosting planes with numeric boundaries, theory curves and convexity verdicts.

    eps0: starting error of the loop; rounds: rounds for the (TPR, FPR) plane; target: the
    level that defines "amplifies" (error / eps0 <= target); n: grid points per axis; nu:
    back-mutation rate of the intrinsic plane, eps0_intrinsic its starting error and
    level_intrinsic its level (error <= level_intrinsic; default ``target``). ``quasirl phase``
    and ``quasirl boost`` both draw and report these planes.

    Returns {"rates", "imitation", "intrinsic"} -> ``xarray.Dataset`` (the selection module's
    Dataset plus ``<axis>_boundary`` (numeric), ``<axis>_theory`` (closed form) over the other
    axis, and attrs ``max_abs_dev`` (in units of the boundary's axis), ``boundary_points``
    (where both are finite), ``convex`` (0/1), ``convex_depth``, ``convex_witness``,
    ``hull_deficit``, ``region_points``, ``level``). The rates plane also holds ``ratio_limit``
    (many rounds) with ``fpr_boundary_limit``; ideal-learner theory says it equals ``tpr``
    exactly (the diagonal, level 1): ``exact_dev_limit`` records the largest deviation and
    ``convex_limit`` (0/1) the convexity verdict of {ratio_limit <= 1}.
    """
    from . import selection
    from ._phase_geometry import boundary_curve

    if not 0 < target < 1:
        raise QuasirlValueError(f"target must lie in (0, 1), got {target!r}")
    n = check_int("n", n, minimum=5)
    rounds = check_int("rounds", rounds, minimum=1)
    level_i = target if level_intrinsic is None else level_intrinsic
    if not 0 < level_i < 1:
        raise QuasirlValueError(f"level_intrinsic must lie in (0, 1), got {level_intrinsic!r}")

    # (TPR, FPR): the same grid on both axes, so the diagonal passes through grid points.
    g = np.linspace(1.0 / n, 1.0, n)
    rates = selection.phase_diagram_rates(g, g, eps0, rounds=rounds)
    c = selection.rates_boundary(eps0, target, rounds=rounds)
    rates["fpr_boundary"] = boundary_curve(rates["ratio"], target, along="tpr", across="fpr")
    theory = c * g
    rates["fpr_theory"] = ("tpr", np.where((theory >= g[0]) & (theory <= g[-1]), theory, np.nan))
    rates.attrs["max_abs_dev"] = _deviation(rates, "fpr_boundary", "fpr_theory")
    rates.attrs["slope_theory"] = float(c)
    limit = selection.phase_diagram_rates(g, g, eps0)
    rates["ratio_limit"] = limit["ratio"]
    rates["fpr_boundary_limit"] = boundary_curve(limit["ratio"], 1.0, along="tpr", across="fpr")
    rates.attrs["exact_dev_limit"] = float(np.nanmax(np.abs(
        rates["fpr_boundary_limit"].values - g)))
    rates.attrs["convex_limit"] = int(selection.is_convex(limit["ratio"], 1.0).convex)
    rates.attrs["rounds"] = rounds
    _verdict(rates, "ratio", target)

    # (selection, lam)
    L = np.linspace(-1.0, 4.0, n)
    # lam < 1: at lam = 1 (the ideal learner) the limit jumps from eps0 to 0 at selection 0+,
    # a discontinuity that no interpolation on a grid resolves (the rates plane covers it).
    lam = np.linspace(0.02, 0.98, n)
    imit = selection.phase_diagram_imitation(L, lam, eps0)
    imit["selection_boundary"] = boundary_curve(imit["ratio"], target, along="lam",
                                                across="selection")
    th = selection.imitation_boundary(lam, eps0, target)
    imit["selection_theory"] = ("lam", np.where((th >= L[0]) & (th <= L[-1]), th, np.nan))
    imit.attrs["max_abs_dev"] = _deviation(imit, "selection_boundary", "selection_theory")
    _verdict(imit, "ratio", target)

    # (selection, mu)
    Li = np.linspace(-1.0, 4.0, n)
    mu = np.linspace(0.0, 0.98, n)
    intr = selection.phase_diagram_intrinsic(Li, mu, nu=nu, eps0=eps0_intrinsic)
    intr["mu_boundary"] = boundary_curve(intr["error"], level_i, along="selection", across="mu")
    th = np.asarray(selection.intrinsic_boundary(Li, level_i, nu))
    intr["mu_theory"] = ("selection", np.where((Li >= 0) & (th >= mu[0]) & (th <= mu[-1]), th,
                                               np.nan))
    intr["mu_threshold"] = ("selection", np.where(Li > 0, selection.error_threshold(Li), np.nan))
    intr.attrs["max_abs_dev"] = _deviation(intr, "mu_boundary", "mu_theory")
    _verdict(intr, "error", level_i)
    for ds in (rates, imit, intr):
        ds.attrs["target"] = float(target)
        ds.attrs["eps0"] = float(ds.attrs.get("eps0", eps0))
    return {"rates": rates, "imitation": imit, "intrinsic": intr}
