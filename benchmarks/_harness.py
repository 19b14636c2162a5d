"""Timing, machine facts, roofline bookkeeping and the printed table, shared by every scenario.

A result row is a plain dict (JSON-ready). ``timed_row`` fills in the roofline columns:

    floor_bw_s    = bytes / measured bandwidth          (the memory-bandwidth floor; the runner
                                                         measures it just before each scenario)
    floor_flop_s  = flops / measured matmul rate        (the arithmetic floor)
    floor_exp_s   = transcendentals / measured exp rate (exp/log throughput floor)
    floor_s       = the largest of the three (the roofline floor)
    frac_bw_floor = floor_bw_s / min_s,  frac_floor = floor_s / min_s

so a fraction of 1 means the kernel runs at the speed of its slowest unavoidable resource.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def block(x):
    """Wait for every array in ``x`` (JAX dispatch is asynchronous)."""
    return jax.block_until_ready(x)


def time_jax(fn: Callable, *args, repeats: int = 3, compile: Callable | None = None):
    """(output, timing) for a JAX call: the first call (compile + run) is timed apart.

    timing = {first_s, compile_s, min_s, median_s, repeats, times}. ``compile`` (e.g.
    ``lambda: jax.jit(f).lower(...).compile()``) times the compilation on its own; without it
    compile_s = first - min, which is noise-dominated when one run takes minutes.
    """
    aot = None
    if compile is not None:
        t0 = time.perf_counter()
        compile()
        aot = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = block(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        out = block(fn(*args))
        times.append(time.perf_counter() - t0)
    return out, {
        "first_s": first,
        "compile_s": aot if aot is not None else max(first - min(times), 0.0),
        "compile_method": "ahead-of-time" if aot is not None else "first call - min",
        "min_s": min(times),
        "median_s": statistics.median(times),
        "repeats": len(times),
        "times": times,
    }


def time_numpy(fn: Callable, *args, repeats: int = 3):
    """(output, timing) for a numpy call; min and median over ``repeats`` runs."""
    times, out = [], None
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t0)
    return out, {"min_s": min(times), "median_s": statistics.median(times),
                 "repeats": len(times), "times": times}


# --------------------------------------------------------------------------------------------
# machine facts
# --------------------------------------------------------------------------------------------
def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=ROOT).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_model() -> str:
    """`lscpu` model name (falls back to platform.processor())."""
    for line in _run(["lscpu"]).splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_info() -> dict:
    """Date, commit, CPU model, cores, load average, JAX version and device."""
    commit = _run(["git", "rev-parse", "--short", "HEAD"]).strip() or "unknown"
    dirty = bool(_run(["git", "status", "--porcelain", "--", "quasirl", "benchmarks"]).strip())
    dev = jax.devices()[0]
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit + ("+dirty" if dirty else ""),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": round(mem, 1),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "backend": jax.default_backend(),
        "device": getattr(dev, "device_kind", str(dev)),
        "x64": bool(jax.config.jax_enable_x64),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


# --------------------------------------------------------------------------------------------
# roofline columns
# --------------------------------------------------------------------------------------------
def roofline(row: dict, ceil: dict) -> dict:
    """Add floor_* and frac_* columns to ``row`` from its bytes/flops/transcendentals."""
    bw, fl, ex = ceil["bandwidth_Bps"], ceil["matmul_flops"], ceil["exp_per_s"]
    fb = row.get("bytes", 0) / bw
    ff = row.get("flops", 0) / fl
    fe = row.get("transcendentals", 0) / ex
    floor = max(fb, ff, fe)
    t = row["min_s"]
    row.update(
        floor_bw_s=fb,
        floor_flop_s=ff,
        floor_exp_s=fe,
        floor_s=floor,
        bound={fb: "memory", ff: "flops", fe: "exp"}[floor] if floor > 0 else "-",
        frac_bw_floor=fb / t if t > 0 else float("nan"),
        frac_floor=floor / t if t > 0 else float("nan"),
        achieved_GBps=row.get("bytes", 0) / t / 1e9 if t > 0 else float("nan"),
        bandwidth_Bps=bw,
    )
    if "bandwidth_run_start_Bps" in ceil and t > 0:  # against the run's first measurement
        row["frac_bw_floor_run_start"] = row.get("bytes", 0) / ceil["bandwidth_run_start_Bps"] / t
    return row


def timed_row(scenario: str, case: str, timing: dict, ceil: dict, **extra) -> dict:
    """A result row: timing + sizes/counts in ``extra`` + the roofline columns."""
    row = {"scenario": scenario, "case": case}
    row.update({k: v for k, v in timing.items() if k != "times"})
    row["times"] = [round(t, 6) for t in timing.get("times", [])]
    row.update(extra)
    roofline(row, ceil)
    if "numpy_s" in row and row["numpy_s"]:
        row["speedup"] = row["numpy_s"] / row["min_s"]
    return row


def rel_err(a, b) -> float:
    """max |a - b| / max |b| over finite entries (inf where finiteness differs)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    fa, fb = np.isfinite(a), np.isfinite(b)
    if not np.array_equal(fa, fb):
        return float("inf")
    if not fa.any():
        return 0.0
    den = max(np.max(np.abs(b[fb])), 1e-300)
    return float(np.max(np.abs(a[fa] - b[fb])) / den)


# --------------------------------------------------------------------------------------------
# the printed table
# --------------------------------------------------------------------------------------------
def _fmt(v, spec):
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return format(v, spec)


def print_table(rows: list[dict], title: str = "quasirl benchmarks") -> None:
    """A short table: time, floor, fraction of floor, numpy time and speed-up per row."""
    cols = [
        ("scenario", "scenario", "s"),
        ("case", "case", "s"),
        ("compile s", "compile_s", ".2f"),
        ("min s", "min_s", ".4g"),
        ("median s", "median_s", ".4g"),
        ("floor s", "floor_s", ".3g"),
        ("bound", "bound", "s"),
        ("% bw floor", "frac_bw_floor", ".1%"),
        ("% floor", "frac_floor", ".1%"),
        ("numpy s", "numpy_s", ".4g"),
        ("speed-up", "speedup", ".1f"),
        ("rel err", "rel_err", ".1e"),
    ]
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for name, _, _ in cols:
            table.add_column(name, justify="left" if name in ("scenario", "case") else "right")
        for r in rows:
            table.add_row(*[_fmt(r.get(k), f) for _, k, f in cols])
        Console(width=200).print(table)
    except ImportError:  # pragma: no cover - rich is a dependency of the CLI
        print(title)
        print(" | ".join(c[0] for c in cols))
        for r in rows:
            print(" | ".join(_fmt(r.get(k), f) for _, k, f in cols))
