"""quasirl's native CPU backend: C++ kernels called from JAX as XLA FFI custom calls.

* ``pull``: the log-space forward recursion of ``free_energy`` in float32 for sparse MDPs,
  all temperatures at once, with vectorised exp and log polynomials (XLA's exp bounds the
  XLA path on CPUs), and its adjoint: per temperature (N = dF/dc, for forward mode) or
  contracted with the cotangent as it goes (reverse mode). ``pull_ad`` gives them to JAX's
  autodiff as three primitives.
* ``kron``: Eigen's mutation operator, y = c Q (w * x), as cache-blocked per-bit butterflies.

The library is built (once per machine and instruction set, :mod:`quasirl._native.build`)
or found in the cache by :func:`load`, which ``import quasirl`` calls: never inside a JAX
trace. Where no compiler works (or ``QUASIRL_NATIVE=0``), :func:`status` says why and every
function takes the XLA path, with the same results to rounding. ``quasirl.kernel_status()``
is the public report; ``kernel=`` on the public functions chooses.

Large kernel buffers are 2 MB-page allocations kept for the next call, up to
``QUASIRL_NATIVE_POOL`` bytes (4 GiB) together with the forward passes kept for an adjoint
(:func:`memory`, :func:`release`). ``QUASIRL_FB_MEMORY`` (2 GiB) bounds the stored forward
trajectory of one adjoint before it checkpoints. benchmarks/NOTES.md has the measurements.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading

from . import build as _build

# the XLA FFI targets: (name JAX knows it by, symbol in the library)
TARGETS = {
    "kron_f32": ("quasirl_kron_f32", "QuasirlKronF32"),
    "kron_f64": ("quasirl_kron_f64", "QuasirlKronF64"),
    "pull": ("quasirl_pull_f32", "QuasirlPullF32"),
    "pull_fb": ("quasirl_pull_fb_f32", "QuasirlPullFBF32"),
    "pull_adjoint": ("quasirl_pull_adjoint_f32", "QuasirlPullAdjointF32"),
    "pull_keep": ("quasirl_pull_keep_f32", "QuasirlPullKeepF32"),
}

_lock = threading.Lock()
_state: dict = {}


def _disabled() -> bool:
    return os.environ.get("QUASIRL_NATIVE", "1").strip().lower() in ("0", "false", "no", "off")


def _load() -> dict:
    if _disabled():
        return {"available": False, "reason": "disabled by QUASIRL_NATIVE=0", "path": None}
    cxx = _build.compiler()
    if not cxx:
        return {"available": False, "reason": "no C++ compiler ($CXX, c++, g++)", "path": None}
    march = os.environ.get("QUASIRL_NATIVE_MARCH", "native")
    import jax

    errors = []
    for openmp in (True, False):
        try:
            path = _build.build(cxx, march, openmp)
            lib = ctypes.cdll.LoadLibrary(str(path))
            for name, symbol in TARGETS.values():
                jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, symbol)),
                                            platform="cpu")
            info = (ctypes.c_int32 * 4)()
            lib.QuasirlNativeInfo(info)
            return {"available": True, "reason": None, "path": str(path), "march": march,
                    "lanes": int(info[0]), "avx512": bool(info[1]), "clzero": bool(info[2]),
                    "openmp": bool(info[3]), "_lib": lib}
        except (OSError, ValueError, subprocess.SubprocessError, AttributeError) as exc:
            errors.append(str(exc))
    return {"available": False, "reason": "; ".join(errors), "path": None}


def load() -> dict:
    """Build (or find in the cache) and register the kernels, once per process; the status."""
    with _lock:
        if not _state:
            _state.update(_load())
    return {k: v for k, v in _state.items() if not k.startswith("_")}


def status() -> dict:
    """{'available', 'reason', 'path'} and, where built, 'march', 'lanes' (floats per
    vector), 'avx512', 'clzero' (the code paths compiled in), 'openmp', 'threads'."""
    st = {"march": None, "lanes": None, "avx512": None, "clzero": None, "openmp": None,
          **load(), "threads": threads()}
    return st


def _lib():
    st = load()
    if not st["available"]:
        raise RuntimeError(f"quasirl's native CPU kernels are not available: {st['reason']}")
    return _state["_lib"]


def available() -> bool:
    """Built here, and JAX's default backend is the CPU (the kernels are CPU custom calls)."""
    import jax

    return bool(load()["available"]) and jax.default_backend() == "cpu"


def threads() -> int:
    """The OpenMP threads each kernel call uses."""
    return int(_lib().QuasirlNativeThreads()) if load()["available"] else 0


def set_threads(n: int | None) -> None:
    """Run the kernels on ``n`` OpenMP threads (None: OpenMP's default, OMP_NUM_THREADS or one
    per core). Takes effect at the next kernel call."""
    if n is not None:
        from .._validate import check_int

        n = check_int("set_threads: n", n, minimum=1, maximum=2**31 - 1)
    _lib().QuasirlNativeSetThreads(ctypes.c_int32(0 if n is None else int(n)))


def memory() -> dict:
    """Bytes the native kernels keep between calls: free buffers, forward passes kept for an
    adjoint, and the limit on both together (``QUASIRL_NATIVE_POOL``)."""
    if not load()["available"]:
        return {"free": 0, "kept": 0, "limit": 0}
    out = (ctypes.c_uint64 * 3)()
    _state["_lib"].QuasirlNativeHeld(out)
    return {"free": int(out[0]), "kept": int(out[1]), "limit": int(out[2])}


def release() -> None:
    """Give back to the OS everything the native kernels keep between calls."""
    if load()["available"]:
        _state["_lib"].QuasirlNativeRelease()


def exp_bench(x, iters: int) -> None:
    """x <- 2^(-|x|), ``iters`` times, with the kernels' SIMD exp (float32, contiguous, a
    multiple of 16 entries): the benchmarks' measured exp ceiling."""
    _lib().QuasirlExpBench(x.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(x.size),
                           ctypes.c_int64(iters))
