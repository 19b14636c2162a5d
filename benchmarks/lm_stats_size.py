"""Size and coverage of Exp 3's statistics on SyntheticLM with per-query difficulty (issue 17).

Each seed runs the real pipeline on a synthetic model whose truth is known and for which the
recurrence's assumptions hold (g linear on average over queries, evaluator rates independent
of difficulty): Exp 1 (calibration), Exp 2 (transfer), the prediction, then the four chaining
arms of Exp 3 and ``compare``. Two designs:

* ``legacy`` (default): the building blocks without pools, Exp 1 100 queries x 2, Exp 2 50 x 2
  with gold contexts (Exp 1 and Exp 3 share queries, as before issue 17);
* ``pools``: ``quasirl.lm.validate.validate`` itself with its defaults (disjoint pools drawn
  by the seed, Exp 1 40 x 4 split by the pools' halves, Exp 2 24 x 2 from Exp 1's answers).

Both: Exp 3 rounds 0-3 x 30 queries x 4 samples, signal ``likelihood``. Recorded per seed:
the joint contrast test's p-value, the per-contrast criterion, and whether each interval
covers what it claims to:

* ``contrast_total``: observed contrast inside predicted +- 1.96 sd_total (the analysis-time
  predictive interval: parameter draws + query cluster bootstrap carried through g);
* ``contrast_prerun``: observed contrast inside the pre-registered predictive interval;
* ``arm_prerun``: observed eps_n inside the arm's pre-registered predictive band, round 0
  included (once);
* ``round0_cluster_ci``: the cluster bootstrap interval of eps_0 covers the true g(0);
* ``slope_ci``: the calibration slope's interval covers 1.

Usage: ``python -m benchmarks.lm_stats_size [--seeds 200] [--difficulty-sd 1.0] [--design
legacy|pools]``. Writes ``benchmarks/results/lm_stats_size.json`` (``lm_stats_size.pools.json``
for the pools design) and prints a table. About 1-3 s per seed on one core.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

TRUE = {"eps0": 0.4, "tpr": 0.8, "fpr": 0.3, "lam": 0.5}
Z95 = 1.959963984540054


DESIGNS = {
    "legacy": {"exp1": "100 queries x 2", "exp2": "5 b x 50 queries x 2, gold contexts",
               "exp3": "4 arms x rounds 0-3 x 30 queries x 4", "signal": "likelihood",
               "pools": "none (Exp 1 and Exp 3 share queries)", "n_boot": 400},
    "pools": {"exp1": "40 queries x 4, split by the pools' halves",
              "exp2": "5 b x 24 queries x 2, Exp 1 answers as contexts",
              "exp3": "4 arms x rounds 0-3 x 30 queries x 4", "signal": "likelihood",
              "pools": "disjoint, drawn by the seed (validate's defaults)", "n_boot": 400},
}


def _trajectory(seed: int, difficulty_sd: float, n_boot: int, design: str):
    import quasirl.lm as qlm
    from quasirl.lm import validate as V

    task = qlm.capitals()
    lm = qlm.SyntheticLM(task, seed=seed, difficulty_sd=difficulty_sd, **TRUE)
    if design == "pools":
        with tempfile.TemporaryDirectory() as out:
            return lm, V.validate(lm, task, out, signals=("likelihood",), n_boot=n_boot,
                                  seed=seed).trajectory
    r1 = V.collect_calibration(lm, task, signals=("likelihood",), n_queries=100,
                               samples_per_query=2, seed=seed)
    cal = V.analyze_calibration(r1, n_boot=n_boot, seed=seed)
    r2 = V.collect_transfer(lm, task, n_queries=50, samples_per_query=2, seed=seed)
    tr = V.analyze_transfer(r2, n_boot=n_boot, seed=seed)
    return lm, V.trajectory(lm, task, cal, tr, signal="likelihood", rounds=3,
                            queries_per_round=30, samples_per_query=4, seed=seed)


def one_seed(seed: int, difficulty_sd: float, n_boot: int = 400, design: str = "legacy") -> dict:
    lm, tj = _trajectory(seed, difficulty_sd, n_boot, design)
    c, p = tj.comparison, tj.prediction
    inside_total, inside_pre = [], []
    for name, cc in c.contrasts.items():
        obs, pred, sd = (np.asarray(x) for x in (cc.observed, cc.predicted, cc.sd_total))
        inside_total += list(np.abs(obs - pred) <= Z95 * sd)
        lo, hi = (np.asarray(x) for x in p.contrasts[name].predictive)
        inside_pre += list((obs >= lo) & (obs <= hi))
    g0 = (1 - TRUE["lam"]) * lm.marginal_eps0
    lo0, hi0 = c.arms["unfiltered"].cluster_ci[0][0], c.arms["unfiltered"].cluster_ci[1][0]
    n_cov, n_pts = (int(x) for x in c.coverage.split("/"))
    return {"seed": seed, "p_value": c.p_value, "chi2": c.chi2, "dof": c.dof,
            "effective_dof": c.effective_dof, "slope": c.calibration_slope,
            "each_contrast": next(r.passed for r in c.criteria if r.name == "each_contrast"),
            "contrast_total": [bool(x) for x in inside_total],
            "contrast_prerun": [bool(x) for x in inside_pre],
            "arm_prerun": [n_cov, n_pts], "round0_cluster_ci": bool(lo0 <= g0 <= hi0),
            "slope_ci": bool(c.calibration_slope_ci[0] <= 1 <= c.calibration_slope_ci[1]),
            "chi2_independent": c.chi2_independent}


def summarize(rows: list[dict]) -> dict:
    p = np.array([r["p_value"] for r in rows], dtype=np.float64)
    n = len(rows)

    def rate(x):
        x = np.asarray(x, dtype=np.float64)
        return {"rate": float(x.mean()), "mc_se": float(np.sqrt(x.mean() * (1 - x.mean())
                                                                 / x.size)), "n": int(x.size)}

    arm = np.array([r["arm_prerun"] for r in rows])
    return {
        "seeds": n,
        "joint_reject_at_0.05": rate(p < 0.05),
        "joint_reject_at_0.10": rate(p < 0.10),
        "each_contrast_fail": rate([not r["each_contrast"] for r in rows]),
        "contrast_total_cover_95": rate([x for r in rows for x in r["contrast_total"]]),
        "contrast_prerun_cover_95": rate([x for r in rows for x in r["contrast_prerun"]]),
        "arm_prerun_cover_95": {"rate": float(arm[:, 0].sum() / arm[:, 1].sum()),
                                "n": int(arm[:, 1].sum())},
        "round0_cluster_ci_cover_95": rate([r["round0_cluster_ci"] for r in rows]),
        "slope_ci_cover_1": rate([r["slope_ci"] for r in rows]),
        "mean_chi2_over_dof": float(np.mean([r["chi2"] / r["dof"] for r in rows])),
        "mean_effective_dof": float(np.mean([r["effective_dof"] for r in rows])),
        "mean_slope": float(np.mean([r["slope"] for r in rows])),
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--difficulty-sd", type=float, default=1.0)
    ap.add_argument("--design", choices=sorted(DESIGNS), default="legacy")
    ap.add_argument("--out", default=None, help="default: benchmarks/results/"
                    "lm_stats_size.json (lm_stats_size.pools.json for --design pools)")
    ap.add_argument("--summarize-only", action="store_true",
                    help="summarise the seeds already in the cache, run none")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = str(Path(__file__).parent / "results" / (
            "lm_stats_size.json" if args.design == "legacy" else "lm_stats_size.pools.json"))
    t0 = time.perf_counter()
    # one JSON line per seed, appended as each finishes: a long run can be stopped and resumed
    cache = Path(args.out).with_suffix(f".sd{args.difficulty_sd:g}.jsonl")
    cache.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if cache.exists():
        for line in cache.read_text().splitlines():
            r = json.loads(line)
            done[r["seed"]] = r
    if not args.summarize_only:
        for s in range(args.seeds):
            if s not in done:
                done[s] = one_seed(s, args.difficulty_sd, design=args.design)
                with cache.open("a") as fh:
                    fh.write(json.dumps(done[s]) + "\n")
    rows = [done[s] for s in sorted(done) if s < args.seeds]
    summary = summarize(rows)
    summary.update(truth=TRUE, difficulty_sd=args.difficulty_sd, design=DESIGNS[args.design],
                   seconds=round(time.perf_counter() - t0, 1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "per_seed": rows}, indent=1)
                              + "\n")
    print(f"{'statistic':32s} {'rate':>8s} {'MC s.e.':>8s} {'n':>6s}")
    for k, v in summary.items():
        if isinstance(v, dict) and "rate" in v:
            print(f"{k:32s} {v['rate']:8.3f} {v.get('mc_se', float('nan')):8.3f} {v['n']:6d}")
    print(f"mean Q/dof {summary['mean_chi2_over_dof']:.3f}, mean effective dof "
          f"{summary['mean_effective_dof']:.2f}, mean slope {summary['mean_slope']:.3f}; "
          f"{summary['seconds']} s; -> {args.out}")
    return summary


if __name__ == "__main__":
    main()
