"""quasirl's native CPU kernels: C++ XLA FFI custom calls, built on first use.

* ``_kron_cpu.cc``: Eigen's mutation operator, y = c Q (w * x) (c = scale, or scale / sum(w * x)
  when normalising) as cache-blocked per-bit butterflies: about two passes over the vector
  and 2 multiply-adds + 2 adds per pair and bit, where the grouped matrix products of the XLA
  path (:func:`quasirl._sequence_kron.apply_blocks`) cost one pass and 2^(g+1) flops per
  entry for every block of g sites.
* ``_pull_cpu.cc``: the log-space forward recursion of ``free_energy`` in float32 for sparse
  MDPs, all temperatures at once, with vectorised exp and log polynomials (XLA's exp is the
  bottleneck of the XLA path on CPUs), and its adjoint: per temperature (N = dF/dc, for
  forward mode) or contracted with the cotangent as it goes (reverse mode); the forward pass
  of a derivative is kept for the adjoint under a token (:func:`pull_keep`).

benchmarks/NOTES.md has the measurements. Both sources are compiled once per machine, into
one library, with the system C++ compiler (``$CXX`` or ``c++``) against the FFI headers jaxlib
ships (``jax.ffi.include_dir()``), with ``-O3 -march=native -fopenmp`` (``$QUASIRL_NATIVE_MARCH``
overrides ``native``; the code uses 16-lane vectors where the target has AVX-512, 8 lanes
otherwise), into a cache directory
(``$QUASIRL_CACHE_DIR``, else ``$XDG_CACHE_HOME/quasirl``, else ``~/.cache/quasirl``) under a
name that hashes the sources, the flags, the compiler, jaxlib and the CPU's feature flags; the
build writes a temporary file and renames it, so concurrent processes are safe. Where no
compiler works (or ``QUASIRL_NATIVE=0``), :func:`status` says why and every function uses the
XLA path, with the same results to rounding.

Eigen's operator differentiates through the XLA path (``jax.custom_jvp``); ``free_energy``
through its own kernels (:mod:`quasirl._native_ad`). Under ``vmap`` a kernel runs once per
batch entry. Large kernel buffers are 2 MB-page allocations kept for the next call, up to
``QUASIRL_NATIVE_POOL`` bytes (4 GiB) with the kept forward passes (fresh pages cost the OS
zeroing them: a third of a short forward-backward at S = 10^6).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

SOURCES = (Path(__file__).with_name("_kron_cpu.cc"), Path(__file__).with_name("_pull_cpu.cc"))
HEADERS = (Path(__file__).with_name("_native_simd.h"),)
FLAGS = ("-O3", "-fno-math-errno", "-std=c++17", "-shared", "-fPIC", "-w")
TARGETS = {np.dtype(np.float32): ("quasirl_kron_f32", "QuasirlKronF32"),
           np.dtype(np.float64): ("quasirl_kron_f64", "QuasirlKronF64")}
PULL_TARGET = ("quasirl_pull_f32", "QuasirlPullF32")
PULL_FB_TARGET = ("quasirl_pull_fb_f32", "QuasirlPullFBF32")
PULL_ADJOINT_TARGET = ("quasirl_pull_adjoint_f32", "QuasirlPullAdjointF32")
PULL_KEEP_TARGET = ("quasirl_pull_keep_f32", "QuasirlPullKeepF32")
# memory the forward-backward kernel may use for the stored u_t before it recomputes segments
# from checkpoints instead (bytes; QUASIRL_FB_MEMORY overrides)
FB_MEMORY = 2 << 30

_lock = threading.Lock()
_state: dict = {}


def cache_dir() -> Path:
    if os.environ.get("QUASIRL_CACHE_DIR"):
        return Path(os.environ["QUASIRL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "quasirl"


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _compiler_id(cxx: str) -> str:
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60)
        return out.stdout.splitlines()[0] if out.stdout else cxx
    except (OSError, subprocess.SubprocessError):
        return cxx


def _build(cxx: str, openmp: bool) -> Path:
    march = os.environ.get("QUASIRL_NATIVE_MARCH", "native")
    flags = (*FLAGS, f"-march={march}", *(("-fopenmp",) if openmp else ()))
    inc = jax.ffi.include_dir()
    key = hashlib.sha256(b"\0".join([
        *(p.read_bytes() for p in SOURCES + HEADERS), " ".join(flags).encode(),
        _compiler_id(cxx).encode(),
        jax.__version__.encode(), jaxlib.__version__.encode(), _cpu_flags().encode(),
        platform.machine().encode(),
    ])).hexdigest()[:20]
    out = cache_dir() / f"native_cpu-{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        cmd = [cxx, *flags, f"-I{inc}", *map(str, SOURCES), "-o", tmp]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if res.returncode != 0:
            raise OSError(f"{' '.join(cmd)} failed: {res.stderr.strip()[-2000:]}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _load() -> dict:
    if os.environ.get("QUASIRL_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return {"available": False, "reason": "disabled by QUASIRL_NATIVE=0", "path": None}
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not cxx:
        return {"available": False, "reason": "no C++ compiler ($CXX, c++, g++)", "path": None}
    errors = []
    for openmp in (True, False):
        try:
            path = _build(cxx, openmp)
            lib = ctypes.cdll.LoadLibrary(str(path))
            for name, symbol in (*TARGETS.values(), PULL_TARGET, PULL_FB_TARGET,
                                 PULL_ADJOINT_TARGET, PULL_KEEP_TARGET):
                jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, symbol)),
                                            platform="cpu")
            return {"available": True, "reason": None, "path": str(path), "openmp": openmp,
                    "_lib": lib}
        except (OSError, subprocess.SubprocessError, AttributeError) as exc:
            errors.append(str(exc))
    return {"available": False, "reason": "; ".join(errors), "path": None}


def status() -> dict:
    """Whether the native CPU kernels are in use: {'available', 'reason', 'path', 'openmp'}.

    The first call builds (or finds in the cache) and registers the kernels.
    """
    with _lock:
        if not _state:
            _state.update(_load())
    return {k: v for k, v in _state.items() if not k.startswith("_")}


def memory() -> dict:
    """Bytes the native kernels keep between calls: free buffers, forward passes kept for an
    adjoint, and the limit on both together (``QUASIRL_NATIVE_POOL``)."""
    if not status()["available"]:
        return {"free": 0, "kept": 0, "limit": 0}
    out = (ctypes.c_uint64 * 3)()
    _state["_lib"].QuasirlNativeHeld(out)
    return {"free": int(out[0]), "kept": int(out[1]), "limit": int(out[2])}


def release() -> None:
    """Give back to the OS everything the native kernels keep between calls."""
    if status()["available"]:
        _state["_lib"].QuasirlNativeRelease()


def available() -> bool:
    return bool(status()["available"]) and jax.default_backend() == "cpu"


# --------------------------------------------------------------------------------------------
# Eigen's mutation operator
# --------------------------------------------------------------------------------------------
def _require():
    st = status()
    if not st["available"]:
        raise RuntimeError(f"quasirl's native CPU kernels are not available: {st['reason']}")


def _ffi(x, w, m, scale, weighted: bool, normalize: bool):
    _require()
    name = TARGETS[np.dtype(x.dtype)][0]
    out = (jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct((), x.dtype))
    # y may take x's buffer (the kernel reads each block of x before writing it): inside a
    # scan the new state then overwrites the old one instead of being copied into it
    call = jax.ffi.ffi_call(name, out, vmap_method="sequential", input_output_aliases={0: 0})
    return call(x, w, m, scale, weighted=np.int32(weighted), normalize=np.int32(normalize))


def reference(x, w, u, v, scale, weighted: bool, normalize: bool, groups):
    """The XLA path: (c Q (w * x), sum(w * x)) with grouped Kronecker blocks."""
    from ._sequence_kron import apply_blocks, blocks

    y = w * x if weighted else x
    s = jnp.sum(y)
    c = scale / s if normalize else scale
    return apply_blocks(y, blocks(u, v, groups), c), s


@partial(jax.custom_jvp, nondiff_argnums=(5, 6, 7))
def native(x, w, u, v, scale, weighted: bool, normalize: bool, groups):
    """The kernel: (c Q (w * x), sum(w * x)); ``groups`` only shapes the tangent's XLA path."""
    from ._sequence_kron import site_matrices

    m = site_matrices(u, v)
    if not weighted:
        w = jnp.zeros((1,), x.dtype)
    return _ffi(x, w, m, jnp.asarray(scale, x.dtype), weighted, normalize)


@native.defjvp
def _native_jvp(weighted, normalize, groups, primals, tangents):
    # the XLA path computes the primal as part of its jvp: use it rather than run both
    return jax.jvp(lambda *a: reference(*a, weighted, normalize, groups), primals, tangents)


# --------------------------------------------------------------------------------------------
# the forward recursion of free_energy
# --------------------------------------------------------------------------------------------
def _budget() -> np.int64:
    return np.int64(int(os.environ.get("QUASIRL_FB_MEMORY", FB_MEMORY)))


def _token(token):  # none (0): the kernel runs the forward itself
    return jnp.zeros((2,), jnp.int32) if token is None else token.astype(jnp.int32)


def _pull_operands(li, src, logw, rew, T):
    f32 = jnp.float32
    return (li.astype(f32), src.astype(jnp.int32), logw.astype(f32), rew.astype(f32),
            T.astype(f32))


def pull_forward(li, src, logw, rew, T, horizon: int):
    """F [B] from li = log init [S] (u_0 = T li), the pull tables src/logw/rew [S, J] and
    T [B] (float32): the log-space forward recursion over ``horizon`` steps, normalised each
    step."""
    _require()
    out = jax.ShapeDtypeStruct(T.shape, jnp.float32)
    call = jax.ffi.ffi_call(PULL_TARGET[0], out, vmap_method="sequential")
    return call(*_pull_operands(li, src, logw, rew, T), horizon=np.int64(horizon))


def pull_forward_backward(li, src, logw, rew, T, horizon: int, token=None):
    """The forward recursion and its adjoint in one call (float32), for B temperatures:
    F [B]; N [S, J, B] = dF/dc for each pull entry (c = T log w + r; 0 on padding), the
    tempered occupancy; rho [S, B] = dF/du_0 (u_0 = T li); dT [B] = dF/dT at fixed init, w
    and r (the summed entropies + sum N log w + sum rho li). At T = 0 the weights at a
    maximum are shared equally (the subgradient JAX takes for max), and dT is the right
    derivative. ``token``: as for :func:`pull_adjoint`."""
    _require()
    S, J = src.shape
    B = T.shape[0]
    f32 = jnp.float32
    out = (jax.ShapeDtypeStruct((B,), f32), jax.ShapeDtypeStruct((S, J, B), f32),
           jax.ShapeDtypeStruct((S, B), f32), jax.ShapeDtypeStruct((B,), f32))
    call = jax.ffi.ffi_call(PULL_FB_TARGET[0], out, vmap_method="sequential")
    return call(*_pull_operands(li, src, logw, rew, T), _token(token),
                horizon=np.int64(horizon), budget=_budget())


def pull_keep(li, src, logw, rew, T, horizon: int):
    """F [B] as :func:`pull_forward` computes it, and a token [2] (int32) under which the
    kernel keeps the forward pass (tables and trajectory) for :func:`pull_adjoint`: passed
    on as an operand, it orders the two calls and lets the adjoint (or
    :func:`pull_forward_backward`) skip the forward, taking it out. Kept passes are dropped,
    least recently used first, where they and the free buffers would exceed
    ``QUASIRL_NATIVE_POOL`` bytes (4 GiB; :func:`memory`, :func:`release`); an adjoint whose
    pass was dropped recomputes it, to the same bits."""
    _require()
    out = (jax.ShapeDtypeStruct(T.shape, jnp.float32), jax.ShapeDtypeStruct((2,), jnp.int32))
    call = jax.ffi.ffi_call(PULL_KEEP_TARGET[0], out, vmap_method="sequential")
    return call(*_pull_operands(li, src, logw, rew, T), horizon=np.int64(horizon),
                budget=_budget())


def pull_adjoint(li, src, logw, rew, T, W, horizon: int, token=None):
    """The forward recursion and its adjoint contracted over temperatures (float32): for
    weights W [K, B], F [B]; G [K, S, J] = sum_b W[k, b] N[:, :, b] and R [K, S] =
    sum_b W[k, b] rho[:, b] (N and rho of :func:`pull_forward_backward`, never formed); dT [B]
    as there. What reverse mode needs: one float per entry and weight per step instead of one
    per entry and temperature. ``token`` (from :func:`pull_keep` on the same inputs) lets it
    reuse that forward pass."""
    _require()
    S, J = src.shape
    B, K = T.shape[0], W.shape[0]
    f32 = jnp.float32
    out = (jax.ShapeDtypeStruct((B,), f32), jax.ShapeDtypeStruct((K, S, J), f32),
           jax.ShapeDtypeStruct((K, S), f32), jax.ShapeDtypeStruct((B,), f32))
    call = jax.ffi.ffi_call(PULL_ADJOINT_TARGET[0], out, vmap_method="sequential")
    return call(*_pull_operands(li, src, logw, rew, T), _token(token),
                W.astype(f32), horizon=np.int64(horizon), budget=_budget())
