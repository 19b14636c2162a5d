"""Any OpenAI-compatible completion server (vLLM, llama.cpp's servers) over HTTP.

Generation uses ``/v1/completions`` with ``logprobs``; scoring uses ``echo`` (the server returns
the log-probabilities of the prompt's own tokens). Some servers return echo log-probabilities
that are silently wrong: llama-cpp-python 0.3.36's server lists for token t the value
log p(t | prefix including t). So before the first score this backend probes the server: it
generates one greedy token after a probe prompt and checks that scoring that same token with
``echo`` gives the same log-probability; when it does not, scoring raises :class:`LMError`
instead of returning wrong numbers. Chat-only endpoints cannot return prompt log-probabilities
at all and are refused the same way.

Transient failures (connection refused while a server restarts, timeouts, HTTP 429 / 5xx) are
retried with exponential backoff. The API key is read from the environment and never appears in
names, errors or records.
"""

from __future__ import annotations

import math
import os
import time

import httpx

from .._validate import QuasirlValueError
from ._types import (
    LMError,
    Sample,
    Score,
    check_generate_args,
    check_score_args,
    sample_seed,
    truncate_at_stop,
)

PROBE_PROMPT = "The capital of France is"
PROBE_TOL = 0.05  # nats; batch-size numerics of one model differ by ~1e-3
_TRANSIENT = (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError,
              httpx.TimeoutException, httpx.PoolTimeout)


class OpenAICompatibleLM:
    """A model behind an OpenAI-compatible ``/v1/completions`` endpoint.

    Args:
      url: server address, e.g. ``http://127.0.0.1:8000`` (``/v1`` is appended if missing).
      model: model id sent with each request (default: the first of ``/v1/models``).
      api_key_env: environment variable holding the API key (sent as a Bearer token if set).
      timeout: seconds per request.
      max_retries, backoff, max_backoff: retry transient failures up to ``max_retries`` times,
        waiting backoff * 2**attempt seconds (at most ``max_backoff``) in between.
      sampling: extra sampling fields sent with every generation request; the default turns off
        top-k and min-p truncation on llama.cpp servers (vLLM: pass ``{"top_k": -1}``), so that
        samples follow p ∝ exp(logit / T).
    """

    def __init__(self, url: str, model: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 60.0, max_retries: int = 8, backoff: float = 0.5,
                 max_backoff: float = 10.0, sampling: dict | None = None,
                 name: str | None = None):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise QuasirlValueError(f"url must start with http:// or https://, got {url!r}")
        base = url.rstrip("/")
        self.base = base if base.endswith("/v1") else base + "/v1"
        if not (isinstance(max_retries, int) and max_retries >= 0):
            raise QuasirlValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        for nm, v in (("timeout", timeout), ("backoff", backoff), ("max_backoff", max_backoff)):
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise QuasirlValueError(f"{nm} must be a finite number >= 0, got {v!r}")
        self.max_retries, self.backoff, self.max_backoff = max_retries, backoff, max_backoff
        self.sampling = {"top_k": 0, "min_p": 0.0, "top_p": 1.0} if sampling is None \
            else dict(sampling)
        key = os.environ.get(api_key_env) if api_key_env else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)
        self._model = model
        self.name = name or (model or self.base)
        self.retries = 0  # transient failures survived so far
        self._score_checked: LMError | bool = False

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAICompatibleLM({self.base!r}, model={self._model!r})"

    def close(self) -> None:
        self._client.close()

    # -- HTTP -----------------------------------------------------------------------------
    def _request(self, method: str, path: str, payload: dict | None = None) -> dict:
        last = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.retries += 1
                time.sleep(min(self.backoff * 2 ** (attempt - 1), self.max_backoff))
            try:
                r = self._client.request(method, self.base + path, json=payload)
            except _TRANSIENT as e:
                last = f"{type(e).__name__}: {e}"
                continue
            if r.status_code == 429 or r.status_code >= 500:
                last = f"HTTP {r.status_code}: {r.text[:200]}"
                continue
            if r.status_code == 404 and path == "/completions":
                raise LMError(f"server {self.base} has no /v1/completions endpoint; chat-only "
                              "endpoints cannot return the log-probabilities quasirl needs")
            if r.status_code >= 400:
                raise LMError(f"server {self.base}{path} answered HTTP {r.status_code}: "
                              f"{r.text[:300]}")
            try:
                return r.json()
            except ValueError:
                raise LMError(f"server {self.base}{path} returned non-JSON: {r.text[:200]!r}") \
                    from None
        raise LMError(f"server {self.base}{path} failed {self.max_retries + 1} times; last "
                      f"error: {last}")

    @property
    def model(self) -> str:
        if self._model is None:
            data = self._request("GET", "/models").get("data") or []
            if not data:
                raise LMError(f"server {self.base} lists no models")
            self._model = data[0]["id"]
        return self._model

    def _complete(self, payload: dict) -> dict:
        out = self._request("POST", "/completions", {"model": self.model, **payload})
        try:
            return out["choices"][0]
        except (KeyError, IndexError, TypeError):
            raise LMError(f"server {self.base} returned no completion choice: {out!r:.200}") \
                from None

    # -- the protocol ---------------------------------------------------------------------
    def generate(self, prompts, n=1, temperature=1.0, max_tokens=16, stop=("\n",), seed=0):
        """``n`` samples per prompt; sample j of prompt i is requested with seed (seed, i, j)."""
        prompts, n, t, max_tokens, stop, seed = check_generate_args(
            prompts, n, temperature, max_tokens, stop, seed)
        out = []
        for i, prompt in enumerate(prompts):
            row = []
            for j in range(n):
                payload = {"prompt": prompt, "max_tokens": max_tokens, "temperature": t,
                           "logprobs": 1, "echo": False, "n": 1,
                           "seed": sample_seed(seed, i, j) % 2**31, **self.sampling}
                if stop:
                    payload["stop"] = list(stop)
                row.append(self._sample(self._complete(payload), stop))
            out.append(row)
        return out

    def _sample(self, choice: dict, stop) -> Sample:
        lp = choice.get("logprobs") or {}
        tl = lp.get("token_logprobs")
        if tl is None:
            raise LMError(f"server {self.base} returned no token log-probabilities (does it "
                          "support 'logprobs' on /v1/completions? llama-cpp-python needs "
                          "--logits_all true)")
        text, _ = truncate_at_stop(choice.get("text") or "", stop)
        toks = lp.get("tokens") or [""] * len(tl)
        kept, acc = [], ""
        for tok, v in zip(toks, tl, strict=False):  # drop tokens past a stop string
            if len(acc) >= len(text) and tok and acc:
                break
            acc += tok or ""
            kept.append(float(v))
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        return Sample(text=text, token_logprobs=tuple(kept), finish=finish)

    def _echo(self, prompt: str, continuation: str) -> list[float]:
        full = prompt + continuation
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
        start, end = len(prompt), len(full)
        if start not in offsets:
            raise LMError(f"server {self.base}: the continuation {continuation!r} does not start "
                          "on a token boundary of the prompt's tokenisation")
        vals = [v for o, v in zip(offsets, tl, strict=False) if start <= o < end]
        if any(v is None for v in vals) or not vals:
            raise LMError(f"server {self.base} returned no log-probability for a prompt token")
        return [float(v) for v in vals]

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
        echoed = self._echo(PROBE_PROMPT, tok)
        if abs(sum(echoed) - float(g_lp[0])) > PROBE_TOL:
            self._score_checked = LMError(
                f"server {self.base} cannot score prompts: its echo log-probability of "
                f"{tok!r} after {PROBE_PROMPT!r} is {sum(echoed):.3f}, but it generated that "
                f"token with log-probability {float(g_lp[0]):.3f} (llama-cpp-python's server "
                "0.3.x shifts echo log-probs by one token). Use a server that scores prompts "
                "correctly (e.g. vLLM) or a local backend for the survey trick; generation and "
                "likelihood fitness work.")
            raise self._score_checked
        self._score_checked = True

    def score(self, prompts, continuations):
        """log p(continuation | prompt) via ``echo`` (after the probe passed)."""
        prompts, continuations = check_score_args(prompts, continuations)
        self.check_scoring()
        out = []
        for p, c in zip(prompts, continuations, strict=True):
            vals = self._echo(p, c)
            out.append(Score(total=float(math.fsum(vals)), token_logprobs=tuple(vals)))
        return out
