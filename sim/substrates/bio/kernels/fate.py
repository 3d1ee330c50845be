"""Producer failure and biogenesis, cell stress and death (the stochastic, discrete events).

Draws come from ``sim.rng.uniforms`` keyed by (seed, step, purpose, agent id), so the Mesa
reference sees the same numbers agent by agent.
- failure: hazard lambda = hazard0 exp(beta (1 - h)) per s; a producer fails in a step with
  probability 1 - exp(-lambda dt), independently; one draw per cell decides them all
  (:mod:`sim.core.rare_events`).
- biogenesis is driven by energy stress (AMPK -> PGC-1alpha; Jaeger et al. 2007, Hardie, Ross &
  Hawley 2012): each living cell carries a slow energy-charge signal, the exponential moving
  average ec_slow += (1 - exp(-dt/tau)) (EC - ec_slow) of its energy charge after adenylate
  kinase (time constant tau = birth_tau); EC is that of the total pools, bound ADP and AMP
  included (``thermo.energy_charge_of``), the charge the set point was calibrated on. Its birth rate rises linearly as ec_slow falls below the
  set point, rate = birth_rate min(1, max(0, (birth_ec_set - ec_slow) / birth_ec_span)): none at
  or above the set point, the full birth_rate at a deficit of birth_ec_span. A cell with
  ATP >= birth_cost and a free slot makes one producer (health 1) in its first free slot if
  u < 1 - exp(-rate dt); the cost is paid in ATP (-> ADP + Pi). Damage and failure (mitophagy)
  remove producers, so at rest births replace failures and under sustained demand the cell adds
  producers (conf/substrate/bio.yaml explains the calibration). Every condition but the free slot
  is decided for all cells; the rare candidates are resolved a window of cells at a time
  (:func:`sim.core.rare_events.resolve_candidates`), so a step without a birth touches no producer
  array and no ledger (with several carriers every cell is resolved at once, as before).
- stress: while maintenance (tier 0 served / saturated tier-0 demand) < stress_threshold a cell
  accumulates stress (s); otherwise it recovers at stress_recovery s/s. At stress_death_s the
  cell dies: its producers stop (only dead cells that still have a living producer are touched, a
  window at a time) and its junctions close; its pools stay (they are not lost).

With several carriers (:mod:`sim.core.carriers`) what biogenesis and a differentiation move cost is
paid from every nucleoside triphosphate the cell holds, pro rata (``carriers.discharge``: building
a mitochondrion takes ATP and GTP alike), and the ATP column is the carriers' sum.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sim import rng
from sim.core import carriers, rare_events
from sim.core.ops import materialize
from sim.substrates.bio.kernels.metabolism import set_columns
from sim.substrates.bio.kernels.thermo import dg_atp_kj, energy_charge_of
from sim.pytree import replace
from sim.substrates.bio.state import ADP, ATP, PI


def producer_failure(state, params, key):
    """Each living producer fails with hazard ``hazard0 exp(beta (1 - h))`` (1/s) in the step, with
    probability 1 - exp(-hazard dt), independently of the others; one uniform per cell decides the
    cell's whole pattern (:mod:`sim.core.rare_events`). The bound S hazard0 exp(beta (1 - h_min))
    (S slots, h_min the least healthy living producer) rules out almost every cell with one exp; the
    rest (~4e-6 of the cells per step at rest in the biology preset) are resolved exactly."""
    prod = state.producers
    # the health metabolism just computed, written once by its own kernel (the divide of
    # ``materialize``): without it XLA recomputed the damage update inside this process's h_min
    # kernel and copied the health array at the end of the step (birth windows carry it in place),
    # 28 B/agent/step more (issue 10). ``bench_step_work.py where`` books that kernel here.
    prod = replace(prod, health=materialize(prod.health))
    c, p = prod.alive.shape
    u = rng.uniforms(key, state.step, rng.PRODUCER_FAILURE_CELL, jnp.arange(c, dtype=jnp.uint32))
    h_min = jnp.min(jnp.where(prod.alive, prod.health, 1.0), axis=1)
    bound = rare_events.bound_probability(p * _hazard(h_min, params.hazard0, params.hazard_beta), params.dt)
    candidates = u < bound

    def resolve(rows, carry, pending):
        u_w, health_w, hazard0, beta, dt = rows
        alive_w, failures_w = carry
        rates = jnp.where(alive_w, _hazard(health_w, hazard0[:, None], beta[:, None]), 0.0)
        fails = rare_events.pattern(u_w, rates, dt, pending)
        return alive_w & ~fails, failures_w + jnp.sum(fails, axis=1, dtype=failures_w.dtype)

    # per-row copies of the scalars: under vmap the rows of every replicate are resolved together
    per_row = lambda x: jnp.broadcast_to(jnp.asarray(x, u.dtype), (c,))  # noqa: E731
    rows = (u, prod.health, per_row(params.hazard0), per_row(params.hazard_beta), per_row(params.dt))
    alive, failures = rare_events.resolve_candidates(candidates, rows, (prod.alive, state.ledger.failures), resolve)
    return replace(state, producers=replace(prod, alive=alive), ledger=replace(state.ledger, failures=failures))


def _hazard(health, hazard0, beta):
    """Failure hazard (1/s) of a producer of this health: hazard0 exp(beta (1 - health))."""
    return hazard0 * jnp.exp(beta * (1.0 - health))


def producer_biogenesis(state, params, key):
    prod, cells = state.producers, state.cells
    c, p = prod.alive.shape
    u = rng.uniforms(key, state.step, rng.PRODUCER_BIRTH, jnp.arange(c, dtype=jnp.uint32))
    pools = cells.pools
    ec = energy_charge_of(pools, params)
    alpha = -jnp.expm1(-params.dt / params.birth_tau)
    ec_slow = jnp.where(cells.alive, cells.ec_slow + alpha * (ec - cells.ec_slow), cells.ec_slow)
    stress = jnp.clip((params.birth_ec_set - ec_slow) / params.birth_ec_span, 0.0, 1.0)
    p_birth = -jnp.expm1(-(params.birth_rate * stress) * params.dt)
    # the cells that make a producer this step (the slot is found in their window); the free-slot
    # test (one read of the (C, slots) mask) keeps full cells under stress from being resolved
    # again every step for nothing
    has_free = jnp.any(~prod.alive, axis=1)
    candidates = cells.alive & has_free & (pools[:, ATP] >= params.birth_cost) & (u < p_birth)
    cells = replace(cells, ec_slow=ec_slow)
    led = state.ledger
    carry = (prod.alive, prod.health, pools, led.births, led.birth_spent, led.heat_j, led.hydrolysis_energy_j,
             led.stored_energy_j)
    if carriers.active(state.carriers):  # static: the carriers' pro-rata payment, every cell at once
        out = _births(candidates, _birth_rows(params, c, pools.dtype), carry, state.carriers.held)
        alive, health, new_pools, births, spent, heat, hyd, stored, held = out
        state = replace(state, carriers=replace(state.carriers, held=held))
    else:
        # a birth is rare (~1e-6 of the cells per step at rest): only windows of candidate cells are
        # touched (sim.core.rare_events), so a step without one writes no (C, slots) producer array
        # and no ledger (issue 10: this process moved 48 B/agent/step densely)
        alive, health, new_pools, births, spent, heat, hyd, stored = _births_rare(
            candidates, _birth_rows(params, c, pools.dtype), carry)
    led = replace(led, births=births, birth_spent=spent, heat_j=heat, hydrolysis_energy_j=hyd,
                  stored_energy_j=stored)
    prod = replace(prod, alive=alive, health=health)
    return replace(state, producers=prod, cells=replace(cells, pools=new_pools), ledger=led)


def _birth_rows(params, c, dtype):
    """The scalars a birth needs, one copy per cell (under vmap the rows of every replicate are
    resolved together, :func:`sim.core.rare_events.resolve_candidates`)."""
    per_row = lambda x: jnp.broadcast_to(jnp.asarray(x, dtype), (c,))  # noqa: E731
    return tuple(per_row(x) for x in (params.birth_cost, params.dg0_kj, params.temperature_k, params.volume_l))


def _births(candidates, rows, carry, held=None):
    """Births in the rows ``candidates`` marks (each row independent, so a window of rows or all of
    them): a candidate with a free slot makes one producer (health 1) in its first free slot and pays
    ``birth_cost`` of ATP (-> ADP + Pi), whose released energy |dG| ends as heat, booked like the
    consumers' and repair's (sim.substrates.bio.kernels.metabolism), so the energy ledger covers every
    ATP spent. Rows without a birth come back unchanged bit for bit (x + 0, x - 0)."""
    cost_per, dg0, temperature, volume = rows
    alive, health, pools, births, spent, heat, hyd, stored = carry
    p = alive.shape[1]
    free = ~alive
    born = candidates & jnp.any(free, axis=1)
    slot = jnp.argmax(free, axis=1)
    new_mask = born[:, None] & (jnp.arange(p)[None, :] == slot[:, None])
    cost = jnp.where(born, cost_per, 0.0)
    abs_dg = jnp.abs(dg_atp_kj(pools[:, ATP], pools[:, ADP], pools[:, PI], dg0, temperature))
    energy = cost * abs_dg * volume
    new_pools = set_columns(pools, {ATP: pools[:, ATP] - cost, ADP: pools[:, ADP] + cost, PI: pools[:, PI] + cost})
    out = (alive | new_mask, jnp.where(new_mask, 1.0, health), new_pools, births + born.astype(births.dtype),
           spent + cost, heat + energy, hyd + energy, stored - energy)
    if held is None:
        return out
    held = carriers.discharge(held, pools[:, ATP], cost)
    return out[:2] + (new_pools.at[:, ATP].set(jnp.sum(held, axis=1)),) + out[3:] + (held,)


@jax.custom_jvp
def _births_rare(candidates, rows, carry):
    """:func:`_births` of the candidate rows only, a window at a time (``rare_events``); the same
    numbers bit for bit as :func:`_births` of every row."""
    return rare_events.resolve_candidates(candidates, rows, carry,
                                          lambda rows_w, carry_w, pending: _births(pending, rows_w, carry_w))


@_births_rare.defjvp
def _births_rare_jvp(primals, tangents):
    # derivatives of the dense form (the cost and its heat depend smoothly on the pools and
    # parameters): the candidate loop's own rule would pass every tangent through unchanged
    return jax.jvp(_births, primals, tangents)


def cell_stress(state, params, key=None):
    cells = state.cells
    stressed = cells.maintenance < params.stress_threshold
    stress = jnp.where(
        stressed,
        cells.stress + params.dt,
        jnp.maximum(cells.stress - params.stress_recovery * params.dt, 0.0),
    )
    stress = jnp.where(cells.alive, stress, cells.stress)
    dies = cells.alive & (stress >= params.stress_death_s)
    alive = cells.alive & ~dies
    # a dead cell's producers stop; cells die rarely, so only windows of dead cells that still have a
    # living producer are touched (sim.core.rare_events): a step without one writes no producer mask
    pa = state.producers.alive
    stop = ~alive & jnp.any(pa, axis=1)
    pa = rare_events.resolve_candidates(stop, (), pa, lambda rows_w, alive_w, pending: alive_w & ~pending[:, None])
    prod = replace(state.producers, alive=pa)
    return replace(state, cells=replace(cells, stress=stress, alive=alive), producers=prod)


def pay_for_move(state, params, amount):
    """Differentiation hook (``sim.core.differentiation``): ``amount`` (C,) mM ATP hydrolysed to
    rebuild a cell's machinery when its theta moves (ATP -> ADP + Pi), booked as ``switching`` and,
    like biogenesis, as released energy that ends as heat."""
    pools = state.cells.pools
    abs_dg = jnp.abs(dg_atp_kj(pools[:, ATP], pools[:, ADP], pools[:, PI], params.dg0_kj, params.temperature_k))
    energy = amount * abs_dg * params.volume_l
    new_pools = pools.at[:, ATP].add(-amount).at[:, ADP].add(amount).at[:, PI].add(amount)
    state, new_pools = _pay_from_carriers(state, new_pools, amount)
    led = state.ledger
    led = replace(led, switching=led.switching + amount, heat_j=led.heat_j + energy,
                  hydrolysis_energy_j=led.hydrolysis_energy_j + energy, stored_energy_j=led.stored_energy_j - energy)
    return replace(state, cells=replace(state.cells, pools=new_pools), ledger=led)


def _pay_from_carriers(state, new_pools, amount):
    """With several carriers: ``amount`` (C,) mM taken from every carrier held pro rata, and the ATP
    column of ``new_pools`` set to their sum. With one carrier (static) nothing changes."""
    if not carriers.active(state.carriers):
        return state, new_pools
    cs = state.carriers
    held = carriers.discharge(cs.held, state.cells.pools[:, ATP], amount)
    return replace(state, carriers=replace(cs, held=held)), new_pools.at[:, ATP].set(jnp.sum(held, axis=1))
