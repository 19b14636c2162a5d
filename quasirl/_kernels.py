"""Which kernel runs a public function: ``kernel="auto" | "native" | "xla"``, and the report.

Every public entry point that has (or might be expected to have) a native CPU kernel takes
``kernel=``: "xla" always takes the XLA path; "native" takes the native kernel or raises a
:class:`QuasirlValueError` saying why it cannot here; "auto" takes the native kernel where it
applies and is the faster choice, else XLA. The choice is made before any tracing, on the
static shape and dtype of the input, so a jitted call never compiles or loads anything.
:func:`kernel_status` reports what ``"auto"`` picks, function by function.
"""

from __future__ import annotations

import jax

from . import _native
from ._validate import QuasirlValueError

KERNELS = ("auto", "native", "xla")

# A sparse MDP's pull table may have at most this many entries per state for the native
# forward kernel; wider (dense) tables go through XLA's blocked gather.
NATIVE_MAX_J = 64

# What each public function can run, for kernel_status() and the error messages.
COVERAGE = {
    "free_energy": "native for float32 MDPs with at most 64 transitions into a state (and "
                   "every derivative through it); XLA for float64, denser MDPs, and T = 0 alone",
    "log_partition": "as free_energy",
    "occupancy": "as free_energy (its native adjoint)",
    "optimal_value": "XLA (the max-plus recursion has no exp to save)",
    "evolve": "XLA (no native kernel)",
    "soft_policy": "XLA (no native kernel)",
    "sequence.mutate": "native unless groups= is given",
    "sequence.evolve": "native unless groups= is given",
    "sequence.stationary": "native unless groups= is given",
    "sequence.error_threshold": "native unless groups= is given (full-space method)",
    "sequence.wright_fisher": "native unless groups= is given",
}


def check_kernel(kernel) -> str:
    if kernel not in KERNELS:
        raise QuasirlValueError(f"kernel must be 'auto', 'native' or 'xla', got {kernel!r}")
    return kernel


def native_ready() -> str | None:
    """None where the native kernels can run here, else why not."""
    st = _native.load()
    if not st["available"]:
        return f"the native kernels are not available here: {st['reason']}"
    backend = jax.default_backend()
    if backend != "cpu":
        return f"the native kernels run on CPUs; JAX's default backend is {backend}"
    return None


def resolve(kernel, what: str, obstacles=(), prefer_xla: bool = False) -> bool:
    """True to run ``what`` natively. ``obstacles``: reasons this input cannot run natively
    (dtype, shape, options); ``prefer_xla``: the input could run natively but XLA is the
    better choice for "auto" (an explicit "native" still gets the native kernel)."""
    kernel = check_kernel(kernel)
    if kernel == "xla":
        return False
    reasons = [r for r in obstacles if r]
    if kernel == "auto":
        return not reasons and not prefer_xla and native_ready() is None
    not_here = native_ready()
    if not_here:
        reasons.append(not_here)
    if reasons:
        raise QuasirlValueError(f"{what}: kernel='native' cannot run here: {'; '.join(reasons)}")
    return True


def xla_only(kernel, what: str) -> bool:
    """For functions with no native kernel: False, or an error for kernel='native'."""
    kernel = check_kernel(kernel)
    if kernel == "native":
        raise QuasirlValueError(
            f"{what} has no native kernel (use kernel='auto' or 'xla'); the native kernels "
            "serve free_energy, log_partition, occupancy and their derivatives, and "
            "sequence.mutate / evolve / stationary / error_threshold / wright_fisher")
    return False


def kernel_status() -> dict:
    """The native CPU kernels: whether they are built and what ``kernel="auto"`` runs.

    Returns {'available', 'reason', 'path', 'backend', 'march', 'lanes', 'avx512', 'clzero',
    'openmp', 'threads', 'functions'}: 'march' is the instruction set the library was built
    for (``$QUASIRL_NATIVE_MARCH``, default native), 'lanes' the floats per SIMD vector,
    'avx512'/'clzero' the ISA-specific code paths compiled in, 'threads' the OpenMP threads
    per call, 'functions' what each public function runs ({name: description}). 'reason'
    says why the kernels are not in use where they are not.
    """
    st = dict(_native.status())
    st["backend"] = jax.default_backend()
    why = native_ready()
    if why and st["available"]:
        st["reason"] = why
    st["in_use"] = why is None
    st["functions"] = dict(COVERAGE) if why is None else {k: "XLA" for k in COVERAGE}
    return st
