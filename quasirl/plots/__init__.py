"""matplotlib figures for each analysis, in one style (see ``_style``).

Every function takes the analysis results and returns a ``matplotlib.figure.Figure``; pass
it to :func:`savefig` to write a PNG.
"""

from ._lm import *  # noqa: F403
from ._mdp import *  # noqa: F403
from ._paths import *  # noqa: F403
from ._phase import *  # noqa: F403
from ._selection import *  # noqa: F403
from ._sequence import *  # noqa: F403
from ._style import *  # noqa: F403
