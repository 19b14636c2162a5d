"""B3: Eigen's quasispecies map on binary sequences, L = 16..24 on a CPU (to 30 on a GPU).

The kernel and its timing live in benchmarks/bench_sequence.py (written with quasirl.sequence):
its ``run(sizes=..., repeats=..., quick=...)`` returns one dict per L. This wrapper labels the
rows, adds the roofline columns from this run's measured ceilings (single-pass floor: one read
and one write of the 2^L vector per generation, when the row gives bytes) and keeps every key
bench_sequence reports.
"""

from __future__ import annotations

from ._harness import roofline


def run(ceil, *, sizes, repeats=3, quick=False):
    try:
        from . import bench_sequence
    except ImportError as exc:  # written by the sequence issue; say so instead of guessing
        raise RuntimeError(f"benchmarks/bench_sequence.py is not available yet ({exc})") from exc
    rows = bench_sequence.run(sizes=list(sizes), repeats=repeats, quick=quick)
    out = []
    for r in rows:
        r = dict(r)
        r.setdefault("scenario", "B3")
        r["scenario"] = "B3"
        r.setdefault("case", f"L = {r.get('L', '?')}")
        if "min_s" in r and any(k in r for k in ("bytes", "flops", "transcendentals")):
            roofline(r, ceil)
        if "rel_err" not in r and "rel_err_vs_numpy" in r:
            r["rel_err"] = r["rel_err_vs_numpy"]
        if r.get("numpy_s") and r.get("min_s"):
            r.setdefault("speedup", r["numpy_s"] / r["min_s"])
        out.append(r)
    return out
