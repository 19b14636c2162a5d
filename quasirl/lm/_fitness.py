"""Fitness signals (what selection keeps) and acceptance rules.

Three signals, each a number f in [0, 1] per sampled answer:

* the survey trick (:class:`SurveyFitness`): the model reads its own answer in an evaluation
  prompt and we *read* the probabilities of the evaluation labels instead of sampling a verdict:
  f = sum_j p(label_j) v_j, with p normalised over the label set (``YES_NO``: f = p(Yes);
  ``FIVE_POINT``: the expected value on a 0 .. 1 scale "Not at all" .. "A great deal");
* the model's own likelihood of its answer (:class:`LikelihoodFitness`): f = p(answer | prompt)
  ** (1 / beta), sequence-level tempering of the sampling distribution;
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
from ._types import LM, Sample, check_logprob, check_number, is_real_number, label_probs


@dataclass(frozen=True)
class Scale:
    """An evaluation question with its answer labels and the value of each label in [0, 1]."""

    name: str
    question: str
    labels: tuple[str, ...]
    values: tuple[float, ...]


YES_NO = Scale("yesno", "Is the proposed answer correct? Answer Yes or No.",
               (" Yes", " No"), (1.0, 0.0))
FIVE_POINT = Scale(
    "scale5",
    "How confident are you that it is correct: Not at all, A little, Somewhat, Quite a bit "
    "or A great deal?",
    (" Not at all", " A little", " Somewhat", " Quite a bit", " A great deal"),
    (0.0, 0.25, 0.5, 0.75, 1.0))
SCALES = {s.name: s for s in (YES_NO, FIVE_POINT)}
SIGNALS = ("yesno", "scale5", "likelihood", "gold")  # the names get_fitness knows


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
            probs = label_probs(lm, prompts, self.scale.labels)
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
    """Own likelihood: f = exp(log p(answer | prompt) / beta), from the sample's raw log-probs.

    An empty answer gets f = 0. ``beta`` > 0 tempers the sequence probability (beta = 1: the
    probability itself). A log-probability that cannot be one (NaN, inf, above 0 by more than
    ``LOGPROB_TOL``) raises :class:`LMValueError` instead of becoming f = 1.
    """

    def __init__(self, beta: float = 1.0):
        if not (is_real_number(beta) and math.isfinite(beta) and beta > 0):
            raise QuasirlValueError(f"beta must be a finite number > 0, got {beta!r}")
        self.beta = float(beta)
        self.name = "likelihood"

    def __call__(self, lm, task, items, samples) -> np.ndarray:
        # a log-probability above 0 (or NaN, inf) would become f = 1 and be accepted: refuse it
        lp = np.array([check_logprob(s.logprob, f"likelihood fitness: sample {i} of item "
                                     f"{it.id!r} ({s.text!r})")
                       for i, (it, s) in enumerate(zip(items, samples, strict=True))],
                      dtype=np.float64)
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
    """A fitness signal by name: ``yesno``, ``scale5``, ``likelihood`` or ``gold``."""
    if name in SCALES:
        return SurveyFitness(SCALES[name])
    if name == "likelihood":
        return LikelihoodFitness(beta)
    if name == "gold":
        return GoldFitness()
    raise QuasirlValueError(
        f"signal must be one of {', '.join(map(repr, SIGNALS))}, got {name!r}")


def check_signals(signals) -> tuple[str, ...]:
    """A signal name or a non-empty sequence of them, each one of ``SIGNALS``, as a tuple."""
    signals = (signals,) if isinstance(signals, str) else tuple(signals)
    for i, s in enumerate(signals):
        if s not in SIGNALS:
            raise QuasirlValueError(f"signals[{i}] must be one of {SIGNALS}, got {s!r}")
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
