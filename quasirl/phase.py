"""Parameter sweeps and phase diagrams.

* :func:`sweep` evaluates a function on a grid of parameters and returns an
  ``xarray.Dataset``: vmapped in process when the function is jittable, else (or when asked)
  in chunks on Dask (an in-process ``LocalCluster`` by default, ``scheduler="tcp://host:port"``
  for an existing cluster), written chunk by chunk to a store so that interrupted sweeps resume.
* :func:`boundary_curve` / :func:`crossings` locate a phase boundary as a curve over one axis
  (level crossings along the other, interpolated).
* :func:`boundary` (contour polylines at a level) and :func:`is_convex` are
  :mod:`quasirl.selection`'s helpers, re-exported.
* Phase diagrams with their theory curves: :func:`mdp_phase_diagram` (optimal-path mass over
  temperature and exploration noise, T_c(mu) = dr / (-L ln(1 - mu))),
  :func:`eigen_phase_diagram` (master fraction over (mu, sigma) or (mu, L),
  mu_c = 1 - sigma^(-1/L)) and
  :func:`boost_phase_diagrams` (the selection module's three planes with boundaries, closed
  forms and convexity verdicts).
"""

from ._phase_boost import boost_phase_diagrams as boost_phase_diagrams
from ._phase_eigen import eigen_critical_mu as eigen_critical_mu
from ._phase_eigen import eigen_phase_diagram as eigen_phase_diagram
from ._phase_eigen import steepest_descent as steepest_descent
from ._phase_geometry import boundary_curve as boundary_curve
from ._phase_geometry import crossings as crossings
from ._phase_mdp import critical_temperature as critical_temperature
from ._phase_mdp import mdp_phase_diagram as mdp_phase_diagram
from ._phase_mdp import route_chain as route_chain
from ._phase_mdp import route_mass as route_mass
from ._phase_mdp import route_policy as route_policy
from ._phase_sweep import is_vectorizable as is_vectorizable
from ._phase_sweep import sweep as sweep
from ._selection_phase import Convexity as Convexity
from ._selection_phase import boundary as boundary
from ._selection_phase import is_convex as is_convex
