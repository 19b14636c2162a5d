"""The native kernels from the command line: build ahead of time, or report."""

from __future__ import annotations

import argparse
import json
import os


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m quasirl._native",
        description="Build quasirl's native CPU kernels into the cache (once per machine and "
                    "instruction set), or report the build this process uses.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="compile (or find in the cache) and load the kernels")
    b.add_argument("--march", default=None,
                   help="instruction set: a -march value with optional +feature suffixes, e.g. "
                        "x86-64-v3+clzero (default: $QUASIRL_NATIVE_MARCH, else native)")
    b.add_argument("--werror", action="store_true", help="warnings are errors")
    sub.add_parser("status", help="print the kernels' status as JSON")
    args = ap.parse_args(argv)
    try:
        return build(args.march, args.werror) if args.cmd == "build" else status()
    except ValueError as exc:
        print(f"error: {exc}")
        return 2


def build(march: str | None, werror: bool) -> int:
    """Build (or find) the library; a ValueError with one line where that fails."""
    from . import build as _build

    march = march or os.environ.get("QUASIRL_NATIVE_MARCH", "native")
    cxx = _build.compiler()
    if not cxx:
        raise ValueError("no C++ compiler ($CXX, c++, g++): quasirl uses the XLA path")
    try:
        strict = _build.wants_werror(True if werror else None)
        if not _build.library_path(cxx, march, True, strict).exists():
            print(f"compiling the native CPU kernels for -march {march} ...", flush=True)
        path = _build.build(cxx, march, openmp=True, werror=strict, quiet=True)
    except _build.BuildError as exc:
        raise ValueError(f"the native build for --march {march} failed: "
                         f"{exc.summary[-300:]}") from exc
    except OSError as exc:
        raise ValueError(f"the native build for --march {march} failed: {exc}") from exc
    print(f"{march}: {path}")
    return 0


def status() -> int:
    from quasirl import kernel_status

    print(json.dumps(kernel_status(), indent=1))
    return 0
