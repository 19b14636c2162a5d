"""Figures for the core MDP analyses: F(T) in its bound band, optimal-path mass, policy maps."""

from __future__ import annotations

import numpy as np

from ._style import FIELD_CMAP, line_colors, new_figure


def plot_free_energy(T, F, max_return, neg_log_w_star, title=None):
    """F(T) = T log Z against T, approaching max R inside the proven band.

    Band: max R - T * (-log w_{p*}) <= F(T) <= max R. T = 0 entries are drawn at the left edge
    as the exact max-plus value.
    """
    T = np.asarray(T, dtype=float)
    F = np.asarray(F, dtype=float)
    pos = T > 0
    fig, ax = new_figure(width=5.4, height=3.8)
    Tp, Fp = T[pos], F[pos]
    order = np.argsort(Tp)
    Tp, Fp = Tp[order], Fp[order]
    lower = max_return - Tp * neg_log_w_star
    ax.fill_between(Tp, np.maximum(lower, Fp.min() - 0.05 * abs(Fp.min() + 1e-9)), max_return,
                    color="0.85", label=r"bound: $\max R + T\log w_{p^*} \leq F \leq \max R$")
    ax.plot(Tp, lower, color="0.55", ls="--", lw=1)
    ax.axhline(max_return, color="k", lw=1, ls=":", label=rf"$\max_p R_p = {max_return:.3g}$")
    ax.plot(Tp, Fp, color=line_colors(1)[0], marker="o", ms=3, label=r"$F(T)=T\log Z(T)$")
    if (~pos).any():
        ax.plot([Tp.min()], [F[~pos][0]], marker="*", ms=11, color="C3", ls="none",
                label=r"$F(0)$, exact max-plus")
    ax.set_xscale("log")
    ax.set_xlabel("temperature $T$ (reward units)")
    ax.set_ylabel("free energy $F(T)$ (reward units)")
    ax.set_ylim(min(Fp.min(), max_return) - 0.1 * (abs(max_return - Fp.min()) + 0.1),
                max_return + 0.1 * (abs(max_return - Fp.min()) + 0.1))
    ax.set_title(title or "Free energy approaches the best return as $T \\to 0$")
    ax.legend(loc="upper right", bbox_to_anchor=(1.0, 0.88), framealpha=0.95)
    return fig


def plot_optimal_mass(T, mass, rest=None, asymptote=None, title=None):
    """Tempered probability of the max-return paths against 1/T, and of the rest (log scale).

    ``rest`` is the probability of the non-optimal paths computed on its own (1 - mass loses
    all digits once it is below ~1e-16); ``asymptote`` is its small-T prediction.
    """
    T = np.asarray(T, dtype=float)
    mass = np.asarray(mass, dtype=float)
    pos = T > 0
    fig, axes = new_figure(1, 2, width=3.6, height=3.4)
    ax1, ax2 = axes[0]
    invT = 1.0 / T[pos]
    ax1.plot(invT, mass[pos], marker="o", ms=3, color=line_colors(1)[0])
    ax1.axhline(1.0, color="k", lw=0.8, ls=":")
    ax1.set_xscale("log")
    ax1.set_xlabel("inverse temperature $1/T$")
    ax1.set_ylabel("optimal-path probability")
    ax1.set_ylim(-0.02, 1.05)
    ax1.set_title("Mass on the max-return paths")
    rest = 1.0 - mass if rest is None else np.asarray(rest, dtype=float)
    ax2.semilogy(invT, rest[pos], marker="o", ms=3, color=line_colors(1)[0], label="computed")
    if asymptote is not None:
        ax2.semilogy(invT, np.asarray(asymptote, dtype=float)[pos], color="C3", ls="--",
                     label=r"$N_2 e^{-\Delta/T}/W_1$")
        ax2.legend()
    ax2.set_xlabel("inverse temperature $1/T$")
    ax2.set_ylabel("1 - optimal-path probability")
    ax2.set_title("Non-optimal mass decays like $e^{-\\Delta/T}$")
    if title:
        fig.suptitle(title)
    return fig


def plot_policy_maps(shape, temperatures, policies, occupancy, walls=None, labels=None,
                     title=None):
    """Soft-policy maps of a gridworld at several temperatures.

    shape: (rows, cols); policies: [n, S, 4] action probabilities (up, right, down, left) at
    t = 0; occupancy: [n, S] expected visits per state under the tempered path law; walls:
    bool [S]; labels: {state index: text} drawn on cells (start, goals, pits).
    """
    rows, cols = shape
    n = len(temperatures)
    fig, axes = new_figure(1, n, width=3.4, height=2.9)
    axes = axes[0]
    vmax = float(np.max(occupancy))
    dirs = np.array([[0, 1], [1, 0], [0, -1], [-1, 0]], dtype=float)  # (dx, dy) for plotting
    yy, xx = np.divmod(np.arange(rows * cols), cols)
    for i, ax in enumerate(axes):
        occ = np.asarray(occupancy[i], dtype=float).reshape(rows, cols)
        img = np.ma.masked_array(occ, mask=None if walls is None else walls.reshape(rows, cols))
        im = ax.imshow(img, cmap=FIELD_CMAP, vmin=0, vmax=vmax, origin="upper")
        if walls is not None:
            ax.imshow(np.where(walls.reshape(rows, cols), 1.0, np.nan), cmap="Greys", vmin=0,
                      vmax=1.2, origin="upper")
        pol = np.asarray(policies[i], dtype=float)
        vec = pol @ dirs
        keep = np.ones(rows * cols, bool) if walls is None else ~walls
        if labels:
            keep[list(labels)] = False
        ax.quiver(xx[keep], yy[keep], vec[keep, 0], vec[keep, 1], angles="xy", scale_units="xy",
                  scale=1.6, width=0.012, color="white", edgecolor="k", linewidth=0.3)
        for s, text in (labels or {}).items():
            ax.text(s % cols, s // cols, text, ha="center", va="center", fontsize=9,
                    color="k", fontweight="bold",
                    bbox=dict(boxstyle="round,pad=0.15", fc="w", ec="none", alpha=0.8))
        T = float(temperatures[i])
        ax.set_title(f"T = {T:g}" + (" (max-plus)" if T == 0 else ""))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    cb = fig.colorbar(im, ax=list(axes), shrink=0.85)
    cb.set_label("expected visits (tempered)")
    fig.suptitle(title or "Soft policy at t = 0 (arrows) and where the surviving lineage goes")
    return fig
