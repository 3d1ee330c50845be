"""Diffusive exchange over junctions: J_e = g_e (X_src - X_dst) per species, as edge arrays.

Per step and edge e = (i, j): J = dt g_e p_s (X_i - X_j), zero if either cell is dead (closed
gap junctions). The sender loses |J|, the receiver gains (1 - loss_e) |J|, the rest is lost.
Fluxes are summed onto cells with segment sums (no loops over agents). Non-negativity holds
when dt * g * max_degree < 1, which the config validation enforces.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sim.pytree import replace
from sim.state import ATP


def edge_fluxes(pools, alive, params):
    """Signed flux per edge and species (E, S) in mM over this step (positive: src -> dst)."""
    e = params.edges
    open_ = alive[e.src] & alive[e.dst]
    g = jnp.where(open_, e.conductance * params.conductance_scale * params.dt, 0.0)
    return g[:, None] * params.permeability[None, :] * (pools[e.src] - pools[e.dst])


def transport(state, params, key=None):
    e = params.edges
    n = state.cells.pools.shape[0]
    pools = state.cells.pools
    j = edge_fluxes(pools, state.cells.alive, params)
    fwd = jnp.maximum(j, 0.0)  # src -> dst
    back = jnp.maximum(-j, 0.0)  # dst -> src
    keep = (1.0 - e.loss)[:, None]
    d_src = -fwd + keep * back
    d_dst = keep * fwd - back
    delta = jax.ops.segment_sum(d_src, e.src, num_segments=n) + jax.ops.segment_sum(
        d_dst, e.dst, num_segments=n
    )
    out_ = jax.ops.segment_sum(fwd, e.src, num_segments=n) + jax.ops.segment_sum(back, e.dst, num_segments=n)
    in_ = jax.ops.segment_sum(keep * back, e.src, num_segments=n) + jax.ops.segment_sum(
        keep * fwd, e.dst, num_segments=n
    )
    # what leaks in transit is booked to the sending cell
    lost_by_sender = jax.ops.segment_sum((1.0 - keep) * fwd, e.src, num_segments=n) + jax.ops.segment_sum(
        (1.0 - keep) * back, e.dst, num_segments=n
    )
    led = state.ledger
    led = replace(
        led,
        transported_in=led.transported_in + in_[:, ATP],
        transported_out=led.transported_out + out_[:, ATP],
        lost=led.lost + lost_by_sender,
    )
    new_pools = jnp.maximum(pools + delta, 0.0)
    return replace(state, cells=replace(state.cells, pools=new_pools), ledger=led)
