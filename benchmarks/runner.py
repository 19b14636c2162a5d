"""``python -m benchmarks``: every scenario, the measured ceilings, JSON and a printed table.

    python -m benchmarks                      # everything at full size (see README for times)
    python -m benchmarks --quick              # tiny sizes, seconds (what the tests run)
    python -m benchmarks --only B1,B4 --out results/
    python -m benchmarks --only mdp           # the 500 x 500 core benchmark alone

Scenarios: mdp (500 x 500 gridworld), B1 (10^6-state gridworld forward and forward-backward),
B2 (dense stochastic MDP), B3 (Eigen's model, via benchmarks/bench_sequence.py), B4 (max-plus
vs exp-space vs log-space kernels, the float32 crossover temperature), B5 (path enumeration vs
dynamic programming). Each row: compile time apart, min and median of repeats, bytes / flops /
transcendentals, the floors from the measured ceilings, the fraction of the floor achieved,
the numpy reference time and the speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

SCENARIOS = ("mdp", "B1", "B2", "B3", "B4", "B5")


def _args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds); for tests")
    p.add_argument("--only", default=",".join(SCENARIOS),
                   help=f"comma-separated scenarios out of {','.join(SCENARIOS)}")
    p.add_argument("--out", default="benchmarks/results",
                   help="folder for bench.json (and bench.png); default benchmarks/results")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (default 3; 2 quick)")
    p.add_argument("--b1-horizon", type=int, default=None, help="B1 forward horizon (1000)")
    p.add_argument("--b1-side", type=int, default=None, help="B1 grid side (1000: S = 10^6)")
    p.add_argument("--fb-horizon", type=int, default=None,
                   help="B1 forward-backward horizon (10; memory grows with it)")
    p.add_argument("--numpy-steps", type=int, default=None,
                   help="steps the numpy references run (scaled to the horizon); default 10")
    p.add_argument("--b3-max-L", type=int, default=None, help="largest L for B3 (24 CPU, 30 GPU)")
    p.add_argument("--b3-sizes", default=None, help="explicit B3 sizes, e.g. 26,28,30")
    p.add_argument("--no-plot", action="store_true", help="skip bench.png")
    return p.parse_args(argv)


def plan(a) -> dict:
    """Keyword arguments of each scenario for this run (full or quick sizes, overrides)."""
    import jax

    gpu = jax.default_backend() != "cpu"
    q = a.quick
    rep = a.repeats or (2 if q else 3)
    nps = a.numpy_steps or (5 if q else 10)
    cfg = {
        "mdp": dict(side=40 if q else 500, horizon=20 if q else 1000, repeats=rep,
                    numpy_steps=nps if q else max(nps, 20)),
        "B1": dict(side=a.b1_side or (50 if q else 1000),
                   horizon=a.b1_horizon or (20 if q else 1000),
                   fb_horizon=a.fb_horizon or (5 if q else 10), numpy_steps=nps, repeats=rep),
        "B2": dict(S=64 if q else 4096, horizon=5 if q else 10, repeats=rep,
                   numpy_steps=nps if q else 1),
        "B3": dict(sizes=list(range(8, 11)) if q else
                   list(range(16, (a.b3_max_L or (30 if gpu else 24)) + 1, 2 if gpu else 1)),
                   repeats=rep, quick=q),
        "B4": dict(side=30 if q else 500, horizon=20 if q else 200, repeats=rep,
                   numpy_steps=nps),
        "B5": dict(max_horizon=6 if q else 12, repeats=rep, sides=(5, 40) if q else (5, 300)),
    }
    if a.b3_sizes:
        cfg["B3"]["sizes"] = [int(x) for x in a.b3_sizes.split(",") if x.strip()]
    if q:
        cfg["B1"]["temps"] = 8
        cfg["B2"]["temps"] = 4
        cfg["B4"]["temps"] = 8
    return cfg


def _scenario(name):
    if name == "mdp":
        from . import bench_mdp as m
    elif name == "B1":
        from . import b1_gridworld as m
    elif name == "B2":
        from . import b2_dense as m
    elif name == "B3":
        from . import b3_eigen as m
    elif name == "B4":
        from . import b4_kernels as m
    elif name == "B5":
        from . import b5_paths as m
    else:  # pragma: no cover - validated in main
        raise KeyError(name)
    return m.run


def main(argv: list[str] | None = None) -> int:
    a = _args(sys.argv[1:] if argv is None else argv)
    only = [s.strip() for s in a.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SCENARIOS]
    if bad:
        print(f"error: unknown scenario(s) {bad}; choose from {list(SCENARIOS)}", file=sys.stderr)
        return 2
    from . import ceilings
    from ._harness import machine_info, print_table, roofline

    t_start = time.time()
    record = {"machine": machine_info(), "quick": a.quick, "scenarios": only}
    print(f"measuring ceilings on {record['machine']['device']} ...", flush=True)
    ceil = ceilings.measure(quick=a.quick)
    record["ceilings"] = ceil
    print(f"  bandwidth {ceil['bandwidth_Bps'] / 1e9:.1f} GB/s, matmul "
          f"{ceil['matmul_flops'] / 1e9:.0f} GFLOP/s, exp {ceil['exp_per_s'] / 1e9:.2f} G/s"
          f" (XLA {ceil['exp_xla_per_s'] / 1e9:.2f})", flush=True)
    cfg = plan(a)
    record["config"] = {k: cfg[k] for k in only}
    rows, errors = [], {}
    record["ceilings_per_scenario"] = {}
    for name in only:
        # the bandwidth again, just before and after the scenario: on a shared host it changes
        # from one minute to the next (benchmarks/NOTES.md, "Measuring the ceilings")
        here = dict(ceil)
        if not a.quick:
            local = ceilings.bandwidth(ceil["bandwidth_array_bytes"])
            record["ceilings_per_scenario"][name] = local
            here.update(local, bandwidth_run_start_Bps=ceil["bandwidth_Bps"])
            print(f"  bandwidth now {local['bandwidth_Bps'] / 1e9:.1f} GB/s", flush=True)
        print(f"running {name} {cfg[name]} ...", flush=True)
        t0 = time.time()
        try:
            out = _scenario(name)(here, **cfg[name])
        except Exception as exc:  # one broken scenario must not lose the others' numbers
            errors[name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
            continue
        if not a.quick:  # and just after; the larger of the two is the scenario's ceiling
            after = ceilings.bandwidth(ceil["bandwidth_array_bytes"])
            record["ceilings_per_scenario"][name + " after"] = after
            if after["bandwidth_Bps"] > here["bandwidth_Bps"]:
                here.update(after, bandwidth_run_start_Bps=ceil["bandwidth_Bps"])
                out = [roofline(r, here) for r in out]
        for r in out:
            r.setdefault("loadavg", [round(x, 2) for x in os.getloadavg()])
        rows.extend(out)
        print(f"  {name} done in {time.time() - t0:.0f} s", flush=True)
    record["results"] = rows
    record["errors"] = errors
    record["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    record["wall_s"] = time.time() - t_start
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "bench.json"
    path.write_text(json.dumps(record, indent=1, default=_json_default))
    if rows and not a.no_plot:
        from .figure import roofline_figure

        roofline_figure(rows, out_dir / "bench.png", title=record["machine"]["device"])
    print_table(rows, title=f"quasirl benchmarks on {record['machine']['device']} "
                f"({record['machine']['cpu_model']}), commit {record['machine']['commit']}")
    print(f"wrote {path}  ({record['wall_s']:.0f} s, load {record['machine']['loadavg_end']})")
    return 1 if errors else 0


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
