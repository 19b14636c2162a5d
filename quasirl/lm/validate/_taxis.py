"""The T axis of the weights channel: each round's model answered at several temperatures.

Selection by training could act like lowering the sampling temperature (sharpening the answer
law toward the model's own greedy answer: the error at T = 1 falls toward the base model's
greedy error while the greedy error stays put), or it could do more (move the mode: the greedy
error changes too). After Exp 3, every saved model (the base model as round 0, then each arm's
round 1 .. R) answers the same held-out queries (Exp 2's pool, after k gold demonstrations)
greedily and at each T > 0; the error per (arm, round, T) gets a query cluster bootstrap
interval, paired across arms, rounds and temperatures since the queries are shared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..._validate import QuasirlValueError, check_int
from .._chaining import checked_samples
from .._records import RecordLog
from .._stats import cluster_weights, percentile_ci
from .._tasks import Task
from .._types import sample_seed
from ._design import Pools, items_of

TEMPERATURES = (0.0, 0.5, 1.0)


def round_models(adapters, arms) -> list[tuple[str, int, Path | None]]:
    """(arm, round, weights folder) of every saved model: ("base", 0, None) first."""
    out: list[tuple[str, int, Path | None]] = [("base", 0, None)]
    for arm in arms:
        folder = Path(adapters) / arm
        rounds = sorted(int(p.name.split("-")[1]) for p in folder.glob("round-*")
                        if p.is_dir() and p.name.split("-")[1].isdigit())
        out += [(arm, r, folder / f"round-{r}") for r in rounds]
    return out


def collect_temperature_axis(lm, task: Task, tuner, adapters, *, arms, pools: Pools,
                             temperatures=TEMPERATURES, samples_per_query: int = 2,
                             k: int = 4, max_tokens: int = 12, seed: int = 0,
                             records=None, progress=None) -> list[dict]:
    """Answers of every saved model to the Exp 2 pool at each temperature (greedy: one)."""
    temps = [float(t) for t in temperatures]
    if not temps or any(not (np.isfinite(t) and t >= 0) for t in temps):
        raise QuasirlValueError(f"temperatures must be finite and >= 0, got {temperatures!r}")
    n_per = check_int("samples_per_query", samples_per_query, 1)
    models = round_models(adapters, arms)
    demos = items_of(task, pools.demos)
    queries = items_of(task, pools.exp2)
    meta = {"kind": "temperature_axis", "lm": lm.name, "task": task.name,
            "task_fingerprint": task.fingerprint(), "temperatures": temps,
            "samples_per_query": n_per, "k": int(k), "max_tokens": int(max_tokens),
            "seed": int(seed), "queries": list(pools.exp2)}
    with RecordLog(records, meta, ("arm", "round", "ti", "qid", "sample")) as log:
        for arm, r, folder in models:
            loaded = False
            for ti, t in enumerate(temps):
                n = 1 if t == 0 else n_per
                for q, item in enumerate(queries):
                    if all(log.has(arm, r, ti, item.id, j) for j in range(n)):
                        continue
                    if not loaded:
                        tuner.reset() if folder is None else tuner.load(folder)
                        loaded = True
                    rng = np.random.default_rng(sample_seed(seed, 404, q, 1))
                    ctx = [demos[i] for i in sorted(rng.choice(len(demos), size=k,
                                                               replace=False))]
                    prompt = task.prompt(item, [(d, d.answer) for d in ctx])
                    gseed = sample_seed(seed, 404, ti, q)
                    samples = checked_samples(
                        lm.generate([prompt], n=n, temperature=t, max_tokens=max_tokens,
                                    stop=("\n",), seed=gseed)[0], n,
                        f"backend {lm.name}, T axis {arm} round {r} T = {t}, query {q}")
                    for j, s in enumerate(samples):
                        if not log.has(arm, r, ti, item.id, j):
                            log.append({"arm": arm, "round": r, "ti": ti, "T": t, "q": q,
                                        "qid": item.id, "sample": j, "text": s.text,
                                        "correct": bool(task.check(item, s.text)),
                                        "seed": gseed})
                    if progress is not None:
                        progress(len(samples))
        return sorted(log.records, key=lambda x: (x["arm"] != "base", x["arm"], x["round"],
                                                  x["ti"], x["q"], x["sample"]))


def analyze_temperature_axis(records, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """eps per (arm, round, T) with 95% query cluster bootstrap intervals (paired draws).

    Returns {"temperatures", "rows": [{arm, round, T, n, eps, eps_ci}], "mode_shift":
    [{arm, round, d_greedy, d_greedy_ci, d_t1, d_t1_ci}]}: the change of the greedy error and
    of the T = 1 error from the base model, per arm and round (each with its interval)."""
    if not records:
        raise QuasirlValueError("records is empty: nothing to analyse")
    qids = sorted({x["qid"] for x in records})
    col = {q: i for i, q in enumerate(qids)}
    w, _ = cluster_weights(np.arange(len(qids)), n_boot, sample_seed(seed, 404))
    cells: dict[tuple, np.ndarray] = {}
    for x in records:
        key = (x["arm"], int(x["round"]), float(x["T"]))
        cells.setdefault(key, np.zeros((2, len(qids))))
        cells[key][0, col[x["qid"]]] += not x["correct"]
        cells[key][1, col[x["qid"]]] += 1
    point, draws = {}, {}
    for key, (wrong, n) in cells.items():
        with np.errstate(invalid="ignore", divide="ignore"):
            point[key] = float(wrong.sum() / n.sum())
            draws[key] = (w @ wrong) / (w @ n)
    rows = [{"arm": a, "round": r, "T": t, "n": int(cells[a, r, t][1].sum()),
             "eps": point[a, r, t], "eps_ci": list(percentile_ci(draws[a, r, t]))}
            for a, r, t in sorted(cells, key=lambda c: (c[0] != "base", c[0], c[1], c[2]))]
    shift = []
    temps = sorted({k[2] for k in cells})
    for a, r, _ in sorted({(a, r, 0) for a, r, _ in cells if a != "base"}):
        row = {"arm": a, "round": r}
        for name, t in (("greedy", 0.0), ("t1", 1.0)):
            if (a, r, t) in cells and ("base", 0, t) in cells:
                d = draws[a, r, t] - draws["base", 0, t]
                row[f"d_{name}"] = point[a, r, t] - point["base", 0, t]
                row[f"d_{name}_ci"] = list(percentile_ci(d))
        shift.append(row)
    return {"temperatures": temps, "rows": rows, "mode_shift": shift, "n_queries": len(qids)}
