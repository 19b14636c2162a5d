"""Local GGUF models through llama-cpp-python (the default backend).

llama-cpp-python 0.3.x no longer fills ``Llama.scores`` in ``eval`` unless the model was built
with ``logits_all=True`` (which allocates n_ctx x n_vocab floats: 2 GiB for Gemma 3's 262k
vocabulary). This backend therefore evaluates with ``logits_all=False`` and reads the last
position's logits straight from the llama.cpp context, keeping the KV cache of the longest common
prefix between calls (prompts that share a prefix are evaluated once). The logits after recent
prompts are kept too (a few rows), so the samples of one prompt and the labels scored after one
evaluation prompt evaluate the prompt once and then only their own tokens, each continuation in
one batch (``benchmarks/b6_lm.py`` measures this against llama.cpp's raw rate).
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .._validate import QuasirlValueError
from ._token import TokenLM, logsumexp


def default_threads() -> int:
    """Threads for CPU inference: every core this process may use (at most 8), but only one
    when the machine is already busy (load average >= cores): llama.cpp's and torch's worker
    threads spin while they wait for each other, and on an oversubscribed machine a second
    thread makes decoding several times slower (measured: 3x on 2 shared cores)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0] >= n
    except OSError:  # pragma: no cover
        busy = False
    return 1 if busy else max(1, min(8, n))


class LlamaCppLM(TokenLM):
    """A GGUF model run by llama.cpp (via llama-cpp-python), on CPU or GPU.

    Args:
      path: the ``.gguf`` file.
      n_ctx: context length in tokens.
      n_threads: CPU threads (default: all usable cores, at most 8).
      n_gpu_layers: layers offloaded to a GPU when llama.cpp was built with one (-1 = all).
      name: label used in records (default: the file name).
    """

    def __init__(self, path, n_ctx: int = 2048, n_threads: int | None = None,
                 n_gpu_layers: int = 0, name: str | None = None):
        path = Path(path)
        if not path.is_file():
            raise QuasirlValueError(f"path must be an existing .gguf file, got {str(path)!r}")
        from llama_cpp import Llama, llama_cpp

        self._llama_cpp = llama_cpp
        # one thread count for decoding and for batches (prompts, scored continuations):
        # llama-cpp-python's batch default is every core, so --threads 1 alone still ran two
        # spinning threads per process, and two such runs on 2 cores went 5x slower in all
        threads = n_threads or default_threads()
        with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
            self.llm = Llama(model_path=str(path), n_ctx=int(n_ctx), logits_all=False,
                             n_threads=threads, n_threads_batch=threads,
                             n_gpu_layers=int(n_gpu_layers), verbose=False)
        self.path = path
        self.name = name or path.name
        self.n_ctx = int(n_ctx)
        self.n_vocab = self.llm.n_vocab()
        vocab = self.llm._model.vocab
        self._eog = frozenset(t for t in range(self.n_vocab)
                              if llama_cpp.llama_vocab_is_eog(vocab, t))
        self._add_bos = bool(self.llm._model.add_bos_token())
        self._prefix_rows: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self._pieces: list[str] | None = None

    PREFIX_ROWS = 8  # logits rows kept for recent prompts (one row: n_vocab float32)

    def token_pieces(self) -> list[str]:
        if self._pieces is None:
            m = self.llm._model
            self._pieces = [m.token_to_piece(t).rstrip(b"\0").decode("utf-8", errors="replace")
                            for t in range(self.n_vocab)]
        return self._pieces

    def tokenize(self, text: str, bos: bool) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=bos and self._add_bos,
                                      special=False))

    def detokenize(self, ids) -> str:
        return self.llm.detokenize(list(ids)).decode("utf-8", errors="replace")

    def eog_ids(self) -> frozenset[int]:
        return self._eog

    def _sync(self, ids: list[int]) -> None:
        """Make the KV cache hold exactly ``ids`` (reusing the longest cached prefix)."""
        llm = self.llm
        cached = llm.input_ids[: llm.n_tokens]
        m = min(len(cached), len(ids))
        common = int(np.argmin(np.append(cached[:m] == np.asarray(ids[:m], dtype=cached.dtype),
                                         False)))
        llm.n_tokens = common
        if common < len(ids):
            llm.eval(ids[common:])
        else:
            llm._ctx.kv_cache_seq_rm(-1, common, -1)

    def _decode_rows(self, tokens: list[int]) -> np.ndarray:
        """Append ``tokens`` to the cache and return the logits after each of them [n, V]."""
        llm = self.llm
        rows = []
        for i in range(0, len(tokens), llm.n_batch):
            chunk = tokens[i: i + llm.n_batch]
            n_past = llm.n_tokens
            llm._ctx.kv_cache_seq_rm(-1, n_past, -1)
            llm._batch.set_batch(batch=chunk, n_past=n_past, logits_all=True)
            llm._ctx.decode(llm._batch)
            llm.input_ids[n_past: n_past + len(chunk)] = chunk
            llm.n_tokens = n_past + len(chunk)
            for j in range(len(chunk)):
                ptr = self._llama_cpp.llama_get_logits_ith(llm._ctx.ctx, j)
                rows.append(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy())
        return np.array(rows)

    def _check_len(self, n: int) -> None:
        if n > self.n_ctx:
            raise QuasirlValueError(
                f"sequence of {n} tokens exceeds the context length n_ctx={self.n_ctx}")

    def next_logits(self, ids) -> np.ndarray:
        ids = list(ids)
        if not ids:
            raise QuasirlValueError("cannot predict after an empty token sequence")
        self._check_len(len(ids))
        # the logits of the last position exist only right after evaluating it
        self._sync(ids[:-1])
        return self._decode_rows(ids[-1:])[0]

    def prefix_logits(self, ids) -> np.ndarray:
        """Logits after ``ids``, remembered for the last PREFIX_ROWS prefixes (they depend on
        the ids only, not on what the KV cache holds)."""
        key = tuple(ids)
        row = self._prefix_rows.get(key)
        if row is None:
            row = self.next_logits(ids)
            self._prefix_rows[key] = row
            while len(self._prefix_rows) > self.PREFIX_ROWS:
                self._prefix_rows.popitem(last=False)
        else:
            self._prefix_rows.move_to_end(key)
        return row

    def continuation_rows(self, prefix, cont) -> np.ndarray:
        """The prompt's logits (cached) and one batch over the continuation's tokens."""
        prefix, cont = list(prefix), list(cont)
        if not prefix:
            raise QuasirlValueError("cannot score after an empty prompt")
        self._check_len(len(prefix) + len(cont))
        first = self.prefix_logits(prefix)
        if not cont:
            return first[None]
        self._sync(prefix)
        return np.concatenate([first[None], self._decode_rows(cont)])

    def continuation_logprobs(self, prefix, cont) -> np.ndarray:
        """All continuation positions in one batch (after the cached prompt logits)."""
        rows = self.continuation_rows(prefix, list(cont)[:-1])
        return np.array([float(r[t]) - logsumexp(r) for r, t in zip(rows, cont, strict=True)])
