"""First-call latency of every public kernel (issue 16, item 6).

``python -m benchmarks.first_call``.

Each case runs in a fresh Python process (empty JAX caches, the native kernels already built):
the inputs are made and blocked on first, then the call is timed once (trace + compile + run:
what a user waits for), again with the same arguments (run only) and, where the case has one,
with a different size of the same kind (another number of generations, another temperature),
which is where a static argument would recompile. ``import quasirl`` is timed apart.

    python -m benchmarks.first_call                    # all cases, this checkout
    python -m benchmarks.first_call --tree /tmp/old    # the same cases on another checkout
    python -m benchmarks.first_call --baseline /tmp/old  # both, alternately, case by case
    python -m benchmarks.first_call --only occupancy --json out.json

Cases are at S <= 10^4 (the issue's bound: every first call under 3 s there). The sequence
cases use L = 13 (8192 genotypes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

# name -> (setup, call, call with another size or None). ``mdp`` etc. are built in setup.
_GRID = "mdp = qr.gridworld(45, 45, step_cost=0.04)  # S = 2025\n"
_BIG = "mdp = qr.gridworld(100, 100, step_cost=0.04)  # S = 10^4\n"
_RAND = "mdp = qr.random_mdp(jax.random.key(0), 2000, 4, branching=3)\n"
# in-degree J = 109 > 16: the pull step's stacked-gather path (the 19-23 s case)
_WIDE = "mdp = qr.random_mdp(jax.random.key(0), 2000, 4, branching=20)\n"
_T = "T = jnp.linspace(0.05, 2.0, 32)\n"
_SEQ = ("L = 13\nf = qr.sequence.single_peak(L, 10.0)\n")

CASES = {
    "free_energy 32 T, grid S=2025": (_GRID + _T, "qr.free_energy(mdp, T, 100)",
                                      "qr.free_energy(mdp, T[:16], 100)"),
    "free_energy 32 T, grid S=10^4": (_BIG + _T, "qr.free_energy(mdp, T, 100)", None),
    "free_energy 32 T, random S=2000": (_RAND + _T, "qr.free_energy(mdp, T, 100)", None),
    "log_partition 1 T, grid S=2025": (_GRID, "qr.log_partition(mdp, 0.5, 100)",
                                       "qr.log_partition(mdp, 0.7, 100)"),
    "soft_policy 32 T, grid S=2025": (_GRID + _T, "qr.soft_policy(mdp, T, 100)", None),
    "occupancy T=0.5, grid S=2025": (_GRID, "qr.occupancy(mdp, 0.5, 100)",
                                     "qr.occupancy(mdp, 0.7, 100)"),
    "occupancy T=0.5, random S=2000": (_RAND, "qr.occupancy(mdp, 0.5, 100)", None),
    "occupancy T=0.5, grid S=10^4": (_BIG, "qr.occupancy(mdp, 0.5, 100)", None),
    "occupancy T=0.5, random J=109 S=2000": (_WIDE, "qr.occupancy(mdp, 0.5, 100)", None),
    "occupancy T=0, random J=109 S=2000": (_WIDE, "qr.occupancy(mdp, 0.0, 100)", None),
    "free_energy 1 T, random J=109 S=2000": (_WIDE, "qr.free_energy(mdp, 0.5, 100)", None),
    "occupancy T=0, grid S=2025": (_GRID, "qr.occupancy(mdp, 0.0, 100)", None),
    "grad free_energy 32 T, grid S=2025": (
        _GRID + _T, "jax.grad(lambda r: qr.free_energy(mdp.replace(reward=r), T, 100).sum())"
        "(mdp.reward)", None),
    "optimal_value, grid S=2025": (_GRID, "qr.optimal_value(mdp, 100)", None),
    "bellman_value, random S=2000": (_RAND, "qr.bellman_value(mdp, 100)", None),
    "evolve 32 T, grid S=2025": (_GRID + _T, "qr.evolve(mdp, T, 100)", None),
    "desirability 32 T, grid S=2025": (_GRID + _T, "qr.desirability(mdp, T, 100)", None),
    "paths.path_flow T=0.5, grid S=2025": (_GRID, "qr.paths.path_flow(mdp, 0.5, 50)", None),
    "paths.optimal_path_mass 32 T, grid S=2025": (
        _GRID + _T, "qr.paths.optimal_path_mass(mdp, T, 100)", None),
    "paths.num_optimal_paths, grid S=2025": (_GRID, "qr.paths.num_optimal_paths(mdp, 100)",
                                             None),
    "sequence.evolve 100 gen, L=13": (_SEQ, "qr.sequence.evolve(f, 0.01, 100)",
                                      "qr.sequence.evolve(f, 0.01, 137)"),
    "sequence.evolve 100 gen save_every=10, L=13": (
        _SEQ, "qr.sequence.evolve(f, 0.01, 100, save_every=10)",
        "qr.sequence.evolve(f, 0.01, 120, save_every=10)"),
    "sequence.stationary, L=13": (_SEQ, "qr.sequence.stationary(f, 0.01)", None),
    "sequence.mutate, L=13": (_SEQ, "qr.sequence.mutate(f / f.sum(), 0.01)", None),
    "sequence.evolve 100 gen save_at=[50, 100], L=13": (
        _SEQ, "qr.sequence.evolve(f, 0.01, 100, save_at=[50, 100])",
        "qr.sequence.evolve(f, 0.01, 300, save_at=[10, 250])"),
    "sequence.wright_fisher_individuals N=500 L=20": (
        "import numpy as np\nf = jnp.asarray(np.r_[10.0, np.ones(20)])\n",
        "qr.sequence.wright_fisher_individuals(jax.random.key(0), f, 0.01, 500, 100)",
        "qr.sequence.wright_fisher_individuals(jax.random.key(0), f, 0.01, 500, 137)"),
    "sequence.wright_fisher 100 gen, L=13": (
        _SEQ, "qr.sequence.wright_fisher(jax.random.key(0), f, 0.01, 1000, 100)",
        "qr.sequence.wright_fisher(jax.random.key(0), f, 0.01, 1000, 137)"),
}

_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import jax, jax.numpy as jnp
import quasirl as qr
t_import = time.perf_counter() - t0
{setup}
def block(x):  # every array in the result, whatever object holds it
    leaves = jax.tree_util.tree_leaves(x)
    if len(leaves) == 1 and hasattr(leaves[0], "__dict__") and not hasattr(leaves[0], "shape"):
        leaves = jax.tree_util.tree_leaves(vars(leaves[0]))
    return jax.block_until_ready([v for v in leaves if isinstance(v, jax.Array)])
block(mdp if "mdp" in dir() else f)
t = time.perf_counter(); block({call}); first = time.perf_counter() - t
t = time.perf_counter(); block({call}); again = time.perf_counter() - t
other = None
if {other!r} is not None:
    t = time.perf_counter(); block({other_call}); other = time.perf_counter() - t
print("RESULT", json.dumps(dict(import_s=t_import, first_s=first, again_s=again, other_s=other)))
"""


def run_case(name: str, tree: Path, timeout: float = 300.0) -> dict:
    setup, call, other = CASES[name]
    code = _CHILD.format(setup=setup, call=call, other=other, other_call=other or "None")
    env = dict(os.environ, PYTHONPATH=str(tree))
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=timeout, cwd=tree)
    row = {"case": name, "call": call, "other": other, "wall_s": time.perf_counter() - t}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode or not lines:
        row["error"] = (p.stderr.strip().splitlines() or ["?"])[-1]
        return row
    row.update(json.loads(lines[-1][len("RESULT "):]))
    return row


def _commit(tree: Path) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.first_call", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tree", default=str(Path(__file__).resolve().parents[1]),
                   help="checkout whose quasirl is timed (default: this one)")
    p.add_argument("--baseline", default=None,
                   help="another checkout, timed case by case alternately with --tree (the "
                        "same load for both: fair on a shared machine)")
    p.add_argument("--only", default="", help="run the cases whose name contains this text")
    p.add_argument("--json", default=None, help="write the rows here")
    a = p.parse_args(argv)
    trees = {"after": Path(a.tree).resolve()}
    if a.baseline:
        trees = {"before": Path(a.baseline).resolve(), **trees}
    names = [n for n in CASES if a.only in n]
    rows = []
    head = " ".join(f"{k + ' first s':>15s}" for k in trees)
    print(f"{'case':46s} {head} {'again s':>8s} {'other s':>8s}")
    for n in names:
        got = {k: run_case(n, t) for k, t in trees.items()}
        for k, r in got.items():
            r["tree"] = k
            rows.append(r)
        firsts = " ".join(f"{'error' if 'error' in r else format(r['first_s'], '.3f'):>15s}"
                          for r in got.values())
        last = got["after"]
        again = "" if "error" in last else f"{last['again_s']:.3f}"
        other = "" if "error" in last or last["other_s"] is None else f"{last['other_s']:.3f}"
        print(f"{n:46s} {firsts} {again:>8s} {other:>8s}", flush=True)
    if a.json:
        meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                "trees": {k: {"path": str(t), "commit": _commit(t)} for k, t in trees.items()},
                "date": time.strftime("%Y-%m-%d %H:%M"),
                "load": os.getloadavg(), "rows": rows}
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
