"""Diffusive exchange over junctions: J_e = g_e (X_src - X_dst) per species, as edge arrays.

Per step and edge e = (i, j): J = dt g_e p_s (X_i - X_j), zero if either cell is dead (closed
gap junctions). The sender loses |J|, the receiver gains (1 - loss_e) |J|, the rest is lost.
Fluxes are summed onto cells with segment sums (no loops over agents): one scatter-add over the
2E edge ends of each cell's pool change, ATP sent and ATP received (7 columns, padded to 8), and a
second one of what leaked (booked to the sender) that runs only when some junction leaks.
Non-negativity holds when dt * g * max_degree < 1, which the config validation enforces.

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
from sim.core.ops import any_in_batch, materialize, segment_sum
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
    # One scatter-add for what each end of an edge books: pool change (S), ATP sent (1), ATP
    # received (1) (and with carriers each carrier's change (K)); src rows first, then dst rows.
    at_src = [keep * back - fwd, fwd[:, ATP, None], keep[:, 0, None] * back[:, ATP, None]] + extra_src
    at_dst = [keep * fwd - back, back[:, ATP, None], keep[:, 0, None] * fwd[:, ATP, None]] + extra_dst
    ends = jnp.concatenate([e.src, e.dst])
    booked = _scattered(at_src, at_dst, ends, n)
    s = pools.shape[1]
    delta, out_atp, in_atp = booked[:, :s], booked[:, s], booked[:, s + 1]
    led = state.ledger
    # What leaks is booked to the sender, by a scatter of its own that runs only when some junction
    # leaks: without loss (the preset) nothing is lost and the step scatters 7 columns (8 with the
    # pad) instead of 12 (issue 10). Splitting the columns changes no sum (each column is summed
    # alone, its rows in the same order). With batched parameters it runs for the whole batch when
    # any member leaks (``ops.any_in_batch``), adding exact zeros for the others. With loss this process
    # is ~1.25x slower than one 12-column scatter (two passes over the 2E rows; the whole step is
    # still faster than before issue 10's round two), and ~1.2x faster without.
    # The branch takes the fluxes ``j``, written once anyway, not fwd and back: a branch operand is
    # a buffer, and two more (E, S) arrays would be written every step for it.
    def leaked(lost, j):
        leak = 1.0 - keep
        sent = [jnp.maximum(j, 0.0), jnp.maximum(-j, 0.0)]  # fwd, back (without the carriers' ATP)
        if several:
            sent = [fwd, back]
        # materialize: XLA would fold ``lost + scatter-add into zeros`` into a scatter-add into
        # ``lost``, which adds every row to the running ledger (other round-off than the sum's)
        return lost + materialize(_scattered([leak * sent[0]], [leak * sent[1]], ends, n)[:, :s])

    lost = jax.lax.cond(any_in_batch(jnp.any(e.loss != 0)), leaked, lambda lost, j: lost, led.lost, j)
    led = replace(led, transported_in=led.transported_in + in_atp, transported_out=led.transported_out + out_atp,
                  lost=lost)
    # No clamp: with dt g max_degree p < 1 (validated) a cell sends at most a fraction < 1 of what
    # it holds, so pools stay >= 0 exactly; an unstable configuration shows up as a negative pool
    # that the engine's guard names, instead of mass silently created by clamping.
    new_pools = pools + delta
    if several:
        held = state.carriers.held + booked[:, s + 2:s + 2 + held.shape[1]]
        new_pools = new_pools.at[:, ATP].set(jnp.sum(held, axis=1))
        state = replace(state, carriers=replace(state.carriers, held=held))
    return replace(state, cells=replace(state.cells, pools=new_pools), ledger=led)


def _scattered(at_src, at_dst, ends, n):
    """Segment sums onto the ``n`` cells of the columns ``at_src`` (each (E, k)) booked at the edges'
    src and of ``at_dst`` at their dst, src rows first, as ONE scatter-add over 2E rows: (n, width)
    with the columns in order, padded with zero columns to a multiple of 4. XLA's CPU scatter adds
    a row of 8 doubles (one cache line) much faster than one of 7: the preset's 7 columns padded to
    8 made this process 1.2-1.3x faster than unpadded, at 1/7 more bytes (issue 10). A zero column
    changes no other column's sums."""
    width = sum(x.shape[1] for x in at_src)
    pad = -width % 4
    if pad:
        zeros = jnp.zeros((at_src[0].shape[0], pad), at_src[0].dtype)
        at_src, at_dst = at_src + [zeros], at_dst + [zeros]
    rows = jnp.concatenate([jnp.concatenate(at_src, axis=1), jnp.concatenate(at_dst, axis=1)])
    return segment_sum(rows, ends, n)
