"""Eigen's generation map on 2^L genotypes: time per generation, numpy references, the floor.

One generation is x' = Q diag(f) x / (f . x) with Q = (x)_L [[1-mu, mu], [mu, 1-mu]], timed
as quasirl's ``evolve`` runs it (the step of ``quasirl.sequence._kron._discrete_step`` inside
a ``lax.scan``), with both ways quasirl applies Q:
* ``kernel="auto"``, the default: on a CPU the native kernel (quasirl/_kron_cpu.cc, an XLA
  FFI call: cache-blocked per-site butterflies, about two passes over the vector), on a GPU
  the XLA path;
* ``kernel="xla"``: grouped Kronecker blocks, each one matrix product that also rotates its
  sites to the front (quasirl/sequence/_kron.py), the normalisation folded into the last.

References, measured in the same run:
* a fair vectorised numpy implementation of the same grouped Kronecker map: in-place
  batched ``np.matmul`` of each 2^g x 2^g block on a [2^a, 2^g, 2^c] view (no copies, no
  per-bit Python loop), preallocated buffers, the grouping that is fastest for numpy chosen
  among several in this run (g_max = 3..6), fitness multiply and normalisation in place;
* a dense numpy map (the 2^L x 2^L matrix) where it fits, L <= 13;
* the single-pass floor: one read and one write of the 2^L vector per generation,
  bytes / bandwidth, the bandwidth of a large copy (256 MiB, DRAM-bound: numpy copy and
  XLA's in-place scale, the larger) and, stricter, of a copy of the same size as the vector
  (cache-resident for small L) -- both reported.

Timing: ``block_until_ready``; compile time apart (first call minus the fastest); min and
median over ``repeats``; time per generation = scan time / generations.

    python benchmarks/bench_sequence.py            # L = 12, 13, 16..24, both dtypes, JSON
    python benchmarks/bench_sequence.py --tune     # also other JAX groupings per L
    python benchmarks/bench_sequence.py --quick    # L = 8..10 (seconds)
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from quasirl.sequence._kron import (  # noqa: E402
    _discrete_step,
    default_groups,
    resolve_kernel,
)

MU = 0.01


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _split(L: int, gmax: int) -> tuple[int, ...]:
    n = -(-L // gmax)
    base, extra = divmod(L, n)
    return tuple([base + 1] * extra + [base] * (n - extra))


def _block(g: int, mu: float, dtype) -> np.ndarray:
    M = np.array([[1 - mu, mu], [mu, 1 - mu]])
    B = np.ones((1, 1))
    for _ in range(g):
        B = np.kron(B, M)
    return B.astype(dtype)


def _times(fn, repeats):
    out = []
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _openblas_threads():
    """(get, set) pairs for every OpenBLAS loaded in this process (numpy's and scipy's)."""
    import ctypes

    paths = set()
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                if "openblas" in line.lower() and ".so" in line:
                    paths.add(line.split()[-1])
    except OSError:
        return []
    out = []
    for path in sorted(paths):
        lib = ctypes.CDLL(path)
        for name in ("scipy_openblas_{}_num_threads64_", "scipy_openblas_{}_num_threads",
                     "openblas_{}_num_threads64_", "openblas_{}_num_threads"):
            get = getattr(lib, name.format("get"), None)
            put = getattr(lib, name.format("set"), None)
            if get is not None and put is not None:
                out.append((get, put))
                break
    return out


class blas_threads:
    """Context manager: numpy's BLAS on ``n`` threads (None: leave as is)."""

    def __init__(self, n):
        self.n, self.saved = n, []

    def __enter__(self):
        if self.n is not None:
            for get, put in _openblas_threads():
                self.saved.append((put, get()))
                put(self.n)
        return self

    def __exit__(self, *exc):
        for put, n in self.saved:
            put(n)


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


# --------------------------------------------------------------------------------------------
# bandwidth
# --------------------------------------------------------------------------------------------
def bandwidth(nbytes: int, repeats: int = 5) -> float:
    """Bytes/s of the best of numpy copy and XLA in-place (donated) scale on ``nbytes`` arrays;
    each reads and writes every byte once."""
    n = max(nbytes // 4, 1024)
    xs = np.ones(n, np.float32)
    ys = np.empty_like(xs)
    np.copyto(ys, xs)
    t_np = min(_times(lambda: np.copyto(ys, xs), repeats))
    scale = jax.jit(lambda x, a: x * a, donate_argnums=0)
    a = jnp.float32(1.0)
    x = jax.block_until_ready(scale(jnp.ones((n,), jnp.float32), a))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        x = jax.block_until_ready(scale(x, a))
        best = min(best, time.perf_counter() - t0)
    del x
    return 2 * n * 4 / min(t_np, best)


# --------------------------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------------------------
def jax_kernel(L: int, dtype, generations: int, groups=None, kernel: str = "auto"):
    """A jitted function x -> x after ``generations`` generations (quasirl's kernel):
    (run, groups used or None for the native kernel, kernel name)."""
    native = resolve_kernel(kernel, groups)
    g = groups or default_groups(L, dtype)
    u = jnp.full((L,), MU, dtype)

    @jax.jit
    def run(f, x):
        step = _discrete_step(f, u, u, g, native)
        return jax.lax.scan(lambda y, _: (step(y)[0], None), x, None, length=generations)[0]

    return run, (None if native else g), ("native" if native else "xla")


class NumpyGrouped:
    """The same grouped Kronecker map in numpy: in-place batched matmuls, no copies."""

    def __init__(self, L: int, dtype, groups):
        self.L, self.groups = L, tuple(groups)
        self.blocks = [_block(g, MU, dtype) for g in groups]
        self.buf = [np.empty(1 << L, dtype), np.empty(1 << L, dtype)]

    def step(self, f, x):
        L = self.L
        y = self.buf[0]
        np.multiply(f, x, out=y)
        s = y.sum()
        cur, off = 0, 0
        for g, B in zip(self.groups, self.blocks, strict=True):
            src, dst = self.buf[cur], self.buf[1 - cur]
            a, c = 1 << off, 1 << (L - off - g)
            if c == 1:
                np.matmul(src.reshape(a, 1 << g), B.T, out=dst.reshape(a, 1 << g))
            else:
                np.matmul(B, src.reshape(a, 1 << g, c), out=dst.reshape(a, 1 << g, c))
            cur, off = 1 - cur, off + g
        out = self.buf[cur]
        np.multiply(out, 1 / s, out=x)  # x is the caller's state vector, updated in place
        return x


def numpy_dense_step(Qd, f, x):
    y = Qd @ (f * x)
    return y / y.sum()


# --------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------
def bench_one(L: int, dtype, repeats: int, bw_large: float, quick: bool,
              jax_groupings=None) -> dict:
    dtype = np.dtype(dtype)
    n = 1 << L
    rng = np.random.default_rng(L)
    f = rng.uniform(0.5, 1.5, n).astype(dtype)
    x0 = rng.random(n).astype(dtype)
    x0 /= x0.sum()
    G = max(2, min(64, (1 << 26) // n)) if not quick else 4  # ~2^26 entries per timed call
    itemsize = dtype.itemsize
    nbytes = 2 * n * itemsize

    # ---- quasirl: the default kernel, the XLA path, other groupings if asked ----------------
    fj, xj = jnp.asarray(f), jnp.asarray(x0)
    cands = [(None, "auto"), (None, "xla")] + [(g, "xla") for g in (jax_groupings or [])]
    jres = []
    for groups, kernel in cands:
        run, g, name = jax_kernel(L, dtype, G, groups, kernel)
        if kernel == "xla" and groups is None and jres and jres[0]["kernel"] == "xla":
            continue  # auto already was the XLA path
        t0 = time.perf_counter()
        out = jax.block_until_ready(run(fj, xj))
        first = time.perf_counter() - t0
        ts = _times(lambda run=run: jax.block_until_ready(run(fj, xj)), repeats)
        jres.append({"kernel": name, "groups": list(g) if g else None,
                     "min_s": min(ts) / G, "median_s": statistics.median(ts) / G,
                     "compile_s": max(first - min(ts), 0.0), "out": np.asarray(out)})
    best_j = jres[0]
    xla_j = next(r for r in jres if r["kernel"] == "xla")

    # ---- numpy grouped (its best grouping and BLAS thread count in this run) ----------------
    Gn = max(1, min(G, 8))
    np_res = []
    for threads in (None, 1):  # OpenBLAS's own threading, and one thread (faster under load)
        for gmax in ((3, 4, 5, 6) if not quick else (3, 4)):
            groups = _split(L, gmax)
            ref = NumpyGrouped(L, dtype, groups)
            with blas_threads(threads):
                x = x0.copy()
                ref.step(f, x)

                def go(ref=ref):
                    x = x0.copy()
                    for _ in range(Gn):
                        ref.step(f, x)
                    return x

                ts = _times(go, max(2, repeats // 2) if not quick else 1)
            np_res.append({"groups": list(groups), "blas_threads": threads or "default",
                           "min_s": min(ts) / Gn, "median_s": statistics.median(ts) / Gn})
    np_best = min(np_res, key=lambda r: r["min_s"])
    # correctness: numpy (same map, G generations) vs JAX
    ref = NumpyGrouped(L, dtype, np_best["groups"])
    x = x0.copy()
    for _ in range(G):
        ref.step(f, x)
    rel = float(np.abs(x - best_j["out"]).max() / np.abs(x).max())
    rel_xla = float(np.abs(x - xla_j["out"]).max() / np.abs(x).max())

    # ---- dense numpy where it fits ------------------------------------------------------------
    dense_s = None
    if L <= 13:
        Qd = np.ones((1, 1), dtype)
        M = np.array([[1 - MU, MU], [MU, 1 - MU]], dtype)
        for _ in range(L):
            Qd = np.kron(Qd, M)
        dense_s = float("inf")
        for threads in (None, 1):
            with blas_threads(threads):
                dense_s = min(dense_s, *_times(lambda: numpy_dense_step(Qd, f, x0),
                                               max(2, repeats // 2)))
        del Qd

    # ---- floors ------------------------------------------------------------------------------
    bw_same = bandwidth(n * itemsize, repeats=5)
    floor_large = nbytes / bw_large
    floor_same = nbytes / bw_same
    if best_j["kernel"] == "native":  # per bit and pair: t = u a - v b, a - t, b + t
        flops = 5 * (n // 2) * L + 3 * n
    else:
        flops = sum(2 * n * (1 << g) for g in best_j["groups"]) + 3 * n
    row = {
        "case": f"L = {L} {dtype.name}",
        "L": L, "dtype": dtype.name, "genotypes": n, "generations_per_call": G,
        "kernel": best_j["kernel"], "groups": best_j["groups"],
        "min_s": best_j["min_s"], "median_s": best_j["median_s"],
        "xla_s": xla_j["min_s"], "xla_groups": xla_j["groups"],
        "speedup_vs_xla": xla_j["min_s"] / best_j["min_s"],
        "compile_s": best_j["compile_s"], "repeats": repeats,
        "numpy_s": np_best["min_s"], "numpy_median_s": np_best["median_s"],
        "numpy_groups": np_best["groups"], "numpy_blas_threads": np_best["blas_threads"],
        "numpy_all": [{k: v for k, v in r.items()} for r in np_res],
        "dense_s": dense_s,
        "speedup": np_best["min_s"] / best_j["min_s"],
        "speedup_dense": (dense_s / best_j["min_s"]) if dense_s else None,
        "bytes": nbytes, "flops": flops,
        "bandwidth_large_Bps": bw_large, "bandwidth_same_size_Bps": bw_same,
        "floor_large_s": floor_large, "floor_same_size_s": floor_same,
        "x_floor_large": best_j["min_s"] / floor_large,
        "x_floor_same_size": best_j["min_s"] / floor_same,
        "rel_err_vs_numpy": rel, "rel_err_xla_vs_numpy": rel_xla,
        "load_avg_1min": _load(),
    }
    if len(jres) > 2 or (len(jres) == 2 and jres[0]["kernel"] == "xla"):
        row["jax_groupings"] = [{k: v for k, v in r.items() if k != "out"} for r in jres]
    return row


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "backend": jax.default_backend(),
            "device": str(jax.devices()[0]), "jax": jax.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def run(sizes=range(16, 25), repeats: int = 5, quick: bool = False,
        dtypes=("float32", "float64"), jax_groupings: dict | None = None) -> list[dict]:
    """Benchmark rows, one per (L, dtype): see the module docstring for the columns.

    sizes: the L values; quick: tiny generation counts and fewer numpy groupings (for tests);
    jax_groupings: {L: [groupings]} extra JAX groupings to time beside the default (tuning).
    float64 rows need ``jax_enable_x64`` (they are run inside a scoped ``enable_x64``).
    """
    sizes = list(sizes)
    bw_large = bandwidth(1 << 28 if not quick else 1 << 24, repeats=3 if quick else 5)
    rows = []
    for L in sizes:
        for dt in dtypes:
            with jax.enable_x64(dt == "float64"):
                r = bench_one(L, dt, repeats, bw_large, quick,
                              (jax_groupings or {}).get(L))
            r["machine"] = machine()
            rows.append(r)
    return rows


def _table(rows) -> str:
    head = (f"{'L':>3} {'dtype':>8} {'kernel':>7} {'ms':>9} {'xla ms':>9} {'numpy ms':>9} "
            f"{'speedup':>8} {'dense ms':>9} {'x floor':>8} {'x floor(same)':>13} "
            f"{'compile s':>9} {'load':>5}")
    lines = [head, "-" * len(head)]
    for r in rows:
        dense = f"{1e3 * r['dense_s']:.2f}" if r["dense_s"] else "-"
        lines.append(
            f"{r['L']:>3} {r['dtype']:>8} {r['kernel']:>7} "
            f"{1e3 * r['min_s']:>9.3f} {1e3 * r['xla_s']:>9.3f} {1e3 * r['numpy_s']:>9.3f} "
            f"{r['speedup']:>8.2f} {dense:>9} {r['x_floor_large']:>8.1f} "
            f"{r['x_floor_same_size']:>13.1f} {r['compile_s']:>9.2f} "
            f"{r['load_avg_1min'] or float('nan'):>5.1f}")
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--sizes", default=None,
                   help="comma-separated L (default 12,13 (dense fits) and 16..24; quick 8..10)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--tune", action="store_true",
                   help="also time alternative JAX groupings (g_max = 3..8) at each L")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_sequence.json"))
    a = p.parse_args()
    sizes = ([int(s) for s in a.sizes.split(",")] if a.sizes else
             (list(range(8, 11)) if a.quick else [12, 13] + list(range(16, 25))))
    tune = {L: [_split(L, g) for g in (3, 4, 5, 6, 7, 8)] for L in sizes} if a.tune else None
    rows = run(sizes=sizes, repeats=a.repeats, quick=a.quick, dtypes=a.dtypes.split(","),
               jax_groupings=tune)
    print(_table(rows))
    if a.tune:
        for r in rows:
            print(r["case"], " ".join(
                f"{','.join(map(str, g['groups'] or [g['kernel']]))}: {1e3 * g['min_s']:.3f}ms"
                for g in r.get("jax_groupings", [])))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1))
    print(f"wrote {out}")
