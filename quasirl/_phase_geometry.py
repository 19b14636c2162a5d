"""Phase boundaries from sampled fields: level crossings with interpolation."""

from __future__ import annotations

import numpy as np

from ._validate import QuasirlValueError

SCALES = ("linear", "log", "inverse")


def _warp(x, scale):
    if scale == "log":
        return np.log(x)
    if scale == "inverse":
        return 1.0 / x
    return x


def _unwarp(u, scale):
    if scale == "log":
        return np.exp(u)
    if scale == "inverse":
        return 1.0 / u
    return u


def crossings(x, y, level: float, scale: str = "linear") -> np.ndarray:
    """Every x where the sampled curve y(x) crosses ``level``, by linear interpolation.

    x: 1-D strictly increasing sample positions; y: values there (NaN samples are skipped).
    Between neighbours (x_j, y_j), (x_{j+1}, y_{j+1}) on opposite sides of the level the
    crossing is x_j + (level - y_j) (x_{j+1} - x_j) / (y_{j+1} - y_j), computed in the warped
    coordinate u = x, log x or 1/x (``scale``), so that a curve that is linear in log x (or 1/x)
    is located exactly. Samples equal to the level count once. Returns the crossings in
    increasing order (empty when there is none).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.ndim != 1 or y.shape != x.shape:
        raise QuasirlValueError(f"x and y must be 1-D of equal length, got {x.shape}, {y.shape}")
    if scale not in SCALES:
        raise QuasirlValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if x.size > 1 and np.any(np.diff(x) <= 0):
        i = int(np.flatnonzero(np.diff(x) <= 0)[0])
        raise QuasirlValueError(f"x must be strictly increasing, but x[{i + 1}] <= x[{i}]")
    if scale in ("log", "inverse") and np.any(x <= 0):
        raise QuasirlValueError(f"scale {scale!r} needs x > 0, got min(x) = {x.min()}")
    ok = np.isfinite(y)
    u, y = _warp(x[ok], scale), y[ok] - level
    out = list(u[y == 0])
    a, b = y[:-1], y[1:]
    j = np.flatnonzero(a * b < 0)
    out += list(u[j] + (-a[j]) * (u[j + 1] - u[j]) / (b[j] - a[j]))
    return np.sort(_unwarp(np.asarray(out, dtype=float), scale))


def boundary_curve(field, level: float, along: str, across: str | None = None,
             which: str = "first", scale: str = "linear"):
    """The phase boundary of a 2-D field: where it crosses ``level``, one point per ``along``.

    field: an ``xarray.DataArray`` with two dimension coordinates. For each value of ``along``
    the field is read as a curve over ``across`` (the other dimension) and its crossing of
    ``level`` is located by linear interpolation (see :func:`crossings`, ``scale`` = the
    coordinate in which to interpolate); ``which`` = "first" or "last" picks the smallest or
    largest crossing. Returns a DataArray over ``along`` holding the crossing positions in units
    of ``across`` (NaN where the curve never crosses), named ``<across>_boundary``.
    """
    import xarray as xr

    if not isinstance(field, xr.DataArray):
        raise QuasirlValueError(f"field must be an xarray.DataArray, got {type(field).__name__}")
    if field.ndim != 2:
        raise QuasirlValueError(f"field must be 2-D, got dims {field.dims}")
    if along not in field.dims:
        raise QuasirlValueError(f"along={along!r} is not a dimension of field {field.dims}")
    if across is None:
        across = next(d for d in field.dims if d != along)
    if across not in field.dims or across == along:
        raise QuasirlValueError(f"across={across!r} must be the other dimension of {field.dims}")
    if which not in ("first", "last"):
        raise QuasirlValueError(f"which must be 'first' or 'last', got {which!r}")
    f = field.sortby(across).transpose(along, across)
    x = np.asarray(f[across], dtype=float)
    vals = np.asarray(f, dtype=float)
    out = np.full(vals.shape[0], np.nan)
    for i, row in enumerate(vals):
        c = crossings(x, row, level, scale)
        if c.size:
            out[i] = c[0] if which == "first" else c[-1]
    return xr.DataArray(out, coords={along: f[along].values}, dims=(along,),
                        name=f"{across}_boundary", attrs={"level": float(level), "across": across})
