"""B8: one round of LoRA training on ~100 short pairs (issue 19), against torch's own rate.

For each model (transformers backend, float32 on CPU) :class:`quasirl.lm.FineTuner` trains
LoRA adapters (rank 8 on q, k, v, o) on ``--pairs`` capitals pairs in the loop's prompt format
(4 gold demonstrations, then the query; ~45 tokens), ``--epochs`` passes of batches of 8: the
size of a round of the weights channel. The reference trains the same adapters on the same
padded batches with a bare torch loop (cross-entropy in float32, AdamW, no weights, no checks),
the way a plain Hugging Face training loop computes its loss (logits at every position); the
tuner applies the output layer at the answer positions only, so a ratio below 1 is that saving
(large for Gemma 3's 262k-token vocabulary). The FLOP floor of the tuner's step: 4 N T
(forward 2 N T and input gradients 2 N T; the frozen weights need no weight gradient), N the
weights outside the embedding and output layer and T the batch's tokens including padding,
plus 4 d V A for the output layer at the A answer positions (d the width, V the vocabulary;
the tied output layer is frozen too); the reference's floor has T in place of A. Rates are set
against a 2048^3 float32 matmul on the same threads (torch's attainable peak here).
Min of ``--repeats``. Writes benchmarks/results/b8_lora.json.

    python -m benchmarks.b8_lora [--models smollm2-135m,gemma3-270m] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def _pairs(n: int):
    import quasirl.lm as qlm

    task = qlm.capitals()
    demos, pool = task.split(8, 0)
    rng = np.random.default_rng(0)
    items = [pool[i % len(pool)] for i in range(n)]
    prompts = [task.prompt(it, [(demos[j], demos[j].answer)
                                for j in sorted(rng.choice(8, 4, replace=False))])
               for it in items]
    return prompts, [" " + it.answer for it in items]


def _matmul_gflops(torch, repeats: int = 3) -> float:
    a = torch.randn(2048, 2048)
    b = torch.randn(2048, 2048)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * 2048**3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _reference(tuner, seqs, order_batches, lr: float) -> float:
    """The same batches through a bare torch loop: forward, float32 cross-entropy, AdamW."""
    torch = tuner.torch
    params = [p for p in tuner.lm.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    batches = [tuner._batch([seqs[i] for i in idx]) for idx in order_batches]
    tuner.lm.model.train()
    t0 = time.perf_counter()
    for ids, mask, labels in batches:
        logits = tuner.lm.model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    dt = time.perf_counter() - t0
    tuner.lm.model.eval()
    return dt


def bench(model: str, threads: int, n_pairs: int, epochs: int, repeats: int) -> dict:
    import quasirl.lm as qlm

    lm = qlm.load(model, backend="transformers", threads=threads)
    torch = lm.torch
    torch.set_num_threads(threads)
    tuner = qlm.FineTuner(lm, rank=8, epochs=epochs, batch_size=8, seed=0)
    prompts, answers = _pairs(n_pairs)
    seqs = tuner._encode(prompts, answers)
    # the batches the tuner draws for fit(seed=0)
    rng = np.random.default_rng(np.random.SeedSequence([tuner.seed, 0, 0xF17]))
    order = list(tuner._batches(n_pairs, rng))
    tokens = sum(len(idx) * max(len(seqs[i][0]) + len(seqs[i][1]) for i in idx)
                 for idx in order)
    answer = sum(len(seqs[i][1]) for idx in order for i in idx)
    causal = lm.model.get_base_model()
    head = causal.get_output_embeddings().weight
    emb = causal.get_input_embeddings().weight
    vocab, width = head.shape
    skip = {id(head), id(emb)}
    n_body = sum(p.numel() for n, p in lm.model.named_parameters()
                 if "lora_" not in n and id(p) not in skip)
    fits, refs, report = [], [], None
    for _ in range(repeats):
        tuner.reset()
        report = tuner.fit(prompts, answers, seed=0)
        fits.append(report.seconds)
        tuner.reset()
        refs.append(_reference(tuner, seqs, order, tuner.lr))
    peak = _matmul_gflops(torch)
    fit, ref = min(fits), min(refs)
    floor_fit = (4 * n_body * tokens + 4 * width * vocab * answer) / 1e9
    floor_ref = (4 * n_body * tokens + 4 * width * vocab * tokens) / 1e9
    return {"model": model, "threads": threads, "pairs": n_pairs, "epochs": epochs,
            "steps": report.steps, "tokens_padded": int(tokens), "answer_tokens": int(answer),
            "body_weights": int(n_body), "vocab": int(vocab), "width": int(width),
            "trainable": tuner.n_trainable, "fit_s": fit, "reference_s": ref,
            "ratio": fit / ref, "loss_before": report.loss_before,
            "loss_after": report.loss_after, "gflops_fit": floor_fit / fit,
            "gflops_reference": floor_ref / ref, "matmul_gflops": peak,
            "fraction_of_matmul": floor_fit / fit / peak,
            "reference_fraction_of_matmul": floor_ref / ref / peak}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2-135m,gemma3-270m")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "b8_lora.json"))
    a = ap.parse_args(argv)
    rows = []
    for m in a.models.split(","):
        for t in (int(x) for x in a.threads.split(",")):
            row = bench(m, t, a.pairs, a.epochs, a.repeats)
            rows.append(row)
            print(f"{m:14s} threads {t}: fit {row['fit_s']:.1f} s ({row['steps']} steps, "
                  f"{row['tokens_padded']} tokens), bare torch {row['reference_s']:.1f} s, "
                  f"ratio {row['ratio']:.2f}; {row['gflops_fit']:.0f} GFLOP/s = "
                  f"{row['fraction_of_matmul']:.0%} of matmul {row['matmul_gflops']:.0f} "
                  f"(reference {row['reference_fraction_of_matmul']:.0%}); "
                  f"loss {row['loss_before']:.2f} -> {row['loss_after']:.2f}", flush=True)
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(json.dumps(
                {"machine": platform.processor() or platform.machine(),
                 "cpus": os.cpu_count(), "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
