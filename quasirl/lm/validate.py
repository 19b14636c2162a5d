"""Theory against runs: measure the ingredients apart, predict the trajectory, run, compare.

Three experiments, each resumable from its JSONL records and each with a pass/fail criterion:

* **Exp 1, evaluator ROC** (:func:`calibrate`): answers to fresh queries after k gold
  demonstrations; their error rate eps (the loop's round 0), and for each fitness signal the
  AUROC, the operating threshold (chosen on a calibration half of the queries), TPR and FPR on
  the held-out half, and a one-step Bayes check: the wrong fraction among accepted answers that
  one quarter of the queries predicts, w = eps FPR / (eps FPR + (1 - eps) TPR), against the one
  observed on another quarter (both held out from the threshold choice, so the check carries
  no selection optimism). Pass: the observed w lies in its 95% predictive interval.
* **Exp 2, transfer function** (:func:`transfer`): contexts of k pairs with an exact wrong
  fraction b; eps_next = g(b) and the fit g(b) = (1 - lam) eps* + lam b. Pass: the line fits
  (chi-square goodness of fit, p > 0.05).
* **Exp 3, trajectory** (:func:`trajectory`): eps_1 .. eps_R predicted from the measured
  (eps, TPR, FPR, g) with ``quasirl.selection.adapt_trajectory`` and a parametric bootstrap over
  the ingredients' uncertainty, *then* the chaining loop is run (filtered arm and the controls:
  unfiltered, random acceptance at the filtered arm's rate, oracle). Pass: the observed eps_n
  agree with the predictive bands (chi-square over all arms and rounds, p > 0.05); the
  calibration slope of observed on predicted is reported.

Uncertainty comes from resampling queries (cluster bootstrap, see ``_stats``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import chi2

from .._jsonio import write_json
from .._validate import QuasirlValueError
from ._chaining import ARMS, ChainResult, checked_fitness, checked_samples, run_chaining
from ._fitness import get_fitness
from ._records import RecordLog
from ._stats import (
    auroc,
    cluster_weights,
    linear_fit,
    percentile_ci,
    ratio,
    roc_curve,
    wilson,
    youden_threshold,
)
from ._tasks import Task
from ._types import LM, CachedLM, check_number, sample_seed

__all__ = ["Calibration", "Prediction", "Trajectory", "Transfer", "analyze_calibration",
           "analyze_transfer", "calibrate", "collect_calibration", "collect_transfer",
           "predict_trajectory", "trajectory", "transfer", "validate"]

SIGNALS = ("yesno", "scale5", "likelihood", "gold")


def _selection():
    from .. import selection

    return selection


def _check_int(name, v, minimum=1):
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < minimum:
        raise QuasirlValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _check_signals(signals) -> tuple[str, ...]:
    signals = (signals,) if isinstance(signals, str) else tuple(signals)
    for i, s in enumerate(signals):
        if s not in SIGNALS:
            raise QuasirlValueError(f"signals[{i}] must be one of {SIGNALS}, got {s!r}")
    if not signals:
        raise QuasirlValueError("signals must name at least one signal")
    return signals


def _ci(x) -> list[float]:
    return [float(v) for v in x]


def _icc(groups, y) -> float:
    """One-way ANOVA intraclass correlation of y within groups (clipped to [0, 1])."""
    _, g = np.unique(np.asarray(groups), return_inverse=True)
    y = np.asarray(y, dtype=np.float64)
    n_g = np.bincount(g)
    if n_g.size < 2 or np.all(n_g < 2):
        return 0.0
    means = np.bincount(g, y) / n_g
    m = float(np.mean(n_g))
    msb = np.sum(n_g * (means - y.mean()) ** 2) / (n_g.size - 1)
    msw = np.sum((y - means[g]) ** 2) / max(y.size - n_g.size, 1)
    den = msb + (m - 1) * msw
    return float(np.clip((msb - msw) / den, 0.0, 1.0)) if den > 0 else 0.0


# ----------------------------------------------------------------------------------------------
# Exp 1: evaluator ROC
# ----------------------------------------------------------------------------------------------


@dataclass
class Calibration:
    """Exp 1 results: error rate and, per signal, AUROC, TPR / FPR and the Bayes check.

    ``draws`` holds bootstrap draws aligned by index (eps, and per signal tpr / fpr), used by
    :func:`predict_trajectory`.
    """

    summary: dict
    draws: dict = field(repr=False)
    roc: dict = field(repr=False)

    def to_dict(self) -> dict:
        return {**self.summary,
                "roc": {s: {k: _ci(v) for k, v in r.items()} for s, r in self.roc.items()}}


def collect_calibration(lm: LM, task: Task, *, signals=SIGNALS, n_queries: int = 120,
                        samples_per_query: int = 2, temperature: float = 1.0, k: int = 4,
                        n_demos: int = 8, max_tokens: int = 12, seed: int = 0,
                        split_seed: int = 0, records=None, progress=None) -> list[dict]:
    """Exp 1 data: N samples for each of ``n_queries`` queries after k gold demonstrations,
    every fitness signal evaluated on every sample. Returns the records (resumable file)."""
    signals = _check_signals(signals)
    n_queries = _check_int("n_queries", n_queries)
    n_per = _check_int("samples_per_query", samples_per_query)
    k = _check_int("k", k)
    temperature = check_number("temperature", temperature, 0.0)
    demos, pool = task.split(_check_int("n_demos", n_demos, k), split_seed)
    if n_queries > len(pool):
        raise QuasirlValueError(
            f"n_queries must be <= {len(pool)} (the query pool of task {task.name!r}), "
            f"got {n_queries}")
    order = np.random.default_rng(sample_seed(seed, 101)).permutation(len(pool))
    queries = [pool[i] for i in order[:n_queries]]
    fits = {s: get_fitness(s) for s in signals}
    meta = {"kind": "calibration", "lm": lm.name, "task": task.name,
            "task_fingerprint": task.fingerprint(), "signals": list(signals),
            "n_queries": n_queries, "samples_per_query": n_per,
            "temperature": float(temperature), "k": k, "n_demos": len(demos),
            "max_tokens": int(max_tokens), "seed": int(seed), "split_seed": int(split_seed)}
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
                log.append({"q": q, "qid": item.id, "sample": j, "text": smp.text,
                            "correct": bool(task.check(item, smp.text)),
                            "fitness": {s: float(f[s][j]) for s in signals},
                            "logprob": smp.logprob, "n_tokens": smp.n_tokens,
                            "context": [f"demo:{d.id}" for d in ctx], "seed": gseed})
                new += 1
            if progress is not None:
                progress(new)
        return sorted(log.records, key=lambda r: (r["q"], r["sample"]))


def _split_halves(qids, split: float, seed: int) -> np.ndarray:
    """Boolean mask: True for samples whose query falls in the calibration half."""
    uq = np.unique(np.asarray(qids))
    perm = np.random.default_rng(sample_seed(seed, 303)).permutation(uq.size)
    n_cal = int(round(split * uq.size))
    if not 1 <= n_cal < uq.size:
        raise QuasirlValueError(
            f"split must leave at least one query in each half, got split={split} for "
            f"{uq.size} queries")
    return np.isin(np.asarray(qids), uq[perm[:n_cal]])


def _bayes_check(acc, correct, b1, b2, w_b1, seed) -> dict:
    """One-step Bayes check: w predicted from the rates on B1, observed on B2.

    Prediction draws: a cluster bootstrap of B1's queries, each replicate's rates drawn from
    their Jeffreys posteriors Beta(k + 1/2, n - k + 1/2) (so a rate observed as 0 / n still
    carries uncertainty). The observed wrong count among B2's accepted answers is compared
    with its predictive distribution Binomial(n accepted, w). Pass: inside the central 95%.
    """
    wrong = ~correct
    rng = np.random.default_rng(seed)

    def counts(w):
        return (w @ (acc * correct), w @ correct.astype(float), w @ (acc * wrong),
                w @ wrong.astype(float))

    tp, npos, fp, nneg = (x[0] for x in counts(b1.astype(float)[None, :]))
    w_pred = float(_bayes_w(nneg / (npos + nneg), tp / npos, fp / nneg)) \
        if npos and nneg else float("nan")
    tp_d, npos_d, fp_d, nneg_d = counts(w_b1)
    ok = (npos_d > 0) & (nneg_d > 0)
    tpr_d = rng.beta(tp_d[ok] + 0.5, npos_d[ok] - tp_d[ok] + 0.5)
    fpr_d = rng.beta(fp_d[ok] + 0.5, nneg_d[ok] - fp_d[ok] + 0.5)
    eps_d = rng.beta(nneg_d[ok] + 0.5, npos_d[ok] + 0.5)
    w_pred_d = _bayes_w(eps_d, tpr_d, fpr_d)
    n_acc = float((acc * b2).sum())
    n_wrong = float((acc * wrong * b2).sum())
    w_obs = n_wrong / n_acc if n_acc else float("nan")
    n_int = int(round(n_acc))
    if n_int and w_pred_d.size:
        sim = rng.binomial(n_int, np.clip(w_pred_d, 0, 1)) / n_int
        interval = percentile_ci(sim)
    else:
        interval = (np.nan, np.nan)
    ok_all = np.isfinite(interval).all() and np.isfinite(w_obs)
    return {"w_predicted": w_pred, "w_predicted_ci": _ci(percentile_ci(w_pred_d))
            if w_pred_d.size else [np.nan, np.nan], "w_predictive": _ci(interval),
            "w_observed": w_obs, "w_observed_wilson": _ci(wilson(n_wrong, n_acc)),
            "accepted_observed": n_acc, "n_predict_samples": int(b1.sum()),
            "n_observe_samples": int(b2.sum()),
            "pass": bool(interval[0] <= w_obs <= interval[1]) if ok_all else None}


def _bayes_w(eps, tpr, fpr):
    """Wrong fraction among accepted answers (vectorised): eps FPR / (eps FPR + (1-eps) TPR)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return eps * fpr / (eps * fpr + (1 - eps) * tpr)


def analyze_calibration(records: Sequence[dict], signals=None, *, threshold="youden",
                        acceptance: str = "hard", split: float = 0.5, n_boot: int = 1000,
                        seed: int = 0) -> Calibration:
    """Exp 1 statistics from its records (see the module docstring).

    Args:
      threshold: ``"youden"`` (maximise TPR - FPR on the calibration half), a number, or a dict
        signal -> either.
      acceptance: ``hard`` (accept f >= threshold) or ``soft`` (accept with probability f: then
        TPR = E[f | correct] and FPR = E[f | wrong]).
      split: fraction of queries in the calibration half.
    """
    if not records:
        raise QuasirlValueError("records is empty: nothing to analyse")
    if acceptance not in ("hard", "soft"):
        raise QuasirlValueError(f"acceptance must be 'hard' or 'soft', got {acceptance!r}")
    signals = _check_signals(signals or list(records[0]["fitness"]))
    n_boot = _check_int("n_boot", n_boot)
    split = check_number("split", split)
    for s in signals:
        th_spec = threshold.get(s, "youden") if isinstance(threshold, dict) else threshold
        if not (isinstance(th_spec, str) and th_spec == "youden"):
            check_number(f"threshold of signal {s!r}" if isinstance(threshold, dict)
                          else "threshold", th_spec)
    qids = np.array([r["qid"] for r in records])
    correct = np.array([r["correct"] for r in records], dtype=bool)
    wrong = ~correct
    ones = np.ones(correct.size, dtype=bool)
    w_all, _ = cluster_weights(qids, n_boot, sample_seed(seed, 1))
    cal = _split_halves(qids, split, seed)
    hold = ~cal
    w_cal = np.zeros((n_boot, qids.size))
    w_hold = np.zeros((n_boot, qids.size))
    w_cal[:, cal] = cluster_weights(qids[cal], n_boot, sample_seed(seed, 2))[0]
    w_hold[:, hold] = cluster_weights(qids[hold], n_boot, sample_seed(seed, 3))[0]
    # the Bayes check predicts from one half of the held-out queries (B1) and observes on the
    # other (B2): both are independent of the threshold chosen on the calibration half
    held = np.unique(qids[hold])
    order = np.random.default_rng(sample_seed(seed, 4)).permutation(held.size)
    b1 = hold & np.isin(qids, held[order[: held.size // 2]])
    b2 = hold & ~b1
    w_b1 = np.zeros((n_boot, qids.size))
    if b1.any():
        w_b1[:, b1] = cluster_weights(qids[b1], n_boot, sample_seed(seed, 6))[0]

    eps = ratio(wrong, ones)
    eps_draws = ratio(wrong, ones, w_all)
    n_per = np.bincount(np.unique(qids, return_inverse=True)[1])
    summary = {
        "n_samples": int(correct.size), "n_queries": int(np.unique(qids).size),
        "eps": eps, "eps_wilson": _ci(wilson(wrong.sum(), wrong.size)),
        "eps_ci": _ci(percentile_ci(eps_draws)), "icc": _icc(qids, wrong),
        "samples_per_query": float(n_per.mean()), "acceptance": acceptance, "signals": {}}
    draws = {"eps": eps_draws}
    roc = {}
    for s in signals:
        f = np.array([r["fitness"][s] for r in records], dtype=np.float64)
        th_spec = threshold.get(s, "youden") if isinstance(threshold, dict) else threshold
        if acceptance == "soft":
            th = None
            acc = f
        else:
            th = youden_threshold(f[cal], correct[cal]) if th_spec == "youden" \
                else float(th_spec)
            acc = (f >= th).astype(np.float64)
        au = auroc(f, correct)
        au_draws = auroc(f, correct, w_all)

        def rates(mask_w, acc=acc):
            """TPR, FPR, w_obs and eps with weights mask_w (None or [B, n])."""
            def wsum(x):
                return x.sum() if mask_w is None else mask_w @ x
            with np.errstate(invalid="ignore", divide="ignore"):
                tpr = wsum(acc * correct) / wsum(correct.astype(float))
                fpr = wsum(acc * wrong) / wsum(wrong.astype(float))
                w_obs = wsum(acc * wrong) / wsum(acc)
                e = wsum(wrong.astype(float)) / wsum(ones.astype(float))
            return tpr, fpr, w_obs, e

        mh = hold.astype(float)
        tpr_h, fpr_h, _, _ = rates(mh[None, :])
        tpr_hd, fpr_hd, _, _ = rates(w_hold)
        bayes = _bayes_check(acc, correct, b1, b2, w_b1, sample_seed(seed, 5, len(roc)))
        fr, tr, ths = roc_curve(f, correct)
        roc[s] = {"fpr": fr, "tpr": tr}
        summary["signals"][s] = {
            "auroc": float(au), "auroc_ci": _ci(percentile_ci(au_draws)),
            "informative": bool(percentile_ci(au_draws)[0] > 0.5),
            "threshold": th, "tpr": float(tpr_h[0]), "tpr_ci": _ci(percentile_ci(tpr_hd)),
            "fpr": float(fpr_h[0]), "fpr_ci": _ci(percentile_ci(fpr_hd)),
            "accept_rate_heldout": float(acc[hold].mean()),
            "mean_fitness_correct": float(f[correct].mean()) if correct.any() else None,
            "mean_fitness_wrong": float(f[wrong].mean()) if wrong.any() else None,
            "bayes": bayes,
        }
        draws[s] = {"tpr": tpr_hd, "fpr": fpr_hd}
    return Calibration(summary=summary, draws=draws, roc=roc)


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


@dataclass
class Transfer:
    """Exp 2 results: eps_next(b) per wrong fraction b and the fit g(b) = a + lam b."""

    summary: dict
    draws: dict = field(repr=False)

    def to_dict(self) -> dict:
        return dict(self.summary)

    def g(self, b):
        """The fitted transfer function a + lam b."""
        return self.summary["a"] + self.summary["lam"] * np.asarray(b, dtype=np.float64)


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
                     max_tokens: int = 12, seed: int = 0, split_seed: int = 0, records=None,
                     progress=None) -> list[dict]:
    """Exp 2 data: the same queries after contexts of k pairs of which exactly b k are wrong.

    Context pairs come from ``bank`` (a list of (item id, answer, correct), e.g. the model's own
    Exp 1 answers: its real mistakes) when given, else from the gold demonstrations with wrong
    answers borrowed from other items. Context items never include the query.
    """
    k = _check_int("k", k)
    n_queries = _check_int("n_queries", n_queries)
    n_per = _check_int("samples_per_query", samples_per_query)
    temperature = check_number("temperature", temperature, 0.0)
    bs = [float(b) for b in bs]
    for i, b in enumerate(bs):
        if not 0 <= b <= 1 or abs(b * k - round(b * k)) > 1e-9:
            raise QuasirlValueError(
                f"bs[{i}] = {b} must be in [0, 1] with b * k an integer (k = {k})")
    demos, pool = task.split(_check_int("n_demos", n_demos, k), split_seed)
    if n_queries > len(pool):
        raise QuasirlValueError(f"n_queries must be <= {len(pool)}, got {n_queries}")
    order = np.random.default_rng(sample_seed(seed, 202)).permutation(len(pool))
    queries = [pool[i] for i in order[:n_queries]]
    by_id = {it.id: it for it in task.items}
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
    with RecordLog(records, meta, ("bi", "qid", "sample")) as log:
        for bi, b in enumerate(bs):
            m = int(round(b * k))
            for q, item in enumerate(queries):
                if all(log.has(bi, item.id, j) for j in range(n_per)):
                    continue
                rng = np.random.default_rng(sample_seed(seed, 202, bi, q, 1))
                ctx = _transfer_context(task, item, demos, bank, k, m, rng, by_id)
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
                                "context": [c[3] for c in ctx], "context_wrong": m / k,
                                "logprob": smp.logprob, "seed": gseed})
                    new += 1
                if progress is not None:
                    progress(new)
        return sorted(log.records, key=lambda r: (r["bi"], r["q"], r["sample"]))


def _transfer_context(task, item, demos, bank, k, m, rng, by_id):
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


def analyze_transfer(records: Sequence[dict], *, n_boot: int = 1000, seed: int = 0) -> Transfer:
    """Exp 2 statistics: eps(b) with Wilson intervals, the least-squares line g(b) = a + lam b
    on the samples with a cluster bootstrap over queries (paired across b), eps* = a / (1 - lam)
    (the fixed point g(eps*) = eps*), and a chi-square test of the line."""
    if not records:
        raise QuasirlValueError("records is empty: nothing to analyse")
    n_boot = _check_int("n_boot", n_boot)
    qids = np.array([r["qid"] for r in records])
    b = np.array([r["b"] for r in records], dtype=np.float64)
    y = np.array([not r["correct"] for r in records], dtype=np.float64)
    bs = np.unique(b)
    if bs.size < 2:
        raise QuasirlValueError("records must cover at least two values of b to fit a line")
    w, _ = cluster_weights(qids, n_boot, sample_seed(seed, 4))
    a, lam = linear_fit(b, y)
    a_d, lam_d = linear_fit(b, y, w)
    eps_b = np.array([y[b == v].mean() for v in bs])
    n_b = np.array([(b == v).sum() for v in bs])
    with np.errstate(invalid="ignore", divide="ignore"):
        eps_b_d = np.stack([(w[:, b == v] @ y[b == v]) / w[:, b == v].sum(1) for v in bs], 1)
        resid_d = eps_b_d - (a_d[:, None] + lam_d[:, None] * bs[None, :])
        fix_d = a_d / (1 - lam_d)
    resid = eps_b - (a + lam * bs)
    var = np.nanvar(resid_d, axis=0, ddof=1)
    var = np.where(var > 0, var, np.nan)
    stat = float(np.nansum(resid**2 / var))
    dof = int(np.isfinite(var).sum()) - 2
    p = float(chi2.sf(stat, dof)) if dof > 0 else None
    lo, hi = wilson(eps_b * n_b, n_b)
    summary = {
        "bs": _ci(bs), "n": [int(x) for x in n_b], "eps": _ci(eps_b), "eps_wilson_lo": _ci(lo),
        "eps_wilson_hi": _ci(hi), "a": float(a), "a_ci": _ci(percentile_ci(a_d)),
        "lam": float(lam), "lam_ci": _ci(percentile_ci(lam_d)),
        "eps_star": float(a / (1 - lam)) if lam != 1 else None,
        "eps_star_ci": _ci(percentile_ci(fix_d)), "chi2": stat, "dof": dof, "p_value": p,
        "imitates": bool(percentile_ci(lam_d)[0] > 0),
        "pass": None if p is None else bool(p > 0.05)}
    return Transfer(summary=summary, draws={"a": a_d, "lam": lam_d})


def transfer(lm: LM, task: Task, *, n_boot: int = 1000, records=None, progress=None,
             **collect) -> Transfer:
    """Exp 2: collect (:func:`collect_transfer`) and analyse (:func:`analyze_transfer`)."""
    recs = collect_transfer(lm, task, records=records, progress=progress, **collect)
    return analyze_transfer(recs, n_boot=n_boot, seed=collect.get("seed", 0))


# ----------------------------------------------------------------------------------------------
# Exp 3: trajectory
# ----------------------------------------------------------------------------------------------


def _adapt(eps0, tpr, fpr, a, lam, rounds) -> np.ndarray:
    """Theory trajectories [B, rounds + 1] for draws of the ingredients (quasirl.selection).

    g(b) = a + lam b is passed as ``partial_imitation(eps* = a / (1 - lam), lam)``, with lam
    clipped to [0, 1] and eps* to [0, 1] (a bootstrap draw outside them is pulled back).
    """
    sel = _selection()
    eps0, tpr, fpr, a, lam = np.broadcast_arrays(
        *(np.atleast_1d(np.asarray(x, dtype=np.float64)) for x in (eps0, tpr, fpr, a, lam)))
    lam_c = np.clip(lam, 0.0, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        star = np.where(lam_c < 1, np.clip(a / (1.0 - lam_c), 0.0, 1.0), 0.5)
    g = sel.partial_imitation(star, lam_c)
    return np.asarray(sel.adapt_trajectory(np.clip(eps0, 0, 1), np.clip(tpr, 0, 1),
                                           np.clip(fpr, 0, 1), g, rounds), dtype=np.float64)


def _arm_rates(arm, n, tpr=None, fpr=None):
    if arm == "filtered":
        return tpr, fpr
    if arm == "oracle":
        return np.ones(n), np.zeros(n)
    return np.ones(n), np.ones(n)  # unfiltered and random: acceptance ignores correctness


@dataclass
class Prediction:
    """Predicted eps_0 .. eps_R per arm: point, parameter band and predictive band (95%)."""

    summary: dict

    def to_dict(self) -> dict:
        return dict(self.summary)


def predict_trajectory(calibration: Calibration, transfer: Transfer, *, signal: str,
                       rounds: int, queries_per_round: int, samples_per_query: int,
                       arms=ARMS, seed: int = 0) -> Prediction:
    """Predict each arm's error trajectory before running it.

    Point: ``quasirl.selection.adapt_trajectory`` with the measured eps (Exp 1), TPR and FPR
    of ``signal`` (Exp 1, held-out half) and g(b) = a + lam b (Exp 2), written as
    ``partial_imitation(eps* = a / (1 - lam), lam)``. The unfiltered and random arms have
    TPR = FPR (acceptance independent of correctness), the oracle TPR = 1, FPR = 0.
    Parameter band: the same for bootstrap draws of the ingredients. Predictive band: adds the
    sampling noise of an observed round (Q queries x N samples, design effect 1 + (N - 1) icc
    with the intraclass correlation measured in Exp 1) and the noise that the buffer's finite
    wrong fraction passes on through g (lam^2 var(w_{n-1})).
    """
    s = calibration.summary
    if signal not in s["signals"]:
        raise QuasirlValueError(
            f"signal must be one measured in Exp 1 ({list(s['signals'])}), got {signal!r}")
    rounds = _check_int("rounds", rounds, 0)
    for i, arm in enumerate(arms):
        if arm not in ARMS:
            raise QuasirlValueError(f"arms[{i}] must be one of {ARMS}, got {arm!r}")
    sel = _selection()
    n_obs = queries_per_round * samples_per_query
    deff = 1.0 + (samples_per_query - 1) * s["icc"]
    t = transfer.summary
    d_eps = calibration.draws["eps"]
    # a rate with no samples of its class (e.g. FPR when Exp 1 saw no wrong answer) is
    # undefined; it then carries no information and is set to 1/2 (the Jeffreys posterior mean)
    tpr0, fpr0 = (s["signals"][signal][x] for x in ("tpr", "fpr"))
    undefined = [x for x, v in (("tpr", tpr0), ("fpr", fpr0)) if not np.isfinite(v)]
    tpr0, fpr0 = (v if np.isfinite(v) else 0.5 for v in (tpr0, fpr0))
    d_tpr, d_fpr = (np.where(np.isfinite(d), d, 0.5) if x in undefined else d for x, d in
                    (("tpr", calibration.draws[signal]["tpr"]),
                     ("fpr", calibration.draws[signal]["fpr"])))
    b = min(d_eps.size, d_tpr.size, transfer.draws["a"].size)
    rng = np.random.default_rng(sample_seed(seed, 505))
    pick = rng.permutation(transfer.draws["a"].size)[:b]  # Exp 2 independent of Exp 1
    d_a, d_lam = transfer.draws["a"][pick], transfer.draws["lam"][pick]
    ok = np.isfinite(d_eps[:b]) & np.isfinite(d_tpr[:b]) & np.isfinite(d_fpr[:b]) \
        & np.isfinite(d_a) & np.isfinite(d_lam)
    out = {"signal": signal, "rounds": rounds, "queries_per_round": queries_per_round,
           "samples_per_query": samples_per_query, "design_effect": deff,
           "ingredients": {"eps0": s["eps"], "tpr": tpr0, "fpr": fpr0, "a": t["a"],
                           "lam": t["lam"], "eps_star": t["eps_star"]},
           "undefined_rates_set_to_half": undefined, "arms": {}}
    for arm in arms:
        tp, fp = _arm_rates(arm, 1, np.array([tpr0]), np.array([fpr0]))
        point = _adapt(s["eps"], tp, fp, t["a"], t["lam"], rounds)[0]
        tpd, fpd = _arm_rates(arm, int(ok.sum()), d_tpr[:b][ok], d_fpr[:b][ok])
        draws = _adapt(d_eps[:b][ok], tpd, fpd, d_a[ok], d_lam[ok], rounds)
        # sampling noise of an observed round, and the buffer's noise passed on through g
        acc = np.asarray(sel.acceptance_rate(draws[:, :-1], tpd[:, None], fpd[:, None]),
                         dtype=np.float64)
        w_prev = _bayes_w(draws[:, :-1], tpd[:, None], fpd[:, None])
        var = draws * (1 - draws) * deff / n_obs
        with np.errstate(invalid="ignore", divide="ignore"):
            var_w = np.where(acc > 0, w_prev * (1 - w_prev) * deff / (n_obs * acc), 0.0)
        var[:, 1:] += np.clip(d_lam[ok], 0, 1)[:, None] ** 2 * np.nan_to_num(var_w)
        noisy = np.clip(draws + rng.standard_normal(draws.shape) * np.sqrt(var), 0, 1)
        out["arms"][arm] = {
            "point": _ci(point),
            "band": [_ci(np.quantile(draws, q, axis=0)) for q in (0.025, 0.975)],
            "predictive": [_ci(np.quantile(noisy, q, axis=0)) for q in (0.025, 0.975)],
            "sd": _ci(noisy.std(axis=0, ddof=1))}
    return Prediction(summary=out)


@dataclass
class Trajectory:
    """Exp 3 results: the prediction, each arm's observed trajectory, the comparison."""

    prediction: Prediction
    runs: dict
    summary: dict

    def to_dict(self) -> dict:
        return {"prediction": self.prediction.to_dict(), **self.summary,
                "runs": {a: r.to_dict() for a, r in self.runs.items()}}


def compare(prediction: Prediction, runs: dict[str, ChainResult]) -> dict:
    """Observed eps_n (Wilson 95%) against the predictive bands; chi-square and slope."""
    rows, z2, pts = {}, [], []
    for arm, res in runs.items():
        p = prediction.summary["arms"][arm]
        n = np.array([r.n for r in res.rounds])
        k = np.array([r.wrong for r in res.rounds])
        obs = k / n
        lo, hi = wilson(k, n)
        pred = np.asarray(p["point"][: obs.size])
        sd = np.asarray(p["sd"][: obs.size])
        plo, phi = (np.asarray(x[: obs.size]) for x in p["predictive"])
        covered = (obs >= plo) & (obs <= phi)
        first = 0 if not rows else 1  # round 0 is shared by all arms: count it once
        for i in range(first, obs.size):
            if sd[i] > 0:
                z2.append(((obs[i] - pred[i]) / sd[i]) ** 2)
            if i >= 1:
                pts.append((pred[i], obs[i], sd[i]))
        rows[arm] = {"observed": _ci(obs), "wilson": [_ci(lo), _ci(hi)],
                     "covered": [bool(c) for c in covered],
                     "accept_rate": _ci(res.accept_rate), "w": _ci(res.w)}
    stat = float(np.sum(z2))
    dof = len(z2)
    p_val = float(chi2.sf(stat, dof)) if dof else None
    slope = intercept = None
    if len(pts) >= 2:
        x, y, sd = (np.array(v) for v in zip(*pts, strict=True))
        wts = 1.0 / np.maximum(sd, 1e-6) ** 2
        a, lam = linear_fit(x, y, wts[None, :])
        slope, intercept = float(lam[0]), float(a[0])
    n_cov = sum(sum(r["covered"][1:]) for r in rows.values())
    n_pts = sum(len(r["covered"][1:]) for r in rows.values())
    return {"arms": rows, "chi2": stat, "dof": dof, "p_value": p_val,
            "coverage": f"{n_cov}/{n_pts}", "calibration_slope": slope,
            "calibration_intercept": intercept,
            "pass": None if p_val is None else bool(p_val > 0.05)}


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
               split_seed: int = 0, records_dir=None,
               on_prediction: Callable[[Prediction], object] | None = None,
               progress=None) -> Trajectory:
    """Exp 3: predict every arm's trajectory (``on_prediction`` sees it before any run), then
    run the arms: filtered by ``signal`` at Exp 1's operating threshold and acceptance mode,
    then random acceptance at the filtered arm's observed per-round rate, unfiltered and
    oracle. Records go to ``records_dir/exp3_<arm>.jsonl`` (resumable)."""
    arms = tuple(arms)
    if "random" in arms and "filtered" not in arms:
        raise QuasirlValueError("the random arm needs the filtered arm (it copies its rate)")
    arms = tuple(sorted(arms, key=ARMS.index))
    prediction = predict_trajectory(calibration, transfer, signal=signal, rounds=rounds,
                                    queries_per_round=queries_per_round,
                                    samples_per_query=samples_per_query, arms=arms, seed=seed)
    if on_prediction is not None:
        on_prediction(prediction)
    sig = calibration.summary["signals"][signal]
    acceptance = calibration.summary["acceptance"]
    shared = CachedLM(lm)  # every arm's round 0 is the same: generate it once
    runs: dict[str, ChainResult] = {}
    for arm in arms:
        path = None if records_dir is None else Path(records_dir) / f"exp3_{arm}.jsonl"
        runs[arm] = run_chaining(
            shared, task, get_fitness(signal) if arm == "filtered" else None, arm=arm,
            rounds=rounds, queries_per_round=queries_per_round,
            samples_per_query=samples_per_query, temperature=temperature, k=k,
            n_demos=n_demos, buffer_size=buffer_size, acceptance=acceptance,
            threshold=_finite_threshold(sig["threshold"]),
            accept_rate=[float(x) for x in runs["filtered"].accept_rate]
            if arm == "random" else None,
            max_tokens=max_tokens, seed=seed, split_seed=split_seed, records=path,
            progress=progress)
    return Trajectory(prediction=prediction, runs=runs, summary=compare(prediction, runs))


# ----------------------------------------------------------------------------------------------
# all three
# ----------------------------------------------------------------------------------------------


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, obj, indent=1, sort_keys=True)


def validate(lm: LM, task: Task, out, *, signal: str = "likelihood", signals=SIGNALS,
             acceptance: str = "hard", temperature: float = 1.0, k: int = 4,
             n_demos: int = 8, exp1_queries: int = 100, exp1_samples: int = 2,
             exp2_queries: int = 50, exp2_samples: int = 2, bs=(0.0, 0.25, 0.5, 0.75, 1.0),
             bank: str = "exp1", rounds: int = 3, queries_per_round: int = 30,
             samples_per_query: int = 4, arms=ARMS, buffer_size: int | None = None,
             max_tokens: int = 12, n_boot: int = 1000, seed: int = 0, split_seed: int = 0,
             figures: bool = True, progress_factory=None) -> dict:
    """Run Exp 1, Exp 2 and Exp 3 in order, writing records, JSON and figures under ``out``.

    Each experiment resumes from its records. ``bank="exp1"`` builds Exp 2's contexts from the
    model's own Exp 1 answers (its real mistakes), ``"gold"`` from gold demonstrations with
    other items' answers as the mistakes. ``progress_factory(name, total)`` may return a
    progress callback. Returns the three summaries.
    """
    out = Path(out)
    if bank not in ("exp1", "gold"):
        raise QuasirlValueError(f"bank must be 'exp1' or 'gold', got {bank!r}")
    signals = _check_signals(signals)
    if signal not in signals:
        raise QuasirlValueError(f"signal {signal!r} must be one of signals {signals}")

    def prog(name, total):
        return None if progress_factory is None else progress_factory(name, total)

    common = {"temperature": temperature, "k": k, "n_demos": n_demos,
              "max_tokens": max_tokens, "seed": seed, "split_seed": split_seed}
    recs1 = collect_calibration(lm, task, signals=signals, n_queries=exp1_queries,
                                samples_per_query=exp1_samples,
                                records=out / "exp1_calibration.jsonl",
                                progress=prog("Exp 1 calibration", exp1_queries * exp1_samples),
                                **common)
    cal = analyze_calibration(recs1, signals, acceptance=acceptance, n_boot=n_boot, seed=seed)
    _write_json(out / "exp1_calibration.json", {"lm": lm.name, "task": task.name,
                                                **cal.to_dict()})
    answers = None
    if bank == "exp1":
        answers, note = exp2_bank(recs1, k)
        bank = bank if answers is not None else note
    recs2 = collect_transfer(lm, task, bs=bs, n_queries=exp2_queries,
                             samples_per_query=exp2_samples, bank=answers,
                             records=out / "exp2_transfer.jsonl",
                             progress=prog("Exp 2 transfer", len(bs) * exp2_queries
                                           * exp2_samples), **common)
    tr = analyze_transfer(recs2, n_boot=n_boot, seed=seed)
    _write_json(out / "exp2_transfer.json", {"lm": lm.name, "task": task.name, "bank": bank,
                                             **tr.to_dict()})

    def save_prediction(p):
        _write_json(out / "exp3_prediction.json", {"lm": lm.name, "task": task.name,
                                                   **p.to_dict()})

    n_arms = len(tuple(arms))
    traj = trajectory(lm, task, cal, tr, signal=signal, arms=arms, rounds=rounds,
                      queries_per_round=queries_per_round, samples_per_query=samples_per_query,
                      buffer_size=buffer_size, records_dir=out, on_prediction=save_prediction,
                      progress=prog("Exp 3 trajectory", n_arms * (rounds + 1)
                                    * queries_per_round * samples_per_query), **common)
    _write_json(out / "exp3_trajectory.json", {"lm": lm.name, "task": task.name,
                                               **traj.to_dict()})
    if figures:
        from ..plots import _lm as plots
        from ..plots._style import savefig

        savefig(plots.calibration_figure(cal.to_dict()), out / "exp1_calibration.png")
        savefig(plots.transfer_figure(tr.to_dict()), out / "exp2_transfer.png")
        savefig(plots.trajectory_figure(traj.to_dict()), out / "exp3_trajectory.png")
    return {"exp1": cal.to_dict(), "exp2": tr.to_dict(), "exp3": traj.to_dict()}
