"""The core, written once for every substrate: the substrate interface (:mod:`sim.core.substrate`)
and the engine with its numerical guard (:mod:`sim.core.engine`)."""
