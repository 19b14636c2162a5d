"""The sampling of the three experiments: Exp 1's answers with every fitness signal, Exp 2's
answers after contexts with a known wrong fraction, Exp 3's chaining arms.

Every experiment appends each record as it is produced and resumes from its record file; every
random choice is seeded by its position (query, sample, wrong fraction), never by the order of
execution.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..._validate import QuasirlValueError, check_int
from .._chaining import (
    ARMS,
    CHANNELS,
    ChainResult,
    checked_fitness,
    checked_samples,
    run_chaining,
)
from .._fitness import SIGNALS, check_signals, get_fitness
from .._records import RecordLog, stamped
from .._tasks import Task
from .._types import LM, CachedLM, check_number, sample_seed
from ._design import Pools, items_of, sha256_json
from ._io import arm_records
from ._results import Calibration, Prediction, Trajectory, Transfer
from ._statistics import analyze_calibration, analyze_transfer, compare
from ._theory import predict_trajectory

# ----------------------------------------------------------------------------------------------
# Exp 1: evaluator ROC
# ----------------------------------------------------------------------------------------------


def collect_calibration(lm: LM, task: Task, *, signals=SIGNALS, n_queries: int = 120,
                        samples_per_query: int = 2, temperature: float = 1.0, k: int = 4,
                        n_demos: int = 8, max_tokens: int = 12, seed: int = 0,
                        split_seed: int = 0, pools: Pools | None = None, records=None,
                        progress=None) -> list[dict]:
    """Exp 1 data: N samples for each of ``n_queries`` queries after k gold demonstrations,
    every fitness signal evaluated on every sample. Returns the records (resumable file).

    With ``pools`` (see ``draw_pools``) the queries are its Exp 1 threshold half then its rate
    half (``n_queries`` unused), each record naming its ``half``; without, ``n_queries`` drawn
    from the task's query pool by ``seed``."""
    signals = check_signals(signals)
    n_per = check_int("samples_per_query", samples_per_query, 1)
    k = check_int("k", k, 1)
    temperature = check_number("temperature", temperature, 0.0)
    demos, pool = task.split(check_int("n_demos", n_demos, k), split_seed)
    if pools is not None:
        if tuple(d.id for d in demos) != pools.demos:
            raise QuasirlValueError("pools must be drawn with this n_demos and split_seed")
        queries = list(items_of(task, pools.exp1))
        half = {q: "threshold" for q in pools.exp1_threshold} | \
            {q: "rate" for q in pools.exp1_rate}
        n_queries = len(queries)
    else:
        n_queries = check_int("n_queries", n_queries, 1)
        if n_queries > len(pool):
            raise QuasirlValueError(
                f"n_queries must be <= {len(pool)} (the query pool of task {task.name!r}), "
                f"got {n_queries}")
        order = np.random.default_rng(sample_seed(seed, 101)).permutation(len(pool))
        queries = [pool[i] for i in order[:n_queries]]
        half = {}
    fits = {s: get_fitness(s) for s in signals}
    meta = {"kind": "calibration", "lm": lm.name, "task": task.name,
            "task_fingerprint": task.fingerprint(), "signals": list(signals),
            "n_queries": n_queries, "samples_per_query": n_per,
            "temperature": float(temperature), "k": k, "n_demos": len(demos),
            "max_tokens": int(max_tokens), "seed": int(seed), "split_seed": int(split_seed)}
    if pools is not None:
        meta["queries_sha256"] = sha256_json([pools.exp1_threshold, pools.exp1_rate])
    with RecordLog(records, meta, ("qid", "sample")) as log:
        for q, item in enumerate(queries):
            if all(log.has(item.id, j) for j in range(n_per)):
                continue
            rng = np.random.default_rng(sample_seed(seed, 101, q, 1))
            ctx = [demos[i] for i in sorted(rng.choice(len(demos), size=k, replace=False))]
            prompt = task.prompt(item, [(d, d.answer) for d in ctx])
            gseed = sample_seed(seed, 101, q)
            samples = lm.generate([prompt], n=n_per, temperature=temperature,
                                  max_tokens=max_tokens, stop=("\n",), seed=gseed)[0]
            where = f"backend {lm.name}, Exp 1 query {q} ({item.id!r})"
            samples = checked_samples(samples, n_per, where)
            f = {s: checked_fitness(fit(lm, task, [item] * n_per, samples), n_per,
                                    f"{where}, signal {s}") for s, fit in fits.items()}
            new = 0
            for j, smp in enumerate(samples):
                if log.has(item.id, j):
                    continue
                rec = {"q": q, "qid": item.id, "sample": j, "text": smp.text,
                       "correct": bool(task.check(item, smp.text)),
                       "fitness": {s: float(f[s][j]) for s in signals},
                       "logprob": smp.logprob, "n_tokens": smp.n_tokens,
                       "context": [f"demo:{d.id}" for d in ctx], "seed": gseed}
                if half:
                    rec["half"] = half[item.id]
                log.append(rec)
                new += 1
            if progress is not None:
                progress(new)
        return sorted(log.records, key=lambda r: (r["q"], r["sample"]))


def calibrate(lm: LM, task: Task, *, signals=SIGNALS, threshold="youden",
              acceptance: str = "hard", split: float = 0.5, n_boot: int = 1000,
              records=None, progress=None, **collect) -> Calibration:
    """Exp 1: collect (:func:`collect_calibration`), analyse (:func:`analyze_calibration`)."""
    recs = collect_calibration(lm, task, signals=signals, records=records, progress=progress,
                               **collect)
    return analyze_calibration(recs, signals, threshold=threshold, acceptance=acceptance,
                               split=split, n_boot=n_boot, seed=collect.get("seed", 0))


# ----------------------------------------------------------------------------------------------
# Exp 2: transfer function
# ----------------------------------------------------------------------------------------------


def bank_from_records(records: Sequence[dict]) -> list[tuple[str, str, bool]]:
    """(item id, answer, correct) of sampled answers, e.g. Exp 1's, for building contexts."""
    seen, out = set(), []
    for r in records:
        key = (r["qid"], r["text"].strip())
        if key[1] and key not in seen:
            seen.add(key)
            out.append((r["qid"], r["text"].strip(), bool(r["correct"])))
    return out


def exp2_bank(records: Sequence[dict], k: int) -> tuple[list | None, str]:
    """The model's own Exp 1 answers as Exp 2's context bank, or (None, reason) when they hold
    too few distinct items with a right or a wrong answer to fill k pairs of either kind."""
    answers = bank_from_records(records)
    n_ok = len({i for i, _, c in answers if c})
    n_bad = len({i for i, _, c in answers if not c})
    if min(n_ok, n_bad) <= k:
        return None, (f"gold (Exp 1 gave {n_ok} items with a right and {n_bad} with a wrong "
                      f"answer; k = {k} needs more than k of each)")
    return answers, "exp1"


def collect_transfer(lm: LM, task: Task, *, bs=(0.0, 0.25, 0.5, 0.75, 1.0), k: int = 4,
                     n_queries: int = 60, samples_per_query: int = 2,
                     temperature: float = 1.0, n_demos: int = 8, bank=None,
                     max_tokens: int = 12, seed: int = 0, split_seed: int = 0,
                     pools: Pools | None = None, records=None, progress=None,
                     channel: str = "context", tuner=None, train_bank=None,
                     train_pairs: int = 32, adapters=None) -> list[dict]:
    """Exp 2 data: the same queries after contexts of k pairs of which exactly b k are wrong.

    Context pairs come from ``bank`` (a list of (item id, answer, correct), e.g. the model's own
    Exp 1 answers: its real mistakes) when given, else from the gold demonstrations with wrong
    answers borrowed from other items. Context items never include the query. With ``pools``
    the queries are its Exp 2 pool (``n_queries`` unused), else ``n_queries`` drawn from the
    task's query pool by ``seed``.

    The other channels measure the transfer through the weights: for each b, ``tuner`` (a
    :class:`~quasirl.lm.FineTuner` of ``lm``) trains the base model on ``train_pairs`` of
    the model's own answers from ``train_bank`` ((item id, answer text, correct), e.g. Exp 1's
    records: items disjoint from the queries), of which exactly b are wrong, each after k gold
    demonstrations, the loop's prompt format; the queries are then answered after k gold
    demonstrations (``weights``) or after Exp 2's contexts with b k wrong (``both``). Each b's
    weights are saved under ``adapters/b-<i>`` so a resumed run does not train again.
    """
    k = check_int("k", k, 1)
    if pools is None:
        n_queries = check_int("n_queries", n_queries, 1)
    n_per = check_int("samples_per_query", samples_per_query, 1)
    temperature = check_number("temperature", temperature, 0.0)
    bs = [float(b) for b in bs]
    for i, b in enumerate(bs):
        if not 0 <= b <= 1 or abs(b * k - round(b * k)) > 1e-9:
            raise QuasirlValueError(
                f"bs[{i}] = {b} must be in [0, 1] with b * k an integer (k = {k})")
    demos, pool = task.split(check_int("n_demos", n_demos, k), split_seed)
    if pools is not None:
        if tuple(d.id for d in demos) != pools.demos:
            raise QuasirlValueError("pools must be drawn with this n_demos and split_seed")
        queries = list(items_of(task, pools.exp2))
        n_queries = len(queries)
    else:
        if n_queries > len(pool):
            raise QuasirlValueError(f"n_queries must be <= {len(pool)}, got {n_queries}")
        order = np.random.default_rng(sample_seed(seed, 202)).permutation(len(pool))
        queries = [pool[i] for i in order[:n_queries]]
    by_id = {it.id: it for it in task.items}
    train = _check_train(channel, tuner, train_bank, train_pairs, by_id, records, adapters,
                         queries)
    if bank is not None:
        bank = [(str(i), str(a), bool(c)) for i, a, c in bank]
        for i, (qid, _, _) in enumerate(bank):
            if qid not in by_id:
                raise QuasirlValueError(f"bank[{i}] names item {qid!r}, not in task {task.name!r}")
    meta = {"kind": "transfer", "lm": lm.name, "task": task.name,
            "task_fingerprint": task.fingerprint(), "bs": bs, "k": k, "n_queries": n_queries,
            "samples_per_query": n_per, "temperature": float(temperature),
            "n_demos": len(demos), "bank": None if bank is None else len(bank),
            "max_tokens": int(max_tokens), "seed": int(seed), "split_seed": int(split_seed)}
    if pools is not None:
        meta["queries_sha256"] = sha256_json(pools.exp2)
    if channel != "context":
        meta.update(channel=channel, finetune=tuner.config(), train_pairs=train_pairs,
                    train_bank_sha256=sha256_json(train))
    with RecordLog(records, meta, ("bi", "qid", "sample")) as log:
        for bi, b in enumerate(bs):
            m = int(round(b * k))
            if channel != "context":
                _train_transfer(tuner, task, train, demos, b, train_pairs, k,
                                sample_seed(seed, 202, bi, 8),
                                None if adapters is None else Path(adapters) / f"b-{bi}")
            for q, item in enumerate(queries):
                if all(log.has(bi, item.id, j) for j in range(n_per)):
                    continue
                rng = np.random.default_rng(sample_seed(seed, 202, bi, q, 1))
                ctx = _transfer_context(task, item, demos, bank if channel != "weights"
                                        else None, k, m if channel != "weights" else 0, rng)
                prompt = task.prompt(item, [(by_id[i], a) for i, a, _, _ in ctx])
                gseed = sample_seed(seed, 202, bi, q)
                samples = lm.generate([prompt], n=n_per, temperature=temperature,
                                      max_tokens=max_tokens, stop=("\n",), seed=gseed)[0]
                samples = checked_samples(
                    samples, n_per, f"backend {lm.name}, Exp 2 b = {b}, query {q} "
                                    f"({item.id!r})")
                new = 0
                for j, smp in enumerate(samples):
                    if log.has(bi, item.id, j):
                        continue
                    log.append({"bi": bi, "b": b, "q": q, "qid": item.id, "sample": j,
                                "text": smp.text, "correct": bool(task.check(item, smp.text)),
                                "context": [c[3] for c in ctx],
                                "context_wrong": m / k if channel != "weights" else 0.0,
                                "logprob": smp.logprob, "seed": gseed})
                    new += 1
                if progress is not None:
                    progress(new)
        return sorted(log.records, key=lambda r: (r["bi"], r["q"], r["sample"]))


def train_bank_from_records(records: Sequence[dict]) -> list[tuple[str, str, bool]]:
    """(item id, answer text as sampled, correct) of every sampled answer (repeats kept, text
    not stripped: the sampler's leading space is part of what the model learns)."""
    return [(r["qid"], r["text"], bool(r["correct"])) for r in records]


def _check_train(channel, tuner, train_bank, train_pairs, by_id, records, adapters, queries):
    if channel not in CHANNELS:
        raise QuasirlValueError(f"channel must be one of {CHANNELS}, got {channel!r}")
    if channel == "context":
        return None
    if tuner is None:
        raise QuasirlValueError(f"channel={channel!r} needs tuner=FineTuner(lm)")
    if records is not None and adapters is None:
        raise QuasirlValueError("adapters (a folder for each b's weights) is required with "
                                "records, or a resumed run would train again")
    check_int("train_pairs", train_pairs, 1)
    if not train_bank:
        raise QuasirlValueError(f"channel={channel!r} needs train_bank: the model's own "
                                "answers to train on")
    bank = [(str(i), str(a), bool(c)) for i, a, c in train_bank]
    asked = {it.id for it in queries}
    for i, (qid, _, _) in enumerate(bank):
        if qid not in by_id:
            raise QuasirlValueError(f"train_bank[{i}] names item {qid!r}, not in the task")
        if qid in asked:
            raise QuasirlValueError(f"train_bank[{i}] is an answer to {qid!r}, one of the "
                                    "queries: training items must be held out")
    return bank


def _train_transfer(tuner, task, bank, demos, b, n, k, seed, folder) -> None:
    """Train the base model on n bank answers of which round(b n) are wrong (saved, or loaded
    when ``folder`` already holds them)."""
    if folder is not None and folder.is_dir():
        tuner.load(folder)
        return
    rng = np.random.default_rng(seed)
    m = int(round(b * n))
    picked = []
    for want, count in ((False, m), (True, n - m)):
        cands = [e for e in bank if e[2] == want]
        if count and not cands:
            raise QuasirlValueError(f"train_bank holds no {'right' if want else 'wrong'} "
                                    f"answer, but b = {b} needs {count}")
        if count:
            idx = rng.choice(len(cands), size=count, replace=len(cands) < count)
            picked += [cands[i] for i in idx]
    by_id = {it.id: it for it in task.items}
    prompts = []
    for qid, _, _ in picked:
        ctx = [demos[i] for i in sorted(rng.choice(len(demos), size=k, replace=False))]
        prompts.append(task.prompt(by_id[qid], [(d, d.answer) for d in ctx]))
    tuner.reset()
    report = tuner.fit(prompts, [a for _, a, _ in picked], seed=seed)
    if folder is not None:
        tuner.save(folder, info={"b": b, "fit": report.to_dict(),
                                 "trained_on": [[q, a, c] for q, a, c in picked]})


def _transfer_context(task, item, demos, bank, k, m, rng):
    """k context pairs (id, answer, correct, label) with exactly m wrong, in random order."""
    if bank is None:
        ctx = [demos[i] for i in rng.choice(len(demos), size=k, replace=False)]
        wrong_pos = set(rng.choice(k, size=m, replace=False).tolist())
        out = []
        for i, d in enumerate(ctx):
            if i in wrong_pos:
                out.append((d.id, task.wrong_answer(d, rng), False, f"demo:{d.id}:wrong"))
            else:
                out.append((d.id, d.answer, True, f"demo:{d.id}"))
        return out
    pools = {True: [e for e in bank if e[2] and e[0] != item.id],
             False: [e for e in bank if not e[2] and e[0] != item.id]}
    chosen, used = [], {item.id}
    for want_correct, count in ((False, m), (True, k - m)):
        cands = pools[want_correct]
        got = 0
        for i in rng.permutation(len(cands)):
            if got == count:
                break
            if cands[i][0] not in used:
                used.add(cands[i][0])
                chosen.append(cands[i])
                got += 1
        if got < count:
            kind = "correct" if want_correct else "wrong"
            raise QuasirlValueError(
                f"bank holds too few {kind} answers on distinct items for k = {k}, b = {m / k}")
    order = rng.permutation(len(chosen))
    return [(chosen[i][0], chosen[i][1], chosen[i][2],
             f"bank:{chosen[i][0]}:{'ok' if chosen[i][2] else 'wrong'}") for i in order]


def transfer(lm: LM, task: Task, *, n_boot: int = 1000, records=None, progress=None,
             **collect) -> Transfer:
    """Exp 2: collect (:func:`collect_transfer`) and analyse (:func:`analyze_transfer`)."""
    recs = collect_transfer(lm, task, records=records, progress=progress, **collect)
    return analyze_transfer(recs, n_boot=n_boot, seed=collect.get("seed", 0))


# ----------------------------------------------------------------------------------------------
# Exp 3: trajectory
# ----------------------------------------------------------------------------------------------


def _finite_threshold(th) -> float:
    """Exp 1's operating threshold as a finite number for the loop's hard acceptance: None
    (soft acceptance) is unused, and Youden's "accept nothing" (+inf) is any threshold above 1,
    the largest fitness (records hold finite numbers only)."""
    if th is None:
        return 0.5
    return float(th) if np.isfinite(th) else 2.0


def trajectory(lm: LM, task: Task, calibration: Calibration, transfer: Transfer, *,
               signal: str = "likelihood", arms=ARMS, rounds: int = 3,
               queries_per_round: int = 40, samples_per_query: int = 4,
               temperature: float = 1.0, k: int = 4, n_demos: int = 8,
               buffer_size: int | None = None, max_tokens: int = 12, seed: int = 0,
               split_seed: int = 0, pools: Pools | None = None, records_dir=None,
               on_prediction: Callable[[Prediction], dict | None] | None = None,
               progress=None, channel: str = "context", tuner=None,
               train_pairs: int | None = None) -> Trajectory:
    """Exp 3: predict every arm's trajectory (``on_prediction`` sees it before any run), then
    run the arms: filtered by ``signal`` at Exp 1's operating threshold and acceptance mode,
    then random acceptance at the filtered arm's observed per-round rate, unfiltered and
    oracle. Records go to ``records_dir/exp3_<arm>.jsonl`` (resumable).

    Every arm answers the same queries in a round (paired): the task's query pool cut into
    blocks of ``queries_per_round``, or with ``pools`` its Exp 3 pool. A dict returned by
    ``on_prediction`` (e.g. the pre-registered prediction's hash) is stamped on every Exp 3
    record file and record (``quasirl.lm._records.stamped``).

    With ``channel`` ``weights`` or ``both`` each arm trains its own line of models with
    ``tuner`` (from the base model; weights under ``records_dir/adapters/<arm>``), and
    ``transfer`` should be the one measured through the same channel."""
    arms = tuple(arms)
    if "random" in arms and "filtered" not in arms:
        raise QuasirlValueError("the random arm needs the filtered arm (it copies its rate)")
    arms = tuple(sorted(arms, key=ARMS.index))
    prediction = predict_trajectory(calibration, transfer, signal=signal, rounds=rounds,
                                    queries_per_round=queries_per_round,
                                    samples_per_query=samples_per_query, arms=arms, seed=seed)
    stamp = on_prediction(prediction) if on_prediction is not None else None
    threshold = _finite_threshold(calibration.signals[signal].threshold)
    if pools is not None:
        need = (rounds + 1) * queries_per_round
        if len(pools.exp3) != need:
            raise QuasirlValueError(f"pools.exp3 holds {len(pools.exp3)} queries, (rounds + 1) "
                                    f"* queries_per_round = {need} are needed")
        task = task.with_split(pools.demos, pools.exp3)
    # every arm's round 0 is the same: generate it once (trained models differ per arm, so
    # the weights channels sample each arm afresh)
    shared = CachedLM(lm) if channel == "context" else lm
    runs: dict[str, ChainResult] = {}
    with stamped(**(stamp or {})):
        for arm in arms:
            runs[arm] = _run_arm(shared, task, arm, signal, runs, calibration, threshold,
                                 rounds=rounds, queries_per_round=queries_per_round,
                                 samples_per_query=samples_per_query, temperature=temperature,
                                 k=k, n_demos=n_demos, buffer_size=buffer_size,
                                 max_tokens=max_tokens, seed=seed, split_seed=split_seed,
                                 records_dir=records_dir, progress=progress,
                                 channel=channel, tuner=tuner, train_pairs=train_pairs)
    return Trajectory(prediction=prediction, runs=runs, comparison=compare(prediction, runs))


def _run_arm(shared, task, arm, signal, runs, calibration, threshold, *, rounds,
             queries_per_round, samples_per_query, temperature, k, n_demos, buffer_size,
             max_tokens, seed, split_seed, records_dir, progress, channel, tuner,
             train_pairs) -> ChainResult:
    return run_chaining(
        shared, task, get_fitness(signal) if arm == "filtered" else None, arm=arm,
        rounds=rounds, queries_per_round=queries_per_round,
        samples_per_query=samples_per_query, temperature=temperature, k=k,
        n_demos=n_demos, buffer_size=buffer_size, acceptance=calibration.acceptance,
        threshold=threshold,
        accept_rate=[float(x) for x in runs["filtered"].accept_rate]
        if arm == "random" else None,
        max_tokens=max_tokens, seed=seed, split_seed=split_seed,
        records=None if records_dir is None else arm_records(records_dir, arm),
        progress=progress, channel=channel, tuner=tuner, train_pairs=train_pairs,
        adapters=None if records_dir is None or channel == "context"
        else Path(records_dir) / "adapters" / arm)
