"""Figures for the paths analyses: concentration on the optimal paths, tempered flow on the
unrolled graph."""

from __future__ import annotations

import numpy as np

from ._style import line_colors, new_figure


def plot_mass_asymptote(T, mass, asymptote, delta, ratio_n2_w1, mass_enumerated=None,
                        title=None):
    """Optimal-path mass against 1/T, with the predicted approach N_2 exp(-Delta/T) / W_1.

    T: temperatures (> 0 entries are drawn); mass: P_T(optimal paths) from the dynamic
    programme; asymptote: (N_2/W_1) exp(-Delta/T) at the same T; mass_enumerated: the same
    mass from explicit enumeration (drawn as open markers) or None. Panels: the mass; 1 - mass
    on a log scale against its asymptote; their ratio, which tends to 1 as T -> 0.
    """
    T = np.asarray(T, dtype=float)
    pos = T > 0
    invT = 1.0 / T[pos]
    mass = np.asarray(mass, dtype=float)[pos]
    asym = np.asarray(asymptote, dtype=float)[pos]
    rest = 1.0 - mass
    c_dp, c_en = line_colors(3)[0], line_colors(3)[1]
    fig, axes = new_figure(1, 3, width=3.5, height=3.4)
    ax1, ax2, ax3 = axes[0]
    ax1.plot(invT, mass, color=c_dp, marker="o", ms=3, label="dynamic programme")
    ax1.plot(invT, np.clip(1.0 - asym, 0.0, None), color="C3", ls="--", lw=1.2,
             label=r"$1 - N_2 e^{-\Delta/T}/W_1$")
    if mass_enumerated is not None:
        me = np.asarray(mass_enumerated, dtype=float)[pos]
        ax1.plot(invT, me, ls="none", marker="s", ms=6, mfc="none", color=c_en,
                 label="enumeration")
    ax1.axhline(1.0, color="k", lw=0.8, ls=":")
    ax1.set_xscale("log")
    ax1.set_ylim(-0.02, 1.05)
    ax1.set_xlabel("inverse temperature $1/T$ (1 / reward units)")
    ax1.set_ylabel(r"$P_T(\mathrm{optimal\ paths})$")
    ax1.set_title("Mass on the max-return paths")
    ax1.legend(loc="center right")

    live = rest > 0
    ax2.semilogy(invT[live], rest[live], color=c_dp, marker="o", ms=3, label=r"$1 - P_T$ (DP)")
    ax2.semilogy(invT, asym, color="C3", ls="--", lw=1.2,
                 label=rf"$N_2 e^{{-\Delta/T}}/W_1$, $\Delta={delta:.3g}$")
    ax2.set_xlabel("inverse temperature $1/T$ (1 / reward units)")
    ax2.set_ylabel(r"$1 - P_T(\mathrm{optimal})$")
    ax2.set_title(rf"Decay $\propto e^{{-\Delta/T}}$, $N_2/W_1 = {ratio_n2_w1:.3g}$")
    ax2.legend(loc="lower left")

    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(asym > 0, rest / asym, np.nan)
    ax3.axhspan(0.95, 1.05, color="0.88", label=r"$\pm 5\%$")
    ax3.axhline(1.0, color="k", lw=0.8, ls=":")
    ax3.plot(invT, ratio, color=c_dp, marker="o", ms=3, label="computed / predicted")
    ax3.set_xscale("log")
    ax3.set_xlabel("inverse temperature $1/T$ (1 / reward units)")
    ax3.set_ylabel(r"$(1 - P_T) \,/\, (N_2 e^{-\Delta/T}/W_1)$")
    ax3.set_title("Prediction exact as $T \\to 0$")
    top = np.nanmax(ratio[np.isfinite(ratio)]) if np.isfinite(ratio).any() else 2.0
    ax3.set_ylim(0.0, min(max(1.2, top * 1.05), 50.0))
    ax3.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    return fig


def _edge_lines(G):
    """Per (t, s) -> (t+1, s') pair: the segment and the summed flow of its parallel edges."""
    flows: dict = {}
    for u, v, d in G.edges(data=True):
        flows[(u, v)] = flows.get((u, v), 0.0) + float(d["flow"])
    segs = np.array([[[u[0], u[1]], [v[0], v[1]]] for u, v in flows])
    return segs, np.array(list(flows.values()))


def plot_unrolled_flow(graphs, temperatures, state_labels=None, title=None):
    """The time-unrolled graph at several temperatures, edge widths proportional to the
    tempered path flow (the probability that a path takes that step).

    graphs: networkx graphs from ``quasirl.paths.unrolled_graph(mdp, H, T=...)`` (edges carry
    ``flow``, nodes (t, s) carry ``flow``); temperatures: the T of each; state_labels: optional
    {state: text} for the y axis.
    """
    from matplotlib.collections import LineCollection

    n = len(graphs)
    fig, axes = new_figure(1, n, width=3.6, height=3.8, sharey=True)
    axes = axes[0]
    cmap_colors = line_colors(1)
    for ax, G, T in zip(axes, graphs, temperatures, strict=True):
        segs, flow = _edge_lines(G)
        order = np.argsort(flow)  # heavy edges on top
        segs, flow = segs[order], flow[order]
        ax.add_collection(LineCollection(segs, linewidths=0.25, colors="0.8", zorder=1))
        live = flow > 1e-4
        ax.add_collection(LineCollection(segs[live], linewidths=0.3 + 7.0 * flow[live],
                                         colors=cmap_colors[0], alpha=0.85, zorder=2))
        nodes = np.array([[u[0], u[1]] for u in G.nodes])
        nflow = np.array([G.nodes[u].get("flow", 0.0) for u in G.nodes])
        ax.scatter(nodes[:, 0], nodes[:, 1], s=6 + 80 * nflow, c="white", edgecolors="k",
                   linewidths=0.6, zorder=3)
        ax.set_xlim(-0.4, G.graph["horizon"] + 0.4)
        ax.set_xlabel("step $t$")
        ax.set_title(f"$T = {T:g}$" + (" (limit $T \\to 0^+$)" if T == 0 else ""))
        ax.grid(False)
    states = sorted({u[1] for G in graphs for u in G.nodes})
    axes[0].set_yticks(states)
    if state_labels:
        axes[0].set_yticklabels([state_labels.get(s, str(s)) for s in states])
    axes[0].set_ylabel("state $s$")
    axes[0].invert_yaxis()
    fig.suptitle(title or "Tempered path flow on the unrolled graph (width $\\propto$ flow)")
    return fig
