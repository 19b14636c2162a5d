"""`quasirl lm calibrate | transfer | run | validate | summary | tree`: the language-model
bridge."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ._lm_common import (
    _BACKEND,
    _BUDGET,
    _MODEL,
    _OUT,
    _QUICK,
    _SEED,
    _SERVER,
    _SPLIT_SEED,
    _TASK,
    _TEMP,
    _THREADS,
    _TIMEOUT,
    EXAMPLE,
    _bad,
    _finite,
    _fmt_ci,
    _progress,
    _setup,
    _write,
    lm_app,
)


def _verdict(p) -> str:
    return {True: "pass", False: "FAIL", None: "n/a"}[p]


def _print_calibration(cal, console) -> None:
    """Exp 1's table from a ``quasirl.lm.validate.Calibration``."""
    from rich.table import Table

    t = Table(title=f"Exp 1 evaluator ROC: eps = {_fmt_ci(cal.eps, cal.eps_ci)} "
                    f"({cal.n_samples} samples, {cal.n_queries} queries)")
    for col in ("signal", "AUROC [95%]", "TPR", "FPR", "w pred", "w obs",
                "Bayes check [95% pred.]"):
        t.add_column(col, justify="right")
    for s, d in cal.signals.items():
        b = d.bayes
        t.add_row(s, _fmt_ci(d.auroc, d.auroc_ci), f"{d.tpr:.3f}", f"{d.fpr:.3f}",
                  f"{b.w_predicted:.3f}", f"{b.w_observed:.3f}",
                  f"{_verdict(b.passed)} [{b.w_predictive[0]:.2f}, {b.w_predictive[1]:.2f}]")
    console.print(t)


def _print_transfer(tr, console) -> None:
    """Exp 2's table from a ``quasirl.lm.validate.Transfer``."""
    from rich.table import Table

    p = tr.p_value if tr.p_value is None else round(tr.p_value, 3)
    t = Table(title=f"Exp 2 transfer: g(b) = {tr.a:.3f} + {tr.lam:.3f} b, lam "
                    f"{_fmt_ci(tr.lam, tr.lam_ci)}; linear fit p = {p}: {_verdict(tr.passed)}")
    for col in ("b", "n", "eps_next", "Wilson 95%", "fit"):
        t.add_column(col, justify="right")
    for i, b in enumerate(tr.bs):
        t.add_row(f"{b:.2f}", str(tr.n[i]), f"{tr.eps[i]:.3f}",
                  f"[{tr.eps_wilson_lo[i]:.3f}, {tr.eps_wilson_hi[i]:.3f}]", f"{tr.g(b):.3f}")
    console.print(t)


def _print_trajectory(tj, console) -> None:
    """Exp 3's table from a ``quasirl.lm.validate.Trajectory``."""
    from rich.table import Table

    c, pred = tj.comparison, tj.prediction
    p = "n/a" if c.p_value is None else f"{c.p_value:.3f}"
    lo, hi = c.calibration_slope_ci
    t = Table(title=f"Exp 3 trajectory ({pred.signal}): contrasts' sum of z^2 = {c.chi2:.2f} "
                    f"on {c.dof} points, p = {p}: {_verdict(c.passed)}; inside 95% bands "
                    f"{c.coverage}; calibration slope "
                    f"{c.calibration_slope or float('nan'):.2f} [{lo:.2f}, {hi:.2f}]")
    for col in ("arm", "round", "predicted", "predictive 95%", "observed", "Wilson 95%",
                "judge TPR / FPR", "g(kept w), post hoc"):
        t.add_column(col, justify="right")
    for arm, o in c.arms.items():
        a = pred.arms[arm]
        for n, obs in enumerate(o.observed):
            rates = (f"{o.tpr[n]:.2f} / {o.fpr[n]:.2f}" if n < len(o.tpr) else "")
            step = f"{o.one_step[n]:.3f}" if n and n < len(o.one_step) else ""
            t.add_row(arm if n == 0 else "", str(n), f"{a.point[n]:.3f}",
                      f"[{a.predictive[0][n]:.3f}, {a.predictive[1][n]:.3f}]",
                      f"{obs:.3f}", f"[{o.wilson[0][n]:.3f}, {o.wilson[1][n]:.3f}]", rates,
                      step)
    console.print(t)


def _figures(out: Path, calibration=None, transfer=None, trajectory=None) -> None:
    """The validation figures, drawn from the results' JSON form (as a rerun from the stored
    JSON would draw them): the library computes, the command line draws."""
    from quasirl.plots import _lm as plots
    from quasirl.plots._style import savefig

    for name, result, figure in (("exp1_calibration", calibration, plots.calibration_figure),
                                 ("exp2_transfer", transfer, plots.transfer_figure),
                                 ("exp3_trajectory", trajectory, plots.trajectory_figure)):
        if result is not None:
            savefig(figure(result.to_dict()), out / f"{name}.png")


def _channel_figures(out: Path, res, channel: str) -> None:
    """The weights channels' figures: g(b) against g_ft(b) on the same queries, the T axis."""
    from quasirl.plots import _lm as plots
    from quasirl.plots._style import savefig

    if res.context_transfer is not None:
        savefig(plots.channels_transfer_figure({
            "in context": res.context_transfer.to_dict(),
            f"through the {channel}" if channel == "weights" else "context + weights":
            res.transfer.to_dict()}), out / "exp2_channels.png")
    if res.temperature_axis is not None:
        savefig(plots.temperature_axis_figure(res.temperature_axis), out / "t_axis.png")


@lm_app.command("calibrate", epilog="Example: quasirl lm calibrate --model smollm2-135m",
                help="Exp 1: error rate, and AUROC / TPR / FPR / one-step Bayes check per "
                     "fitness signal. The queries are validate's Exp 1 pool for the same "
                     "--queries and seeds, so `quasirl lm validate` resumes these records."
                     "\n\nA server that cannot score prompts fails at the first survey "
                     "signal ('cannot score prompts'): pass --signals likelihood,gold, or see "
                     "`quasirl lm --help`.")
def calibrate_cmd(model: str = _MODEL, server: str = _SERVER, task: str = _TASK,
                  backend: str = _BACKEND, threads: int = _THREADS, out: Path = _OUT,
                  timeout: float = _TIMEOUT, retry_budget: float = _BUDGET,
                  queries: int = typer.Option(100, help="queries"),
                  samples: int = typer.Option(2, help="samples per query"),
                  signals: str = typer.Option("yesno,scale5,likelihood,gold",
                                              help="comma-separated fitness signals"),
                  acceptance: str = typer.Option("hard", help="hard | soft"),
                  k: int = typer.Option(4, help="gold demonstrations in each prompt"),
                  temperature: float = _TEMP, seed: int = _SEED,
                  split_seed: int = _SPLIT_SEED, quick: bool = _QUICK) -> None:
    """Exp 1: error rate, and AUROC / TPR / FPR / one-step Bayes check per fitness signal."""
    from rich.console import Console

    from quasirl.lm import validate as V

    _finite("--temperature", temperature, 0.0)
    if quick:
        queries, samples = 10, 2
    split_seed = seed if split_seed is None else split_seed
    lm, t = _setup(model, server, task, backend, threads, timeout, retry_budget)
    sig = tuple(s.strip() for s in signals.split(",") if s.strip())
    pools = V.draw_pools(t, n_demos=8, exp1_queries=queries, exp2_queries=0, exp3_queries=0,
                         split_seed=split_seed)
    recs = V.collect_calibration(lm, t, signals=sig, samples_per_query=samples,
                                 temperature=temperature, k=k, seed=seed,
                                 split_seed=split_seed, pools=pools,
                                 records=out / "exp1_calibration.jsonl",
                                 progress=_progress("Exp 1", queries * samples))
    cal = V.analyze_calibration(recs, sig, acceptance=acceptance, seed=seed,
                                n_boot=200 if quick else 1000)
    _write(out, "exp1_calibration.json", {"lm": lm.name, "task": t.name, **cal.to_dict()})
    _figures(out, calibration=cal)
    _print_calibration(cal, Console())


@lm_app.command("transfer", epilog="Example: quasirl lm transfer --model gemma3-270m",
                help="Exp 2: eps_next = g(b) after contexts with a wrong fraction b; fit "
                     "g(b) = a + lam b. The queries are validate's Exp 2 pool for the same "
                     "sizes and seeds (disjoint from Exp 1's), so `quasirl lm validate` resumes "
                     "these records.")
def transfer_cmd(model: str = _MODEL, server: str = _SERVER, task: str = _TASK,
                 backend: str = _BACKEND, threads: int = _THREADS, out: Path = _OUT,
                 timeout: float = _TIMEOUT, retry_budget: float = _BUDGET,
                 queries: int = typer.Option(50, help="queries per wrong fraction b"),
                 samples: int = typer.Option(2, help="samples per query"),
                 k: int = typer.Option(4, help="context pairs (b k must be an integer)"),
                 bs: str = typer.Option("0,0.25,0.5,0.75,1", help="wrong fractions b"),
                 bank: str = typer.Option("auto", help="context answers: exp1 (the model's "
                                          "own Exp 1 answers in --out), gold (gold pairs, "
                                          "other items' answers as mistakes), auto (exp1 when "
                                          "present)"),
                 exp1_queries: int = typer.Option(40, help="size of the Exp 1 pool that the Exp "
                                                  "2 pool follows (default: that of the Exp 1 "
                                                  "records in --out, if any)"),
                 temperature: float = _TEMP, seed: int = _SEED,
                 split_seed: int = _SPLIT_SEED, quick: bool = _QUICK) -> None:
    """Exp 2: eps_next = g(b) after contexts with a wrong fraction b; fit g(b) = a + lam b."""
    from rich.console import Console

    from quasirl.lm import validate as V

    _finite("--temperature", temperature, 0.0)
    if quick:
        queries, samples = 6, 1
    split_seed = seed if split_seed is None else split_seed
    lm, t = _setup(model, server, task, backend, threads, timeout, retry_budget)
    try:
        bvals = tuple(float(b) for b in bs.split(","))
    except ValueError:
        raise _bad(f"--bs must be comma-separated numbers, got {bs!r}") from None
    exp1 = out / "exp1_calibration.jsonl"
    if bank not in ("auto", "exp1", "gold"):
        raise _bad(f"--bank must be auto, exp1 or gold, got {bank!r}")
    use_exp1 = bank == "exp1" or (bank == "auto" and exp1.exists())
    answers = None
    if exp1.exists():
        from quasirl.lm import read_records

        meta1, recs1 = read_records(exp1)
        exp1_queries = meta1["n_queries"]
    if use_exp1:
        answers, note = V.exp2_bank(recs1, k)
        if answers is None:
            print(f"Exp 2 contexts: {note}", file=sys.stderr)
    pools = V.draw_pools(t, n_demos=8, exp1_queries=exp1_queries, exp2_queries=queries,
                         exp3_queries=0, split_seed=split_seed)
    recs = V.collect_transfer(lm, t, bs=bvals, k=k, samples_per_query=samples,
                              temperature=temperature, seed=seed, bank=answers,
                              split_seed=split_seed, pools=pools,
                              records=out / "exp2_transfer.jsonl",
                              progress=_progress("Exp 2", len(bvals) * queries * samples))
    tr = V.analyze_transfer(recs, seed=seed, n_boot=200 if quick else 1000)
    _write(out, "exp2_transfer.json", {"lm": lm.name, "task": t.name, **tr.to_dict()})
    _figures(out, transfer=tr)
    _print_transfer(tr, Console())


@lm_app.command("run", epilog="Example: quasirl lm run --arm filtered --signal likelihood "
                               "--threshold 0.3 --rounds 3")
def run_cmd(model: str = _MODEL, server: str = _SERVER, task: str = _TASK,
            backend: str = _BACKEND, threads: int = _THREADS, out: Path = _OUT,
            timeout: float = _TIMEOUT, retry_budget: float = _BUDGET,
            arm: str = typer.Option("filtered", help="filtered | unfiltered | random | oracle"),
            signal: str = typer.Option("likelihood", help="yesno | scale5 | likelihood | gold"),
            acceptance: str = typer.Option("hard", help="hard (f >= threshold) | soft (p = f)"),
            threshold: float = typer.Option(0.5, help="hard acceptance threshold on f"),
            accept_rate: float = typer.Option(0.5, help="acceptance rate of the random arm"),
            rounds: int = typer.Option(3, help="selection rounds (generation rounds 0..R)"),
            queries: int = typer.Option(30, help="fresh queries per round"),
            samples: int = typer.Option(4, help="samples per query"),
            k: int = typer.Option(4, help="demonstrations in each prompt"),
            buffer_size: int = typer.Option(None, help="rolling buffer size (default: the "
                                                       "last round's accepted pairs)"),
            temperature: float = _TEMP, seed: int = _SEED, quick: bool = _QUICK) -> None:
    """The chaining loop: answer, evaluate, keep, put the kept pairs in the context, repeat."""
    from rich.console import Console
    from rich.table import Table

    from quasirl.lm import get_fitness, run_chaining
    from quasirl.plots import _lm as plots
    from quasirl.plots._style import savefig

    _finite("--temperature", temperature, 0.0)
    _finite("--threshold", threshold)
    _finite("--accept-rate", accept_rate, 0.0)
    if quick:
        rounds, queries, samples = 2, 4, 2
    lm, t = _setup(model, server, task, backend, threads, timeout, retry_budget)
    res = run_chaining(lm, t, get_fitness(signal) if arm == "filtered" else None, arm=arm,
                       rounds=rounds, queries_per_round=queries, samples_per_query=samples,
                       temperature=temperature, k=k, buffer_size=buffer_size,
                       acceptance=acceptance, threshold=threshold,
                       accept_rate=accept_rate if arm == "random" else None, seed=seed,
                       records=out / f"chaining_{arm}.jsonl",
                       progress=_progress(f"chaining ({arm})",
                                          (rounds + 1) * queries * samples))
    d = res.to_dict()
    _write(out, f"chaining_{arm}.json", {"lm": lm.name, "task": t.name, **d})
    savefig(plots.chaining_figure(d), out / f"chaining_{arm}.png")
    table = Table(title=f"chaining: {arm} ({signal if arm == 'filtered' else '-'}), "
                        f"{t.name}, T = {temperature}")
    for col in ("round", "samples", "eps_n", "accepted", "w_n"):
        table.add_column(col, justify="right")
    for r in res.rounds:
        table.add_row(str(r.round), str(r.n), f"{r.eps:.3f}", f"{r.accept_rate:.3f}",
                      f"{r.w:.3f}")
    Console().print(table)


VALIDATE_HELP = (
    "Exp 1, Exp 2, then Exp 3: predict the trajectory from the measured ingredients, run the "
    "loop (filtered, unfiltered, random, oracle) and compare. Resumes from --out.\n\n"
    "The task's items are split by --split-seed (default --seed) into 8 demonstrations and "
    "disjoint query pools for Exp 1, Exp 2 and Exp 3, which need 8 + exp1-queries + "
    "exp2-queries + (rounds + 1) * queries items (192 by default; capitals has 195). "
    "manifest.json lists the pools and stage times; prediction.json pre-registers the "
    "prediction (with its SHA-256, carried by every Exp 3 record) before any Exp 3 sample.\n\n"
    "A server that cannot score prompts fails at the first survey signal ('cannot score "
    "prompts'): pass --signals likelihood,gold, or see `quasirl lm --help`.\n\n"
    "--channel weights trains the model on what each round kept instead of putting it in the "
    "context (rejection-sampling fine-tuning: LoRA, or --method full), from the base model "
    "each round, on --train-pairs kept pairs for --train-steps steps; Exp 2 then measures "
    "g_ft(b) by training on --train-pairs of Exp 1's answers with a wrong share b. "
    "--channel both does the two. Needs --backend transformers. Every trained model is saved "
    "under OUT/adapters, so a killed run resumes from its last finished round.")


@lm_app.command("validate", epilog=EXAMPLE, help=VALIDATE_HELP)
def validate_cmd(model: str = _MODEL, server: str = _SERVER, task: str = _TASK,
                 backend: str = _BACKEND, threads: int = _THREADS, out: Path = _OUT,
                 timeout: float = _TIMEOUT, retry_budget: float = _BUDGET,
                 signal: str = typer.Option("likelihood", help="fitness signal of the "
                                                               "filtered arm"),
                 signals: str = typer.Option("yesno,scale5,likelihood,gold",
                                             help="signals measured in Exp 1 (a server that "
                                                  "cannot score prompts: likelihood,gold)"),
                 acceptance: str = typer.Option("hard", help="hard | soft"),
                 exp1_queries: int = typer.Option(40, help="Exp 1 queries (>= 4; half choose "
                                                  "the thresholds, half measure the rates)"),
                 exp1_samples: int = typer.Option(4, help="samples per Exp 1 query"),
                 exp2_queries: int = typer.Option(24, help="Exp 2 queries (>= 2)"),
                 exp2_samples: int = typer.Option(2, help="samples per Exp 2 query and b"),
                 rounds: int = typer.Option(3, help="selection rounds (>= 1)"),
                 queries: int = typer.Option(30, help="fresh queries per round (Exp 3), shared "
                                             "by the arms"),
                 samples: int = typer.Option(4, help="samples per query (Exp 3)"),
                 n_boot: int = typer.Option(1000, help="bootstrap replicates"),
                 temperature: float = _TEMP, seed: int = _SEED,
                 split_seed: int = _SPLIT_SEED, quick: bool = _QUICK,
                 channel: str = typer.Option("context", help="context | weights | both: how "
                                             "kept answers adapt the model"),
                 method: str = typer.Option("lora", help="lora | full (--channel weights)"),
                 lora_rank: int = typer.Option(8, help="LoRA rank"),
                 lr: float = typer.Option(None, help="learning rate (default: 1e-3 for LoRA, "
                                          "2e-5 for full)"),
                 train_pairs: int = typer.Option(32, help="pairs each training uses"),
                 train_steps: int = typer.Option(16, help="optimiser steps per training"),
                 batch_size: int = typer.Option(8, help="pairs per step")) -> None:
    """Exp 1, Exp 2, then Exp 3 on disjoint query pools (see VALIDATE_HELP)."""
    from rich.console import Console

    from quasirl.lm import CHANNELS, FineTuner
    from quasirl.lm import validate as V

    _finite("--temperature", temperature, 0.0)
    if channel not in CHANNELS:
        raise _bad(f"--channel must be one of {', '.join(CHANNELS)}, got {channel!r}")
    if channel != "context" and (server or backend != "transformers"):
        raise _bad(f"--channel {channel} trains the model's weights: it needs a local model "
                   "with --backend transformers")
    lm, t = _setup(model, server, task, backend, threads, timeout, retry_budget)
    if quick:
        exp1_queries, exp1_samples, exp2_queries, exp2_samples = 10, 2, 6, 1
        rounds, queries, samples, n_boot = 2, 4, 2, 200
        train_pairs, train_steps = 8, 2
    train = {}
    if channel != "context":
        train = {"channel": channel, "train_pairs": train_pairs, "tuner": FineTuner(
            lm, method, rank=lora_rank, lr=lr, steps=train_steps, batch_size=batch_size,
            seed=seed)}
    sig = tuple(x.strip() for x in signals.split(",") if x.strip())
    res = V.validate(lm, t, out, signal=signal, signals=sig, acceptance=acceptance,
                     exp1_queries=exp1_queries, exp1_samples=exp1_samples,
                     exp2_queries=exp2_queries, exp2_samples=exp2_samples, rounds=rounds,
                     queries_per_round=queries, samples_per_query=samples, n_boot=n_boot,
                     temperature=temperature, seed=seed, split_seed=split_seed,
                     progress_factory=_progress, **train)
    _figures(out, res.calibration, res.transfer, res.trajectory)
    _channel_figures(out, res, channel)
    console = Console()
    _print_calibration(res.calibration, console)
    _print_transfer(res.transfer, console)
    _print_trajectory(res.trajectory, console)
    console.print(f"records, JSON and figures in {out}/")


SUMMARY_HELP = (
    "One summary table across validation runs, read from their folders (no model is loaded): "
    "per run eps0, AUROC per signal and the transfer line a + lambda b with their 95% "
    "intervals; the Exp 3 contrasts at the last round, predicted against observed, with the "
    "joint test; every pre-stated criterion's pass/fail and whether the prediction was "
    "registered before the first Exp 3 record; then, per model and task across seeds, the "
    "mean contrasts and how many runs passed each criterion. Prints markdown. A run that "
    "has not finished gets a row with what exists and a status naming the missing stage.")


@lm_app.command("summary", help=SUMMARY_HELP,
                epilog="Example: quasirl lm summary results/smollm2-135m-* --out summary.md")
def summary_cmd(folders: list[Path] = typer.Argument(..., metavar="RUN_FOLDER",
                                                    help="run folders (the --out of "
                                                         "`quasirl lm validate`)"),
                out: Path = typer.Option(None, help="also write the markdown to this file"),
                figure: Path = typer.Option(None, help="also draw the Exp 3 trajectories, "
                                            "predicted against observed, to this PNG: a row "
                                            "per model and task, a panel per arm, a colour "
                                            "per run (channel and seed)")) -> None:
    """One summary table across validation runs (see SUMMARY_HELP)."""
    from quasirl.lm.validate import summarize_run, summary_markdown

    rows = [summarize_run(f) for f in folders]
    md = summary_markdown(rows)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(md, encoding="utf-8")
    if figure is not None:
        _trajectories_figure(rows, figure)
    sys.stdout.write(md)


def _trajectories_figure(rows: list[dict], path: Path) -> None:
    """``summary --figure``: the runs' Exp 3 trajectories, grouped by model and task."""
    import json
    from collections import Counter

    from quasirl.lm.validate._io import EXP3_JSON
    from quasirl.plots import _lm as plots
    from quasirl.plots._style import savefig

    groups: dict = {}
    for row in rows:
        f = Path(row["folder"]) / EXP3_JSON
        if not f.is_file():
            continue
        label = f"{row['channel']}, seed {row['seed']}"
        runs = groups.setdefault(f"{row['model']} {row['task']}", {})
        runs[(label, row["run"])] = json.loads(f.read_text(encoding="utf-8"))
    for title, runs in groups.items():  # runs that share channel and seed: named by folder
        counts = Counter(label for label, _ in runs)
        groups[title] = {(label if counts[label] == 1 else f"{label} ({run})"): tj
                         for (label, run), tj in runs.items()}
    if not groups:
        raise _bad("--figure: none of the folders has an Exp 3 result "
                                f"({EXP3_JSON}) to draw")
    savefig(plots.channels_trajectory_figure(groups), path)


def register(app: typer.Typer) -> None:
    """Add ``quasirl lm ...`` to the main app (``lm tree`` lives in its own module)."""
    from . import lm_tree  # noqa: F401  (its import puts `quasirl lm tree` on lm_app)

    app.add_typer(lm_app, name="lm")
