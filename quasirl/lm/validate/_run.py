"""All three experiments in order on one output folder (:func:`validate`)."""

from __future__ import annotations

from pathlib import Path

from ..._validate import QuasirlValueError
from .._chaining import ARMS
from .._fitness import SIGNALS, check_signals
from .._tasks import Task
from .._types import LM
from . import _io
from ._experiments import collect_calibration, collect_transfer, exp2_bank, trajectory
from ._results import Validation
from ._statistics import analyze_calibration, analyze_transfer


def validate(lm: LM, task: Task, out, *, signal: str = "likelihood", signals=SIGNALS,
             acceptance: str = "hard", temperature: float = 1.0, k: int = 4,
             n_demos: int = 8, exp1_queries: int = 100, exp1_samples: int = 2,
             exp2_queries: int = 50, exp2_samples: int = 2, bs=(0.0, 0.25, 0.5, 0.75, 1.0),
             bank: str = "exp1", rounds: int = 3, queries_per_round: int = 30,
             samples_per_query: int = 4, arms=ARMS, buffer_size: int | None = None,
             max_tokens: int = 12, n_boot: int = 1000, seed: int = 0, split_seed: int = 0,
             progress_factory=None) -> Validation:
    """Run Exp 1, Exp 2 and Exp 3 in order, writing records and JSON under ``out``.

    Each experiment resumes from its records. ``bank="exp1"`` builds Exp 2's contexts from the
    model's own Exp 1 answers (its real mistakes), ``"gold"`` from gold demonstrations with
    other items' answers as the mistakes. ``progress_factory(name, total)`` may return a
    progress callback. Returns the three results; figures of them are drawn by
    ``quasirl.plots`` from their ``to_dict()`` (``quasirl lm validate`` writes them).
    """
    out = Path(out)
    if bank not in ("exp1", "gold"):
        raise QuasirlValueError(f"bank must be 'exp1' or 'gold', got {bank!r}")
    signals = check_signals(signals)
    if signal not in signals:
        raise QuasirlValueError(f"signal {signal!r} must be one of signals {signals}")

    def prog(name, total):
        return None if progress_factory is None else progress_factory(name, total)

    header = {"lm": lm.name, "task": task.name}
    common = {"temperature": temperature, "k": k, "n_demos": n_demos,
              "max_tokens": max_tokens, "seed": seed, "split_seed": split_seed}
    recs1 = collect_calibration(lm, task, signals=signals, n_queries=exp1_queries,
                                samples_per_query=exp1_samples, records=out / _io.EXP1_RECORDS,
                                progress=prog("Exp 1 calibration", exp1_queries * exp1_samples),
                                **common)
    cal = analyze_calibration(recs1, signals, acceptance=acceptance, n_boot=n_boot, seed=seed)
    _io.write_result(out / _io.EXP1_JSON, cal, **header)
    answers = None
    if bank == "exp1":
        answers, note = exp2_bank(recs1, k)
        bank = bank if answers is not None else note
    recs2 = collect_transfer(lm, task, bs=bs, n_queries=exp2_queries,
                             samples_per_query=exp2_samples, bank=answers,
                             records=out / _io.EXP2_RECORDS,
                             progress=prog("Exp 2 transfer", len(bs) * exp2_queries
                                           * exp2_samples), **common)
    tr = analyze_transfer(recs2, n_boot=n_boot, seed=seed)
    _io.write_result(out / _io.EXP2_JSON, tr, **header, bank=bank)
    n_arms = len(tuple(arms))
    traj = trajectory(lm, task, cal, tr, signal=signal, arms=arms, rounds=rounds,
                      queries_per_round=queries_per_round, samples_per_query=samples_per_query,
                      buffer_size=buffer_size, records_dir=out,
                      on_prediction=lambda p: _io.write_result(out / _io.EXP3_PREDICTION_JSON,
                                                               p, **header),
                      progress=prog("Exp 3 trajectory", n_arms * (rounds + 1)
                                    * queries_per_round * samples_per_query), **common)
    _io.write_result(out / _io.EXP3_JSON, traj, **header)
    return Validation(calibration=cal, transfer=tr, trajectory=traj, bank=bank)
