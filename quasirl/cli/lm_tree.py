"""`quasirl lm tree`: a model's answer trees as exact MDPs, checked on its own samples."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import typer

from ._lm_common import (
    _BACKEND,
    _QUICK,
    _SEED,
    _TASK,
    _THREADS,
    _bad,
    _finite,
    _fmt_ci,
    _setup,
    _write,
    lm_app,
)

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
    "tree.json holds the records (their raw samples only in tree.jsonl), the summary and the "
    "command; figures: free_energy.png, best_of_n.png, token_vs_tilt.png.")
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
    out["selection"]["observed"] = None if not pools else qlm.observed_selection_error(
        pools, sel["T_sel"], checkers, n_boot=n_boot, seed=seed).to_dict()
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
    # the raw samples stay in tree.jsonl only (they are most of a record's size)
    d = {"command": command, "lm": lm.name, "task": t.name, "config": cfg,
         "summary": summary, "samples_in": "tree.jsonl",
         "prompts": [{k: v for k, v in r.items() if k != "samples"} for r in recs]}
    _write(out, "tree.json", d)
    _tree_figures(out, d)
    console = Console()
    _print_tree(d, console)
    console.print(f"records, JSON and figures in {out}/ ({command})")
