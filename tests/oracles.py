"""Independent oracles shared by the test files: every path, straight from the definition."""

import itertools

import numpy as np
from scipy.special import logsumexp


def all_paths(P, R, init, policy, H):
    """Every path with positive weight: (states [N,H+1], actions [N,H], log w [N], return [N])."""
    S, A, _ = P.shape
    states, actions, lws, rets = [], [], [], []
    for s0 in range(S):
        if init[s0] <= 0:
            continue
        for acts in itertools.product(range(A), repeat=H):
            for nxt in itertools.product(range(S), repeat=H):
                path = (s0, *nxt)
                w, r = init[s0], 0.0
                for t in range(H):
                    w *= policy[path[t], acts[t]] * P[path[t], acts[t], path[t + 1]]
                    r += R[path[t], acts[t], path[t + 1]]
                if w > 0:
                    states.append(path)
                    actions.append(acts)
                    lws.append(np.log(w))
                    rets.append(r)
    return (np.array(states), np.array(actions).reshape(len(states), H), np.array(lws),
            np.array(rets))


def brute_F(paths, T):
    _, _, lw, ret = paths
    if T == 0:
        return ret.max()
    return T * logsumexp(lw + ret / T)
