"""What selection keeps from a model's answer tree (issue 18): exact laws, checked on samples.

An :class:`quasirl.lm.AnswerTree` holds the law of the sampler's outcomes after a prompt, so the
law of what a selection step keeps follows from it with no fitted parameter:

* token-level sampling at temperature T (the tree built with ``lm_temperature=T``) against the
  sequence-level tilt q(a)^{1/T} / Z of the T = 1 law: two different laws over the same outcomes
  (:func:`token_temperature_laws`, :func:`token_vs_tilt`, :func:`sequence_tilt`,
  :func:`tv_distance`);
* best-of-N: N answers drawn i.i.d. from the tree's law, the one of highest score kept (own
  log-likelihood, or a 0/1 checker) (:func:`best_of_n_law`, :func:`best_of_n_accuracy`);
* soft selection with fitness exp(r / T_sel) (:func:`soft_selection_law`,
  :func:`error_after_selection`);
* and the comparison of a prediction with the model's samples: TV with a bootstrap interval and
  a chi-square test (:func:`compare_samples`, :func:`compare_counts`), best-of-N accuracy
  observed on pools of samples (:func:`observed_best_of_n`).

**Outcomes.** The sampler with ``max_tokens`` equal to the tree's depth and the tree's stop
strings lands every sample in one terminal of the tree (:meth:`AnswerTree.terminal_of`): an
ended answer, a prefix cut at the depth (finish "length", its text the prefix), or a rest lump
(the samples that leave the expanded tokens there). Ended answers and cut prefixes are single
outcomes with a known text and probability. A rest lump of mass m holds many outcomes that the
tree does not know; what is known: each has probability <= m, and < ``min_prob`` in a tree built
with ``min_prob`` (read from the tree; a value passed must agree with it). With
``cut_is_answer=False`` (samples drawn with more tokens than the depth) a cut prefix is a lump
too: the answers that continue it, each of probability <= its mass.

**Exact where it can be, bounds where it cannot.** Every law is a :class:`TreeLaw` over the
tree's terminals (a lump's entry is the probability that the kept answer is one of its members):
``lo`` and ``hi`` bound each entry whatever the lumps' members are, and ``prob`` is a nominal law
inside the bounds (each lump as members of the largest probability they can have, c =
min(m, min_prob); a member's unknown text as failing the checker, or of the lowest reward).
Without lumps, lo = prob = hi. With them the bounds are often still tight: in a ``min_prob``
tree no lump member can outscore an answer of probability >= min_prob, so likelihood best-of-N
keeps those answers with exactly known probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np
from scipy.stats import chi2 as chi2_dist

from .._selection_soft import best_of_n_law as _bon_law
from .._validate import QuasirlValueError, check_int, is_int
from ._stats import expanded_levels
from ._token import TokenLM, log_softmax
from ._tree import END, PAD, AnswerTree, _log_mass, answer_tree
from ._types import Sample, check_number

# a law's bounds count as equal (an exact entry) within this
EXACT_TOL = 1e-12


class TreeLaw(NamedTuple):
    """A law over the terminals of an answer tree, with what its lumps leave open.

    states: [n] the tree's terminals (``AnswerTree.terminals``); prob: [n] the nominal law (sums
    to 1); lo, hi: [n] bounds on each entry that hold whatever the members of the lumps are (a
    lump's entry: the probability that the outcome is one of its members).
    """

    states: np.ndarray
    prob: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    @property
    def exact(self) -> np.ndarray:
        """[n] True where the entry is known exactly (lo == hi)."""
        return self.hi - self.lo <= EXACT_TOL

    def to_dict(self) -> dict:
        return {"states": self.states.tolist(), "prob": self.prob.tolist(),
                "lo": self.lo.tolist(), "hi": self.hi.tolist(),
                "exact": bool(self.exact.all())}


class TemperatureLaws(NamedTuple):
    """Token-level sampling at T against the sequence-level tilt at T, on one tree.

    T: the temperature; tree: the tree at ``lm_temperature = T`` (map samples drawn at T with
    its ``terminal_of``); token: the law ``generate(temperature=T)`` samples (exact); tilt: the
    sequence-level tilt q_1(a)^{1/T} / Z of the T = 1 law over the same outcomes; tv: their TV
    distance (nominal), tv_lo <= TV <= tv_hi whatever the tilt's lumps hold.
    """

    T: float
    tree: AnswerTree
    token: TreeLaw
    tilt: TreeLaw
    tv: float
    tv_lo: float
    tv_hi: float

    def to_dict(self) -> dict:
        return {"T": self.T, "token": self.token.to_dict(), "tilt": self.tilt.to_dict(),
                "tv": self.tv, "tv_lo": self.tv_lo, "tv_hi": self.tv_hi}


class BestOfNAccuracy(NamedTuple):
    """Predicted accuracy of best-of-N for each N: nominal and bounds ([len(ns)] each)."""

    ns: np.ndarray
    accuracy: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    def to_dict(self) -> dict:
        return {"ns": self.ns.tolist(), "accuracy": self.accuracy.tolist(),
                "lo": self.lo.tolist(), "hi": self.hi.tolist()}


class SelectionError(NamedTuple):
    """Error rate after one round of soft selection with fitness exp(r / T_sel), r = 1 for a
    correct answer and 0 otherwise, for each T_sel; ``before``: the error without selection.
    error is the nominal value (lumps' members wrong, so it is ``hi``)."""

    T_sel: np.ndarray
    error: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    before: float

    def to_dict(self) -> dict:
        return {"T_sel": self.T_sel.tolist(), "error": self.error.tolist(),
                "lo": self.lo.tolist(), "hi": self.hi.tolist(), "before": self.before}


class SampleComparison(NamedTuple):
    """Observed outcome frequencies against a predicted law (one prompt or several).

    tv: TV distance between the observed frequencies and the prediction (mean over prompts);
    [tv_lo, tv_hi]: its bootstrap interval at ``level`` for the true law's distance to the
    prediction; tv_noise: the median TV that sampling noise alone gives (what a perfect
    prediction would show); chi2, dof, p_value: the goodness-of-fit test, small cells pooled,
    summed over prompts (p_value None when no cell is left to test).
    """

    prompts: int
    samples: int
    tv: float
    tv_lo: float
    tv_hi: float
    tv_noise: float
    chi2: float
    dof: int
    p_value: float | None
    level: float

    def to_dict(self) -> dict:
        return self._asdict()


class ObservedBestOfN(NamedTuple):
    """Best-of-N accuracy observed on pools of samples: the mean over prompts, its cluster
    bootstrap interval [lo, hi], the number of prompts and of groups of N used (one partition),
    and each prompt's accuracy."""

    n: int
    accuracy: float
    lo: float
    hi: float
    prompts: int
    groups: int
    per_prompt: tuple[float, ...]

    def to_dict(self) -> dict:
        d = self._asdict()
        d["per_prompt"] = list(self.per_prompt)
        return d


# --------------------------------------------------------------------------------------------
# checks and the terminals of a tree
# --------------------------------------------------------------------------------------------
def _check_tree(tree, name: str = "tree") -> AnswerTree:
    if not isinstance(tree, AnswerTree):
        raise QuasirlValueError(f"{name} must be an AnswerTree (quasirl.lm.answer_tree), got "
                                f"{type(tree).__name__}")
    return tree


def _check_cut(cut_is_answer) -> bool:
    if not isinstance(cut_is_answer, bool):
        raise QuasirlValueError(f"cut_is_answer must be True or False, got {cut_is_answer!r}")
    return cut_is_answer


def _check_positive(name: str, value) -> float:
    v = check_number(name, value)
    if not v > 0:
        raise QuasirlValueError(f"{name} must be > 0, got {value!r}")
    return v


def _check_min_prob(tree: AnswerTree, min_prob) -> float | None:
    """The ``min_prob`` the tree was built with: ``tree.min_prob`` when not given (None for a
    top_k tree). A given one is checked for consistency: every prefix, cut prefix and answer
    ended by a token has probability >= min_prob."""
    if min_prob is None:
        return tree.min_prob
    v = check_number("min_prob", min_prob)
    if not 0 < v <= 1:
        raise QuasirlValueError(f"min_prob must be in (0, 1], got {min_prob!r}")
    par = np.maximum(tree.parent, 0)
    by_token = tree.outcome[par, np.maximum(tree.action, 0)] >= 0
    kinds = np.array(tree.kind)
    held = (tree.parent >= 0) & ((kinds == "node") | (kinds == "cut")
                                 | ((kinds == "end") & by_token))
    bad = np.flatnonzero(held & (tree.logprob < math.log(v) - 1e-9))
    if bad.size:
        s = int(bad[0])
        raise QuasirlValueError(
            f"min_prob={v:g} is not the tree's: its state {s} ({tree.text[s]!r}) has "
            f"probability {math.exp(tree.logprob[s]):.3g} < min_prob; pass the min_prob the tree "
            f"was built with, or None")
    return v


class _Terminals(NamedTuple):
    states: np.ndarray  # [n] terminal states
    kind: np.ndarray  # [n] "end" | "rest" | "cut"
    text: list  # [n]
    logq: np.ndarray  # [n] log-probability under the tree's law
    lump: np.ndarray  # [n] True for a lump of unknown members
    log_cap: np.ndarray  # [n] log of the largest probability a member can have (lumps)
    strict: np.ndarray  # [n] members' probability < cap (not <=): a min_prob bound


def _terminals(tree: AnswerTree, min_prob: float | None, cut_is_answer: bool) -> _Terminals:
    st = tree.terminals
    kind = np.array([tree.kind[s] for s in st])
    logq = np.asarray(tree.logprob[st], dtype=np.float64)
    lump = (kind == "rest") | ((kind == "cut") & (not cut_is_answer))
    log_cap = logq.copy()
    strict = np.zeros(st.size, dtype=bool)
    if min_prob is not None:
        low = (kind == "rest") & (logq >= math.log(min_prob))
        log_cap[low] = math.log(min_prob)
        strict[low] = True
    return _Terminals(st, kind, [tree.text[s] for s in st], logq, lump, log_cap, strict)


def _known_values(fn, texts, lump, name: str, binary: bool) -> np.ndarray:
    """fn(text) for the terminals that are not lumps (0 for lumps), checked."""
    out = np.zeros(len(texts))
    for i, t in enumerate(texts):
        if lump[i]:
            continue
        v = fn(t)
        if binary:
            try:
                good = not isinstance(v, str) and v in (True, False)
            except (TypeError, ValueError):  # an array, say
                good = False
            if not good:
                raise QuasirlValueError(f"{name}({t!r}) must be True or False, got {v!r}")
            out[i] = float(bool(v))
        else:
            if isinstance(v, bool):
                v = float(v)
            out[i] = check_number(f"{name}({t!r})", v)
    return out


def _x64_bon(p, y, n: int) -> np.ndarray:
    """quasirl.selection.best_of_n_law in float64 (scoped precision, no global change)."""
    with jax.enable_x64(True):
        return np.array(_bon_law(np.asarray(p, np.float64), np.asarray(y, np.float64), n),
                        dtype=np.float64)


def _pow_diff(F, m, n: int):
    """F^n - (F - m)^n for 0 <= m <= F <= 1, accurate for small m and large n."""
    F = np.minimum(np.asarray(F, dtype=np.float64), 1.0)
    m = np.minimum(np.asarray(m, dtype=np.float64), F)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.exp(n * np.log(F)) * -np.expm1(n * np.log1p(-m / F))
    return np.where(F > 0, out, 0.0)


# --------------------------------------------------------------------------------------------
# laws with lumps of unknown weight
# --------------------------------------------------------------------------------------------
def _box_law(states, logw, log_lo, log_hi) -> TreeLaw:
    """The law w / sum(w), each weight w_i known (log_lo == log_hi == logw) or only known to
    lie in [exp(log_lo), exp(log_hi)] (a lump; logw its nominal value; log_hi may be +inf)."""
    fin = np.concatenate([v[np.isfinite(v)] for v in (logw, log_lo, log_hi)])
    shift = fin.max()
    w, a, b = (np.exp(v - shift) for v in (logw, log_lo, log_hi))
    lump = log_lo < log_hi
    prob = w / w.sum()
    W = w[~lump].sum()
    A = a[lump].sum()
    b_inf = np.isinf(b) & lump
    b_fin = np.where(lump & ~b_inf, b, 0.0)
    n_inf = int(b_inf.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = np.where(n_inf > 0, 0.0, w / (W + b_fin.sum()))
        hi = w / (W + A)
        others_b = np.where(n_inf - b_inf > 0, np.inf, b_fin.sum() - b_fin)
        others_a = np.maximum(A - a, 0.0)
        den_lo = W + a + others_b
        lump_lo = np.where(den_lo > 0, a / np.where(np.isinf(den_lo), 1.0, den_lo), 1.0)
        lump_lo = np.where(np.isinf(den_lo), 0.0, lump_lo)
        den_hi = W + b + others_a
        lump_hi = np.where(b_inf, 1.0, np.where(den_hi > 0, b / den_hi, 1.0))
    lo = np.clip(np.where(lump, lump_lo, lo), 0.0, 1.0)
    hi = np.clip(np.where(lump, lump_hi, hi), 0.0, 1.0)
    return TreeLaw(np.asarray(states), prob, np.minimum(lo, prob), np.maximum(hi, prob))


def _interval_tv(p, law: TreeLaw) -> tuple[float, float]:
    """Bounds on TV(p, q) over the laws q inside law's bounds."""
    below = np.maximum(law.lo - p, 0.0) + np.maximum(p - law.hi, 0.0)
    far = np.maximum(np.abs(p - law.lo), np.abs(p - law.hi))
    return float(0.5 * below.sum()), float(min(1.0, 0.5 * far.sum()))


def sampling_law(tree) -> TreeLaw:
    """The law of the sampler's outcomes (at the tree's ``lm_temperature``): q of each terminal,
    lumps as outcomes, exact."""
    tree = _check_tree(tree)
    p = np.exp(np.asarray(tree.logprob[tree.terminals], dtype=np.float64))
    p = p / p.sum()
    return TreeLaw(tree.terminals, p, p.copy(), p.copy())


def _tilt_law(term: _Terminals, logq, T: float) -> TreeLaw:
    """q^{1/T} / Z over the terminals; a lump of mass m whose members have probability <= c
    (log_cap) has weight sum_i q_i^{1/T} in (0, m c^{1/T-1}] for T <= 1 and in
    [m c^{1/T-1}, inf) for T > 1."""
    logw = np.asarray(logq, dtype=np.float64) / T
    nominal = logq + (1.0 / T - 1.0) * term.log_cap
    lo, hi = logw.copy(), logw.copy()
    L = term.lump
    logw[L] = nominal[L]
    if T <= 1:
        lo[L], hi[L] = -np.inf, nominal[L]
    else:
        lo[L], hi[L] = nominal[L], np.inf
    if T == 1:
        lo[L] = hi[L] = nominal[L]  # the tilt at T = 1 is the law itself: the lump's mass
    return _box_law(term.states, logw, lo, hi)


def sequence_tilt(tree, T, *, min_prob=None, cut_is_answer: bool = True) -> TreeLaw:
    """The sequence-level tilt q(a)^{1/T} / Z of the tree's law over the sampler's outcomes.

    A lump's members are tilted one by one (sum_i q_i^{1/T}, not (sum_i q_i)^{1/T}), so its
    weight is bounded, not known: its nominal weight counts it as members of the largest
    probability they can have (``min_prob`` when the tree was built with it, else the lump's
    mass: then the nominal law is ``tree.tilted_law(T, answers_only=False)``). T > 0 (T = 0 is
    the most probable outcome; see ``AnswerTree.map_answer``).
    """
    tree = _check_tree(tree)
    T = _check_positive("T", T)
    term = _terminals(tree, _check_min_prob(tree, min_prob), _check_cut(cut_is_answer))
    return _tilt_law(term, term.logq, T)


def tv_distance(p, q) -> float:
    """Total variation distance 0.5 sum |p - q| between two laws on the same outcomes (arrays
    [n] that sum to 1, or :class:`TreeLaw` s, whose nominal laws are used)."""
    sizes = []
    for x in (p, q):
        try:
            sizes.append(np.size(x.prob if isinstance(x, TreeLaw) else x))
        except (TypeError, ValueError):
            sizes.append(0)
    if sizes[0] == 0 or sizes[1] == 0:
        name = "p" if sizes[0] == 0 else "q"
        raise QuasirlValueError(f"{name} must be a non-empty law (numbers that sum to 1)")
    if sizes[0] != sizes[1]:
        raise QuasirlValueError(f"p and q must be laws on the same outcomes, got {sizes[0]} and "
                                f"{sizes[1]} outcomes")
    a, b = _law_array(p, sizes[0], "p"), _law_array(q, sizes[0], "q")
    return float(0.5 * np.abs(a - b).sum())


# --------------------------------------------------------------------------------------------
# token-level temperature against the sequence-level tilt
# --------------------------------------------------------------------------------------------
def _same_structure(a: AnswerTree, b: AnswerTree) -> bool:
    return (a.kind == b.kind and a.token_ids == b.token_ids and a.prompt_ids == b.prompt_ids
            and np.array_equal(a.parent, b.parent) and a.stop == b.stop
            and a.horizon == b.horizon)


def _laws_at(tree_T: AnswerTree, logq1, cut_is_answer: bool) -> TemperatureLaws:
    T = tree_T.lm_temperature
    token = sampling_law(tree_T)
    term = _terminals(tree_T, None, cut_is_answer)
    lq1 = np.asarray(logq1, dtype=np.float64)[term.states]
    # the tilt's lumps: members of the T = 1 law have probability <= the lump's T = 1 mass
    term1 = term._replace(logq=lq1, log_cap=lq1.copy())
    tilt = _tilt_law(term1, lq1, T)
    lo, hi = _interval_tv(token.prob, tilt)
    return TemperatureLaws(T, tree_T, token, tilt, tv_distance(token, tilt), lo, hi)


def token_vs_tilt(tree_T, tree_1, *, cut_is_answer: bool = True) -> TemperatureLaws:
    """Token-level sampling at T = ``tree_T.lm_temperature`` against the sequence-level tilt at
    T of ``tree_1`` (the same prompt at ``lm_temperature = 1``), over the same outcomes.

    Both trees must have the same prefixes and terminals: build them with the same ``top_k``
    (a ``top_k`` expansion does not depend on the temperature; a ``min_prob`` one does: use
    :func:`token_temperature_laws` for those).
    """
    tree_T = _check_tree(tree_T, "tree_T")
    tree_1 = _check_tree(tree_1, "tree_1")
    if tree_1.lm_temperature != 1.0:
        raise QuasirlValueError(f"tree_1 must be built at lm_temperature = 1, got "
                                f"{tree_1.lm_temperature!r}")
    if not _same_structure(tree_T, tree_1):
        raise QuasirlValueError(
            "tree_T and tree_1 must have the same prefixes and terminals (the same prompt, "
            "depth, stop strings and top_k); for min_prob trees use token_temperature_laws")
    return _laws_at(tree_T, tree_1.logprob, _check_cut(cut_is_answer))


class _LogitsMemo(TokenLM):
    """A token backend that keeps the logits of every sequence it is asked about, so that trees
    of one prompt at several temperatures cost the forward passes of one."""

    def __init__(self, lm: TokenLM):
        self.lm = lm
        self.name = getattr(lm, "name", type(lm).__name__)
        self.memo: dict[tuple[int, ...], np.ndarray] = {}

    def tokenize(self, text, bos):
        return self.lm.tokenize(text, bos)

    def detokenize(self, ids):
        return self.lm.detokenize(ids)

    def eog_ids(self):
        return self.lm.eog_ids()

    def token_pieces(self):
        return self.lm.token_pieces()

    def end_ids(self, stop):
        return self.lm.end_ids(stop)

    def _get(self, ids, fn):
        key = tuple(int(t) for t in ids)
        if key not in self.memo:
            self.memo[key] = np.array(fn(list(key)), copy=True)
        return self.memo[key]

    def next_logits(self, ids):
        return self._get(ids, self.lm.next_logits)

    def prefix_logits(self, ids):
        return self._get(ids, self.lm.prefix_logits)


def _log_q1(tree: AnswerTree, memo: _LogitsMemo, top_k, min_prob) -> np.ndarray:
    """log q_1 (the T = 1 law) of every state of a tree built through ``memo`` at
    ``lm_temperature`` T: each prefix's outcomes re-read from its logits (the expanded tokens
    found again by the tree's own rule, and checked against the tree's log q_T)."""
    T, pids = tree.lm_temperature, list(tree.prompt_ids)
    ends = np.asarray(memo.end_ids(tree.stop), dtype=np.int64)
    log_min = math.log(min_prob) if min_prob is not None else None
    nxt = np.asarray(tree.mdp.next)[..., 0]
    out = np.full(tree.num_states, np.nan)
    out[0] = 0.0
    for s in tree.nodes.tolist():
        gen = list(tree.token_ids[s])
        x = np.asarray(memo.next_logits(pids + gen) if gen else memo.prefix_logits(pids),
                       dtype=np.float64)
        lp1, lpT = log_softmax(x), log_softmax(x / T)
        is_end = np.zeros(x.size, dtype=bool)
        is_end[ends[ends < x.size]] = True
        cand = np.flatnonzero(~is_end & (lpT > -np.inf))
        cand = cand[np.argsort(-lpT[cand], kind="stable")]
        chosen = cand[:top_k] if top_k is not None else cand[tree.logprob[s] + lpT[cand]
                                                             >= log_min]
        picked = np.zeros(x.size, dtype=bool)
        picked[chosen] = True
        row = tree.outcome[s]
        kept = np.zeros(x.size, dtype=bool)
        kept[row[row >= 0]] = True
        merged = picked & ~kept  # expanded tokens that only add the stop string: the end
        for a, code in enumerate(row.tolist()):
            if code == PAD:
                continue
            child = int(nxt[s, a])
            if code >= 0:
                l1, lT = lp1[code], lpT[code]
            else:
                sel = (is_end | merged) if code == END else (~is_end & ~picked)
                l1, lT = _log_mass(lp1, sel), _log_mass(lpT, sel)
            if abs(tree.logprob[child] - tree.logprob[s] - lT) > 1e-8:
                raise QuasirlValueError(
                    f"state {child} of the tree does not follow from the logits of its prefix "
                    f"at T = {T:g}: build the tree through the same top_k / min_prob and stop")
            out[child] = out[s] + l1
    return out


def token_temperature_laws(lm, prompt: str, depth: int, temperatures, *, top_k=None,
                           min_prob=None, stop=("\n",), max_nodes: int = 10_000,
                           cut_is_answer: bool = True) -> list[TemperatureLaws]:
    """Token-level sampling at each T against the sequence-level tilt at T, from the model.

    For each T > 0 the tree is built at ``lm_temperature = T`` (the law ``generate`` samples at
    T, exactly: :class:`TemperatureLaws` ``.token``) and the T = 1 law of its outcomes is read
    from the same logits, which gives the tilt q_1^{1/T} / Z over the same outcomes
    (``.tilt``). The logits of each prefix are computed once for all temperatures (memory:
    one logit vector per prefix). Give exactly one of ``top_k`` and ``min_prob`` (as in
    :func:`quasirl.lm.answer_tree`); at T = 1 the two laws are equal.
    """
    if isinstance(temperatures, int | float) and not isinstance(temperatures, bool):
        temperatures = [temperatures]
    try:
        temps = [float(t) for t in temperatures]
    except (TypeError, ValueError):
        raise QuasirlValueError(f"temperatures must be numbers > 0, got {temperatures!r}") \
            from None
    if not temps:
        raise QuasirlValueError("temperatures must not be empty")
    for i, t in enumerate(temps):
        _check_positive(f"temperatures[{i}]", t)
    cut = _check_cut(cut_is_answer)
    if not isinstance(lm, TokenLM):
        raise QuasirlValueError(
            f"lm must be a local token-level backend (LlamaCppLM, TransformersLM, "
            f"SyntheticTokenLM), got {type(lm).__name__}")
    memo = lm if isinstance(lm, _LogitsMemo) else _LogitsMemo(lm)
    out = []
    for T in temps:
        tree = answer_tree(memo, prompt, depth, top_k=top_k, min_prob=min_prob, stop=stop,
                           lm_temperature=T, max_nodes=max_nodes)
        out.append(_laws_at(tree, _log_q1(tree, memo, top_k, min_prob), cut))
    return out


# --------------------------------------------------------------------------------------------
# best-of-N
# --------------------------------------------------------------------------------------------
def _score_kind(score):
    if isinstance(score, str):
        if score != "likelihood":
            raise QuasirlValueError(f"score must be 'likelihood' or a checker (a function of "
                                    f"the answer text returning True/False), got {score!r}")
        return "likelihood"
    if not callable(score):
        raise QuasirlValueError(f"score must be 'likelihood' or a checker (a function of the "
                                f"answer text returning True/False), got {score!r}")
    return "checker"


def best_of_n_law(tree, n: int, score="likelihood", *, min_prob=None,
                  cut_is_answer: bool = True) -> TreeLaw:
    """The exact law of the answer best-of-N keeps: N outcomes drawn i.i.d. from the tree's law,
    the one of highest score kept (:func:`quasirl.selection.best_of_n_law`, ties split
    uniformly).

    score: "likelihood" (the outcome's own log q; the tree must be at ``lm_temperature`` 1, the
      law whose log-probabilities the sampler reports), or a checker ``text -> bool``: among the
      passing draws one is kept uniformly, and a uniformly random draw when none passes.
    min_prob: the ``min_prob`` the tree was built with (its lumps' members are below it).

    Lumps: their members' scores are unknown. ``lo``/``hi`` hold for any members: with the
    likelihood, a member scores at most log c (c = min(m, min_prob)), so an answer of
    probability > c is never beaten by that lump (in a min_prob tree every answer of probability
    >= min_prob is exact); with a checker, a member may pass or fail. ``prob``: members at
    probability c (likelihood), or failing (checker).
    """
    tree = _check_tree(tree)
    n = check_int("n", n, minimum=1)
    kind = _score_kind(score)
    cut = _check_cut(cut_is_answer)
    mp = _check_min_prob(tree, min_prob)
    if kind == "likelihood" and tree.lm_temperature != 1.0:
        raise QuasirlValueError(
            f"best-of-N by likelihood needs the tree at lm_temperature = 1 (the samples' own "
            f"log-likelihood is the model's), got {tree.lm_temperature!r}")
    term = _terminals(tree, mp, cut)
    p = np.exp(term.logq)
    p = p / p.sum()
    L = term.lump
    if kind == "likelihood":
        y = term.logq.copy()
        y[L] = term.log_cap[L]
        bottom = min(y.min(), 0.0) - 1.0
        top = np.where(term.strict, np.nextafter(term.log_cap, -np.inf),
                       np.nextafter(term.log_cap, np.inf))
    else:
        y = _known_values(score, term.text, L, "score", binary=True)
        bottom, top = 0.0, np.ones(y.size)
    prob = _x64_bon(p, y, n)
    if not L.any():
        return TreeLaw(term.states, prob, prob.copy(), prob.copy())
    y_top, y_bot = y.copy(), y.copy()
    y_top[L], y_bot[L] = top[L], bottom
    lo = _x64_bon(p, y_top, n)  # lumps as high as they can score: the known answers' least
    hi = _x64_bon(p, y_bot, n)
    m, M = p[L], p[L].sum()
    if kind == "likelihood":
        # lump j alone on top (others at the bottom): it beats the known answers below its cap
        beaten = np.array([p[~L][(y[~L] <= t)].sum() for t in top[L]])
        hi[L] = _pow_diff(beaten + M, m, n)
        lo[L] = m**n  # alone at the bottom: kept only when all N draws are its own
    else:
        P = p[~L][y[~L] > 0].sum()
        hi[L] = -np.expm1(n * np.log1p(-np.minimum(P + m, 1.0))) * m / (P + m)
        lo[L] = np.maximum(1.0 - P - (M - m), 0.0) ** (n - 1) * m
    return TreeLaw(term.states, prob, np.minimum(lo, prob), np.maximum(hi, prob))


def _check_ns(ns) -> np.ndarray:
    if is_int(ns):
        ns = [ns]
    if isinstance(ns, str) or not isinstance(ns, Sequence | np.ndarray):
        raise QuasirlValueError(f"ns must be an integer or a sequence of integers >= 1, got "
                                f"{ns!r}")
    out = [check_int(f"ns[{i}]", v, minimum=1) for i, v in enumerate(ns)]
    if not out:
        raise QuasirlValueError("ns must not be empty")
    return np.array(out, dtype=np.int64)


def _check_checker(checker, name: str = "checker"):
    if not callable(checker):
        raise QuasirlValueError(f"{name} must be a function of the answer text returning "
                                f"True/False, got {checker!r}")
    return checker


def best_of_n_accuracy(tree, ns, checker, score="likelihood", *, min_prob=None,
                       cut_is_answer: bool = True) -> BestOfNAccuracy:
    """P(the answer best-of-N keeps passes ``checker``), for each N in ``ns``.

    score: "likelihood" (select by own log-likelihood), "checker" (select by the checker
    itself: exactly 1 - (1 - acc)^N, acc the sampling accuracy), or another checker
    ``text -> bool`` to select by. A lump's members count as wrong in the nominal accuracy;
    [lo, hi] holds whatever they are.
    """
    tree = _check_tree(tree)
    ns = _check_ns(ns)
    checker = _check_checker(checker)
    cut = _check_cut(cut_is_answer)
    mp = _check_min_prob(tree, min_prob)
    term = _terminals(tree, mp, cut)
    p = np.exp(term.logq)
    p = p / p.sum()
    L = term.lump
    ok = _known_values(checker, term.text, L, "checker", binary=True) > 0
    if isinstance(score, str) and score == "checker":
        P, M = p[ok & ~L].sum(), p[L].sum()
        acc = -np.expm1(ns * np.log1p(-min(P, 1.0)))
        hi = -np.expm1(ns * np.log1p(-min(P + M, 1.0)))
        return BestOfNAccuracy(ns, acc, acc.copy(), hi)
    acc, lo, hi = (np.empty(ns.size) for _ in range(3))
    for i, n in enumerate(ns.tolist()):
        law = best_of_n_law(tree, n, score, min_prob=mp, cut_is_answer=cut)
        good, bad = ok & ~L, ~ok & ~L
        acc[i] = law.prob[good].sum()
        lo[i] = law.lo[good].sum()
        hi[i] = min(1.0, 1.0 - law.lo[bad].sum(), law.hi[good].sum() + law.hi[L].sum())
    return BestOfNAccuracy(ns, acc, lo, np.maximum(hi, acc))


# --------------------------------------------------------------------------------------------
# soft selection
# --------------------------------------------------------------------------------------------
def _check_range(name: str, value) -> tuple[float, float]:
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise QuasirlValueError(f"{name} must be a pair (low, high), got {value!r}") from None
    lo, hi = check_number(f"{name}[0]", lo), check_number(f"{name}[1]", hi)
    if lo > hi:
        raise QuasirlValueError(f"{name} must have low <= high, got {value!r}")
    return lo, hi


def soft_selection_law(tree, T_sel, reward=None, *, lump_reward=(0.0, 1.0),
                       cut_is_answer: bool = True) -> TreeLaw:
    """Soft selection: the tree's law tilted by the fitness exp(r / T_sel), q e^{r/T_sel} / Z.

    reward: a function of the answer text returning a finite number (a checker's True/False
      counts 1/0), or None for the tree's own task reward (``answer_tree(..., reward=)``; 0 on
      cut prefixes and lumps): then at T_sel = 1 the nominal law is ``tree.tilted_law(1,
      answers_only=False)``. It is :func:`quasirl.selection.temper` on the outcomes, the
      maximiser of E[r] - T_sel KL(. || q) (the KL-regularised RL optimum).
    lump_reward: (low, high), the range of the reward on a lump's members (default that of a
      checker); the nominal law takes the low end.
    T_sel > 0.
    """
    tree = _check_tree(tree)
    T = _check_positive("T_sel", T_sel)
    rl, rh = _check_range("lump_reward", lump_reward)
    cut = _check_cut(cut_is_answer)
    if reward is not None and not callable(reward):
        raise QuasirlValueError(
            f"reward must be None or a function of the answer text, got {reward!r}")
    term = _terminals(tree, None, cut)
    L = term.lump
    if reward is None:
        r = np.asarray(tree.task_reward[term.states], dtype=np.float64).copy()
    else:
        r = _known_values(reward, term.text, L, "reward", binary=False)
    logw = term.logq + r / T
    lo, hi = logw.copy(), logw.copy()
    lo[L] = term.logq[L] + rl / T
    hi[L] = term.logq[L] + rh / T
    logw[L] = lo[L]
    return _box_law(term.states, logw, lo, hi)


def error_after_selection(tree, T_sel, checker, *, cut_is_answer: bool = True
                          ) -> SelectionError:
    """The error rate after one round of soft selection with fitness exp(r / T_sel), r = 1 for
    an answer ``checker`` accepts and 0 otherwise: the wrong mass of
    :func:`soft_selection_law`. T_sel >= 0, a number or a 1-D array (0: keep only correct
    answers when there are any). Closed form, with a = exp(-1 / T_sel), W, C the wrong and
    correct known masses and M the lumps' mass: error = (W + M) a / ((W + M) a + C) when the
    lumps' members are wrong (the nominal value, ``hi``), W a / (W a + C + M) when they are
    correct (``lo``).
    """
    tree = _check_tree(tree)
    checker = _check_checker(checker)
    cut = _check_cut(cut_is_answer)
    try:
        Ts = np.asarray(T_sel, dtype=np.float64)
    except (TypeError, ValueError):
        raise QuasirlValueError(f"T_sel must be a number or a 1-D array >= 0, got {T_sel!r}") \
            from None
    if Ts.ndim > 1 or Ts.size == 0 or not np.isfinite(Ts).all() or (Ts < 0).any():
        raise QuasirlValueError(f"T_sel must be finite numbers >= 0 (a scalar or a 1-D array), "
                                f"got {T_sel!r}")
    Ts = np.atleast_1d(Ts)
    term = _terminals(tree, None, cut)
    p = np.exp(term.logq)
    p = p / p.sum()
    L = term.lump
    ok = _known_values(checker, term.text, L, "checker", binary=True) > 0
    W, C, M = p[~ok & ~L].sum(), p[ok & ~L].sum(), p[L].sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(Ts > 0, np.exp(-1.0 / np.where(Ts > 0, Ts, 1.0)), 0.0)
        hi = (W + M) * a / ((W + M) * a + C)
        lo = W * a / (W * a + C + M)
    hi = np.where(np.isnan(hi), 1.0, hi)  # nothing correct, at T_sel = 0: all kept are wrong
    lo = np.where(np.isnan(lo), 1.0, lo)
    return SelectionError(Ts, hi.copy(), lo, hi, float(W + M))


# --------------------------------------------------------------------------------------------
# predictions against samples
# --------------------------------------------------------------------------------------------
def _check_level(level) -> float:
    v = check_number("level", level)
    if not 0 < v < 1:
        raise QuasirlValueError(f"level must be in (0, 1), got {level!r}")
    return v


def _law_array(law, n: int, name: str, states=None) -> np.ndarray:
    if isinstance(law, TreeLaw):
        if states is not None and not np.array_equal(law.states, states):
            raise QuasirlValueError(f"{name} is a law over other terminals than its tree's")
        law = law.prob
    try:
        a = np.asarray(law, dtype=np.float64)
    except (TypeError, ValueError):
        raise QuasirlValueError(f"{name} must be a law (a TreeLaw or numbers that sum to 1), "
                                f"got {type(law).__name__}") from None
    if a.shape != (n,):
        raise QuasirlValueError(f"{name} must be a law over the {n} outcomes, got shape "
                                f"{a.shape}")
    if not np.isfinite(a).all() or (a < 0).any() or abs(a.sum() - 1) > 1e-6:
        raise QuasirlValueError(f"{name} must hold finite non-negative numbers that sum to 1, "
                                f"got sum {a.sum()!r}")
    return a


def _chi2_cells(o, e, small: float = 5.0):
    """(statistic, dof) of one table: cells with expected < ``small`` pooled into one; an
    observation where nothing is expected gives an infinite statistic."""
    if ((e <= 0) & (o > 0)).any():
        return math.inf, max(int((e > 0).sum()) - 1, 1)
    big = e >= small
    oo, ee = list(o[big]), list(e[big])
    if (~big).any() and e[~big].sum() > 0:
        oo.append(o[~big].sum())
        ee.append(e[~big].sum())
    oo, ee = np.array(oo, dtype=np.float64), np.array(ee, dtype=np.float64)
    if oo.size < 2:
        return 0.0, 0
    return float(((oo - ee) ** 2 / ee).sum()), int(oo.size - 1)


def compare_counts(counts, predicted, *, n_boot: int = 1000, seed: int = 0,
                   level: float = 0.95) -> SampleComparison:
    """Observed counts of the outcomes against a predicted law, one prompt or several.

    counts: [n] non-negative integers (one prompt), or a list of them (one per prompt);
    predicted: the law(s) on the same outcomes (arrays or :class:`TreeLaw`).

    TV: the mean over prompts of 0.5 sum |f - p| (f the observed frequencies). Its interval
    rests on the triangle inequality: the true law P is within TV(f, P) of f, so TV(P, p) lies
    in TV(f, p) -/+ TV(f, P). The sampling error TV(f, P) is estimated twice, by resampling the
    samples (TV(f*, f)) and by sampling the prediction (TV(f0, p), f0 ~ Multinomial(n, p): its
    exact law when the prediction is right), and the larger is used; prompts are resampled for
    the spread across prompts (a cluster bootstrap; expanded percentiles, Hesterberg 2015).
    Conservative: when the prediction is the sampler's law the interval reaches 0 with
    probability >= (1 + level) / 2, and a wrong prediction is excluded once the samples resolve
    it. ``tv_noise`` is the median of TV(f0, p). Chi-square: expected counts below 5 pooled per
    prompt, statistics and degrees of freedom summed.
    """
    n_boot = check_int("n_boot", n_boot, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    level = _check_level(level)
    single = not isinstance(counts, list | tuple) or not counts or np.ndim(counts[0]) == 0
    cs = [counts] if single else list(counts)
    ps = [predicted] if single else predicted
    if not isinstance(ps, list | tuple) or len(ps) != len(cs):
        raise QuasirlValueError("predicted must hold one law per prompt of counts "
                                f"({len(cs)}), got {type(ps).__name__}")
    if not cs:
        raise QuasirlValueError("counts must hold at least one prompt")
    obs, laws = [], []
    for k, (c, p) in enumerate(zip(cs, ps, strict=True)):
        where = "counts" if single else f"counts[{k}]"
        try:
            a = np.asarray(c)
        except (TypeError, ValueError):
            a = np.asarray([None])
        if a.ndim != 1 or a.size == 0 or not (np.issubdtype(a.dtype, np.integer)
                                              or a.dtype == bool):
            raise QuasirlValueError(f"{where} must be a 1-D array of integer counts, got "
                                    f"{c!r}")
        if (a < 0).any() or a.sum() == 0:
            raise QuasirlValueError(f"{where} must be non-negative with at least one sample")
        obs.append(a.astype(np.int64))
        laws.append(_law_array(p, a.size, "predicted" if single else f"predicted[{k}]"))
    rng = np.random.default_rng([seed, 18])
    K = len(obs)
    tv = np.array([0.5 * np.abs(o / o.sum() - p).sum() for o, p in zip(obs, laws, strict=True)])
    emp, null = np.empty((n_boot, K)), np.empty((n_boot, K))
    for k, (o, p) in enumerate(zip(obs, laws, strict=True)):
        m, f = int(o.sum()), o / o.sum()
        emp[:, k] = 0.5 * np.abs(rng.multinomial(m, f, size=n_boot) / m - f).sum(axis=1)
        null[:, k] = 0.5 * np.abs(rng.multinomial(m, p, size=n_boot) / m - p).sum(axis=1)
    idx = rng.integers(K, size=(n_boot, K)) if K > 1 else np.zeros((n_boot, 1), np.int64)
    z = tv[idx].mean(axis=1)
    e = np.maximum(np.take_along_axis(emp, idx, axis=1).mean(axis=1),
                   np.take_along_axis(null, idx, axis=1).mean(axis=1))
    qlo, qhi = expanded_levels(K, level) if K > 1 else ((1 - level) / 2, (1 + level) / 2)
    lo = float(np.clip(np.quantile(z - e, qlo), 0.0, 1.0))
    hi = float(np.clip(np.quantile(z + e, qhi), 0.0, 1.0))
    stat, dof = 0.0, 0
    for o, p in zip(obs, laws, strict=True):
        s, d = _chi2_cells(o.astype(np.float64), o.sum() * p)
        stat, dof = stat + s, dof + d
    pval = None if dof == 0 else (0.0 if math.isinf(stat) else float(chi2_dist.sf(stat, dof)))
    return SampleComparison(K, int(sum(o.sum() for o in obs)), float(tv.mean()), lo, hi,
                            float(np.median(null.mean(axis=1))), float(stat), dof, pval, level)


def terminal_counts(tree, samples) -> np.ndarray:
    """[n] how many of ``samples`` (drawn with the tree's stop strings and max_tokens >= its
    depth) fall in each terminal of the tree (``tree.terminals`` order)."""
    tree = _check_tree(tree)
    if isinstance(samples, Sample | str) or not isinstance(samples, Sequence):
        raise QuasirlValueError(f"samples must be a list of Samples, got "
                                f"{type(samples).__name__}")
    where = [tree.terminal_of(s) for s in samples]
    return np.bincount(np.searchsorted(tree.terminals, where), minlength=tree.terminals.size)


def compare_samples(tree, samples, predicted, *, n_boot: int = 1000, seed: int = 0,
                    level: float = 0.95) -> SampleComparison:
    """:func:`compare_counts` on samples: ``tree`` an AnswerTree with its ``samples`` (a list
    of Samples) and ``predicted`` law, or lists of them, one per prompt (then prompts are
    resampled, then samples)."""
    if isinstance(tree, AnswerTree):
        law = _law_array(predicted, tree.terminals.size, "predicted", tree.terminals)
        return compare_counts(terminal_counts(tree, samples), law, n_boot=n_boot, seed=seed,
                              level=level)
    if not isinstance(tree, list | tuple) or not tree:
        raise QuasirlValueError(f"tree must be an AnswerTree or a non-empty list of them, got "
                                f"{type(tree).__name__}")
    if not isinstance(samples, list | tuple) or len(samples) != len(tree):
        raise QuasirlValueError(f"samples must hold one list of Samples per tree ({len(tree)})")
    if not isinstance(predicted, list | tuple) or len(predicted) != len(tree):
        raise QuasirlValueError(f"predicted must hold one law per tree ({len(tree)})")
    counts = [terminal_counts(t, s) for t, s in zip(tree, samples, strict=True)]
    laws = [_law_array(p, t.terminals.size, f"predicted[{k}]", t.terminals)
            for k, (t, p) in enumerate(zip(tree, predicted, strict=True))]
    return compare_counts(counts, laws, n_boot=n_boot, seed=seed, level=level)


def sample_loglik(sample) -> float:
    """A sample's own log-likelihood as an outcome of the sampler: its tokens' log-probabilities
    plus, when it ended, that of the end (its tree terminal's log q at T = 1)."""
    if not isinstance(sample, Sample):
        raise QuasirlValueError(f"sample must be a Sample, got {type(sample).__name__}")
    if sample.finish != "stop":
        return sample.logprob
    if sample.end_logprob is None:
        raise QuasirlValueError("sample has no end_logprob (a local backend's samples have "
                                "it): its likelihood as an ended answer is unknown")
    return sample.logprob + sample.end_logprob


def _check_pools(samples_by_prompt, checkers) -> None:
    """One list of samples and one checker per prompt."""
    if not isinstance(samples_by_prompt, Sequence) or not samples_by_prompt:
        raise QuasirlValueError("samples_by_prompt must be a non-empty list (one list of "
                                "Samples per prompt)")
    if not isinstance(checkers, Sequence) or len(checkers) != len(samples_by_prompt):
        raise QuasirlValueError(f"checkers must hold one checker per prompt "
                                f"({len(samples_by_prompt)})")


def observed_best_of_n(samples_by_prompt, n: int, checkers, score="likelihood", *,
                       partitions: int = 20, n_boot: int = 1000, seed: int = 0,
                       level: float = 0.95) -> ObservedBestOfN:
    """Best-of-N accuracy observed on a pool of samples per prompt.

    Each prompt's pool (>= n samples, drawn i.i.d.) is cut at random into disjoint groups of n
    (no sample twice in a group); each group keeps its sample of highest score, the first in the
    random order on ties (a uniform tie-break); the prompt's accuracy is the fraction of kept
    samples ``checkers[k]`` accepts, averaged over ``partitions`` random partitions. The
    accuracy is the mean over prompts; its interval a cluster bootstrap: prompts resampled, then
    each prompt's groups (as binomial draws).

    samples_by_prompt: per prompt, a list of Samples. checkers: per prompt, a function of the
    text returning True/False. score: "likelihood" (:func:`sample_loglik`), "checker" (select
    by the checker: among passing samples one at random, else a random one), or a function of
    a Sample returning a number.
    """
    n = check_int("n", n, minimum=1)
    partitions = check_int("partitions", partitions, minimum=1)
    n_boot = check_int("n_boot", n_boot, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    level = _check_level(level)
    _check_pools(samples_by_prompt, checkers)
    if isinstance(score, str) and score not in ("likelihood", "checker"):
        raise QuasirlValueError(f"score must be 'likelihood', 'checker' or a function of a "
                                f"Sample, got {score!r}")
    if not isinstance(score, str) and not callable(score):
        raise QuasirlValueError(f"score must be 'likelihood', 'checker' or a function of a "
                                f"Sample, got {score!r}")
    accs, groups = [], []
    for k, (pool, check) in enumerate(zip(samples_by_prompt, checkers, strict=True)):
        if isinstance(pool, Sample) or not isinstance(pool, Sequence) or \
                not all(isinstance(s, Sample) for s in pool):
            raise QuasirlValueError(f"samples_by_prompt[{k}] must be a list of Samples")
        if len(pool) < n:
            raise QuasirlValueError(f"samples_by_prompt[{k}] holds {len(pool)} samples, fewer "
                                    f"than n = {n}")
        _check_checker(check, f"checkers[{k}]")
        ok = _known_values(check, [s.text for s in pool], np.zeros(len(pool), bool),
                           f"checkers[{k}]", binary=True)
        if isinstance(score, str):
            sc = ok if score == "checker" else np.array([sample_loglik(s) for s in pool])
        else:
            sc = np.array([check_number(f"score(samples_by_prompt[{k}][{i}])", score(s))
                           for i, s in enumerate(pool)])
        rng = np.random.default_rng([seed, k, n])
        G = len(pool) // n
        hits = 0.0
        for _ in range(partitions):
            grp = rng.permutation(len(pool))[: G * n].reshape(G, n)
            kept = grp[np.arange(G), np.argmax(sc[grp], axis=1)]
            hits += ok[kept].mean()
        accs.append(hits / partitions)
        groups.append(G)
    acc, G = np.array(accs), np.array(groups)
    rng = np.random.default_rng([seed, n, 1])
    K = acc.size
    idx = rng.integers(K, size=(n_boot, K))
    draws = (rng.binomial(G[idx], acc[idx]) / G[idx]).mean(axis=1)
    qlo, qhi = expanded_levels(K, level) if K > 1 else ((1 - level) / 2, (1 + level) / 2)
    return ObservedBestOfN(n, float(acc.mean()), float(np.quantile(draws, qlo)),
                           float(np.quantile(draws, qhi)), K, int(G.sum()),
                           tuple(float(a) for a in acc))



def observed_selection_error(samples_by_prompt, T_sel, checkers, *, n_boot: int = 1000,
                             seed: int = 0, level: float = 0.95) -> SelectionError:
    """One round of soft selection applied to real samples: each prompt's pool (drawn from the
    model) is reweighted by exp(r / T_sel), r = 1 where ``checkers[k]`` accepts the sample,
    and its error is the weighted wrong share (T_sel = 0: the correct samples only, when there
    are any). As the pool grows this converges to :func:`error_after_selection` of the tree
    (self-normalised importance sampling of the tilted law). ``error`` is the mean over
    prompts; lo, hi a cluster bootstrap interval (prompts resampled, then each prompt's
    correct count as a binomial draw)."""
    n_boot = check_int("n_boot", n_boot, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    level = _check_level(level)
    try:
        Ts = np.atleast_1d(np.asarray(T_sel, dtype=np.float64))
    except (TypeError, ValueError):
        raise QuasirlValueError(f"T_sel must be a number or a 1-D array >= 0, got {T_sel!r}") \
            from None
    if Ts.ndim > 1 or Ts.size == 0 or not np.isfinite(Ts).all() or (Ts < 0).any():
        raise QuasirlValueError(f"T_sel must be finite numbers >= 0, got {T_sel!r}")
    _check_pools(samples_by_prompt, checkers)
    rate, size = [], []
    for k, (pool, check) in enumerate(zip(samples_by_prompt, checkers, strict=True)):
        if not pool:
            raise QuasirlValueError(f"samples_by_prompt[{k}] is empty")
        _check_checker(check, f"checkers[{k}]")
        ok = _known_values(check, [s.text for s in pool], np.zeros(len(pool), bool),
                           f"checkers[{k}]", binary=True)
        rate.append(float(np.mean(ok > 0)))
        size.append(len(pool))
    c, m = np.array(rate), np.array(size)

    def error(acc):
        """Weighted wrong share for correct fractions ``acc`` [..., K] -> [..., len(Ts)]."""
        acc = acc[..., None]
        with np.errstate(over="ignore"):
            a = np.where(Ts > 0, np.exp(-1.0 / np.where(Ts > 0, Ts, 1.0)), 0.0)
        w = (1 - acc) * a
        out = np.where(acc > 0, w / (w + acc), 1.0)
        return out.mean(axis=-2)

    rng = np.random.default_rng([seed, 720])
    K = c.size
    idx = rng.integers(K, size=(n_boot, K))
    draws = error(rng.binomial(m[idx], c[idx]) / m[idx])
    qlo, qhi = expanded_levels(K, level) if K > 1 else ((1 - level) / 2, (1 + level) / 2)
    err = error(c[None, :])[0]
    return SelectionError(Ts, err, np.quantile(draws, qlo, axis=0),
                          np.quantile(draws, qhi, axis=0), float(1 - c.mean()))
