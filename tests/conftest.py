"""Strict settings for the test suite only (the library never changes global JAX config)."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
# One BLAS thread: on 2 shared cores a threaded eigh was 100x slower than a single thread.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


def pytest_terminal_summary(terminalreporter):
    """The ISA matrix of the native kernels (tests/test_native_isa.py), when it ran."""
    import sys

    mod = sys.modules.get("test_native_isa")
    for line in (mod.summary_lines() if mod else []):
        terminalreporter.write_line(line)
