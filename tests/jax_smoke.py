"""What quasirl needs of JAX, in one process: the native kernels (forward, reverse and forward
mode, second order, vmap, occupancy, Eigen's operator) and the XLA paths. Run by
tests/test_jax_bound.py under the oldest JAX that pyproject.toml admits; prints one JSON line.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np

import quasirl as qr

st = qr.kernel_status()
mdp = qr.gridworld(6, 5, dtype=np.float32)
T = jnp.asarray([0.0, 0.1, 1.0], jnp.float32)


def f(r, kernel="auto"):
    return jnp.sum(qr.free_energy(mdp.replace(reward=r), T, 9, kernel=kernel))


g = jax.grad(f)(mdp.reward)
gx = jax.grad(lambda r: f(r, "xla"))(mdp.reward)
_, jv = jax.jvp(f, (mdp.reward,), (mdp.reward,))
h = jax.hessian(lambda t: jnp.sum(qr.free_energy(mdp, t, 5)))(T[1:])
vm = jax.vmap(jax.grad(f))(jnp.stack([mdp.reward, -mdp.reward]))
occ = qr.occupancy(mdp, 0.5, 9)
x = qr.sequence.stationary(qr.sequence.single_peak(10, 3.0).astype(np.float32), 0.01)
print(json.dumps({"jax": jax.__version__, "native": st["in_use"], "occupancy": float(occ.sum()),
                  "grad_vs_xla": float(jnp.abs(g - gx).max()), "mass": float(x.distribution.sum()),
                  "finite": bool(np.isfinite(np.asarray(h)).all() and
                                 np.isfinite(np.asarray(vm)).all() and np.isfinite(float(jv)))}))
