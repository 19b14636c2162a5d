"""Evaluators of quasirl.lm (issue 17, item 4) and the HTTP backend's concurrency (item 6).

The oracle is a toy token model whose next-token distribution depends only on the last token:
the probability of any complete answer is a product of table entries, computed here by hand,
and the sampler's own frequencies are a second, independent check.
"""

from __future__ import annotations

import threading
import time
from http.server import ThreadingHTTPServer

import numpy as np
import pytest
from fake_http import CountingCompletions

import quasirl.lm as qlm
from quasirl._validate import QuasirlValueError
from quasirl.lm._fitness import FIVE_POINT_PREFIX, KNOWN_SIGNALS, SIGNALS, check_signals
from quasirl.lm._token import TokenLM

PIECES = ["<eos>", "\n", "1", "0", " ", "a", "\n\n"]


class ToyLM(TokenLM):
    """Characters as tokens; logits after a sequence are W[last token]."""

    name = "toy"

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        self.W = rng.normal(0.0, 1.0, (len(PIECES), len(PIECES)))
        self.W[:, 5] -= 1.0  # "a" rarer, so that short answers end often
        self.W[5, 4] += 3.0  # after "a" (and ":") a space, after a space "1"
        self.W[4, 2] += 3.0
        self.W[2, 3] += 1.5  # "1" is often followed by "0": " 1" is a prefix of a likely " 10"
        self.W[3, [0, 1]] += 2.0  # "10" often ends
        self.calls = 0

    def tokenize(self, text, bos):
        return [PIECES.index(c) if c in PIECES[1:6] else 5 for c in text]

    def detokenize(self, ids):
        return "".join("" if t == 0 else PIECES[t] for t in ids)

    def eog_ids(self):
        return frozenset({0})

    def token_pieces(self):
        return list(PIECES)

    def next_logits(self, ids):
        self.calls += 1
        return self.W[ids[-1]].copy()

    def p(self, last):
        x = self.W[last]
        return np.exp(x - x.max()) / np.exp(x - x.max()).sum()


def _complete_prob(lm, prompt, text):
    """p(text, end | prompt) by hand: the product of table entries, end = eos, \\n or \\n\\n."""
    last, prob = lm.tokenize(prompt, True)[-1], 1.0
    for t in lm.tokenize(text, False):
        prob *= lm.p(last)[t]
        last = t
    return prob * lm.p(last)[[0, 1, 6]].sum()


def test_complete_label_scores_match_the_hand_computed_probabilities():
    lm = ToyLM()
    prompt = "a:"
    s = lm.score_complete([prompt] * 2, [" 1", " 10"], ("\n",))
    for sc, text in zip(s, [" 1", " 10"], strict=True):
        np.testing.assert_allclose(np.exp(sc.total), _complete_prob(lm, prompt, text),
                                   rtol=1e-12)
        np.testing.assert_allclose(sc.total, sum(sc.token_logprobs) + sc.end_logprob,
                                   rtol=1e-12)
    # the prefix score of " 1" is p(" 1" then anything): it includes all of " 10"'s mass
    pre = lm.score([prompt] * 2, [" 1", " 10"])
    assert np.exp(pre[0].total) > np.exp(pre[1].total)
    np.testing.assert_allclose(np.exp(pre[1].total - pre[0].total), lm.p(2)[3], rtol=1e-12)


def test_prefix_label_is_not_favoured_when_scored_complete():
    """Labels " 1" and " 10": with the end marker their distribution is the sampler's
    distribution of complete answers (simulated); as prefixes " 1" takes " 10"'s mass."""
    lm = ToyLM()
    prompt = "a:"
    labels = [" 1", " 10"]
    truth = np.array([_complete_prob(lm, prompt, t) for t in labels])
    assert truth[1] > truth[0]  # the longer label is the more likely complete answer
    p_end = qlm.label_probs(lm, [prompt], labels, end=("\n",))[0]
    np.testing.assert_allclose(p_end, truth / truth.sum(), rtol=1e-12)
    p_pre = qlm.label_probs(lm, [prompt], labels)[0]
    assert p_pre[0] > p_pre[1]  # the bias the end marker removes
    # simulation with known truth: the sampler's complete answers
    out = lm.generate([prompt], n=4000, temperature=1.0, max_tokens=4, seed=3)[0]
    texts = [s.text for s in out if s.finish == "stop"]
    freq = np.array([texts.count(t) for t in labels]) / len(out)
    se = np.sqrt(truth * (1 - truth) / len(out))
    assert np.all(np.abs(freq - truth) < 5 * se), (freq, truth)


def test_sampler_end_logprob_is_the_probability_of_stopping():
    lm = ToyLM()
    out = lm.generate(["a:"], n=300, temperature=1.0, max_tokens=3, seed=0)[0]
    for s in out:
        last = s.token_ids[-1] if s.token_ids else lm.tokenize("a:", True)[-1]
        assert s.end_logprob is not None
        np.testing.assert_allclose(np.exp(s.end_logprob), lm.p(last)[[0, 1, 6]].sum(),
                                   rtol=1e-12)
        if s.finish == "stop":  # logprob + end = the complete answer's probability
            np.testing.assert_allclose(np.exp(s.logprob + s.end_logprob),
                                       _complete_prob(lm, "a:", s.text), rtol=1e-10)
    assert {s.finish for s in out} == {"stop", "length"}


def _samples():
    return [qlm.Sample(" Paris", (-0.5, -0.25), end_logprob=-0.75),
            qlm.Sample(" Lyon", (-2.0,), end_logprob=-0.0),
            qlm.Sample("", (), end_logprob=-0.1)]


def test_likelihood_variants_by_hand():
    task = qlm.capitals()
    it = task.item("france")
    s = _samples()
    f = qlm.get_fitness("likelihood")(None, task, [it] * 3, s)
    np.testing.assert_allclose(f, [np.exp(-0.75), np.exp(-2.0), 0.0], rtol=1e-12)
    f = qlm.get_fitness("likelihood_end", beta=2.0)(None, task, [it] * 3, s)
    np.testing.assert_allclose(f, [np.exp(-1.5 / 2), np.exp(-2.0 / 2), 0.0], rtol=1e-12)
    norm = qlm.get_fitness("likelihood_norm")
    assert norm.name == "likelihood_norm" and norm.end and norm.normalize
    np.testing.assert_allclose(norm(None, task, [it] * 3, s),
                               [np.exp(-1.5 / 3), np.exp(-2.0 / 2), 0.0], rtol=1e-12)
    # a longer answer with the same per-token probability gets the same normalised fitness
    a = qlm.Sample(" x", (-0.3,), end_logprob=-0.3)
    b = qlm.Sample(" x y z", (-0.3, -0.3, -0.3), end_logprob=-0.3)
    fa, fb = norm(None, task, [it] * 2, [a, b])
    np.testing.assert_allclose(fa, fb, rtol=1e-12)
    with pytest.raises(qlm.LMError, match="no end-of-answer probability"):
        norm(None, task, [it], [qlm.Sample(" x", (-0.3,))])
    with pytest.raises(QuasirlValueError, match="normalize=True needs end=True"):
        qlm.LikelihoodFitness(normalize=True)
    with pytest.raises(QuasirlValueError, match="end must be True or False"):
        qlm.LikelihoodFitness(end=1)
    with pytest.raises(qlm.LMError, match="end"):  # a broken end log-prob is refused
        qlm.get_fitness("likelihood_end")(None, task, [it], [
            qlm.Sample(" x", (-0.3,), end_logprob=0.5)])


def test_signal_names():
    assert SIGNALS == ("yesno", "scale5", "likelihood", "gold")  # the stored results' set
    assert check_signals(["scale5_prefix", "likelihood_norm"]) == ("scale5_prefix",
                                                                   "likelihood_norm")
    for name in KNOWN_SIGNALS:
        assert qlm.get_fitness(name).name == name
    assert qlm.FIVE_POINT.end == ("\n",) and FIVE_POINT_PREFIX.end == ()
    assert FIVE_POINT_PREFIX.labels == qlm.FIVE_POINT.labels
    with pytest.raises(QuasirlValueError, match="signals\\[0\\] must be one of"):
        check_signals(["likelihood_mean"])


def test_survey_fitness_uses_complete_labels_and_the_cache_passes_them_through():
    lm = ToyLM()
    scale = qlm.Scale("toy", "q", (" 1", " 10"), (0.0, 1.0), end=("\n",))
    cached = qlm.CachedLM(lm)
    prompts = ["a:", "a1"]
    p = qlm.label_probs(cached, prompts, scale.labels, end=scale.end)
    want = np.array([[_complete_prob(lm, pr, t) for t in scale.labels] for pr in prompts])
    np.testing.assert_allclose(p, want / want.sum(1, keepdims=True), rtol=1e-12)
    calls = lm.calls
    np.testing.assert_allclose(qlm.label_probs(cached, prompts, scale.labels, end=scale.end), p)
    assert lm.calls == calls  # memoised
    assert not hasattr(qlm.CachedLM(qlm.SyntheticLM(qlm.capitals(), 0.4, 0.8, 0.2, 0.5)),
                       "score_complete")


# ------------------------------------------------------------------------------------------
# HTTP: bounded concurrency and n samples per request
# ------------------------------------------------------------------------------------------
@pytest.fixture()
def counting_server():
    h = CountingCompletions
    h.delay, h.honour_n, h.in_flight, h.max_in_flight = 0.05, True, 0, 0
    h.requests, h.lock = [], threading.Lock()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), h)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    h.reset_max_in_flight()  # no handler of this test still counting when the next one starts
    srv.shutdown()
    srv.server_close()


def test_http_uses_n_per_request_and_bounded_concurrency(counting_server):
    h = CountingCompletions
    lm = qlm.OpenAICompatibleLM(counting_server, model="m", concurrency=4, backoff=0.01)
    prompts = [f"q{i}" for i in range(12)]
    t0 = time.monotonic()
    out = lm.generate(prompts, n=3, seed=5)
    elapsed = time.monotonic() - t0
    assert lm.server_n is True and len(h.requests) == 12  # one request per prompt
    for i, row in enumerate(out):
        s = qlm.sample_seed(5, i) % 2**31 % 1000
        assert [x.text for x in row] == [f" s{s}-{k}" for k in range(3)]  # in index order
    assert 2 <= h.max_in_flight <= 4
    assert elapsed < 12 * h.delay  # not one request at a time
    assert out == lm.generate(prompts, n=3, seed=5)  # reproducible


def test_http_falls_back_to_one_sample_per_request(counting_server):
    h = CountingCompletions
    h.honour_n = False
    lm = qlm.OpenAICompatibleLM(counting_server, model="m", concurrency=3, backoff=0.01)
    out = lm.generate(["a", "b"], n=2, seed=1)
    assert lm.server_n is False
    assert [[x.text for x in r] for r in out] == [
        [f" s{qlm.sample_seed(1, i, j) % 2**31 % 1000}-0" for j in range(2)] for i in range(2)]
    assert len(h.requests) == 1 + 4 and h.max_in_flight <= 3  # the probe, then 4 requests
    one = qlm.OpenAICompatibleLM(counting_server, model="m", concurrency=1, server_n=False)
    h.reset_max_in_flight()
    assert one.generate(["a", "b"], n=2, seed=1) == out and h.max_in_flight == 1
    with pytest.raises(QuasirlValueError, match="concurrency must be"):
        qlm.OpenAICompatibleLM(counting_server, concurrency=0)
    with pytest.raises(QuasirlValueError, match="server_n must be"):
        qlm.OpenAICompatibleLM(counting_server, server_n="yes")


def test_http_scores_concurrently_and_scores_complete_answers(counting_server):
    h = CountingCompletions
    lm = qlm.OpenAICompatibleLM(counting_server, model="m", concurrency=4, backoff=0.01)
    prompts = [f"Q{i} is" for i in range(8)]
    s = lm.score(prompts, [" big city"] * 8)
    assert all(x.token_logprobs == (-0.4, -0.5) for x in s)
    assert h.max_in_flight >= 2
    c = lm.score_complete(prompts[:2], [" big", " big city"], (" END",))
    np.testing.assert_allclose([x.end_logprob for x in c], [-0.4, -0.4])
    np.testing.assert_allclose([x.total for x in c], [-0.8, -1.3])
    assert c[1].token_logprobs == (-0.4, -0.5)
    p = qlm.label_probs(lm, ["Q is"], [" big", " big city"], end=(" END",))
    np.testing.assert_allclose(p[0], np.exp([-0.8, -1.3]) / np.exp([-0.8, -1.3]).sum())
