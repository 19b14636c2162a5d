"""Typed results of the three experiments, each with ``to_dict`` for its JSON file.

The JSON keys are the field names, except ``passed``, written as ``"pass"`` (a Python keyword).
Fields marked ``json=False`` (bootstrap draws) stay out of the JSON: they feed
:func:`predict_trajectory` only. Intervals are (lo, hi) pairs; sequences are tuples.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from .._chaining import ChainResult

Interval = tuple[float, float]


def _draws():
    """A field of bootstrap draws: not compared, not shown, not written to JSON."""
    return field(repr=False, compare=False, metadata={"json": False})


def _plain(x):
    """JSON-ready: dataclasses via to_dict, tuples and arrays as lists, numpy scalars as
    Python numbers."""
    if hasattr(x, "to_dict"):
        return x.to_dict()
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple | np.ndarray):
        return [_plain(v) for v in x]
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    return x


def floats(x) -> tuple[float, ...]:
    """A sequence of numbers as a tuple of Python floats."""
    return tuple(float(v) for v in np.ravel(x))


class _JSON:
    """``to_dict`` for the result dataclasses: field name -> value, ``passed`` as "pass"."""

    def to_dict(self) -> dict:
        return {("pass" if f.name == "passed" else f.name): _plain(getattr(self, f.name))
                for f in fields(self) if f.metadata.get("json", True)}


# ----------------------------------------------------------------------------------------------
# Exp 1
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BayesCheck(_JSON):
    """One-step Bayes check: w predicted from held-out quarter B1, observed on quarter B2."""

    w_predicted: float
    w_predicted_ci: Interval  # parameter uncertainty of the prediction
    w_predictive: Interval  # 95% predictive interval of the observed w
    w_observed: float
    w_observed_wilson: Interval
    accepted_observed: float
    n_predict_samples: int
    n_observe_samples: int
    passed: bool | None  # None when either quarter cannot say


@dataclass(frozen=True)
class SignalCalibration(_JSON):
    """One fitness signal in Exp 1: AUROC, operating threshold, held-out TPR / FPR, Bayes check."""

    auroc: float
    auroc_ci: Interval
    informative: bool  # the AUROC interval lies above 1/2
    threshold: float | None  # None with soft acceptance
    tpr: float
    tpr_ci: Interval
    fpr: float
    fpr_ci: Interval
    accept_rate_heldout: float
    mean_fitness_correct: float | None
    mean_fitness_wrong: float | None
    bayes: BayesCheck
    tpr_draws: np.ndarray = _draws()
    fpr_draws: np.ndarray = _draws()
    # the check in place before the results commit (6e457f4): w predicted from the
    # calibration half (where the threshold was chosen), observed on the held-out half
    bayes_calibration_half: BayesCheck | None = None


@dataclass(frozen=True)
class Roc(_JSON):
    """ROC curve of one signal: FPR and TPR as the threshold falls."""

    fpr: tuple[float, ...]
    tpr: tuple[float, ...]


@dataclass(frozen=True)
class Calibration(_JSON):
    """Exp 1 results: error rate eps and, per signal, AUROC, TPR / FPR and the Bayes check.

    ``eps_draws`` and each signal's ``tpr_draws`` / ``fpr_draws`` are bootstrap draws aligned
    by index, used by :func:`predict_trajectory`.
    """

    n_samples: int
    n_queries: int
    eps: float
    eps_wilson: Interval
    eps_ci: Interval
    icc: float  # intraclass correlation of wrong answers within a query
    samples_per_query: float
    acceptance: str  # "hard" or "soft"
    signals: dict[str, SignalCalibration]
    roc: dict[str, Roc]
    eps_draws: np.ndarray = _draws()


# ----------------------------------------------------------------------------------------------
# Exp 2
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transfer(_JSON):
    """Exp 2 results: eps_next(b) per wrong fraction b and the fit g(b) = a + lam b."""

    bs: tuple[float, ...]
    n: tuple[int, ...]
    eps: tuple[float, ...]
    eps_wilson_lo: tuple[float, ...]
    eps_wilson_hi: tuple[float, ...]
    a: float
    a_ci: Interval
    lam: float
    lam_ci: Interval
    eps_star: float | None  # fixed point a / (1 - lam); None when lam = 1
    eps_star_ci: Interval
    chi2: float
    dof: int
    p_value: float | None
    imitates: bool  # the lam interval lies above 0
    passed: bool | None
    a_draws: np.ndarray = _draws()
    lam_draws: np.ndarray = _draws()

    def g(self, b):
        """The fitted transfer function a + lam b."""
        return self.a + self.lam * np.asarray(b, dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# Exp 3
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ingredients(_JSON):
    """The measured numbers a prediction starts from (Exp 1: eps0, TPR, FPR; Exp 2: g)."""

    eps0: float
    tpr: float
    fpr: float
    a: float
    lam: float
    eps_star: float | None


@dataclass(frozen=True)
class ArmPrediction(_JSON):
    """Predicted eps_0 .. eps_R of one arm: point, 95% bands (lo, hi per round) and sd."""

    point: tuple[float, ...]
    band: tuple[tuple[float, ...], tuple[float, ...]]  # parameter uncertainty
    predictive: tuple[tuple[float, ...], tuple[float, ...]]  # adds an observed round's noise
    sd: tuple[float, ...]  # predictive standard deviation


@dataclass(frozen=True)
class ContrastPrediction(_JSON):
    """A paired contrast eps_n(first arm) - eps_n(second arm), rounds 1 .. R (at round 0 the
    arms share their samples, so the contrast is 0 by construction).

    ``band``/``sd_param``: the ingredients' uncertainty alone (bootstrap draws of Exp 1 and
    Exp 2); ``predictive``/``sd``: adds the sampling noise expected before the run (arms
    sampled independently on shared queries, so the queries' difficulty cancels). The pass
    criteria use ``sd_param`` with the sampling covariance measured on the run itself (query
    cluster bootstrap), see :class:`Criterion`.
    """

    arms: tuple[str, str]
    rounds: tuple[int, ...]
    point: tuple[float, ...]
    band: tuple[tuple[float, ...], tuple[float, ...]]
    sd_param: tuple[float, ...]
    predictive: tuple[tuple[float, ...], tuple[float, ...]]
    sd: tuple[float, ...]


@dataclass(frozen=True)
class Criterion(_JSON):
    """A pass/fail criterion stated before the run: its name, the statistic, the rule, alpha."""

    name: str
    statistic: str
    rule: str
    alpha: float


@dataclass(frozen=True)
class Prediction(_JSON):
    """Predicted eps_0 .. eps_R per arm (point, parameter band, predictive band, 95%), the
    paired contrasts between arms with their parameter covariance, and the pass criteria.

    ``contrast_param_cov`` is the covariance, over the ingredients' bootstrap draws, of all
    contrasts stacked in the order of ``contrasts`` and then rounds; ``arm_param_cov`` the same
    for every arm's eps_0 .. eps_R, stacked in the order of ``arms`` and then rounds.
    ``criteria`` are evaluated by :func:`compare`; the first is the primary test.
    """

    signal: str
    rounds: int
    queries_per_round: int
    samples_per_query: int
    design_effect: float
    ingredients: Ingredients
    undefined_rates_set_to_half: tuple[str, ...]
    arms: dict[str, ArmPrediction]
    contrasts: dict[str, ContrastPrediction] = field(default_factory=dict)
    contrast_param_cov: tuple[tuple[float, ...], ...] = ()
    criteria: tuple[Criterion, ...] = ()
    arm_param_cov: tuple[tuple[float, ...], ...] = ()


@dataclass(frozen=True)
class ArmComparison(_JSON):
    """Observed eps_0 .. eps_R of one arm against its prediction (round 0 included)."""

    observed: tuple[float, ...]
    wilson: tuple[tuple[float, ...], tuple[float, ...]]  # (lo per round, hi per round)
    covered: tuple[bool, ...]  # inside the predictive band
    accept_rate: tuple[float, ...]
    w: tuple[float, ...]  # wrong fraction among accepted answers
    cluster_ci: tuple[tuple[float, ...], tuple[float, ...]] = ((), ())  # query bootstrap 95%
    # the judge's rates per round on the arm's own samples (the prediction holds them at
    # Exp 1's; a judge that is the adapting model can drift)
    tpr: tuple[float, ...] = ()
    fpr: tuple[float, ...] = ()
    # post hoc, not a criterion: eps_n = g(w_{n-1}) from the w this arm really kept (round 0:
    # eps0), so a miss splits into the judge's part (w off its prediction) and g's part
    one_step: tuple[float, ...] = ()


@dataclass(frozen=True)
class ContrastComparison(_JSON):
    """One observed paired contrast (rounds 1 .. R) against its prediction.

    ``sd_total`` = sqrt(parameter variance + sampling variance), the sampling part from the
    query cluster bootstrap of the run (paired across arms) carried through g to later rounds.
    ``inside`` uses the Bonferroni interval of the "each_contrast" criterion.
    """

    observed: tuple[float, ...]
    cluster_ci: tuple[tuple[float, ...], tuple[float, ...]]
    predicted: tuple[float, ...]
    sd_total: tuple[float, ...]
    z: tuple[float, ...]
    inside: tuple[bool, ...]


@dataclass(frozen=True)
class CriterionResult(_JSON):
    """A pre-stated criterion evaluated on the run."""

    name: str
    value: float | None
    passed: bool | None


@dataclass(frozen=True)
class Comparison(_JSON):
    """Observed against predicted: the paired-contrast joint test (primary), per-contrast and
    per-arm coverage, the calibration line with its interval, and each pre-stated criterion.

    ``chi2``/``dof``/``p_value`` are the joint test on the contrasts (``joint_test`` in
    ``_statistics``): ``chi2`` = Q, the sum of the ``dof`` squared contrast z-scores (observed
    minus predicted over sqrt(parameter + query cluster bootstrap variance)), and ``p_value``
    its tail probability under the null with their full correlation, whose effective number
    of independent points is ``effective_dof``. ``chi2_independent`` is the former statistic
    (every arm and round as independent z-scores), kept for comparison only. ``coverage``
    counts arm points inside their predictive bands, round 0 (shared by the arms) counted
    once. ``passed``: every criterion passed.
    """

    arms: dict[str, ArmComparison]
    chi2: float
    dof: int
    p_value: float | None
    coverage: str  # "inside / points", round 0 included once
    calibration_slope: float | None
    calibration_intercept: float | None
    passed: bool | None
    calibration_slope_ci: Interval = (float("nan"), float("nan"))
    contrasts: dict[str, ContrastComparison] = field(default_factory=dict)
    criteria: tuple[CriterionResult, ...] = ()
    chi2_independent: float | None = None
    effective_dof: float | None = None


@dataclass(frozen=True)
class Trajectory:
    """Exp 3 results: the prediction, each arm's run, the comparison."""

    prediction: Prediction
    runs: dict[str, ChainResult]
    comparison: Comparison

    def to_dict(self) -> dict:
        return {"prediction": self.prediction.to_dict(), **self.comparison.to_dict(),
                "runs": {a: r.to_dict() for a, r in self.runs.items()}}


@dataclass(frozen=True)
class Validation:
    """All three experiments of :func:`validate`; ``bank`` says where Exp 2's contexts came
    from ("exp1", "gold", or why the model's own answers could not be used)."""

    calibration: Calibration
    transfer: Transfer
    trajectory: Trajectory
    bank: str
    temperature_axis: dict | None = None  # the weights channels' T axis (``_taxis``)
    context_transfer: Transfer | None = None  # their in-context Exp 2 on the same queries

    def to_dict(self) -> dict:
        out = {"exp1": self.calibration.to_dict(), "exp2": self.transfer.to_dict(),
               "exp3": self.trajectory.to_dict()}
        if self.temperature_axis is not None:
            out["t_axis"] = self.temperature_axis
        if self.context_transfer is not None:
            out["exp2_context"] = self.context_transfer.to_dict()
        return out
