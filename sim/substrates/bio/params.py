"""Parameters as a PyTree separate from the state, so sweeps can ``vmap`` over them.

Scalars are 0-d arrays; per-kind vectors are indexed by ``Producers.kind``. The tissue's edge
arrays live here too (they never change in a run); the engine maps them with ``in_axes=None``.
Every default number and its source is in ``conf/substrate/*.yaml`` and in ``sim/substrates/bio``.
"""

from __future__ import annotations


from sim.pytree import pytree_dataclass


@pytree_dataclass
class Edges:
    src: object  # (E,) int32 cell index
    dst: object  # (E,) int32 cell index
    conductance: object  # (E,) 1/s
    loss: object  # (E,) fraction of the flux lost in transit, in [0, 1)


@pytree_dataclass
class Params:
    dt: object  # s
    temperature_k: object  # K
    volume_l: object  # L per cell (converts mM to moles)
    dg0_kj: object  # kJ/mol, standard transformed dG of ATP hydrolysis (negative)
    k_ak: object  # adenylate kinase equilibrium constant ATP*AMP/ADP^2
    adp_bound: object  # mM ADP bound to proteins / sequestered (counted in totals, not exchanging)
    amp_bound: object  # mM AMP bound / sequestered (idem)
    creatine_total: object  # mM creatine + phosphocreatine (0: no creatine kinase buffer)
    k_ck: object  # apparent creatine kinase constant [ATP][Cr]/([ADP][PCr]) at the cell's pH
    external_substrate: object  # mM glucose outside the cells
    supply_scale: object  # multiplier on producer capacity (sweeps)
    demand_scale: object  # multiplier on consumer capacity (sweeps)
    uptake_scale: object  # multiplier on substrate uptake (sweeps)
    # parallel activation (Korzeniewski each-step activation): producer capacity x
    # demand_scale ** parallel_activation (0: ADP/Pi feedback only; 1: supply activated as much as demand)
    parallel_activation: object
    # producer kinds (vectors indexed by kind)
    p_yield: object  # ATP per glucose
    p_substrate_dg_kj: object  # kJ/mol glucose released by the pathway (negative)
    p_ceiling_kj: object  # kJ/mol: |dG_ATP| at which the pathway's thermodynamic brake closes
    p_k_s: object  # mM glucose
    p_k_adp: object  # mM ADP
    p_k_pi: object  # mM Pi
    p_damage: object  # 1/s health lost per unit of relative load (J/Vmax)
    # producer fate
    hazard0: object  # 1/s failure hazard of a healthy producer
    hazard_beta: object  # hazard = hazard0 * exp(beta * (1 - health))
    repair_rate: object  # 1/s: repair restores repair_rate * (1 - health) health per s
    repair_cost: object  # mM ATP per unit health restored
    birth_rate: object  # 1/s per cell at full energy stress (ec_slow <= birth_ec_set - birth_ec_span)
    birth_ec_set: object  # set point: no biogenesis while the slow energy charge is at or above it
    birth_ec_span: object  # energy-charge deficit below the set point at which biogenesis runs at birth_rate
    birth_tau: object  # s, time constant of the slow energy-charge signal (Cells.ec_slow)
    birth_cost: object  # mM ATP per producer made
    # consumers
    tier_reserve: object  # (N_TIERS,) mM ATP a tier cannot draw below (energy-sensing priority)
    c_specialised: object  # (n consumer kinds,) 1.0 for specialised work (scaled by (2 (1 - theta))^alpha), else 0.0
    # cell fate
    stress_threshold: object  # maintenance fraction below which a cell is stressed
    stress_death_s: object  # s of stress that kill a cell
    stress_recovery: object  # s of stress forgiven per s unstressed
    # chains (protein synthesis by ribosome cohorts, sim.substrates.bio.kernels.translation); the chains realise
    # the consumer kind ``chain_kind`` (its capacity, K_ATP, tier and ledger line); -1: none
    chain_kind: object  # int consumer-kind index
    chain_rate: object  # units/s per elongating chain at saturating ATP (aa/s)
    chain_cost_per_unit: object  # currency molecules per unit per ribosome (4 ATP per aa)
    chain_p_stop: object  # termination probability per unit (1 / mean length)
    chain_n_max: object  # units (longest chain)
    chain_init_rate: object  # 1/s per free slot
    chain_init_cost: object  # currency molecules per initiation per ribosome
    # transport
    permeability: object  # (N_SPECIES,) multiplier per species on edge conductance
    conductance_scale: object  # multiplier on all edge conductances (sweeps)
    edges: Edges
    diff: object = None  # sim.core.differentiation.DiffParams
    carriers: object = None  # sim.core.carriers.CarrierParams (costs per carrier; zero width with one carrier)



SWEEPABLE = (
    "supply_scale",
    "demand_scale",
    "uptake_scale",
    "conductance_scale",
    "external_substrate",
    "hazard0",
    "repair_rate",
    "birth_rate",
    "birth_ec_set",
    "k_ak",
    "parallel_activation",
)
