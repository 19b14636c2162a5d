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
    check_stop,
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
    """Base class: subclasses provide tokenisation and next-token log-probabilities.

    Scoring tokenises the prompt (with BOS) and the continuation separately and concatenates
    the ids ("split" tokenisation): that is how samples arise, since the sampler draws tokens
    after the tokenised prompt. Tokenising prompt + continuation jointly can merge tokens across
    the boundary (a prompt ending in a space) and then scores a different token sequence.
    """

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

    # -- what a subclass may override for speed --------------------------------------------
    def token_pieces(self) -> list[str]:
        """The text of each token id on its own (used to find the end-marker tokens)."""
        raise NotImplementedError

    def prefix_logits(self, ids: list[int]) -> np.ndarray:
        """Logits after a prefix that many calls share (a prompt): backends may cache them."""
        return self.next_logits(ids)

    def continuation_rows(self, prefix: list[int], cont: list[int]) -> np.ndarray:
        """Logits after prefix + cont[:i] for i = 0 .. len(cont) ([len(cont) + 1, V]): the
        rows that score each continuation token and the token after it (its end)."""
        ids = list(prefix)
        rows = [self.prefix_logits(ids)]
        for t in cont:
            ids.append(t)
            rows.append(self.next_logits(ids))
        return np.array(rows)

    # -- shared ---------------------------------------------------------------------------
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

    def end_ids(self, stop) -> np.ndarray:
        """Token ids that end an answer under stop strings ``stop``: the end-of-generation
        tokens and every token whose text starts with a stop string (sorted int64 array)."""
        stop = tuple(stop)
        cache = self.__dict__.setdefault("_end_ids", {})
        if stop not in cache:
            if stop:
                pieces = self.token_pieces()
                ids = {t for t, p in enumerate(pieces) if p.startswith(stop)}
            else:
                ids = set()
            cache[stop] = np.array(sorted(ids | set(self.eog_ids())), dtype=np.int64)
        return cache[stop]

    def end_logprob(self, logits, stop) -> float:
        """log p(end | ...) from the logits after an answer: log sum_{t in end_ids} p(t)."""
        x = np.asarray(logits, dtype=np.float64)
        e = self.end_ids(stop)
        if e.size == 0:
            return -np.inf
        return logsumexp(x[e]) - logsumexp(x)

    # -- the protocol ---------------------------------------------------------------------
    def generate(self, prompts, n=1, temperature=1.0, max_tokens=16, stop=("\n",), seed=0):
        """``n`` samples per prompt at ``temperature`` (0 = greedy) with raw log-probs.

        Sample j of prompt i draws its uniforms from a generator seeded by (seed, i, j), so a
        sample is reproducible on its own. Generation stops at end-of-sequence, at a stop
        string (cut from the text; the token that completed it is dropped) or after
        ``max_tokens`` tokens. Each sample carries ``end_logprob``, log p(end | prompt, its
        tokens) (see :class:`Sample`); a sample cut by ``max_tokens`` costs one more step for
        it. The prompt is evaluated once for all its samples.
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
        end = None
        for _ in range(max_tokens):
            x = self.next_logits(pids + gen) if gen else self.prefix_logits(pids)
            tok = sample_token(x, t, rng.random())
            if tok in eog:
                finish = "stop"
                end = self.end_logprob(x, stop)
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
                    end = self.end_logprob(x, stop)
                else:  # the last token carried the stop string: its log-prob holds the end
                    end = 0.0
                text = cut
                break
            text = full
        if end is None:  # cut by max_tokens: the probability that the answer ends here
            end = self.end_logprob(self.next_logits(pids + gen), stop)
        return Sample(text=text, token_logprobs=tuple(lps), finish=finish, token_ids=tuple(gen),
                      end_logprob=float(end))

    def _tokenized(self, prompts, continuations):
        pids = {p: self.tokenize(p, bos=True) for p in dict.fromkeys(prompts)}
        return [(pids[p], self.tokenize(c, bos=False)) for p, c in
                zip(prompts, continuations, strict=True)]

    def score(self, prompts, continuations):
        """log p(continuation | prompt): prompt tokens (with BOS) then continuation tokens,
        each tokenised on its own (split tokenisation, as the sampler generates)."""
        prompts, continuations = check_score_args(prompts, continuations)
        out = []
        for i, (p, c) in enumerate(self._tokenized(prompts, continuations)):
            lp = self.continuation_logprobs(p, c)
            vals = tuple(check_logprob(x, f"model {self.name}: score {i} "
                                          f"({continuations[i]!r}), token {t}",
                                       allow_neg_inf=True) for t, x in enumerate(lp))
            out.append(Score(total=float(np.sum(vals)), token_logprobs=vals))
        return out

    def score_complete(self, prompts, continuations, end=("\n",)):
        """log p(continuation, end | prompt): each continuation as a *complete* answer.

        The end is what stops the sampler right after the continuation: an end-of-generation
        token or a token whose text starts with one of the strings ``end`` (so "1" is not
        credited with the mass of "10"). One forward pass per continuation (over its tokens,
        after the cached prompt); ``Score.end_logprob`` holds the end's log-probability and
        ``total`` includes it.
        """
        prompts, continuations = check_score_args(prompts, continuations)
        end = check_stop(end)
        out = []
        for i, (p, c) in enumerate(self._tokenized(prompts, continuations)):
            rows = self.continuation_rows(p, c)
            lse = np.array([logsumexp(r) for r in rows])
            where = f"model {self.name}: score {i} ({continuations[i]!r})"
            vals = tuple(check_logprob(float(r[t]) - z, f"{where}, token {k}",
                                       allow_neg_inf=True)
                         for k, (r, t, z) in enumerate(zip(rows, c, lse, strict=False)))
            e = check_logprob(self.end_logprob(rows[-1], end), f"{where}, end",
                              allow_neg_inf=True)
            out.append(Score(total=float(np.sum(vals) + e), token_logprobs=vals, end_logprob=e))
        return out
