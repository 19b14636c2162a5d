"""Constructors for common MDPs: chain, gridworld, random sparse MDPs, networkx graphs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate as V
from ._mdp import MDP

# Actions of the gridworld, in order: (d_row, d_col).
MOVES = np.array([[-1, 0], [0, 1], [1, 0], [0, -1]])
ACTION_NAMES = ("up", "right", "down", "left")

# The built-in world of `quasirl demo`: from S, a near small goal g (+1) and a far large goal G
# (+3), reached along a corridor past a pit X (-3) or round a longer, safe detour. At high T the
# population spreads over everything; as T falls it concentrates on the best route.
DEFAULT_LAYOUT = """
S...#.....
.##.#.###.
.#g.#.#...
.####.X.#G
.......##.
.####.....
"""
DEFAULT_REWARDS = {"G": 3.0, "g": 1.0, "X": -3.0}


def chain(n: int, goal_reward: float = 1.0, step_cost: float = 0.0, slip: float = 0.0,
          dtype=None) -> MDP:
    """A chain of n states, actions (left, right); entering state n-1 pays ``goal_reward``.

    State n-1 is absorbing (reward 0). Each move costs ``step_cost``. With ``slip`` > 0 an
    action moves the other way with that probability. Starts in state 0.
    """
    if n < 2:
        raise V.QuasirlValueError(f"n must be >= 2, got {n}")
    if not 0 <= slip < 1:
        raise V.QuasirlValueError(f"slip must lie in [0, 1), got {slip}")
    s = np.arange(n)
    left = np.maximum(s - 1, 0)
    right = np.minimum(s + 1, n - 1)
    intended = np.stack([left, right], axis=1)
    other = np.stack([right, left], axis=1)
    term = s == n - 1
    intended[term] = n - 1
    other[term] = n - 1

    def reward(dest):
        r = np.where(dest == n - 1, goal_reward, 0.0) - step_cost
        return np.where(term[:, None], 0.0, r)

    init = np.zeros(n)
    init[0] = 1.0
    dt = dtype or jnp.result_type(float)
    if slip == 0:
        return MDP.deterministic(intended, reward(intended).astype(dt), init=init.astype(dt))
    nxt = np.stack([intended, other], axis=2)
    prob = np.stack([np.full((n, 2), 1 - slip), np.full((n, 2), slip)], axis=2)
    prob[term] = [1.0, 0.0]
    rew = np.stack([reward(intended), reward(other)], axis=2)
    return MDP.from_successors(nxt, prob.astype(dt), rew.astype(dt), init=init.astype(dt))


def _cell(name: str, cell, H: int, W: int) -> int:
    """The state index of a (row, col) pair on an H x W grid; no wrap-around of negatives."""
    try:
        r, c = cell
    except (TypeError, ValueError):
        raise V.QuasirlValueError(f"{name} must be a (row, col) pair, got {cell!r}") from None
    if not (V.is_int(r) and V.is_int(c)):
        raise V.QuasirlValueError(f"{name} must be a pair of integers, got {cell!r}")
    if not (0 <= r < H and 0 <= c < W):
        raise V.QuasirlValueError(
            f"{name} = {(int(r), int(c))} lies off the {H} x {W} grid (rows 0..{H - 1}, "
            f"columns 0..{W - 1}; negative indices do not wrap)"
        )
    return int(r) * W + int(c)


def _parse_layout(layout: str):
    rows = [r.strip() for r in layout.strip().splitlines() if r.strip()]
    width = len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != width:
            raise V.QuasirlValueError(
                f"layout rows must have equal length: row 0 has {width}, row {i} has {len(r)}"
            )
    return np.array([list(r) for r in rows])


def gridworld(height: int | None = None, width: int | None = None, *, layout: str | None = None,
              rewards: dict | None = None, goal: tuple | None = None, goal_reward: float = 1.0,
              step_cost: float = 0.04, slip: float = 0.0, start=None, dtype=None) -> MDP:
    """A gridworld with walls, absorbing goals and pits, and a cost per step.

    Either ``layout``, an ASCII map ('#' wall, '.' free, 'S' start, any other letter a terminal
    cell whose entry reward is ``rewards[letter]``, default ``DEFAULT_REWARDS``), or a plain
    ``height`` x ``width`` grid with one goal cell (default: the far corner) — the latter is
    vectorised and builds 10^6 states in well under a second.

    Actions (up, right, down, left); bumping into a wall or the edge stays put. Every move costs
    ``step_cost``; entering a terminal cell adds its reward, and terminal cells are absorbing
    with reward 0. With ``slip`` > 0 the move goes to either side with probability slip/2 each
    (K = 3). Starts at 'S' (or ``start`` = (row, col); default: the top-left cell). State index
    = row * width + col.
    """
    if layout is not None:
        grid = _parse_layout(layout)
        rewards = DEFAULT_REWARDS if rewards is None else rewards
    else:
        if height is None or width is None or height < 1 or width < 1:
            raise V.QuasirlValueError(
                f"give layout=..., or height and width >= 1 (got {height}, {width})"
            )
        grid = np.full((height, width), ".")
        g = (height - 1, width - 1) if goal is None else goal
        grid.flat[_cell("goal", g, height, width)] = "G"
        rewards = {"G": goal_reward}
    if not 0 <= slip < 1:
        raise V.QuasirlValueError(f"slip must lie in [0, 1), got {slip}")
    H, W = grid.shape
    S = H * W
    wall = (grid == "#").ravel()
    terminal_letters = {str(c) for c in np.unique(grid)} - {"#", ".", "S"}
    missing = terminal_letters - set(rewards)
    if missing:
        raise V.QuasirlValueError(f"rewards has no entry for layout cell(s) {sorted(missing)}")
    cell_reward = np.zeros(S)
    terminal = np.zeros(S, dtype=bool)
    flat = grid.ravel()
    for letter in terminal_letters:
        sel = flat == letter
        terminal |= sel
        cell_reward[sel] = rewards[letter]
    rows, cols = np.divmod(np.arange(S), W)

    def move(a):
        r = rows + MOVES[a, 0]
        c = cols + MOVES[a, 1]
        inside = (r >= 0) & (r < H) & (c >= 0) & (c < W)
        dest = np.where(inside, np.clip(r, 0, H - 1) * W + np.clip(c, 0, W - 1), np.arange(S))
        dest = np.where(wall[dest], np.arange(S), dest)
        return np.where(terminal | wall, np.arange(S), dest)

    dests = np.stack([move(a) for a in range(4)], axis=1)  # [S, 4]

    def reward(dest):
        r = -step_cost + np.where(terminal[dest], cell_reward[dest], 0.0)
        return np.where((terminal | wall)[:, None], 0.0, r)

    if start is None:
        st = np.flatnonzero(flat == "S")
        start_idx = int(st[0]) if st.size else 0
    else:
        start_idx = _cell("start", start, H, W)
    if wall[start_idx]:
        raise V.QuasirlValueError(f"start cell {divmod(start_idx, W)} is a wall")
    dt = dtype or jnp.result_type(float)
    init = np.zeros(S, dtype=dt)
    init[start_idx] = 1.0
    if slip == 0:
        return MDP.deterministic(dests.astype(np.int32), reward(dests).astype(dt), init=init)
    side1 = dests[:, [1, 2, 3, 0]]  # perpendicular moves
    side2 = dests[:, [3, 0, 1, 2]]
    nxt = np.stack([dests, side1, side2], axis=2)
    prob = np.broadcast_to(np.array([1 - slip, slip / 2, slip / 2]), nxt.shape).copy()
    rew = np.stack([reward(dests), reward(side1), reward(side2)], axis=2)
    return MDP.from_successors(nxt.astype(np.int32), prob.astype(dt), rew.astype(dt), init=init)


def random_mdp(key, S: int, A: int, branching: int = 2, reward_scale: float = 1.0,
               dtype=None) -> MDP:
    """A random MDP: each (s, a) has ``branching`` distinct successors with Dirichlet(1)
    probabilities and N(0, reward_scale^2) rewards. ``key`` is a JAX PRNG key."""
    for name, v in (("S", S), ("A", A), ("branching", branching)):
        V.check_int(name, v, minimum=1)
    if not 1 <= branching <= S:
        raise V.QuasirlValueError(f"branching must lie in [1, S={S}], got {branching}")
    # numpy's generator seeded by the key's bits: the same key gives the same MDP, and there
    # is no per-shape compilation of eager JAX random ops.
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
    dt = dtype or jnp.result_type(float)
    if 4 * branching > S:
        nxt = np.argsort(rng.random((S, A, S)), axis=-1)[..., :branching]
    else:  # O(S * A * branching): redraw the rows that repeat a successor
        nxt = rng.integers(0, S, (S, A, branching))
        while True:
            srt = np.sort(nxt, axis=-1)
            dup = (srt[..., 1:] == srt[..., :-1]).any(-1)
            if not dup.any():
                break
            nxt[dup] = rng.integers(0, S, (int(dup.sum()), branching))
    nxt = nxt.astype(np.int32)
    prob = rng.dirichlet(np.ones(branching), size=(S, A))
    prob = prob / prob.sum(-1, keepdims=True)
    rew = reward_scale * rng.standard_normal((S, A, branching))
    return MDP.from_successors(nxt, prob.astype(dt), rew.astype(dt))


def from_graph(G, reward: str = "reward", init: str | None = None) -> MDP:
    """An MDP from a networkx DiGraph: states are ``list(G.nodes)``, each out-edge an action.

    Edge attribute ``reward`` (default 0) is the reward of taking that edge. Nodes without
    out-edges get a single self-loop action of reward 0. Padding actions (for nodes of smaller
    out-degree) have policy 0, so the exploration policy is uniform over each node's edges. If
    ``init`` names a node attribute it gives the start weights (normalised), else uniform.
    """
    import networkx as nx

    if not isinstance(G, nx.DiGraph):
        raise V.QuasirlValueError(f"G must be a networkx DiGraph, got {type(G).__name__}")
    nodes = list(G.nodes)
    if not nodes:
        raise V.QuasirlValueError("G has no nodes")
    index = {n: i for i, n in enumerate(nodes)}
    S = len(nodes)
    out = [list(G.out_edges(n, data=True)) for n in nodes]
    A = max(max(len(o) for o in out), 1)
    nxt = np.tile(np.arange(S)[:, None], (1, A))
    rew = np.zeros((S, A))
    pol = np.zeros((S, A))
    for i, edges in enumerate(out):
        if not edges:
            pol[i, 0] = 1.0
            continue
        for a, (_, v, data) in enumerate(edges):
            nxt[i, a] = index[v]
            r = data.get(reward, 0.0)
            if not np.isfinite(r):
                raise V.QuasirlValueError(f"edge ({nodes[i]!r}, {v!r}) has reward {r!r}")
            rew[i, a] = r
        pol[i, : len(edges)] = 1.0 / len(edges)
    if init is not None:
        w = np.array([G.nodes[n].get(init, 0.0) for n in nodes], dtype=float)
        if w.sum() <= 0:
            raise V.QuasirlValueError(f"node attribute {init!r} gives no positive start weight")
        init_v = w / w.sum()
    else:
        init_v = None
    return MDP.deterministic(nxt, rew, init=init_v, policy=pol)
