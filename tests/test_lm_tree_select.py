"""What selection keeps from a model's answer tree (issue 18, second stage).

Oracles: every N-tuple of draws enumerated for best-of-N on a small full tree; the full tree of
a synthetic token model as the truth behind a partial tree's lumps (the bounds must hold for the
real members); Monte Carlo best-of-N draws; the model's own samples through ``generate`` (a
token-level sampler at T follows the token law, not the sequence-level tilt); and the package's
own kernels and selection theory (``tilted_law``, ``quasirl.selection.temper``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest

import quasirl as qr
import quasirl.lm as qlm
from quasirl._validate import QuasirlValueError
from quasirl.lm import Sample

PROMPT = "Q: name one.\nA:"
LM = qlm.SyntheticTokenLM(seed=11, end_bias=-0.5)


@pytest.fixture(scope="module")
def small():
    """Every outcome of the sampler with max_tokens = 2 (no lumps)."""
    return qlm.answer_tree(LM, PROMPT, 2, top_k=len(LM.pieces))


@pytest.fixture(scope="module")
def full():
    """Every outcome with max_tokens = 3: the truth behind the partial tree's lumps."""
    return qlm.answer_tree(LM, PROMPT, 3, top_k=len(LM.pieces))


@pytest.fixture(scope="module")
def tree():
    return qlm.answer_tree(LM, PROMPT, 3, top_k=2)


def has_a(text):
    return "a" in text


def law_p(tree):
    return np.exp(tree.logprob[tree.terminals])


def brute_best_of_n(p, y, n):
    """Every n-tuple of draws, the highest score kept, ties split evenly among the tied draws."""
    out = np.zeros(p.size)
    for tup in itertools.product(range(p.size), repeat=n):
        w = np.prod(p[list(tup)])
        ys = y[list(tup)]
        tied = [t for t, v in zip(tup, ys, strict=True) if v == ys.max()]
        for t in tied:
            out[t] += w / len(tied)
    return out


def as_sample(tree, s):
    """The sample the sampler reports for terminal s of a full tree."""
    ids = tree.token_ids[s]
    return Sample(text=tree.text[s], token_logprobs=(0.0,) * len(ids),
                  finish="stop" if tree.kind[s] == "end" else "length", token_ids=ids,
                  end_logprob=0.0)


def onto(full, part, values):
    """Values over the full tree's terminals summed onto the partial tree's terminals."""
    out = np.zeros(part.terminals.size)
    for s, v in zip(full.terminals, values, strict=True):
        out[np.searchsorted(part.terminals, part.terminal_of(as_sample(full, s)))] += v
    return out


def assert_within(law_or_lo, truth, hi=None, tol=1e-12):
    lo = law_or_lo.lo if hi is None else law_or_lo
    hi = law_or_lo.hi if hi is None else hi
    assert (np.asarray(lo) <= truth + tol).all() and (truth <= np.asarray(hi) + tol).all()


# ------------------------------------------------------------------------------------------
# best-of-N
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3])
def test_best_of_n_law_is_the_enumeration(small, n):
    p, lq = law_p(small), small.logprob[small.terminals]
    ok = np.array([has_a(small.text[s]) for s in small.terminals], dtype=float)
    for score, y in (("likelihood", lq), (has_a, ok)):
        law = qlm.best_of_n_law(small, n, score)
        assert (law.states == small.terminals).all() and law.exact.all()
        np.testing.assert_allclose(law.prob, brute_best_of_n(p, y, n), atol=1e-13)
        np.testing.assert_allclose(law.prob.sum(), 1.0, atol=1e-12)
    # the checker's accuracy: 1 - (1 - acc)^N, from the law and in closed form
    acc = qlm.best_of_n_accuracy(small, n, has_a, score="checker")
    via_law = qlm.best_of_n_accuracy(small, [n], has_a, score=has_a)
    want = 1 - (1 - p[ok > 0].sum()) ** n
    np.testing.assert_allclose([acc.accuracy[0], via_law.accuracy[0]], want, atol=1e-13)


def test_n1_is_the_sampling_law(tree):
    law1 = qlm.sampling_law(tree)
    for score in ("likelihood", has_a):
        law = qlm.best_of_n_law(tree, 1, score)
        for v in (law.prob, law.lo, law.hi):
            np.testing.assert_allclose(v, law1.prob, atol=1e-13)


def test_checker_accuracy_grows_as_one_minus_miss_to_the_n(small):
    ns = [1, 2, 4, 8, 16]
    acc1 = qlm.best_of_n_accuracy(small, 1, has_a).accuracy[0]
    got = qlm.best_of_n_accuracy(small, ns, has_a, score="checker")
    np.testing.assert_allclose(got.accuracy, 1 - (1 - acc1) ** np.array(ns), rtol=1e-12)
    np.testing.assert_allclose(got.lo, got.hi)


@pytest.mark.parametrize("n", [8, 16])
def test_best_of_n_law_against_monte_carlo(full, n):
    """R best-of-N rounds drawn from the sampler's law: the exact law passes a chi-square test,
    the law of best-of-(N/2) fails it."""
    p, y = law_p(full), full.logprob[full.terminals]
    rng = np.random.default_rng(n)
    R = 20_000
    draws = rng.choice(p.size, size=(R, n), p=p / p.sum())
    kept = draws[np.arange(R), np.argmax(y[draws], axis=1)]
    counts = np.bincount(kept, minlength=p.size)
    right = qlm.compare_counts(counts, qlm.best_of_n_law(full, n), n_boot=200)
    wrong = qlm.compare_counts(counts, qlm.best_of_n_law(full, n // 2), n_boot=200)
    assert right.p_value > 1e-3 and right.tv_lo == 0.0
    assert wrong.p_value < 1e-6 and wrong.tv_lo > 0.0


def test_likelihood_best_of_n_concentrates_on_the_map(full):
    ns = [1, 4, 16, 64, 256]
    lq = full.logprob[full.terminals]
    top = int(np.argmax(lq))
    assert full.kind[full.terminals[top]] == "end"
    assert full.terminals[top] == full.map_answer().state
    mass = np.array([qlm.best_of_n_law(full, n).prob[top] for n in ns])
    assert (np.diff(mass) > 0).all() and mass[-1] > 0.999
    # the MAP outcome is kept unless all N draws miss it (it has no tie)
    np.testing.assert_allclose(mass, 1 - (1 - np.exp(lq[top])) ** np.array(ns), rtol=1e-10)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_lump_bounds_hold_for_the_real_members(tree, full, n):
    """The partial tree's lumps hold the full tree's outcomes: the exact best-of-N law over
    those, summed onto the partial tree's terminals, lies within the bounds."""
    p = law_p(full)
    ok_full = np.array([has_a(full.text[s]) for s in full.terminals])
    for score, y in (("likelihood", full.logprob[full.terminals]), (has_a, ok_full * 1.0)):
        truth = onto(full, tree, qr.selection.best_of_n_law(p, y, n))
        law = qlm.best_of_n_law(tree, n, score)
        assert_within(law, truth)
        assert law.exact.all() == (n == 1)
        acc = qlm.best_of_n_accuracy(tree, n, has_a,
                                     score="checker" if callable(score) else score)
        true_acc = float(np.asarray(qr.selection.best_of_n_law(p, y, n))[ok_full].sum())
        assert acc.lo[0] - 1e-12 <= true_acc <= acc.hi[0] + 1e-12


def test_min_prob_tree_is_exact_above_min_prob(full):
    mp = 0.02
    t = qlm.answer_tree(LM, PROMPT, 3, min_prob=mp)
    p = law_p(full)
    for n in (2, 8):
        law = qlm.best_of_n_law(t, n, min_prob=mp)
        truth = onto(full, t, qr.selection.best_of_n_law(p, full.logprob[full.terminals], n))
        assert_within(law, truth)
        known = np.array([t.kind[s] != "rest" for s in t.terminals])
        big = known & (t.logprob[t.terminals] >= math.log(mp))
        assert big.sum() >= 5 and law.exact[big].all()
        np.testing.assert_allclose(law.prob[big], truth[big], atol=1e-13)
        # the tree knows its min_prob; without that bound the same answers are only bounded
        assert t.min_prob == mp and t.top_k is None
        np.testing.assert_array_equal(qlm.best_of_n_law(t, n).prob, law.prob)
        blind = dataclasses.replace(t, min_prob=None)
        assert not qlm.best_of_n_law(blind, n).exact[big].all()
    with pytest.raises(QuasirlValueError, match="is not the tree's"):
        qlm.best_of_n_law(qlm.answer_tree(LM, PROMPT, 3, top_k=2), 2, min_prob=0.5)


# ------------------------------------------------------------------------------------------
# token-level temperature against the sequence-level tilt
# ------------------------------------------------------------------------------------------
def crafted():
    """First token " A" (0.6) spread over four continuations, or " B" (0.4) that then ends:
    the tilt at T = 1/2 favours " B" (0.16 against 4 x 0.0225), the token sampler " A"."""
    pieces = ("<eos>", " A", " B", " x", " y", " z", " w")

    def logits(ids):
        ans = [t for t in ids if t < 7]
        p = np.zeros(7)
        if not ans:
            p[1], p[2] = 0.6, 0.4
        elif ans == [1]:
            p[3:] = 0.25
        else:
            p[0] = 1.0
        with np.errstate(divide="ignore"):
            return np.log(p)

    return qlm.SyntheticTokenLM(pieces, logits=logits)


def test_token_law_equals_the_tilt_at_t1_only(tree):
    t1 = qlm.token_vs_tilt(tree, tree)
    assert t1.tv < 1e-15 and t1.tv_hi < 1e-15
    np.testing.assert_allclose(t1.tilt.prob, qlm.sampling_law(tree).prob, atol=1e-15)
    lm = crafted()
    trees = {T: qlm.answer_tree(lm, "Q?", 3, top_k=6, lm_temperature=T) for T in (0.5, 1.0)}
    laws = qlm.token_vs_tilt(trees[0.5], trees[1.0])
    texts = [trees[0.5].text[s] for s in laws.token.states]
    b = texts.index(" B")
    np.testing.assert_allclose(laws.token.prob[b], 0.16 / 0.52, atol=1e-12)
    np.testing.assert_allclose(laws.tilt.prob[b], 0.16 / 0.25, atol=1e-12)
    assert laws.tilt.exact.all() and laws.tv > 0.3
    np.testing.assert_allclose(laws.tv_lo, laws.tv, atol=1e-12)
    # from the model, through one set of logits: the same laws
    got = qlm.token_temperature_laws(lm, "Q?", 3, [0.5, 1.0], top_k=6)
    np.testing.assert_allclose(got[0].tilt.prob, laws.tilt.prob, atol=1e-12)
    np.testing.assert_allclose(got[0].token.prob, laws.token.prob, atol=1e-12)
    assert got[1].tv < 1e-12


def test_the_sampler_follows_the_token_law_not_the_tilt():
    lm = crafted()
    laws = qlm.token_temperature_laws(lm, "Q?", 3, 0.5, top_k=6)[0]
    samples = lm.generate(["Q?"], n=1500, temperature=0.5, max_tokens=3, seed=1)[0]
    token = qlm.compare_samples(laws.tree, samples, laws.token, n_boot=300)
    tilt = qlm.compare_samples(laws.tree, samples, laws.tilt, n_boot=300)
    assert token.p_value > 1e-3 and token.tv_lo == 0.0 and token.tv < 0.05
    assert tilt.p_value < 1e-6 and tilt.tv_lo > 0.2


@pytest.mark.parametrize("kw", [dict(top_k=2), dict(min_prob=0.02)])
def test_retempered_tree_reads_the_t1_law(kw):
    """token_temperature_laws re-reads each outcome's T = 1 log-probability from the logits;
    against a direct sum over the logits of the path."""
    laws = qlm.token_temperature_laws(LM, PROMPT, 3, [0.5, 2.0], **kw)
    pids = LM.tokenize(PROMPT, bos=True)
    ends = LM.end_ids(("\n",))
    for law in laws:
        t = law.tree
        assert t.lm_temperature == law.T
        np.testing.assert_allclose(law.token.prob, qlm.sampling_law(t).prob)
        lq1 = []
        for s in t.terminals:
            ids, lq = list(t.token_ids[s]), 0.0
            for i, tok in enumerate(ids):
                x = LM.logits_of(pids + ids[:i])
                lq += x[tok] - np.logaddexp.reduce(x)
            if t.kind[s] == "end" and t.outcome[t.parent[s], t.action[s]] == -1:
                x = LM.logits_of(pids + ids)
                lq += np.logaddexp.reduce(x[ends]) - np.logaddexp.reduce(x)
            lq1.append(lq if t.kind[s] != "rest" else np.nan)
        lq1 = np.array(lq1)
        known = ~np.isnan(lq1)
        w = np.exp(lq1[known] / law.T)
        tilt = law.tilt.prob
        np.testing.assert_allclose(tilt[known] / tilt[known].sum(), w / w.sum(), rtol=1e-10)
        # a lump's nominal weight is its T = 1 mass m^(1/T): those masses and the known
        # outcomes' make up the T = 1 law
        m = (tilt[~known] / tilt[known][0] * w[0]) ** law.T
        assert m.size and (m > 0).all()
        np.testing.assert_allclose(np.exp(lq1[known]).sum() + m.sum(), 1.0, atol=1e-10)


@pytest.mark.parametrize("T", [0.5, 2.0])
def test_sequence_tilt_is_the_tilted_law_and_bounds_its_lumps(tree, full, T):
    law = qlm.sequence_tilt(tree, T)
    np.testing.assert_allclose(law.prob, np.asarray(tree.tilted_law(T, answers_only=False)[1]),
                               atol=1e-12)
    # the truth: the full tree's outcomes tilted one by one, summed onto the partial tree
    w = law_p(full) ** (1 / T)
    assert_within(law, onto(full, tree, w / w.sum()))
    np.testing.assert_allclose(qlm.sequence_tilt(full, T).prob, w / w.sum(), atol=1e-12)


# ------------------------------------------------------------------------------------------
# soft selection
# ------------------------------------------------------------------------------------------
def test_soft_selection_is_the_tilted_law(tree, full):
    target = "cb"
    assert not any(tree.text[s] == target for s in tree.states_of("cut", "rest"))

    def r(text):
        return 2.0 if text == target else 0.0

    for T_sel in (0.5, 1.0, 3.0):
        law = qlm.soft_selection_law(tree, T_sel, r)
        tilted = qlm.answer_tree(LM, PROMPT, 3, top_k=2, reward=lambda a, T=T_sel: r(a) / T)
        np.testing.assert_allclose(law.prob, np.asarray(tilted.tilted_law(1.0, False)[1]),
                                   atol=1e-12)
        rr = np.array([r(tree.text[s]) for s in tree.terminals])
        np.testing.assert_allclose(law.prob, np.asarray(qr.selection.temper(
            law_p(tree), rr, T_sel)), atol=1e-12)
        # lumps' members may pass (reward 2): the truth from the full tree within the bounds
        wide = qlm.soft_selection_law(tree, T_sel, r, lump_reward=(0.0, 2.0))
        rf = np.array([r(full.text[s]) for s in full.terminals])
        truth = np.asarray(qr.selection.temper(law_p(full), rf, T_sel))
        assert_within(wide, onto(full, tree, truth))
    # the tree's own task reward
    tr = qlm.answer_tree(LM, PROMPT, 3, top_k=2, reward=r)
    np.testing.assert_allclose(qlm.soft_selection_law(tr, 1.0).prob,
                               np.asarray(tr.tilted_law(1.0, False)[1]), atol=1e-12)


def test_error_after_selection(tree, full):
    Ts = np.array([0.0, 0.2, 0.5, 1.0, 4.0])
    err = qlm.error_after_selection(tree, Ts, has_a)
    for i, T in enumerate(Ts[1:], 1):
        law = qlm.soft_selection_law(tree, T, has_a)
        wrong = np.array([not has_a(tree.text[s]) or tree.kind[s] == "rest"
                          for s in tree.terminals])
        np.testing.assert_allclose(err.error[i], law.prob[wrong].sum(), atol=1e-12)
        best = qlm.soft_selection_law(tree, T, has_a, lump_reward=(1.0, 1.0))
        np.testing.assert_allclose(err.lo[i], best.prob[wrong & np.array(
            [tree.kind[s] != "rest" for s in tree.terminals])].sum(), atol=1e-12)
        ok = np.array([has_a(full.text[s]) for s in full.terminals])
        truth = np.asarray(qr.selection.temper(law_p(full), ok * 1.0, T))[~ok].sum()
        assert err.lo[i] - 1e-12 <= truth <= err.hi[i] + 1e-12
    assert err.error[0] == 0.0 and (np.diff(err.error) > 0).all() and err.error[-1] < err.before
    np.testing.assert_allclose(err.before,
                               1 - qlm.best_of_n_accuracy(tree, 1, has_a).accuracy[0])


# ------------------------------------------------------------------------------------------
# predictions against samples
# ------------------------------------------------------------------------------------------
def test_compare_samples_covers_zero_for_the_true_law_only(tree):
    """The interval reaches 0 with probability >= 97.5% for the true law: at least 4 seeds of
    5 (a check that holds with probability > 99%); the wrong law is excluded every time."""
    right_law, wrong_law = qlm.sampling_law(tree), qlm.sequence_tilt(tree, 0.6)
    covered = 0
    for seed in range(5):
        samples = LM.generate([PROMPT], n=600, max_tokens=3, seed=seed)[0]
        right = qlm.compare_samples(tree, samples, right_law, n_boot=300, seed=seed)
        wrong = qlm.compare_samples(tree, samples, wrong_law, n_boot=300, seed=seed)
        covered += right.tv_lo == 0.0
        assert right.tv_hi > right.tv > 0 and right.p_value > 1e-4
        assert wrong.tv_lo > 0.0 and wrong.p_value < 1e-6
        assert right.tv_noise > 0 and right.samples == 600 and right.prompts == 1
    assert covered >= 4
    # several prompts: prompts resampled, then samples
    prompts = [PROMPT, "Q: name two.\nA:", "Q: name three.\nA:"]
    trees = [qlm.answer_tree(LM, p, 3, top_k=2) for p in prompts]
    samples = LM.generate(prompts, n=300, max_tokens=3, seed=9)
    right = qlm.compare_samples(trees, samples, [qlm.sampling_law(t) for t in trees],
                                n_boot=300)
    wrong = qlm.compare_samples(trees, samples, [qlm.sequence_tilt(t, 0.6) for t in trees],
                                n_boot=300)
    assert right.prompts == 3 and right.samples == 900
    assert right.tv_lo == 0.0 and right.p_value > 1e-3
    assert wrong.tv_lo > 0.0 and wrong.p_value < 1e-6


def test_observed_best_of_n_matches_the_prediction():
    prompts = [PROMPT, "Q: name two.\nA:", "Q: name three.\nA:"]
    trees = [qlm.answer_tree(LM, p, 3, top_k=len(LM.pieces)) for p in prompts]
    pools = LM.generate(prompts, n=480, max_tokens=3, seed=3)
    checkers = [has_a] * 3
    for score, pred_score in (("likelihood", "likelihood"), ("checker", "checker")):
        for n in (1, 4, 16):
            obs = qlm.observed_best_of_n(pools, n, checkers, score, n_boot=400)
            pred = np.mean([qlm.best_of_n_accuracy(t, n, has_a, score=pred_score).accuracy[0]
                            for t in trees])
            assert obs.lo <= pred <= obs.hi, (score, n, obs, pred)
            assert obs.groups == 3 * (480 // n) and len(obs.per_prompt) == 3
    # the check can fail: by likelihood, best-of-16 is far from best-of-1
    p1 = np.mean([qlm.best_of_n_accuracy(t, 1, has_a).accuracy[0] for t in trees])
    obs16 = qlm.observed_best_of_n(pools, 16, checkers, "likelihood", n_boot=400)
    assert not obs16.lo <= p1 <= obs16.hi
    # groups are disjoint: N = pool size keeps one group, N above it is refused
    one = qlm.observed_best_of_n([pools[0][:8]], 8, [has_a], n_boot=50)
    assert one.groups == 1
    with pytest.raises(QuasirlValueError, match="fewer than n = 9"):
        qlm.observed_best_of_n([pools[0][:8]], 9, [has_a])


def test_observed_selection_error_converges_to_the_tree():
    prompts = [PROMPT, "Q: name two.\nA:", "Q: name three.\nA:"]
    trees = [qlm.answer_tree(LM, p, 3, top_k=len(LM.pieces)) for p in prompts]
    pools = LM.generate(prompts, n=600, max_tokens=3, seed=5)
    Ts = [0.0, 0.2, 0.5, 1.0, 4.0]
    obs = qlm.observed_selection_error(pools, Ts, [has_a] * 3, n_boot=400)
    # oracle 1: each sample reweighted by exp(r / T_sel) by hand
    for j, T in enumerate(Ts):
        errs = []
        for pool in pools:
            r = np.array([has_a(x.text) for x in pool], dtype=float)
            w = (r > 0).astype(float) if T == 0 else np.exp(r / T)
            errs.append(np.sum(w * (1 - r)) / np.sum(w) if np.any(w) else 1.0)
        np.testing.assert_allclose(obs.error[j], np.mean(errs), rtol=1e-12)
    # oracle 2: the exact law of the tree (full expansion: no lumps), inside the interval
    pred = np.mean([qlm.error_after_selection(t, Ts, has_a).error for t in trees], axis=0)
    assert np.all(obs.lo <= pred + 1e-12) and np.all(pred <= obs.hi + 1e-12), (obs, pred)
    np.testing.assert_allclose(obs.before, 1 - np.mean([[has_a(x.text) for x in p]
                                                         for p in pools]), rtol=1e-12)
    with pytest.raises(QuasirlValueError, match="T_sel must be finite numbers >= 0"):
        qlm.observed_selection_error(pools, -1.0, [has_a] * 3)
    with pytest.raises(QuasirlValueError, match="one checker per prompt"):
        qlm.observed_selection_error(pools, 1.0, [has_a])


def test_tv_distance():
    assert qlm.tv_distance([0.5, 0.5], [1.0, 0.0]) == 0.5
    law = qlm.sampling_law(qlm.answer_tree(LM, PROMPT, 2, top_k=2))
    assert qlm.tv_distance(law, law) == 0.0


# ------------------------------------------------------------------------------------------
# bad arguments
# ------------------------------------------------------------------------------------------
def test_bad_arguments(tree):
    samples = LM.generate([PROMPT], n=4, max_tokens=3)[0]
    cases = [
        (lambda: qlm.best_of_n_law("tree", 2), "tree must be an AnswerTree"),
        (lambda: qlm.best_of_n_law(tree, 0), "n must be >= 1"),
        (lambda: qlm.best_of_n_law(tree, 2.0), "n must be an integer"),
        (lambda: qlm.best_of_n_law(tree, 2, "gold"), "score must be 'likelihood' or a checker"),
        (lambda: qlm.best_of_n_law(tree, 2, lambda t: "yes"), r"score\(.*\) must be True or"),
        (lambda: qlm.best_of_n_law(tree, 2, min_prob=0.0), r"min_prob must be in \(0, 1\]"),
        (lambda: qlm.best_of_n_law(tree, 2, cut_is_answer=1), "cut_is_answer must be True"),
        (lambda: qlm.best_of_n_law(qlm.answer_tree(LM, PROMPT, 2, top_k=2,
                                                   lm_temperature=0.5), 2),
         "needs the tree at lm_temperature = 1"),
        (lambda: qlm.best_of_n_accuracy(tree, [], has_a), "ns must not be empty"),
        (lambda: qlm.best_of_n_accuracy(tree, [2, 0], has_a), r"ns\[1\] must be >= 1"),
        (lambda: qlm.best_of_n_accuracy(tree, 2, None), "checker must be a function"),
        (lambda: qlm.sequence_tilt(tree, 0.0), "T must be > 0"),
        (lambda: qlm.sequence_tilt(tree, float("nan")), "T must be a finite number"),
        (lambda: qlm.soft_selection_law(tree, -1.0), "T_sel must be > 0"),
        (lambda: qlm.soft_selection_law(tree, 1.0, 3.0), "reward must be None or a function"),
        (lambda: qlm.soft_selection_law(tree, 1.0, lambda t: math.inf),
         r"reward\(.*\) must be a finite number"),
        (lambda: qlm.soft_selection_law(tree, 1.0, lump_reward=(1.0, 0.0)),
         "lump_reward must have low <= high"),
        (lambda: qlm.error_after_selection(tree, [-1.0], has_a), "T_sel must be finite"),
        (lambda: qlm.token_vs_tilt(tree, qlm.answer_tree(LM, PROMPT, 3, top_k=3)),
         "the same prefixes and terminals"),
        (lambda: qlm.token_vs_tilt(tree, qlm.answer_tree(LM, PROMPT, 3, top_k=2,
                                                         lm_temperature=0.5)),
         "tree_1 must be built at lm_temperature = 1"),
        (lambda: qlm.token_temperature_laws(LM, PROMPT, 3, [0.5, 0.0], top_k=2),
         r"temperatures\[1\] must be > 0"),
        (lambda: qlm.token_temperature_laws(object(), PROMPT, 3, 0.5, top_k=2),
         "lm must be a local token-level backend"),
        (lambda: qlm.token_temperature_laws(LM, PROMPT, 3, 0.5), "exactly one of top_k"),
        (lambda: qlm.tv_distance([0.5, 0.5], [1.0]), "same outcomes"),
        (lambda: qlm.tv_distance([0.5, 0.6], [1.0, 0.0]), "sum to 1"),
        (lambda: qlm.compare_samples(tree, samples, [1.0]), "law over the 19 outcomes"),
        (lambda: qlm.compare_samples(tree, samples, qlm.sampling_law(
            qlm.answer_tree(LM, "Q?", 3, top_k=2))), "other terminals"),
        (lambda: qlm.compare_samples(tree, "abc", qlm.sampling_law(tree)),
         "samples must be a list of Samples"),
        (lambda: qlm.compare_counts([1.5, 2.0], [0.5, 0.5]), "integer counts"),
        (lambda: qlm.compare_counts(np.array([0, 0]), [0.5, 0.5]), "at least one sample"),
        (lambda: qlm.compare_counts(np.array([3, 1]), [0.5, 0.5], n_boot=0),
         "n_boot must be >= 1"),
        (lambda: qlm.compare_counts(np.array([3, 1]), [0.5, 0.5], level=1.0),
         r"level must be in \(0, 1\)"),
        (lambda: qlm.observed_best_of_n([samples], 2, [has_a, has_a]), "one checker per"),
        (lambda: qlm.observed_best_of_n([samples], 2, [has_a], score="gold"),
         "score must be 'likelihood', 'checker'"),
        (lambda: qlm.observed_best_of_n([["x"]], 1, [has_a]), "must be a list of Samples"),
        (lambda: qlm.observed_best_of_n([], 1, []), "non-empty list"),
        (lambda: qlm.sample_loglik(Sample("x", (-1.0,), "stop")), "no end_logprob"),
    ]
    for call, match in cases:
        with pytest.raises(QuasirlValueError, match=match):
            call()


# ------------------------------------------------------------------------------------------
# the command line
# ------------------------------------------------------------------------------------------
def test_cli_tree_writes_as_it_goes_and_resumes(tmp_path, capsys):
    import json

    from quasirl.cli import main

    out = tmp_path / "tree"
    args = ["lm", "tree", "--model", "synthetic-tokens", "--quick", "--out", str(out)]
    assert main(args) == 0
    d = json.loads((out / "tree.json").read_text())
    lines = (out / "tree.jsonl").read_text().splitlines()
    assert len(lines) == 3 and d["summary"]["n_prompts"] == 2
    assert d["command"].startswith("quasirl lm tree --model synthetic-tokens")
    for name in ("free_energy.png", "best_of_n.png", "token_vs_tilt.png"):
        assert (out / name).stat().st_size > 5_000
    s = d["summary"]
    bon = s["best_of_n"]
    assert bon["ns"] == [1, 2, 4, 8, 16] and len(bon["checker"]["observed"]["accuracy"]) == 5
    np.testing.assert_allclose(bon["checker"]["predicted"]["accuracy"][0], s["sampling_accuracy"])
    for r in d["prompts"]:
        fe = r["free_energy"]
        gap = np.array(fe["F"]) - fe["map_logprob"]
        assert (gap >= -1e-12).all() and (gap <= np.array(fe["T"]) * fe["log_n"] + 1e-12).all()
        assert fe["map_mass"][0] == 1.0 and sum(r["temperatures"][-1]["counts"]) == 32
        np.testing.assert_allclose(sum(r["mass"].values()), 1.0, atol=1e-9)
        assert r["map_ne_greedy"] == (r["map"]["text"] != r["greedy"]["text"]
                                      or r["map"]["kind"] != r["greedy"]["kind"])
    assert [t["T"] for t in s["temperatures"]] == [0.5, 1.0]
    assert s["temperatures"][1]["tv_predicted"] < 1e-12
    # a run killed after the first prompt: the rerun computes only the second, identically
    (out / "tree.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])
    capsys.readouterr()
    assert main(args) == 0
    assert (out / "tree.jsonl").read_text().splitlines() == lines
    assert json.loads((out / "tree.json").read_text()) == d
    # other options cannot append to these records
    assert main([*args[:-2], "--seed", "1", "--out", str(out)]) == 2
    assert "belongs to a different run" in capsys.readouterr().err
    for bad, msg in ((["--depth", "0"], "--depth must be >= 1"),
                     (["--top-k", "2", "--min-prob", "0.1"], "one of --top-k and --min-prob"),
                     (["--temperatures", "0.5,0"], "--temperatures must be > 0"),
                     (["--best-of", "1,x"], "--best-of must be comma-separated integers"),
                     (["--samples", "8"], "--samples must be 0 or at least")):
        assert main(["lm", "tree", "--model", "synthetic-tokens", *bad,
                     "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and msg in err and "\n" not in err
