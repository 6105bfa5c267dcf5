"""Moved to :mod:`studies.seeds`; this alias lives only until the last old benchmark script that imports it is
ported to a study and deleted."""

from studies.seeds import *  # noqa: F401,F403
from studies.seeds import compare, mean_ci  # noqa: F401
