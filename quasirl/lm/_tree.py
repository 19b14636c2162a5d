"""The language model's answer tree as an MDP (issue 18): exact sequence-level quantities.

After a prompt, the answers a token model can give form a tree: the states are answer prefixes
(the token ids after the prompt), the actions the outcomes that can follow a prefix, and a path
from the root to a leaf is an answer. :func:`answer_tree` expands that tree to a depth and puts
it in a :class:`quasirl.MDP` (deterministic transitions), so the kernels give exactly what
selection does to the answers: the sequence-level tilted law p(answer)^{1/T} / Z, F(T), the MAP
answer by max-plus, the soft policy, the concentration on the best answer and its exp(-Delta/T)
asymptote, occupancies and path counts.

**Outcomes of a prefix.** With the next-token law q(. | prefix) (the model's softmax at
``lm_temperature``, the law ``generate`` samples at that temperature), the vocabulary splits in

* *end*: the end set ``lm.end_ids(stop)`` (end-of-generation tokens and tokens whose text starts
  with a stop string), one outcome with the summed probability: the answer is the prefix;
* *expanded tokens* (the ``top_k`` most probable others, or those whose prefix keeps a probability
  of at least ``min_prob``), each classified by the sampler's own rule (``TokenLM.generate``): a
  token that completes a stop string ends the answer (its text cut at the stop string; one that
  adds no text before it joins the end outcome), a token at the depth cuts the answer ("cut"),
  any other token is a child prefix, expanded in turn;
* *rest*: every other token, one outcome with their summed probability,

so that nothing is dropped: at every prefix the expanded mass and the rest mass sum to 1, and
the terminals (ended answers, rest lumps, cut prefixes) carry all the probability. A tree of depth
H holds exactly the answers a sampler with ``max_tokens = H`` and the same stop strings draws
(an answer ends at most at its H-th drawn token; "cut" is its ``finish == "length"``).

**The MDP.** One state per prefix and one absorbing state per terminal (so that the masses of
ended answers, rest and cut stay apart); a terminal reached before step H loops on itself with
reward 0, so every path has H steps and there is one path per terminal. The reward of a step is
log q(outcome | prefix), plus the task reward ``reward(text)`` on the step that ends an answer;
the return of a path is log q(answer) (+ its task reward). The start is the root, and the
exploration policy is uniform over the terminals, policy(a | s) = L(child) / L(s) with L(s) the
number of terminals below s, so every path has the same weight w_p = 1/N (N terminals). Hence,
exactly, for the quasispecies sum Z(T) = sum_p w_p exp(R_p / T) of ``quasirl.free_energy``:

    quasirl.free_energy(tree.mdp, T, H) = T log sum_{terminals} q(a)^{1/T} - T log N,

and :meth:`AnswerTree.free_energy` adds T log N back. ``tree.answer_mdp`` is the same tree with
the prior uniform over the N_ans *ended* answers (rest and cut paths have weight 0, so the
kernels never see them): its tilted law is q(a)^{1/T} / sum_b q(b)^{1/T} over the answers in the
tree and F(0) is the MAP answer's log q. Every method takes ``answers_only`` to choose between
the two (default: the answers).

A rest or cut lump holds many answers; its weight q(lump)^{1/T} bounds theirs:
sum_i q_i^{1/T} <= (sum_i q_i)^{1/T} for T <= 1. So for T <= 1, T log sum_a q(a)^{1/T} over
*all* the model's answers (of any length) lies between ``free_energy(T)`` over the tree's
answers and ``free_energy(T, answers_only=False)`` over all its terminals; the two are equal
when the rest and cut masses are 0.

**Cost.** One logits evaluation per expanded prefix through the backend's cached path
(``prefix_logits`` for the prompt, ``next_logits`` after it), depth first, so each child is one
token on top of its parent's KV cache (llama.cpp keeps the longest common prefix). Each is a
one-token decode, as the sampler's: the tree's probabilities are the sampler's (llama.cpp's
batched scoring kernels round differently on quantised models, by up to ~0.2 nats).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from .._dynamics import evolve, free_energy, log_partition, occupancy, soft_policy
from .._mdp import MDP
from .._paths_dp import ReturnGap, best_paths, optimal_path_mass, return_gap
from .._paths_graph import count_paths
from .._validate import QuasirlValueError, check_int
from ._token import TokenLM, log_softmax, logsumexp
from ._types import LMValueError, Sample, check_number, check_stop, truncate_at_stop

# codes of the non-token outcomes in AnswerTree.outcome
END, REST, PAD = -1, -2, -3
KINDS = ("end", "rest", "cut")


class TreeAnswer(NamedTuple):
    """A terminal of an answer tree.

    state: its state in the tree's MDP; kind: "end" (an ended answer), "rest" (the lump of the
    unexpanded outcomes after ``token_ids``) or "cut" (a prefix cut at the depth); text: the
    answer's text (cut at the stop string; for rest, the prefix's text); token_ids: the answer
    tokens (those ``generate`` reports for it); logprob: log q of the terminal under the tree's
    token law; task_reward: its task reward (0 unless an ended answer with ``reward=``).
    """

    state: int
    kind: str
    text: str
    token_ids: tuple[int, ...]
    logprob: float
    task_reward: float

    @property
    def ret(self) -> float:
        """The path return: logprob + task_reward."""
        return self.logprob + self.task_reward


@dataclass(frozen=True, eq=False)
class AnswerTree:
    """The answer tree of a prompt, as an MDP (see the module docstring); build it with
    :func:`answer_tree`.

    Per state s (arrays [S], tuples of length S): ``kind`` ("node" for an expanded prefix, or a
    terminal kind of :data:`KINDS`), ``token_ids`` and ``text``, ``parent`` (-1 at the root) and
    ``action`` (the parent's action that enters s), ``level`` (steps from the root), ``logprob``
    (log q of reaching s), ``task_reward`` (of an ended answer), ``expanded_mass`` and
    ``rest_mass`` (at prefixes: the probability of the expanded outcomes and of the rest; NaN at
    terminals) and ``greedy_action`` (the action of the most probable token, as the sampler at
    temperature 0 draws it: the end outcome, a token, or the rest when that token was not
    expanded; -1 at terminals). ``outcome`` [S, A] holds each action's token id, or END, REST,
    PAD. ``forwards`` counts the backend's logits evaluations (one per prefix); ``top_k`` or
    ``min_prob`` is the expansion rule it was built with (the other is None).
    """

    prompt: str
    prompt_ids: tuple[int, ...]
    horizon: int
    stop: tuple[str, ...]
    lm_temperature: float
    mdp: MDP
    answer_mdp: MDP | None
    kind: tuple[str, ...]
    token_ids: tuple[tuple[int, ...], ...]
    text: tuple[str, ...]
    parent: np.ndarray
    action: np.ndarray
    level: np.ndarray
    logprob: np.ndarray
    task_reward: np.ndarray
    expanded_mass: np.ndarray
    rest_mass: np.ndarray
    greedy_action: np.ndarray
    outcome: np.ndarray
    forwards: int
    top_k: int | None = None  # the expansion rule the tree was built with (one of the two)
    min_prob: float | None = None

    # -- structure ----------------------------------------------------------------------------
    @property
    def num_states(self) -> int:
        return len(self.kind)

    def states_of(self, *kinds: str) -> np.ndarray:
        """Indices of the states of the given kinds ("node", "end", "rest", "cut")."""
        for k in kinds:
            if k not in ("node", *KINDS):
                raise QuasirlValueError(f"kind must be 'node' or one of {KINDS}, got {k!r}")
        out = np.array([s for s, k in enumerate(self.kind) if k in kinds], dtype=np.int64)
        out.flags.writeable = False
        return out

    @cached_property
    def nodes(self) -> np.ndarray:
        """The expanded prefixes (the root is state 0)."""
        return self.states_of("node")

    @cached_property
    def terminals(self) -> np.ndarray:
        """The terminals, in state order."""
        return self.states_of(*KINDS)

    @cached_property
    def answers(self) -> np.ndarray:
        """The ended answers, in state order."""
        return self.states_of("end")

    def mass(self, kind: str) -> float:
        """Total probability of the terminals of one kind ("end", "rest" or "cut"); the three
        sum to 1."""
        if kind not in KINDS:
            raise QuasirlValueError(f"kind must be one of {KINDS}, got {kind!r}")
        lp = self.logprob[self.states_of(kind)]
        return float(math.fsum(np.exp(lp)))

    def answer(self, state) -> TreeAnswer:
        """The terminal ``state`` as a :class:`TreeAnswer`."""
        s = check_int("state", state, 0, self.num_states - 1)
        if self.kind[s] == "node":
            raise QuasirlValueError(f"state {s} is a prefix, not a terminal")
        return TreeAnswer(s, self.kind[s], self.text[s], self.token_ids[s],
                          float(self.logprob[s]), float(self.task_reward[s]))

    def answer_of_path(self, states) -> TreeAnswer:
        """The terminal a path of the MDP ends in (a row of ``Paths.states``, [H + 1])."""
        st = np.asarray(states)
        if st.shape != (self.horizon + 1,):
            raise QuasirlValueError(f"states must be one path of shape [H + 1] = "
                                    f"{(self.horizon + 1,)}, got {st.shape}")
        return self.answer(int(st[-1]))

    def terminal_of(self, sample: Sample) -> int:
        """The terminal that holds a sample drawn with this tree's stop strings and
        ``max_tokens`` >= its depth: its ended answer, its cut prefix, or the rest lump where it
        leaves the expanded tokens."""
        ids = getattr(sample, "token_ids", None)
        if ids is None:
            raise QuasirlValueError("sample must be a Sample with token_ids (a local backend's)")
        s = 0
        for t in ids:
            if self.kind[s] != "node":
                return s
            hit = np.flatnonzero(self.outcome[s] == int(t))
            s = int(self.mdp.next[s, hit[0], 0]) if hit.size else self._child(s, REST)
        if self.kind[s] != "node":
            return s
        if sample.finish != "stop":
            raise QuasirlValueError(
                f"sample was cut after {len(ids)} tokens, before the tree's depth "
                f"{self.horizon}: draw it with max_tokens >= {self.horizon}")
        return self._child(s, END)

    def _child(self, s: int, code: int) -> int:
        hit = np.flatnonzero(self.outcome[s] == code)
        if not hit.size:
            raise QuasirlValueError(f"state {s} has no {'end' if code == END else 'rest'} "
                                    f"outcome (its probability is 0)")
        return int(self.mdp.next[s, hit[0], 0])

    def _which(self, answers_only: bool):
        if not answers_only:
            return self.mdp, self.terminals
        if self.answer_mdp is None:
            raise QuasirlValueError(
                "the tree holds no ended answer (raise depth, or pass answers_only=False for "
                "the rest and cut terminals)")
        return self.answer_mdp, self.answers

    # -- exact quantities, by the kernels ----------------------------------------------------
    def free_energy(self, T, answers_only: bool = True):
        """T log sum_a exp(R_a / T) over the answers (or all terminals), R_a = log q(a) plus
        the task reward; exact max-plus (the MAP return) at T = 0. It is
        ``quasirl.free_energy(mdp, T, H) + T log N``, N the number of paths (the prior weighs
        each path 1/N). Over all terminals it is 0 at T = 1 without a task reward."""
        mdp, support = self._which(answers_only)
        F = free_energy(mdp, T, self.horizon)
        return F + jnp.asarray(T, F.dtype) * math.log(support.size)

    def log_partition(self, T, answers_only: bool = True):
        """log sum_a exp(R_a / T) (T > 0): ``quasirl.log_partition(mdp, T, H) + log N``."""
        mdp, support = self._which(answers_only)
        return log_partition(mdp, T, self.horizon) + math.log(support.size)

    def tilted_law(self, T, answers_only: bool = True):
        """(states, prob): the sequence-level tilted law exp(R_a / T) / Z over the answers (or
        all terminals), i.e. q(a)^{1/T} / Z without a task reward; at T = 0 the max-plus limit
        (the MAP answers, ties split evenly). The final population of the quasispecies
        iteration (:func:`quasirl.evolve`); prob is [n] or [len(T), n]."""
        mdp, support = self._which(answers_only)
        pop = evolve(mdp, T, self.horizon).population
        return support, pop[..., support]

    def best_answers(self, k: int, answers_only: bool = True) -> list[TreeAnswer]:
        """The k answers of highest return, best first (:func:`quasirl.paths.best_paths`:
        max-plus value-to-go, then best-first extension)."""
        mdp, _ = self._which(answers_only)
        paths = best_paths(mdp, self.horizon, k)
        return [self.answer_of_path(row) for row in np.asarray(paths.states)]

    def map_answer(self) -> TreeAnswer:
        """The MAP answer among the tree's ended answers: max of log q(a) (+ task reward), by
        max-plus; its return is ``free_energy(0)``."""
        return self.best_answers(1)[0]

    def greedy_answer(self) -> TreeAnswer:
        """The answer of greedy decoding (the most probable token at each step, the sampler at
        temperature 0); a "rest" terminal when that token was not expanded (min_prob trees)."""
        s = 0
        while self.kind[s] == "node":
            s = int(self.mdp.next[s, self.greedy_action[s], 0])
        return self.answer(s)

    def soft_policy(self, T, answers_only: bool = True):
        """pi_T(a | s) [S, A] (or [len(T), S, A]): the fraction of the tilted population at
        prefix s that takes action a (:func:`quasirl.soft_policy`, read at each state's level).
        Over all terminals at T = 1 it is the model's own q(outcome | prefix); terminals keep
        their self-loop (action 0)."""
        mdp, _ = self._which(answers_only)
        H = self.horizon
        pi = soft_policy(mdp, T, H)
        S = self.num_states
        out = pi[..., np.minimum(self.level, H - 1), np.arange(S), :]
        # states at level H (cut prefixes) have no decision left: their self-loop
        loop = np.zeros((S, pi.shape[-1]))
        loop[:, 0] = 1.0
        at_h = np.broadcast_to((self.level == H)[:, None], loop.shape)
        return jnp.where(jnp.broadcast_to(at_h, out.shape),
                         jnp.broadcast_to(jnp.asarray(loop, pi.dtype), out.shape), out)

    def occupancy(self, T, answers_only: bool = True):
        """[S]: the probability, under the tilted law at T (a scalar), that the answer passes
        through each state (1 at the root): :func:`quasirl.occupancy` on the step that enters
        the state. At T = 1 over all terminals it is q(prefix)."""
        mdp, _ = self._which(answers_only)
        occ = occupancy(mdp, T, self.horizon)[..., 0]
        src, act = np.maximum(self.parent, 0), np.maximum(self.action, 0)
        return jnp.where(jnp.asarray(self.parent >= 0), occ[src, act], 1.0)

    def optimal_path_mass(self, T, answers_only: bool = True):
        """The tilted probability of the MAP answer(s) (:func:`quasirl.paths.optimal_path_mass`);
        1 - mass ~ (N_2 / W_1) exp(-Delta / T) as T -> 0 (:meth:`return_gap`)."""
        mdp, _ = self._which(answers_only)
        return optimal_path_mass(mdp, T, self.horizon)

    def return_gap(self, answers_only: bool = True) -> ReturnGap:
        """Delta = R_1 - R_2 between the best and second-best answers, with their weights
        (:func:`quasirl.paths.return_gap`): with the uniform prior, N_2 / W_1 is the ratio of
        their counts."""
        mdp, _ = self._which(answers_only)
        return return_gap(mdp, self.horizon)

    def num_paths(self, answers_only: bool = True) -> int:
        """Number of paths of positive weight (:func:`quasirl.paths.count_paths`): the number of
        answers (or terminals)."""
        mdp, _ = self._which(answers_only)
        return int(count_paths(mdp, self.horizon))

    def __repr__(self) -> str:
        return (f"AnswerTree(depth={self.horizon}, states={self.num_states}, prefixes="
                f"{self.nodes.size}, answers={self.answers.size}, end={self.mass('end'):.4g}, "
                f"rest={self.mass('rest'):.4g}, cut={self.mass('cut'):.4g})")


# --------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------
def _log_mass(lp, mask) -> float:
    v = lp[mask]
    v = v[v > -np.inf]
    return logsumexp(v) if v.size else -np.inf


def _check_args(lm, prompt, depth, top_k, min_prob, stop, lm_temperature, reward, max_nodes):
    if not isinstance(lm, TokenLM):
        raise QuasirlValueError(
            f"lm must be a local token-level backend (LlamaCppLM, TransformersLM, "
            f"SyntheticTokenLM), got {type(lm).__name__}")
    if not isinstance(prompt, str) or not prompt:
        raise QuasirlValueError(f"prompt must be a non-empty string, got {prompt!r}")
    depth = check_int("depth", depth, minimum=1)
    if (top_k is None) == (min_prob is None):
        raise QuasirlValueError("give exactly one of top_k and min_prob, got "
                                f"top_k={top_k!r}, min_prob={min_prob!r}")
    if top_k is not None:
        top_k = check_int("top_k", top_k, minimum=1)
    else:
        min_prob = check_number("min_prob", min_prob)
        if not 0 < min_prob <= 1:
            raise QuasirlValueError(f"min_prob must be in (0, 1], got {min_prob!r}")
    stop = check_stop(stop)
    tau = check_number("lm_temperature", lm_temperature)
    if not tau > 0:
        raise QuasirlValueError(f"lm_temperature must be > 0, got {lm_temperature!r}")
    if reward is not None and not callable(reward):
        raise QuasirlValueError(
            f"reward must be None or a function of the answer text, got {reward!r}")
    max_nodes = check_int("max_nodes", max_nodes, minimum=1)
    return depth, top_k, min_prob, stop, tau, max_nodes


def answer_tree(lm, prompt: str, depth: int, *, top_k: int | None = None,
                min_prob: float | None = None, stop=("\n",), lm_temperature: float = 1.0,
                reward=None, max_nodes: int = 10_000) -> AnswerTree:
    """Expand the answers of ``lm`` after ``prompt`` to ``depth`` tokens, as an MDP.

    Args:
      lm: a local token backend (a ``TokenLM``: LlamaCppLM, TransformersLM, SyntheticTokenLM).
      prompt: the prompt (tokenised with BOS, as ``generate`` does).
      depth: the most tokens an answer draws (the sampler's ``max_tokens``), >= 1.
      top_k: expand the k most probable tokens at each prefix (besides the end outcome); or
      min_prob: expand a token when the prefix it makes has probability >= min_prob, so every
        answer of probability >= min_prob that ends within the depth is in the tree. Give
        exactly one of the two.
      stop: stop strings that end an answer, as in ``generate`` (default a newline).
      lm_temperature: the token law is softmax(logits / lm_temperature), what ``generate``
        samples at that temperature (> 0; 1 is the model itself).
      reward: optional task reward, a function of an ended answer's text returning a finite
        number, added to the return of that answer (e.g. r for answers a checker accepts).
      max_nodes: refuse (QuasirlValueError) a tree that would expand more prefixes than this.

    Returns an :class:`AnswerTree` (see the module docstring for the outcomes of a prefix, the
    MDP and the constant in its free energy).
    """
    depth, top_k, min_prob, stop, tau, max_nodes = _check_args(
        lm, prompt, depth, top_k, min_prob, stop, lm_temperature, reward, max_nodes)
    pids = list(lm.tokenize(prompt, bos=True))
    end_set = np.asarray(lm.end_ids(stop), dtype=np.int64)
    log_min = math.log(min_prob) if min_prob is not None else None
    name = getattr(lm, "name", type(lm).__name__)

    kind, toks, text, parent, action, level, logp, rew = [], [], [], [], [], [], [], []
    expanded, rest, greedy, acts = [], [], [], []

    def new(k, ids, txt, par, lp, r=0.0):
        kind.append(k)
        toks.append(tuple(ids))
        text.append(txt)
        parent.append(par)
        action.append(len(acts[par]) if par >= 0 else -1)
        level.append(level[par] + 1 if par >= 0 else 0)
        logp.append(lp)
        rew.append(r)
        expanded.append(np.nan)
        rest.append(np.nan)
        greedy.append(-1)
        acts.append([])
        return len(kind) - 1

    def task_reward(txt):
        if reward is None:
            return 0.0
        return check_number(f"reward({txt!r})", reward(txt))

    new("node", (), "", -1, 0.0)
    stack, forwards = [0], 0
    while stack:
        s = stack.pop()
        if forwards >= max_nodes:
            raise QuasirlValueError(
                f"the tree would expand more than max_nodes={max_nodes} prefixes; raise "
                f"max_nodes, or lower depth, top_k or raise min_prob")
        gen = list(toks[s])
        x = lm.next_logits(pids + gen) if gen else lm.prefix_logits(pids)
        forwards += 1
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 1 or np.isnan(x).any() or (x == np.inf).any() or not (x > -np.inf).any():
            raise LMValueError(f"model {name}: the logits after answer prefix {gen!r} must be "
                               f"a vector without NaN or +inf, not all -inf")
        lp = log_softmax(x / tau)
        is_end = np.zeros(x.size, dtype=bool)
        is_end[end_set[end_set < x.size]] = True
        cand = np.flatnonzero(~is_end & (lp > -np.inf))
        cand = cand[np.argsort(-lp[cand], kind="stable")]
        if top_k is not None:
            chosen = cand[:top_k]
        else:
            chosen = cand[logp[s] + lp[cand] >= log_min]
        picked = np.zeros(x.size, dtype=bool)
        picked[chosen] = True
        merged = np.zeros(x.size, dtype=bool)
        outs = []
        for t in chosen.tolist():
            full = lm.detokenize(gen + [t])
            cut, stopped = truncate_at_stop(full, stop)
            if stopped and cut == text[s]:  # adds only the stop string: the sampler drops it
                merged[t] = True
            elif stopped:
                outs.append(("end", t, cut))
            else:
                outs.append(("cut" if len(gen) + 1 == depth else "node", t, full))
        lp_end = _log_mass(lp, is_end | merged)
        lp_rest = _log_mass(lp, ~is_end & ~picked)
        expanded[s] = math.exp(_log_mass(lp, is_end | picked))
        rest[s] = math.exp(lp_rest)
        codes = {}
        if lp_end > -np.inf:
            codes[END] = len(acts[s])
            st = new("end", gen, text[s], s, logp[s] + lp_end, task_reward(text[s]))
            acts[s].append((END, st, lp_end))
        children = []
        for k, t, txt in outs:
            codes[t] = len(acts[s])
            st = new(k, gen + [t], txt, s, logp[s] + lp[t], task_reward(txt) if k == "end"
                     else 0.0)
            acts[s].append((t, st, float(lp[t])))
            if k == "node":
                children.append(st)
        if lp_rest > -np.inf:
            codes[REST] = len(acts[s])
            acts[s].append((REST, new("rest", gen, text[s], s, logp[s] + lp_rest), lp_rest))
        g = int(np.argmax(x))  # the sampler's temperature-0 token (ties: lowest id)
        greedy[s] = codes[END if is_end[g] or merged[g] else g if picked[g] else REST]
        stack.extend(reversed(children))  # depth first, most probable first: KV reuse

    tree = _assemble(prompt, pids, depth, stop, tau, kind, toks, text, parent, action, level,
                     logp, rew, expanded, rest, greedy, acts, forwards)
    return dataclasses.replace(tree, top_k=top_k, min_prob=min_prob)


def _leaf_counts(kind, parent, which) -> np.ndarray:
    """L[s]: the number of terminals (of the kinds ``which``) below each state."""
    L = np.array([1.0 if k in which else 0.0 for k in kind])
    for s in range(len(kind) - 1, 0, -1):  # children are numbered after their parents
        L[parent[s]] += L[s]
    return L


def _policy(acts, kind, L, A: int, fallback=None) -> np.ndarray:
    """policy(a | s) = L(child) / L(s): uniform over the counted terminals; rows with L = 0
    (unreachable under it) keep ``fallback``'s; terminals loop on action 0."""
    pol = np.zeros((len(kind), A)) if fallback is None else fallback.copy()
    for s, row in enumerate(acts):
        if kind[s] != "node":
            pol[s] = 0.0
            pol[s, 0] = 1.0
        elif L[s] > 0:
            pol[s, : len(row)] = [L[st] / L[s] for _, st, _ in row]
    return pol


def _assemble(prompt, pids, depth, stop, tau, kind, toks, text, parent, action, level, logp,
              rew, expanded, rest, greedy, acts, forwards) -> AnswerTree:
    S, A = len(kind), max(1, max(len(a) for a in acts))
    nxt = np.repeat(np.arange(S)[:, None], A, axis=1)  # padding and terminals: self-loops
    reward = np.zeros((S, A))
    outcome = np.full((S, A), PAD, dtype=np.int64)
    for s, row in enumerate(acts):
        for a, (code, st, lq) in enumerate(row):
            nxt[s, a], reward[s, a], outcome[s, a] = st, lq + rew[st], code
    parent = np.asarray(parent, dtype=np.int64)
    init = np.zeros(S)
    init[0] = 1.0
    pol = _policy(acts, kind, _leaf_counts(kind, parent, KINDS), A)
    mdp = MDP.deterministic(nxt, reward, init=init, policy=pol)
    L_ans = _leaf_counts(kind, parent, ("end",))
    answer_mdp = None
    if L_ans[0] > 0:
        answer_mdp = MDP.deterministic(nxt, reward, init=init,
                                       policy=_policy(acts, kind, L_ans, A, fallback=pol))
    arrays = {k: np.array(v, dtype=dt) for k, v, dt in (
        ("parent", parent, np.int64), ("action", action, np.int64), ("level", level, np.int64),
        ("logprob", logp, np.float64), ("task_reward", rew, np.float64),
        ("expanded_mass", expanded, np.float64), ("rest_mass", rest, np.float64),
        ("greedy_action", greedy, np.int64), ("outcome", outcome, np.int64))}
    for a in arrays.values():
        a.flags.writeable = False  # the tree is immutable, its arrays too
    return AnswerTree(
        prompt=prompt, prompt_ids=tuple(pids), horizon=depth, stop=stop, lm_temperature=tau,
        mdp=mdp, answer_mdp=answer_mdp, kind=tuple(kind), token_ids=tuple(toks),
        text=tuple(text), forwards=forwards, **arrays)
