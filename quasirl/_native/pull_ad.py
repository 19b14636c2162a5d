"""Derivatives of the native forward kernel of ``free_energy``: three JAX primitives.

``quasirl._dynamics._forward_native``'s ``custom_jvp`` rule is

    F, token = keep(li, src, log w, r, T)
    dF = tangent(li, src, log w, r, T, token; dr, dlog w, dT, dli)
       = sum_j N_j (dr_j + T dlog w_j) + dF/dT dT + T sum_s rho_s dli_s,

with li = log init (u_0 = T li), N = dF/dc per entry and temperature (c = T log w + r),
rho = dF/du_0 and dF/dT at fixed init, w and r
(:func:`quasirl._native.pull.pull_forward_backward`).
``keep`` runs the forward kernel and keeps its pass for the adjoint under ``token``; the
tangent is linear in its last four operands. Its rules:

* evaluated (forward mode): the kernel that returns N and rho (from the kept pass), then the
  contraction;
* transposed (reverse mode): the cotangent of F is known, so ``adjoint`` runs the kernel that
  contracts over temperatures as it goes (:func:`quasirl._native.pull.pull_adjoint`), from the
  kept pass: one float per entry and weight instead of one per entry and temperature, the
  traffic that bounded the reverse pass (benchmarks/NOTES.md, section 13);
* differentiated again (second order): the XLA path's derivatives
  (:func:`quasirl._pull_xla.sensitivities_reference`), so every order of forward and reverse
  mode works;
* batched: the kernel once with the batch contracted in where only tangents or cotangents
  are batched (``jacfwd``, ``jacrev``), else once per batch entry (``lax.map``).

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

from .._pull_xla import sensitivities_reference
from . import pull as _pull

_F32 = jnp.float32


def _contract(N, rho, dTf, li, logw, T, drew, dlogw, dT, dli):
    """The tangent from the sensitivities: products and sums (reductions over the leading
    axes; a dot would first copy N into another layout)."""
    live = logw > -jnp.inf

    def c(a):  # sum over s, j of N[s, j, b] a[s, j]
        return jnp.sum(N * jnp.where(live, a, 0.0)[:, :, None], axis=(0, 1))

    dli0 = jnp.where(li > -jnp.inf, dli, 0.0)
    return c(drew) + T * (c(dlogw) + jnp.sum(rho * dli0[:, None], axis=0)) + dTf * dT


def _reference(li, src, logw, rew, T, horizon):
    return sensitivities_reference(li, src, logw, rew, T, horizon)


def _map_batch(fn, args, dims):
    """fn once per batch entry (lax.map over the batched operands; the others are closed
    over): the kernels are not vectorised over MDPs or temperatures. dims: an axis, or None
    where an operand is not batched."""
    mapped = [i for i, d in enumerate(dims) if d is not None]

    def one(xs):
        full = list(args)
        for i, x in zip(mapped, xs, strict=True):
            full[i] = x
        return fn(*full)

    return jax.lax.map(one, [jnp.moveaxis(args[i], dims[i], 0) for i in mapped])


def _jvp_by(reference, primals, tangents, skip):
    """The jvp of ``reference`` over the operands not in ``skip`` (integer tables, tokens)."""
    keep_i = [i for i in range(len(primals)) if i not in skip]

    def f(*xs):
        full = list(primals)
        for i, x in zip(keep_i, xs, strict=True):
            full[i] = x
        return reference(*full)

    return jax.jvp(f, tuple(primals[i] for i in keep_i),
                   tuple(ad.instantiate_zeros(tangents[i]) for i in keep_i))


# --------------------------------------------------------------------------------------------
# adjoint: (li, src, logw, rew, T, token, W [K, B]) -> (G [K, S, J], R [K, S], dF/dT [B])
# --------------------------------------------------------------------------------------------
adjoint_p = Primitive("quasirl_native_adjoint")
adjoint_p.multiple_results = True


def adjoint(li, src, logw, rew, T, token, W, horizon: int):
    """G = sum_b W[k, b] N[:, :, b], R = sum_b W[k, b] rho[:, b] and dF/dT (``token``: the
    forward pass kept by ``keep`` on the same inputs)."""
    return adjoint_p.bind(li, src, logw, rew, T, token, W, horizon=horizon)


def _adjoint_impl(li, src, logw, rew, T, token, W, *, horizon):
    return _pull.pull_adjoint(li, src, logw, rew, T, W, horizon, token)[1:]


def _adjoint_reference(li, src, logw, rew, T, token, W, horizon):
    _, N, rho, dT = _reference(li, src, logw, rew, T, horizon)
    return jnp.sum(W[:, None, None, :] * N[None], axis=-1), W @ rho.T, dT


@adjoint_p.def_abstract_eval
def _adjoint_abstract(li, src, logw, rew, T, token, W, *, horizon):
    S, J = src.shape
    K = W.shape[0]
    return (ShapedArray((K, S, J), _F32), ShapedArray((K, S), _F32),
            ShapedArray(T.shape, _F32))


def _adjoint_batch(args, dims, *, horizon):
    li, src, logw, rew, T, token, W = args
    if all(d is None for d in dims[:6]):  # only the weights: one kernel call
        W = jnp.moveaxis(W, dims[6], 0)
        V, K = W.shape[:2]
        G, R, dT = adjoint(li, src, logw, rew, T, token, W.reshape(V * K, -1), horizon)
        return (G.reshape(V, K, *G.shape[1:]), R.reshape(V, K, -1),
                jnp.broadcast_to(dT, (V, *dT.shape))), (0, 0, 0)
    return _map_batch(partial(adjoint, horizon=horizon), args, dims), (0, 0, 0)


adjoint_p.def_impl(_adjoint_impl)
mlir.register_lowering(adjoint_p, mlir.lower_fun(_adjoint_impl, multiple_results=True))
ad.primitive_jvps[adjoint_p] = lambda primals, tangents, *, horizon: _jvp_by(
    partial(_adjoint_reference, horizon=horizon), primals, tangents, skip=(1, 5))
batching.primitive_batchers[adjoint_p] = _adjoint_batch


# --------------------------------------------------------------------------------------------
# tangent: (li, src, logw, rew, T, token; drew, dlogw, dT, dli) -> dF [B], linear in the last
# four
# --------------------------------------------------------------------------------------------
tangent_p = Primitive("quasirl_native_tangent")
_NRES = 6  # li, src, logw, rew, T, token


def tangent(li, src, logw, rew, T, token, drew, dlogw, dT, dli, horizon: int):
    """dF for tangents (dr, dlog w, dT, dli) of the native forward's inputs."""
    return tangent_p.bind(li, src, logw, rew, T, token, drew, dlogw, dT, dli, horizon=horizon)


def _tangent_impl(li, src, logw, rew, T, token, drew, dlogw, dT, dli, *, horizon):
    _, N, rho, dTf = _pull.pull_forward_backward(li, src, logw, rew, T, horizon, token)
    return _contract(N, rho, dTf, li, logw, T, drew, dlogw, dT, dli)


def _tangent_reference(li, src, logw, rew, T, token, drew, dlogw, dT, dli, horizon):
    _, N, rho, dTf = _reference(li, src, logw, rew, T, horizon)
    return _contract(N, rho, dTf, li, logw, T, drew, dlogw, dT, dli)


@tangent_p.def_abstract_eval
def _tangent_abstract(li, src, logw, rew, T, token, drew, dlogw, dT, dli, *, horizon):
    return ShapedArray(T.shape, _F32)


def _tangent_transpose(ct, li, src, logw, rew, T, token, drew, dlogw, dT, dli, *, horizon):
    if any(ad.is_undefined_primal(x) for x in (li, src, logw, rew, T, token)):
        raise NotImplementedError("the native tangent is linear only in its tangents")
    lin = (drew, dlogw, dT, dli)
    undefined = [ad.is_undefined_primal(x) for x in lin]
    if type(ct) is ad.Zero:
        return [None] * _NRES + [ad.Zero(x.aval) if u else None
                                 for x, u in zip(lin, undefined, strict=True)]
    # the rows of W: the cotangent (for dr), the cotangent times T (for dlog w and dli)
    want_r, want_t = undefined[0], undefined[1] or undefined[3]
    rows = [w for w, u in ((ct, want_r), (ct * T, want_t)) if u]
    W = jnp.stack(rows) if rows else jnp.zeros((0, T.shape[0]), _F32)
    G, R, dTf = adjoint(li, src, logw, rew, T, token, W, horizon)
    kt = int(want_r)  # the row of ct * T
    return [None] * _NRES + [
        G[0] if undefined[0] else None,
        G[kt] if undefined[1] else None,
        ct * dTf if undefined[2] else None,
        jnp.where(li > -jnp.inf, R[kt], 0.0) if undefined[3] else None,
    ]


def _tangent_batch(args, dims, *, horizon):
    if all(d is None for d in dims[:_NRES]):  # only tangents: N once
        li, src, logw, rew, T, token = args[:_NRES]
        _, N, rho, dTf = _pull.pull_forward_backward(li, src, logw, rew, T, horizon, token)
        out = jax.vmap(lambda *lin: _contract(N, rho, dTf, li, logw, T, *lin),
                       in_axes=tuple(dims[_NRES:]))(*args[_NRES:])
        return out, 0
    return _map_batch(partial(tangent, horizon=horizon), args, dims), 0


tangent_p.def_impl(_tangent_impl)
mlir.register_lowering(tangent_p, mlir.lower_fun(_tangent_impl, multiple_results=False))
ad.primitive_jvps[tangent_p] = lambda primals, tangents, *, horizon: _jvp_by(
    partial(_tangent_reference, horizon=horizon), primals, tangents, skip=(1, 5))
ad.primitive_transposes[tangent_p] = _tangent_transpose
batching.primitive_batchers[tangent_p] = _tangent_batch


# --------------------------------------------------------------------------------------------
# keep: (li, src, logw, rew, T) -> (F [B], token [2]): the forward, kept for the adjoint
# --------------------------------------------------------------------------------------------
keep_p = Primitive("quasirl_native_keep")
keep_p.multiple_results = True


def keep(li, src, logw, rew, T, horizon: int):
    """F and a token for the forward pass the kernel keeps
    (:func:`quasirl._native.pull.pull_keep`)."""
    return keep_p.bind(li, src, logw, rew, T, horizon=horizon)


def _keep_impl(li, src, logw, rew, T, *, horizon):
    return _pull.pull_keep(li, src, logw, rew, T, horizon)


@keep_p.def_abstract_eval
def _keep_abstract(li, src, logw, rew, T, *, horizon):
    return ShapedArray(T.shape, _F32), ShapedArray((2,), jnp.int32)


def _keep_jvp(primals, tangents, *, horizon):
    F, token = keep(*primals, horizon=horizon)
    li, src, logw, rew, T = primals
    dli, _, dlogw, drew, dT = (ad.instantiate_zeros(t) for t in tangents)
    dF = tangent(li, src, logw, rew, T, token, drew, dlogw, dT, dli, horizon)
    return (F, token), (dF, ad.Zero(jax.typeof(token).to_tangent_aval()))


keep_p.def_impl(_keep_impl)
mlir.register_lowering(keep_p, mlir.lower_fun(_keep_impl, multiple_results=True))
ad.primitive_jvps[keep_p] = _keep_jvp
batching.primitive_batchers[keep_p] = (
    lambda args, dims, *, horizon: (_map_batch(partial(keep, horizon=horizon), args, dims),
                                    (0, 0)))
