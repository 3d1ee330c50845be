"""Simulation state as PyTrees of fixed-capacity arrays with alive masks.

Shapes never change during a run: producers and consumers live in ``(n_cells, slots)`` blocks
(slot ``s`` of cell ``c`` has the global agent id ``c * slots + s``), a birth revives the first
dead slot of its cell and a death only clears a mask, so nothing recompiles.

Species axis of ``Cells.pools`` (biology preset; the generic preset reuses it with unit values):
``GLC`` substrate (glucose), ``ATP`` charged currency, ``ADP`` discharged carrier, ``AMP``,
``PI`` inorganic phosphate. Concentrations are in mM, time in s. ATP, ADP and AMP are the free,
exchanging pools (the bound ADP and AMP are constants of ``Params``; see
``sim.substrates.bio.kernels.thermo``). Phosphocreatine, when the creatine kinase buffer is on,
is ``Cells.pcr`` (creatine = ``Params.creatine_total - pcr``); it stays in its cell.

Carriers (``sim.core.carriers``, ``carriers.n > 1``): the ATP column is the total charged pool,
held as ``State.carriers.held`` (C, K) mM over K nucleoside triphosphates that share one phosphate
potential: ADP, AMP and Pi stay one pool each, and dG, the energy charge and every kinase see the
total (the bond is spent, not the nucleoside).

Chains (``sim.core.chains``; biology: ribosome cohorts doing protein synthesis) live in a
``(n_cells, chain_slots)`` block too (slot ``s`` of cell ``c`` has chain id ``c * slots + s``);
a preset without chains has ``chain_slots = 0``.
"""

from __future__ import annotations

from sim.pytree import pytree_dataclass

GLC, ATP, ADP, AMP, PI = range(5)
SPECIES = ("glucose", "atp", "adp", "amp", "pi")
N_SPECIES = len(SPECIES)


@pytree_dataclass
class Cells:
    pools: object  # (C, N_SPECIES) mM
    alive: object  # (C,) bool
    stress: object  # (C,) s spent with maintenance (tier 0) below threshold
    uptake: object  # (C,) 1/s substrate uptake conductance from the surroundings
    demand_mult: object  # (C,) per-cell multiplier on consumer capacity (tissue heterogeneity)
    maintenance: object  # (C,) fraction of the saturated tier-0 demand served in the last step
    # (C,) slow energy-stress signal: energy charge averaged exponentially over birth_tau s (the
    # AMPK -> PGC-1alpha sensor that drives biogenesis, sim.substrates.bio.kernels.fate)
    ec_slow: object
    pcr: object  # (C,) mM phosphocreatine (0 without the creatine kinase buffer)


@pytree_dataclass
class Producers:
    kind: object  # (C, P) int: index into the producer-kind parameter vectors
    vmax: object  # (C, P) mM/s at full health and saturating substrates
    health: object  # (C, P) in [0, 1]
    alive: object  # (C, P) bool


@pytree_dataclass
class Consumers:
    kind: object  # (C, K) int
    vmax: object  # (C, K) mM/s
    km: object  # (C, K) mM ATP
    tier: object  # (C, K) int, 0 = maintenance (served first)
    value: object  # (C, K) work units per ATP


@pytree_dataclass
class Ledger:
    """Cumulative per-cell accounts (mM of the cell's volume unless stated)."""

    produced: object  # (C,) ATP made by producers
    spent: object  # (C, K) ATP hydrolysed by each consumer slot
    repair_spent: object  # (C,) ATP spent on producer repair
    birth_spent: object  # (C,) ATP spent on producer biogenesis
    work: object  # (C, K) work delivered (value x spent)
    substrate_used: object  # (C,) glucose consumed by producers
    substrate_uptake: object  # (C,) glucose taken up from the surroundings
    transported_in: object  # (C,) ATP received over junctions
    transported_out: object  # (C,) ATP sent over junctions
    lost: object  # (C, N_SPECIES) lost in transit over junctions (leak)
    ak_atp: object  # (C,) net ATP made by adenylate kinase (2 ADP -> ATP + AMP)
    ck_atp: object  # (C,) net ATP made by creatine kinase (PCr + ADP -> Cr + ATP)
    substrate_energy_j: object  # (C,) J released by substrate oxidation / fermentation
    stored_energy_j: object  # (C,) J: sum of (made - hydrolysed) x |dG_ATP| at the time
    heat_j: object  # (C,) J dissipated (production losses + hydrolysis)
    hydrolysis_energy_j: object  # (C,) J released by ATP hydrolysis (the currency spent)
    failures: object  # (C,) producer failures (stochastic)
    births: object  # (C,) producers made (biogenesis)
    repair_health: object  # (C,) health units restored by repair
    output: object  # (C,) specialised work: value x ATP spent by the specialised consumer kinds
    switching: object  # (C,) ATP spent changing theta (differentiation moves)


@pytree_dataclass
class State:
    cells: Cells
    producers: Producers
    consumers: Consumers
    ledger: Ledger
    step: object  # () int32 steps taken so far
    # chains (sim.core.chains.ChainSlots, (C, S)) and their per-cell accounts
    # (sim.core.chains.ChainLedger, currency in mM, units in amino acids per ribosome of a
    # cohort). Their ATP is also booked in ``ledger.spent`` / ``ledger.work`` under the consumer
    # kind the chains realise (``Params.chain_kind``), so every currency balance includes it.
    chains: object = None
    chain_ledger: object = None
    # differentiation (sim.core.differentiation.DiffState): theta, the share of the cell's protein
    # budget in producers (vs specialised work consumers), and its adaptation
    diff: object = None
    # several competing carriers (sim.core.carriers.CarrierState): the charged pool (the ATP column
    # of ``Cells.pools``, mM) split over nucleoside triphosphates, ``held`` (C, K) mM with
    # sum_k held = pools[:, ATP]; zero width with one carrier (the default: no carrier code runs)
    carriers: object = None
