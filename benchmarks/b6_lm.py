"""B6: throughput of the LM bridge against llama.cpp's raw rate on the same tokens.

For each packaged model (llama.cpp backend) the bridge generates ``n`` samples for a few-shot
capitals prompt and scores the 5-point scale's labels as complete answers after evaluation
prompts; the raw reference evaluates exactly the same token sequences with llama-cpp-python's
own ``Llama.eval`` (prompt once, then each sample's tokens one at a time / each label's tokens
in one batch after the shared prompt), with nothing else: no sampling, no log-softmax, no
Python bookkeeping. Reported: samples/s, scored tokens/s, and the ratio bridge time / raw time
(the target is <= 2). Min of ``repeats`` runs. Writes benchmarks/results/b6_lm.json.

    python -m benchmarks.b6_lm [--models gemma3-270m,smollm2-135m] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def _raw_generate(llm, pids, samples) -> float:
    t0 = time.perf_counter()
    llm.reset()
    llm._ctx.kv_cache_clear()
    llm.eval(pids)
    for s in samples:
        llm.n_tokens = len(pids)
        llm._ctx.kv_cache_seq_rm(-1, len(pids), -1)
        for t in s.token_ids:  # the bridge evaluates each kept token once
            llm.eval([t])
    return time.perf_counter() - t0


def _raw_score(llm, jobs) -> float:
    t0 = time.perf_counter()
    llm.reset()
    llm._ctx.kv_cache_clear()
    for pids, conts in jobs:
        llm.n_tokens = 0
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        llm.eval(pids)
        for c in conts:
            llm.n_tokens = len(pids)
            llm._ctx.kv_cache_seq_rm(-1, len(pids), -1)
            llm.eval(c)
    return time.perf_counter() - t0


def bench_model(name: str, repeats: int, n: int, max_tokens: int, n_eval: int) -> dict:
    import quasirl.lm as qlm

    task = qlm.capitals()
    items = [task.item(i) for i in ("france", "japan", "peru", "kenya", "egypt")]
    demos = [(task.item("germany"), "Berlin"), (task.item("italy"), "Rome")]
    prompt = task.prompt(items[0], demos)
    evals = [task.eval_prompt(it, it.answer, qlm.FIVE_POINT.question) for it in
             items[:n_eval]]
    labels = qlm.FIVE_POINT.labels
    best = {"gen": np.inf, "gen_raw": np.inf, "score": np.inf, "score_raw": np.inf}
    for _ in range(repeats):
        lm = qlm.load(name)  # fresh caches each repeat
        lm.end_ids(("\n",))  # a once-per-model table, not part of the per-call cost
        t0 = time.perf_counter()
        samples = lm.generate([prompt], n=n, temperature=1.0, max_tokens=max_tokens,
                              seed=0)[0]
        best["gen"] = min(best["gen"], time.perf_counter() - t0)
        pids = lm.tokenize(prompt, bos=True)
        gen_tokens = len(pids) + sum(s.n_tokens for s in samples)
        best["gen_raw"] = min(best["gen_raw"], _raw_generate(lm.llm, pids, samples))
        t0 = time.perf_counter()
        qlm.label_probs(lm, evals, labels, end=qlm.FIVE_POINT.end)
        best["score"] = min(best["score"], time.perf_counter() - t0)
        jobs = [(lm.tokenize(e, bos=True), [lm.tokenize(c, bos=False) for c in labels])
                for e in evals]
        score_tokens = sum(len(p) + sum(len(c) for c in cs) for p, cs in jobs)
        best["score_raw"] = min(best["score_raw"], _raw_score(lm.llm, jobs))
    return {
        "model": name, "samples": n, "gen_tokens_evaluated": gen_tokens,
        "gen_s": best["gen"], "gen_raw_s": best["gen_raw"],
        "samples_per_s": n / best["gen"], "gen_tokens_per_s": gen_tokens / best["gen"],
        "gen_raw_tokens_per_s": gen_tokens / best["gen_raw"],
        "gen_ratio": best["gen"] / best["gen_raw"],
        "label_scorings": len(evals) * len(labels), "score_tokens_evaluated": score_tokens,
        "score_s": best["score"], "score_raw_s": best["score_raw"],
        "score_tokens_per_s": score_tokens / best["score"],
        "score_raw_tokens_per_s": score_tokens / best["score_raw"],
        "score_ratio": best["score"] / best["score_raw"],
    }


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="gemma3-270m,smollm2-135m")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=6)
    ap.add_argument("--n-eval", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "b6_lm.json"))
    a = ap.parse_args(argv)
    rows = [bench_model(m, a.repeats, a.n, a.max_tokens, a.n_eval)
            for m in a.models.split(",")]
    print(f"{'model':14s} {'samples/s':>9s} {'gen tok/s':>9s} {'raw tok/s':>9s} {'ratio':>6s}"
          f" {'score tok/s':>11s} {'raw tok/s':>9s} {'ratio':>6s}")
    for r in rows:
        print(f"{r['model']:14s} {r['samples_per_s']:9.2f} {r['gen_tokens_per_s']:9.1f} "
              f"{r['gen_raw_tokens_per_s']:9.1f} {r['gen_ratio']:6.2f} "
              f"{r['score_tokens_per_s']:11.1f} {r['score_raw_tokens_per_s']:9.1f} "
              f"{r['score_ratio']:6.2f}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                               "cpus": len(os.sched_getaffinity(0)),
                               "load_average": os.getloadavg()[0], "rows": rows},
                              indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
