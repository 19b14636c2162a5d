"""Bridge to real language models: populations of samples, self-evaluation, chaining, validation.

The essay's loop is: let the model answer, let it evaluate its answer (the survey trick: read
the probabilities of evaluation labels instead of sampling them), keep what is judged good, put
the kept pairs in the context, repeat. This package runs that loop on real models and checks
``quasirl.selection``'s predictions against it:

* backends behind one protocol (:class:`LM`): :class:`LlamaCppLM` (GGUF via llama.cpp),
  :class:`TransformersLM` (local folders or GGUF), :class:`OpenAICompatibleLM` (vLLM and
  llama.cpp servers over HTTP), :class:`SyntheticLM` (known rates, for testing the statistics),
  :class:`SyntheticTokenLM` (a small vocabulary with seeded, exactly known next-token logits);
* models installed from Python packages, no hub: ``load("gemma3-270m")``,
  ``load("smollm2-135m")``;
* tasks (:class:`Task`: items, prompt format, checker): :func:`capitals`, :func:`continents`,
  :func:`arithmetic`, ``Task.from_pairs``, ``Task.from_file``;
* fitness signals: :class:`SurveyFitness` (``YES_NO``, ``FIVE_POINT``),
  :class:`LikelihoodFitness`, :class:`GoldFitness`; hard or soft acceptance;
* the loop :func:`run_chaining` with resumable, checksummed JSONL records (:class:`RecordLog`);
  every number a model or server returns is checked (:class:`LMValueError` when it cannot be
  right), and a failing backend raises :class:`LMError` with a one-line message;
* the answer tree as an MDP: :func:`answer_tree` (:class:`AnswerTree`, :class:`TreeAnswer`)
  expands a prompt's answers to a depth, so the kernels give the sequence-level tilted law
  p(answer)^(1/T) / Z, F(T), the MAP answer against the greedy one, the soft policy and the
  concentration on the best answer, exactly;
* what selection keeps from that tree, exactly, and checked on samples: token-level temperature
  against the sequence-level tilt (:func:`token_temperature_laws`), best-of-N by own likelihood
  or by a checker (:func:`best_of_n_law`, :func:`best_of_n_accuracy`), soft selection
  (:func:`soft_selection_law`, :func:`error_after_selection`), and the comparisons with samples
  (:func:`compare_samples`, :func:`observed_best_of_n`);
* slow adaptation: :class:`FineTuner` trains a :class:`TransformersLM` (LoRA via ``peft``, or
  every weight) on kept (prompt, answer) pairs with hard or soft weights
  (:func:`fitness_weights`), a self-normalised REINFORCE step; ``run_chaining(...,
  channel="weights" | "both")`` closes the loop through the weights, saving each round's model;
* :mod:`quasirl.lm.validate`: Exp 1 (evaluator ROC), Exp 2 (transfer function), Exp 3
  (predicted vs observed trajectory).
"""

from . import validate as validate
from ._chaining import ARMS as ARMS
from ._chaining import CHANNELS as CHANNELS
from ._chaining import ChainResult as ChainResult
from ._chaining import RoundSummary as RoundSummary
from ._chaining import run_chaining as run_chaining
from ._finetune import FineTuner as FineTuner
from ._finetune import FitReport as FitReport
from ._finetune import fitness_weights as fitness_weights
from ._fitness import FIVE_POINT as FIVE_POINT
from ._fitness import FIVE_POINT_PREFIX as FIVE_POINT_PREFIX
from ._fitness import YES_NO as YES_NO
from ._fitness import GoldFitness as GoldFitness
from ._fitness import LikelihoodFitness as LikelihoodFitness
from ._fitness import Scale as Scale
from ._fitness import SurveyFitness as SurveyFitness
from ._fitness import accept as accept
from ._fitness import get_fitness as get_fitness
from ._http import OpenAICompatibleLM as OpenAICompatibleLM
from ._llamacpp import LlamaCppLM as LlamaCppLM
from ._models import MODELS as MODELS
from ._models import load as load
from ._models import model_path as model_path
from ._records import RecordLog as RecordLog
from ._records import read_records as read_records
from ._stats import auroc as auroc
from ._stats import wilson as wilson
from ._synthetic import SyntheticLM as SyntheticLM
from ._synthetic_tokens import SyntheticTokenLM as SyntheticTokenLM
from ._tasks import Item as Item
from ._tasks import Task as Task
from ._tasks import arithmetic as arithmetic
from ._tasks import capitals as capitals
from ._tasks import continents as continents
from ._tasks import get_task as get_task
from ._tasks import normalize as normalize
from ._transformers import TransformersLM as TransformersLM
from ._transformers import convert_gguf as convert_gguf
from ._tree import AnswerTree as AnswerTree
from ._tree import TreeAnswer as TreeAnswer
from ._tree import answer_tree as answer_tree
from ._tree_select import BestOfNAccuracy as BestOfNAccuracy
from ._tree_select import ObservedBestOfN as ObservedBestOfN
from ._tree_select import SampleComparison as SampleComparison
from ._tree_select import SelectionError as SelectionError
from ._tree_select import TemperatureLaws as TemperatureLaws
from ._tree_select import TreeLaw as TreeLaw
from ._tree_select import best_of_n_accuracy as best_of_n_accuracy
from ._tree_select import best_of_n_law as best_of_n_law
from ._tree_select import compare_counts as compare_counts
from ._tree_select import compare_samples as compare_samples
from ._tree_select import error_after_selection as error_after_selection
from ._tree_select import observed_best_of_n as observed_best_of_n
from ._tree_select import observed_selection_error as observed_selection_error
from ._tree_select import sample_loglik as sample_loglik
from ._tree_select import sampling_law as sampling_law
from ._tree_select import sequence_tilt as sequence_tilt
from ._tree_select import soft_selection_law as soft_selection_law
from ._tree_select import terminal_counts as terminal_counts
from ._tree_select import token_temperature_laws as token_temperature_laws
from ._tree_select import token_vs_tilt as token_vs_tilt
from ._tree_select import tv_distance as tv_distance
from ._types import LM as LM
from ._types import CachedLM as CachedLM
from ._types import LMError as LMError
from ._types import LMValueError as LMValueError
from ._types import Sample as Sample
from ._types import Score as Score
from ._types import label_probs as label_probs
from ._types import sample_seed as sample_seed
