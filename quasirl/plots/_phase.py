"""Figures for phase diagrams: a field over two parameters, its numeric boundary, the theory."""

from __future__ import annotations

import numpy as np

from ._style import FIELD_CMAP, LINESTYLES, line_colors, new_figure

# Theory curves are drawn in white with a dark outline so they read on any part of cividis and
# in grey scale; numeric boundaries are markers, so the two never look alike.


def plot_phase_field(ax, field, x: str, y: str, *, logx=False, logy=False, vmin=None,
                     vmax=None, cmap=FIELD_CMAP, cbar_label=None, fig=None, norm=None):
    """Draw ``field`` (a 2-D DataArray over dims x, y) as a colour map on ``ax``."""
    f = field.transpose(y, x)
    X = np.asarray(f[x], dtype=float)
    Y = np.asarray(f[y], dtype=float)
    im = ax.pcolormesh(X, Y, np.asarray(f, dtype=float), shading="nearest", cmap=cmap,
                       vmin=vmin, vmax=vmax, norm=norm, rasterized=True)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if fig is not None:
        cb = fig.colorbar(im, ax=ax, shrink=0.9)
        if cbar_label:
            cb.set_label(cbar_label)
    return im


def _theory_line(ax, x, y, label, ls="--"):
    from matplotlib import patheffects

    outline = [patheffects.Stroke(linewidth=3.4, foreground="k"), patheffects.Normal()]
    ax.plot(x, y, color="w", lw=1.6, ls=ls, label=label, path_effects=outline)


def _boundary_points(ax, x, y, label="numeric boundary"):
    ax.plot(x, y, ls="none", marker="o", ms=4, mfc="C1", mec="k", mew=0.6, label=label)


def plot_mdp_phase(ds, title=None):
    """MDP phase diagram: optimal-path mass over (mu, T) with boundary and T_c(mu).

    ds: the Dataset of :func:`quasirl.phase.mdp_phase_diagram`. Left: the mass field (T on a log
    axis), the numeric boundary P* = level (markers), the prediction
    T_c = dr / (-L ln(1 - mu)) (dashed) and the exact crossing (dotted). Right: the boundary's
    relative deviation from T_c against -L ln(1 - mu), where theory needs (1 - mu)^L << 1.
    """
    L, dr, level = ds.attrs["L"], ds.attrs["delta_r"], ds.attrs["level"]
    fig, axes = new_figure(1, 2, width=4.3, height=3.6)
    ax, ax2 = axes[0]
    mass = ds["mass"].where(ds["T"] > 0, drop=True)
    plot_phase_field(ax, mass, "mu", "T", logy=True, vmin=0, vmax=1, fig=fig,
                     cbar_label=r"optimal-path mass $P^*$")
    mu = ds["mu"].values
    Tlo, Thi = float(mass["T"].min()), float(mass["T"].max())
    ok = np.isfinite(ds["T_c"].values) & (ds["T_c"].values <= Thi)
    _theory_line(ax, mu[ok], ds["T_c"].values[ok],
                 rf"$T_c=\Delta r/(-L\ln(1-\mu))$, $L={L}$", ls=LINESTYLES[1])
    ex = np.isfinite(ds["T_exact"].values) & (ds["T_exact"].values <= Thi)
    ax.plot(mu[ex], ds["T_exact"].values[ex], color="k", lw=1.0, ls=":",
            label=rf"exact $P^*={level:g}$")
    _boundary_points(ax, mu, ds["T_boundary"].values, label=rf"numeric $P^*={level:g}$")
    ax.set_ylim(Tlo, Thi)
    ax.set_xlim(mu.min(), mu.max())
    ax.set_xlabel(r"per-step exploration noise $\mu$")
    ax.set_ylabel(r"temperature $T$ (reward units)")
    ax.set_title("Selection keeps the optimal route below $T_c(\\mu)$")
    ax.legend(loc="upper right", framealpha=0.9)

    x = -L * np.log1p(-mu)
    rel = ds["T_boundary"].values / ds["T_c"].values - 1.0
    good = np.isfinite(rel)
    ax2.axhspan(-0.1, 0.1, color="0.88", label=r"$\pm 10\%$")
    ax2.axhline(0, color="k", lw=0.8)
    xs = np.linspace(max(x[good].min(), 1e-3), x.max(), 200) if good.any() else x
    ax2.plot(xs, -np.log(-np.expm1(-xs)) / (xs + np.log(-np.expm1(-xs))), color="k", ls=":",
             label=r"exact crossing $T^*/T_c-1$")
    _boundary_points(ax2, x[good], rel[good], label="numeric")
    ax2.axvline(2.0, color="0.4", lw=0.8, ls="--")
    ax2.set_xlabel(r"route depletion $-L\ln(1-\mu) = -\ln w$")
    ax2.set_ylabel(r"$T_{\mathrm{boundary}}/T_c - 1$")
    ax2.set_ylim(-0.05, max(0.5, float(np.nanmin([np.nanmax(rel[good]) * 1.1, 2.0]))
                            if good.any() else 0.5))
    ax2.set_title("Theory applies once $(1-\\mu)^L \\ll 1$")
    ax2.legend(loc="upper right")
    fig.suptitle(title or rf"MDP phase diagram: route chain, $L={L}$, $\Delta r={dr:g}$")
    return fig


def plot_mass_convergence(T, mass, band=None, rest=None, title=None):
    """Optimal-path mass P*(T) against 1/T, inside its band; right: 1 - P* on a log axis.

    band: None or a dict with arrays ``lower`` and ``upper`` (same shape as T), e.g.
    W / (W + (1 - W) e^{-D/T}) <= P* <= W / (W + W2 e^{-D/T}) with D the return gap to the
    next-best paths, W and W2 the weights of the best and next-best paths. rest: 1 - P*
    computed directly (no cancellation when it is tiny); default 1 - mass.
    """
    T = np.asarray(T, dtype=float)
    mass = np.asarray(mass, dtype=float)
    pos = T > 0
    order = np.argsort(1.0 / T[pos])
    invT = (1.0 / T[pos])[order]
    m = mass[pos][order]
    color = line_colors(1)[0]
    fig, axes = new_figure(1, 2, width=3.8, height=3.4)
    ax1, ax2 = axes[0]
    if band is not None:
        lo = np.asarray(band["lower"], dtype=float)[pos][order]
        hi = np.asarray(band["upper"], dtype=float)[pos][order]
        lab = r"bound: $\frac{W}{W+(1-W)e^{-\Delta/T}} \leq P^* \leq \frac{W}{W+W_2e^{-\Delta/T}}$"
        ax1.fill_between(invT, lo, hi, color="0.82", label=lab)
        rlo = band.get("rest_lower", 1 - np.asarray(band["upper"], dtype=float))
        rhi = band.get("rest_upper", 1 - np.asarray(band["lower"], dtype=float))
        rlo = np.asarray(rlo, dtype=float)[pos][order]
        rhi = np.asarray(rhi, dtype=float)[pos][order]
        ax2.fill_between(invT, np.clip(rlo, 1e-300, None), np.clip(rhi, 1e-300, None),
                         color="0.82", label=r"bound (lower edge $\approx W_2e^{-\Delta/T}/W$)")
    ax1.plot(invT, m, marker="o", ms=3, color=color, label="$P^*(T)$")
    ax1.axhline(1.0, color="k", lw=0.8, ls=":")
    ax1.set_xscale("log")
    ax1.set_ylim(-0.02, 1.05)
    ax1.set_xlabel(r"inverse temperature $1/T$ (1/reward units)")
    ax1.set_ylabel(r"optimal-path mass $P^*$")
    ax1.set_title("Mass on the max-return paths")
    ax1.legend(loc="lower right", fontsize=7)
    rest = 1.0 - m if rest is None else np.asarray(rest, dtype=float)[pos][order]
    rest = np.clip(rest, 1e-300, None)
    ax2.semilogy(invT, rest, marker="o", ms=3, color=color, label="$1-P^*$")
    ax2.set_xlabel(r"inverse temperature $1/T$ (1/reward units)")
    ax2.set_ylabel(r"$1 - P^*$")
    ax2.set_title(r"Non-optimal mass decays like $e^{-\Delta/T}$")
    ax2.set_ylim(max(rest.min(), 1e-300) / 10, 2)
    ax2.legend(loc="lower left")
    if title:
        fig.suptitle(title)
    return fig


def _verdict_text(ds):
    return "convex" if ds.attrs["convex"] else f"not convex (witness {ds.attrs['convex_witness']})"


def plot_boost_phase(planes, title=None):
    """The three boosting planes of :func:`quasirl.phase.boost_phase_diagrams`.

    (a) error / eps0 after n rounds over (TPR, FPR) for the ideal learner, with the line
    FPR = c TPR where it halves (theory, dashed), the numeric boundary (markers) and the
    many-round boundary FPR = TPR (dotted); (b) limiting error / eps0 over (lam, log(TPR/FPR))
    for partial imitation; (c) limiting error over (log(TPR/FPR), mu) for intrinsic error with
    the error threshold mu_c = 1 - e^{-L} (dotted). Titles give the convexity verdict of the
    amplifying region (field <= level).
    """
    rates, imit, intr = planes["rates"], planes["imitation"], planes["intrinsic"]
    fig, axes = new_figure(1, 3, width=3.7, height=3.5)
    ax1, ax2, ax3 = axes[0]
    lvl = rates.attrs["level"]

    plot_phase_field(ax1, rates["ratio"].clip(0, 2), "tpr", "fpr", vmin=0, vmax=2, fig=fig,
                     cbar_label=r"$\varepsilon_n/\varepsilon_0$")
    g = rates["tpr"].values
    ax1.plot(g, g, color="k", lw=1.0, ls=":", label=r"$n\to\infty$: FPR = TPR")
    _theory_line(ax1, g, rates["fpr_theory"].values,
                 rf"theory FPR = {rates.attrs['slope_theory']:.3f} TPR")
    _boundary_points(ax1, g[::2], rates["fpr_boundary"].values[::2],
                     label=rf"numeric $\varepsilon_n/\varepsilon_0={lvl:g}$")
    ax1.set_xlabel("true-positive rate TPR")
    ax1.set_ylabel("false-positive rate FPR")
    ax1.set_title(f"(a) ideal learner, n = {rates.attrs['rounds']}: {_verdict_text(rates)}")
    ax1.legend(loc="upper left", fontsize=7, framealpha=0.9)

    plot_phase_field(ax2, imit["ratio"], "lam", "selection", vmin=0, vmax=1, fig=fig,
                     cbar_label=r"$\varepsilon_\infty/\varepsilon_0$")
    lam = imit["lam"].values
    _theory_line(ax2, lam, imit["selection_theory"].values, r"theory $L(\lambda)$")
    _boundary_points(ax2, lam[::2], imit["selection_boundary"].values[::2], label="numeric")
    ax2.set_xlabel(r"imitation strength $\lambda$")
    ax2.set_ylabel(r"selection $L=\ln(\mathrm{TPR}/\mathrm{FPR})$")
    ax2.set_title(f"(b) partial imitation: {_verdict_text(imit)}")
    ax2.legend(loc="upper right", fontsize=7, framealpha=0.9)

    plot_phase_field(ax3, intr["error"], "selection", "mu", vmin=0, vmax=1, fig=fig,
                     cbar_label=r"limiting error $\varepsilon_\infty$")
    L = intr["selection"].values
    ax3.plot(L, intr["mu_threshold"].values, color="k", lw=1.0, ls=":",
             label=r"threshold $\mu_c=1-e^{-L}$")
    _theory_line(ax3, L, intr["mu_theory"].values, rf"theory $\varepsilon_\infty={lvl:g}$")
    _boundary_points(ax3, L[::2], intr["mu_boundary"].values[::2], label="numeric")
    ax3.set_xlabel(r"selection $L=\ln(\mathrm{TPR}/\mathrm{FPR})$")
    ax3.set_ylabel(r"intrinsic error rate $\mu$")
    ax3.set_ylim(0, float(intr["mu"].max()))
    ax3.set_title(f"(c) intrinsic error: {_verdict_text(intr)}")
    ax3.legend(loc="upper left", fontsize=7, framealpha=0.9)
    fig.suptitle(title or rf"Boosting phase diagrams ($\varepsilon_0={rates.attrs['eps0']:g}$): "
                 "where cherry-picking amplifies")
    return fig


def plot_eigen_phase(ds, rows=None, title=None):
    """Eigen's error threshold: order parameter phi = -log2(x0)/L over (mu, sigma or L).

    ds: the Dataset of :func:`quasirl.phase.eigen_phase_diagram`. Left: phi (0 = all master,
    1 = uniform) with the numeric threshold (markers: steepest descent of ln x0) and the theory
    mu_c = 1 - sigma^(-1/L) (dashed). Right: the master fraction x0 against mu for a few rows
    (``rows``: indices; default four spread over the parameter), with the no-back-mutation
    formula x0 = (sigma (1-mu)^L - 1)/(sigma - 1) dotted and mu_c marked.
    """
    param = ds.attrs["plane"]
    fig, axes = new_figure(1, 2, width=4.4, height=3.6)
    ax, ax2 = axes[0]
    plot_phase_field(ax, ds["phi"], "mu", param, logx=True, logy=True, vmin=0, vmax=1, fig=fig,
                     cbar_label=r"order parameter $\phi=-\log_2 x_0/L$")
    p = ds[param].values.astype(float)
    _theory_line(ax, ds["mu_c"].values, p, r"theory $\mu_c=1-\sigma^{-1/L}$")
    _boundary_points(ax, ds["mu_boundary"].values, p, label=r"numeric (steepest $\ln x_0$)")
    ax.set_xlabel(r"per-site error rate $\mu$")
    if param == "sigma":
        ax.set_ylabel(r"selective advantage $\sigma$ of the master")
        sub = rf"$L={ds.attrs['L']}$"
    else:
        ax.set_ylabel("sequence length $L$")
        sub = rf"$\sigma={ds.attrs['sigma']:g}$"
    ax.set_title(f"Error threshold, single peak, {sub}")
    ax.legend(loc="upper left", fontsize=7, framealpha=0.9)

    rows = np.linspace(0, p.size - 1, 4).round().astype(int) if rows is None else rows
    colors = line_colors(len(rows))
    mu = ds["mu"].values
    for c, i in zip(colors, rows, strict=True):
        x0 = ds["master"].isel({param: int(i)}).values
        lab = rf"$\sigma={p[i]:.4g}$" if param == "sigma" else rf"$L={p[i]:g}$"
        ax2.loglog(mu, x0, color=c, label=lab)
        th = ds["master_theory"].isel({param: int(i)}).values
        ax2.loglog(mu[th > 0], th[th > 0], color=c, ls=":", lw=1.2)
        ax2.axvline(float(ds["mu_c"].values[i]), color=c, ls="--", lw=0.8)
    ax2.set_ylim(max(float(ds["master"].min()), 1e-12), 1.5)
    ax2.set_xlabel(r"per-site error rate $\mu$")
    ax2.set_ylabel(r"master fraction $x_0$")
    ax2.set_title("Master fraction (dotted: Eigen's formula)")
    ax2.legend(loc="lower left", fontsize=7)
    fig.suptitle(title or "Eigen's error threshold as a phase diagram")
    return fig
