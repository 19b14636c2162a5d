"""A token-level synthetic language model whose next-token logits are exactly known.

Where :class:`quasirl.lm.SyntheticLM` speaks the text protocol of whole answers (for the
statistics of the chaining loop), this model works token by token like the local backends: it is
a :class:`quasirl.lm._token.TokenLM`, so it samples through the same code (``generate``), scores
through the same code, and its answer tree (:func:`quasirl.lm.answer_tree`) can be checked
against a brute-force enumeration and against its own samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from .._validate import QuasirlValueError, check_int
from ._token import TokenLM
from ._types import check_number

# Pieces of the default vocabulary: an end-of-generation token, two words, a letter, a newline
# (a stop string on its own), a token that *carries* the newline after a letter ("b\n": with
# stop "\n" it ends the answer with its text "b" kept) and a double newline.
DEFAULT_PIECES = ("<eos>", " a", " b", "c", "\n", "b\n", "\n\n")


class SyntheticTokenLM(TokenLM):
    """A small-vocabulary token model with seeded, deterministic next-token logits.

    The logits after a token sequence ``ids`` (prompt with BOS, then answer tokens) are
    ``scale * z`` with z ~ N(0, 1)^V drawn from a generator seeded by (seed, ids), plus
    ``end_bias`` on the end-of-generation tokens: a fixed function of the whole prefix, so any
    probability is computable by hand. ``logits`` (a function of the tuple of ids returning V
    numbers) replaces that rule, to craft trees.

    Tokenisation is greedy longest match over the pieces (the end-of-generation pieces are
    special and never matched); a character no piece starts with becomes a prompt-only token
    (id V + 1 + its code point) that the model never generates, and BOS is id V, so
    ``detokenize(tokenize(text)) == text``. ``calls`` counts logits evaluations and
    ``evaluated`` the tokens a single-sequence KV cache would have had to run for them (kept like
    :class:`quasirl.lm.LlamaCppLM`'s: the longest common prefix with the previous sequence is
    reused, and the last position is always run, since its logits exist only right after).

    Args:
      pieces: the text of each token id (V = len(pieces), at least 2).
      eog: ids of the end-of-generation tokens (their text is empty in ``detokenize``).
      seed: fixes the logits.
      scale: standard deviation of the seeded logits (> 0).
      end_bias: added to the logits of the end-of-generation tokens.
      logits: optional function ``ids_tuple -> [V]`` used instead of the seeded rule.
    """

    def __init__(self, pieces: Sequence[str] = DEFAULT_PIECES, eog: Sequence[int] = (0,),
                 seed: int = 0, scale: float = 1.5, end_bias: float = 0.0,
                 logits: Callable | None = None, name: str = "synthetic-tokens"):
        if isinstance(pieces, str):
            raise QuasirlValueError("pieces must be a sequence of strings, not a single string")
        pieces = tuple(pieces)
        if len(pieces) < 2 or not all(isinstance(p, str) and p for p in pieces):
            raise QuasirlValueError(
                f"pieces must hold at least 2 non-empty strings, got {pieces!r}")
        if len(set(pieces)) != len(pieces):
            raise QuasirlValueError(f"pieces must be distinct, got {pieces!r}")
        V = len(pieces)
        eog = tuple(check_int(f"eog[{i}]", e, 0, V - 1) for i, e in enumerate(eog))
        self.pieces, self._eog = pieces, frozenset(eog)
        self.seed = check_int("seed", seed, 0)
        self.scale = check_number("scale", scale)
        if not self.scale > 0:
            raise QuasirlValueError(f"scale must be > 0, got {scale!r}")
        self.end_bias = check_number("end_bias", end_bias)
        if logits is not None and not callable(logits):
            raise QuasirlValueError(f"logits must be a function of the ids, got {logits!r}")
        self._logits_fn = logits
        self.name = name
        self.n_vocab = V
        self.bos = V
        # the pieces tokenize() may match, longest first
        self._match = sorted((p for t, p in enumerate(pieces) if t not in self._eog),
                             key=len, reverse=True)
        self._id = {p: t for t, p in enumerate(pieces)}
        self.calls = 0
        self.evaluated = 0
        self._cache: list[int] = []

    # -- TokenLM ------------------------------------------------------------------------------
    def tokenize(self, text: str, bos: bool) -> list[int]:
        ids = [self.bos] if bos else []
        i = 0
        while i < len(text):
            piece = next((p for p in self._match if text.startswith(p, i)), None)
            if piece is None:
                ids.append(self.n_vocab + 1 + ord(text[i]))
                i += 1
            else:
                ids.append(self._id[piece])
                i += len(piece)
        return ids

    def detokenize(self, ids) -> str:
        out = []
        for t in ids:
            t = int(t)
            if t < self.n_vocab:
                out.append("" if t in self._eog else self.pieces[t])
            elif t > self.n_vocab:
                out.append(chr(t - self.n_vocab - 1))
        return "".join(out)

    def eog_ids(self) -> frozenset[int]:
        return self._eog

    def token_pieces(self) -> list[str]:
        return list(self.pieces)

    def next_logits(self, ids) -> np.ndarray:
        ids = [int(t) for t in ids]
        if not ids:
            raise QuasirlValueError("cannot predict after an empty token sequence")
        common = 0
        for a, b in zip(self._cache, ids, strict=False):
            if a != b:
                break
            common += 1
        self.calls += 1
        self.evaluated += len(ids) - min(common, len(ids) - 1)
        self._cache = ids
        return self.logits_of(ids)

    # -- the model itself -----------------------------------------------------------------------
    def logits_of(self, ids) -> np.ndarray:
        """The logits after ``ids`` ([V] float64), without touching the counters."""
        ids = tuple(int(t) for t in ids)
        if self._logits_fn is not None:
            x = np.asarray(self._logits_fn(ids), dtype=np.float64)
            if x.shape != (self.n_vocab,) or np.isnan(x).any() or (x == math.inf).any():
                raise QuasirlValueError(
                    f"logits({ids!r}) must be {self.n_vocab} numbers, none NaN or +inf, got "
                    f"{x!r}")
            return x
        z = np.random.default_rng([self.seed, *ids]).standard_normal(self.n_vocab)
        x = self.scale * z
        x[sorted(self._eog)] += self.end_bias
        return x
