"""All three experiments in order on one output folder (:func:`validate`)."""

from __future__ import annotations

from pathlib import Path

from ..._jsonio import write_json
from ..._validate import QuasirlValueError, check_int
from .._chaining import ARMS
from .._fitness import SIGNALS, check_signals
from .._tasks import Task
from .._types import LM
from . import _io
from ._design import Manifest, check_order, draw_pools, register_prediction
from ._experiments import (
    collect_calibration,
    collect_transfer,
    exp2_bank,
    train_bank_from_records,
    trajectory,
)
from ._results import Validation
from ._statistics import analyze_calibration, analyze_transfer
from ._taxis import analyze_temperature_axis, collect_temperature_axis


def validate(lm: LM, task: Task, out, *, signal: str = "likelihood", signals=SIGNALS,
             acceptance: str = "hard", temperature: float = 1.0, k: int = 4,
             n_demos: int = 8, exp1_queries: int = 40, exp1_samples: int = 4,
             exp2_queries: int = 24, exp2_samples: int = 2, bs=(0.0, 0.25, 0.5, 0.75, 1.0),
             bank: str = "exp1", rounds: int = 3, queries_per_round: int = 30,
             samples_per_query: int = 4, arms=ARMS, buffer_size: int | None = None,
             max_tokens: int = 12, n_boot: int = 1000, seed: int = 0,
             split_seed: int | None = None, progress_factory=None, channel: str = "context",
             tuner=None, train_pairs: int = 32) -> Validation:
    """Run Exp 1, Exp 2 and Exp 3 in order, writing records and JSON under ``out``.

    Design (see ``_design``): the task's items are cut by ``split_seed`` (default: ``seed``, so
    a new seed resamples the queries) into ``n_demos`` demonstrations and disjoint pools: Exp 1
    (``exp1_queries``, half to choose thresholds, half to measure rates), Exp 2
    (``exp2_queries``) and Exp 3 (``(rounds + 1) * queries_per_round``, one block per round,
    shared by every arm). The defaults need 8 + 40 + 24 + 120 = 192 items (capitals has 195);
    a task with too few is refused, saying how many are needed. ``manifest.json`` lists the
    pools, their zero overlap, the software and the stage times; before any Exp 3 sample the
    prediction is pre-registered in ``prediction.json`` with its SHA-256, which every Exp 3
    record carries. A rerun into ``out`` resumes every experiment from its records; it is
    refused if its pools, design or prediction differ from the stored ones, or if the stored
    manifest does not show the prediction registered before Exp 3 sampling started.

    ``bank="exp1"`` builds Exp 2's contexts from the model's own Exp 1 answers (its real
    mistakes), ``"gold"`` from gold demonstrations with other items' answers as the mistakes.
    ``channel``: how kept answers adapt the model. ``context`` (the default) puts them in the
    prompts; ``weights`` trains the model on them with ``tuner`` (a
    :class:`~quasirl.lm.FineTuner` of ``lm``), every prompt keeping gold demonstrations;
    ``both`` does the two. Exp 2 then measures the transfer through that channel (training on
    ``train_pairs`` of Exp 1's answers with a wrong share b, from the base model), and every
    Exp 3 round trains on ``train_pairs`` of its kept pairs; each trained model is saved under
    ``out/adapters`` so a killed run resumes where it stopped. Last, the T axis: every saved
    model answers Exp 2's queries greedily and at T = 0.5 and 1 (``t_axis.json``: does
    selection act like lowering T, or does it move the mode?), and the in-context Exp 2 of the
    base model on the same queries (``exp2_context.json``), to set g(b) against g_ft(b).

    ``progress_factory(name, total)`` may return a progress callback. Returns the three
    results; figures of them are drawn by ``quasirl.plots`` from their ``to_dict()``
    (``quasirl lm validate`` writes them).
    """
    out = Path(out)
    if bank not in ("exp1", "gold"):
        raise QuasirlValueError(f"bank must be 'exp1' or 'gold', got {bank!r}")
    signals = check_signals(signals)
    if signal not in signals:
        raise QuasirlValueError(f"signal {signal!r} must be one of signals {signals}")
    seed = check_int("seed", seed)
    split_seed = seed if split_seed is None else check_int("split_seed", split_seed)
    k = check_int("k", k, 1)
    n_demos = check_int("n_demos", n_demos, k)
    exp1_queries = check_int("exp1_queries", exp1_queries, 4)
    exp1_samples = check_int("exp1_samples", exp1_samples, 1)
    exp2_queries = check_int("exp2_queries", exp2_queries, 2)
    exp2_samples = check_int("exp2_samples", exp2_samples, 1)
    rounds = check_int("rounds", rounds, 1)
    queries_per_round = check_int("queries_per_round", queries_per_round, 1)
    samples_per_query = check_int("samples_per_query", samples_per_query, 1)
    arms = tuple(arms)
    pools = draw_pools(task, n_demos=n_demos, exp1_queries=exp1_queries,
                       exp2_queries=exp2_queries,
                       exp3_queries=(rounds + 1) * queries_per_round, split_seed=split_seed)

    def prog(name, total):
        return None if progress_factory is None else progress_factory(name, total)

    header = {"lm": lm.name, "task": task.name}
    common = {"temperature": temperature, "k": k, "n_demos": n_demos,
              "max_tokens": max_tokens, "seed": seed, "split_seed": split_seed}
    design = {**header, "task_fingerprint": task.fingerprint(), **common, "signal": signal,
              "signals": list(signals), "acceptance": acceptance,
              "exp1_queries": exp1_queries, "exp1_samples": exp1_samples,
              "exp2_queries": exp2_queries, "exp2_samples": exp2_samples,
              "bs": [float(b) for b in bs], "bank": bank, "rounds": rounds,
              "queries_per_round": queries_per_round, "samples_per_query": samples_per_query,
              "arms": list(arms), "buffer_size": buffer_size, "n_boot": n_boot}
    if channel != "context":
        if tuner is None or getattr(tuner, "lm", None) is not lm:
            raise QuasirlValueError(f"channel={channel!r} needs tuner=FineTuner(lm)")
        train_pairs = check_int("train_pairs", train_pairs, 1)
        design.update(channel=channel, finetune=tuner.config(), train_pairs=train_pairs)
    train = {} if channel == "context" else {"channel": channel, "tuner": tuner,
                                              "train_pairs": train_pairs}
    manifest = Manifest(out, design, pools)
    check_order(manifest.data)

    manifest.stage("exp1_started")
    recs1 = collect_calibration(lm, task, signals=signals, samples_per_query=exp1_samples,
                                pools=pools, records=out / _io.EXP1_RECORDS,
                                progress=prog("Exp 1 calibration", exp1_queries * exp1_samples),
                                **common)
    manifest.stage("exp1_done", first=False)
    cal = analyze_calibration(recs1, signals, acceptance=acceptance, n_boot=n_boot, seed=seed)
    _io.write_result(out / _io.EXP1_JSON, cal, **header)
    answers = None
    if bank == "exp1":
        answers, note = exp2_bank(recs1, k)
        bank = bank if answers is not None else note
    manifest.stage("exp2_started")
    if train:
        if tuner is not None:
            tuner.reset()
        train2 = {**train, "train_bank": train_bank_from_records(recs1),
                  "adapters": out / "adapters" / "exp2"}
    recs2 = collect_transfer(lm, task, bs=bs, samples_per_query=exp2_samples, bank=answers,
                             pools=pools, records=out / _io.EXP2_RECORDS,
                             progress=prog("Exp 2 transfer", len(bs) * exp2_queries
                                           * exp2_samples), **common,
                             **(train2 if train else {}))
    manifest.stage("exp2_done", first=False)
    tr = analyze_transfer(recs2, n_boot=n_boot, seed=seed)
    _io.write_result(out / _io.EXP2_JSON, tr, **header, bank=bank)

    def preregister(prediction) -> dict:
        """Write (or check) prediction.json before any Exp 3 sample; the hash to stamp."""
        _io.write_result(out / _io.EXP3_PREDICTION_JSON, prediction, **header)
        content = {**header, "pools_sha256": {n: p["sha256"] for n, p in
                                              manifest.data["pools"].items()},
                   "prediction": prediction.to_dict()}
        reg = register_prediction(out, content)
        manifest.data["prediction"] = {"sha256": reg["sha256"],
                                       "registered_at": reg["registered_at"]}
        manifest.stage("exp3_sampling_started")
        check_order(manifest.data)
        return {"prediction_sha256": reg["sha256"]}

    n_arms = len(arms)
    bar = prog("Exp 3 trajectory", n_arms * (rounds + 1) * queries_per_round * samples_per_query)

    def exp3_progress(n_new):
        """Time the first Exp 3 record (an upper bound: called just after it was written)."""
        if n_new and "exp3_first_record_written" not in manifest.data["stages"]:
            manifest.stage("exp3_first_record_written")
        if bar is not None:
            bar(n_new)

    traj = trajectory(lm, task, cal, tr, signal=signal, arms=arms, rounds=rounds,
                      queries_per_round=queries_per_round, samples_per_query=samples_per_query,
                      buffer_size=buffer_size, pools=pools, records_dir=out,
                      on_prediction=preregister, progress=exp3_progress, **common, **train)
    manifest.stage("exp3_done", first=False)
    _io.write_result(out / _io.EXP3_JSON, traj, **header)
    taxis = tr_context = None
    if train:
        manifest.stage("t_axis_started")
        n_models = 1 + len(arms) * rounds
        recs4 = collect_temperature_axis(
            lm, task, tuner, out / "adapters", arms=arms, pools=pools, k=k,
            samples_per_query=exp2_samples, max_tokens=max_tokens, seed=seed,
            records=out / _io.T_AXIS_RECORDS,
            progress=prog("T axis", n_models * exp2_queries * (1 + 2 * exp2_samples)))
        manifest.stage("t_axis_done", first=False)
        taxis = analyze_temperature_axis(recs4, n_boot=n_boot, seed=seed)
        write_json(out / _io.T_AXIS_JSON, {**header, **taxis}, indent=1, sort_keys=True)
        # the in-context g(b) of the base model on the same queries, for g against g_ft
        manifest.stage("exp2_context_started")
        tuner.reset()
        recs5 = collect_transfer(lm, task, bs=bs, samples_per_query=exp2_samples, bank=answers,
                                 pools=pools, records=out / _io.EXP2_CONTEXT_RECORDS,
                                 progress=prog("Exp 2 in context", len(bs) * exp2_queries
                                               * exp2_samples), **common)
        manifest.stage("exp2_context_done", first=False)
        tr_context = analyze_transfer(recs5, n_boot=n_boot, seed=seed)
        _io.write_result(out / _io.EXP2_CONTEXT_JSON, tr_context, **header, bank=bank)
    return Validation(calibration=cal, transfer=tr, trajectory=traj, bank=bank,
                      temperature_axis=taxis, context_transfer=tr_context)
