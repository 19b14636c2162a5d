"""Compiling the native CPU kernels: one shared library per machine and instruction set.

The C++ sources in this folder (``simd.h`` SIMD math, ``memory.h``/``memory.cc`` buffers and
threads, ``pull.h``/``forward.cc``/``adjoint.cc`` the kernels of ``free_energy``,
``kron.h``/``kron.cc`` Eigen's operator, ``ffi.cc`` the XLA FFI bindings) are compiled with
the system C++ compiler (``$CXX``, else ``c++`` or ``g++``) against the FFI headers jaxlib ships
(``jax.ffi.include_dir()``), each translation unit in parallel, then linked, into a cache
folder (``$QUASIRL_CACHE_DIR``, else ``$XDG_CACHE_HOME/quasirl``, else ``~/.cache/quasirl``)
under a name that hashes the sources, the flags, the compiler, jaxlib and the CPU's feature
flags. The library is written to a temporary name and renamed, so concurrent builds are safe.

The instruction set is ``-march=native`` unless ``$QUASIRL_NATIVE_MARCH`` (or ``march=``)
names another: a ``-march`` value, optionally followed by ``+feature`` / ``+no-feature``
(``-mfeature`` / ``-mno-feature``), e.g. ``x86-64-v3+clzero``. :data:`VARIANTS` lists the
ones the tests build where the CPU can run them.

Nothing here runs inside a JAX trace: :func:`quasirl._native.load` builds (or finds) the
library when quasirl is imported, and ``quasirl build-native`` / ``python -m quasirl._native
build`` build ahead of time.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
UNITS = ("memory.cc", "forward.cc", "adjoint.cc", "kron.cc", "ffi.cc")
HEADERS = ("simd.h", "memory.h", "pull.h", "kron.h")
# -Wno-psabi: a 32-byte vector passed between the (static, inlined) helpers on a target
# without AVX changes no interface anyone links against
FLAGS = ("-O3", "-fno-math-errno", "-std=c++17", "-fPIC", "-fvisibility=hidden",
         "-Wall", "-Wextra", "-Wno-psabi")
# Every build the test suite makes turns warnings into errors (QUASIRL_NATIVE_WERROR=1);
# a user's build does not, so that a newer compiler's new warning cannot cost the kernels.
WERROR = ("-Werror",)

# The instruction sets tests/test_native_isa.py builds and checks, with the CPU flags
# (/proc/cpuinfo) each needs; every #if on an ISA macro in simd.h is exercised by one of them.
X86_V3 = ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "movbe", "xsave")
X86_V4 = (*X86_V3, "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")
VARIANTS = {
    "x86-64": (),
    "x86-64-v3": X86_V3,
    "x86-64-v3+clzero": (*X86_V3, "clzero"),
    "x86-64-v4": X86_V4,
    "x86-64-v4+clzero": (*X86_V4, "clzero"),
    "native": (),
}


def cache_dir() -> Path:
    if os.environ.get("QUASIRL_CACHE_DIR"):
        return Path(os.environ["QUASIRL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "quasirl"


def cpu_flags() -> set[str]:
    """The running CPU's feature flags (/proc/cpuinfo; empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def runnable(variant: str) -> tuple[bool, str]:
    """Whether this CPU can run a variant of :data:`VARIANTS`, and if not, why."""
    if variant == "native":
        return True, ""
    if platform.machine() not in ("x86_64", "AMD64"):
        return False, f"an x86-64 target on {platform.machine()}"
    missing = sorted(set(VARIANTS[variant]) - cpu_flags())
    if missing:
        return False, "the CPU lacks " + ", ".join(missing)
    return True, ""


def march_flags(march: str) -> list[str]:
    """``x86-64-v3+clzero`` -> ['-march=x86-64-v3', '-mclzero']."""
    base, *features = march.split("+")
    if not base or any(not f for f in features):
        raise ValueError(f"QUASIRL_NATIVE_MARCH: expected MARCH[+feature...], got {march!r}")
    return [f"-march={base}", *(f"-m{f}" for f in features)]


def compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")


def _compiler_id(cxx: str) -> str:
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60)
        return out.stdout.splitlines()[0] if out.stdout else cxx
    except (OSError, subprocess.SubprocessError):
        return cxx


def wants_werror(explicit: bool | None = None) -> bool:
    """Whether warnings are errors: ``explicit`` where given, else $QUASIRL_NATIVE_WERROR."""
    if explicit is not None:
        return explicit
    return os.environ.get("QUASIRL_NATIVE_WERROR", "0").strip().lower() in ("1", "true", "yes")


def flags(march: str, openmp: bool, werror: bool) -> list[str]:
    return [*FLAGS, *(WERROR if werror else ()), *march_flags(march),
            *(("-fopenmp",) if openmp else ("-Wno-unknown-pragmas",))]


def library_path(cxx: str, march: str, openmp: bool, werror: bool,
                 cache: Path | None = None) -> Path:
    """Where the library for these settings lives (built or not)."""
    import jax
    import jaxlib

    key = hashlib.sha256(b"\0".join([
        *((HERE / f).read_bytes() for f in (*UNITS, *HEADERS)),
        " ".join(flags(march, openmp, werror)).encode(), _compiler_id(cxx).encode(),
        jax.__version__.encode(), jaxlib.__version__.encode(),
        " ".join(sorted(cpu_flags())).encode(), platform.machine().encode(),
    ])).hexdigest()[:20]
    return (cache or cache_dir()) / f"native_cpu-{key}.so"


class BuildError(OSError):
    """The compiler failed: ``cmd`` and its ``stderr``; ``summary`` is its first error line."""

    def __init__(self, cmd: list[str], stderr: str):
        self.cmd, self.stderr = cmd, stderr
        errors = [ln.strip() for ln in stderr.splitlines() if "error" in ln]
        self.summary = (errors or stderr.strip().splitlines() or ["(no message)"])[0]
        super().__init__(f"{' '.join(cmd)} failed: {stderr.strip()[-4000:]}")


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if res.returncode != 0:
        raise BuildError(cmd, res.stderr)


def build(cxx: str, march: str = "native", openmp: bool = True, werror: bool | None = None,
          cache: Path | None = None, quiet: bool = False) -> Path:
    """The library for these settings: from the cache, else compiled now (a line on stderr
    says so unless ``quiet``). Raises OSError with the compiler's message if it fails."""
    import jax

    werror = wants_werror(werror)
    out = library_path(cxx, march, openmp, werror, cache)
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(f"quasirl: compiling the native CPU kernels (-march {march}; once per machine, "
              f"QUASIRL_NATIVE=0 skips) into {out.parent} ...", file=sys.stderr, flush=True)
    fl = flags(march, openmp, werror)
    inc = ["-isystem", jax.ffi.include_dir(), f"-I{HERE}"]
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".build-") as tmp:
        objs = [str(Path(tmp) / (Path(u).stem + ".o")) for u in UNITS]
        cmds = [[cxx, *fl, *inc, "-c", str(HERE / u), "-o", o]
                for u, o in zip(UNITS, objs, strict=True)]
        with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
            for f in [pool.submit(_run, c) for c in cmds]:
                f.result()
        lib = str(Path(tmp) / "lib.so")
        _run([cxx, *fl, "-shared", *objs, "-o", lib])
        os.replace(lib, out)
    return out
