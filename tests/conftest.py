"""Strict settings for the test suite only (the library never changes global JAX config)."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
# One BLAS thread: on 2 shared cores a threaded eigh was 100x slower than a single thread.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


# variant -> report of tests/test_native_isa.py, gathered from the test reports' user properties
# (so that the summary also works when pytest-xdist ran the module in a worker process)
_ISA_MATRIX: dict = {}


def pytest_runtest_logreport(report):
    import json

    for name, value in getattr(report, "user_properties", ()):
        if name == "isa_matrix":
            variant, rep = json.loads(value)
            _ISA_MATRIX[variant] = rep


def pytest_terminal_summary(terminalreporter):
    """The ISA matrix of the native kernels (tests/test_native_isa.py), when it ran."""
    if _ISA_MATRIX:
        from test_native_isa import summary_lines

        for line in summary_lines(dict(sorted(_ISA_MATRIX.items(), key=_variant_order))):
            terminalreporter.write_line(line)


def _variant_order(item):
    from quasirl._native.build import VARIANTS

    order = list(VARIANTS)
    return order.index(item[0]) if item[0] in order else len(order)
