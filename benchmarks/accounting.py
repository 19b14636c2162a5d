"""Minimal traffic and work of one step of each kernel (what the floors are computed from).

Notation: S states, B temperatures, E live transitions (policy * prob > 0), b bytes per float.

Forward pull step, per step, for all B temperatures at once (the minimum any implementation
must move, with perfect caching of the gathered rows):

    bytes = 2 B S b           read u_t and write u_{t+1}, one float per state and temperature
          + E (4 + 2 b)       the structure, read once for all temperatures: the source index
                              (int32) and the two floats (log w, r) of each live transition
    flops = B (7 E + 4 S)     per live entry and temperature: T log w + r (2), + u (1), max (1),
                              - m (1), * 1/T (1), sum (1); per state: T log s + m, the shift
    exps  = B (E + S)         one exp per live entry, one log per state

Padding entries of the [S, J] reverse lists (J = the largest in-degree) are not counted: they
are work an implementation could avoid, so counting them would flatter the kernel.

The normalising shift (max over states, once per step) is counted in flops, not in bytes: a
fused kernel takes it from the values it writes.
"""

from __future__ import annotations

import numpy as np


def live_transitions(mdp) -> int:
    w = np.asarray(mdp.policy)[:, :, None] * np.asarray(mdp.prob)
    return int(np.count_nonzero(w > 0))


def forward_step(S: int, E: int, B: int, itemsize: int) -> dict:
    return {
        "bytes": 2 * B * S * itemsize + E * (4 + 2 * itemsize),
        "flops": B * (7 * E + 4 * S),
        "transcendentals": B * (E + S),
    }


def backward_step(S: int, E: int, B: int, itemsize: int) -> dict:
    """The reverse (adjoint) step of forward-backward: read the stored u_t and u_{t+1}, read and
    write the adjoint g, read the structure again, accumulate dF/dR (read + write per entry);
    per live entry and temperature one exp (the softmax weight) and ~8 flops."""
    return {
        "bytes": 4 * B * S * itemsize + E * (4 + 4 * itemsize),
        "flops": B * (8 * E + 2 * S),
        "transcendentals": B * E,
    }


def maxplus_step(S: int, E: int, itemsize: int) -> dict:
    """T = 0: u'(s') = max_j (u(src_j) + r_j): read u, write u', read (src, r) per entry."""
    return {"bytes": 2 * S * itemsize + E * (4 + itemsize), "flops": 2 * E + S,
            "transcendentals": 0}


def expspace_step(S: int, E: int, B: int, itemsize: int) -> dict:
    """Linear (exp-space) step n'(s') = sum_j n(src_j) W_j with W_j = w_j exp(r_j / T) stored
    per temperature: read n, write n', read W (E B floats) and src (E ints); one log per
    temperature for the normaliser."""
    return {"bytes": 2 * B * S * itemsize + E * (4 + B * itemsize), "flops": B * (2 * E + 2 * S),
            "transcendentals": B}


def scaled(d: dict, steps: int) -> dict:
    return {k: v * steps for k, v in d.items()}


def added(*ds: dict) -> dict:
    return {k: sum(d[k] for d in ds) for k in ds[0]}
