"""A synthetic language model with known error rate, evaluator rates and imitation strength.

Only for testing the statistics of the bridge: it speaks the same text protocol as the real
backends (it parses the task's prompts), so the chaining loop, the records and the validation
experiments run on it unchanged, and their estimates can be compared with the truth.
"""

from __future__ import annotations

import hashlib
import math
import time
from statistics import NormalDist

import numpy as np

from .._validate import QuasirlValueError, check_int
from ._fitness import SCALES
from ._tasks import Task, normalize
from ._types import (
    Sample,
    Score,
    check_generate_args,
    check_score_args,
    is_real_number,
    sample_seed,
)

_ND = NormalDist()


def _uniform(*parts) -> float:
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return (int.from_bytes(h, "little") + 0.5) / 2.0**64


class SyntheticLM:
    """A model whose error rate, self-evaluation and imitation are set by hand.

    Generation: the prompt's query is answered wrongly with probability
    g(b) = (1 - lam) * eps0 + lam * b, where b is the fraction of wrong demonstrations in the
    prompt (eps0 when there are none); wrong answers are other items' answers.
    Survey trick: for a (query, answer) pair a verdict "yes" is drawn once (a fixed property of
    the pair, like a real model's deterministic judgement), with probability ``tpr`` when the
    answer is correct and ``fpr`` when it is wrong; label probabilities put more than half the
    mass (or, on a graded scale, more than half the expected value) on the verdict.
    Likelihood: log p(answer) = -exp(z) with z ~ N(-1, 0.6) for correct and N(0.5, 0.6) for
    wrong answers, so the own-likelihood AUROC is Phi(1.5 / (0.6 * sqrt 2)) ~ 0.961.
    The temperature is ignored except T = 0, which returns the correct answer when g(b) < 1/2.

    Per-query difficulty (``difficulty_sd`` = sigma > 0): query q has its own no-context error
    rate eps0_q with logit(eps0_q) = logit(eps0) + sigma z_q, z_q ~ N(0, 1) fixed by the seed
    and the query's id, and answers wrongly with g_q(b) = (1 - lam) eps0_q + lam b. Averaged
    over queries this is g(b) = (1 - lam) m + lam b, still a line, with m = E[eps0_q] the
    logit-normal mean (:attr:`marginal_eps0`), so the boosting recurrence holds for the
    marginal error with eps* = m; the samples of one query are correlated, with intraclass
    correlation (1 - lam)^2 Var(eps0_q) / (g(b) (1 - g(b))) at a fixed b (:meth:`icc`). Blocks of
    queries then differ in difficulty as real ones do. sigma = 0 (the default) is the model
    without difficulty, bit for bit.

    Args:
      task: the task whose prompts it answers.
      eps0, tpr, fpr, lam: the true parameters (each in [0, 1]).
      seed: fixes the model's judgements, likelihoods and query difficulties (sampling has its
        own seeds).
      difficulty_sd: sigma, the standard deviation of the queries' logit error rates (>= 0).
      delay: seconds to sleep per generated sample (to test interruption of slow runs).
    """

    LIKELIHOOD_Z = ((-1.0, 0.6), (0.5, 0.6))  # (mean, sd) of z for correct, wrong

    def __init__(self, task: Task, eps0: float, tpr: float, fpr: float, lam: float,
                 seed: int = 0, delay: float = 0.0, name: str = "synthetic",
                 difficulty_sd: float = 0.0):
        if not isinstance(task, Task):
            raise QuasirlValueError(f"task must be a Task, got {type(task).__name__}")
        for nm, v in (("eps0", eps0), ("tpr", tpr), ("fpr", fpr), ("lam", lam)):
            if not (is_real_number(v) and 0.0 <= v <= 1.0):
                raise QuasirlValueError(f"{nm} must be a number in [0, 1], got {v!r}")
        if not (is_real_number(difficulty_sd) and 0.0 <= difficulty_sd < math.inf):
            raise QuasirlValueError(
                f"difficulty_sd must be a finite number >= 0, got {difficulty_sd!r}")
        self.task, self.eps0, self.tpr, self.fpr, self.lam = task, eps0, tpr, fpr, lam
        self.seed, self.delay, self.name = check_int("seed", seed), float(delay), name
        self.difficulty_sd = float(difficulty_sd)

    def _varies(self) -> bool:
        """Whether queries differ in difficulty (sigma > 0 and eps0 strictly inside (0, 1))."""
        return self.difficulty_sd > 0 and 0.0 < self.eps0 < 1.0

    def difficulty(self, item_id: str) -> float:
        """z_q: the query's standard-normal difficulty (fixed by the seed and the item id)."""
        return _ND.inv_cdf(_uniform(self.seed, "difficulty", item_id))

    def query_eps0(self, item_id: str) -> float:
        """eps0_q = expit(logit(eps0) + sigma z_q): the query's error rate without context."""
        if not self._varies():
            return self.eps0
        x = math.log(self.eps0 / (1 - self.eps0)) + self.difficulty_sd * self.difficulty(item_id)
        return 1.0 / (1.0 + math.exp(-x)) if x > -700 else 0.0

    def _eps0_moments(self) -> tuple[float, float]:
        """(mean, variance) of eps0_q over queries: Gauss-Hermite quadrature, 200 nodes."""
        if not self._varies():
            return self.eps0, 0.0
        x, wt = np.polynomial.hermite_e.hermegauss(200)
        wt = wt / wt.sum()
        p = 1.0 / (1.0 + np.exp(-(math.log(self.eps0 / (1 - self.eps0))
                                  + self.difficulty_sd * x)))
        m = float(wt @ p)
        return m, float(wt @ (p - m) ** 2)

    @property
    def marginal_eps0(self) -> float:
        """m = E[eps0_q]: the error rate without context averaged over queries (= eps0 when
        sigma = 0); the fixed point eps* of the marginal transfer function."""
        return self._eps0_moments()[0]

    def icc(self, b: float | None = None) -> float:
        """Intraclass correlation of wrong answers within a query at wrong fraction b (None: no
        context): Var_q(g_q(b)) / (g(b) (1 - g(b))), g the marginal transfer function."""
        m, v = self._eps0_moments()
        scale = 1.0 if b is None else (1 - self.lam)
        mean = m if b is None else (1 - self.lam) * m + self.lam * b
        den = mean * (1 - mean)
        return float(scale**2 * v / den) if den > 0 else 0.0

    @property
    def likelihood_auroc(self) -> float:
        (mc, sc), (mw, sw) = self.LIKELIHOOD_Z
        return _ND.cdf((mw - mc) / math.hypot(sc, sw))

    def error_rate(self, b: float | None, item_id: str | None = None) -> float:
        """g(b): the probability of a wrong answer after demonstrations with wrong fraction b
        (b None: no demonstrations); with ``item_id``, g_q(b) of that query, else the marginal
        g(b) over queries (the two agree when sigma = 0)."""
        e0 = self.marginal_eps0 if item_id is None else self.query_eps0(item_id)
        return e0 if b is None else (1 - self.lam) * e0 + self.lam * b

    def _logprob(self, item, answer: str) -> float:
        correct = self.task.check(item, answer)
        m, s = self.LIKELIHOOD_Z[0 if correct else 1]
        u = _uniform(self.seed, "lik", item.id, normalize(answer))
        return -math.exp(m + s * _ND.inv_cdf(u))

    def _verdict(self, item, answer: str, scale: str) -> tuple[bool, float]:
        correct = self.task.check(item, answer)
        u = _uniform(self.seed, "judge", item.id, normalize(answer), scale)
        jitter = _uniform(self.seed, "jitter", item.id, normalize(answer), scale)
        return u < (self.tpr if correct else self.fpr), jitter

    def generate(self, prompts, n=1, temperature=1.0, max_tokens=16, stop=("\n",), seed=0):
        prompts, n, t, max_tokens, stop, seed = check_generate_args(
            prompts, n, temperature, max_tokens, stop, seed)
        out = []
        for i, prompt in enumerate(prompts):
            item, demos = self.task.parse_prompt(prompt)
            b = (sum(not self.task.check(d, a) for d, a in demos) / len(demos)) if demos else None
            p_err = self.error_rate(b, item.id) if self._varies() else self.error_rate(b)
            row = []
            for j in range(n):
                rng = np.random.default_rng(sample_seed(seed, i, j))
                wrong = (p_err >= 0.5) if t == 0 else (rng.random() < p_err)
                answer = self.task.wrong_answer(item, rng) if wrong else item.answer
                if self.delay:
                    time.sleep(self.delay)
                row.append(Sample(text=" " + answer,
                                  token_logprobs=(self._logprob(item, answer),)))
            out.append(row)
        return out

    def score(self, prompts, continuations):
        prompts, continuations = check_score_args(prompts, continuations)
        out = []
        for p, c in zip(prompts, continuations, strict=True):
            ev = self.task.parse_eval_prompt(p)
            if ev is None:
                item, _ = self.task.parse_prompt(p)
                lp = self._logprob(item, c.strip())
            else:
                item, answer, question = ev
                scale = next((s for s in SCALES.values() if s.question == question), None)
                if scale is None or c not in scale.labels:
                    raise QuasirlValueError(
                        f"SyntheticLM scores only the labels of its scales, got {c!r}")
                yes, jitter = self._verdict(item, answer, scale.name)
                # logits sign * c * (v - 1/2): expected value > 1/2 exactly when the verdict is yes
                v = np.asarray(scale.values)
                logits = (1 if yes else -1) * (3.0 + 2.0 * jitter) * (v - 0.5)
                logp = logits - np.log(np.exp(logits).sum()) - 0.25  # 0.25: mass off the labels
                lp = float(logp[scale.labels.index(c)])
            out.append(Score(total=lp, token_logprobs=(lp,)))
        return out


def synthetic_from_spec(spec: str, task: Task) -> SyntheticLM:
    """``"synthetic"`` or ``"synthetic:eps0=0.4,tpr=0.8,fpr=0.3,lam=0.5,seed=0"`` (optionally
    with ``difficulty_sd=...``)."""
    params = {"eps0": 0.4, "tpr": 0.8, "fpr": 0.3, "lam": 0.5, "seed": 0, "difficulty_sd": 0.0}
    _, _, rest = spec.partition(":")
    for i, part in enumerate(p for p in rest.split(",") if p.strip()):
        key, eq, val = part.partition("=")
        key = key.strip()
        if not eq or key not in params:
            raise QuasirlValueError(
                f"synthetic model spec part {i} ({part!r}) must be one of "
                f"{', '.join(k + '=...' for k in params)}")
        try:
            params[key] = int(val) if key == "seed" else float(val)
        except ValueError:
            raise QuasirlValueError(f"synthetic model spec: {key} must be a number, got "
                                    f"{val!r}") from None
    seed = params.pop("seed")
    return SyntheticLM(task, seed=seed, name="synthetic", **params)
