"""Diffusive exchange over junctions: J_e = g_e (X_src - X_dst) per species, as edge arrays.

Per step and edge e = (i, j): J = dt g_e p_s (X_i - X_j), zero if either cell is dead (closed
gap junctions). The sender loses |J|, the receiver gains (1 - loss_e) |J|, the rest is lost.
Fluxes are summed onto cells with segment sums (no loops over agents). Non-negativity holds
when dt * g * max_degree < 1, which the config validation enforces.

With several carriers (``carriers.n > 1``, :mod:`sim.core.carriers`) every nucleoside
triphosphate moves down its own gradient with the same law and ATP's permeability (they are
molecules of one size class through the same connexin pore), ``held[:, k]`` column by column; the
ATP column of the pools is their sum and the ATP ledgers (sent, received, lost) add the carriers'
flows, which can cross in opposite directions. ADP, AMP, Pi and glucose move as before.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sim.core import carriers
from sim.core.ops import materialize, segment_sum
from sim.pytree import replace
from sim.substrates.bio.state import ATP


def edge_fluxes(pools, alive, params):
    """Signed flux per edge and species (E, S) in mM over this step (positive: src -> dst)."""
    e = params.edges
    open_ = alive[e.src] & alive[e.dst]
    g = jnp.where(open_, e.conductance * params.conductance_scale * params.dt, 0.0)
    # written once (E, S): each of the (2E, 2S + 2) values booked below would otherwise gather
    # both ends' pools again (issue 10)
    return materialize(g[:, None] * params.permeability[None, :] * (pools[e.src] - pools[e.dst]))


def transport(state, params, key=None):
    e = params.edges
    n = state.cells.pools.shape[0]
    pools = state.cells.pools
    j = edge_fluxes(pools, state.cells.alive, params)
    fwd = jnp.maximum(j, 0.0)  # src -> dst
    back = jnp.maximum(-j, 0.0)  # dst -> src
    keep = (1.0 - e.loss)[:, None]
    leak = 1.0 - keep
    several = carriers.active(state.carriers)  # static: no carrier code is traced with one carrier
    extra_src = extra_dst = []
    if several:
        held = state.carriers.held
        open_ = state.cells.alive[e.src] & state.cells.alive[e.dst]
        g = jnp.where(open_, e.conductance * params.conductance_scale * params.dt, 0.0)
        jk = (g * params.permeability[ATP])[:, None] * (held[e.src] - held[e.dst])  # (E, K)
        fk, bk = jnp.maximum(jk, 0.0), jnp.maximum(-jk, 0.0)
        # the ATP column carries what the carriers send each way (they may cross)
        fwd = fwd.at[:, ATP].set(jnp.sum(fk, axis=1))
        back = back.at[:, ATP].set(jnp.sum(bk, axis=1))
        extra_src, extra_dst = [keep * bk - fk], [keep * fk - bk]
    # One scatter-add for everything each end of an edge books: pool change (S), ATP sent (1),
    # ATP received (1) and what leaked from it as sender (S) (and with carriers each carrier's
    # change (K)). What leaks is booked to the sender.
    at_src = jnp.concatenate(
        [keep * back - fwd, fwd[:, ATP, None], keep[:, 0, None] * back[:, ATP, None], leak * fwd] + extra_src, axis=1
    )
    at_dst = jnp.concatenate(
        [keep * fwd - back, back[:, ATP, None], keep[:, 0, None] * fwd[:, ATP, None], leak * back] + extra_dst, axis=1
    )
    booked = segment_sum(jnp.concatenate([at_src, at_dst]), jnp.concatenate([e.src, e.dst]), n)
    s = pools.shape[1]
    delta, out_atp, in_atp, lost = booked[:, :s], booked[:, s], booked[:, s + 1], booked[:, s + 2:2 * s + 2]
    led = state.ledger
    led = replace(
        led,
        transported_in=led.transported_in + in_atp,
        transported_out=led.transported_out + out_atp,
        lost=led.lost + lost,
    )
    # No clamp: with dt g max_degree p < 1 (validated) a cell sends at most a fraction < 1 of what
    # it holds, so pools stay >= 0 exactly; an unstable configuration shows up as a negative pool
    # that the engine's guard names, instead of mass silently created by clamping.
    new_pools = pools + delta
    if several:
        held = state.carriers.held + booked[:, 2 * s + 2:]
        new_pools = new_pools.at[:, ATP].set(jnp.sum(held, axis=1))
        state = replace(state, carriers=replace(state.carriers, held=held))
    return replace(state, cells=replace(state.cells, pools=new_pools), ledger=led)
