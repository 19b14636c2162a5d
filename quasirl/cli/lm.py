"""`quasirl lm calibrate | transfer | run | validate | summary | tree`: the language-model
bridge."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import typer

from quasirl._jsonio import write_json

EXAMPLE = ("Example: quasirl lm validate --model gemma3-270m --task capitals "
           "--out quasirl-out/lm   (or --server http://127.0.0.1:8000, or --model synthetic)")

SCORING = ("Servers that cannot score prompts: the survey signals (yesno, scale5) score "
           "labels after a prompt, which a server does through 'echo' log-probabilities. "
           "quasirl probes this once; a server that fails the probe (llama-cpp-python's server "
           "0.3.x shifts echo log-probs by one token) stops the run with 'server ... cannot "
           "score prompts'. Generation and the likelihood and gold signals still work: pass "
           "--signals likelihood,gold (and --signal likelihood), or use a server that scores "
           "prompts correctly (e.g. vLLM) or a local backend (--model gemma3-270m | "
           "smollm2-135m | PATH.gguf with --backend llamacpp | transformers).")

lm_app = typer.Typer(
    help="Real language-model populations: self-evaluation, the chaining loop, and theory "
         "against runs. Models come from Python packages (gemma3-270m, smollm2-135m), a .gguf "
         "file, a transformers folder, a server (--server) or 'synthetic' (known rates).\n\n"
         + SCORING, no_args_is_help=True, epilog=EXAMPLE)

_OUT = typer.Option(Path("quasirl-out/lm"), help="output folder (records, JSON, PNG)")
_MODEL = typer.Option("gemma3-270m", help="gemma3-270m | smollm2-135m | PATH.gguf | FOLDER | "
                      "synthetic[:eps0=..,tpr=..,fpr=..,lam=..]")
_SERVER = typer.Option(None, help="URL of a running OpenAI-compatible server (overrides --model); "
                       "if it cannot score prompts, use --signals likelihood,gold")
_TASK = typer.Option("capitals",
                     help="capitals | continents | arithmetic[D] | FILE.csv | FILE.jsonl")
_BACKEND = typer.Option("llamacpp", help="llamacpp | transformers (local GGUF models)")
_THREADS = typer.Option(None, help="CPU threads for local models (default: all cores, max 8)")
_TEMP = typer.Option(1.0, help="sampling temperature T")
_SEED = typer.Option(0, help="seed of every random choice, including which items are queries "
                     "(unless --split-seed is given)")
_SPLIT_SEED = typer.Option(None, help="seed of the split of the task's items into "
                           "demonstrations and disjoint query pools (default: --seed)")
_QUICK = typer.Option(False, help="tiny sizes (for tests)")
_TIMEOUT = typer.Option(None, help="with --server: seconds one request attempt may take "
                        "(default 30)")
_BUDGET = typer.Option(None, help="with --server: seconds one request may take with all its "
                       "retries, each retry reported on stderr (default 120)")


def _bad(message: str) -> ValueError:
    """A bad option: the CLI prints it as one line ``error: ...`` and exits with status 2."""
    from quasirl._validate import QuasirlValueError

    return QuasirlValueError(message)


def _finite(option: str, value, minimum: float | None = None, positive: bool = False):
    """Refuse NaN / inf (and values below ``minimum``) for a numeric option, naming it."""
    if value is None:
        return value
    if not math.isfinite(value):
        raise _bad(f"{option} must be a finite number, got {value}")
    if minimum is not None and value < minimum:
        raise _bad(f"{option} must be >= {minimum:g}, got {value}")
    if positive and value <= 0:
        raise _bad(f"{option} must be > 0, got {value}")
    return value


def _setup(model, server, task, backend, threads, timeout=None, retry_budget=None):
    from quasirl.lm import get_task, load

    _finite("--timeout", timeout, positive=True)
    _finite("--retry-budget", retry_budget, positive=True)
    http = {k: v for k, v in (("timeout", timeout), ("retry_budget", retry_budget))
            if v is not None}
    if http and not server:
        raise _bad(f"--{next(iter(http)).replace('_', '-')} applies only with "
                                 "--server")
    t = get_task(task)
    kwargs = dict(http)
    if threads is not None and not server and not model.startswith("synthetic"):
        kwargs["n_threads" if backend == "llamacpp" else "threads"] = threads
    lm = load(server or model, backend=backend, task=t, **kwargs)
    return lm, t


def _progress(name: str, total: int):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=name, file=sys.stderr, leave=False, mininterval=1.0)
    return bar.update


def _fmt_ci(x, ci) -> str:
    return "n/a" if x is None else f"{x:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _verdict(p) -> str:
    return {True: "pass", False: "FAIL", None: "n/a"}[p]


def _write(out: Path, name: str, obj) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / name, obj, indent=1, sort_keys=True)


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
    for col in ("arm", "round", "predicted", "predictive 95%", "observed", "Wilson 95%"):
        t.add_column(col, justify="right")
    for arm, o in c.arms.items():
        a = pred.arms[arm]
        for n, obs in enumerate(o.observed):
            t.add_row(arm if n == 0 else "", str(n), f"{a.point[n]:.3f}",
                      f"[{a.predictive[0][n]:.3f}, {a.predictive[1][n]:.3f}]",
                      f"{obs:.3f}", f"[{o.wilson[0][n]:.3f}, {o.wilson[1][n]:.3f}]")
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
                out: Path = typer.Option(None, help="also write the markdown to this file")
                ) -> None:
    """One summary table across validation runs (see SUMMARY_HELP)."""
    from quasirl.lm.validate import summarize_run, summary_markdown

    md = summary_markdown([summarize_run(f) for f in folders])
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(md, encoding="utf-8")
    sys.stdout.write(md)


TREE_HELP = (
    "The model's answer tree after each prompt, exact (issue 18): the MAP answer against the "
    "greedy one, F(T) -> the MAP log-probability within the proven band [0, T log N], the "
    "mass on the MAP answer as T -> 0, token-level sampling at T against the sequence-level "
    "tilt at T, best-of-N accuracy (by own likelihood and by the task's checker) and the "
    "error after one round of soft selection, all predicted from the trees with no fitted "
    "parameter. With --samples > 0 the model's own samples (max_tokens = --depth) check them: "
    "TV to the token law and to the tilt with bootstrap intervals, and best-of-N on disjoint "
    "groups of samples.\n\n"
    "Prompts are the task's items with --k demonstrations, built as `quasirl lm validate` "
    "builds them. Each prompt's record goes to tree.jsonl as soon as it is done; a rerun with "
    "the same options skips the prompts already there (more --prompts extends the run). "
    "tree.json holds the records, the summary and the command; figures: free_energy.png, "
    "best_of_n.png, token_vs_tilt.png.")
TREE_EXAMPLE = ("Example: quasirl lm tree --model smollm2-135m --prompts 20 --depth 4 --top-k 4 "
                "--samples 200 --out results/smollm2-135m-answer-tree")
# sequence temperatures of the F(T) and MAP-mass curves; selection temperatures of the error
TREE_T_GRID = (0.0, *[0.01 * 200.0 ** (i / 33) for i in range(34)])  # 0, then 0.01..2
TREE_T_SEL = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
TREE_STOP = ("\n",)


def _numbers(option: str, text: str, cast, minimum=None, positive=False) -> list:
    try:
        vals = [cast(x) for x in text.split(",") if x.strip()]
    except ValueError:
        kind = "integers" if cast is int else "numbers"
        raise _bad(f"{option} must be comma-separated {kind}, got {text!r}") from None
    if not vals:
        raise _bad(f"{option} must not be empty")
    for v in vals:
        _finite(option, v, minimum, positive)
    return vals


def _synthetic_tokens(task, items, seed: int):
    """A SyntheticTokenLM whose vocabulary holds the answers of ``items`` (and the end)."""
    from quasirl.lm import SyntheticTokenLM

    answers = sorted({" " + it.answer for it in items})
    pieces = ("<eos>", "\n", *answers, " the", " of", ",")
    return SyntheticTokenLM(pieces, seed=seed, scale=3.0, end_bias=2.0, name="synthetic-tokens")


def _answer_dict(a, checker) -> dict:
    return {"text": a.text, "kind": a.kind, "logprob": a.logprob,
            "correct": bool(checker(a.text)) if a.kind != "rest" else None}


def _tree_record(lm, i: int, item, prompt: str, checker, cfg: dict) -> dict:
    """Everything ``quasirl lm tree`` records for one prompt (see TREE_HELP)."""
    import numpy as np

    import quasirl.lm as qlm

    temps = sorted({1.0, *cfg["temperatures"]})
    laws = qlm.token_temperature_laws(lm, prompt, cfg["depth"], temps, top_k=cfg["top_k"],
                                      min_prob=cfg["min_prob"], stop=TREE_STOP,
                                      max_nodes=cfg["max_nodes"])
    by_t = {law.T: law for law in laws}
    tree = by_t[1.0].tree
    rec = {"prompt": i, "item": item.id, "text": prompt, "states": tree.num_states,
           "prefixes": int(tree.nodes.size), "answers": int(tree.answers.size),
           "terminals": int(tree.terminals.size),
           "mass": {k: tree.mass(k) for k in ("end", "rest", "cut")}}
    greedy = tree.greedy_answer()
    rec["greedy"] = _answer_dict(greedy, checker)
    rec["map"], rec["free_energy"], rec["return_gap"] = None, None, None
    if tree.answers.size:
        best = tree.map_answer()
        rec["map"] = _answer_dict(best, checker)
        T = np.asarray(TREE_T_GRID)
        rec["free_energy"] = {
            "T": list(TREE_T_GRID), "F": np.asarray(tree.free_energy(T)).tolist(),
            "F_all": np.asarray(tree.free_energy(T, answers_only=False)).tolist(),
            "map_logprob": best.ret, "log_n": math.log(tree.answers.size),
            "map_mass": np.asarray(tree.optimal_path_mass(T)).tolist()}
        if tree.answers.size > 1:
            rec["return_gap"] = float(tree.return_gap().delta)
    rec["map_ne_greedy"] = rec["map"] is None or best.state != greedy.state
    mp = cfg["min_prob"]
    rec["best_of_n"] = {s: qlm.best_of_n_accuracy(tree, cfg["best_of"], checker, score=s,
                                                  min_prob=mp).to_dict()
                        for s in ("likelihood", "checker")}
    rec["selection"] = qlm.error_after_selection(tree, TREE_T_SEL, checker).to_dict()
    rec["temperatures"] = []
    for j, T in enumerate(temps):
        law = by_t[T]
        row = {"T": T, "tv": law.tv, "tv_lo": law.tv_lo, "tv_hi": law.tv_hi,
               "kinds": [law.tree.kind[s] for s in law.tree.terminals],
               "token": law.token.prob.tolist(), "tilt": law.tilt.prob.tolist()}
        if cfg["samples"]:
            smp = lm.generate([prompt], n=cfg["samples"], temperature=T,
                              max_tokens=cfg["depth"], stop=TREE_STOP,
                              seed=qlm.sample_seed(cfg["seed"], i, j))[0]
            row["counts"] = qlm.terminal_counts(law.tree, smp).tolist()
            if T == 1.0:
                rec["samples"] = [{"text": s.text, "token_ids": list(s.token_ids),
                                   "token_logprobs": list(s.token_logprobs),
                                   "finish": s.finish, "end_logprob": s.end_logprob}
                                  for s in smp]
        rec["temperatures"].append(row)
    return rec


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return float(math.fsum(xs) / len(xs)) if xs else None


def _tree_summary(records: list[dict], task, cfg: dict) -> dict:
    """Across prompts: rates, means, and the sample comparisons (cluster bootstrap)."""
    import numpy as np

    import quasirl.lm as qlm

    ns, n_boot, seed = cfg["best_of"], cfg["n_boot"], cfg["seed"]
    has_map = [r for r in records if r["map"] is not None]
    out = {"n_prompts": len(records),
           "map_ne_greedy_rate": _mean([float(r["map_ne_greedy"]) for r in records]),
           "map_correct_rate": _mean([float(bool(r["map"]["correct"])) for r in has_map]),
           "greedy_correct_rate": _mean([None if r["greedy"]["correct"] is None
                                         else float(r["greedy"]["correct"])
                                         for r in records]),
           "sampling_accuracy": _mean([r["best_of_n"]["checker"]["accuracy"][0]
                                       for r in records]) if ns[0] == 1 else None}
    for k in ("end", "rest", "cut"):
        out[f"{k}_mass_mean"] = _mean([r["mass"][k] for r in records])
    out["rest_mass_max"] = max(r["mass"]["rest"] for r in records)
    checkers = [lambda a, it=task.item(r["item"]): task.check(it, a) for r in records]
    pools = None
    if cfg["samples"]:
        pools = [[qlm.Sample(text=s["text"], token_logprobs=tuple(s["token_logprobs"]),
                             finish=s["finish"], token_ids=tuple(s["token_ids"]),
                             end_logprob=s["end_logprob"]) for s in r["samples"]]
                 for r in records]
    bon = {"ns": list(ns)}
    for score in ("likelihood", "checker"):
        pred = {key: [_mean([r["best_of_n"][score][key][j] for r in records])
                      for j in range(len(ns))] for key in ("accuracy", "lo", "hi")}
        bon[score] = {"predicted": pred, "observed": None}
        if pools:
            got = [qlm.observed_best_of_n(pools, n, checkers, score, n_boot=n_boot, seed=seed)
                   for n in ns]
            bon[score]["observed"] = {"accuracy": [g.accuracy for g in got],
                                      "lo": [g.lo for g in got], "hi": [g.hi for g in got],
                                      "groups": [g.groups for g in got]}
    out["best_of_n"] = bon
    sel = records[0]["selection"]
    out["selection"] = {"T_sel": sel["T_sel"], "before": _mean([r["selection"]["before"]
                                                               for r in records])}
    for key in ("error", "lo", "hi"):
        out["selection"][key] = [_mean([r["selection"][key][j] for r in records])
                                 for j in range(len(sel["T_sel"]))]
    temps = []
    for j, row in enumerate(records[0]["temperatures"]):
        rows = [r["temperatures"][j] for r in records]
        t = {"T": row["T"], "tv_predicted": _mean([x["tv"] for x in rows]),
             "tv_predicted_per_prompt": [x["tv"] for x in rows], "observed": None}
        if cfg["samples"]:
            counts = [np.asarray(x["counts"], dtype=np.int64) for x in rows]
            t["observed"] = {
                key: qlm.compare_counts(counts, [np.asarray(x[key]) for x in rows],
                                        n_boot=n_boot, seed=seed).to_dict()
                for key in ("token", "tilt")}
        temps.append(t)
    out["temperatures"] = temps
    return out


def _tree_figures(out: Path, d: dict) -> None:
    from quasirl.plots import _lm_tree as plots
    from quasirl.plots._style import savefig

    savefig(plots.free_energy_figure(d), out / "free_energy.png")
    savefig(plots.best_of_n_figure(d), out / "best_of_n.png")
    savefig(plots.token_tilt_figure(d), out / "token_vs_tilt.png")


def _print_tree(d: dict, console) -> None:
    from rich.table import Table

    s = d["summary"]
    bon = s["best_of_n"]
    t = Table(title=f"{d['lm']}, {d['task']}: {s['n_prompts']} prompts; MAP != greedy "
                    f"{s['map_ne_greedy_rate']:.2f}; rest mass {s['rest_mass_mean']:.3f} "
                    f"(max {s['rest_mass_max']:.3f}); cut mass {s['cut_mass_mean']:.3f}")
    for col in ("N", "likelihood: predicted [bounds]", "observed [95%]",
                "checker: predicted [bounds]", "observed [95%]"):
        t.add_column(col, justify="right")
    for j, n in enumerate(bon["ns"]):
        cells = [str(n)]
        for score in ("likelihood", "checker"):
            p, o = bon[score]["predicted"], bon[score]["observed"]
            cells.append(f"{p['accuracy'][j]:.3f} [{p['lo'][j]:.3f}, {p['hi'][j]:.3f}]")
            cells.append("-" if o is None else _fmt_ci(o["accuracy"][j],
                                                       (o["lo"][j], o["hi"][j])))
        t.add_row(*cells)
    console.print(t)
    t = Table(title="token-level sampling at T vs the sequence-level tilt at T (TV)")
    for col in ("T", "predicted TV(token, tilt)", "observed vs token [95%]",
                "observed vs tilt [95%]", "chi2 p (token, tilt)"):
        t.add_column(col, justify="right")
    for row in s["temperatures"]:
        o = row["observed"]
        if o is None:
            t.add_row(f"{row['T']:g}", f"{row['tv_predicted']:.3f}", "-", "-", "-")
            continue
        tok, til = o["token"], o["tilt"]
        ps = ", ".join("n/a" if x["p_value"] is None else f"{x['p_value']:.2g}"
                       for x in (tok, til))
        t.add_row(f"{row['T']:g}", f"{row['tv_predicted']:.3f}",
                  _fmt_ci(tok["tv"], (tok["tv_lo"], tok["tv_hi"])),
                  _fmt_ci(til["tv"], (til["tv_lo"], til["tv_hi"])), ps)
    console.print(t)


@lm_app.command("tree", help=TREE_HELP, epilog=TREE_EXAMPLE)
def tree_cmd(model: str = typer.Option(
                 "gemma3-270m", help="gemma3-270m | smollm2-135m | PATH.gguf | FOLDER | "
                                     "synthetic-tokens (a seeded token model over the task's "
                                     "answers, for tests)"),
             task: str = _TASK, backend: str = _BACKEND, threads: int = _THREADS,
             out: Path = typer.Option(Path("quasirl-out/lm-tree"),
                                      help="output folder (tree.jsonl, tree.json, PNG)"),
             prompts: int = typer.Option(20, help="prompts (task items, in the split's order)"),
             k: int = typer.Option(4, help="demonstrations in each prompt"),
             depth: int = typer.Option(4, help="tree depth = the samples' max_tokens"),
             top_k: int = typer.Option(None, help="expand the k most probable tokens per "
                                                  "prefix (default 4 unless --min-prob)"),
             min_prob: float = typer.Option(None, help="expand every answer prefix of "
                                                       "probability >= this instead"),
             max_nodes: int = typer.Option(2000, help="refuse a tree with more prefixes"),
             temperatures: str = typer.Option("0.25,0.5,0.75", help="token temperatures T > 0 "
                                              "compared with the sequence tilt at T"),
             samples: int = typer.Option(0, help="samples per prompt and temperature (also at "
                                         "T = 1 for best-of-N); 0: predictions only"),
             best_of: str = typer.Option("1,2,4,8,16", help="N of best-of-N"),
             n_boot: int = typer.Option(1000, help="bootstrap replicates"),
             seed: int = _SEED, quick: bool = _QUICK) -> None:
    """The model's answer trees: exact predictions, checked on its samples (see TREE_HELP)."""
    import jax
    import numpy as np
    from rich.console import Console

    from quasirl.lm import RecordLog, get_task

    if quick:
        prompts, depth, temperatures, samples, n_boot = 2, 3, "0.5", 32, 200
        best_of, top_k, min_prob = "1,2,4,8,16", 3, None
    for option, value, low in (("--prompts", prompts, 1), ("--depth", depth, 1),
                               ("--k", k, 0), ("--samples", samples, 0),
                               ("--max-nodes", max_nodes, 1), ("--n-boot", n_boot, 1)):
        if value < low:
            raise _bad(f"{option} must be >= {low}, got {value}")
    if top_k is not None and min_prob is not None:
        raise _bad("give one of --top-k and --min-prob, not both")
    if min_prob is None and top_k is None:
        top_k = 4
    if top_k is not None and top_k < 1:
        raise _bad(f"--top-k must be >= 1, got {top_k}")
    if min_prob is not None and not (math.isfinite(min_prob) and 0 < min_prob <= 1):
        raise _bad(f"--min-prob must be in (0, 1], got {min_prob}")
    temps = _numbers("--temperatures", temperatures, float, positive=True)
    ns = _numbers("--best-of", best_of, int, minimum=1)
    if 0 < samples < max(ns):
        raise _bad(f"--samples must be 0 or at least the largest --best-of N ({max(ns)}), "
                   f"got {samples}")
    t = get_task(task)
    demos, pool = t.split(8, seed)
    if prompts > len(pool):
        raise _bad(f"--prompts must be <= {len(pool)} (the task's items less 8 "
                   f"demonstrations), got {prompts}")
    if k > len(demos):
        raise _bad(f"--k must be <= {len(demos)}, got {k}")
    items = pool[:prompts]
    if model == "synthetic-tokens":
        lm = _synthetic_tokens(t, (*items, *demos), seed)
    else:
        lm, t = _setup(model, None, task, backend, threads)
    cfg = {"lm": lm.name, "task": t.name, "task_fingerprint": t.fingerprint(), "depth": depth,
           "top_k": top_k, "min_prob": min_prob, "max_nodes": max_nodes, "k": k,
           "n_demos": 8, "temperatures": temps, "samples": samples, "best_of": ns,
           "seed": seed, "stop": list(TREE_STOP)}
    command = (f"quasirl lm tree --model {model} --task {task} --prompts {prompts} --k {k} "
               f"--depth {depth} " + (f"--top-k {top_k}" if top_k is not None
                                      else f"--min-prob {min_prob:g}")
               + f" --max-nodes {max_nodes} --temperatures {','.join(f'{x:g}' for x in temps)}"
               f" --samples {samples} --best-of {','.join(map(str, ns))} --n-boot {n_boot} "
               f"--seed {seed} --out {out}"
               + (f" --backend {backend}" if backend != "llamacpp" else "")
               + (f" --threads {threads}" if threads is not None else ""))
    from tqdm import tqdm

    records = {}
    bar = tqdm(total=prompts, desc="lm tree", file=sys.stderr, leave=False, mininterval=1.0)
    with jax.enable_x64(True), RecordLog(out / "tree.jsonl", cfg, ("prompt",)) as log, bar:
        for r in log.records:
            records[r["prompt"]] = r
        for i, item in enumerate(items):
            if not log.has(i):
                rng = np.random.default_rng([seed, 18, i])
                ctx = [demos[j] for j in sorted(rng.choice(len(demos), size=k, replace=False))]
                prompt = t.prompt(item, [(d, d.answer) for d in ctx])
                rec = _tree_record(lm, i, item, prompt,
                                   lambda a, it=item: t.check(it, a), cfg)
                log.append(rec)
                records[i] = rec
            bar.update(1)
        recs = [records[i] for i in range(prompts)]
        summary = _tree_summary(recs, t, {**cfg, "n_boot": n_boot})
    d = {"command": command, "lm": lm.name, "task": t.name, "config": cfg,
         "summary": summary, "prompts": recs}
    _write(out, "tree.json", d)
    _tree_figures(out, d)
    console = Console()
    _print_tree(d, console)
    console.print(f"records, JSON and figures in {out}/ ({command})")


def register(app: typer.Typer) -> None:
    """Add ``quasirl lm ...`` to the main app."""
    app.add_typer(lm_app, name="lm")
