"""State and parameters of the generic substrate: two PyTrees of fixed-capacity arrays.

Everything is dimensionless (amounts, rates, times: unit "1"). Producers and consumers live in
``(n_cells, slots)`` blocks; producer slot ``s`` of cell ``c`` has the agent id ``c * slots + s``
(the id its random draws are keyed by). A failure only clears a mask, so shapes never change.
"""

from __future__ import annotations

from sim.pytree import pytree_dataclass

N_TIERS = 2  # consumer tiers: 0 (maintenance, served first), 1 (work)


@pytree_dataclass
class Cells:
    alive: object  # (C,) bool: cells do not die in this model; a dead cell's junctions are closed
    s: object  # (C,) S, substrate pool
    a: object  # (C,) A, charged currency
    d: object  # (C,) D, discharged carrier (A + D of the tissue is conserved)


@pytree_dataclass
class Producers:
    alive: object  # (C, P) bool (a birth revives a dead slot with its V_p and h)
    vmax: object  # (C, P) V_p, currency made per unit time at full health and saturating S and D
    health: object  # (C, P) h in [0, 1], a multiplier on V_p


@pytree_dataclass
class Consumers:
    vmax: object  # (C, K) V_c, currency asked per unit time at saturating A
    km: object  # (C, K) K_c, the A of half-saturated demand
    tier: object  # (C, K) int32 in 0 .. N_TIERS-1 (0 first)
    value: object  # (C, K) work per unit of currency spent


@pytree_dataclass
class Ledger:  # cumulative per cell (C,), never decreasing
    produced: object  # currency made (D -> A)
    spent: object  # currency spent (A -> D)
    work: object  # sum over consumers of value x spent
    output: object  # specialised work: value x spent of the work tier (1), what differentiation pays for
    transported_out: object  # charged currency sent over junctions
    lost: object  # charge dissipated in transit (A arriving as D) on junctions this cell sent A over
    substrate_used: object  # substrate consumed by production
    failures: object  # producers failed (a count, stored as a float)
    births: object  # producers made (a count, stored as a float)
    switching: object  # currency spent changing theta (differentiation moves)


@pytree_dataclass
class State:
    cells: Cells
    producers: Producers
    consumers: Consumers
    ledger: Ledger
    diff: object  # sim.core.differentiation.DiffState: theta and its adaptation
    carriers: object  # sim.core.carriers.CarrierState: A split over competing carriers (zero width: one carrier)
    step: object  # int32 scalar


@pytree_dataclass
class Edges:
    src: object  # (E,) int32 cell index, src < dst
    dst: object  # (E,) int32
    conductance: object  # (E,) g, per unit time
    loss: object  # (E,) fraction of the charged flux that arrives discharged, in [0, 1]


@pytree_dataclass
class Params:
    dt: object  # time step
    supply_scale: object  # multiplier on producer capacity V_p (sweeps)
    demand_scale: object  # multiplier on consumer capacity V_c (sweeps; the demand knob)
    uptake_scale: object  # multiplier on the substrate exchange rate k_in (sweeps)
    conductance_scale: object  # multiplier on every junction conductance (sweeps)
    external: object  # S_ext, substrate outside the cells
    exchange_rate: object  # k_in, per unit time
    k_substrate: object  # K_S
    k_discharged: object  # K_D
    yield_: object  # currency made per unit of substrate used
    hazard: object  # h0, producer failures per producer per unit time
    birth_rate: object  # b, producer births per cell with a free slot per unit time
    edges: Edges
    diff: object  # sim.core.differentiation.DiffParams
    carriers: object  # sim.core.carriers.CarrierParams
