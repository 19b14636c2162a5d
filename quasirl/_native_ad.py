"""Derivatives of the native forward kernel of ``free_energy``: two JAX primitives.

``_forward_native``'s ``custom_jvp`` rule writes its tangent as one primitive,

    dF = tangent(u0, src, log w, r, T; dr, dlog w, dT, du0)
       = sum_j N_j (dr_j + T dlog w_j) + dF/dT|_{c} dT + sum_s rho_s du0_s,

linear in the last four operands (N = dF/dc per entry and temperature, rho = dF/du0; see
:func:`quasirl._native.pull_forward_backward`). Its rules:

* evaluated (forward mode): the kernel that returns N, then the contraction;
* transposed (reverse mode): the cotangent of F is known, so the ``adjoint`` primitive runs the
  kernel that contracts over temperatures as it goes (:func:`quasirl._native.pull_adjoint`):
  one float per entry and weight instead of one per entry and temperature, the traffic that
  bounded the reverse pass (benchmarks/NOTES.md, section 13);
* differentiated again (second order): the XLA path's derivatives
  (``_dynamics._sensitivities_reference``), so every order of forward and reverse mode works;
* batched: the kernel once with the batch contracted in (tangents or cotangents batched, the
  MDP and T not: ``jacfwd``, ``jacrev``), else once per batch entry (``lax.map``).

JAX's documented way to give an operation its own transpose is a primitive
(``jax.extend.core.Primitive`` with rules in ``jax.interpreters``); ``custom_jvp`` alone
cannot, and ``custom_vjp`` would lose forward mode.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax.core import ShapedArray
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from . import _native

_F32 = jnp.float32


def _sens_contract(N, rho, Hs, logw, T, drew, dlogw, dT, du0):
    """The tangent from the sensitivities: products and sums (reductions over the trailing
    axes; a dot would first copy N into another layout)."""
    live = logw > -jnp.inf

    def c(a):  # sum over s, j of N[s, j, b] a[s, j]
        return jnp.sum(N * jnp.where(live, a, 0.0)[:, :, None], axis=(0, 1))

    return (c(drew) + T * c(dlogw) + (c(logw) + Hs) * dT + jnp.sum(rho * du0, axis=0))


def _reference_sensitivities(u0, src, logw, rew, T, horizon):
    from ._dynamics import _sensitivities_reference

    return _sensitivities_reference(u0, src, logw, rew, T, horizon)


# --------------------------------------------------------------------------------------------
# adjoint: (u0, src, logw, rew, T, token, W [K, B]) -> (G [K, S, J], rho [S, B], dF/dT [B])
# --------------------------------------------------------------------------------------------
adjoint_p = Primitive("quasirl_native_adjoint")
adjoint_p.multiple_results = True


def adjoint(u0, src, logw, rew, T, token, W, horizon: int):
    """G = sum_b W[k, b] N[:, :, b], rho = dF/du0, dF/dT at fixed u0, log w, r (``token``:
    the forward pass kept by ``keep`` on the same inputs)."""
    return adjoint_p.bind(u0, src, logw, rew, T, token, W, horizon=horizon)


def _adjoint_impl(u0, src, logw, rew, T, token, W, *, horizon):
    return _native.pull_adjoint(u0, src, logw, rew, T, W, horizon, token)[1:]


def _adjoint_reference(u0, src, logw, rew, T, W, horizon):
    _, N, rho, Hs = _reference_sensitivities(u0, src, logw, rew, T, horizon)
    G = jnp.sum(W[:, None, None, :] * N[None], axis=-1)
    dT = Hs + jnp.sum(N * jnp.where(logw > -jnp.inf, logw, 0.0)[:, :, None], axis=(0, 1))
    return G, rho, dT


@adjoint_p.def_abstract_eval
def _adjoint_abstract(u0, src, logw, rew, T, token, W, *, horizon):
    S, J = src.shape
    B = T.shape[0]
    return (ShapedArray((W.shape[0], S, J), _F32), ShapedArray((S, B), _F32),
            ShapedArray((B,), _F32))


def _adjoint_jvp(primals, tangents, *, horizon):
    u0, src, logw, rew, T, _, W = primals
    tan = [ad.instantiate_zeros(t) for i, t in enumerate(tangents) if i not in (1, 5)]
    return jax.jvp(lambda u, lw, r, t, w: _adjoint_reference(u, src, lw, r, t, w, horizon),
                   (u0, logw, rew, T, W), tuple(tan))


def _adjoint_batch(args, dims, *, horizon):  # dims: an axis, or None where not batched
    u0, src, logw, rew, T, token, W = args
    if all(d is None for d in dims[:6]):  # only the weights: one kernel call
        W = jnp.moveaxis(W, dims[6], 0)
        V, K = W.shape[:2]
        G, rho, dT = adjoint(u0, src, logw, rew, T, token, W.reshape(V * K, -1), horizon)
        G = G.reshape(V, K, *G.shape[1:])
        return (G, jnp.broadcast_to(rho, (V, *rho.shape)),
                jnp.broadcast_to(dT, (V, *dT.shape))), (0, 0, 0)
    return _map_batch(partial(adjoint, horizon=horizon), args, dims), (0, 0, 0)


adjoint_p.def_impl(_adjoint_impl)
mlir.register_lowering(adjoint_p, mlir.lower_fun(_adjoint_impl, multiple_results=True))
ad.primitive_jvps[adjoint_p] = _adjoint_jvp
batching.primitive_batchers[adjoint_p] = _adjoint_batch


# --------------------------------------------------------------------------------------------
# keep: (u0, src, logw, rew, T) -> (F [B], token [2]): the forward, kept for the adjoint
# --------------------------------------------------------------------------------------------
keep_p = Primitive("quasirl_native_keep")
keep_p.multiple_results = True


def keep(u0, src, logw, rew, T, horizon: int):
    """F and a token for the forward pass the kernel keeps (:func:`_native.pull_keep`)."""
    return keep_p.bind(u0, src, logw, rew, T, horizon=horizon)


def _keep_impl(u0, src, logw, rew, T, *, horizon):
    return _native.pull_keep(u0, src, logw, rew, T, horizon)


@keep_p.def_abstract_eval
def _keep_abstract(u0, src, logw, rew, T, *, horizon):
    return ShapedArray(T.shape, _F32), ShapedArray((2,), jnp.int32)


def _keep_jvp(primals, tangents, *, horizon):
    F, token = keep(*primals, horizon=horizon)
    u0, src, logw, rew, T = primals
    du0, _, dlogw, drew, dT = (ad.instantiate_zeros(t) for t in tangents)
    dF = tangent(u0, src, logw, rew, T, token, drew, dlogw, dT, du0, horizon)
    return (F, token), (dF, ad.Zero(jax.typeof(token).to_tangent_aval()))


keep_p.def_impl(_keep_impl)
mlir.register_lowering(keep_p, mlir.lower_fun(_keep_impl, multiple_results=True))
ad.primitive_jvps[keep_p] = _keep_jvp
batching.primitive_batchers[keep_p] = (
    lambda args, dims, *, horizon: (_map_batch(partial(keep, horizon=horizon), args, dims),
                                    (0, 0)))


# --------------------------------------------------------------------------------------------
# tangent: (u0, src, logw, rew, T, token; drew, dlogw, dT, du0) -> dF [B], linear in the last
# four
# --------------------------------------------------------------------------------------------
tangent_p = Primitive("quasirl_native_tangent")
_NRES = 6  # u0, src, logw, rew, T, token


def tangent(u0, src, logw, rew, T, token, drew, dlogw, dT, du0, horizon: int):
    """dF for tangents (dr, dlog w, dT, du0) of the native forward's inputs."""
    return tangent_p.bind(u0, src, logw, rew, T, token, drew, dlogw, dT, du0, horizon=horizon)


def _tangent_impl(u0, src, logw, rew, T, token, drew, dlogw, dT, du0, *, horizon):
    _, N, rho, Hs = _native.pull_forward_backward(u0, src, logw, rew, T, horizon)
    return _sens_contract(N, rho, Hs, logw, T, drew, dlogw, dT, du0)


def _tangent_reference(u0, src, logw, rew, T, drew, dlogw, dT, du0, horizon):
    _, N, rho, Hs = _reference_sensitivities(u0, src, logw, rew, T, horizon)
    return _sens_contract(N, rho, Hs, logw, T, drew, dlogw, dT, du0)


@tangent_p.def_abstract_eval
def _tangent_abstract(u0, src, logw, rew, T, token, drew, dlogw, dT, du0, *, horizon):
    return ShapedArray(T.shape, _F32)


def _tangent_jvp(primals, tangents, *, horizon):
    src = primals[1]
    keep_i = [i for i in range(len(primals)) if i not in (1, 5)]  # not src, token
    tan = tuple(ad.instantiate_zeros(tangents[i]) for i in keep_i)

    def f(u0, logw, rew, T, *lin):
        return _tangent_reference(u0, src, logw, rew, T, *lin, horizon)

    return jax.jvp(f, tuple(primals[i] for i in keep_i), tan)


def _tangent_transpose(ct, u0, src, logw, rew, T, token, drew, dlogw, dT, du0, *, horizon):
    lin = (drew, dlogw, dT, du0)
    if any(ad.is_undefined_primal(x) for x in (u0, src, logw, rew, T, token)):
        raise NotImplementedError("the native tangent is linear only in its tangents")
    undefined = [ad.is_undefined_primal(x) for x in lin]
    if type(ct) is ad.Zero:
        return [None] * _NRES + [ad.Zero(x.aval) if u else None
                                 for x, u in zip(lin, undefined, strict=True)]
    # the rows of W: the cotangent for dr, the cotangent times T for dlog w (c = T log w + r)
    rows = [w for w, u in ((ct, undefined[0]), (ct * T, undefined[1])) if u]
    W = jnp.stack(rows) if rows else jnp.zeros((0, T.shape[0]), _F32)
    G, rho, dFdT = adjoint(u0, src, logw, rew, T, token, W, horizon)
    out, k = [], 0
    for u in undefined[:2]:
        out.append(G[k] if u else None)
        k += u
    out.append(ct * dFdT if undefined[2] else None)
    out.append(rho * ct[None, :] if undefined[3] else None)
    return [None] * _NRES + out


def _tangent_batch(args, dims, *, horizon):
    if all(d is None for d in dims[:_NRES]):  # only tangents: N once
        u0, src, logw, rew, T, _ = args[:_NRES]
        _, N, rho, Hs = _native.pull_forward_backward(u0, src, logw, rew, T, horizon)
        out = jax.vmap(lambda *lin: _sens_contract(N, rho, Hs, logw, T, *lin),
                       in_axes=tuple(dims[_NRES:]))(*args[_NRES:])
        return out, 0
    return _map_batch(partial(tangent, horizon=horizon), args, dims), 0


tangent_p.def_impl(_tangent_impl)
mlir.register_lowering(tangent_p, mlir.lower_fun(_tangent_impl, multiple_results=False))
ad.primitive_jvps[tangent_p] = _tangent_jvp
ad.primitive_transposes[tangent_p] = _tangent_transpose
batching.primitive_batchers[tangent_p] = _tangent_batch


def _map_batch(fn, args, dims):
    """fn once per batch entry (lax.map over the batched operands; the others are closed
    over): the kernels are not vectorised over MDPs or temperatures."""
    mapped = [i for i, d in enumerate(dims) if d is not None]

    def one(xs):
        full = list(args)
        for i, x in zip(mapped, xs, strict=True):
            full[i] = x
        return fn(*full)

    return jax.lax.map(one, [jnp.moveaxis(args[i], dims[i], 0) for i in mapped])
