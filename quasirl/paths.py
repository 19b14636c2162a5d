"""Explicit paths: the population as a sum over paths, its T -> 0 concentration, and T -> infinity
of the horizon.

The quasispecies kernels (:func:`quasirl.free_energy`, ...) sum over paths by recursion. This
module writes the sum the way the essay does, path by path, so the two can be held against each
other, and measures how fast the population concentrates on the optimal paths:

* the time-unrolled graph (:func:`unrolled_graph`, a networkx graph with nodes (t, s)),
  :func:`count_paths` and :func:`enumerate_paths` (refusing beyond ``limit`` paths, with the
  count), :func:`path_integral` = T log sum_p w_p exp(R_p/T) by explicit summation, and the
  tempered law over paths (:func:`path_distribution`, :func:`path_flow`);
* by dynamic programming, for graphs too large to enumerate: :func:`optimal_path_mass`
  (and its complement), :func:`num_optimal_paths`, :func:`return_spectrum`, :func:`return_gap`
  (Delta and N_2: 1 - mass ~ (N_2/W_1) exp(-Delta/T)) and :func:`best_paths` (k best);
* the infinite horizon: :func:`growth_rate` = T log rho(A_T), :func:`max_cycle_mean` (Karp, its
  T -> 0 limit), the :func:`lineage_chain` (tilted chain) and :func:`stationary_population`, and
  the linearly solvable first-exit problem (:func:`lmdp_desirability`).

Definitions (paths, weights w_p, returns R_p) are those of docs/theory.md.
"""

from ._paths_cycles import CycleMean as CycleMean
from ._paths_cycles import Lineage as Lineage
from ._paths_cycles import LMDPSolution as LMDPSolution
from ._paths_cycles import growth_rate as growth_rate
from ._paths_cycles import lineage_chain as lineage_chain
from ._paths_cycles import lmdp_desirability as lmdp_desirability
from ._paths_cycles import max_cycle_mean as max_cycle_mean
from ._paths_cycles import stationary_population as stationary_population
from ._paths_dp import ReturnGap as ReturnGap
from ._paths_dp import Spectrum as Spectrum
from ._paths_dp import best_paths as best_paths
from ._paths_dp import num_optimal_paths as num_optimal_paths
from ._paths_dp import optimal_path_mass as optimal_path_mass
from ._paths_dp import path_distribution as path_distribution
from ._paths_dp import path_flow as path_flow
from ._paths_dp import path_integral as path_integral
from ._paths_dp import return_gap as return_gap
from ._paths_dp import return_spectrum as return_spectrum
from ._paths_dp import suboptimal_path_mass as suboptimal_path_mass
from ._paths_graph import DEFAULT_LIMIT as DEFAULT_LIMIT
from ._paths_graph import Paths as Paths
from ._paths_graph import count_paths as count_paths
from ._paths_graph import enumerate_paths as enumerate_paths
from ._paths_unrolled import unrolled_graph as unrolled_graph
