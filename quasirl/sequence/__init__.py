"""Eigen's quasispecies on binary sequences of length L, at scale.

Genotypes are the 2^L integers i; site j is axis j of ``x.reshape([2] * L)`` (bit L-1-j of i)
and the master sequence is i = 0 (all zeros) unless said otherwise (docs/theory.md, section 5).

* Mutation: per-site rates mu (0 -> 1) and nu (1 -> 0, default mu), scalars or [L];
  Q = (x)_j [[1-mu_j, nu_j], [mu_j, 1-nu_j]], never formed as a dense matrix: on CPUs a native
  kernel of cache-blocked per-site butterflies (an XLA FFI call built when quasirl is first
  imported, :func:`quasirl.kernel_status`), elsewhere (or with ``kernel="xla"``) grouped
  Kronecker blocks (:func:`mutate`, :func:`default_groups`); its spectrum (1-mu-nu)^k with
  multiplicity C(L, k) (:func:`mutation_spectrum`).
* Landscapes [2^L]: :func:`single_peak`, :func:`multiplicative` (Mount Fuji),
  :func:`rough_mt_fuji`, :func:`nk` (Kauffman), :func:`hamming_landscape` (any function of the
  distance to the master); :func:`hamming_distance`, :func:`class_distribution`.
* Dynamics: :func:`evolve` (the generation map x' = Q diag(f) x / f.x, or Crow-Kimura
  continuous time, in compiled chunks with the number of generations a run-time value; full
  distributions saved at chosen generations with ``save_at``) and :func:`stationary` (the
  Perron vector by power iteration with a stated tolerance and an estimated spectral gap; unpacks as
  ``(distribution, mean_fitness)``).
* The exact (L+1)-class reduction, independent of the Kronecker code, usable to L = 1000 and
  refused above L = 2000 (dense matrices):
  :func:`class_matrix`, :func:`class_stationary`, :func:`class_iterate`; closed forms
  :func:`swetina_schuster` and :func:`cerf_dalmau`.
* :func:`error_threshold`: the numeric critical mu beside 1 - sigma^(-1/L).
* Finite populations: :func:`wright_fisher` (multinomial over genotypes) and
  :func:`wright_fisher_individuals` (N bit-strings, any L).

Inputs may be numpy or JAX arrays; full-space outputs are JAX arrays, the class reduction
returns float64 numpy arrays.
"""

from ._classes import ClassStationary as ClassStationary
from ._classes import cerf_dalmau as cerf_dalmau
from ._classes import class_iterate as class_iterate
from ._classes import class_matrix as class_matrix
from ._classes import class_stationary as class_stationary
from ._classes import swetina_schuster as swetina_schuster
from ._kron import MutationSpectrum as MutationSpectrum
from ._kron import Stationary as Stationary
from ._kron import Trajectory as Trajectory
from ._kron import class_distribution as class_distribution
from ._kron import default_groups as default_groups
from ._kron import evolve as evolve
from ._kron import hamming_distance as hamming_distance
from ._kron import mutate as mutate
from ._kron import mutation_spectrum as mutation_spectrum
from ._kron import stationary as stationary
from ._landscapes import NKTables as NKTables
from ._landscapes import hamming_landscape as hamming_landscape
from ._landscapes import multiplicative as multiplicative
from ._landscapes import nk as nk
from ._landscapes import nk_tables as nk_tables
from ._landscapes import rough_mt_fuji as rough_mt_fuji
from ._landscapes import single_peak as single_peak
from ._threshold import Threshold as Threshold
from ._threshold import error_threshold as error_threshold
from ._threshold import superiority as superiority
from ._wf import Population as Population
from ._wf import WrightFisher as WrightFisher
from ._wf import wright_fisher as wright_fisher
from ._wf import wright_fisher_individuals as wright_fisher_individuals
