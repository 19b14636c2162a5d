"""quasirl: selection on samples is reinforcement learning, made computable.

A population of attempts replicates with fitness exp(r/T); iterating the quasispecies equation
over an MDP sums over every path weighted by exp(R/T) (a path integral), and as T -> 0 only the
optimal paths survive (the max-plus limit). See docs/theory.md for the mathematics.

Importing quasirl loads its native CPU kernels, compiling them first if this machine and
instruction set have no build in the cache (tens of seconds, once; ``QUASIRL_NATIVE=0``
skips them, ``quasirl build-native`` builds ahead of time): never inside a JAX trace.
:func:`kernel_status` says what runs.
"""

import importlib

from . import _native
from ._dynamics import Evolution as Evolution
from ._dynamics import bellman_value as bellman_value
from ._dynamics import desirability as desirability
from ._dynamics import evolve as evolve
from ._dynamics import free_energy as free_energy
from ._dynamics import log_partition as log_partition
from ._dynamics import occupancy as occupancy
from ._dynamics import optimal_value as optimal_value
from ._dynamics import optimism_gap as optimism_gap
from ._dynamics import soft_policy as soft_policy
from ._kernels import kernel_status as kernel_status
from ._mdp import MDP as MDP
from ._models import chain as chain
from ._models import from_graph as from_graph
from ._models import gridworld as gridworld
from ._models import random_mdp as random_mdp
from ._validate import QuasirlValueError as QuasirlValueError

__version__ = "0.1.0"

_native.load()

# Analysis and user-layer modules load on first use (``qr.paths``, ``qr.lm``, ...), so that
# ``import quasirl`` stays light and never imports torch.
_SUBMODULES = {"paths", "sequence", "selection", "phase", "plots", "lm", "cli", "semiring", "mdp"}


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'quasirl' has no attribute {name!r}")
