"""The processes of one time step, in a fixed order shared with the plain-Python reference (the
step itself is ``Substrate.step``: every process in order, then the step counter).

1 metabolism (uptake, production, consumption by tier with the protein-synthesis chains served in
tier 1 and stepped right after the tiers are served, repair, damage; rates on the step-start
state) -> 2 transport over junctions -> 3 adenylate kinase equilibrium -> 4 producer failure ->
5 biogenesis -> 6 cell stress and death -> step counter. The core appends its processes after
these: ``adaptation`` (``differentiation.rule`` imitation | gradient) and, with several carriers
(``carriers.n > 1``), ``carrier_upkeep`` and ``carrier_strategy`` (:mod:`sim.core.carriers`).
"""

from __future__ import annotations

from sim.substrates.bio.kernels.adenylate import adenylate_kinase
from sim.substrates.bio.kernels.fate import cell_stress, producer_biogenesis, producer_failure
from sim.substrates.bio.kernels.metabolism import metabolism
from sim.substrates.bio.kernels.transport import transport

PROCESSES = (
    ("metabolism", metabolism),
    ("transport", transport),
    ("adenylate_kinase", adenylate_kinase),
    ("producer_failure", producer_failure),
    ("producer_biogenesis", producer_biogenesis),
    ("cell_stress", cell_stress),
)

