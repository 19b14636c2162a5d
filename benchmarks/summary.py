"""A short table from a results folder (gpu_check.json and bench.json): what gpu.sh prints last.

    python -m benchmarks.summary DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _f(v, spec):
    return "-" if v is None else format(v, spec)


def summary(folder) -> str:
    folder = Path(folder)
    lines = []
    chk = folder / "gpu_check.json"
    if chk.is_file():
        c = json.loads(chk.read_text())
        worst = max((r["rel_err"] for r in c["checks"]), default=0.0)
        lines.append(f"device {c['device']} ({c['platform']}): GPU vs CPU, "
                     f"{len(c['checks'])} kernels, worst rel err {worst:.1e} "
                     f"({'all within' if c['all_ok'] else 'NOT all within'} {c['tolerance']:g})")
    b = folder / "bench.json"
    if b.is_file():
        rec = json.loads(b.read_text())
        m = rec["machine"]
        lines.append(f"{m['device']} / {m['cpu_model']}, commit {m['commit']}, {m['date']}; "
                     f"bandwidth {rec['ceilings']['bandwidth_Bps'] / 1e9:.0f} GB/s, matmul "
                     f"{rec['ceilings']['matmul_flops'] / 1e12:.1f} TFLOP/s")
        head = (f"{'scenario':8s} {'case':26s} {'min s':>10s} {'ms/step':>9s} {'floor s':>10s} "
                f"{'%bw':>6s} {'%floor':>7s} {'x numpy':>8s}")
        lines += [head, "-" * len(head)]
        for r in rec["results"]:
            lines.append(
                f"{r.get('scenario', ''):8s} {str(r.get('case', ''))[:26]:26s} "
                f"{_f(r.get('min_s'), '10.4g')} {_f(r.get('per_step_ms'), '9.3f')} "
                f"{_f(r.get('floor_s'), '10.3g')} {_f(r.get('frac_bw_floor', None) and 100 * r['frac_bw_floor'], '6.1f')} "  # noqa: E501
                f"{_f(r.get('frac_floor', None) and 100 * r['frac_floor'], '7.1f')} "
                f"{_f(r.get('speedup'), '8.1f')}")
        if rec.get("errors"):
            lines.append(f"errors: {rec['errors']}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results"))
