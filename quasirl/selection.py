"""Selection theory of cherry-picking: the boosting recurrence, soft selection, best-of-N.

The essay's loop (answer, self-evaluate, keep what is judged good, put it back in the context,
repeat) is selection. This module makes its predictions computable before any language model
is touched (docs/theory.md, "Selection on samples"):

* the error-rate recurrence of iterative chaining, eps_{n+1} = w(eps_n) =
  eps_n FPR / (eps_n FPR + (1 - eps_n) TPR), its closed form (the odds shrink by FPR/TPR per
  round) and the acceptance rate (:func:`boost`, :func:`boost_closed_form`,
  :func:`acceptance_rate`, :func:`wrong_fraction`);
* imperfect adaptation eps_{n+1} = g(w_n): partial imitation, intrinsic error (the two-type
  quasispecies), any callable; fixed points, stability, limits, and the condition for the
  loop to lower the error (:func:`adapt_trajectory`, :func:`fixed_points`, :func:`stability`,
  :func:`limit_error`, :func:`lowers_error`);
* a Monte Carlo of the loop with finite batches and a rolling buffer
  (:func:`simulate_chaining`, :func:`band`);
* phase diagrams as labelled xarray Datasets, their boundaries and a convexity test that works
  on any 2-D DataArray (:func:`phase_diagram_rates`, :func:`phase_diagram_imitation`,
  :func:`phase_diagram_intrinsic`, :func:`boundary`, :func:`is_convex`);
* soft selection on a finite support: :func:`tilt`, :func:`temper`, :func:`repeated_tilt`
  (k rounds at T = one round at T/k), :func:`kl_regularised_optimum` (value beta log Z);
* best-of-N (:func:`best_of_n_law`, :func:`best_of_n_kl` <= log N - (N-1)/N,
  :func:`best_of_n_win_rate` vs N/(N+1)) and the Luce-choice curation update of Ferbach et al.
  (NeurIPS 2024) in closed form (:func:`luce_curation`).

Inputs may be Python floats, numpy or JAX arrays; outputs are JAX arrays (xarray for diagrams).
"""

from ._selection_boost import Affine as Affine
from ._selection_boost import ChainingRun as ChainingRun
from ._selection_boost import FixedPoints as FixedPoints
from ._selection_boost import Imitation as Imitation
from ._selection_boost import Mutation as Mutation
from ._selection_boost import acceptance_rate as acceptance_rate
from ._selection_boost import adapt_trajectory as adapt_trajectory
from ._selection_boost import band as band
from ._selection_boost import boost as boost
from ._selection_boost import boost_acceptance as boost_acceptance
from ._selection_boost import boost_closed_form as boost_closed_form
from ._selection_boost import fixed_points as fixed_points
from ._selection_boost import ideal as ideal
from ._selection_boost import intrinsic_error as intrinsic_error
from ._selection_boost import limit_error as limit_error
from ._selection_boost import lowers_error as lowers_error
from ._selection_boost import partial_imitation as partial_imitation
from ._selection_boost import simulate_chaining as simulate_chaining
from ._selection_boost import stability as stability
from ._selection_boost import step_map as step_map
from ._selection_boost import wrong_fraction as wrong_fraction
from ._selection_phase import Convexity as Convexity
from ._selection_phase import boundary as boundary
from ._selection_phase import error_threshold as error_threshold
from ._selection_phase import imitation_boundary as imitation_boundary
from ._selection_phase import intrinsic_boundary as intrinsic_boundary
from ._selection_phase import is_convex as is_convex
from ._selection_phase import phase_diagram_imitation as phase_diagram_imitation
from ._selection_phase import phase_diagram_intrinsic as phase_diagram_intrinsic
from ._selection_phase import phase_diagram_rates as phase_diagram_rates
from ._selection_phase import rates_boundary as rates_boundary
from ._selection_phase import region_mask as region_mask
from ._selection_phase import selection_rates as selection_rates
from ._selection_soft import BestOfNWinRate as BestOfNWinRate
from ._selection_soft import best_of_n_kl as best_of_n_kl
from ._selection_soft import best_of_n_kl_bound as best_of_n_kl_bound
from ._selection_soft import best_of_n_law as best_of_n_law
from ._selection_soft import best_of_n_win_rate as best_of_n_win_rate
from ._selection_soft import kl_divergence as kl_divergence
from ._selection_soft import kl_regularised_objective as kl_regularised_objective
from ._selection_soft import kl_regularised_optimum as kl_regularised_optimum
from ._selection_soft import luce_curation as luce_curation
from ._selection_soft import luce_curation_enumerate as luce_curation_enumerate
from ._selection_soft import repeated_tilt as repeated_tilt
from ._selection_soft import sample_best_of_n as sample_best_of_n
from ._selection_soft import simulate_luce_curation as simulate_luce_curation
from ._selection_soft import temper as temper
from ._selection_soft import tilt as tilt
from ._selection_soft import win_rate_bound as win_rate_bound
