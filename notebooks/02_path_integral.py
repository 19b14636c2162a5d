# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · The path integral: path by path vs recursion
#
# The essay's central step: the population after $H$ steps is "a summation over all the paths
# the strains could take", each weighted by $e^{R/T}$,
#
# $$F(T) = T \log \sum_p w_p\, e^{R_p/T}.$$
#
# The kernels compute this sum by a recursion over states (the quasispecies equation); here we
# write it out path by path, hold the two against each other, watch the tempered law over paths
# collapse onto the best ones, and see why the recursion is the only way at scale.
# `QUASIRL_SMALL=1` runs it with small parameters.

# %%
# %matplotlib inline
import os

import jax

jax.config.update("jax_enable_x64", True)  # this notebook's choice; the library never sets it
import numpy as np

import quasirl as qr
from quasirl import plots

SMALL = os.environ.get("QUASIRL_SMALL") == "1"

# %% [markdown]
# ## A small random MDP, every path written out
#
# Five states, two actions, two random successors per action with Dirichlet probabilities,
# Gaussian rewards; uniform exploration and a uniform start. The paths are counted by dynamic
# programming first, then enumerated (states, actions, log-weight, return per path).

# %%
mdp = qr.random_mdp(jax.random.key(7), 5, 2, branching=2)
H = 5 if SMALL else 7
paths = qr.paths.enumerate_paths(mdp, H)
n_paths = qr.paths.count_paths(mdp, H)
print(f"{mdp}, H = {H}: {n_paths:.0f} paths (DP count), {paths.ret.shape[0]} enumerated")
assert paths.ret.shape[0] == n_paths
w = np.exp(np.asarray(paths.log_weight))
print("sum of path weights =", w.sum())
np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-12)

# %% [markdown]
# ## Sum over paths = recursion, at every temperature (T = 0 included)

# %%
Ts = np.array([10.0, 1.0, 0.1, 0.01, 0.0])
by_paths = np.asarray(qr.paths.path_integral(mdp, Ts, H))
by_recursion = np.asarray(qr.free_energy(mdp, Ts, H))
for t, a, b in zip(Ts, by_paths, by_recursion, strict=True):
    print(f"T = {t:5g}:  path sum {a: .12f}   recursion {b: .12f}   diff {a - b: .1e}")
np.testing.assert_allclose(by_paths, by_recursion, rtol=1e-10, atol=1e-10)

# %% [markdown]
# ## The tempered law over paths collapses onto the best return
#
# Each path gets probability $w_p e^{R_p/T}/Z$. Grouped by return, the mass moves to the top
# as T falls; at T = 0 only the max-return paths remain.

# %%
ret = np.asarray(paths.ret)
temps = np.array([5.0, 0.5, 0.05, 0.0])
_, prob = qr.paths.path_distribution(mdp, temps, H)
prob = np.asarray(prob)
edges = np.linspace(ret.min(), ret.max(), 31)
fig, ax = plots.new_figure(width=6.0, height=3.4)
colors = plots.line_colors(len(temps))
for i, t in enumerate(temps):
    hist, _ = np.histogram(ret, bins=edges, weights=prob[i])
    ax.stairs(hist, edges, color=colors[i], ls=plots.LINESTYLES[i % 4], lw=1.6,
              label=f"T = {t:g}")
ax.axvline(ret.max(), color="k", lw=0.8, ls=":", label="max return")
ax.set_xlabel("path return $R_p$ (reward units)")
ax.set_ylabel("tempered probability")
ax.set_title("Tempered law over paths, grouped by return")
ax.legend()
best = ret >= ret.max() - 1e-9
np.testing.assert_allclose(prob[-1][best].sum(), 1.0, rtol=1e-12)
np.testing.assert_allclose(prob[:, best].sum(1), qr.paths.optimal_path_mass(mdp, temps, H),
                           rtol=1e-10)

# %% [markdown]
# ## The k best paths without enumerating
#
# A k-best dynamic programme (backward max-plus values, then best-first extension) returns the
# top paths directly; it agrees with sorting the enumeration.

# %%
k = 5
top = qr.paths.best_paths(mdp, H, k)
np.testing.assert_allclose(np.asarray(top.ret), np.sort(ret)[::-1][:k], rtol=1e-12)
for s, a, r in zip(np.asarray(top.states), np.asarray(top.actions), np.asarray(top.ret),
                   strict=True):
    print(f"R = {r: .4f}  states {s.tolist()}  actions {a.tolist()}")

# %% [markdown]
# ## Where the population flows: the unrolled graph
#
# Nodes are (time, state); edge widths show the tempered probability that a path uses each
# transition (`quasirl.paths.path_flow`), at three temperatures.

# %%
fig, axes = plots.new_figure(1, 3, width=3.4, height=3.0)
S = mdp.num_states
for ax, t in zip(axes[0], (2.0, 0.2, 0.0), strict=True):
    G = qr.paths.unrolled_graph(mdp, H, T=t)
    for u, v, d in G.edges(data=True):
        if d["flow"] > 1e-3:
            ax.plot([u[0], v[0]], [u[1], v[1]], color="k", lw=0.3 + 5 * d["flow"],
                    alpha=0.25 + 0.75 * min(1.0, d["flow"]), solid_capstyle="round")
    tt = [n[0] for n in G.nodes]
    ss = [n[1] for n in G.nodes]
    ax.scatter(tt, ss, s=12, color="C0", zorder=3)
    ax.set_xlabel("time step $t$")
    ax.set_ylabel("state $s$")
    ax.set_yticks(range(S))
    ax.set_title(f"T = {t:g}" + (" (max-plus)" if t == 0 else ""))
fig.suptitle("Tempered path flow on the unrolled graph (width = probability)")
flow0 = np.asarray(qr.paths.path_flow(mdp, 0.0, H))
np.testing.assert_allclose(flow0.sum(axis=(1, 2, 3)), np.ones(H), rtol=1e-12)

# %% [markdown]
# ## Why recursion: counting the paths of the demo gridworld
#
# The number of paths grows like $A^H$; enumeration refuses beyond its limit and says how
# many paths there would be, while the recursion (and the DP functions of `quasirl.paths`)
# cost O(H × transitions).

# %%
grid = qr.gridworld(layout=qr.mdp.DEFAULT_LAYOUT)
Hg = 12 if SMALL else 20
print(f"demo gridworld, H = {Hg}: {qr.paths.count_paths(grid, Hg):.3e} paths")
try:
    qr.paths.enumerate_paths(grid, Hg)
except ValueError as err:
    print("enumerate_paths:", err)
print("optimal-path mass at T = 0.05 by DP:", float(qr.paths.optimal_path_mass(grid, 0.05, Hg)))
print("F(0.05) by recursion:", float(qr.free_energy(grid, 0.05, Hg)))
