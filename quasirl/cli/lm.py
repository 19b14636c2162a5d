"""`quasirl lm calibrate | transfer | run | validate | summary`: the language-model bridge."""

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
    "prompts'): pass --signals likelihood,gold, or see `quasirl lm --help`.")


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
                 split_seed: int = _SPLIT_SEED, quick: bool = _QUICK) -> None:
    """Exp 1, Exp 2, then Exp 3 on disjoint query pools (see VALIDATE_HELP)."""
    from rich.console import Console

    from quasirl.lm import validate as V

    _finite("--temperature", temperature, 0.0)
    lm, t = _setup(model, server, task, backend, threads, timeout, retry_budget)
    if quick:
        exp1_queries, exp1_samples, exp2_queries, exp2_samples = 10, 2, 6, 1
        rounds, queries, samples, n_boot = 2, 4, 2, 200
    sig = tuple(x.strip() for x in signals.split(",") if x.strip())
    res = V.validate(lm, t, out, signal=signal, signals=sig, acceptance=acceptance,
                     exp1_queries=exp1_queries, exp1_samples=exp1_samples,
                     exp2_queries=exp2_queries, exp2_samples=exp2_samples, rounds=rounds,
                     queries_per_round=queries, samples_per_query=samples, n_boot=n_boot,
                     temperature=temperature, seed=seed, split_seed=split_seed,
                     progress_factory=_progress)
    _figures(out, res.calibration, res.transfer, res.trajectory)
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


def register(app: typer.Typer) -> None:
    """Add ``quasirl lm ...`` to the main app."""
    app.add_typer(lm_app, name="lm")
