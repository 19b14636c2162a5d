"""Fitness signals (what selection keeps) and acceptance rules.

Three signals, each a number f in [0, 1] per sampled answer:

* the survey trick (:class:`SurveyFitness`): the model reads its own answer in an evaluation
  prompt and we *read* the probabilities of the evaluation labels instead of sampling a verdict:
  f = sum_j p(label_j) v_j, with p normalised over the label set (``YES_NO``: f = p(Yes);
  ``FIVE_POINT``: the expected value on a 0 .. 1 scale "Not at all" .. "A great deal", each
  label scored as a complete answer, i.e. followed by its end marker);
* the model's own likelihood of its answer (:class:`LikelihoodFitness`): f = p(answer | prompt)
  ** (1 / beta), sequence-level tempering of the sampling distribution; ``likelihood_end``
  includes the probability that the answer ends there, ``likelihood_norm`` is its per-token
  geometric mean (length-normalised);
* the gold checker (:class:`GoldFitness`): f = 1 for a correct answer, 0 otherwise (the
  control, and the oracle arm of the chaining loop).

Hard acceptance keeps an answer when f >= threshold; soft acceptance keeps it with probability f
(the essay's soft selection: the kept population is p(a|q) f(q, a) / Z).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .._validate import QuasirlValueError
from ._tasks import Item, Task, normalize
from ._types import (
    LM,
    LMError,
    Sample,
    check_logprob,
    check_number,
    is_real_number,
    label_probs,
)


@dataclass(frozen=True)
class Scale:
    """An evaluation question with its answer labels and the value of each label in [0, 1].

    ``end``: the end markers that follow a label in the prompt format (the eval prompt ends in
    "Answer:" and a reply ends with a newline). With them each label is scored as a complete
    answer, p(label, end | prompt), so a label that is a prefix of another (or of any longer
    reply) is not credited with its mass; ``()`` scores labels as prefixes, the old way.
    """

    name: str
    question: str
    labels: tuple[str, ...]
    values: tuple[float, ...]
    end: tuple[str, ...] = ()


YES_NO = Scale("yesno", "Is the proposed answer correct? Answer Yes or No.",
               (" Yes", " No"), (1.0, 0.0))
_FIVE_Q = ("How confident are you that it is correct: Not at all, A little, Somewhat, Quite a "
           "bit or A great deal?")
_FIVE_LABELS = (" Not at all", " A little", " Somewhat", " Quite a bit", " A great deal")
FIVE_POINT = Scale("scale5", _FIVE_Q, _FIVE_LABELS, (0.0, 0.25, 0.5, 0.75, 1.0), end=("\n",))
# the scoring before issue 17 (labels as prefixes, no end marker): the "scale5" values stored in
# results/gemma3-270m-capitals were computed this way
FIVE_POINT_PREFIX = Scale("scale5_prefix", _FIVE_Q, _FIVE_LABELS, (0.0, 0.25, 0.5, 0.75, 1.0))
SCALES = {s.name: s for s in (YES_NO, FIVE_POINT, FIVE_POINT_PREFIX)}
SIGNALS = ("yesno", "scale5", "likelihood", "gold")  # the default set of the experiments
# every name get_fitness knows
KNOWN_SIGNALS = (*SIGNALS, "scale5_prefix", "likelihood_end", "likelihood_norm")


class SurveyFitness:
    """The survey trick: f = expected label value under the normalised label probabilities.

    Results are cached per (item, normalised answer): the evaluation prompt does not depend on
    the generation context, so repeated answers cost nothing.
    """

    def __init__(self, scale: Scale = YES_NO):
        if not isinstance(scale, Scale):
            raise QuasirlValueError(f"scale must be a Scale, got {type(scale).__name__}")
        self.scale = scale
        self.name = scale.name
        self._cache: dict[tuple, np.ndarray] = {}

    def label_probs(self, lm: LM, task: Task, items: Sequence[Item],
                    answers: Sequence[str]) -> np.ndarray:
        """[len(answers), n_labels] label probabilities for each (item, answer)."""
        keys = [(lm, task.fingerprint(), it.id, normalize(a)) for it, a in
                zip(items, answers, strict=True)]
        todo = {k: (it, a) for k, it, a in zip(keys, items, answers, strict=True)
                if k not in self._cache}
        if todo:
            prompts = [task.eval_prompt(it, a, self.scale.question) for it, a in todo.values()]
            probs = label_probs(lm, prompts, self.scale.labels, end=self.scale.end)
            for k, p in zip(todo, probs, strict=True):
                self._cache[k] = p
        return np.array([self._cache[k] for k in keys]).reshape(len(keys), -1)

    def __call__(self, lm: LM, task: Task, items: Sequence[Item],
                 samples: Sequence[Sample]) -> np.ndarray:
        answers = [s.text.strip() for s in samples]
        p = self.label_probs(lm, task, items, answers)
        f = p @ np.asarray(self.scale.values)
        f[[not a for a in answers]] = 0.0  # an empty answer is not an answer
        return np.clip(f, 0.0, 1.0)


class LikelihoodFitness:
    """Own likelihood from the sample's raw log-probs, in three forms:

    * ``likelihood`` (default): f = exp(log p(tokens | prompt) / beta), the answer's tokens
      only; a short answer that the model would have continued still scores high (the form of
      the stored results in ``results/gemma3-270m-capitals``);
    * ``end=True`` (``likelihood_end``): f = exp((log p(tokens | prompt) + log p(end | prompt,
      tokens)) / beta), the probability of the answer as a *complete* answer: the end is the
      end marker the sampler stopped at (a stop string or end-of-generation token,
      ``Sample.end_logprob``);
    * ``normalize=True`` as well (``likelihood_norm``): f = exp(mean / beta) with mean the
      per-token mean log-probability over the answer's n tokens and its end, (log p(tokens) +
      log p(end)) / (n + 1): the geometric-mean token probability, which does not fall with
      the answer's length.

    An empty answer gets f = 0. ``beta`` > 0 tempers the sequence probability (beta = 1: the
    probability itself). A log-probability that cannot be one (NaN, inf, above 0 by more than
    ``LOGPROB_TOL``) raises :class:`LMValueError` instead of becoming f = 1; a sample without
    an end probability (HTTP servers, SyntheticLM) raises :class:`LMError` for the end forms.
    """

    def __init__(self, beta: float = 1.0, end: bool = False, normalize: bool = False):
        if not (is_real_number(beta) and math.isfinite(beta) and beta > 0):
            raise QuasirlValueError(f"beta must be a finite number > 0, got {beta!r}")
        for nm, v in (("end", end), ("normalize", normalize)):
            if not isinstance(v, bool):
                raise QuasirlValueError(f"{nm} must be True or False, got {v!r}")
        if normalize and not end:
            raise QuasirlValueError("normalize=True needs end=True: the per-token mean is over "
                                    "the answer's tokens and its end")
        self.beta, self.end, self.normalize = float(beta), end, normalize
        self.name = "likelihood_norm" if normalize else "likelihood_end" if end else "likelihood"

    def log_likelihood(self, items, samples) -> np.ndarray:
        """The log-probability the fitness tempers, one per sample (see the class)."""
        out = []
        for i, (it, s) in enumerate(zip(items, samples, strict=True)):
            where = f"{self.name} fitness: sample {i} of item {it.id!r} ({s.text!r})"
            # a log-probability above 0 (or NaN, inf) would become f = 1 and be accepted
            lp = check_logprob(s.logprob, where)
            if self.end:
                if s.end_logprob is None:
                    raise LMError(f"{where}: the backend gives no end-of-answer probability; "
                                  "use signal 'likelihood' or a local backend")
                lp += check_logprob(s.end_logprob, f"{where}, end", allow_neg_inf=True)
                if self.normalize:
                    lp /= s.n_tokens + 1
            out.append(lp)
        return np.array(out, dtype=np.float64)

    def __call__(self, lm, task, items, samples) -> np.ndarray:
        lp = self.log_likelihood(items, samples)
        f = np.exp(np.minimum(lp, 0.0) / self.beta)
        f[[not s.text.strip() for s in samples]] = 0.0
        return f


class GoldFitness:
    """The checker as a fitness: 1 for a correct answer, 0 otherwise."""

    name = "gold"

    def __call__(self, lm, task, items, samples) -> np.ndarray:
        return np.array([float(task.check(it, s.text)) for it, s in
                         zip(items, samples, strict=True)])


def get_fitness(name: str, beta: float = 1.0):
    """A fitness signal by name: ``yesno``, ``scale5`` (complete labels), ``scale5_prefix``
    (labels as prefixes, before issue 17), ``likelihood``, ``likelihood_end`` (with the end
    probability), ``likelihood_norm`` (per-token mean, with the end) or ``gold``."""
    if name in SCALES:
        return SurveyFitness(SCALES[name])
    if name == "likelihood":
        return LikelihoodFitness(beta)
    if name == "likelihood_end":
        return LikelihoodFitness(beta, end=True)
    if name == "likelihood_norm":
        return LikelihoodFitness(beta, end=True, normalize=True)
    if name == "gold":
        return GoldFitness()
    raise QuasirlValueError(
        f"signal must be one of {', '.join(map(repr, KNOWN_SIGNALS))}, got {name!r}")


def check_signals(signals) -> tuple[str, ...]:
    """A signal name or a non-empty sequence of them, each one get_fitness knows, as a tuple."""
    signals = (signals,) if isinstance(signals, str) else tuple(signals)
    for i, s in enumerate(signals):
        if s not in KNOWN_SIGNALS:
            raise QuasirlValueError(f"signals[{i}] must be one of {KNOWN_SIGNALS}, got {s!r}")
    if not signals:
        raise QuasirlValueError("signals must name at least one signal")
    return signals


def accept(f, mode: str, threshold: float, u) -> np.ndarray:
    """Acceptance: hard keeps f >= threshold; soft keeps with probability f (u uniform[0,1)).

    ``f`` must hold probabilities (finite, in [0, 1]) and ``threshold`` be finite: a NaN would
    silently accept or reject everything.
    """
    f = np.asarray(f, dtype=np.float64)
    bad = np.flatnonzero(~((f >= 0) & (f <= 1)))
    if bad.size:
        raise QuasirlValueError(f"f[{bad[0]}] = {float(f.flat[bad[0]])!r} must be a probability "
                                "in [0, 1]")
    if mode == "hard":
        check_number("threshold", threshold)
        return f >= threshold
    if mode == "soft":
        return np.asarray(u) < f
    raise QuasirlValueError(f"acceptance must be 'hard' or 'soft', got {mode!r}")
