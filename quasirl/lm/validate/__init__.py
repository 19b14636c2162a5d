"""Theory against runs: measure the ingredients apart, predict the trajectory, run, compare.

Three experiments, each resumable from its JSONL records and each with a pass/fail criterion:

* **Exp 1, evaluator ROC** (:func:`calibrate`): answers to fresh queries after k gold
  demonstrations; their error rate eps (the loop's round 0), and for each fitness signal the
  AUROC, the operating threshold (chosen on a calibration half of the queries), TPR and FPR on
  the held-out half, and a one-step Bayes check: the wrong fraction among accepted answers that
  one quarter of the queries predicts, w = eps FPR / (eps FPR + (1 - eps) TPR), against the one
  observed on another quarter (both held out from the threshold choice, so the check carries
  no selection optimism). Pass: the observed w lies in its 95% predictive interval.
* **Exp 2, transfer function** (:func:`transfer`): contexts of k pairs with an exact wrong
  fraction b; eps_next = g(b) and the fit g(b) = (1 - lam) eps* + lam b. Pass: the line fits
  (chi-square goodness of fit, p > 0.05).
* **Exp 3, trajectory** (:func:`trajectory`): eps_1 .. eps_R predicted from the measured
  (eps, TPR, FPR, g) with ``quasirl.selection.adapt_trajectory`` and a parametric bootstrap over
  the ingredients' uncertainty, *then* the chaining loop is run (filtered arm and the controls:
  unfiltered, random acceptance at the filtered arm's rate, oracle). The arms share each
  round's queries, so the primary test is on the paired contrasts filtered - unfiltered,
  oracle - unfiltered and filtered - random (round difficulty cancels), predicted with their
  parameter covariance and the pass criteria written into the :class:`Prediction`. Pass: the
  joint Mahalanobis test of the contrasts (covariance = parameter draws + query cluster
  bootstrap, carried through g) has p > 0.05 and every contrast lies in its Bonferroni
  interval. Reported besides: each arm's eps_n with its cluster bootstrap interval against
  its predictive band (round 0 included), the calibration slope with its interval, and two
  Bayes checks in Exp 1 (the current one and the calibration-half one it replaced).

:func:`validate` runs all three on one folder. Results are typed (:class:`Calibration`,
:class:`Transfer`, :class:`Prediction`, :class:`Comparison`, :class:`Trajectory`,
:class:`Validation`); ``to_dict()`` gives the JSON written next to the records, from which
``quasirl.plots`` draws the figures. Uncertainty comes from resampling queries (cluster
bootstrap).

Design: disjoint query pools drawn by a split seed (:func:`draw_pools`, :class:`Pools`), the
run manifest and the pre-registered prediction (:func:`read_manifest`, :func:`read_prediction`,
:func:`register_prediction`).

Across runs: :func:`summarize_run` reads one finished (or unfinished) run folder into a row,
:func:`summary_markdown` draws the rows as tables (``quasirl lm summary``).

Modules: ``_design`` (pools, manifest, pre-registration), ``_experiments`` (sampling and the
chaining arms), ``_statistics`` (analyses of the
records), ``_theory`` (the prediction), ``_results`` (the typed results), ``_io`` (file names and
JSON), ``_run`` (:func:`validate`), ``_summary`` (the table across runs).
"""

from .._fitness import SIGNALS as SIGNALS
from ._design import Pools as Pools
from ._design import draw_pools as draw_pools
from ._design import read_manifest as read_manifest
from ._design import read_prediction as read_prediction
from ._design import register_prediction as register_prediction
from ._experiments import bank_from_records as bank_from_records
from ._experiments import calibrate as calibrate
from ._experiments import collect_calibration as collect_calibration
from ._experiments import collect_transfer as collect_transfer
from ._experiments import exp2_bank as exp2_bank
from ._experiments import trajectory as trajectory
from ._experiments import transfer as transfer
from ._results import ArmComparison as ArmComparison
from ._results import ArmPrediction as ArmPrediction
from ._results import BayesCheck as BayesCheck
from ._results import Calibration as Calibration
from ._results import Comparison as Comparison
from ._results import ContrastComparison as ContrastComparison
from ._results import ContrastPrediction as ContrastPrediction
from ._results import Criterion as Criterion
from ._results import CriterionResult as CriterionResult
from ._results import Ingredients as Ingredients
from ._results import Prediction as Prediction
from ._results import Roc as Roc
from ._results import SignalCalibration as SignalCalibration
from ._results import Trajectory as Trajectory
from ._results import Transfer as Transfer
from ._results import Validation as Validation
from ._run import validate as validate
from ._statistics import analyze_calibration as analyze_calibration
from ._statistics import analyze_transfer as analyze_transfer
from ._statistics import compare as compare
from ._summary import stouffer as stouffer
from ._summary import summarize_run as summarize_run
from ._summary import summary_markdown as summary_markdown
from ._theory import predict_trajectory as predict_trajectory
