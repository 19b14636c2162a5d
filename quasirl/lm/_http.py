"""Any OpenAI-compatible completion server (vLLM, llama.cpp's servers) over HTTP.

Generation uses ``/v1/completions`` with ``logprobs``; scoring uses ``echo`` (the server returns
the log-probabilities of the prompt's own tokens). Some servers return echo log-probabilities
that are silently wrong: llama-cpp-python 0.3.36's server lists for token t the value
log p(t | prefix including t). So before the first score this backend probes the server: it
generates one greedy token after a probe prompt and checks that scoring that same token with
``echo`` gives the same log-probability; when it does not, scoring raises :class:`LMError`
instead of returning wrong numbers. Chat-only endpoints cannot return prompt log-probabilities
at all and are refused the same way.

Transient failures (timeouts, HTTP 429 / 5xx, connection refused while a server restarts) are
retried with exponential backoff, each retry logged as a warning on the ``quasirl.lm`` logger
(attempt k of n, the error, the wait), within a bounded time per request (``retry_budget``); a
connection refused before the server ever answered is retried only ``connect_retries`` times,
since no server is there. When retries end, :class:`LMError` says in one line which URL failed,
how and why it stopped. Every number the server returns is checked (finite log-probabilities
<= 0): a broken one raises :class:`LMValueError` naming the prompt, sample and token. The API
key is read from the environment and never appears in names, errors or records.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from .._validate import QuasirlValueError, check_int
from ._types import (
    LMError,
    Sample,
    Score,
    check_generate_args,
    check_logprob,
    check_number,
    check_score_args,
    check_stop,
    sample_seed,
    truncate_at_stop,
)

log = logging.getLogger("quasirl.lm")

PROBE_PROMPT = "The capital of France is"
PROBE_TOL = 0.05  # nats; batch-size numerics of one model differ by ~1e-3
_TRANSIENT = (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError,
              httpx.TimeoutException, httpx.PoolTimeout)
_NO_CONNECTION = (httpx.ConnectError, httpx.ConnectTimeout)
CONNECT_TIMEOUT = 10.0  # seconds to open a connection (at most ``timeout``)


def _oneline(text, limit: int) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``limit`` characters."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[:limit - 3] + "..."


def _describe(e: Exception) -> str:
    return _oneline(f"{type(e).__name__}: {e}", 200)


class OpenAICompatibleLM:
    """A model behind an OpenAI-compatible ``/v1/completions`` endpoint.

    Args:
      url: server address, e.g. ``http://127.0.0.1:8000`` (``/v1`` is appended if missing).
      model: model id sent with each request (default: the first of ``/v1/models``).
      api_key_env: environment variable holding the API key (sent as a Bearer token if set).
      timeout: seconds one attempt may take (opening the connection: at most 10 of them).
      max_retries, backoff, max_backoff: retry transient failures up to ``max_retries`` times,
        waiting backoff * 2**attempt seconds (at most ``max_backoff``) in between.
      retry_budget: seconds one request may take with all its retries; no retry starts past it,
        and the last attempt's timeout is cut to what is left. With the defaults a hung server
        fails a request after about 2 minutes (not 9 x 60 s), logging each retry.
      connect_retries: retries of a refused connection before the server has ever answered
        (no server at that address: fail in seconds); once it has answered, a refused
        connection is a restart and is retried like any transient failure.
      sampling: extra sampling fields sent with every generation request; the default turns off
        top-k and min-p truncation on llama.cpp servers (vLLM: pass ``{"top_k": -1}``), so that
        samples follow p ∝ exp(logit / T).
      concurrency: requests in flight at once (a thread pool of this size; 1 = one at a time).
      server_n: ask for the ``n`` samples of a prompt in one request (``n`` = n): None detects it
        on the first request with n > 1 (a server that returns fewer choices is then asked one
        sample per request), True / False forces it. With ``n`` per request the samples of
        prompt i come from one request seeded by (seed, i); else sample j of prompt i has its
        own request seeded by (seed, i, j).
    """

    def __init__(self, url: str, model: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 30.0, max_retries: int = 8, backoff: float = 0.5,
                 max_backoff: float = 10.0, retry_budget: float = 120.0,
                 connect_retries: int = 2, sampling: dict | None = None,
                 name: str | None = None, concurrency: int = 8, server_n: bool | None = None):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise QuasirlValueError(f"url must start with http:// or https://, got {url!r}")
        base = url.rstrip("/")
        self.base = base if base.endswith("/v1") else base + "/v1"
        self.max_retries = check_int("max_retries", max_retries, 0)
        self.connect_retries = check_int("connect_retries", connect_retries, 0)
        self.backoff = check_number("backoff", backoff, 0.0)
        self.max_backoff = check_number("max_backoff", max_backoff, 0.0)
        self.timeout = check_number("timeout", timeout, 0.0)
        self.retry_budget = check_number("retry_budget", retry_budget, 0.0)
        for nm, v in (("timeout", self.timeout), ("retry_budget", self.retry_budget)):
            if v == 0:
                raise QuasirlValueError(f"{nm} must be > 0, got {v!r}")
        self._reached = False  # has the server ever answered (any HTTP status)?
        self.sampling = {"top_k": 0, "min_p": 0.0, "top_p": 1.0} if sampling is None \
            else dict(sampling)
        key = os.environ.get(api_key_env) if api_key_env else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._model = model
        self.name = name or (model or self.base)
        self.retries = 0  # transient failures survived so far
        self._score_checked: LMError | bool = False
        self.concurrency = check_int("concurrency", concurrency, 1)
        if server_n not in (None, True, False):
            raise QuasirlValueError(f"server_n must be None, True or False, got {server_n!r}")
        self.server_n = server_n
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=self._timeout(self.timeout), headers=headers,
                                    limits=httpx.Limits(max_connections=self.concurrency))

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAICompatibleLM({self.base!r}, model={self._model!r})"

    def close(self) -> None:
        self._client.close()

    # -- HTTP -----------------------------------------------------------------------------
    def _timeout(self, left: float) -> httpx.Timeout:
        t = max(min(self.timeout, left), 0.01)
        return httpx.Timeout(t, connect=min(t, CONNECT_TIMEOUT))

    def _request(self, method: str, path: str, payload: dict | None = None) -> dict:
        """One request, retried on transient failures within ``retry_budget`` seconds."""
        url = self.base + path
        n = self.max_retries + 1
        t0 = time.monotonic()
        for attempt in range(1, n + 1):
            refused = False
            try:
                r = self._client.request(method, url, json=payload, timeout=self._timeout(
                    self.retry_budget - (time.monotonic() - t0)))
            except _TRANSIENT as e:
                last, refused = _describe(e), isinstance(e, _NO_CONNECTION)
            else:
                self._reached = True
                if r.status_code != 429 and r.status_code < 500:
                    return self._answer(r, url, path)
                last = f"HTTP {r.status_code}: {_oneline(r.text, 200)}"
            elapsed = time.monotonic() - t0
            wait = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
            if attempt == n:
                why = f"max_retries={self.max_retries} reached"
                break
            if refused and not self._reached and attempt > self.connect_retries:
                why = "it never answered: is a server running at this address?"
                break
            if elapsed + wait >= self.retry_budget:
                why = (f"retry budget of {self.retry_budget:g} s spent; for a slow server "
                       f"raise it or the timeout of {self.timeout:g} s per attempt")
                break
            tries = min(n, self.connect_retries + 1) if refused and not self._reached else n
            log.warning("server %s: attempt %d of %d failed (%s); retrying in %.3g s "
                        "(%.0f s of the %g s retry budget left)", url, attempt, tries, last,
                        wait, self.retry_budget - elapsed, self.retry_budget)
            with self._lock:
                self.retries += 1
            time.sleep(wait)
        raise LMError(f"server {url} failed {attempt} times; last error: {last} "
                      f"({elapsed:.1f} s; {why})")

    def _answer(self, r: httpx.Response, url: str, path: str) -> dict:
        if r.status_code == 404 and path == "/completions":
            raise LMError(f"server {self.base} has no /v1/completions endpoint; chat-only "
                          "endpoints cannot return the log-probabilities quasirl needs")
        if r.status_code >= 400:
            raise LMError(f"server {url} answered HTTP {r.status_code}: {_oneline(r.text, 300)}")
        try:
            out = r.json()
        except ValueError:
            raise LMError(f"server {url} returned non-JSON: {_oneline(r.text, 200)!r}") from None
        if not isinstance(out, dict):
            raise LMError(f"server {url} returned JSON that is not an object: "
                          f"{_oneline(repr(out), 200)}")
        return out

    @property
    def model(self) -> str:
        if self._model is None:
            data = self._request("GET", "/models").get("data") or []
            if not data:
                raise LMError(f"server {self.base} lists no models")
            try:
                self._model = str(data[0]["id"])
            except (KeyError, IndexError, TypeError):
                raise LMError(f"server {self.base}/models returned no model id: "
                              f"{_oneline(repr(data), 200)}") from None
        return self._model

    def _complete(self, payload: dict) -> dict:
        return self._choices(payload)[0]

    def _choices(self, payload: dict) -> list[dict]:
        out = self._request("POST", "/completions", {"model": self.model, **payload})
        choices = out.get("choices")
        if not isinstance(choices, list) or not choices or not all(
                isinstance(c, dict) for c in choices):
            raise LMError(f"server {self.base} returned no completion choice: "
                          f"{_oneline(repr(out), 200)}")
        # servers that answer n > 1 may list choices out of order; 'index' says which is which
        if all(isinstance(c.get("index"), int) for c in choices):
            choices = sorted(choices, key=lambda c: c["index"])
        return choices

    def _map(self, fn, jobs: list) -> list:
        """fn over jobs, at most ``concurrency`` at a time, results in order (first error
        raised)."""
        if self.concurrency == 1 or len(jobs) <= 1:
            return [fn(j) for j in jobs]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(jobs))) as pool:
            return list(pool.map(fn, jobs))

    # -- the protocol ---------------------------------------------------------------------
    def generate(self, prompts, n=1, temperature=1.0, max_tokens=16, stop=("\n",), seed=0):
        """``n`` samples per prompt, requests sent ``concurrency`` at a time; with a server that
        honours ``n`` one request per prompt seeded by (seed, i), else one per sample seeded by
        (seed, i, j) (see ``server_n``)."""
        prompts, n, t, max_tokens, stop, seed = check_generate_args(
            prompts, n, temperature, max_tokens, stop, seed)
        if not prompts:
            return []
        base = {"max_tokens": max_tokens, "temperature": t, "logprobs": 1, "echo": False,
                **self.sampling}
        if stop:
            base["stop"] = list(stop)

        def where(i, j):
            return f"server {self.base}: prompt {i}, sample {j}"

        def per_prompt(i):
            choices = self._choices({**base, "prompt": prompts[i], "n": n,
                                     "seed": sample_seed(seed, i) % 2**31})
            if len(choices) != n:
                raise LMError(f"server {self.base} returned {len(choices)} choices for n={n}")
            return [self._sample(c, stop, where(i, j)) for j, c in enumerate(choices)]

        first = None
        if n > 1 and self.server_n is None:  # detect: does the server honour n?
            choices = self._choices({**base, "prompt": prompts[0], "n": n,
                                     "seed": sample_seed(seed, 0) % 2**31})
            self.server_n = len(choices) == n
            if self.server_n:
                first = [self._sample(c, stop, where(0, j)) for j, c in enumerate(choices)]
        if n > 1 and self.server_n:
            rest = self._map(per_prompt, list(range(0 if first is None else 1, len(prompts))))
            return ([first] if first is not None else []) + rest

        def one(ij):
            i, j = ij
            return self._sample(self._complete({**base, "prompt": prompts[i], "n": 1,
                                                "seed": sample_seed(seed, i, j) % 2**31}),
                                stop, where(i, j))

        flat = self._map(one, [(i, j) for i in range(len(prompts)) for j in range(n)])
        return [flat[i * n:(i + 1) * n] for i in range(len(prompts))]

    def _sample(self, choice: dict, stop, where: str) -> Sample:
        lp = choice.get("logprobs") or {}
        tl = lp.get("token_logprobs")
        if tl is None:
            raise LMError(f"server {self.base} returned no token log-probabilities (does it "
                          "support 'logprobs' on /v1/completions? llama-cpp-python needs "
                          "--logits_all true)")
        text, _ = truncate_at_stop(choice.get("text") or "", stop)
        toks = lp.get("tokens") or [""] * len(tl)
        kept, acc = [], ""
        for t, (tok, v) in enumerate(zip(toks, tl, strict=False)):  # drop tokens past a stop
            if len(acc) >= len(text) and tok and acc:
                break
            acc += tok or ""
            kept.append(check_logprob(v, f"{where}, token {t} ({tok!r})"))
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        return Sample(text=text, token_logprobs=tuple(kept), finish=finish)

    def _echo(self, prompt: str, continuation: str) -> list[float]:
        return [v for _, v in self._echo_pairs(prompt, continuation)]

    def _echo_pairs(self, prompt: str, continuation: str,
                    end: str = "") -> list[tuple[int, float]]:
        """(text offset, echo log-prob) of the continuation's tokens (then of ``end``'s,
        appended as text)."""
        full = prompt + continuation + end
        choice = self._complete({"prompt": full, "max_tokens": 1, "temperature": 0.0,
                                 "logprobs": 1, "echo": True})
        lp = choice.get("logprobs") or {}
        tl, toks = lp.get("token_logprobs"), lp.get("tokens")
        if tl is None or toks is None:
            raise LMError(f"server {self.base} returned no prompt log-probabilities for echo")
        offsets = lp.get("text_offset")
        if offsets is None:
            offsets, pos = [], 0
            for tok in toks:
                offsets.append(pos)
                pos += len(tok)
        start, stop = len(prompt), len(full)
        if start not in offsets or (end and len(prompt + continuation) not in offsets):
            raise LMError(f"server {self.base}: the continuation {continuation!r} does not start "
                          "on a token boundary of the prompt's tokenisation")
        vals = [(o, v) for o, v in zip(offsets, tl, strict=False) if start <= o < stop]
        if any(v is None for _, v in vals) or not vals:
            raise LMError(f"server {self.base} returned no log-probability for a prompt token")
        return [(o, check_logprob(v, f"server {self.base}: echo of {continuation!r}, token at "
                                     f"offset {o}", allow_neg_inf=True)) for o, v in vals]

    def check_scoring(self) -> None:
        """Probe once: echo log-probs must match the server's own generation log-probs."""
        if self._score_checked is True:
            return
        if isinstance(self._score_checked, LMError):
            raise self._score_checked
        gen = self._complete({"prompt": PROBE_PROMPT, "max_tokens": 1, "temperature": 0.0,
                              "logprobs": 1, "echo": False})
        tok = gen.get("text") or ""
        g_lp = (gen.get("logprobs") or {}).get("token_logprobs") or [None]
        if not tok or g_lp[0] is None:
            raise LMError(f"server {self.base}: probe generation returned no token log-prob")
        g0 = check_logprob(g_lp[0], f"server {self.base}: probe generation of {tok!r}")
        echoed = self._echo(PROBE_PROMPT, tok)
        if not abs(sum(echoed) - g0) <= PROBE_TOL:
            self._score_checked = LMError(
                f"server {self.base} cannot score prompts: its echo log-probability of "
                f"{tok!r} after {PROBE_PROMPT!r} is {sum(echoed):.3f}, but it generated that "
                f"token with log-probability {g0:.3f} (llama-cpp-python's server "
                "0.3.x shifts echo log-probs by one token). Use a server that scores prompts "
                "correctly (e.g. vLLM) or a local backend for the survey trick; generation and "
                "likelihood fitness work.")
            raise self._score_checked
        self._score_checked = True

    def score(self, prompts, continuations):
        """log p(continuation | prompt) via ``echo`` (after the probe passed)."""
        prompts, continuations = check_score_args(prompts, continuations)
        self.check_scoring()

        def one(pc):
            vals = self._echo(*pc)
            return Score(total=float(math.fsum(vals)), token_logprobs=tuple(vals))

        return self._map(one, list(zip(prompts, continuations, strict=True)))

    def score_complete(self, prompts, continuations, end=("\n",)):
        """log p(continuation, end | prompt) via ``echo`` of prompt + continuation + end[0]: the
        end is the first end marker as text (a server gives no sum over every token that
        starts with it, as the local backends use), so this is a lower bound."""
        prompts, continuations = check_score_args(prompts, continuations)
        end = check_stop(end)
        if not end:
            raise QuasirlValueError("end must name at least one end marker")
        self.check_scoring()

        def one(pc):
            p, c = pc
            pairs = self._echo_pairs(p, c, end[0])
            toks = tuple(v for o, v in pairs if o < len(p) + len(c))
            e = float(math.fsum(v for o, v in pairs if o >= len(p) + len(c)))
            return Score(total=float(math.fsum(toks) + e), token_logprobs=toks, end_logprob=e)

        return self._map(one, list(zip(prompts, continuations, strict=True)))
