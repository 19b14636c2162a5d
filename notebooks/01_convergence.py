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
# # 01 · Convergence to the optimal paths as T → 0
#
# A population of attempts replicates with fitness $e^{r/T}$. After $H$ steps of the
# quasispecies equation on an MDP its size is the partition function
#
# $$Z(T) = \sum_p w_p\, e^{R_p/T}, \qquad F(T) = T \log Z(T),$$
#
# a sum over every path $p$ with its exploration weight $w_p$ and return $R_p$. As $T \to 0$ the
# sum is dominated by the best paths: $F(T) \to \max_p R_p$ (the max-plus, Bellman limit),
# inside the proven band $R^* + T\log W \le F(T) \le R^*$ ($W$ = total weight of the best
# paths), and the population's mass on the optimal paths tends to 1 at a rate set by the return
# gap $\Delta$ to the next-best paths. This notebook checks all three on the demo gridworld and
# shows where stochastic transitions make the limit optimistic. `QUASIRL_SMALL=1` runs it with
# small parameters (the test suite does).

# %%
# %matplotlib inline
import os

import jax

jax.config.update("jax_enable_x64", True)  # this notebook's choice; the library never sets it
import numpy as np

import quasirl as qr
from quasirl import plots
from quasirl.mdp import DEFAULT_LAYOUT

SMALL = os.environ.get("QUASIRL_SMALL") == "1"
H = 12 if SMALL else 20
T = np.concatenate([np.geomspace(10.0, 1e-3, 12 if SMALL else 40), [0.0]])

# %% [markdown]
# ## The world
#
# `S` is the start, `g` a near goal (+1), `G` a far goal (+3) past a pit `X` (−3), `#` walls;
# every step costs 0.04. Explorers move uniformly at random.

# %%
print(DEFAULT_LAYOUT)
mdp = qr.gridworld(layout=DEFAULT_LAYOUT)
S, A, K = mdp.shape
print(mdp, "horizon", H)

# %% [markdown]
# ## 1. F(T) → max R, inside its band
#
# The T = 0 entry is computed exactly in the max-plus semiring (not as a small T). The weight
# $W$ of the best paths comes from the same T = 0 recursion (max-plus with multiplicities).

# %%
F = np.asarray(qr.free_energy(mdp, T, H))
limit = qr.evolve(mdp, 0.0, H)
R_star, log_W = float(F[-1]), float(limit.log_normaliser)
gap = R_star - F
assert np.all(gap >= -1e-9) and np.all(gap <= -T * log_W + 1e-9), "band violated"
assert np.all(np.diff(F) >= -1e-9), "F must not decrease as T falls"
print(f"max R = {R_star:.4f}, Bellman value = {float(qr.bellman_value(mdp, H)):.4f}, "
      f"log W = {log_W:.3f}")
fig = plots.plot_free_energy(T, F, R_star, -log_W, title=f"Demo gridworld, H = {H}: F(T) → max R")

# %% [markdown]
# ## 2. The mass on the optimal paths
#
# $P^*(T) = W e^{R^*/T}/Z(T)$. Every non-optimal path returns at most $R^* - \Delta$ and the
# second-best ones exactly that, so
#
# $$\frac{W}{W + (1-W)e^{-\Delta/T}} \le P^*(T) \le \frac{W}{W + N_2 e^{-\Delta/T}},$$
#
# and $1 - P^* \sim (N_2/W) e^{-\Delta/T}$ as $T \to 0$. `quasirl.paths` computes $P^*$ and
# $1 - P^*$ by dynamic programming and $\Delta$, $N_2$ by max-plus with multiplicities.

# %%
from scipy.special import expit

rg = qr.paths.return_gap(mdp, H)
mass = np.asarray(qr.paths.optimal_path_mass(mdp, T, H))
rest = np.asarray(qr.paths.suboptimal_path_mass(mdp, T, H))
pos = T > 0
x = np.full_like(T, -np.inf)
x[pos] = -rg.delta / T[pos]
log_rest_w = np.log(-np.expm1(rg.log_w1))
band = {"lower": np.where(pos, expit(-(log_rest_w - rg.log_w1 + x)), 1.0),
        "upper": np.where(pos, expit(-(rg.log_n2 - rg.log_w1 + x)), 1.0),
        "rest_lower": np.where(pos, expit(rg.log_n2 - rg.log_w1 + x), 0.0),
        "rest_upper": np.where(pos, expit(log_rest_w - rg.log_w1 + x), 0.0)}
# the kernels' view of the same number: W exp((R* - F)/T)
mass_kernels = np.exp(np.minimum(log_W + (R_star - F[pos]) / T[pos], 0.0))
np.testing.assert_allclose(mass_kernels, mass[pos], atol=1e-9)
assert np.all(mass >= band["lower"] - 1e-12) and np.all(mass <= band["upper"] + 1e-12)
ratio = rest[pos][-1] / rg.asymptote(T[pos][-1])
print(f"Delta = {rg.delta:.4f}, N2 / W1 = {np.exp(rg.log_n2 - rg.log_w1):.4g}, "
      f"optimal paths: {rg.count_best}; at T = {T[pos][-1]:g}: (1 - P*) / asymptote = {ratio:.4f}")
assert abs(ratio - 1) < 0.05
fig = plots.plot_mass_convergence(T, mass, band, rest=rest, title="Demo gridworld: P*(T) → 1")

# %% [markdown]
# ## 3. The soft policy becomes the greedy Bellman policy
#
# The fraction of the surviving lineage at $(t, s)$ that takes action $a$ is the soft policy;
# at T = 0 it is the greedy finite-horizon policy (ties split evenly). On the start state it
# converges as T falls:

# %%
pi = np.asarray(qr.soft_policy(mdp, T, H))[:, 0]  # [T, S, A] at t = 0
start = int(np.flatnonzero(np.asarray(mdp.init))[0])
for i in np.linspace(0, len(T) - 1, 6).round().astype(int):
    print(f"T = {T[i]:8.4g}   pi(.|start) =", np.round(pi[i, start], 4),
          "(up, right, down, left)")
np.testing.assert_allclose(pi[-2, start], pi[-1, start], atol=1e-3)

grid = np.array([list(r) for r in DEFAULT_LAYOUT.strip().splitlines()])
temps = (1.0, 0.2, 0.0)
occ = np.stack([np.asarray(qr.occupancy(mdp, t, H)).sum(axis=(1, 2)) for t in temps])
labels = {i: c for i, c in enumerate(grid.ravel()) if c not in "#."}
policies = np.asarray(qr.soft_policy(mdp, np.asarray(temps), H))[:, 0]
fig = plots.plot_policy_maps(grid.shape, temps, policies, occ, walls=grid.ravel() == "#",
                             labels=labels)

# %% [markdown]
# ## 4. Stochastic transitions: the limit is optimistic
#
# With slippery moves, the T → 0 limit of selection is the best *lucky* path — the maximum over
# outcomes — not the expectimax value a controller can guarantee. This is the known optimism
# bias of "RL as inference"; the gap is zero for deterministic worlds.

# %%
for slip in (0.0, 0.1, 0.3):
    m = qr.gridworld(layout=DEFAULT_LAYOUT, slip=slip)
    print(f"slip {slip:.1f}: selection limit F(0) = {float(qr.optimal_value(m, H)):7.4f}, "
          f"Bellman (expectimax) = {float(qr.bellman_value(m, H)):7.4f}, "
          f"optimism gap = {float(qr.optimism_gap(m, H)):.4f}")
assert float(qr.optimism_gap(qr.gridworld(layout=DEFAULT_LAYOUT, slip=0.3), H)) > 0
