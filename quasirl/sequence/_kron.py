"""Eigen's model on the full genotype space: the Kronecker mutation operator and the dynamics.

Genotypes are the integers i in [0, 2^L); site j is axis j of ``x.reshape([2] * L)``, i.e.
bit L-1-j of i (site 0 is the most significant bit), and the master sequence is i = 0 unless
said otherwise. Per site, a 0 becomes a 1 with probability u_j and a 1 becomes a 0 with
probability v_j, so the per-site matrix is M_j = [[1-u_j, v_j], [u_j, 1-v_j]] (M[new, old],
columns sum to 1) and Q = M_0 (x) M_1 (x) ... (x) M_{L-1}.

Q is never formed. Sites are grouped into blocks of g consecutive sites (``groups``, in site
order, summing to L); block b is the 2^g x 2^g Kronecker product of its sites' M_j. Applying a
block to the trailing g sites of the vector is one matrix product that also rotates those g
bits to the front: with X = y.reshape(2^(L-g), 2^g), Z = B @ X^T is [2^g, 2^(L-g)] and its
flat view is the vector in the rotated site order. Applying the blocks from the last to the
first therefore leaves the sites in their original order, at the cost of one GEMM (one read
and one write of the vector) per block: 2^(g+1) flops per entry and block.
See benchmarks/bench_sequence.py for the choice of the default grouping.

Jit policy: the ``*_kernel`` functions are jitted (shapes and groupings static);
public functions validate concrete input and call them once.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import _kernels
from .._kron_xla import reference
from .._native import kron as _native_kron
from .._validate import (
    QuasirlValueError,
    check_finite,
    check_int,
    check_nonnegative,
    float_dtype,
    is_concrete,
)
from . import _chunks
from ._checks import (
    check_fitness,
    check_groups,
    check_L,
    check_master,
    check_model,
    check_numbers,
    check_tol,
    check_vector,
    site_rates,
)


# --------------------------------------------------------------------------------------------
# groupings and blocks
# --------------------------------------------------------------------------------------------
def default_groups(L: int, dtype=None) -> tuple[int, ...]:
    """Default split of the L sites into Kronecker blocks (in site order).

    Blocks of at most g_max sites, as equal as possible: g_max = 5 in float32 and 4 in float64
    on CPUs, 8 on GPUs. A block of g sites costs 2^(g+1) flops per entry in one pass over the
    vector, so larger blocks trade flops for passes; on the 2-core CPU these were measured
    (benchmarks/bench_sequence.py --tune) the products are compute-bound from g = 5 (float32)
    and g = 4 (float64) on. GPUs are bandwidth-bound: fewer, larger blocks.
    """
    L = check_L(L)
    dt = jnp.dtype(dtype if dtype is not None else jnp.result_type(float))
    if jax.default_backend() != "cpu":
        gmax = 8
    else:
        gmax = 5 if dt.itemsize <= 4 else 4
    n = -(-L // gmax)
    base, extra = divmod(L, n)
    return tuple([base + 1] * extra + [base] * (n - extra))


def resolve_kernel(kernel, groups, what: str = "sequence") -> bool:
    """True to use the native CPU kernel: kernel "auto" (native where it is built and the
    default backend is a CPU, unless ``groups`` asks for a grouping), "native" or "xla"."""
    why = ("groups sets the XLA path's blocks: use it with kernel='xla' or 'auto', not "
           "kernel='native'") if groups is not None else None
    return _kernels.resolve(kernel, what, (why,))


def apply_q(x, w, u, v, scale, *, weighted: bool, normalize: bool, groups, native: bool):
    """(c Q (w * x), sum(w * x)) with c = scale / sum(w * x) if ``normalize`` else scale
    (w is ignored unless ``weighted``): the native kernel or the XLA blocks."""
    scale = jnp.asarray(scale, x.dtype)
    if native:
        return _native_kron.native(x, w, u, v, scale, weighted, normalize, groups)
    return reference(x, w, u, v, scale, weighted, normalize, groups)


def _ck_rates(u, v, dt):
    """Per-site probabilities of exp(dt G_j) for the 2-state generator with rates (u, v):
    exp(dt G) = I + (1 - exp(-(u+v) dt)) / (u+v) G (exact; -> dt G as u + v -> 0)."""
    lam = u + v
    safe = jnp.where(lam > 0, lam, 1.0)
    c = jnp.where(lam > 0, -jnp.expm1(-safe * dt) / safe, dt)
    return u * c, v * c


# --------------------------------------------------------------------------------------------
# Hamming classes
# --------------------------------------------------------------------------------------------
def class_sum(x, L: int):
    """[L+1] sums of x over genotypes with k ones (no index array: a per-bit fold)."""
    h = x.reshape(-1, 1)
    for _ in range(L):
        h = h.reshape(-1, 2, h.shape[-1])
        a, b = h[:, 0, :], h[:, 1, :]
        z = jnp.zeros_like(a[:, :1])
        h = jnp.concatenate([a, z], axis=1) + jnp.concatenate([z, b], axis=1)
    return h.reshape(L + 1)


def relabel(x, L: int, master: int):
    """x over genotypes relabelled so that ``master`` becomes 0 (XOR with master)."""
    if master == 0:
        return x
    idx = jnp.arange(1 << L, dtype=jnp.uint32) ^ jnp.uint32(master)
    return x[idx]


@partial(jax.jit, static_argnames=("L", "master"))
def _classes_kernel(x, L: int, master: int):
    return class_sum(relabel(x, L, master), L)


def class_distribution(x, master: int = 0):
    """Mass of each Hamming class: out[k] = sum of x over genotypes at distance k from
    ``master``  [L+1]."""
    L = check_vector(x, "x")
    master = check_master(master, L)
    return _classes_kernel(jnp.asarray(x), L, master)


def hamming_distance(L: int, master: int = 0):
    """Hamming distance of every genotype to ``master`` (popcount of i XOR master)  [2^L]."""
    L = check_L(L)
    master = check_master(master, L)
    i = jnp.arange(1 << L, dtype=jnp.uint32) ^ jnp.uint32(master)
    return jax.lax.population_count(i).astype(jnp.int32)


# --------------------------------------------------------------------------------------------
# mutation operator and its spectrum
# --------------------------------------------------------------------------------------------
@partial(jax.jit, static_argnames=("groups", "native"))
def _mutate_kernel(x, u, v, groups, native):
    return apply_q(x, x, u, v, 1, weighted=False, normalize=False, groups=groups,
                   native=native)[0]


def mutate(x, mu, nu=None, *, groups=None, kernel: str = "auto"):
    """Apply the mutation matrix: Q x for x over the 2^L genotypes, Q = (x)_j M_j  [2^L].

    mu: per-site probability of 0 -> 1 (scalar or [L]); nu: probability of 1 -> 0 (default mu:
    the symmetric model Q = (x)_L [[1-mu, mu], [mu, 1-mu]]). Q is applied as grouped Kronecker
    blocks, never as a dense 2^L x 2^L matrix. Columns of Q sum to 1, so sum(Q x) = sum(x).

    kernel: "auto" (default) uses the native CPU kernel (cache-blocked per-site butterflies,
    :func:`quasirl.kernel_status`) when the default backend is a CPU and it could be built, else the
    XLA path: grouped Kronecker blocks, ``groups`` (block sizes in site order, summing to L)
    overriding :func:`default_groups` (giving ``groups`` selects the XLA path). "native" and
    "xla" force one; both give the same result to rounding, under jit, vmap and grad.
    """
    L = check_vector(x, "x")
    x = jnp.asarray(x)
    dtype = float_dtype(x, mu, nu)
    u, v = site_rates(mu, nu, L, dtype)
    g = check_groups(groups, L)
    native = resolve_kernel(kernel, g, "sequence.mutate")
    return _mutate_kernel(x.astype(dtype), u, v, g or default_groups(L, dtype), native)


class MutationSpectrum(NamedTuple):
    """Eigenvalues of Q and their multiplicities."""

    eigenvalues: jax.Array
    multiplicity: jax.Array


def mutation_spectrum(L: int, mu, nu=None) -> MutationSpectrum:
    """Spectrum of Q: eigenvalues prod_{j in S} (1 - u_j - v_j) over subsets S of the sites.

    Scalar rates: the L + 1 distinct values (1 - mu - nu)^k, k = 0..L, with multiplicity
    C(L, k) ((1 - 2 mu)^k in the symmetric model); eigenvector of (1-2mu)^k: the Walsh
    functions (-1)^{popcount(i & S)} with |S| = k. Per-site rates: all 2^L values
    (a Kronecker product of the per-site spectra {1, 1 - u_j - v_j}), multiplicity 1 each, in
    the genotype order of S (bit L-1-j of the index set for site j).
    """
    L = check_L(L)
    dtype = float_dtype(mu, nu)
    u, v = site_rates(mu, nu, L, dtype)
    lam = 1 - u - v
    scalar = np.ndim(mu) == 0 and (nu is None or np.ndim(nu) == 0)
    if scalar:
        k = jnp.arange(L + 1)
        mult = jnp.asarray([math.comb(L, int(i)) for i in range(L + 1)], dtype=dtype)
        return MutationSpectrum(lam[0] ** k.astype(dtype), mult)
    vals = jnp.ones((1,), dtype)
    for j in range(L):
        vals = jnp.kron(vals, jnp.stack([jnp.ones((), dtype), lam[j]]))
    return MutationSpectrum(vals, jnp.ones_like(vals))


# --------------------------------------------------------------------------------------------
# dynamics
# --------------------------------------------------------------------------------------------
class Trajectory(NamedTuple):
    """Result of :func:`evolve`.

    distribution: the final genotype distribution [2^L]; mean_fitness: f.x_t for t = 0..G
    [G+1]; master: x_t[master] [G+1]; classes: Hamming-class masses every ``save_every``
    generations ([G // save_every + 1, L+1]) or None; saved: the full distributions x_t at the
    generations ``save_at`` asked for, in that order ([len(save_at), 2^L]), or None.
    """

    distribution: jax.Array
    mean_fitness: jax.Array
    master: jax.Array
    classes: jax.Array | None
    saved: jax.Array | None = None


def _discrete_step(f, u, v, groups, native):
    """x -> (Q diag(f) x / (f . x), f . x)."""

    def step(x):
        return apply_q(x, f, u, v, 1, weighted=True, normalize=True, groups=groups,
                       native=native)

    return step


def _continuous_step(f, u, v, groups, native, dt):
    """x -> (D K D x / sum, None): the Strang step, D = exp(dt f / 2) (shifted)."""
    d = jnp.exp(0.5 * dt * (f - jnp.max(f)))  # exp(dt f / 2) up to a constant

    def step(x):
        y, _ = apply_q(x, d, u, v, 1, weighted=True, normalize=False, groups=groups,
                       native=native)
        z = d * y
        return z / jnp.sum(z), None

    return step


def _pow2(k, dtype):
    """2.0 ** k exactly, from the bit pattern (k an int array in the dtype's normal range)."""
    if jnp.dtype(dtype) == jnp.float64:
        return jax.lax.bitcast_convert_type((k.astype(jnp.int64) + 1023) << 52, jnp.float64)
    if jnp.dtype(dtype) == jnp.float32:
        return jax.lax.bitcast_convert_type((k.astype(jnp.int32) + 127) << 23, jnp.float32)
    return jnp.exp2(k.astype(dtype))


def scale_by_max(w):
    """(w / c, back) with c = 2^e >= max w a power of two and back(v) = v * c.

    Products and sums of raw weights overflow near the dtype's largest value (a fitness of 1e38
    in float32: f * x, f . n, the Chebyshev recurrence), while the quantities that matter are
    ratios. c is a power of two, so the scaling is exact, and it is applied as two factors
    2^-e1 2^-e2 because XLA turns a division by a scalar into a multiplication by its
    reciprocal, and 1 / 1e38 is subnormal in float32 (flushed to 0 on CPUs). c is a constant
    for autodiff (stop_gradient): results are exactly linear in w / c.
    """
    c = jax.lax.stop_gradient(jnp.max(w))
    _, e = jnp.frexp(jnp.where((c > 0) & jnp.isfinite(c), c, jnp.ones_like(c)))
    e1 = e // 2
    e2 = e - e1
    a, b = _pow2(e1, w.dtype), _pow2(e2, w.dtype)
    ws = w * _pow2(-e1, w.dtype) * _pow2(-e2, w.dtype)
    return ws, lambda v: v * a * b


def _scaled_fitness(f, model):
    """(f / c, back) for the discrete map (:func:`scale_by_max`), (f, identity) otherwise.

    The generation map x' = Q diag(f) x / (f . x) and its Perron vector do not change when f
    is scaled, and f . x scales with it: iterating with f / max f keeps every product finite
    for fitness up to the dtype's largest value (a peak of 1e38 in float32 turned the state
    into NaN); means are scaled back. The continuous model is not scale-invariant
    (diag(f) + G) and already works with exp(dt (f - max f)).
    """
    if model != "discrete":
        return f, lambda v: v
    return scale_by_max(f)


def _make_step(f, u, v, groups, native, model, dt):
    if model == "discrete":
        return _discrete_step(f, u, v, groups, native)
    uu, vv = _ck_rates(u, v, dt)
    return _continuous_step(f, uu, vv, groups, native, dt)


@partial(jax.jit, static_argnames=("groups", "native", "model", "master", "record", "size",
                                   "fixed"))
def _evolve_chunk(f, u, v, x, dt, n, t0, every, groups, native, model, master, record, size,
                  fixed):
    """n <= size generations from x (n, t0, every traced): one compiled program for every
    number of generations (:mod:`._chunks`)."""
    L = len(u)
    f, back = _scaled_fitness(f, model)
    step = _make_step(f, u, v, groups, native, model, dt)

    def one(x, _):
        xn, s = step(x)
        # the discrete step returns f . x (x before the step): no extra pass for the record
        return xn, (back(jnp.dot(f, x) if s is None else s), xn[master])

    def classes(x):
        return class_sum(relabel(x, L, master), L)

    start = (x[master], classes(x) if record else None)
    x, ys, recs = _chunks.loop(one, classes if record else None, x, n, t0, every, size, fixed)
    return x, ys, recs, start, back(jnp.dot(f, x))


def _evolve_kernel(f, u, v, x0, dt, generations, save_every, save_at, groups, native, model,
                   master):
    L = len(u)
    size = _chunks.chunk_size(1 << L)

    def chunk(x, n, t0, every, size, fixed):
        return _evolve_chunk(f, u, v, x, dt, n, t0, every, groups, native, model, master,
                             save_every is not None, size, fixed)

    x, (mf, xm), recs, (xm0, cl0), end, saved = _chunks.run(
        chunk, x0, generations, save_every, save_at, size, not is_concrete(f, u, v, x0, dt))
    classes = None if save_every is None else _chunks.cat(cl0[None], recs)
    return Trajectory(x, _chunks.cat(mf, end), _chunks.cat(xm0, xm), classes,
                      jnp.stack(saved) if saved else None)


def _initial(x0, f, L, dtype, name="x0"):
    if x0 is None:
        return jnp.full((1 << L,), 1.0 / (1 << L), dtype)
    if np.shape(x0) != (1 << L,):
        raise QuasirlValueError(f"{name} must have shape (2^L,) = ({1 << L},), got {np.shape(x0)}")
    a = check_numbers(name, x0)
    if a is not None:
        a = a.astype(np.float64)
        check_finite(name, a)
        check_nonnegative(name, a)
        if not (a * np.asarray(f, dtype=np.float64)).sum() > 0:
            raise QuasirlValueError(
                f"{name} must put mass on a genotype of positive fitness (f . {name} = 0)"
            )
    x0 = jnp.asarray(x0, dtype)
    return x0 / jnp.sum(x0)


def evolve(
    fitness, mu, generations: int, x0=None, *, nu=None, model: str = "discrete",
    dt: float = 0.1, save_every: int | None = None, save_at=None, master: int = 0, groups=None,
    kernel: str = "auto",
) -> Trajectory:
    """Iterate Eigen's quasispecies equation on the 2^L genotypes.

    model="discrete" (generations): x' = Q diag(f) x / (f . x) (Eigen 1971).
    model="continuous" (Crow-Kimura, ``generations`` steps of length dt):
    dx/dt = (diag(f) + G) x - (f . x) x, G = sum_j (site-j generator with rates mu, nu per unit
    time); each step is the Strang splitting exp(dt F/2) exp(dt G) exp(dt F/2) with exp(dt G)
    applied exactly as a Kronecker product (error O(dt^2) per unit time).
    fitness: [2^L] (non-negative); mu, nu: see :func:`mutate`; x0: start (default uniform);
    save_every=k also records the Hamming-class masses (relative to ``master``) every k steps;
    save_at=[t1, t2, ...] (generations 0..G) returns the full distributions x_t there
    (``Trajectory.saved``). groups, kernel: how Q is applied (see :func:`mutate`).
    The number of generations is a run-time value: the map runs in compiled chunks of a fixed
    number of steps, so a new ``generations`` (or ``save_every``, ``save_at``) compiles
    nothing; the first call with a new L or dtype compiles once.
    Only fitness ratios matter to the discrete map: it runs on f / 2^e >= max f (exact) and
    scales the mean fitness back, so fitness up to the dtype's largest value stays finite.
    """
    L = check_fitness(fitness)
    generations = check_int("generations", generations, minimum=0)
    if save_every is not None:
        save_every = check_int("save_every", save_every, minimum=1)
    check_model(model, dt)
    master = check_master(master, L)
    dtype = float_dtype(fitness, mu, nu, x0)
    f = jnp.asarray(fitness, dtype)
    u, v = site_rates(mu, nu, L, dtype)
    g = check_groups(groups, L)
    native = resolve_kernel(kernel, g, "sequence.evolve")
    x = _initial(x0, f, L, dtype)
    save_at = _chunks.check_save_at(save_at, generations, (1 << L) * jnp.dtype(dtype).itemsize)
    return _evolve_kernel(f, u, v, x, jnp.asarray(dt, dtype), generations, save_every, save_at,
                          g or default_groups(L, dtype), native, model, master)


# --------------------------------------------------------------------------------------------
# stationary state by power iteration
# --------------------------------------------------------------------------------------------
class Stationary:
    """Result of :func:`stationary`; unpacks as ``(distribution, mean_fitness)``.

    distribution: Perron vector of Q diag(f) (sum 1) [2^L]; mean_fitness: f . x (the Perron
    value); iterations: power steps taken; change: L1 change over the last step; rate: the
    estimated convergence factor per step |lambda_2 / lambda_1| (spectral gap = 1 - rate);
    error: estimated L1 distance to the fixed point, change * rate / (1 - rate);
    converged: error <= tol.
    """

    __slots__ = ("distribution", "mean_fitness", "iterations", "change", "rate", "error",
                 "converged")

    def __init__(self, distribution, mean_fitness, iterations, change, rate, error, converged):
        self.distribution = distribution
        self.mean_fitness = mean_fitness
        self.iterations = iterations
        self.change = change
        self.rate = rate
        self.error = error
        self.converged = converged

    def __iter__(self):
        return iter((self.distribution, self.mean_fitness))

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return (self.distribution, self.mean_fitness)[i]

    @property
    def spectral_gap(self):
        """1 - |lambda_2 / lambda_1| (estimated)."""
        return 1 - self.rate

    def __repr__(self):
        return (f"Stationary(mean_fitness={float(self.mean_fitness):.6g}, "
                f"iterations={int(self.iterations)}, rate={float(self.rate):.6g}, "
                f"error={float(self.error):.3g}, converged={bool(self.converged)})")


jax.tree_util.register_pytree_node(
    Stationary,
    lambda s: ((s.distribution, s.mean_fitness, s.iterations, s.change, s.rate, s.error,
                s.converged), None),
    lambda _, c: Stationary(*c),
)

CHECK_EVERY = 8
MAX_CHEB_ROUNDS = 32
MAX_CHEB_STEPS = 2048


def _amul(weight, u, v, groups, native):
    """z -> scale * Q diag(weight) z."""

    def amul(z, scale):
        return apply_q(z, weight, u, v, scale, weighted=True, normalize=False, groups=groups,
                       native=native)[0]

    return amul


def _power(amul, weight, x0, tol, max_iter, accelerate):
    """Power iteration of x -> A x / (weight . x), A = Q diag(weight), with Chebyshev rounds.

    Plain steps come in blocks of CHECK_EVERY; the L1 change d of the last step of each block
    is measured, the rate r = (d_k / d_{k-1})^(1/CHECK_EVERY) estimates |lambda_2/lambda_1|,
    and the distance to the fixed point is estimated by d r / (1 - r). Once r is stable it is
    frozen, and with ``accelerate`` the iteration alternates Chebyshev rounds (Saad 2011,
    Numerical Methods for Large Eigenvalue Problems, Alg. 7.1: a polynomial filter that damps
    the interval [0, b] holding lambda_2..lambda_n, b a little above r lambda_1; valid because
    the spectrum of Q diag(f) is real and >= 0 when every u_j + v_j <= 1) with plain blocks, so
    the stopping test is always made on plain power steps.
    """
    m = CHECK_EVERY
    dtype = x0.dtype
    one = jnp.asarray(1.0, dtype)

    def step(x):
        return amul(x, 1 / jnp.dot(weight, x))

    def plain(c):
        x, it, d_old, r_old, nblk, err, frozen, rounds, since = c
        x = jax.lax.fori_loop(0, m - 1, lambda _, y: step(y), x)
        xn = step(x)
        d = jnp.sum(jnp.abs(xn - x))
        ratio = jnp.where(d_old > 0, d / jnp.where(d_old > 0, d_old, 1), 0.0)
        r_new = jnp.clip(ratio ** (1.0 / m), 0.0, 1.0)
        stable = (nblk >= 2) & (jnp.abs(r_new - r_old) <= 0.02 * (1 - r_new))
        r = jnp.where(frozen, r_old, jnp.where(nblk > 0, r_new, r_old))
        frozen_n = frozen | (stable & (r_new < 1))
        have = (nblk > 0) | frozen
        err = jnp.where(d == 0, 0.0,
                        jnp.where(have & (r < 1), d * r / jnp.where(r < 1, 1 - r, 1), jnp.inf))
        return (xn, it + m, d, r, nblk + 1, err.astype(dtype), frozen_n, rounds, since + 1)

    def chebyshev(c):
        x, it, d, r, nblk, err, frozen, rounds, since = c
        lam1 = jnp.dot(weight, x)  # the Perron value estimate (x is normalised)
        b = lam1 * jnp.minimum(r + 0.25 * (1 - r), 0.999)
        half = b / 2  # interval [0, b]: centre = half width = b / 2
        sigma1 = half / (lam1 - half)
        t1 = 1 / sigma1
        rho = jnp.clip(tol / (10 * jnp.maximum(err, tol)), 1e-30, 0.5)
        k = jnp.ceil(jnp.arccosh(1 / rho) / jnp.arccosh(t1))
        k = jnp.clip(k, 8, MAX_CHEB_STEPS).astype(jnp.int32)
        k = jnp.minimum(k, jnp.maximum(max_iter - it, 1))
        z1 = (sigma1 / half) * (amul(x, one) - half * x)

        def body(_, carry):
            zp, z, s = carry
            s_n = 1 / (2 / sigma1 - s)
            zn = 2 * (s_n / half) * (amul(z, one) - half * z) - s * s_n * zp
            return z, zn, s_n

        _, z, _ = jax.lax.fori_loop(1, k, body, (x, z1, sigma1))
        xn = z / jnp.sum(z)
        return (xn, it + k, d, r, nblk, err, frozen, rounds + 1, jnp.int32(0))

    def cond(c):
        it, err = c[1], c[5]
        return (it < max_iter) & ~(err <= tol)

    def body(c):
        frozen, rounds, since, err, r = c[6], c[7], c[8], c[5], c[3]
        go = accelerate & frozen & (since >= 1) & (rounds < MAX_CHEB_ROUNDS) & (r < 0.999)
        go = go & jnp.isfinite(err)
        return jax.lax.cond(go, chebyshev, plain, c)

    init = (x0, jnp.int32(0), jnp.asarray(jnp.inf, dtype), one, jnp.int32(0),
            jnp.asarray(jnp.inf, dtype), jnp.asarray(False), jnp.int32(0), jnp.int32(1))
    x, it, d, r, _, err, _, rounds, _ = jax.lax.while_loop(cond, body, init)
    x = jnp.maximum(x, 0)  # rounding-level negatives a Chebyshev round can leave
    return x / jnp.sum(x), it, d, r, err


@partial(jax.jit, static_argnames=("groups", "native", "model", "accelerate"))
def stationary_kernel(f, u, v, x0, tol, max_iter, dt, groups, native, model, accelerate):
    if model == "discrete":
        weight, _ = _scaled_fitness(f, model)  # the Perron vector is invariant to the scale
        uu, vv = u, v
    else:
        # iterate w -> K E w with E = exp(dt f) (shifted): the Strang map x -> D K D x is
        # similar to it, x = D w with D = exp(dt f / 2)
        uu, vv = _ck_rates(u, v, dt)
        weight = jnp.exp(dt * (f - jnp.max(f)))
        d_half = jnp.exp(0.5 * dt * (f - jnp.max(f)))
        # any positive start serves the power iteration; x0 itself avoids dividing by d_half
    ok = accelerate & jnp.all(uu + vv <= 1)  # else the spectrum can be negative
    amul = _amul(weight, uu, vv, groups, native)
    x, it, d, r, err = _power(amul, weight, x0, tol, max_iter, ok)
    if model == "continuous":
        x = d_half * x
        x = x / jnp.sum(x)
    return Stationary(x, jnp.dot(f, x), it, d, r, err, err <= tol)


def stationary(
    fitness, mu, *, nu=None, tol: float | None = None, max_iter: int = 100_000, x0=None,
    model: str = "discrete", dt: float = 0.1, accelerate: bool = True, groups=None,
    kernel: str = "auto",
) -> Stationary:
    """Stationary quasispecies: the Perron vector of Q diag(f) by power iteration.

    Returns a :class:`Stationary` that unpacks as ``(distribution [2^L], mean_fitness)``; its
    ``mean_fitness`` f . x is the Perron value, and it also reports ``iterations``, the
    estimated convergence ``rate`` |lambda_2/lambda_1| of plain power iteration (the spectral
    gap is 1 - rate) and the estimated L1 ``error``. Iteration stops when the estimated
    distance to the fixed point, change * rate / (1 - rate), measured on plain power steps, is
    at most ``tol`` (default 1e-12 in float64, 1e-5 in float32), or after ``max_iter`` steps
    (then ``converged`` is False). With ``accelerate`` (default), once the rate estimate is
    stable the iteration alternates Chebyshev rounds, which damp lambda_2..lambda_n together
    (about sqrt(2 gap) per step instead of gap), with plain checking blocks; this needs the
    spectrum of Q diag(f) to be real and >= 0, which holds whenever mu_j + nu_j <= 1 (else
    plain power iteration is used).
    fitness: [2^L]; mu, nu: see :func:`mutate`; x0: start (default uniform).
    model="continuous": Crow-Kimura stationary state of the Strang-split step of length dt
    (an O(dt^2) approximation of the Perron vector of diag(f) + G; see :func:`evolve`).
    groups, kernel: how Q is applied (see :func:`mutate`). Fitness up to the dtype's largest
    value is fine (the iteration runs on f / 2^e >= max f; see :func:`evolve`).
    """
    L = check_fitness(fitness)
    max_iter = check_int("max_iter", max_iter, minimum=1)
    check_model(model, dt)
    dtype = float_dtype(fitness, mu, nu, x0)
    f = jnp.asarray(fitness, dtype)
    u, v = site_rates(mu, nu, L, dtype)
    tol = check_tol(tol, dtype)
    if not isinstance(accelerate, bool | np.bool_):
        raise QuasirlValueError(f"accelerate must be True or False, got {accelerate!r}")
    g = check_groups(groups, L)
    native = resolve_kernel(kernel, g, "sequence.stationary")
    x = _initial(x0, f, L, dtype)
    return stationary_kernel(f, u, v, x, jnp.asarray(tol, dtype), jnp.int32(max_iter),
                              jnp.asarray(dt, dtype), g or default_groups(L, dtype), native,
                              model, bool(accelerate))
