"""The backend protocol shared by every language model, and the survey-trick label scoring.

A backend samples continuations with their per-token log-probabilities (raw model
log-probabilities at temperature 1, never renormalised by top-k / top-p / temperature) and scores
given continuations. Everything above the backends (fitness signals, the chaining loop, the
validation experiments) talks only to this protocol.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from .._validate import QuasirlValueError, check_int


class LMError(RuntimeError):
    """A backend could not do what was asked (server down after retries, unusable scores...)."""


class LMValueError(LMError, ValueError):
    """A model, a server or a fitness signal gave a number that cannot be right: NaN or inf, a
    log-probability above 0, a probability outside [0, 1]. The message names the quantity, the
    value and where it came from (server or backend, prompt or round / query / sample)."""


# A log-probability may exceed 0 by this much (nats) and is then read as log 1: float32 servers
# round log p(token) for p ~ 1 to a few 1e-7 above 0. Anything larger is a broken number.
LOGPROB_TOL = 1e-4


def is_real_number(value) -> bool:
    """True for a real number (Python or numpy int or float), False for a bool or anything
    else: the one test of "a number" in ``quasirl.lm`` (integers: ``check_int``)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Real | np.integer
                                                      | np.floating)


def check_logprob(value, where: str, *, allow_neg_inf: bool = False) -> float:
    """``value`` as a float if it can be a log-probability, else :class:`LMValueError`.

    It must be a real number, not NaN, not +inf and <= LOGPROB_TOL; -inf (probability 0) only
    with ``allow_neg_inf`` (a score may be impossible; a sampled token never is).
    """
    if not is_real_number(value):
        raise LMValueError(f"{where}: log-probability must be a number, got {value!r}")
    x = float(value)
    if math.isnan(x) or x == math.inf or (x == -math.inf and not allow_neg_inf):
        raise LMValueError(f"{where}: log-probability {x!r} is not finite")
    if x > LOGPROB_TOL:
        raise LMValueError(f"{where}: log-probability {x!r} is > 0 (a probability above 1)")
    return x


def check_probability(value, where: str, name: str = "probability") -> float:
    """``value`` as a float if it is a probability (finite, in [0, 1]), else LMValueError."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise LMValueError(f"{where}: {name} must be a number, got {value!r}") from None
    if not 0.0 <= x <= 1.0:  # also refuses NaN
        raise LMValueError(f"{where}: {name} {x!r} is not a probability in [0, 1]")
    return x


def check_sample(sample: Sample, where: str) -> Sample:
    """Refuse a sample whose token log-probabilities cannot be right (see check_logprob)."""
    if not isinstance(sample, Sample):
        raise LMValueError(f"{where}: a backend must return Sample objects, got "
                           f"{type(sample).__name__}")
    for t, v in enumerate(sample.token_logprobs):
        check_logprob(v, f"{where}, token {t}" if len(sample.token_logprobs) > 1 else where)
    if sample.end_logprob is not None:
        check_logprob(sample.end_logprob, f"{where}, end of answer", allow_neg_inf=True)
    return sample


def check_number(name: str, value, minimum: float | None = None) -> float:
    """A finite real argument (optionally >= ``minimum``), else QuasirlValueError naming it."""
    if not is_real_number(value) or not math.isfinite(value):
        raise QuasirlValueError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise QuasirlValueError(f"{name} must be >= {minimum:g}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Sample:
    """One sampled continuation.

    ``token_logprobs[i]`` is the raw model log-probability log p(token_i | prompt, token_<i)
    (temperature 1, full vocabulary), whatever temperature the token was sampled at.
    ``finish`` is ``"stop"`` (a stop string or end-of-sequence token) or ``"length"``.
    ``end_logprob`` is log p(end | prompt, tokens): the probability that the answer ends right
    after its tokens, i.e. that the next token is an end-of-generation token or a token whose
    text starts with a stop string (the sampler's end marker); 0.0 when the last token itself
    carried the stop string; None when the backend cannot tell (servers, SyntheticLM).
    """

    text: str
    token_logprobs: tuple[float, ...]
    finish: str = "stop"
    token_ids: tuple[int, ...] | None = field(default=None, compare=False)
    end_logprob: float | None = field(default=None, compare=False)

    @property
    def logprob(self) -> float:
        """log p(continuation | prompt): the sum of the token log-probabilities."""
        return float(math.fsum(self.token_logprobs))

    @property
    def n_tokens(self) -> int:
        return len(self.token_logprobs)


@dataclass(frozen=True)
class Score:
    """Log-probability of a given continuation: the total and one value per token.

    ``end_logprob`` (from ``score_complete`` only) is log p(end marker | prompt, continuation);
    ``total`` then includes it: the log-probability of the continuation as a complete answer.
    """

    total: float
    token_logprobs: tuple[float, ...]
    end_logprob: float | None = None


@runtime_checkable
class LM(Protocol):
    """What every backend offers (``LlamaCppLM``, ``TransformersLM``, ``OpenAICompatibleLM``,
    ``SyntheticLM``)."""

    name: str

    def generate(self, prompts: Sequence[str], n: int = 1, temperature: float = 1.0,
                 max_tokens: int = 16, stop: Sequence[str] = ("\n",),
                 seed: int = 0) -> list[list[Sample]]:
        """``n`` samples per prompt; sample j of prompt i is seeded by (seed, i, j)."""
        ...

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[Score]:
        """log p(continuation | prompt) for each pair, in total and per token."""
        ...


def sample_seed(seed: int, *path: int) -> int:
    """A 63-bit seed derived from ``seed`` and an index path (independent streams, no reuse)."""
    state = np.random.SeedSequence([int(seed) & (2**63 - 1), *[int(p) for p in path]])
    return int(state.generate_state(1, np.uint64)[0] >> np.uint64(1))


def check_generate_args(prompts, n, temperature, max_tokens, stop, seed) -> tuple[list[str], ...]:
    """Validate the arguments of ``generate`` (shared by all backends)."""
    prompts = check_prompts("prompts", prompts)
    n = check_int("n", n, 1)
    max_tokens = check_int("max_tokens", max_tokens, 1)
    t = float(temperature)
    if not math.isfinite(t) or t < 0:
        raise QuasirlValueError(f"temperature must be finite and >= 0, got {temperature!r}")
    return prompts, n, t, max_tokens, check_stop(stop), check_int("seed", seed)


def check_prompts(name: str, prompts) -> list[str]:
    if isinstance(prompts, str):
        raise QuasirlValueError(f"{name} must be a sequence of strings, not a single string")
    prompts = list(prompts)
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise QuasirlValueError(f"{name}[{i}] must be a string, got {type(p).__name__}")
    return prompts


def check_score_args(prompts, continuations) -> tuple[list[str], list[str]]:
    prompts = check_prompts("prompts", prompts)
    continuations = check_prompts("continuations", continuations)
    if len(prompts) != len(continuations):
        raise QuasirlValueError(
            f"prompts and continuations must have the same length, got {len(prompts)} and "
            f"{len(continuations)}")
    for i, c in enumerate(continuations):
        if not c:
            raise QuasirlValueError(f"continuations[{i}] is empty: nothing to score")
    return prompts, continuations


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the first occurrence of any stop string; return (text, stopped)."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def check_stop(stop) -> tuple[str, ...]:
    """Stop strings as a tuple of non-empty strings (a single string is one stop string)."""
    if isinstance(stop, str):
        stop = (stop,)
    stop = tuple(stop or ())
    for i, s in enumerate(stop):
        if not isinstance(s, str) or not s:
            raise QuasirlValueError(f"stop[{i}] must be a non-empty string, got {s!r}")
    return stop


def label_probs(lm: LM, prompts: Sequence[str], labels: Sequence[str],
                end: Sequence[str] = ()) -> np.ndarray:
    """The survey trick: probabilities of evaluation labels, read instead of sampled.

    For each prompt, p(label_j) = exp(l_j) / sum_i exp(l_i), normalised over the label set.
    Without ``end``, l_j = log p(label_j | prompt) is the log-probability that the answer
    *starts with* label j: a label that is a prefix of another (" 1" of " 10") also collects
    the other's mass, and a short label collects the mass of every longer answer beginning with
    it. With ``end`` (the end markers that follow a label in the prompt format, e.g. ("\n",))
    each label is scored as a *complete* answer, l_j = log p(label_j, end | prompt), through
    the backend's ``score_complete`` (local backends: end = an end-of-generation token or a
    token whose text starts with an end marker; servers: the first end marker as text). A
    backend without ``score_complete`` (SyntheticLM, whose label scores are already those of
    complete verdicts) is scored with ``score``.

    Returns an array [len(prompts), len(labels)] whose rows sum to 1. A score that cannot be a
    log-probability (NaN, +inf, above 0) raises :class:`LMValueError`; -inf is a label of
    probability 0.
    """
    prompts = check_prompts("prompts", prompts)
    labels = check_prompts("labels", labels)
    end = check_stop(end)
    if len(labels) < 2:
        raise QuasirlValueError(f"labels must hold at least 2 labels, got {len(labels)}")
    if len(set(labels)) != len(labels):
        raise QuasirlValueError(f"labels must be distinct, got {labels!r}")
    if not prompts:
        return np.zeros((0, len(labels)))
    flat_p = [p for p in prompts for _ in labels]
    flat_c = [c for _ in prompts for c in labels]
    complete = getattr(lm, "score_complete", None) if end else None
    scores = lm.score(flat_p, flat_c) if complete is None else complete(flat_p, flat_c, end)
    if len(scores) != len(flat_p):
        raise LMError(f"backend {getattr(lm, 'name', type(lm).__name__)} returned "
                      f"{len(scores)} scores for {len(flat_p)} (prompt, label) pairs")
    name = getattr(lm, "name", type(lm).__name__)
    lp = np.array([check_logprob(getattr(s, "total", s), f"backend {name}, prompt "
                                 f"{i // len(labels)}, label {labels[i % len(labels)]!r}",
                                 allow_neg_inf=True)
                   for i, s in enumerate(scores)], dtype=np.float64)
    lp = np.minimum(lp.reshape(len(prompts), len(labels)), 0.0)
    m = lp.max(axis=1, keepdims=True)
    if not np.all(np.isfinite(m)):
        i = int(np.argmin(np.isfinite(m[:, 0])))
        raise LMError(f"every label has probability 0 after prompts[{i}]")
    w = np.exp(lp - m)
    return w / w.sum(axis=1, keepdims=True)


class CachedLM:
    """Memoises ``generate`` and ``score`` of a backend (identical calls return stored results).

    The chaining arms of one experiment share round 0 (same prompts, same seeds), so wrapping the
    backend once lets the control arms reuse the first arm's round-0 samples.
    """

    def __init__(self, lm: LM):
        self.lm = lm
        self.name = lm.name
        self._gen: dict = {}
        self._score: dict = {}

    def generate(self, prompts, n=1, temperature=1.0, max_tokens=16, stop=("\n",), seed=0):
        key = (tuple(prompts), n, float(temperature), max_tokens,
               (stop,) if isinstance(stop, str) else tuple(stop), seed)
        if key not in self._gen:
            self._gen[key] = self.lm.generate(prompts, n=n, temperature=temperature,
                                              max_tokens=max_tokens, stop=stop, seed=seed)
        return [list(row) for row in self._gen[key]]

    def score(self, prompts, continuations):
        prompts, continuations = check_score_args(prompts, continuations)
        todo = [(p, c) for p, c in zip(prompts, continuations, strict=True)
                if (p, c) not in self._score]
        if todo:
            for pc, s in zip(todo, self.lm.score([p for p, _ in todo], [c for _, c in todo]),
                             strict=True):
                self._score[pc] = s
        return [self._score[(p, c)] for p, c in zip(prompts, continuations, strict=True)]

    def __getattr__(self, attr):
        # score_complete only when the wrapped backend has it (label_probs asks with getattr)
        if attr == "score_complete" and hasattr(self.lm, "score_complete"):
            return self._score_complete
        raise AttributeError(attr)

    def _score_complete(self, prompts, continuations, end=("\n",)):
        prompts, continuations = check_score_args(prompts, continuations)
        end = check_stop(end)
        keys = [(p, c, end) for p, c in zip(prompts, continuations, strict=True)]
        todo = [k for k in dict.fromkeys(keys) if k not in self._score]
        if todo:
            got = self.lm.score_complete([k[0] for k in todo], [k[1] for k in todo], end)
            for k, s in zip(todo, got, strict=True):
                self._score[k] = s
        return [self._score[k] for k in keys]
