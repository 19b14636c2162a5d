"""A/B timing of two source trees of quasirl on the native kernels, alternating processes.

    python -m benchmarks.ab --trees /path/to/before /path/to/after --rounds 5

The full runner's speed-up over numpy moves by +-20% between runs on a shared VM (the numpy
reference is as noisy as the kernel), which hides a 10% change of the kernel itself. Here
each round runs every case once per tree, in a fresh process per tree and round, in
alternating order, so both trees see the same machine; each process reports the minimum of
``--repeats`` timed calls after a warm-up. Cases: B1's forward (S = 10^6, 32 T; horizon
``--horizon``, per step), B1's forward-backward (``value_and_grad``, H = 10) and B3's map at
L = 22 (float32 and float64, per generation), and a 60-state gridworld over 10^5 steps (native
and XLA, per step: the per-step overhead), all through APIs both trees have.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile

CASE = r"""
import json, sys, time
import jax, jax.numpy as jnp, numpy as np
import quasirl as qr
H, repeats = int(sys.argv[1]), int(sys.argv[2])
def best(fn):
    jax.block_until_ready(fn())
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter(); jax.block_until_ready(fn()); ts.append(time.perf_counter() - t0)
    return min(ts)
mdp = qr.gridworld(1000, 1000, dtype=np.float32)
T = jnp.asarray(np.geomspace(0.01, 10.0, 32), jnp.float32)
out = {"B1 forward, per step": best(lambda: qr.free_energy(mdp, T, H)) / H}
vg = jax.jit(jax.value_and_grad(lambda r: jnp.sum(qr.free_energy(mdp.replace(reward=r), T, 10))))
out["B1 forward-backward, H = 10"] = best(lambda: vg(mdp.reward))
del mdp, vg
# a small state space over a long horizon: per-step overhead, not bandwidth (issue 15)
small = qr.gridworld(6, 10, dtype=np.float32)
for k in ("native", "xla"):
    try:  # trees from before kernel= run the native kernel by default
        qr.free_energy(small, 0.1, 2, kernel=k)
        kw = {"kernel": k}
    except TypeError:
        if k == "xla":
            continue
        kw = {}
    out[f"gridworld 60 states, H = 10^5, {k}, per step"] = best(
        lambda kw=kw: qr.free_energy(small, 0.1, 100_000, **kw)) / 100_000
from benchmarks.bench_sequence import jax_kernel
from quasirl import sequence as S
for dt in (np.float32, np.float64):
    run, _, name = jax_kernel(22, dt, 20)
    f = jnp.asarray(S.single_peak(22, 2.0), dt)
    x = jnp.full(1 << 22, 1.0 / (1 << 22), dt)
    out[f"B3 L = 22 {np.dtype(dt).name} ({name}), per generation"] = best(lambda: run(f, x)) / 20
print(json.dumps(out))
"""


def run_tree(tree: str, horizon: int, repeats: int) -> dict:
    cache = os.path.join(tempfile.gettempdir(), "quasirl-ab",
                         hashlib.sha256(os.path.abspath(tree).encode()).hexdigest()[:12])
    env = {**os.environ, "PYTHONPATH": tree, "QUASIRL_CACHE_DIR": cache}
    out = subprocess.run([sys.executable, "-c", CASE, str(horizon), str(repeats)], cwd=tree,
                         env=env, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"{tree}: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", nargs=2, required=True, metavar=("A", "B"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--horizon", type=int, default=100)
    ap.add_argument("--out", default=None, help="JSON file for every measurement")
    a = ap.parse_args()
    times: dict[str, dict[str, list[float]]] = {t: {} for t in a.trees}
    for r in range(a.rounds):
        order = a.trees if r % 2 == 0 else a.trees[::-1]
        for tree in order:
            for case, t in run_tree(tree, a.horizon, a.repeats).items():
                times[tree].setdefault(case, []).append(t)
        print(f"round {r + 1}/{a.rounds} done", file=sys.stderr, flush=True)
    A, B = a.trees
    print(f"{'case':52s} {'A min':>10s} {'A median':>10s} {'B min':>10s} {'B median':>10s} "
          f"{'B/A (median)':>12s}")
    for case in dict.fromkeys([*times[A], *times[B]]):
        ta, tb = times[A].get(case), times[B].get(case)
        cells = [f"{min(t):10.4g} {statistics.median(t):10.4g}" if t else f"{'-':>10s} {'-':>10s}"
                 for t in (ta, tb)]
        ratio = statistics.median(tb) / statistics.median(ta) if ta and tb else float("nan")
        print(f"{case:52s} {cells[0]} {cells[1]} {ratio:12.3f}")
    if a.out:
        with open(a.out, "w") as fh:
            json.dump({"trees": a.trees, "times": times}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
