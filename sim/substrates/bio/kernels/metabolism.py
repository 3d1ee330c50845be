"""Uptake, production, consumption (priority tiers), repair and biogenesis costs.

All rates are evaluated on the state at the start of the step (explicit Euler), then applied
with limiters so no pool goes negative. Evaluating every reaction on the same state makes the
fixed point of the step map the exact root of supply = demand (no splitting error), which is
what the steady-state tests compare against.

Rate laws (docs/references.md, "The model in one table"), per producer p in cell i and consumer j:
  J_p = a V_p h_p S/(K_S+S) D/(K_D+D) Pi/(K_P+Pi) brake_p(dG)   [mM/s], glucose use J_p/yield_p
with D the free ADP and a = demand_scale ** parallel_activation the parallel activation of supply
(``capacity.supply_activation``; 1 in the preset)
  u_j = V_j A'/(K_j + A'), A' = max(A - R_tier, 0)               [mM/s]
R_tier is the ATP reserve a tier cannot draw below (energy sensing, e.g. AMPK/mTOR shutting down
translation when ATP falls): as a cell runs short it cuts biosynthesis (tier 1) before ion
pumping (tier 0), the hierarchy of Buttgereit & Brand 1995. Within one step demand is also
served tier by tier (0 first), proportionally within a tier, never more than the cell holds.

With several carriers (``carriers.n > 1``, :mod:`sim.core.carriers`; ATP is then the sum of the
nucleoside triphosphates a cell holds, ``State.carriers.held``) A in the consumers' law, in the
chains' and in the tier budget is what the cell's consumers can spend (``carriers.spendable``: the
carriers they accept in full, the others at ``1 - conversion_cost``, converted on demand by
nucleoside diphosphate kinase), while dG and the producers' brake keep the total. What was spent
(consumers and repair) is debited accepted carriers first (``carriers.debit``), then the recharge
``made`` is credited to the carrier the cell makes (``carriers.credit``). The charge lost in
conversion and to the production cost is hydrolysed on the spot (NTP -> NDP + Pi, the discharged
pool is shared): it goes to ADP and Pi and its |dG| to heat, booked with the hydrolysis energy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sim.core import carriers
from sim.substrates.bio.kernels.capacity import consumer_vmax, producer_scale
from sim.substrates.bio.kernels import translation
from sim.core.chains import chain_demand, chain_draws, chain_step
from sim.core.ops import materialize, per_step, rowsum, rowsums
from sim.substrates.bio.kernels.thermo import brake, dg_atp_kj
from sim.pytree import replace
from sim.substrates.bio.state import ADP, ATP, GLC, PI

N_TIERS = 3  # static: tiers 0..2 (maintenance, biosynthesis, optional)


def _safe_div(a, b):
    return jnp.where(b > 0, a / jnp.where(b > 0, b, 1.0), 0.0)


def per_slot(values, kind):
    """Spread per-kind values (C, nk) or (nk,) onto producer slots (C, P) by each slot's kind.

    A short static loop of selects beats a gather on CPU for the handful of producer kinds.
    """
    values = jnp.asarray(values)
    nk = values.shape[-1]
    if nk > 4:
        if values.ndim == 1:
            return values[kind]
        return jnp.take_along_axis(values, kind, axis=1)
    col = (lambda k: values[:, k, None]) if values.ndim == 2 else (lambda k: values[k])
    out = jnp.broadcast_to(col(nk - 1), kind.shape)
    for k in range(nk - 1):
        out = jnp.where(kind == k, col(k), out)
    return out


def kind_factors(pools, params, dg):
    """Saturation x thermodynamic-brake factor of each producer kind in each cell, (C, nk)."""
    s = pools[:, GLC, None]
    d = pools[:, ADP, None]
    pi = pools[:, PI, None]
    br = brake(dg[:, None], params.p_ceiling_kj[None, :], params.temperature_k)
    return (s / (params.p_k_s + s)) * (d / (params.p_k_adp + d)) * (pi / (params.p_k_pi + pi)) * br


def production_rates(state, params, factors):
    """Desired ATP synthesis per producer (C, P) in mM/s; ``factors``: :func:`rate_factors`."""
    prod = state.producers
    on = prod.alive & state.cells.alive[:, None]
    return jnp.where(on, prod.vmax * prod.health * per_slot(factors, prod.kind), 0.0)


def rate_factors(state, params, dg):
    """(C, nk) rate per unit capacity and health of each producer kind in each cell (1/s x mM/s per
    mM/s): ``capacity.producer_scale`` x :func:`kind_factors`, written once: the pass over the
    producer slots and the health update read one small array instead of each saturation term,
    the brake and the differentiation factor (issue 10)."""
    return materialize(producer_scale(state, params) * kind_factors(state.cells.pools, params, dg))


def consumption_demand(state, params, atp=None):
    """Unconstrained ATP demand per consumer slot (C, K) in mM/s and the saturated tier-0 rate.
    ``atp`` (C,) mM: the ATP the consumers see (default the pool; with several carriers what they
    can spend)."""
    cons = state.consumers
    atp = state.cells.pools[:, ATP] if atp is None else atp
    a = jnp.maximum(atp[:, None] - per_slot(params.tier_reserve, cons.tier), 0.0)
    vmax = consumer_vmax(state, params)
    alive = state.cells.alive[:, None]
    u = jnp.where(alive, vmax * a / (cons.km + a), 0.0)
    saturated0 = rowsum(jnp.where(alive & (cons.tier == 0), vmax, 0.0))
    return u, saturated0


def serve_tiers(demand, tier, available):
    """Serve ``demand`` (C, K) from ``available`` (C,) tier by tier; returns served (C, K) and rest."""
    served = jnp.zeros_like(demand)
    rest = available
    wants = rowsums(*(jnp.where(tier == t, demand, 0.0) for t in range(N_TIERS)))  # one pass over the slots
    for t in range(N_TIERS):
        want = wants[t]
        frac = jnp.where(want > rest, _safe_div(rest, want), 1.0)
        served = jnp.where(tier == t, demand * frac[:, None], served)
        rest = jnp.maximum(rest - frac * want, 0.0)
    return served, rest


def health_update(state, params, factors, f_prod, f_rep):
    """Every producer slot's health after this step's repair and wear (C, P), clipped to [0, 1]:
    h + r dt f_rep (1 - h) - damage_k load dt, with the repair rate r (1/s) scaled by the share
    f_rep of the wanted repair the cell could pay, and the load, the share of its capacity the
    producer ran at, j f_prod / vmax = factor_k h f_prod (``factors``: :func:`rate_factors`).
    Written as h (1 - wear_k) + mend (1 - h) with per-cell coefficients (wear_k = damage_k factor_k
    f_prod dt, mend = r dt f_rep), the pass over the slots reads health and kind, not the
    capacities and everything the rate depends on (issue 10: 20 -> 14 B/agent/step). A dead cell
    has f_prod = 0 (it produces nothing): no wear."""
    wear = params.p_damage * factors * (f_prod * params.dt)[:, None]
    mend = (params.repair_rate * params.dt) * f_rep
    h = state.producers.health
    return jnp.clip(h * (1.0 - per_slot(wear, state.producers.kind)) + mend[:, None] * (1.0 - h), 0.0, 1.0)


def set_columns(pools, columns: dict):
    """``pools`` (C, S) with the columns ``{index: (C,) values}`` replaced: one stacked array
    (one kernel) instead of a chain of ``.at[:, k]`` updates that each rewrite the whole block."""
    return jnp.stack([columns[k] if k in columns else pools[:, k] for k in range(pools.shape[1])], axis=1)


def metabolism(state, params, key=None):
    """One Euler step of uptake, production, consumption, repair; updates pools and ledgers."""
    dt = params.dt
    cells, led = state.cells, state.ledger
    # kinds and capacities computed on in this step, not hoisted out of the scan (ops.per_step)
    kind, vmax = per_step((state.producers.kind, state.producers.vmax), cells.pools)
    prod = replace(state.producers, kind=kind, vmax=vmax)
    state = replace(state, producers=prod)
    pools = cells.pools
    s, a, d, pi = pools[:, GLC], pools[:, ATP], pools[:, ADP], pools[:, PI]
    dg = dg_atp_kj(a, d, pi, params.dg0_kj, params.temperature_k)
    abs_dg = jnp.abs(dg)

    # substrate uptake from the surroundings (capillary supply), only by living cells
    uptake = jnp.where(
        cells.alive, params.uptake_scale * cells.uptake * (params.external_substrate - s) * dt, 0.0
    )
    # a cell can at most empty itself into the surroundings. Written once: the ledger's kernel
    # recomputed it from the step-start pools, a read of the old pools no writer of the new ones
    # depends on, so XLA copied the pools every step (issue 10: -2.6 B/agent/step)
    uptake = materialize(jnp.maximum(uptake, -s))

    # production, limited by ADP, Pi and glucose present at the start of the step
    # One pass over the producer slots for every per-cell sum of this step (the limiter f_prod and
    # the repair fraction f_rep are per cell, so they scale the sums, not the slots); a second pass
    # updates their health.
    factors = rate_factors(state, params, dg)
    j = production_rates(state, params, factors)
    kind = prod.kind
    inv_yield = per_slot(1.0 / params.p_yield, kind)
    j_glc = j * inv_yield
    repair_want_h = jnp.where(prod.alive, params.repair_rate * (1.0 - prod.health) * dt, 0.0)
    sum_j, sum_glc, sum_energy, sum_repair_h = rowsums(
        j, j_glc, j_glc * per_slot(jnp.abs(params.p_substrate_dg_kj), kind), repair_want_h)
    want_atp = sum_j * dt
    want_glc = sum_glc * dt
    limit = jnp.minimum(
        jnp.minimum(_safe_div(d, want_atp), _safe_div(pi, want_atp)), _safe_div(s, want_glc)
    )
    # per-cell factors that scale per-slot arrays are written once (C,): the producer health update
    # would otherwise recompute them, with everything they depend on, for every slot (issue 10)
    f_prod = materialize(jnp.where(want_atp > 0, jnp.minimum(1.0, limit), 0.0))
    made = want_atp * f_prod  # = the sum of each producer's j dt f_prod
    glc_used = want_glc * f_prod
    substrate_energy = (sum_energy * dt * f_prod) * params.volume_l

    # consumption by priority tier, limited by ATP present at the start of the step; the chains
    # (ribosome cohorts) quote their demand in place of the consumer kind they realise, are
    # served in its tier and spend at most the share granted (sim.substrates.bio.kernels.translation)
    several = carriers.active(state.carriers)  # static: no carrier code is traced with one carrier
    if several:  # the consumers see what they can spend of the step-start holdings
        a = carriers.spendable(state.carriers, params.carriers)
    u, saturated0 = consumption_demand(state, params, a if several else None)
    want = u * dt
    chains_on = translation.has_chains(state)
    if chains_on:
        with jax.named_scope("chains"):  # kernel metadata only (bench_step_work.py where)
            is_chain = state.consumers.kind == params.chain_kind
            cp, cohort = translation.chain_params(state, params, is_chain, per_slot, a if several else None)
            # drawn once for the quote and the step (chains.chain_draws: the hash traced once)
            draws = chain_draws(key, state.step, *state.chains.active.shape)
            chain_want = chain_demand(state.chains, state.chain_ledger, cp, key, state.step, draws=draws)
            want = jnp.where(is_chain, chain_want[:, None], want)
    served, rest = serve_tiers(want, state.consumers.tier, a)
    work = served * state.consumers.value
    if chains_on:
        with jax.named_scope("chains"):
            share = rowsum(jnp.where(is_chain, served, 0.0))
            budget = jnp.where(share < chain_want, share, jnp.inf)  # inf: served in full
            chains, chain_led, chain_spent, info = chain_step(
                state.chains, state.chain_ledger, cp, key, state.step, budget, details=True, draws=draws
            )
            served = jnp.where(is_chain, chain_spent[:, None], served)
            work = jnp.where(is_chain, (info["units"] * cohort)[:, None], work)  # amino acids (mM)
        state = replace(state, chains=chains, chain_ledger=chain_led)
    # every per-cell sum over the consumer slots after serving, in one pass
    spent_consumers, tier0, output = rowsums(
        served, jnp.where(state.consumers.tier == 0, served, 0.0),
        jnp.where(params.c_specialised[state.consumers.kind] > 0, work, 0.0))
    maintenance = jnp.where(saturated0 > 0, _safe_div(tier0, saturated0 * dt), 1.0)

    # repair of damaged producers, served after all consumers
    repair_cost = params.repair_cost * sum_repair_h
    f_rep = materialize(jnp.where(repair_cost > rest, _safe_div(rest, repair_cost), 1.0))
    repair_spent = repair_cost * f_rep

    spent_total = spent_consumers + repair_spent
    if several:
        new_pools = pools.at[:, GLC].add(uptake - glc_used)
        # spent from the step-start holdings (at most what was spendable), then the recharge made
        cs, lost = carriers.debit(state.carriers, params.carriers, spent_total)
        cs, lost_made = carriers.credit(cs, params.carriers, made)
        lost = lost + lost_made  # charge hydrolysed converting and making carriers
        new_pools = new_pools.at[:, ADP].add((spent_total - made) + lost)
        new_pools = new_pools.at[:, PI].add((spent_total - made) + lost)
        new_pools = jnp.maximum(new_pools, 0.0).at[:, ATP].set(jnp.sum(cs.held, axis=1))
        state = replace(state, carriers=cs)
        hydrolysis_energy = (spent_total + lost) * abs_dg * params.volume_l
    else:  # only round-off can reach below zero here
        new_pools = jnp.maximum(set_columns(pools, {GLC: s + (uptake - glc_used), ATP: a + (made - spent_total),
                                                    ADP: d + (spent_total - made), PI: pi + (spent_total - made)}), 0.0)
        hydrolysis_energy = spent_total * abs_dg * params.volume_l
    stored_energy = made * abs_dg * params.volume_l
    led = replace(
        led,
        produced=led.produced + made,
        spent=led.spent + served,
        repair_spent=led.repair_spent + repair_spent,
        work=led.work + work,
        output=led.output + output,
        substrate_used=led.substrate_used + glc_used,
        substrate_uptake=led.substrate_uptake + uptake,
        substrate_energy_j=led.substrate_energy_j + substrate_energy,
        stored_energy_j=led.stored_energy_j + stored_energy - hydrolysis_energy,
        heat_j=led.heat_j + (substrate_energy - stored_energy) + hydrolysis_energy,
        hydrolysis_energy_j=led.hydrolysis_energy_j + hydrolysis_energy,
        repair_health=led.repair_health + sum_repair_h * f_rep,
    )
    # damage grows with relative load (ROS / wear); applied here since it needs this step's flux
    health = jnp.where(prod.alive, health_update(state, params, factors, f_prod, f_rep), prod.health)
    return replace(
        state,
        cells=replace(cells, pools=new_pools, maintenance=maintenance),
        producers=replace(prod, health=health),
        ledger=led,
    )
