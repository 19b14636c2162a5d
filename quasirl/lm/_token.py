"""Sampling and scoring on top of any model that gives next-token logits (local backends).

Both local backends (llama.cpp and transformers) share this code, so on the same weights they
differ only in the logits: a token is drawn by inverting the cumulative distribution of
p ∝ exp(logit / T) with one seeded uniform (no top-k / top-p / min-p), T = 0 is argmax (ties:
lowest id), and the recorded per-token log-probability is the raw log-softmax of the logits at
temperature 1.
"""

from __future__ import annotations

import numpy as np

from ._types import (
    Sample,
    Score,
    check_generate_args,
    check_logprob,
    check_sample,
    check_score_args,
    sample_seed,
    truncate_at_stop,
)


def log_softmax(logits) -> np.ndarray:
    """Log-probabilities from logits in float64 (max subtracted first)."""
    x = np.asarray(logits, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def logsumexp(logits) -> float:
    """log sum exp of a logit vector, in float64."""
    x = np.asarray(logits, dtype=np.float64)
    m = x.max()
    return float(m + np.log(np.exp(x - m).sum()))


def sample_token(logits, t: float, u: float) -> int:
    """Draw from p ∝ exp(logits / t) by inverting its CDF at ``u`` in [0, 1); t = 0: argmax."""
    x = np.asarray(logits, dtype=np.float64)
    if t == 0:
        return int(np.argmax(x))
    c = np.cumsum(np.exp((x - x.max()) / t))
    return int(min(np.searchsorted(c, u * c[-1], side="right"), x.size - 1))


class TokenLM:
    """Base class: subclasses provide tokenisation and next-token log-probabilities."""

    name = "token-lm"

    # -- what a subclass implements ------------------------------------------------------
    def tokenize(self, text: str, bos: bool) -> list[int]:
        raise NotImplementedError

    def detokenize(self, ids: list[int]) -> str:
        raise NotImplementedError

    def eog_ids(self) -> frozenset[int]:
        """End-of-generation token ids."""
        raise NotImplementedError

    def next_logits(self, ids: list[int]) -> np.ndarray:
        """Raw next-token logits after ``ids`` ([V])."""
        raise NotImplementedError

    def next_logprobs(self, ids: list[int]) -> np.ndarray:
        """log p(. | ids) over the vocabulary (float64 [V])."""
        return log_softmax(self.next_logits(ids))

    def continuation_logprobs(self, prefix: list[int], cont: list[int]) -> np.ndarray:
        """log p(cont_i | prefix, cont_<i) for each i (default: one step at a time)."""
        out = np.empty(len(cont))
        ids = list(prefix)
        for i, t in enumerate(cont):
            x = self.next_logits(ids)
            out[i] = float(x[t]) - logsumexp(x)
            ids.append(t)
        return out

    # -- the protocol ---------------------------------------------------------------------
    def generate(self, prompts, n=1, temperature=1.0, max_tokens=16, stop=("\n",), seed=0):
        """``n`` samples per prompt at ``temperature`` (0 = greedy) with raw log-probs.

        Sample j of prompt i draws its uniforms from a generator seeded by (seed, i, j), so a
        sample is reproducible on its own. Generation stops at end-of-sequence, at a stop
        string (cut from the text; the token that completed it is dropped) or after
        ``max_tokens`` tokens.
        """
        prompts, n, t, max_tokens, stop, seed = check_generate_args(
            prompts, n, temperature, max_tokens, stop, seed)
        out = []
        eog = self.eog_ids()
        for i, prompt in enumerate(prompts):
            pids = self.tokenize(prompt, bos=True)
            row = []
            for j in range(n):
                rng = np.random.default_rng(sample_seed(seed, i, j))
                row.append(check_sample(self._sample_one(pids, t, max_tokens, stop, rng, eog),
                                        f"model {self.name}: prompt {i}, sample {j}"))
            out.append(row)
        return out

    def _sample_one(self, pids, t, max_tokens, stop, rng, eog) -> Sample:
        gen: list[int] = []
        lps: list[float] = []
        finish = "length"
        text = ""
        for _ in range(max_tokens):
            x = self.next_logits(pids + gen)
            tok = sample_token(x, t, rng.random())
            if tok in eog:
                finish = "stop"
                break
            gen.append(tok)
            lps.append(float(x[tok]) - logsumexp(x))
            full = self.detokenize(gen)
            cut, stopped = truncate_at_stop(full, stop)
            if stopped:
                finish = "stop"
                if self.detokenize(gen[:-1]) == cut:
                    # the last token only added the stop string: not part of the answer
                    gen.pop()
                    lps.pop()
                text = cut
                break
            text = full
        return Sample(text=text, token_logprobs=tuple(lps), finish=finish, token_ids=tuple(gen))

    def score(self, prompts, continuations):
        """log p(continuation | prompt): prompt tokens (with BOS) then continuation tokens."""
        prompts, continuations = check_score_args(prompts, continuations)
        out = []
        for i, (p, c) in enumerate(zip(prompts, continuations, strict=True)):
            lp = self.continuation_logprobs(self.tokenize(p, bos=True),
                                            self.tokenize(c, bos=False))
            vals = tuple(check_logprob(x, f"model {self.name}: score {i} ({c!r}), token {t}",
                                       allow_neg_inf=True) for t, x in enumerate(lp))
            out.append(Score(total=float(np.sum(vals)), token_logprobs=vals))
        return out
