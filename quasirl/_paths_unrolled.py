"""The time-unrolled graph of an MDP as a networkx object, with tempered flows.

Built on the edge tables of ``_paths_graph`` and, for the flows, the dynamic programming of
``_paths_dp``: a view for drawing and for networkx's algorithms on small graphs.
"""

from __future__ import annotations

import numpy as np

from . import _validate as V
from ._mdp import MDP
from ._paths_dp import path_flow
from ._paths_graph import gather_ranges, problem

# networkx holds ~1 KB per edge with its attributes: a million edges is about a gigabyte and a
# minute of Python
MAX_EDGES = 1_000_000


def unrolled_graph(mdp: MDP, horizon: int, T=None, *, max_edges: int = MAX_EDGES):
    """The time-unrolled graph as a networkx ``MultiDiGraph`` (a subclass of ``DiGraph``).

    Nodes are (t, s) for the states s reachable with positive weight at step t (node attributes
    ``t``, ``state``, and ``init`` at t = 0); an edge (t, s) -> (t+1, s') with key (a, k) stands
    for action a and its outcome(s) into s' (k the first successor-list slot), with attributes
    ``action``, ``prob`` = P(s'|s, a), ``policy`` = policy(a|s), ``weight`` = policy * prob and
    ``reward``. Paths from layer 0 to layer H are exactly the paths of :func:`enumerate_paths`.
    With a scalar ``T`` each edge also gets ``flow``, the tempered probability that a path uses
    it (:func:`quasirl.paths.path_flow`), and each node ``flow`` (its tempered occupation).
    Built edge by edge in Python: meant for small graphs (drawing, networkx algorithms); the
    dynamic-programming functions are the route for large ones: a graph of more than
    ``max_edges`` edges (default one million, about 1 GB) is refused before it is built.
    """
    import networkx as nx

    horizon = V.check_horizon(horizon)
    max_edges = V.check_horizon(max_edges, "max_edges")
    edges = problem(mdp, horizon)
    # the layers, counting edges as they come: a huge graph is refused early
    reach = [np.flatnonzero(edges.log_init > -np.inf)]
    n_edges = 0
    for t in range(horizon):
        idx, _ = gather_ranges(edges.indptr, reach[t])
        n_edges += idx.size
        if n_edges > max_edges:
            raise V.QuasirlValueError(
                f"unrolled_graph: the graph has more than max_edges = {max_edges:,} edges "
                f"(reached by step {t + 1} of horizon {horizon}; networkx needs ~1 KB per "
                f"edge); use the dynamic-programming functions (quasirl.paths.path_flow, "
                f"quasirl.occupancy) or raise max_edges")
        reach.append(np.unique(edges.dst[idx]))
    pol = np.asarray(mdp.policy, dtype=np.float64)
    flows = None
    if T is not None:
        t_arr, batched = V.check_temperature(T)
        if batched:
            raise V.QuasirlValueError("unrolled_graph takes a scalar T (or None)")
        flows = np.asarray(path_flow(mdp, T, horizon), dtype=np.float64)
    G = nx.MultiDiGraph(horizon=horizon)
    st = edges.states
    init = np.exp(edges.log_init)
    for s in reach[0]:
        G.add_node((0, int(st[s])), t=0, state=int(st[s]), init=float(init[s]))
    for t in range(horizon):
        for s in reach[t + 1]:
            G.add_node((t + 1, int(st[s])), t=t + 1, state=int(st[s]))
        idx, _ = gather_ranges(edges.indptr, reach[t])
        for e in idx:
            u, v, a, k = int(st[edges.src[e]]), int(st[edges.dst[e]]), int(edges.act[e]), int(
                edges.out[e])
            w = float(np.exp(edges.logw[e]))
            attrs = dict(action=a, prob=w / pol[u, a], policy=float(pol[u, a]), weight=w,
                         reward=float(edges.rew[e]))
            if flows is not None:
                attrs["flow"] = _merged_flow(mdp, flows[t], u, a, v, float(edges.rew[e]))
            G.add_edge((t, u), (t + 1, v), key=(a, k), **attrs)
    if flows is not None:
        for node in G.nodes:
            t = G.nodes[node]["t"]
            if t < horizon:
                G.nodes[node]["flow"] = float(sum(d["flow"] for *_, d in
                                                  G.out_edges(node, data=True)))
            else:
                G.nodes[node]["flow"] = float(sum(d["flow"] for *_, d in
                                                  G.in_edges(node, data=True)))
    return G


def _merged_flow(mdp, flow_t, s, a, s2, r) -> float:
    """Sum of the flows of the outcomes of (s, a) merged into the edge (s, a, s2, r)."""
    nxt = np.asarray(mdp.next[s, a])
    rew = np.asarray(mdp.reward[s, a], dtype=np.float64)
    prob = np.asarray(mdp.prob[s, a])
    sel = (nxt == s2) & (rew == r) & (prob > 0)
    return float(flow_t[s, a][sel].sum())
