"""Figures for the language-model bridge: evaluator ROC, transfer function, trajectory.

Each function takes the ``to_dict()`` of a ``quasirl.lm.validate`` result, which is also what
its JSON file holds (so a figure can be redrawn from the stored JSON alone), and returns a
Figure. ``quasirl lm ...`` draws them; the library itself never imports this module.
"""

from __future__ import annotations

import numpy as np
from matplotlib.ticker import MaxNLocator

from ._style import LINESTYLES, MARKERS, line_colors, new_figure

_SIGNAL_NAMES = {"yesno": "survey Yes/No", "scale5": "survey 5-point",
                 "likelihood": "own likelihood", "gold": "gold checker"}


def _err(x, lo, hi):
    """Error-bar lengths (never negative, NaN-safe) for a point with an interval."""
    x, lo, hi = (np.asarray(v, dtype=np.float64) for v in (x, lo, hi))
    return np.nan_to_num(np.maximum(0.0, np.stack([np.atleast_1d(x - lo),
                                                   np.atleast_1d(hi - x)])))


def calibration_figure(cal: dict):
    """Exp 1: ROC curve of each fitness signal (AUROC with 95% CI in the legend; markers: the
    operating point on the held-out half), and the one-step Bayes check: the wrong fraction w
    among accepted answers predicted from one held-out quarter against the one observed on the
    other."""
    fig, axes = new_figure(1, 2, width=4.6, height=3.7)
    ax, bx = axes[0]
    sigs = list(cal["signals"])
    colors = line_colors(len(sigs))
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls=":", label="chance")
    for i, s in enumerate(sigs):
        r, d = cal["roc"][s], cal["signals"][s]
        lo, hi = d["auroc_ci"]
        ax.step(r["fpr"], r["tpr"], where="post", color=colors[i], ls=LINESTYLES[i % 4],
                label=f"{_SIGNAL_NAMES.get(s, s)}: AUROC {d['auroc']:.2f} [{lo:.2f}, {hi:.2f}]")
        ax.plot(d["fpr"], d["tpr"], MARKERS[i % 7], color=colors[i], ms=6, mfc="none")
    ax.set_xlabel("FPR = P(accept | wrong)")
    ax.set_ylabel("TPR = P(accept | correct)")
    ax.set_title(f"evaluator ROC (eps = {cal['eps']:.2f}; markers: operating points)")
    ax.legend(loc="lower right", fontsize=6.5)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    x = np.arange(len(sigs))
    for i, s in enumerate(sigs):
        bay = cal["signals"][s]["bayes"]
        p, plo, phi = bay["w_predicted"], *bay["w_predictive"]
        o, olo, ohi = bay["w_observed"], *bay["w_observed_wilson"]
        if np.isfinite(p):
            bx.errorbar(x[i] - 0.1, p, yerr=_err(p, plo, phi), fmt="s", color="0.55",
                        capsize=3, label="predicted from quarter B1 (95% predictive)" if i == 0
                        else None)
        if np.isfinite(o):
            bx.errorbar(x[i] + 0.1, o, yerr=_err(o, olo, ohi), fmt="o", color="k",
                        capsize=3, label="observed on quarter B2 (Wilson 95%)" if i == 0 else None)
        verdict = {True: "pass", False: "FAIL", None: "n/a"}[bay["pass"]]
        bx.annotate(verdict, (x[i], 1.0), ha="center", va="bottom", fontsize=7,
                    xycoords=("data", "axes fraction"))
    bx.axhline(cal["eps"], color="0.6", ls="--", lw=0.8, label="eps (no selection)")
    bx.set_xticks(x, [_SIGNAL_NAMES.get(s, s).replace(" ", "\n", 1) for s in sigs], fontsize=7)
    bx.set_ylabel("w = P(wrong | accepted)")
    bx.set_ylim(-0.02, 1.02)
    bx.set_title("one-step Bayes check", pad=14)
    bx.legend(fontsize=6.5, loc="upper right")
    return fig


def transfer_figure(tr: dict):
    """Exp 2: eps_next against the wrong fraction b of the context (Wilson 95%), the fitted
    g(b) = a + lam b, the ideal imitator g(b) = b and the fixed point eps*."""
    fig, ax = new_figure(width=4.6, height=3.7)
    b = np.asarray(tr["bs"])
    e = np.asarray(tr["eps"])
    lo, hi = np.asarray(tr["eps_wilson_lo"]), np.asarray(tr["eps_wilson_hi"])
    grid = np.linspace(0, 1, 50)
    ax.plot(grid, grid, color="0.6", ls=":", lw=0.9, label="ideal imitator g(b) = b")
    lam_lo, lam_hi = tr["lam_ci"]
    ax.plot(grid, tr["a"] + tr["lam"] * grid, color=line_colors(1)[0], ls="-",
            label=f"fit: g(b) = {tr['a']:.2f} + {tr['lam']:.2f} b  (lam in [{lam_lo:.2f}, "
                  f"{lam_hi:.2f}])")
    ax.errorbar(b, e, yerr=_err(e, lo, hi), fmt="o", color="k", capsize=3,
                label="observed (Wilson 95%)")
    if tr.get("eps_star") is not None and 0 <= tr["eps_star"] <= 1:
        ax.plot([tr["eps_star"]], [tr["eps_star"]], "D", color="0.35", mfc="none",
                label=f"fixed point eps* = {tr['eps_star']:.2f}")
    p = tr.get("p_value")
    verdict = "n/a" if p is None else ("pass" if tr["pass"] else "FAIL")
    ax.set_title(f"transfer function (linear fit chi2 p = {p if p is None else round(p, 3)}: "
                 f"{verdict})")
    ax.set_xlabel("b = wrong fraction of the k context pairs")
    ax.set_ylabel("eps_next = P(wrong answer)")
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    ax.legend(fontsize=6.5, loc="upper left")
    return fig


def trajectory_figure(traj: dict):
    """Exp 3: predicted eps_n per arm (line, parameter band dark, predictive band light) and the
    observed eps_n with Wilson 95% intervals."""
    order = ("filtered", "unfiltered", "random", "oracle")
    arms = sorted(traj["arms"], key=lambda a: order.index(a) if a in order else len(order))
    fig, axes = new_figure(1, len(arms), width=2.9, height=3.5, sharey=True)
    axes = np.atleast_1d(axes).ravel()
    pred = traj["prediction"]["arms"]
    for ax, arm in zip(axes, arms, strict=True):
        p, o = pred[arm], traj["arms"][arm]
        n = np.arange(len(p["point"]))
        ax.fill_between(n, *p["predictive"], color="0.88", label="predictive 95%")
        ax.fill_between(n, *p["band"], color="0.7", label="parameter 95%")
        ax.plot(n, p["point"], color="0.2", ls="--", label="predicted")
        obs = np.asarray(o["observed"])
        m = np.arange(obs.size)
        lo, hi = (np.asarray(x) for x in o["wilson"])
        ax.errorbar(m, obs, yerr=_err(obs, lo, hi), fmt="o-", color="k", capsize=3, ms=4,
                    label="observed (Wilson 95%)")
        inside = sum(o["covered"])
        ax.set_title(f"{arm} ({inside}/{len(o['covered'])} inside predictive band)",
                     fontsize=8.5)
        ax.set_xlabel("round n")
        ax.set_xticks(n)
    axes[0].set_ylabel("eps_n = P(wrong answer)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=7)
    p = traj.get("p_value")
    fig.suptitle(f"chaining trajectory, signal: "
                 f"{_SIGNAL_NAMES.get(traj['prediction']['signal'], '')}; joint p = "
                 f"{'n/a' if p is None else f'{p:.3f}'}; slope = "
                 f"{traj.get('calibration_slope') or float('nan'):.2f}", fontsize=9)
    return fig


def chaining_figure(result: dict):
    """One chaining run: eps_n, acceptance rate and w_n (wrong among accepted) per round."""
    fig, ax = new_figure(width=4.6, height=3.4)
    rounds = result["rounds"]
    n = [r["round"] for r in rounds]
    c = line_colors(3)
    ax.plot(n, [r["eps"] for r in rounds], "o-", color=c[0], label="eps_n (error rate)")
    ax.plot(n, [r["w"] for r in rounds], "s--", color=c[1], label="w_n (wrong among accepted)")
    ax.plot(n, [r["accept_rate"] for r in rounds], "^:", color=c[2], label="accepted fraction")
    ax.set_xlabel("round n")
    ax.set_ylabel("fraction")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xticks(n)
    cfg = result["config"]
    ax.set_title(f"chaining: {cfg['arm']} ({cfg.get('fitness') or 'no fitness'}), "
                 f"T = {cfg['temperature']}")
    ax.legend(fontsize=7)
    return fig


def channels_transfer_figure(transfers: dict):
    """Exp 2 through each adaptation channel on the same queries: eps_next against the wrong
    share b of what the model adapted to (the context's k pairs, or the pairs it was trained
    on), Wilson 95% points and the fitted lines a + lam b. ``transfers``: {channel name:
    Transfer.to_dict()}."""
    fig, ax = new_figure(width=4.8, height=3.8)
    grid = np.linspace(0, 1, 50)
    ax.plot(grid, grid, color="0.6", ls=":", lw=0.9, label="ideal imitator g(b) = b")
    colors = line_colors(len(transfers))
    for i, (name, tr) in enumerate(transfers.items()):
        b = np.asarray(tr["bs"]) + (i - (len(transfers) - 1) / 2) * 0.012
        e = np.asarray(tr["eps"])
        lo, hi = tr["lam_ci"]
        ax.plot(grid, tr["a"] + tr["lam"] * grid, color=colors[i], ls=LINESTYLES[i % 4],
                label=f"{name}: {tr['a']:.2f} + {tr['lam']:.2f} b (lam [{lo:.2f}, {hi:.2f}])")
        ax.errorbar(b, e, yerr=_err(e, tr["eps_wilson_lo"], tr["eps_wilson_hi"]),
                    fmt=MARKERS[i % 7], color=colors[i], capsize=2, ms=4)
    ax.set_xlabel("b = wrong share of what the model adapted to")
    ax.set_ylabel("eps_next = P(wrong answer)")
    ax.set_title("transfer: context against weights")
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    ax.legend(fontsize=6.5, loc="lower right")
    return fig


def temperature_axis_figure(taxis: dict):
    """The T axis: the error of each arm's round-n model at each sampling temperature (greedy,
    0.5, 1; query cluster bootstrap 95%), the base model (round 0) shared by every arm."""
    rows = taxis["rows"]
    arms = [a for a in dict.fromkeys(r["arm"] for r in rows) if a != "base"]
    temps = taxis["temperatures"]
    fig, axes = new_figure(1, len(temps), width=3.3, height=3.4, sharey=True)
    colors = line_colors(max(1, len(arms)))
    base = {r["T"]: r for r in rows if r["arm"] == "base"}
    for j, t in enumerate(temps):
        ax = axes[0][j]
        for i, arm in enumerate(arms):
            pts = [base[t]] + sorted((r for r in rows if r["arm"] == arm and r["T"] == t),
                                     key=lambda r: r["round"])
            x = np.array([r["round"] for r in pts]) + (i - (len(arms) - 1) / 2) * 0.06
            e = np.array([r["eps"] for r in pts])
            lo = np.array([r["eps_ci"][0] for r in pts])
            hi = np.array([r["eps_ci"][1] for r in pts])
            ax.errorbar(x, e, yerr=_err(e, lo, hi), fmt=MARKERS[i % 7] + LINESTYLES[i % 4],
                        color=colors[i], capsize=2, ms=4, label=arm)
        ax.set_title("greedy" if t == 0 else f"T = {t:g}")
        ax.set_xlabel("round n's model (round 0: the base model)")
    axes[0][0].set_ylabel("eps on held-out queries")
    axes[0][0].set_ylim(-0.03, 1.03)
    axes[0][-1].legend(fontsize=6.5)
    return fig


def channels_trajectory_figure(groups: dict):
    """Exp 3 per arm and adaptation channel: for each group (a row, e.g. one model and task) and
    each run in it (a colour, e.g. one channel), the predicted eps_n (dashed, predictive 95%
    band shaded) and the observed eps_n (Wilson 95%), one panel per arm. ``groups``: {row
    title: {run label: the run's exp3_trajectory.json}}."""
    order = ("filtered", "unfiltered", "random", "oracle")
    arms = sorted({a for runs in groups.values() for tj in runs.values() for a in tj["arms"]},
                  key=lambda a: order.index(a) if a in order else len(order))
    fig, axes = new_figure(max(1, len(groups)), max(1, len(arms)), width=2.9, height=3.0,
                           sharey=True)
    axes = np.atleast_2d(axes)
    for row, (title, runs) in enumerate(groups.items()):
        colors = line_colors(len(runs))
        for col, arm in enumerate(arms):
            ax = axes[row, col]
            for i, (label, tj) in enumerate(runs.items()):
                if arm not in tj["arms"]:
                    continue
                p, o = tj["prediction"]["arms"][arm], tj["arms"][arm]
                n = np.arange(len(p["point"]))
                shift = (i - (len(runs) - 1) / 2) * 0.08
                ax.fill_between(n, *p["predictive"], color=colors[i], alpha=0.12, lw=0)
                ax.plot(n, p["point"], color=colors[i], ls="--", lw=1.1)
                obs = np.asarray(o["observed"])
                lo, hi = (np.asarray(x) for x in o["wilson"])
                ax.errorbar(np.arange(obs.size) + shift, obs, yerr=_err(obs, lo, hi),
                            fmt=MARKERS[i % 7] + "-", color=colors[i], capsize=2, ms=4,
                            lw=0.9, label=label)
            ax.set_title(f"{title}: {arm}" if title else arm, fontsize=8.5)
            ax.set_xlabel("round n")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[row, 0].set_ylabel("eps_n = P(wrong answer)")
        axes[row, -1].legend(fontsize=6.5, loc="lower right", title="observed; dashed: "
                             "predicted", title_fontsize=6.5)
    axes[0, 0].set_ylim(-0.03, 1.03)
    return fig
