"""Figures for the selection analyses: error trajectories, phase diagrams, best-of-N, Luce."""

from __future__ import annotations

import matplotlib.patheffects as pe
import numpy as np

from ._style import FIELD_CMAP, LINESTYLES, MARKERS, line_colors, new_figure

_HALO = [pe.Stroke(linewidth=3.6, foreground="white"), pe.Normal()]
_DARK_HALO = [pe.Stroke(linewidth=3.6, foreground="black"), pe.Normal()]


def plot_error_trajectories(recurrence, mc_mean, mc_lo, mc_hi, labels, *, level=0.95,
                            title="Error rate under iterated selection", log=True):
    """Recurrence (lines) against Monte Carlo across seeds (mean dots, central ``level`` band).

    recurrence, mc_mean, mc_lo, mc_hi: [k, rounds+1] arrays, one row per scenario; labels: k
    strings. The y axis is logarithmic by default (the ideal learner's error falls
    geometrically in odds); Monte Carlo values of exactly 0 sit on the bottom edge.
    """
    rec = np.atleast_2d(np.asarray(recurrence, dtype=float))
    mean, lo, hi = (np.atleast_2d(np.asarray(a, dtype=float)) for a in (mc_mean, mc_lo, mc_hi))
    n = np.arange(rec.shape[1])
    fig, ax = new_figure(width=7.6, height=3.8)
    colors = line_colors(len(rec))
    positive = np.concatenate([rec[rec > 0], lo[lo > 0], mean[mean > 0]])
    floor = max(positive.min() / 3 if positive.size else 1e-6, 1e-12)
    for i, label in enumerate(labels):
        c = colors[i]
        ax.fill_between(n, np.maximum(lo[i], floor), np.maximum(hi[i], floor), color=c,
                        alpha=0.22, linewidth=0)
        ax.plot(n, rec[i], color=c, linestyle=LINESTYLES[i % len(LINESTYLES)],
                label=f"{label}: recurrence")
        ax.plot(n, np.maximum(mean[i], floor), linestyle="none", marker=MARKERS[i % len(MARKERS)],
                markersize=3.5, color=c, label=f"{label}: Monte Carlo mean")
    if log:
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor)
    ax.set_xlabel("round n")
    ax.set_ylabel(r"error rate $\varepsilon_n$")
    ax.set_title(title)
    ax.legend(title=f"bands: central {level:.0%} across seeds", loc="center left",
              bbox_to_anchor=(1.02, 0.5), fontsize=7, title_fontsize=7)
    return fig


def _edges(c):
    c = np.asarray(c, dtype=float)
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def plot_selection_phase(da, level, lines, *, analytic=None, analytic_label="closed form",
                         extra=None, extra_label=None, title=None, xlabel=None, ylabel=None,
                         cbar_label=None, vmax=None, verdict=None):
    """A phase diagram (2-D labelled array) with its boundary at ``level``.

    da: xarray.DataArray with dims (x, y) (first dim on the x axis); lines: polylines from
    ``quasirl.selection.boundary`` (columns in dims order), drawn solid; analytic: optional
    (x, y) arrays of the closed-form boundary, drawn dashed; extra: another (x, y) curve (e.g.
    an error threshold), dotted; verdict: text for the corner (e.g. the convexity result).
    """
    x = np.asarray(da.coords[da.dims[0]].values, dtype=float)
    y = np.asarray(da.coords[da.dims[1]].values, dtype=float)
    z = np.asarray(da.values, dtype=float).T
    fig, ax = new_figure(width=5.0, height=4.0)
    finite = z[np.isfinite(z)]
    top = vmax if vmax is not None else (float(np.quantile(finite, 0.99)) if finite.size else 1)
    mesh = ax.pcolormesh(_edges(x), _edges(y), z, cmap=FIELD_CMAP, vmin=0.0, vmax=top,
                         shading="flat", rasterized=True)
    cb = fig.colorbar(mesh, ax=ax)
    cb.set_label(cbar_label or str(da.attrs.get("long_name", da.name)))
    for k, seg in enumerate(lines):
        ax.plot(seg[:, 0], seg[:, 1], color="black", linewidth=2.0, path_effects=_HALO,
                label=f"boundary: {cb.ax.get_ylabel()} = {level:g}" if k == 0 else None)
    if analytic is not None:
        ax.plot(*analytic, color="white", linestyle="--", linewidth=1.4, path_effects=_DARK_HALO,
                label=analytic_label)
    if extra is not None:
        ax.plot(*extra, color="white", linestyle=":", linewidth=1.6, path_effects=_DARK_HALO,
                label=extra_label)
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(y[0], y[-1])
    ax.set_xlabel(xlabel or da.dims[0])
    ax.set_ylabel(ylabel or da.dims[1])
    ax.grid(False)
    if title:
        ax.set_title(title)
    if verdict:
        ax.text(0.98, 0.02, verdict, transform=ax.transAxes, fontsize=7, va="bottom", ha="right",
                bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "0.5"})
    ax.legend(loc="upper left", fontsize=7, framealpha=0.85)
    return fig


def plot_best_of_n(N, kl, bound, kl_binary, *, label="random instance"):
    """KL(best-of-N || reference) against N with the bound log N - (N-1)/N.

    N: 1-D sample counts; kl: [k, len(N)] exact KLs of k instances; bound: [len(N)];
    kl_binary: [len(N)] the two-point counterexample (KL stays below log 2).
    """
    N = np.asarray(N, dtype=float)
    kl = np.atleast_2d(np.asarray(kl, dtype=float))
    fig, ax = new_figure(width=5.0, height=3.6)
    ax.plot(N, bound, color="black", linewidth=2.0, label=r"bound $\log N-(N-1)/N$")
    for i, row in enumerate(kl):
        ax.plot(N, row, color="0.55", linewidth=0.9, linestyle="-",
                label=f"{label}s (exact)" if i == 0 else None)
    ax.plot(N, kl_binary, color=line_colors(3)[1], linestyle="--", marker="o", markersize=3,
            label="two-point support, p = (1/2, 1/2)")
    ax.axhline(np.log(2), color="0.3", linestyle=":", linewidth=1.0, label=r"$\log 2$")
    ax.set_xscale("log")
    ax.set_xlabel("N (samples per best-of-N draw)")
    ax.set_ylabel(r"KL($\pi_N$ || reference)  [nats]")
    ax.set_title("Best-of-N: exact KL against the quoted formula")
    ax.legend(fontsize=7)
    return fig


def plot_luce_curation(y, p, curated, Ks, tilted):
    """Law of the curated sample for several K (Luce choice) against the tilt p e^r / Z.

    y: item rewards (x axis); p: reference law; curated: [len(Ks), n]; tilted: [n].
    """
    y = np.asarray(y, dtype=float)
    fig, ax = new_figure(width=5.0, height=3.6)
    ax.plot(y, p, color="0.55", linestyle="-", marker="s", markersize=3, label="reference p")
    colors = line_colors(len(Ks))
    for i, K in enumerate(Ks):
        ax.plot(y, curated[i], color=colors[i], linestyle=LINESTYLES[(i + 1) % len(LINESTYLES)],
                marker=MARKERS[(i + 1) % len(MARKERS)], markersize=3, label=f"Luce, K = {K}")
    ax.plot(y, tilted, color="black", linewidth=2.0, label=r"tilt $p\,e^{r}/Z$ (K $\to\infty$)")
    ax.set_xlabel("reward r")
    ax.set_ylabel("probability")
    ax.set_title("One round of curation (Ferbach et al. 2024)")
    ax.legend(fontsize=7)
    return fig
