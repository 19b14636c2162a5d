"""Figures for Eigen's model on sequences: the error threshold, class distributions, drift."""

from __future__ import annotations

import numpy as np

from ._style import LINESTYLES, MARKERS, line_colors, new_figure


def plot_master_fraction(sweeps, *, sigma, thresholds=None, full_space=None, title=None):
    """Stationary master-sequence fraction x_0 against the per-site error rate mu, several L.

    sweeps: {L: (mu [n], x0 [n])} (lines; the class reduction); thresholds: {L: (mu_theory,
    mu_numeric)} drawn as a dashed vertical line (Eigen's 1 - sigma^(-1/L)) and a marker on the
    curve (the numeric threshold); full_space: {L: (mu, x0)} from the Kronecker power
    iteration, drawn as open markers on top of the lines. Log y axis: the collapse spans many
    decades.
    """
    fig, ax = new_figure(width=6.4, height=4.0)
    Ls = sorted(sweeps)
    colors = line_colors(len(Ls))
    for i, L in enumerate(Ls):
        mu, x0 = (np.asarray(a, float) for a in sweeps[L])
        c = colors[i]
        ax.plot(mu, np.maximum(x0, 1e-300), color=c, linestyle=LINESTYLES[i % 4],
                label=f"L = {L}")
        if thresholds and L in thresholds:
            mt, mn = thresholds[L]
            ax.axvline(mt, color=c, linestyle=":", linewidth=1.0)
            y = float(np.interp(mn, mu, np.log(np.maximum(x0, 1e-300))))
            ax.plot([mn], [np.exp(y)], marker=MARKERS[i % len(MARKERS)], color=c,
                    markeredgecolor="black", markersize=6, linestyle="none")
    for L, (fm, fx) in sorted((full_space or {}).items()):
        ax.plot(np.asarray(fm, float), np.asarray(fx, float), marker="o", markerfacecolor="none",
                color="black", markersize=4, linestyle="none",
                label=f"L = {L}: full space ($2^{{{L}}}$ genotypes)")
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xlabel(r"per-site error rate $\mu$")
    ax.set_ylabel(r"stationary master fraction $x_0$")
    ax.set_title(title or (rf"Eigen's error threshold, sharp peak $\sigma$ = {sigma:g}" "\n"
                           r"dotted: $1-\sigma^{-1/L}$; filled marker: numeric threshold"))
    ax.legend(loc="lower left", fontsize=7)
    return fig


def plot_class_distribution(L, distributions, *, title=None):
    """Stationary mass in each Hamming class k (distance to the master) for several mu.

    distributions: {label: [L+1] class masses}; log y axis (classes far from the master hold
    astronomically little below the threshold).
    """
    fig, ax = new_figure(width=6.0, height=3.8)
    labels = list(distributions)
    colors = line_colors(len(labels))
    k = np.arange(L + 1)
    for i, lab in enumerate(labels):
        y = np.asarray(distributions[lab], float)
        ax.plot(k, np.where(y > 0, y, np.nan), color=colors[i], linestyle=LINESTYLES[i % 4],
                marker=MARKERS[i % len(MARKERS)], markersize=3, label=lab)
    ax.set_yscale("log")
    ax.set_xlabel("Hamming class k (mutations from the master)")
    ax.set_ylabel("stationary mass in class k")
    ax.set_title(title or f"Stationary class distribution, L = {L}")
    ax.legend(fontsize=7)
    return fig


def plot_wright_fisher(deterministic, trajectories, *, stationary=None, title=None):
    """Master fraction over generations: Wright-Fisher runs beside the deterministic curve.

    deterministic: [G+1] (the infinite-population map); trajectories: {N: [G+1] or [R, G+1]}
    (one line per replicate, thin); stationary: the deterministic stationary value (dotted).
    """
    fig, ax = new_figure(width=6.4, height=3.8)
    det = np.asarray(deterministic, float)
    t = np.arange(det.size)
    Ns = sorted(trajectories)
    colors = line_colors(len(Ns) + 1)
    for i, N in enumerate(Ns):
        tr = np.atleast_2d(np.asarray(trajectories[N], float))
        for r, row in enumerate(tr):
            ax.plot(t, row, color=colors[i], linestyle=LINESTYLES[(i + 1) % 4], linewidth=0.9,
                    alpha=0.85, label=f"Wright-Fisher, N = {N}" if r == 0 else None)
    ax.plot(t, det, color="black", linewidth=2.2, label="deterministic (N = infinity)")
    if stationary is not None:
        ax.axhline(float(stationary), color="black", linestyle=":", linewidth=1.0,
                   label="deterministic stationary")
    ax.set_xlabel("generation t")
    ax.set_ylabel(r"master fraction $x_0(t)$")
    ax.set_ylim(bottom=0)
    ax.set_title(title or "Finite populations: drift around the quasispecies")
    ax.legend(fontsize=7, loc="upper right")
    return fig
