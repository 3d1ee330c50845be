"""The processes of one step of the generic substrate, each a pure ``(state, params, key) -> state``.

Explicit Euler steps of length ``dt``; every quantity is dimensionless. Per cell i, in this order:

``supply``       S += dt k_in u (S_ext - S)                        (u = uptake_scale)
``production``   P = dt f_p sum_k alive_k V_k s h_k  S/(K_S+S)  D/(K_D+D)   (s = supply_scale)
                 A += P, D -= P, S -= P / Y; produced += P, substrate_used += P / Y
``consumption``  q_k = dt V_k d A/(K_k+A) (d = demand_scale, A at the start of the process; x f_w
                 for the work tier 1);
                 tier 0 is served first, then tier 1, from what is left; a tier asking
                 Q = sum q_k > A gets the fraction A / Q of each request and leaves A = 0.
                 A -= spent, D += spent; spent += sum spent_k, work += sum value_k spent_k,
                 output += the same sum over the work tier (1) only
``transport``    per junction e = (i, j) and carrier form X in (A, D):
                 J = dt g_e c (X_i - X_j) (c = conductance_scale; 0 unless both cells are alive);
                 the sender loses |J|; the receiver gains |J| of D, and of A it gains (1 - loss_e)|J|
                 while loss_e |J| arrives discharged (as D): moving currency dissipates a fraction of
                 its charge, the carrier itself is conserved. The sender's ledger books loss_e |J_A|
                 as lost and |J_A| as transported_out (segment sums, no loops)
``failure``      a living producer fails with probability 1 - exp(-h0 dt), from the draw
                 ``sim.rng.uniforms(key, step, PRODUCER_FAILURE, id)``, id = cell * slots + slot
``birth``        a living cell with a free slot revives its first free slot with probability
                 1 - exp(-b dt), from the draw ``sim.rng.uniforms(key, step, PRODUCER_BIRTH, cell)``

``adaptation``   (only with ``differentiation.rule`` imitation | gradient: :mod:`sim.core.differentiation`)

With several carriers (``carriers.n > 1``, :mod:`sim.core.carriers`) A is split as held[i, k]:
production credits the carrier the cell makes (less its production cost, dissipated to D);
consumption rations what the cell's consumers can spend (accepted carriers in full, the others at
1 - conversion_cost) and takes it accepted-first; transport moves every carrier down its own
gradient with the junction's loss; the appended processes ``carrier_upkeep`` (storage decay,
background conversion) and ``carrier_strategy`` (imitation) run last. With one carrier these
branches are not traced: the program is the one-currency program.

f_p = (2 theta)^alpha and f_w = (2 (1 - theta))^alpha are the differentiation factors of the cell's
theta (:mod:`sim.core.differentiation`; both 1 for a generalist, theta = 1/2, the default).
A + D of a cell changes only by transport, so sum_i (A_i + D_i) is constant.
Production and transport need no clamp when dt passes the build's stability check; consumption
is rationed, so A never goes below zero.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sim import rng
from sim.core import carriers
from sim.core.differentiation import production_factor, work_factor
from sim.core.ops import rowsum
from sim.pytree import replace
from sim.substrates.generic.state import N_TIERS


def supply(state, params, key=None):
    c = state.cells
    ds = params.dt * params.exchange_rate * params.uptake_scale * (params.external - c.s)
    return replace(state, cells=replace(c, s=c.s + jnp.where(c.alive, ds, 0.0)))


def production(state, params, key=None):
    c, p = state.cells, state.producers
    s, d = c.s, c.d
    sat = (s / (params.k_substrate + s)) * (d / (params.k_discharged + d))
    rate = jnp.where(p.alive & c.alive[:, None], p.vmax * params.supply_scale * p.health, 0.0)
    made = params.dt * rowsum(rate) * production_factor(state.diff.theta, params.diff.alpha) * sat
    used = made / params.yield_
    if carriers.active(state.carriers):
        cs, lost = carriers.credit(state.carriers, params.carriers, made)
        cells = replace(c, s=s - used, a=jnp.sum(cs.held, axis=1), d=d - made + lost)
        state = replace(state, carriers=cs)
    else:
        cells = replace(c, s=s - used, a=c.a + made, d=d - made)
    led = replace(state.ledger, produced=state.ledger.produced + made,
                  substrate_used=state.ledger.substrate_used + used)
    return replace(state, cells=cells, ledger=led)


def consumption(state, params, key=None):
    c, k = state.cells, state.consumers
    several = carriers.active(state.carriers)
    a0 = carriers.spendable(state.carriers, params.carriers) if several else c.a  # others at their conversion price
    ask = params.dt * k.vmax * params.demand_scale * a0[:, None] / (k.km + a0[:, None])
    f_w = work_factor(state.diff.theta, params.diff.alpha)[:, None]
    ask = jnp.where(c.alive[:, None], jnp.where(k.tier == 1, ask * f_w, ask), 0.0)
    a, spent = a0, jnp.zeros_like(ask)
    for t in range(N_TIERS):
        mine = k.tier == t
        q = jnp.where(mine, ask, 0.0)
        total = rowsum(q)
        short = total > a
        share = jnp.where(short, a / jnp.where(short, total, 1.0), 1.0)
        spent = spent + q * share[:, None]
        a = jnp.where(short, 0.0, a - total)
    out = rowsum(spent)
    lost = 0.0
    if several:
        cs, lost = carriers.debit(state.carriers, params.carriers, out)
        state, a = replace(state, carriers=cs), jnp.sum(cs.held, axis=1)
    cells = replace(c, a=a, d=c.d + out + lost)
    done = k.value * spent
    led = replace(state.ledger, spent=state.ledger.spent + out, work=state.ledger.work + rowsum(done),
                  output=state.ledger.output + rowsum(jnp.where(k.tier == 1, done, 0.0)))
    return replace(state, cells=cells, ledger=led)


def transport(state, params, key=None):
    if carriers.active(state.carriers):
        return _transport_carriers(state, params)
    c, e = state.cells, params.edges
    n = c.alive.shape[0]
    x = jnp.stack([c.a, c.d], axis=1)  # (C, 2)
    g = jnp.where(c.alive[e.src] & c.alive[e.dst], params.dt * e.conductance * params.conductance_scale, 0.0)
    j = g[:, None] * (x[e.src] - x[e.dst])  # (E, 2), positive: src -> dst
    fwd, back = jnp.maximum(j, 0.0), jnp.maximum(-j, 0.0)
    # charge dissipated in transit: of the A each end receives, loss_e arrives as D
    fa, ba = fwd[:, 0] * e.loss, back[:, 0] * e.loss
    # per end of a junction: change of A, change of D, A sent, charge lost (booked to the sender)
    at_src = jnp.stack([back[:, 0] - ba - fwd[:, 0], back[:, 1] + ba - fwd[:, 1], fwd[:, 0], fa], axis=1)
    at_dst = jnp.stack([fwd[:, 0] - fa - back[:, 0], fwd[:, 1] + fa - back[:, 1], back[:, 0], ba], axis=1)
    booked = jax.ops.segment_sum(jnp.concatenate([at_src, at_dst]), jnp.concatenate([e.src, e.dst]),
                                 num_segments=n)
    cells = replace(c, a=c.a + booked[:, 0], d=c.d + booked[:, 1])
    led = replace(state.ledger, transported_out=state.ledger.transported_out + booked[:, 2],
                  lost=state.ledger.lost + booked[:, 3])
    return replace(state, cells=cells, ledger=led)


def _transport_carriers(state, params):
    """``transport`` with the charged pool split over carriers: every carrier moves down its own
    gradient with the junction's loss (the same law column by column; it is linear, so the total A
    moves exactly as one pool would)."""
    c, e, cs = state.cells, params.edges, state.carriers
    n = c.alive.shape[0]
    g = jnp.where(c.alive[e.src] & c.alive[e.dst], params.dt * e.conductance * params.conductance_scale, 0.0)
    ja = g[:, None] * (cs.held[e.src] - cs.held[e.dst])  # (E, K)
    jd = g * (c.d[e.src] - c.d[e.dst])
    fwd, back = jnp.maximum(ja, 0.0), jnp.maximum(-ja, 0.0)
    fa, ba = fwd * e.loss[:, None], back * e.loss[:, None]
    dfwd, dback = jnp.maximum(jd, 0.0), jnp.maximum(-jd, 0.0)
    k = ja.shape[1]
    at_src = jnp.concatenate([back - ba - fwd, jnp.stack([dback + ba.sum(1) - dfwd, fwd.sum(1), fa.sum(1)], 1)], 1)
    at_dst = jnp.concatenate([fwd - fa - back, jnp.stack([dfwd + fa.sum(1) - dback, back.sum(1), ba.sum(1)], 1)], 1)
    booked = jax.ops.segment_sum(jnp.concatenate([at_src, at_dst]), jnp.concatenate([e.src, e.dst]),
                                 num_segments=n)
    held = cs.held + booked[:, :k]
    cells = replace(c, a=jnp.sum(held, axis=1), d=c.d + booked[:, k])
    led = replace(state.ledger, transported_out=state.ledger.transported_out + booked[:, k + 1],
                  lost=state.ledger.lost + booked[:, k + 2])
    return replace(state, cells=cells, ledger=led, carriers=replace(cs, held=held))


def failure(state, params, key):
    p = state.producers
    n, slots = p.alive.shape
    u = rng.uniforms(key, state.step, rng.PRODUCER_FAILURE, jnp.arange(n * slots, dtype=jnp.uint32)).reshape(n, slots)
    fails = p.alive & (u < -jnp.expm1(-params.hazard * params.dt))
    led = replace(state.ledger, failures=state.ledger.failures + rowsum(fails.astype(state.ledger.failures.dtype)))
    return replace(state, producers=replace(p, alive=p.alive & ~fails), ledger=led)


def birth(state, params, key):
    p, c = state.producers, state.cells
    n, slots = p.alive.shape
    u = rng.uniforms(key, state.step, rng.PRODUCER_BIRTH, jnp.arange(n, dtype=jnp.uint32))
    free = ~p.alive
    born = c.alive & jnp.any(free, axis=1) & (u < -jnp.expm1(-params.birth_rate * params.dt))
    new = born[:, None] & (jnp.arange(slots)[None, :] == jnp.argmax(free, axis=1)[:, None])
    led = replace(state.ledger, births=state.ledger.births + born.astype(state.ledger.births.dtype))
    return replace(state, producers=replace(p, alive=p.alive | new), ledger=led)


PROCESSES = (
    ("supply", supply),
    ("production", production),
    ("consumption", consumption),
    ("transport", transport),
    ("failure", failure),
    ("birth", birth),
)


def pay(state, params, amount):
    """Differentiation hook: a move's cost is charged currency spent (A -> D), booked as switching."""
    c = state.cells
    led = replace(state.ledger, switching=state.ledger.switching + amount)
    if carriers.active(state.carriers):  # paid from every carrier held, pro rata
        held = carriers.discharge(state.carriers.held, c.a, amount)
        return replace(state, cells=replace(c, a=jnp.sum(held, axis=1), d=c.d + amount), ledger=led,
                       carriers=replace(state.carriers, held=held))
    return replace(state, cells=replace(c, a=c.a - amount, d=c.d + amount), ledger=led)


def settle(state, params, held, dissipated):
    """Carrier hook: the charged pool becomes ``held`` summed over carriers; ``dissipated`` goes to D."""
    c = state.cells
    return replace(state, cells=replace(c, a=jnp.sum(held, axis=1), d=c.d + dissipated),
                   carriers=replace(state.carriers, held=held))
