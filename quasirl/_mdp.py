"""The MDP model: sparse successor lists, held as an immutable JAX pytree.

An MDP with S states and A actions is stored as padded successor lists

    next[S, A, K]  int32    successor state of outcome k of action a in state s
    prob[S, A, K]  float    P(next | s, a)  (0 on padding)
    reward[S, A, K] float   R(s, a, next)   (0 on padding)
    init[S], policy[S, A]   start distribution and exploration policy (uniform by default)

with K the largest branching (K = 1 for deterministic MDPs), so a 10^6-state gridworld never
needs a dense S x A x S array. The kernels also need the reverse lists: ``pred[S', J]`` holds,
for each state s', the flat indices (into the S*A*K outcome table) of the transitions that
enter s'; a sentinel S*A*K pads it. ``pred`` is derived from ``next`` and ``prob`` once, when
the MDP is built from concrete arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate as V


def _reverse_lists(next_, prob, S):
    """pred[S', J]: flat outcome indices entering each state (only outcomes with prob > 0)."""
    nxt = np.asarray(next_).reshape(-1)
    live = np.asarray(prob).reshape(-1) > 0
    flat = np.flatnonzero(live)
    dest = nxt[flat]
    order = np.argsort(dest, kind="stable")
    flat, dest = flat[order], dest[order]
    counts = np.bincount(dest, minlength=S)
    J = max(int(counts.max()) if counts.size else 0, 1)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(flat.size) - np.repeat(start, counts)
    pred = np.full((S, J), nxt.size, dtype=np.int32)
    pred[dest, slot] = flat
    return pred


@jax.tree_util.register_pytree_node_class
class MDP:
    """A finite MDP with exploration policy, as a pytree of arrays.

    ``MDP(P, R, init=None, policy=None)``: P[S, A, S'] transition probabilities, R[S, A, S'] or
    R[S, A] rewards (broadcast over S'), init[S] the start distribution and policy[S, A] the
    exploration policy; both default to uniform. Dense P is converted to successor lists holding
    only the outcomes with P > 0. If P is a JAX tracer (built inside a transformation) every
    outcome is kept (K = S). Validation runs only on concrete inputs: rows of P must sum to 1
    within 1e-6, entries must be finite and non-negative, init and policy must be
    distributions; errors name the argument and the first offending index.
    """

    __slots__ = ("next", "prob", "reward", "init", "policy", "pred")

    def __init__(self, P, R, init=None, policy=None):
        concrete_P = V.is_concrete(P)
        P_ = np.asarray(P) if concrete_P else P
        if np.ndim(P_) != 3:
            raise V.QuasirlValueError(f"P must have shape [S, A, S'], got shape {np.shape(P_)}")
        S, A, S2 = np.shape(P_)
        if S2 != S:
            raise V.QuasirlValueError(
                f"P must have shape [S, A, S'] with S' = S, got shape {np.shape(P_)}"
            )
        V.check_size("P", S, "state (S >= 1)")
        V.check_size("P", A, "action (A >= 1)")
        V.check_real("P", P)
        V.check_real("R", R)
        if concrete_P:
            V.check_distribution("P", P_, axis=-1)
        Rshape = np.shape(R)
        if Rshape not in ((S, A, S), (S, A)):
            raise V.QuasirlValueError(
                f"R must have shape [S, A, S'] = {(S, A, S)} or [S, A] = {(S, A)}, got {Rshape}"
            )
        if V.is_concrete(R):
            V.check_finite("R", R)
        dt = V.float_dtype(P, R)
        R = jnp.asarray(R, dtype=dt)
        if concrete_P:
            live = P_ > 0
            K = max(int(live.sum(-1).max()), 1)
            # Outcomes with P > 0 first (stable order), padding points back to s with P = 0.
            order = np.argsort(~live, axis=-1, kind="stable")[..., :K]
            nxt = order.astype(np.int32)
            prob = np.take_along_axis(P_, order, axis=-1)
            pad = prob <= 0
            nxt = np.where(pad, np.arange(S, dtype=np.int32)[:, None, None], nxt)
            prob = np.where(pad, 0.0, prob)
            prob = prob.astype(dt)  # numpy: the structure stays concrete even under jit
        else:
            K = S
            nxt = jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32), (S, A, S))
            prob = jnp.asarray(P, dtype=dt)
        if R.ndim == 2:
            rew = jnp.broadcast_to(R[:, :, None], (S, A, K))
        else:
            rew = jnp.take_along_axis(R, nxt, axis=-1)
        rew = jnp.where(prob > 0, rew, 0.0)
        self._set(nxt, prob, rew, init, policy, dt)

    # -- construction helpers -------------------------------------------------------------
    def _set(self, nxt, prob, rew, init, policy, dt, pred=None):
        S, A, K = nxt.shape
        init = self._default_init(init, S, dt)
        policy = self._default_policy(policy, S, A, dt)
        if pred is None:
            if V.is_concrete(nxt, prob):
                pred = _reverse_lists(np.asarray(nxt), np.asarray(prob), S)
            elif K == S:
                # Structure unknown (traced): every outcome may enter every state.
                flat = jnp.arange(S * A * K, dtype=jnp.int32).reshape(S * A, K)
                pred = jnp.transpose(flat)
            else:
                raise V.QuasirlValueError(
                    "an MDP with traced successor lists needs K = S (dense); build it from "
                    "concrete next/prob arrays"
                )
        object.__setattr__(self, "next", jnp.asarray(nxt, dtype=jnp.int32))
        object.__setattr__(self, "prob", jnp.asarray(prob, dtype=dt))
        object.__setattr__(self, "reward", jnp.asarray(rew, dtype=dt))
        object.__setattr__(self, "init", init)
        object.__setattr__(self, "policy", policy)
        object.__setattr__(self, "pred", jnp.asarray(pred, dtype=jnp.int32))

    @staticmethod
    def _default_init(init, S, dt):
        if init is None:
            return jnp.full((S,), 1.0 / S, dtype=dt)
        V.check_real("init", init)
        V.check_shape("init", init, (S,), "[S]")
        if V.is_concrete(init):
            V.check_distribution("init", init)
        return jnp.asarray(init, dtype=dt)

    @staticmethod
    def _default_policy(policy, S, A, dt):
        if policy is None:
            return jnp.full((S, A), 1.0 / A, dtype=dt)
        V.check_real("policy", policy)
        V.check_shape("policy", policy, (S, A), "[S, A]")
        if V.is_concrete(policy):
            V.check_distribution("policy", policy, what="row (state)")
        return jnp.asarray(policy, dtype=dt)

    @classmethod
    def from_successors(cls, next_state, prob, reward, init=None, policy=None):
        """Build from padded successor lists next[S,A,K], prob[S,A,K], reward[S,A,K].

        Padding entries have prob = 0; their next/reward are ignored.
        """
        if np.ndim(next_state) != 3:
            raise V.QuasirlValueError(
                f"next_state must have shape [S, A, K], got shape {np.shape(next_state)}"
            )
        S, A, K = np.shape(next_state)
        V.check_size("next_state", S, "state (S >= 1)")
        V.check_size("next_state", A, "action (A >= 1)")
        V.check_size("next_state", K, "outcome (K >= 1)")
        V.check_shape("prob", prob, (S, A, K), "[S, A, K]")
        V.check_shape("reward", reward, (S, A, K), "[S, A, K]")
        V.check_real("prob", prob)
        V.check_real("reward", reward)
        if V.is_concrete(next_state):
            nx = np.asarray(next_state)
            if not np.issubdtype(nx.dtype, np.integer):
                raise V.QuasirlValueError(f"next_state must be integers, got dtype {nx.dtype}")
            bad = (nx < 0) | (nx >= S)
            if bad.any():
                idx = np.argwhere(bad)[0]
                raise V.QuasirlValueError(
                    f"next_state must lie in [0, {S}), but next_state{V._index(idx)} = "
                    f"{nx[tuple(idx)]}"
                )
        if V.is_concrete(prob):
            V.check_distribution("prob", prob, axis=-1)
        if V.is_concrete(reward):
            V.check_finite("reward", reward)
        dt = V.float_dtype(prob, reward)
        # Keep concrete structure as numpy: inside jit, jnp.asarray of a constant is a tracer
        # and the reverse lists could no longer be derived.
        prob = np.asarray(prob, dtype=dt) if V.is_concrete(prob) else jnp.asarray(prob, dt)
        nxt = (np.asarray(next_state, dtype=np.int32) if V.is_concrete(next_state)
               else jnp.asarray(next_state, dtype=jnp.int32))
        rew = jnp.where(prob > 0, jnp.asarray(reward, dtype=dt), 0.0)
        self = object.__new__(cls)
        self._set(nxt, prob, rew, init, policy, dt)
        return self

    @classmethod
    def deterministic(cls, next_state, reward, init=None, policy=None):
        """A deterministic MDP: next_state int[S, A], reward float[S, A] (K = 1)."""
        if np.ndim(next_state) != 2:
            raise V.QuasirlValueError(
                f"next_state must have shape [S, A], got shape {np.shape(next_state)}"
            )
        S, A = np.shape(next_state)
        V.check_size("next_state", S, "state (S >= 1)")
        V.check_size("next_state", A, "action (A >= 1)")
        V.check_shape("reward", reward, (S, A), "[S, A]")
        V.check_real("reward", reward)
        nx = next_state if not V.is_concrete(next_state) else np.asarray(next_state)
        rw = reward if not V.is_concrete(reward) else np.asarray(reward)
        dt = V.float_dtype(reward)
        return cls.from_successors(
            jnp.asarray(nx)[..., None] if not isinstance(nx, np.ndarray) else nx[..., None],
            np.ones((S, A, 1), dtype=dt),
            jnp.asarray(rw)[..., None] if not isinstance(rw, np.ndarray) else rw[..., None],
            init=init,
            policy=policy,
        )

    # -- pytree protocol --------------------------------------------------------------------
    def tree_flatten(self):
        return (self.next, self.prob, self.reward, self.init, self.policy, self.pred), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        self = object.__new__(cls)
        for name, value in zip(cls.__slots__, children, strict=True):
            object.__setattr__(self, name, value)
        return self

    def __setattr__(self, name, value):
        raise AttributeError("MDP is immutable; use .replace(...)")

    def __reduce__(self):
        # Pickle (Dask, multiprocessing) through the pytree protocol, as numpy arrays.
        leaves = tuple(np.asarray(x) for x in self.tree_flatten()[0])
        return (_unpickle, (type(self), leaves))

    def replace(self, *, reward=None, init=None, policy=None):
        """A copy with new parameters on the same structure (rewards [S,A,K], init, policy)."""
        S, A, K = self.shape
        dt = self.prob.dtype
        new = object.__new__(type(self))
        if reward is not None:
            V.check_real("reward", reward)
        rew = self.reward if reward is None else jnp.asarray(reward, dtype=dt)
        if reward is not None:
            V.check_shape("reward", reward, (S, A, K), "[S, A, K]")
            if V.is_concrete(reward):
                V.check_finite("reward", reward)
            rew = jnp.where(self.prob > 0, rew, 0.0)
        new._set(
            self.next,
            self.prob,
            rew,
            self.init if init is None else init,
            self.policy if policy is None else policy,
            dt,
            pred=self.pred,
        )
        return new

    # -- views ------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """(S, A, K)."""
        return tuple(self.next.shape)

    @property
    def num_states(self) -> int:
        return self.next.shape[0]

    @property
    def num_actions(self) -> int:
        return self.next.shape[1]

    @property
    def is_deterministic(self) -> bool:
        return self.next.shape[2] == 1

    def dense(self):
        """(P[S,A,S'], R[S,A,S']) as dense numpy arrays (small MDPs only).

        Two outcomes of one (s, a) that enter the same state are merged (their probabilities
        add). That is exact only when they carry the same reward: the path weight of the pair
        is p1 exp(r1/T) + p2 exp(r2/T), which no single R[s, a, s'] gives at every T, so
        differing rewards raise instead of keeping one of them.
        """
        S, A, K = self.shape
        P = np.zeros((S, A, S))
        R = np.zeros((S, A, S))
        seen = np.zeros((S, A, S), dtype=bool)
        nx = np.asarray(self.next)
        pr = np.asarray(self.prob, dtype=np.float64)
        rw = np.asarray(self.reward, dtype=np.float64)
        s_idx, a_idx = np.meshgrid(np.arange(S), np.arange(A), indexing="ij")
        for k in range(K):
            np.add.at(P, (s_idx, a_idx, nx[:, :, k]), pr[:, :, k])
            live = pr[:, :, k] > 0
            at = (s_idx[live], a_idx[live], nx[:, :, k][live])
            clash = seen[at] & (R[at] != rw[:, :, k][live])
            if clash.any():
                i = int(np.flatnonzero(clash)[0])
                s, a, t = (int(x[i]) for x in at)
                raise V.QuasirlValueError(
                    f"dense(): two outcomes of (state {s}, action {a}) enter state {t} with "
                    f"different rewards ({R[s, a, t]!r} and {rw[:, :, k][live][i]!r}); a dense "
                    f"R[S, A, S'] cannot hold both. Keep the successor lists (the MDP itself), "
                    f"or split the target state"
                )
            R[at] = rw[:, :, k][live]
            seen[at] = True
        return P, R

    def __repr__(self) -> str:
        S, A, K = self.shape
        return f"MDP(S={S}, A={A}, K={K}, dtype={self.prob.dtype})"


def _unpickle(cls, leaves):
    return cls.tree_unflatten(None, tuple(jnp.asarray(x) for x in leaves))
