"""What the `quasirl lm ...` commands share: the command group, its options, model set-up,
option checks and progress bars."""

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


def _write(out: Path, name: str, obj) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / name, obj, indent=1, sort_keys=True)
