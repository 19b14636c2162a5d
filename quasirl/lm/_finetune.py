"""Slow adaptation: train the model on the answers selection kept (the weights channel).

Training on kept samples is rejection-sampling fine-tuning / expert iteration / STaR / ReST-EM,
and it is where "selecting on a model's outputs is RL" holds literally: with samples a_i ~ pi and
weights w_i = w(f(q_i, a_i)), the update follows

    grad J = sum_i w_i grad log pi(a_i | q_i) / sum_i w_i,

the REINFORCE gradient of E_pi[w] without a baseline (self-normalised). Hard filtering is the
special case w in {0, 1}; soft selection with fitness exp(f / T_sel) is the general one
(:func:`fitness_weights`, with its T_sel = 0 max-plus branch).

:class:`FineTuner` trains a :class:`~quasirl.lm.TransformersLM` in place, with LoRA adapters
(``peft``) or all weights, so the same object samples from the trained model afterwards.
Everything is seeded: the adapter's initial weights, the order of the pairs and the batches; a
fit started from the same weights with the same seed gives the same weights bit for bit (on the
same machine and thread count). :meth:`FineTuner.save` / :meth:`FineTuner.load` write and read
the trainable weights (safetensors) atomically, which is what lets a training loop resume from
its last finished round.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .._validate import QuasirlValueError, check_int
from ._types import check_number

METHODS = ("lora", "full")
_STATE_FILE = "trainable.safetensors"
_CONFIG_FILE = "finetune.json"


def fitness_weights(f, mode: str = "hard", *, threshold: float = 0.5,
                    t_sel: float = 1.0) -> np.ndarray:
    """Training weights from fitness values f in [0, 1].

    ``hard``: w = 1 where f >= threshold, else 0 (rejection sampling). ``soft``: w =
    exp(f / t_sel), computed as exp((f - max f) / t_sel) (the scale cancels in the update);
    t_sel = 0 is the max-plus limit: w = 1 on the answers of largest fitness, 0 elsewhere.
    """
    f = np.asarray(f, dtype=np.float64)
    if f.ndim != 1 or f.size == 0:
        raise QuasirlValueError(f"f must be a non-empty 1-d array, got shape {f.shape}")
    bad = np.flatnonzero(~((f >= 0) & (f <= 1)))
    if bad.size:
        raise QuasirlValueError(f"f[{bad[0]}] = {float(f[bad[0]])!r} must lie in [0, 1]")
    if mode == "hard":
        check_number("threshold", threshold)
        return (f >= threshold).astype(np.float64)
    if mode == "soft":
        t_sel = check_number("t_sel", t_sel, 0.0)
        if t_sel == 0.0:
            return (f == f.max()).astype(np.float64)
        return np.exp((f - f.max()) / t_sel)
    raise QuasirlValueError(f"mode must be 'hard' or 'soft', got {mode!r}")


def _check_weights(weights, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise QuasirlValueError(f"weights must have shape ({n},) (one per pair), got {w.shape}")
    bad = np.flatnonzero(~(np.isfinite(w) & (w >= 0)))
    if bad.size:
        raise QuasirlValueError(f"weights[{bad[0]}] = {float(w[bad[0]])!r} must be finite and "
                                ">= 0")
    if not np.any(w > 0):
        raise QuasirlValueError("weights are all 0: there is nothing to train on")
    return w


@dataclass
class FitReport:
    """What one :meth:`FineTuner.fit` did.

    ``loss_before`` / ``loss_after``: the weighted mean negative log-likelihood per pair of the
    training pairs (answer tokens and the end marker), before and after; ``losses``: the
    training loss of each step; ``n_pairs``: pairs with weight > 0; ``n_tokens``: their answer
    tokens; ``seconds``: wall time of the fit (not of the two loss evaluations).
    """

    n_pairs: int
    n_tokens: int
    steps: int
    loss_before: float
    loss_after: float
    seconds: float
    losses: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class FineTuner:
    """Trains a :class:`~quasirl.lm.TransformersLM` on weighted (prompt, answer) pairs.

    Args:
      lm: the model; it is modified in place (LoRA wraps its network with ``peft``).
      method: ``"lora"`` (adapters on ``target_modules``) or ``"full"`` (every weight).
      rank, alpha, target_modules: the LoRA adapters (alpha / rank scales them).
      lr, epochs, batch_size, weight_decay, max_grad_norm: AdamW with a constant rate; a fresh
        optimiser for every :meth:`fit` (a round of the loop starts from the last round's
        weights, not its optimiser state).
      steps: a fixed number of optimiser steps instead of ``epochs`` (the pairs are walked in
        fresh orders as often as needed), so buffers of any size get the same budget.
      end: the string that ends an answer in the prompt format; its first token is trained
        after every answer, so the model learns where answers stop (as the sampler reads it).
      seed: seeds the adapters' initial weights; each fit's data order uses ``fit(seed=)``.

    Each pair's loss is the negative log-likelihood of its answer tokens and end token after
    its prompt (split tokenisation, as the sampler generates). Pairs of weight 0 are dropped
    before batching, so 0/1 weights train exactly as the kept subset would; the remaining
    weights are divided by their mean, so equal weights train exactly as no weights.
    """

    def __init__(self, lm, method: str = "lora", *, rank: int = 8, alpha: float = 16.0,
                 target_modules: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj"),
                 lr: float | None = None, epochs: int = 2, steps: int | None = None,
                 batch_size: int = 8,
                 weight_decay: float = 0.0, max_grad_norm: float = 1.0, end: str = "\n",
                 seed: int = 0):
        if not hasattr(lm, "model") or not hasattr(lm, "torch"):
            raise QuasirlValueError(
                f"lm must be a TransformersLM (load(..., backend='transformers')), got "
                f"{type(lm).__name__}")
        if method not in METHODS:
            raise QuasirlValueError(f"method must be one of {METHODS}, got {method!r}")
        if getattr(lm, "_tuner", None) is not None:
            raise QuasirlValueError(f"lm {lm.name} already has a FineTuner: call its remove() "
                                    "before making another")
        self.lm = lm
        self.method = method
        self.rank = check_int("rank", rank, 1)
        self.alpha = check_number("alpha", alpha, 0.0)
        self.target_modules = tuple(target_modules)
        self.lr = check_number("lr", lr if lr is not None else
                               (1e-3 if method == "lora" else 2e-5), 0.0)
        self.epochs = check_int("epochs", epochs, 1)
        self.steps = None if steps is None else check_int("steps", steps, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.weight_decay = check_number("weight_decay", weight_decay, 0.0)
        self.max_grad_norm = check_number("max_grad_norm", max_grad_norm, 0.0)
        if not isinstance(end, str):
            raise QuasirlValueError(f"end must be a string, got {end!r}")
        self.end = end
        self.seed = int(seed)
        torch = lm.torch
        self.torch = torch
        if method == "lora":
            from peft import LoraConfig, get_peft_model

            torch.manual_seed(self.seed)
            cfg = LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=0.0,
                             target_modules=list(self.target_modules), bias="none",
                             task_type="CAUSAL_LM")
            lm.model = get_peft_model(lm.model, cfg)
        else:
            for p in lm.model.parameters():
                p.requires_grad_(True)
        lm.model.eval()
        lm._tuner = self
        self._params = {n: p for n, p in lm.model.named_parameters() if p.requires_grad}
        if not self._params:
            raise QuasirlValueError(f"target_modules {self.target_modules} matched no weight "
                                    f"of {lm.name}")
        self._initial = {n: p.detach().clone() for n, p in self._params.items()}
        self._fast_head: bool | None = None  # decided on the first batch (_answer_logits)
        self._end_ids = lm.tokenize(end, bos=False)[:1] if end else []
        pad = lm.tok.pad_token_id
        self._pad = int(pad if pad is not None else lm.tok.eos_token_id or 0)

    # -- configuration and state -----------------------------------------------------------
    def config(self) -> dict:
        return {"method": self.method, "rank": self.rank, "alpha": self.alpha,
                "target_modules": list(self.target_modules), "lr": self.lr,
                "epochs": self.epochs, "steps": self.steps, "batch_size": self.batch_size,
                "weight_decay": self.weight_decay, "max_grad_norm": self.max_grad_norm,
                "end": self.end, "seed": self.seed, "model": self.lm.name}

    @property
    def n_trainable(self) -> int:
        return int(sum(p.numel() for p in self._params.values()))

    def state(self) -> dict:
        """The trainable weights (name -> a CPU copy)."""
        return {n: p.detach().cpu().clone() for n, p in self._params.items()}

    def reset(self) -> None:
        """Back to the weights the tuner started from (the base model, fresh adapters)."""
        self._assign(self._initial, "the initial state")

    def _assign(self, state: dict, where: str) -> None:
        torch = self.torch
        missing = sorted(set(self._params) - set(state))
        extra = sorted(set(state) - set(self._params))
        if missing or extra:
            raise QuasirlValueError(
                f"{where} does not match this tuner's weights: missing {missing[:3]}, "
                f"unexpected {extra[:3]}")
        with torch.no_grad():
            for n, p in self._params.items():
                v = state[n]
                if tuple(v.shape) != tuple(p.shape):
                    raise QuasirlValueError(f"{where}: {n} has shape {tuple(v.shape)}, "
                                            f"expected {tuple(p.shape)}")
                p.copy_(v.to(device=p.device, dtype=p.dtype))
        self._forget_cache()

    def remove(self) -> None:
        """Give the model back as it was before this tuner: base weights, no adapters."""
        self.reset()
        if self.method == "lora":
            self.lm.model = self.lm.model.unload().eval()
        self.lm._tuner = None
        self._forget_cache()

    def _forget_cache(self) -> None:
        self.lm._past = None
        self.lm._ids = []

    def save(self, folder, info: dict | None = None) -> Path:
        """Write the trainable weights, the configuration and ``info`` (``info.json``) to
        ``folder``, atomically: a killed save leaves no folder."""
        from safetensors.torch import save_file

        folder = Path(folder)
        tmp = folder.with_name(folder.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({n: v.contiguous() for n, v in self.state().items()}, str(tmp / _STATE_FILE))
        (tmp / _CONFIG_FILE).write_text(json.dumps(self.config(), indent=1) + "\n")
        if info is not None:
            (tmp / "info.json").write_text(json.dumps(info, indent=1) + "\n")
        with open(tmp / _STATE_FILE, "rb") as fh:
            os.fsync(fh.fileno())
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        return folder

    def load(self, folder) -> None:
        """Read weights written by :meth:`save` (the method and adapters must match)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        path = folder / _STATE_FILE
        if not path.is_file():
            raise QuasirlValueError(f"folder {str(folder)!r} holds no saved weights "
                                    f"({_STATE_FILE})")
        cfg = json.loads((folder / _CONFIG_FILE).read_text())
        for key in ("method", "rank", "target_modules"):
            if cfg.get(key) != self.config()[key]:
                raise QuasirlValueError(f"folder {str(folder)!r} was saved with {key} = "
                                        f"{cfg.get(key)!r}, this tuner has "
                                        f"{self.config()[key]!r}")
        self._assign(load_file(str(path)), f"folder {str(folder)!r}")

    # -- data ------------------------------------------------------------------------------
    def _encode(self, prompts, answers) -> list[tuple[list[int], list[int]]]:
        if len(prompts) != len(answers):
            raise QuasirlValueError(f"prompts and answers must have the same length, got "
                                    f"{len(prompts)} and {len(answers)}")
        if not prompts:
            raise QuasirlValueError("prompts must not be empty")
        out = []
        for i, (p, a) in enumerate(zip(prompts, answers, strict=True)):
            if not isinstance(p, str) or not p:
                raise QuasirlValueError(f"prompts[{i}] must be a non-empty string, got {p!r}")
            if not isinstance(a, str):
                raise QuasirlValueError(f"answers[{i}] must be a string, got {a!r}")
            cont = (self.lm.tokenize(a, bos=False) if a else []) + self._end_ids
            if not cont:
                raise QuasirlValueError(f"answers[{i}] is empty and end is '': there is no "
                                        "token to train")
            out.append((self.lm.tokenize(p, bos=True), cont))
        return out

    def _batch(self, seqs):
        torch = self.torch
        n = max(len(p) + len(c) for p, c in seqs)
        ids = np.full((len(seqs), n), self._pad, dtype=np.int64)
        mask = np.zeros((len(seqs), n), dtype=np.int64)
        labels = np.full((len(seqs), n), -100, dtype=np.int64)
        for i, (p, c) in enumerate(seqs):
            ids[i, :len(p) + len(c)] = p + c
            mask[i, :len(p) + len(c)] = 1
            labels[i, len(p):len(p) + len(c)] = c
        dev = self.lm.device
        return (torch.from_numpy(ids).to(dev), torch.from_numpy(mask).to(dev),
                torch.from_numpy(labels).to(dev))

    def _nll(self, seqs):
        """Negative log-likelihood of each sequence's answer tokens (a tensor [len(seqs)])."""
        torch = self.torch
        ids, mask, labels = self._batch(seqs)
        tgt = labels[:, 1:]
        at = tgt != -100
        # only the rows that score an answer token, normalised in float64 (a float32
        # log-softmax over the vocabulary is off by ~1e-4 nats per token)
        rows = torch.log_softmax(self._answer_logits(ids, mask, at).double(), dim=-1)
        lp = rows.gather(1, tgt[at].unsqueeze(1)).squeeze(1)
        seq = at.nonzero()[:, 0]
        return torch.zeros(len(seqs), dtype=lp.dtype, device=lp.device).index_add(0, seq, -lp)

    def _answer_logits(self, ids, mask, at):
        """Logits at the positions ``at`` [B, L - 1] (those followed by an answer token).

        The output layer is applied to those positions only (with the model's logit
        soft-capping, if any): for a 262k-token vocabulary (Gemma 3) the full logits of a
        batch are most of a step's time and memory. The shortcut is checked once against the
        model's own forward pass and dropped if they differ (a model that post-processes its
        logits in another way)."""
        torch = self.torch
        if self._fast_head is not False:
            causal = self.lm.model
            causal = causal.get_base_model() if hasattr(causal, "get_base_model") else causal
            body, head = getattr(causal, "model", None), causal.get_output_embeddings()
            if body is not None and head is not None:
                hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
                logits = head(hidden[at])
                cap = getattr(causal.config, "final_logit_softcapping", None)
                if cap:
                    logits = torch.tanh(logits / cap) * cap
                if self._fast_head is None:
                    with torch.no_grad():
                        full = self.lm.model(input_ids=ids, attention_mask=mask).logits
                        err = float((full[:, :-1][at] - logits).abs().max())
                    self._fast_head = err <= 1e-3 * max(1.0, float(full.abs().max()))
                if self._fast_head:
                    return logits
            self._fast_head = False
        return self.lm.model(input_ids=ids, attention_mask=mask).logits[:, :-1][at]

    def pair_nll(self, prompts, answers) -> np.ndarray:
        """Negative log-likelihood of each answer (and its end token) after its prompt."""
        seqs = self._encode(list(prompts), list(answers))
        out = []
        with self.torch.no_grad():
            for s in range(0, len(seqs), self.batch_size):
                out.append(self._nll(seqs[s:s + self.batch_size]).double().cpu().numpy())
        return np.concatenate(out)

    def loss(self, prompts, answers, weights=None) -> float:
        """The training objective: sum_i w_i nll_i / sum_i w_i."""
        w = _check_weights(weights, len(prompts))
        keep = w > 0
        nll = self.pair_nll([p for p, k in zip(prompts, keep, strict=True) if k],
                            [a for a, k in zip(answers, keep, strict=True) if k])
        return float(np.sum(w[keep] * nll) / np.sum(w[keep]))

    # -- training --------------------------------------------------------------------------
    def _batches(self, n: int, rng):
        """Index batches: whole passes in fresh orders (``epochs``, or until ``steps``)."""
        done = 0
        for epoch in range(10**9):
            if self.steps is None and epoch == self.epochs:
                return
            order = rng.permutation(n)
            for s in range(0, n, self.batch_size):
                if self.steps is not None and done == self.steps:
                    return
                done += 1
                yield order[s:s + self.batch_size]

    def fit(self, prompts, answers, weights=None, *, seed: int = 0) -> FitReport:
        """Train on the pairs: ``epochs`` passes (or ``steps`` batches), each pass in an order
        drawn from ``seed``, with weights (default: all 1) normalised to mean 1 over the pairs
        of positive weight."""
        torch = self.torch
        prompts, answers = list(prompts), list(answers)
        w = _check_weights(weights, len(prompts))
        keep = np.flatnonzero(w > 0)
        seqs_all = self._encode(prompts, answers)
        seqs = [seqs_all[i] for i in keep]
        wn = w[keep] / np.mean(w[keep])
        before = self.loss([prompts[i] for i in keep], [answers[i] for i in keep], w[keep])
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(seed), 0xF17]))
        opt = torch.optim.AdamW([p for p in self._params.values()], lr=self.lr,
                                weight_decay=self.weight_decay)
        losses = []
        t0 = time.perf_counter()
        self.lm.model.train()
        try:
            for idx in self._batches(len(seqs), rng):
                nll = self._nll([seqs[i] for i in idx])
                wt = torch.as_tensor(wn[idx], dtype=nll.dtype, device=nll.device)
                loss = (wt * nll).sum() / len(idx)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if self.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(list(self._params.values()),
                                                   self.max_grad_norm)
                opt.step()
                val = float(loss.detach())
                if not np.isfinite(val):
                    raise QuasirlValueError(
                        f"the training loss became {val} at step {len(losses)} (lr = "
                        f"{self.lr}); lower lr")
                losses.append(val)
        finally:
            self.lm.model.eval()
            self._forget_cache()
        seconds = time.perf_counter() - t0
        after = self.loss([prompts[i] for i in keep], [answers[i] for i in keep], w[keep])
        return FitReport(n_pairs=len(seqs), n_tokens=int(sum(len(c) for _, c in seqs)),
                         steps=len(losses), loss_before=before, loss_after=after,
                         seconds=seconds, losses=losses)
