"""Generic: a dimensionless economy of one currency (``substrate=generic``). See
:mod:`sim.substrates.generic.spec`."""

from sim.substrates.generic.spec import SUBSTRATE

__all__ = ["SUBSTRATE"]
