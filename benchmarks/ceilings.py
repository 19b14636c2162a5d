"""Measured ceilings of the device the benchmarks run on (never datasheet numbers).

- bandwidth: an array many times the last-level cache scaled in place by XLA (a donated
  buffer: a fresh output would also time the kernel's page faults), copied by numpy and
  multiplied in place by numpy, on one thread and on one thread per core; each reads and
  writes every byte once. The largest is the ceiling (the conservative choice: a higher
  ceiling makes our floor fractions smaller). The runner measures it again just before each
  scenario: on a shared host it varies from minute to minute (benchmarks/NOTES.md).
- matmul rate: a large float32 matrix product (2 n^3 flops).
- exp rate: exp of a cache-resident float32 array, iterated inside one jit (transcendental
  throughput; the XLA log-space kernels are bound by it on CPUs), and on CPUs the same with
  the native kernels' SIMD exp (quasirl/_pull_cpu.cc) where they are built; the larger is
  the ceiling (the native forward kernel is not bound by XLA's exp).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np

from ._harness import block


def _best(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(fn())
        best = min(best, time.perf_counter() - t0)
    return best


def bandwidth(nbytes: int, repeats: int = 5) -> dict:
    """Bytes/s moved by XLA's in-place (donated) scale x <- a*x, by numpy's copy and in-place
    multiply, and by the in-place multiply split over one thread per core (one core may not
    draw all the memory bandwidth there is), on arrays of ``nbytes``; each reads and writes
    every byte once."""
    n = nbytes // 4
    a = jnp.float32(1.0)
    scale = jax.jit(lambda x, a: x * a, donate_argnums=0)
    x = block(scale(jnp.ones((n,), jnp.float32), a))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        x = block(scale(x, a))
        best = min(best, time.perf_counter() - t0)
    del x
    xla = 2 * n * 4 / best
    xs = np.ones(n, np.float32)
    ys = np.empty_like(xs)
    np.copyto(ys, xs)
    copy = 2 * n * 4 / _best(lambda: np.copyto(ys, xs), repeats)
    inplace = 2 * n * 4 / _best(lambda: np.multiply(xs, np.float32(1.0), out=xs), repeats)
    k = os.cpu_count() or 1
    parts = np.array_split(xs, k)
    with ThreadPoolExecutor(k) as pool:  # numpy's ufuncs release the GIL

        def threads():
            list(pool.map(lambda p: np.multiply(p, np.float32(1.0), out=p), parts))

        threads()
        threaded = 2 * n * 4 / _best(threads, repeats)
    return {"bandwidth_xla_scale_Bps": xla, "bandwidth_numpy_copy_Bps": copy,
            "bandwidth_numpy_inplace_Bps": inplace, "bandwidth_numpy_threads_Bps": threaded,
            "bandwidth_threads": k, "bandwidth_Bps": max(xla, copy, inplace, threaded),
            "bandwidth_array_bytes": n * 4}


def matmul_rate(n: int, repeats: int = 3) -> dict:
    """flop/s of a float32 n x n matrix product."""
    k1, k2 = jax.random.split(jax.random.key(0))
    a = jax.random.normal(k1, (n, n), jnp.float32)
    b = jax.random.normal(k2, (n, n), jnp.float32)
    f = jax.jit(jnp.dot)
    block(f(a, b))
    t = _best(lambda: f(a, b), repeats)
    return {"matmul_flops": 2 * n**3 / t, "matmul_n": n}


def exp_rate(n: int, iters: int, repeats: int = 3) -> dict:
    """exp evaluations per second (float32, array of n resident in cache, ``iters`` passes)."""
    x = jnp.linspace(-1.0, 0.0, n, dtype=jnp.float32)

    @jax.jit
    def f(x):
        # exp(-|y|) keeps every value in (0, 1]: no overflow, no denormals.
        return jax.lax.fori_loop(0, iters, lambda i, y: jnp.exp(-jnp.abs(y)), x)

    block(f(x))
    t = _best(lambda: f(x), repeats)
    out = {"exp_per_s": n * iters / t, "exp_xla_per_s": n * iters / t, "exp_n": n}
    native = native_exp_rate(n, iters, repeats)
    if native is not None:
        out["exp_native_per_s"] = native
        out["exp_per_s"] = max(out["exp_per_s"], native)
    return out


def native_exp_rate(n: int, iters: int, repeats: int = 3) -> float | None:
    """exp evaluations per second of the native kernels' SIMD exp (None off CPUs or where
    they are not built), same array and passes as :func:`exp_rate`."""
    if jax.default_backend() != "cpu":
        return None
    from quasirl import _native

    if not _native.status()["available"]:
        return None
    x = np.linspace(-1.0, 0.0, n, dtype=np.float32)
    _native.exp_bench(x, 1)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        _native.exp_bench(x, iters)
        best = min(best, time.perf_counter() - t0)
    return n * iters / best


def measure(quick: bool = False) -> dict:
    """All ceilings, sized for the backend (a GPU gets bigger arrays)."""
    gpu = jax.default_backend() != "cpu"
    if quick:
        nbytes, mm, ex = 256 * 2**20, 512, (2**16, 20)
    elif gpu:
        nbytes, mm, ex = 4 * 2**30, 8192, (2**24, 200)
    else:
        nbytes, mm, ex = 512 * 2**20, 2048, (2**18, 200)
    out = {}
    out.update(bandwidth(nbytes))
    out.update(matmul_rate(mm))
    out.update(exp_rate(*ex))
    return out
