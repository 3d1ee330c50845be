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
  producers (conf/substrate/bio.yaml explains the calibration).
- stress: while maintenance (tier 0 served / saturated tier-0 demand) < stress_threshold a cell
  accumulates stress (s); otherwise it recovers at stress_recovery s/s. At stress_death_s the
  cell dies: its producers stop and its junctions close; its pools stay (they are not lost).

With several carriers (:mod:`sim.core.carriers`) what biogenesis and a differentiation move cost is
paid from every nucleoside triphosphate the cell holds, pro rata (``carriers.discharge``: building
a mitochondrion takes ATP and GTP alike), and the ATP column is the carriers' sum.
"""

from __future__ import annotations

import jax.numpy as jnp

from sim import rng
from sim.core import carriers, rare_events
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
    free = ~prod.alive
    has_free = jnp.any(free, axis=1)
    born = (
        cells.alive
        & has_free
        & (pools[:, ATP] >= params.birth_cost)
        & (u < p_birth)
    )
    slot = jnp.argmax(free, axis=1)
    new_mask = born[:, None] & (jnp.arange(p)[None, :] == slot[:, None])
    cost = jnp.where(born, params.birth_cost, 0.0)
    # the ATP hydrolysed for the new producer releases |dG| per mol and ends as heat, booked like
    # the consumers' and repair's (sim.substrates.bio.kernels.metabolism), so the energy ledger covers every ATP spent
    abs_dg = jnp.abs(dg_atp_kj(pools[:, ATP], pools[:, ADP], pools[:, PI], params.dg0_kj, params.temperature_k))
    energy = cost * abs_dg * params.volume_l
    new_pools = set_columns(pools, {ATP: pools[:, ATP] - cost, ADP: pools[:, ADP] + cost, PI: pools[:, PI] + cost})
    state, new_pools = _pay_from_carriers(state, new_pools, cost)
    led = state.ledger
    led = replace(
        led,
        births=led.births + born.astype(led.births.dtype),
        birth_spent=led.birth_spent + cost,
        heat_j=led.heat_j + energy,
        hydrolysis_energy_j=led.hydrolysis_energy_j + energy,
        stored_energy_j=led.stored_energy_j - energy,
    )
    prod = replace(prod, alive=prod.alive | new_mask, health=jnp.where(new_mask, 1.0, prod.health))
    return replace(state, producers=prod, cells=replace(cells, pools=new_pools, ec_slow=ec_slow), ledger=led)


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
    prod = replace(state.producers, alive=state.producers.alive & alive[:, None])
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
