"""GPU kernels against the same kernels on the host CPU: relative error per kernel.

    python -m benchmarks.gpu_check --out DIR [--small]

Runs each kernel twice in one process, once on the default device (the GPU) and once on the
CPU backend, both in float32, and writes gpu_check.json: the relative error
max |gpu - cpu| / max |cpu| per kernel and whether it is within float32 tolerance (1e-4: the
reductions run in different orders on the two devices, over up to 1000 steps). With
``JAX_PLATFORMS=cpu`` both runs are on the CPU (a dry run of the script).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

TOL = 1e-4


def _on(device, fn, *args):
    args = jax.device_put(args, device)
    with jax.default_device(device):
        return np.asarray(jax.block_until_ready(fn(*args)), np.float64)


def cases(small: bool):
    import quasirl as qr

    from .b2_dense import dense_mdp
    from .b4_kernels import expspace_free_energy

    side, H, B = (30, 40, 8) if small else (300, 300, 32)
    grid = qr.gridworld(side, side, dtype=np.float32)
    T = jnp.asarray(np.geomspace(0.01, 10.0, B), jnp.float32)
    Tc = jnp.asarray(np.geomspace(0.05, 1.0, B), jnp.float32)
    dense = dense_mdp(64 if small else 512, 4)
    out = [
        ("free_energy gridworld", lambda m, t: qr.free_energy(m, t, H), (grid, T)),
        ("max-plus T = 0", lambda m: qr.optimal_value(m, H), (grid,)),
        ("dF/dR (forward-backward)",
         lambda m, t: jax.grad(lambda r: qr.free_energy(m.replace(reward=r), t, H // 4).sum())(
             m.reward), (grid, T)),
        ("exp-space kernel", lambda m, t: expspace_free_energy(m, t, H), (grid, Tc)),
        ("free_energy dense", lambda m, t: qr.free_energy(m, t, 5), (dense, T[:8])),
    ]
    try:
        from quasirl import sequence

        L = 10 if small else 20
        f = sequence.single_peak(L, 2.0)
        out.append((f"sequence.stationary L = {L}",
                    lambda f: sequence.stationary(f, 0.01)[0], (jnp.asarray(f, jnp.float32),)))
    except (ImportError, AttributeError, TypeError) as exc:
        print(f"(sequence kernels not checked: {exc})", file=sys.stderr)
    return out


def run(small: bool = False) -> dict:
    from ._harness import rel_err

    gpu = jax.devices()[0]
    cpu = jax.devices("cpu")[0]
    rows = []
    for name, fn, args in cases(small):
        t0 = time.perf_counter()
        a = _on(gpu, fn, *args)
        b = _on(cpu, fn, *args)
        err = rel_err(a, b)
        rows.append({"kernel": name, "rel_err": err, "ok": bool(err <= TOL),
                     "seconds": time.perf_counter() - t0})
        print(f"  {name:32s} rel err {err:.2e} {'ok' if err <= TOL else 'FAIL'}", flush=True)
    return {"device": getattr(gpu, "device_kind", str(gpu)), "platform": gpu.platform,
            "tolerance": TOL, "checks": rows, "all_ok": all(r["ok"] for r in rows)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--small", action="store_true", help="tiny sizes (dry run on a CPU)")
    a = p.parse_args(argv)
    rec = run(a.small)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(rec, indent=1))
    return 0 if rec["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
