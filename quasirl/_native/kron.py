"""Eigen's mutation operator as a JAX function (``jax.ffi.ffi_call``): (c Q (w * x), sum(w * x)).

Differentiated through the XLA path (``jax.custom_jvp``: the XLA blocks of
:mod:`quasirl._kron_xla` compute the primal and tangent together); under ``vmap`` the kernel
runs once per batch entry.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .._kron_xla import reference, site_matrices
from . import TARGETS, _lib

_NAMES = {np.dtype(np.float32): TARGETS["kron_f32"][0],
          np.dtype(np.float64): TARGETS["kron_f64"][0]}


def _ffi(x, w, m, scale, weighted: bool, normalize: bool):
    _lib()  # RuntimeError with the reason where the kernels are not built
    name = _NAMES[np.dtype(x.dtype)]
    out = (jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct((), x.dtype))
    # y may take x's buffer (the kernel reads each block of x before writing it): inside a
    # scan the new state then overwrites the old one instead of being copied into it
    call = jax.ffi.ffi_call(name, out, vmap_method="sequential", input_output_aliases={0: 0})
    return call(x, w, m, scale, weighted=np.int32(weighted), normalize=np.int32(normalize))


@partial(jax.custom_jvp, nondiff_argnums=(5, 6, 7))
def native(x, w, u, v, scale, weighted: bool, normalize: bool, groups):
    """The kernel: (c Q (w * x), sum(w * x)); ``groups`` only shapes the tangent's XLA path."""
    m = site_matrices(u, v)
    if not weighted:
        w = jnp.zeros((1,), x.dtype)
    return _ffi(x, w, m, jnp.asarray(scale, x.dtype), weighted, normalize)


@native.defjvp
def _native_jvp(weighted, normalize, groups, primals, tangents):
    # the XLA path computes the primal as part of its jvp: use it rather than run both
    return jax.jvp(lambda *a: reference(*a, weighted, normalize, groups), primals, tangents)
