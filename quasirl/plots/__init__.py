"""matplotlib figures for each analysis, in one style (see ``_style``).

Every function takes the analysis results and returns a ``matplotlib.figure.Figure``; pass
it to :func:`savefig` to write a PNG.
"""

from ._lm import calibration_figure as calibration_figure
from ._lm import chaining_figure as chaining_figure
from ._lm import channels_trajectory_figure as channels_trajectory_figure
from ._lm import channels_transfer_figure as channels_transfer_figure
from ._lm import temperature_axis_figure as temperature_axis_figure
from ._lm import trajectory_figure as trajectory_figure
from ._lm import transfer_figure as transfer_figure
from ._mdp import plot_free_energy as plot_free_energy
from ._mdp import plot_optimal_mass as plot_optimal_mass
from ._mdp import plot_policy_maps as plot_policy_maps
from ._paths import plot_mass_asymptote as plot_mass_asymptote
from ._paths import plot_unrolled_flow as plot_unrolled_flow
from ._phase import plot_boost_phase as plot_boost_phase
from ._phase import plot_eigen_phase as plot_eigen_phase
from ._phase import plot_mass_convergence as plot_mass_convergence
from ._phase import plot_mdp_phase as plot_mdp_phase
from ._phase import plot_phase_field as plot_phase_field
from ._selection import plot_best_of_n as plot_best_of_n
from ._selection import plot_error_trajectories as plot_error_trajectories
from ._selection import plot_luce_curation as plot_luce_curation
from ._selection import plot_selection_phase as plot_selection_phase
from ._sequence import plot_class_distribution as plot_class_distribution
from ._sequence import plot_master_fraction as plot_master_fraction
from ._sequence import plot_wright_fisher as plot_wright_fisher
from ._style import FIELD_CMAP as FIELD_CMAP
from ._style import LINESTYLES as LINESTYLES
from ._style import MARKERS as MARKERS
from ._style import line_colors as line_colors
from ._style import new_figure as new_figure
from ._style import savefig as savefig
from ._style import style as style
