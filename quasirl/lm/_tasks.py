"""Evaluable tasks: items (query, accepted answers), a prompt format and a checker.

Prompts are plain text so that every backend (local, HTTP, synthetic) sees the same string. The
``qa`` style (the default)::

    [instruction]

    Q: What is 12 + 30?
    A: 42

    Q: What is 37 + 58?
    A:

and the ``list`` style, one short line per pair (a third of the tokens: prompt evaluation is
what costs most on a CPU)::

    Capital cities of the world's countries.

    Germany: Berlin
    France:

Evaluation prompts (the survey trick) show one proposed answer to the full question
(``eval_question``) and ask a question whose answer labels are scored (see
``quasirl.lm.YES_NO`` and ``FIVE_POINT``).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import numpy as np

from .._validate import QuasirlValueError, check_int

_CUTS = re.compile(r"[,;(]| or ")
_NUMBER = re.compile(r"-?\d+")
# style -> (block template with {q} and {a}, separator between blocks)
_STYLES = {"qa": ("Q: {q}\nA: {a}", "\n\n"), "list": ("{q}: {a}", "\n")}


@functools.lru_cache(maxsize=1 << 16)
def normalize(text: str) -> str:
    """Lower case, accents and punctuation removed, single spaces ("São Tomé" -> "sao tome")."""
    t = unicodedata.normalize("NFKD", text)
    t = "".join(c for c in t if not unicodedata.combining(c)).lower()
    t = re.sub(r"[^0-9a-z]+", " ", t)
    return " ".join(t.split())


@dataclass(frozen=True)
class Item:
    """One query with its accepted answers (the first is the canonical one)."""

    id: str
    query: str
    answers: tuple[str, ...]

    @property
    def answer(self) -> str:
        return self.answers[0]


@dataclass(frozen=True, eq=False)
class Task:
    """A question-answering task with a checker.

    Args:
      name: short name used in records.
      items: the items; ids must be distinct.
      question: template for the question in generation prompts (``{query}`` is replaced).
      instruction: optional first paragraph of every generation prompt.
      style: ``"qa"`` ("Q: question / A: answer" blocks) or ``"list"`` ("question: answer"
        lines).
      eval_question: template of the question shown in evaluation prompts (default:
        ``question``).
      kind: ``"text"`` (answer matched as whole words after normalisation) or ``"number"``
        (the first integer in the response must equal the answer).
    """

    name: str
    items: tuple[Item, ...]
    question: str = "{query}"
    instruction: str = ""
    kind: str = "text"
    style: str = "qa"
    eval_question: str | None = None
    _by_question: dict = field(default_factory=dict, repr=False, compare=False)
    _by_eval_question: dict = field(default_factory=dict, repr=False, compare=False)
    _memo: dict = field(default_factory=dict, repr=False, compare=False)
    _fixed_split: tuple | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise QuasirlValueError(f"name must be a non-empty string, got {self.name!r}")
        object.__setattr__(self, "items", tuple(self.items))
        if len(self.items) < 2:
            raise QuasirlValueError(f"items must hold at least 2 items, got {len(self.items)}")
        if self.kind not in ("text", "number"):
            raise QuasirlValueError(f"kind must be 'text' or 'number', got {self.kind!r}")
        if self.style not in _STYLES:
            raise QuasirlValueError(f"style must be one of {tuple(_STYLES)}, got {self.style!r}")
        for nm in ("question", "eval_question"):
            v = getattr(self, nm)
            if v is not None and "{query}" not in v:
                raise QuasirlValueError(f"{nm} must contain '{{query}}', got {v!r}")
        seen: dict[str, int] = {}
        for i, it in enumerate(self.items):
            if not isinstance(it, Item):
                raise QuasirlValueError(f"items[{i}] must be an Item, got {type(it).__name__}")
            if it.id in seen:
                raise QuasirlValueError(
                    f"items[{i}].id = {it.id!r} repeats items[{seen[it.id]}].id")
            seen[it.id] = i
            if not it.answers or any(not normalize(a) for a in it.answers):
                raise QuasirlValueError(f"items[{i}] ({it.id!r}) has an empty accepted answer")
            if "\n" in it.query or any("\n" in a for a in it.answers):
                raise QuasirlValueError(f"items[{i}] ({it.id!r}) contains a newline")
            q = self.question_text(it)
            if q in self._by_question:
                raise QuasirlValueError(f"items[{i}] repeats the question {q!r}")
            self._by_question[q] = it
            self._by_eval_question[(self.eval_question or self.question).format(
                query=it.query)] = it

    # -- prompts -------------------------------------------------------------------------
    def question_text(self, item: Item) -> str:
        return self.question.format(query=item.query)

    def prompt(self, item: Item, demos: Sequence[tuple[Item, str]] = ()) -> str:
        """Generation prompt: optional instruction, demonstrations (item, answer), the query."""
        block, sep = _STYLES[self.style]
        parts = [f"{self.instruction}\n\n"] if self.instruction else []
        for d, a in demos:
            parts.append(block.format(q=self.question_text(d), a=a.strip()) + sep)
        parts.append(block.format(q=self.question_text(item), a="").rstrip())
        return "".join(parts)

    def eval_prompt(self, item: Item, answer: str, question: str) -> str:
        """Evaluation prompt for the survey trick: the query, a proposed answer, a question."""
        q = (self.eval_question or self.question).format(query=item.query)
        return f"Q: {q}\nProposed answer: {answer.strip()}\n{question}\nAnswer:"

    def parse_prompt(self, prompt: str) -> tuple[Item, list[tuple[Item, str]]]:
        """Inverse of :meth:`prompt`: (query item, [(demo item, demo answer)])."""
        block, sep = _STYLES[self.style]
        head = f"{self.instruction}\n\n" if self.instruction else ""
        if not prompt.startswith(head):
            raise QuasirlValueError(f"prompt is not a {self.name!r} generation prompt")
        blocks = prompt[len(head):].split(sep)
        demos = [self._split_block(b, block) for b in blocks[:-1]]
        item, answer = self._split_block(blocks[-1] + " ", block)
        if answer:
            raise QuasirlValueError(f"prompt does not end with a {self.name!r} query")
        return item, demos

    def _split_block(self, text: str, block: str) -> tuple[Item, str]:
        """(item, answer) of one rendered block; the question must be one of the task's (so a
        question that itself contains the separator is still found)."""
        pre, rest = block.split("{q}")
        mid, post = rest.split("{a}")
        if text.startswith(pre) and text.endswith(post):
            body = text[len(pre): len(text) - len(post)]
            pos = body.find(mid)
            while pos >= 0:
                it = self._by_question.get(body[:pos])
                if it is not None:
                    return it, body[pos + len(mid):]
                pos = body.find(mid, pos + 1)
        raise QuasirlValueError(f"prompt block {text!r} is not a {self.name!r} pair")

    def parse_eval_prompt(self, prompt: str) -> tuple[Item, str, str] | None:
        """Inverse of :meth:`eval_prompt`: (item, proposed answer, question), or None."""
        if "\nProposed answer: " not in prompt or not prompt.endswith("\nAnswer:"):
            return None
        q, rest = prompt.split("\nProposed answer: ", 1)
        answer, question = rest[: -len("\nAnswer:")].split("\n", 1)
        it = self._by_eval_question.get(q[3:])
        if it is None:
            raise QuasirlValueError(f"no item of task {self.name!r} asks {q[3:]!r}")
        return it, answer, question

    def item_for_question(self, question: str) -> Item:
        try:
            return self._by_question[question]
        except KeyError:
            raise QuasirlValueError(f"no item of task {self.name!r} asks {question!r}") from None

    # -- checking -------------------------------------------------------------------------
    def check(self, item: Item, response: str) -> bool:
        """Is ``response`` (first line) a correct answer to ``item``?"""
        line = response.strip().split("\n", 1)[0]
        if self.kind == "number":
            m = _NUMBER.search(line)
            return m is not None and any(int(m.group()) == int(a) for a in item.answers)
        head = f" {normalize(_CUTS.split(line, 1)[0])} "
        return any(f" {normalize(a)} " in head for a in item.answers)

    def wrong_answer(self, item: Item, rng: np.random.Generator) -> str:
        """A plausible wrong answer: another item's canonical answer that the checker rejects."""
        for _ in range(1000):
            other = self.items[int(rng.integers(len(self.items)))]
            if other.id != item.id and not self.check(item, other.answer):
                return other.answer
        raise QuasirlValueError(f"task {self.name!r} has no wrong answer for item {item.id!r}")

    # -- splits and identity -----------------------------------------------------------
    def split(self, n_demos: int, seed: int = 0) -> tuple[tuple[Item, ...], tuple[Item, ...]]:
        """A seeded permutation of the items cut into (demonstration pool, query pool); for a
        task made by :meth:`with_split`, its fixed split (``seed`` unused, ``n_demos`` checked)."""
        if self._fixed_split is not None:
            demos, queries = self._fixed_split
            if n_demos != len(demos):
                raise QuasirlValueError(f"n_demos must be {len(demos)} (the fixed split of task "
                                        f"{self.name!r}), got {n_demos}")
            return demos, queries
        if not 0 <= n_demos < len(self.items):
            raise QuasirlValueError(
                f"n_demos must be in [0, {len(self.items) - 1}], got {n_demos}")
        perm = np.random.default_rng([int(seed), 7]).permutation(len(self.items))
        items = tuple(self.items[i] for i in perm)
        return items[:n_demos], items[n_demos:]

    def fingerprint(self) -> str:
        """Hash of the items, templates and checker kind (stored with run records)."""
        if "fingerprint" in self._memo:
            return self._memo["fingerprint"]
        parts = [self.name, self.question, self.instruction, self.kind, self.style,
                 self.eval_question, [(i.id, i.query, list(i.answers)) for i in self.items]]
        if self._fixed_split is not None:
            parts.append([[i.id for i in p] for p in self._fixed_split])
        blob = json.dumps(parts)
        fp = hashlib.sha256(blob.encode()).hexdigest()[:16]
        self._memo["fingerprint"] = fp  # the task is immutable
        return fp

    def with_split(self, demos: Sequence[str], queries: Sequence[str]) -> Task:
        """The same task (all items, templates, checker) whose :meth:`split` returns exactly
        these demonstrations and queries (item ids, in this order): a run's query pool drawn
        elsewhere, e.g. ``quasirl.lm.validate``'s disjoint Exp 3 pool. Its fingerprint covers
        the split, so records of another split are never resumed."""
        by_id = {it.id: it for it in self.items}
        fixed = []
        for name, ids in (("demos", demos), ("queries", queries)):
            if isinstance(ids, str):
                raise QuasirlValueError(f"{name} must be a sequence of item ids, got {ids!r}")
            missing = [i for i in ids if i not in by_id]
            if missing:
                raise QuasirlValueError(f"{name} names item(s) {missing[:5]} not in task "
                                        f"{self.name!r}")
            fixed.append(tuple(by_id[i] for i in ids))
        ids = [it.id for p in fixed for it in p]
        if len(set(ids)) != len(ids):
            raise QuasirlValueError("demos and queries must name distinct items")
        return Task(name=self.name, items=self.items, question=self.question,
                    instruction=self.instruction, kind=self.kind, style=self.style,
                    eval_question=self.eval_question, _fixed_split=tuple(fixed))

    def item(self, item_id: str) -> Item:
        for it in self.items:
            if it.id == item_id:
                return it
        raise QuasirlValueError(f"task {self.name!r} has no item with id {item_id!r}")

    # -- constructors ---------------------------------------------------------------------
    @classmethod
    def from_pairs(cls, name: str, pairs: Iterable, question: str = "{query}",
                   instruction: str = "", kind: str = "text", style: str = "qa",
                   eval_question: str | None = None) -> Task:
        """A task from (query, answer) or (query, [accepted answers]) pairs."""
        items = []
        for i, pair in enumerate(pairs):
            try:
                q, a = pair
            except (TypeError, ValueError):
                raise QuasirlValueError(
                    f"pairs[{i}] must be a (query, answer) pair, got {pair!r}") from None
            answers = (a,) if isinstance(a, str) else tuple(a)
            if not isinstance(q, str) or not all(isinstance(x, str) for x in answers):
                raise QuasirlValueError(f"pairs[{i}] must hold strings, got {pair!r}")
            items.append(Item(id=str(i), query=q, answers=answers))
        return cls(name=name, items=tuple(items), question=question, instruction=instruction,
                   kind=kind, style=style, eval_question=eval_question)

    @classmethod
    def from_file(cls, path, name: str | None = None, question: str = "{query}",
                  instruction: str = "", kind: str = "text", style: str = "qa",
                  eval_question: str | None = None) -> Task:
        """A task from a CSV (columns ``query`` and ``answers`` or ``answer``, with ``|`` between
        accepted answers, optional ``id``) or a JSONL file (``{"query": ..., "answers": [...]}``
        or ``"answer"`` per line)."""
        path = Path(path)
        if not path.is_file():
            raise QuasirlValueError(f"path must be an existing file, got {str(path)!r}")
        rows = []
        if path.suffix == ".jsonl":
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        d = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise QuasirlValueError(f"{path}:{n}: not JSON ({e.msg})") from None
                    ans = d.get("answers", d.get("answer"))
                    if "query" not in d or ans is None:
                        raise QuasirlValueError(f"{path}:{n}: needs 'query' and 'answers'")
                    rows.append((str(d.get("id", len(rows))), d["query"],
                                 (ans,) if isinstance(ans, str) else tuple(ans)))
        else:
            with path.open(encoding="utf-8", newline="") as f:
                reader = csv.DictReader(f)
                cols = set(reader.fieldnames or ())
                ans = [c for c in ("answers", "answer") if c in cols]
                if "query" not in cols or len(ans) != 1:
                    raise QuasirlValueError(
                        f"{path}: CSV needs a column 'query' and one answer column, 'answers' or "
                        f"'answer' ('|' between accepted answers), got {reader.fieldnames}")
                for n, r in enumerate(reader, 2):
                    if r[ans[0]] is None or r["query"] is None:
                        raise QuasirlValueError(f"{path}:{n}: row has too few fields")
                    rows.append((r.get("id") or str(len(rows)), r["query"],
                                 tuple(a.strip() for a in r[ans[0]].split("|"))))
        items = tuple(Item(id=i, query=q, answers=a) for i, q, a in rows)
        return cls(name=name or path.stem, items=items, question=question,
                   instruction=instruction, kind=kind, style=style, eval_question=eval_question)


def _country_task(name: str, instruction: str, eval_question: str) -> Task:
    """A list-style task over the 195 countries of ``data/<name>.csv`` (columns ``country`` and
    ``<name>``, ``|`` between accepted answers)."""
    text = files("quasirl.lm").joinpath(f"data/{name}.csv").read_text(encoding="utf-8")
    reader = csv.DictReader(text.splitlines())
    items = tuple(Item(id=normalize(r["country"]).replace(" ", "-"), query=r["country"],
                       answers=tuple(r[name].split("|"))) for r in reader)
    return Task(name=name, items=items, question="{query}", style="list",
                instruction=instruction, eval_question=eval_question)


def capitals() -> Task:
    """Country capitals: 195 countries, accepted alternatives (``Bern|Berne``, ``Sucre|La Paz``)."""
    return _country_task("capitals", "Capital cities of the world's countries.",
                         "What is the capital of {query}?")


def continents() -> Task:
    """The continent of each of the 195 countries of :func:`capitals` (Oceania also as
    Australia; the transcontinental countries Russia, Turkey, Kazakhstan, the South Caucasus,
    Cyprus and Egypt accept both continents). The answer set is small, so a wrong answer is a
    real continent, not noise."""
    return _country_task("continents", "The continent of each of the world's countries.",
                         "Which continent is {query} in?")


def arithmetic(digits: int = 2, n: int = 200, op: str = "+", seed: int = 0) -> Task:
    """Arithmetic with ``digits``-digit operands: "What is 37 + 58?" (op one of + - *)."""
    digits = check_int("digits", digits, 1, 9)
    if op not in ("+", "-", "*"):
        raise QuasirlValueError(f"op must be one of '+', '-', '*', got {op!r}")
    lo, hi = 10 ** (digits - 1) if digits > 1 else 0, 10**digits
    n = check_int("n", n, 2, (hi - lo) ** 2)
    rng = np.random.default_rng([int(seed), digits])
    seen, items = set(), []
    while len(items) < n:
        a, b = (int(x) for x in rng.integers(lo, hi, size=2))
        if (a, b) in seen:
            continue
        seen.add((a, b))
        val = {"+": a + b, "-": a - b, "*": a * b}[op]
        items.append(Item(id=f"{a}{op}{b}", query=f"{a} {op} {b}", answers=(str(val),)))
    return Task(name=f"arithmetic{digits}{op}", items=tuple(items), question="What is {query}?",
                kind="number")


def get_task(name: str) -> Task:
    """A built-in task by name (``capitals``, ``continents``, ``arithmetic``, ``arithmetic3``
    ...) or a file."""
    if name == "capitals":
        return capitals()
    if name == "continents":
        return continents()
    m = re.fullmatch(r"arithmetic(\d?)", name)
    if m:
        return arithmetic(digits=int(m.group(1) or 2))
    if Path(name).suffix in (".csv", ".jsonl"):
        return Task.from_file(name)
    raise QuasirlValueError(
        f"task must be 'capitals', 'continents', 'arithmetic[D]' or a .csv/.jsonl file, "
        f"got {name!r}")
