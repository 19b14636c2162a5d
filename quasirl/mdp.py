"""Public namespace for the MDP model and its constructors."""

from ._mdp import MDP as MDP
from ._models import ACTION_NAMES as ACTION_NAMES
from ._models import DEFAULT_LAYOUT as DEFAULT_LAYOUT
from ._models import DEFAULT_REWARDS as DEFAULT_REWARDS
from ._models import chain as chain
from ._models import from_graph as from_graph
from ._models import gridworld as gridworld
from ._models import random_mdp as random_mdp
