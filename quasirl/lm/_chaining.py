"""The chaining loop: answer, evaluate, keep what is judged good, put it back in the context.

Round 0 answers fresh queries after k gold demonstrations. Each later round answers fresh,
disjoint queries after k pairs drawn from a buffer of accepted (query, answer) pairs of earlier
rounds. With error rate eps_n, evaluator rates (TPR, FPR) and an in-context adaptation map g, the
theory predicts eps_{n+1} = g(w_n), w_n = eps_n FPR / (eps_n FPR + (1 - eps_n) TPR) (see
``quasirl.selection``); this loop produces the observed eps_n.

Every sample is appended to a JSONL record file as it is produced; a run that was killed resumes
from its records (the buffer is rebuilt from them) with no duplicate and no lost record, and the
records are identical to those of an uninterrupted run, because every random choice is seeded by
its position (round, query, sample) and never by the order of execution.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._validate import QuasirlValueError, check_int
from ._finetune import fitness_weights
from ._fitness import GoldFitness, accept
from ._records import RecordLog
from ._tasks import Task
from ._types import (
    LM,
    LMError,
    check_number,
    check_probability,
    check_sample,
    sample_seed,
)

ARMS = ("filtered", "unfiltered", "random", "oracle")
CHANNELS = ("context", "weights", "both")
KEY = ("round", "qid", "sample")


@dataclass(frozen=True)
class RoundSummary:
    """Counts for one round: samples, wrong ones, accepted, wrong among accepted."""

    round: int
    n: int
    wrong: int
    accepted: int
    accepted_wrong: int
    context_wrong: float  # mean wrong fraction of the demonstrations the round was shown

    @property
    def eps(self) -> float:
        return self.wrong / self.n if self.n else float("nan")

    @property
    def w(self) -> float:
        return self.accepted_wrong / self.accepted if self.accepted else float("nan")

    @property
    def accept_rate(self) -> float:
        return self.accepted / self.n if self.n else float("nan")

    @property
    def tpr(self) -> float:
        """The judge's TPR this round, P(accept | right), on this round's own samples."""
        right = self.n - self.wrong
        return (self.accepted - self.accepted_wrong) / right if right else float("nan")

    @property
    def fpr(self) -> float:
        """The judge's FPR this round, P(accept | wrong), on this round's own samples."""
        return self.accepted_wrong / self.wrong if self.wrong else float("nan")


def _per_round(name: str) -> property:
    """A ChainResult property: ``RoundSummary.<name>`` of every round as an array."""
    return property(lambda self: np.array([getattr(r, name) for r in self.rounds]))


@dataclass
class ChainResult:
    """Records and per-round summaries of one chaining run (one arm)."""

    config: dict
    records: list[dict]
    rounds: list[RoundSummary] = field(default_factory=list)

    # per round, as arrays: error rate, wrong share of the kept, accept rate, judge TPR / FPR
    eps = _per_round("eps")
    w = _per_round("w")
    accept_rate = _per_round("accept_rate")
    tpr = _per_round("tpr")
    fpr = _per_round("fpr")

    def to_dict(self) -> dict:
        return {"config": self.config,
                "rounds": [dict(r.__dict__, eps=r.eps, w=r.w, accept_rate=r.accept_rate,
                                tpr=r.tpr, fpr=r.fpr)
                           for r in self.rounds]}


def checked_samples(samples, n: int, where: str) -> list:
    """The ``n`` samples of one query (``where`` names it), each checked by ``check_sample``: a
    NaN or positive log-probability from any backend fails here, before it reaches a record."""
    samples = list(samples)
    if len(samples) != n:
        raise LMError(f"{where}: the backend returned {len(samples)} samples, {n} were asked for")
    return [check_sample(s, f"{where}, sample {j}") for j, s in enumerate(samples)]


def checked_fitness(f, n: int, where: str) -> np.ndarray:
    """A fitness signal's values for the ``n`` samples of one query: shape (n,), each a
    probability in [0, 1] (else LMValueError naming ``where``, the sample and the value)."""
    f = np.asarray(f, dtype=np.float64)
    if f.shape != (n,):
        raise QuasirlValueError(f"{where}: fitness returned shape {f.shape} for {n} samples")
    for j, v in enumerate(f):
        check_probability(v, f"{where}, sample {j}", "fitness")
    return f


def summarize(records: Sequence[dict], rounds: int) -> list[RoundSummary]:
    """Per-round counts from records (rounds 0 .. rounds)."""
    out = []
    for r in range(rounds + 1):
        rs = [x for x in records if x["round"] == r]
        if not rs:
            break
        out.append(RoundSummary(
            round=r, n=len(rs), wrong=sum(not x["correct"] for x in rs),
            accepted=sum(x["accepted"] for x in rs),
            accepted_wrong=sum(x["accepted"] and not x["correct"] for x in rs),
            context_wrong=float(np.mean([x["context_wrong"] for x in rs]))))
    return out


def run_chaining(lm: LM, task: Task, fitness=None, *, arm: str = "filtered", rounds: int = 3,
                 queries_per_round: int = 40, samples_per_query: int = 4,
                 temperature: float = 1.0, k: int = 4, n_demos: int = 8,
                 buffer_size: int | None = None, acceptance: str = "hard",
                 threshold: float = 0.5, accept_rate=None, max_tokens: int = 12,
                 seed: int = 0, split_seed: int = 0, records=None,
                 progress: Callable[[int], object] | None = None, channel: str = "context",
                 tuner=None, adapters=None, train_weights: str = "accepted",
                 t_sel: float = 1.0, train_pairs: int | None = None,
                 cumulative: bool = False) -> ChainResult:
    """Run the chaining loop for ``rounds`` selection steps (generation rounds 0 .. rounds).

    Args:
      lm: a backend (see ``quasirl.lm.LM``).
      task: the task; its items are split (by ``split_seed``) into ``n_demos`` gold
        demonstrations and a query pool, cut into disjoint blocks of ``queries_per_round``.
      fitness: the signal for ``arm="filtered"`` (``SurveyFitness``, ``LikelihoodFitness``,
        ``GoldFitness``); f in [0, 1].
      arm: ``filtered`` (accept by fitness), ``unfiltered`` (f = 1: accept all), ``random``
        (accept with probability ``accept_rate``, a number or one per round, independently of
        the answer) or ``oracle`` (accept exactly the correct answers).
      samples_per_query: N samples per query at ``temperature``.
      k: demonstrations in each prompt: round 0 draws k of the gold demonstrations; round n
        draws k pairs (fewer if the buffer holds fewer) from the buffer.
      buffer_size: None keeps the accepted pairs of the last round that accepted any (the
        theory's one-step recurrence); an integer keeps the latest ``buffer_size`` accepted
        pairs of all rounds (a rolling buffer). The buffer starts with the gold demonstrations.
      acceptance, threshold: ``hard`` keeps f >= threshold, ``soft`` keeps with probability f.
      seed: seeds every random choice by position (round, query, sample).
      records: JSONL path to write (and resume from), or None to keep records in memory.
      progress: called with the number of new samples after each query (e.g. ``tqdm.update``).
      channel: how the kept answers adapt the model (the essay's fast and slow adaptation):
        ``context`` puts them in later prompts (above); ``weights`` trains the model on them
        with ``tuner`` (a :class:`~quasirl.lm.FineTuner` of ``lm``) after each round, while
        every prompt keeps k gold demonstrations as in round 0; ``both`` does the two.
      tuner, adapters: the trainer, and the folder where the weights of each round's model
        are saved (``round-<n>``, with the fit's report), so a killed run resumes from its last
        finished round with the same weights, bit for bit. Required with ``records``.
      train_weights: ``accepted`` trains on the accepted pairs with equal weights (rejection
        sampling); ``soft`` trains on every sample of the round with weight exp(f / t_sel)
        (:func:`~quasirl.lm.fitness_weights`; needs a fitness signal).
      train_pairs: train on this many of the round's kept pairs, drawn uniformly (with
        replacement when fewer were kept), so every round and arm trains on a buffer of one
        size, as Exp 2's fine-tuning transfer does; None trains on all of them.
      cumulative: each round's training starts from the last round's weights; by default it
        starts from the base model (ReST-EM), so round n + 1's model depends only on round
        n's kept pairs, as the in-context buffer does, and Exp 2's transfer line applies.

    Returns a :class:`ChainResult` with every record and per-round error rates eps_n, accepted
    fractions and wrong fractions among the accepted w_n. Every sample's log-probabilities and
    every fitness value are checked before they are recorded: a NaN, an infinity, a
    log-probability above 0 or a fitness outside [0, 1] raises :class:`LMValueError` naming the
    backend, round, query and sample. ``threshold`` and ``temperature`` must be finite.
    """
    if arm not in ARMS:
        raise QuasirlValueError(f"arm must be one of {ARMS}, got {arm!r}")
    rounds = check_int("rounds", rounds, 0)
    q_per = check_int("queries_per_round", queries_per_round, 1)
    n_per = check_int("samples_per_query", samples_per_query, 1)
    k = check_int("k", k, 1)
    n_demos = check_int("n_demos", n_demos, 1)
    if n_demos < k:
        raise QuasirlValueError(f"n_demos must be >= k = {k}, got {n_demos}")
    if buffer_size is not None:
        buffer_size = check_int("buffer_size", buffer_size, 1)
    if acceptance not in ("hard", "soft"):
        raise QuasirlValueError(f"acceptance must be 'hard' or 'soft', got {acceptance!r}")
    threshold = check_number("threshold", threshold)
    temperature = check_number("temperature", temperature, 0.0)
    if arm == "filtered" and fitness is None:
        raise QuasirlValueError("fitness is required for arm='filtered'")
    if arm == "oracle":
        fitness, acceptance, threshold = GoldFitness(), "hard", 0.5
    if channel not in CHANNELS:
        raise QuasirlValueError(f"channel must be one of {CHANNELS}, got {channel!r}")
    if channel != "context":
        if tuner is None or getattr(tuner, "lm", None) is not lm:
            raise QuasirlValueError(f"channel={channel!r} needs tuner=FineTuner(lm): the "
                                    "trainer of this run's model")
        if records is not None and adapters is None:
            raise QuasirlValueError("adapters (a folder for each round's weights) is required "
                                    "with records, or a resumed run would retrain")
        if train_weights not in ("accepted", "soft"):
            raise QuasirlValueError(f"train_weights must be 'accepted' or 'soft', got "
                                    f"{train_weights!r}")
        if train_weights == "soft" and fitness is None:
            raise QuasirlValueError("train_weights='soft' needs a fitness signal (arm "
                                    "'filtered' or 'oracle')")
        t_sel = check_number("t_sel", t_sel, 0.0)
        if train_pairs is not None:
            train_pairs = check_int("train_pairs", train_pairs, 1)
    rates = None
    if arm == "random":
        if accept_rate is None:
            raise QuasirlValueError("accept_rate is required for arm='random'")
        rates = np.broadcast_to(np.asarray(accept_rate, dtype=np.float64), (rounds + 1,))
        bad = np.flatnonzero(~((rates >= 0) & (rates <= 1)))
        if bad.size:
            raise QuasirlValueError(
                f"accept_rate must lie in [0, 1], but accept_rate[{bad[0]}] = "
                f"{float(rates[bad[0]])!r}")
    demos, pool = task.split(n_demos, split_seed)
    need = (rounds + 1) * q_per
    if need > len(pool):
        raise QuasirlValueError(
            f"task {task.name!r} has {len(pool)} query items after {n_demos} demonstrations, "
            f"but (rounds + 1) * queries_per_round = {need} fresh queries are needed")
    meta = {
        "kind": "chaining", "lm": getattr(lm, "name", type(lm).__name__), "task": task.name,
        "task_fingerprint": task.fingerprint(), "arm": arm, "rounds": rounds,
        "queries_per_round": q_per, "samples_per_query": n_per,
        "temperature": float(temperature), "k": k, "n_demos": n_demos,
        "buffer_size": buffer_size, "acceptance": acceptance, "threshold": float(threshold),
        "fitness": getattr(fitness, "name", None) if arm in ("filtered", "oracle") else None,
        "beta": getattr(fitness, "beta", None), "accept_rate": None if rates is None
        else [float(x) for x in rates], "max_tokens": int(max_tokens), "seed": int(seed),
        "split_seed": int(split_seed)}
    if channel != "context":
        meta.update(channel=channel, finetune=tuner.config(), train_weights=train_weights,
                    t_sel=float(t_sel), train_pairs=train_pairs, cumulative=bool(cumulative))
    log = RecordLog(records, meta, KEY)
    if channel != "context":
        tuner.reset()  # round 0 answers with the base model; later rounds load or train
    lm_name = meta["lm"]
    by_id = {it.id: it for it in task.items}
    buffer = [(d.id, d.answer, True, f"demo:{d.id}") for d in demos]
    prompts: dict[tuple[int, str], str] = {}
    try:
        for r in range(rounds + 1):
            queries = pool[r * q_per:(r + 1) * q_per]
            for q, item in enumerate(queries):
                ctx_rng = np.random.default_rng(sample_seed(seed, r, q, 1))
                gold = r == 0 or channel == "weights"
                source = [(d.id, d.answer, True, f"demo:{d.id}") for d in demos] if gold \
                    else buffer
                pick = ctx_rng.choice(len(source), size=min(k, len(source)), replace=False)
                ctx = [source[i] for i in sorted(pick)]
                prompt = task.prompt(item, [(by_id[c[0]], c[1]) for c in ctx])
                prompts[r, item.id] = prompt
                if all(log.has(r, item.id, j) for j in range(n_per)):
                    continue
                gseed = sample_seed(seed, r, q)
                samples = lm.generate([prompt], n=n_per, temperature=temperature,
                                      max_tokens=max_tokens, stop=("\n",), seed=gseed)[0]
                where = f"backend {lm_name}, round {r}, query {q} ({item.id!r})"
                samples = checked_samples(samples, n_per, where)
                correct = [task.check(item, s.text) for s in samples]
                f = None
                if fitness is not None:
                    f = checked_fitness(fitness(lm, task, [item] * n_per, samples), n_per, where)
                u = np.random.default_rng(sample_seed(seed, r, q, 2)).random(n_per)
                if arm in ("filtered", "oracle"):
                    acc = accept(f, acceptance, threshold, u)
                elif arm == "unfiltered":
                    acc = np.ones(n_per, dtype=bool)
                else:
                    acc = u < rates[r]
                new = 0
                for j, s in enumerate(samples):
                    if log.has(r, item.id, j):
                        continue
                    log.append({
                        "task": task.name, "arm": arm, "round": r, "q": q, "qid": item.id,
                        "sample": j, "query": task.question_text(item),
                        "context": [c[3] for c in ctx],
                        "context_wrong": float(np.mean([not c[2] for c in ctx])) if ctx else 0.0,
                        "text": s.text, "correct": bool(correct[j]),
                        "fitness": None if f is None else float(f[j]),
                        "accepted": bool(acc[j]), "seed": gseed, "logprob": s.logprob,
                        "n_tokens": s.n_tokens, "finish": s.finish})
                    new += 1
                if progress is not None:
                    progress(new)
            log.sync()
            # the buffer is rebuilt from the records, so a resumed run sees the same buffer
            this = sorted((x for x in log.records if x["round"] == r and x["accepted"]),
                          key=lambda x: (x["q"], x["sample"]))
            perm = np.random.default_rng(sample_seed(seed, r, 3)).permutation(len(this))
            fresh = [(this[i]["qid"], this[i]["text"].strip(), this[i]["correct"],
                      f"{r}:{this[i]['qid']}:{this[i]['sample']}") for i in perm]
            if buffer_size is None:
                buffer = fresh or buffer
            else:
                buffer = (buffer + fresh)[-buffer_size:]
            if channel != "context" and r < rounds:
                _train_round(tuner, log.records, prompts, r, adapters, train_weights, t_sel,
                             train_pairs, cumulative, sample_seed(seed, r, 4))
    finally:
        log.close()
    recs = sorted(log.records, key=lambda x: (x["round"], x["q"], x["sample"]))
    return ChainResult(config=meta, records=recs, rounds=summarize(recs, rounds))


def _train_round(tuner, records, prompts, r: int, adapters, train_weights: str, t_sel: float,
                 train_pairs: int | None, cumulative: bool, seed: int) -> None:
    """Make round r + 1's model: load its saved weights, or train on round r's records and
    save them (atomically, so a killed fit leaves nothing and is redone from the same start)."""
    folder = None if adapters is None else Path(adapters) / f"round-{r + 1}"
    if folder is not None and folder.is_dir():
        tuner.load(folder)
        return
    this = sorted((x for x in records if x["round"] == r), key=lambda x: (x["q"], x["sample"]))
    if train_weights == "soft":
        w = fitness_weights([x["fitness"] for x in this], "soft", t_sel=t_sel)
    else:
        w = np.array([1.0 if x["accepted"] else 0.0 for x in this])
    kept = np.flatnonzero(w > 0)
    n_kept = int(kept.size)
    if train_pairs is not None and kept.size:
        rng = np.random.default_rng(sample_seed(seed, 5))
        kept = np.sort(rng.choice(kept, size=train_pairs, replace=kept.size < train_pairs))
    report = None
    if kept.size:  # nothing kept: the model stays as it was (as the context buffer does)
        if not cumulative:
            tuner.reset()
        report = tuner.fit([prompts[r, this[i]["qid"]] for i in kept],
                           [this[i]["text"] for i in kept], w[kept], seed=seed).to_dict()
    if folder is not None:
        wrong = np.array([not this[i]["correct"] for i in kept], dtype=np.float64)
        tuner.save(folder, info={
            "round": r + 1, "trained_on_round": r, "fit": report, "n_kept": n_kept,
            "trained_on": [f"{r}:{this[i]['qid']}:{this[i]['sample']}" for i in kept],
            "wrong_share": float(np.sum(w[kept] * wrong) / np.sum(w[kept]))
            if kept.size else None})
