"""Figures of ``quasirl lm tree``: the answer trees of a model's prompts, exact and sampled.

Each function takes the dictionary ``quasirl lm tree`` writes to ``tree.json`` (so a figure can
be redrawn from the stored JSON alone) and returns a Figure; the library never imports this
module.
"""

from __future__ import annotations

import numpy as np

from ._lm import _err
from ._style import MARKERS, line_colors, new_figure


def _title(d: dict, what: str) -> str:
    c = d["config"]
    tree = f"top-{c['top_k']}" if c.get("top_k") else f"min_prob {c['min_prob']:g}"
    return (f"{d['lm']}, {d['task']}: {what}\n({d['summary']['n_prompts']} prompts, depth "
            f"{c['depth']}, {tree})")


def free_energy_figure(d: dict):
    """T -> 0 on each prompt's tree: F(T) - log q(MAP) inside the proven band [0, T log N]
    (N answers in the tree), and the tilted mass on the MAP answer, which tends to 1."""
    fig, axes = new_figure(1, 2, width=4.6, height=3.7)
    ax, bx = axes[0]
    recs = [r for r in d["prompts"] if r.get("free_energy")]
    colors = line_colors(len(recs))
    for i, r in enumerate(recs):
        fe = r["free_energy"]
        T = np.asarray(fe["T"], dtype=np.float64)
        pos = T > 0
        gap = np.asarray(fe["F"], dtype=np.float64) - fe["map_logprob"]
        ax.plot(T[pos], gap[pos], color=colors[i], lw=1.0, alpha=0.85,
                label="F(T) - log q(MAP), per prompt" if i == 0 else None)
        ax.plot(T[pos], T[pos] * fe["log_n"], color=colors[i], lw=0.7, ls=":", alpha=0.7,
                label="band edge T log N" if i == 0 else None)
        bx.plot(T[pos], np.asarray(fe["map_mass"])[pos], color=colors[i], lw=1.0, alpha=0.85)
    for a in (ax, bx):
        a.set_xscale("log")
        a.set_xlabel("sequence temperature T")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_ylim(bottom=0.0)
    ax.set_ylabel("F(T) - log q(MAP)  (nats)")
    ax.set_title("F(T) -> log q(MAP) within [0, T log N]")
    if recs:
        ax.legend(fontsize=7, loc="upper left")
    bx.set_ylabel("tilted mass on the MAP answer")
    bx.set_ylim(-0.02, 1.02)
    bx.set_title("mass on the MAP path -> 1 as T -> 0")
    fig.suptitle(_title(d, "answer trees as T -> 0"), fontsize=9)
    return fig


def best_of_n_figure(d: dict):
    """Best-of-N accuracy against N, by own likelihood and by the task's checker: the exact
    prediction from the trees (nominal line, band: what the unexpanded answers leave open),
    and, when samples were drawn, the observed accuracy on disjoint groups (cluster bootstrap
    95%)."""
    fig, axes = new_figure(1, 2, width=4.2, height=3.5)
    bon = d["summary"]["best_of_n"]
    ns = np.asarray(bon["ns"], dtype=np.float64)
    for j, (score, name) in enumerate((("likelihood", "own likelihood"),
                                       ("checker", "task checker"))):
        ax = axes[0][j]
        pred = bon[score]["predicted"]
        ax.fill_between(ns, pred["lo"], pred["hi"], color="0.85", lw=0,
                        label="predicted: bounds (unexpanded answers)")
        ax.plot(ns, pred["accuracy"], "-", color="0.3", marker=MARKERS[1], ms=4,
                label="predicted from the trees")
        obs = bon[score].get("observed")
        if obs:
            acc = np.asarray(obs["accuracy"], dtype=np.float64)
            ax.errorbar(ns, acc, yerr=_err(acc, obs["lo"], obs["hi"]), fmt="o", color="k",
                        capsize=3, ms=4, label="observed on samples (95%)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(int(n)) for n in ns])
        ax.set_xlabel("N")
        ax.set_ylabel("accuracy of the kept answer")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"best-of-N by {name}")
        ax.legend(fontsize=6.5, loc="best")
    fig.suptitle(_title(d, "best-of-N"), fontsize=9)
    return fig


def token_tilt_figure(d: dict):
    """Token-level sampling at T against the sequence-level tilt at T: their predicted TV
    distance per prompt, and, when samples were drawn at T, the TV of the observed outcome
    frequencies to each law (cluster bootstrap 95%) with the TV sampling noise alone gives."""
    fig, ax = new_figure(1, 1, width=5.4, height=3.7)
    temps = d["summary"]["temperatures"]
    colors = line_colors(3)
    Ts = np.array([t["T"] for t in temps], dtype=np.float64)
    for t in temps:
        ax.plot([t["T"]] * len(t["tv_predicted_per_prompt"]), t["tv_predicted_per_prompt"],
                ".", color="0.7", ms=4)
    ax.plot(Ts, [t["tv_predicted"] for t in temps], "-", color="0.4", marker="s", ms=4,
            label="predicted TV(token law, tilt), mean (dots: prompts)")
    for k, (key, name) in enumerate((("token", "observed vs token law"),
                                     ("tilt", "observed vs sequence tilt"))):
        got = [t["observed"][key] for t in temps if t.get("observed")]
        if not got:
            continue
        x = np.array([t["T"] for t in temps if t.get("observed")]) * (1 + 0.02 * (2 * k - 1))
        y = np.array([g["tv"] for g in got])
        ax.errorbar(x, y, yerr=_err(y, [g["tv_lo"] for g in got], [g["tv_hi"] for g in got]),
                    fmt=MARKERS[k], color=colors[k], capsize=3, ms=5, label=name + " (95%)")
        if k == 0:
            ax.plot(x, [g["tv_noise"] for g in got], ":", color=colors[0], lw=1,
                    label="sampling noise (a perfect prediction)")
    ax.set_xlabel("temperature T")
    ax.set_ylabel("total variation distance")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(_title(d, "token temperature vs sequence tilt"), fontsize=9)
    return fig
