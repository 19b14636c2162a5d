"""bench.png: measured time against the roofline floor and the numpy reference, per row."""

from __future__ import annotations

import numpy as np


def roofline_figure(rows: list[dict], path, title: str = ""):
    """Two panels: seconds (measured, floor, numpy; log scale) and fraction of the floor."""
    from quasirl.plots._style import new_figure, savefig

    labels = [f"{r['scenario']} {r['case']}" for r in rows]
    y = np.arange(len(rows))
    meas = np.array([r.get("min_s", np.nan) for r in rows], float)
    floor = np.array([r.get("floor_s", np.nan) or np.nan for r in rows], float)
    numpy_s = np.array([r.get("numpy_s", np.nan) or np.nan for r in rows], float)
    frac = np.array([r.get("frac_floor", np.nan) for r in rows], float)
    fbw = np.array([r.get("frac_bw_floor", np.nan) for r in rows], float)
    fig, axes = new_figure(1, 2, width=5.2, height=0.32 * len(rows) + 2.0)
    a1, a2 = axes[0]
    h = 0.27
    a1.barh(y - h, numpy_s, h, color="0.75", edgecolor="k", label="numpy reference")
    a1.barh(y, meas, h, color="0.35", edgecolor="k", label="quasirl (min of repeats)")
    a1.barh(y + h, floor, h, color="white", edgecolor="k", hatch="//", label="roofline floor")
    a1.set_xscale("log")
    a1.set_yticks(y, labels)
    a1.invert_yaxis()
    a1.set_xlabel("time t [s]")
    a1.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, frameon=False)
    a2.barh(y - h / 2, frac * 100, h, color="0.35", edgecolor="k", label="% of roofline floor")
    a2.barh(y + h / 2, fbw * 100, h, color="white", edgecolor="k", hatch="..",
            label="% of bandwidth floor")
    a2.set_yticks(y, [""] * len(rows))
    a2.invert_yaxis()
    a2.set_xscale("log")
    # bars from a whole decade below the smallest value (a log axis has no zero), each
    # labelled with its value
    vals = np.concatenate([frac, fbw]) * 100
    lo = np.nanmin(vals[vals > 0]) if np.any(vals > 0) else 1.0
    a2.set_xlim(10.0 ** np.floor(np.log10(lo)), 150)
    for yy, v in ((y - h / 2, frac), (y + h / 2, fbw)):
        for yi, vi in zip(yy, v * 100, strict=True):
            if np.isfinite(vi) and vi > 0:
                a2.text(vi * 1.04, yi, f"{vi:.0f}%" if vi >= 10 else f"{vi:.1f}%",
                        va="center", fontsize=7)
    a2.set_xlabel("floor / measured [%]")
    a2.axvline(100, color="k", lw=0.8)
    a2.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
    if title:
        fig.suptitle(title)
    savefig(fig, path)
    return fig
