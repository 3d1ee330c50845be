"""Adenylate kinase treated at equilibrium (fast compared with the step; K_AK = ATP*AMP/ADP^2)."""

from __future__ import annotations

from sim.substrates.bio.kernels.thermo import adenylate_equilibrium
from sim.pytree import replace
from sim.substrates.bio.state import ADP, AMP, ATP


def adenylate_kinase(state, params, key=None):
    pools = state.cells.pools
    a, d, m = adenylate_equilibrium(pools[:, ATP], pools[:, ADP], pools[:, AMP], params.k_ak)
    alive = state.cells.alive
    a = a * alive + pools[:, ATP] * ~alive
    d = d * alive + pools[:, ADP] * ~alive
    m = m * alive + pools[:, AMP] * ~alive
    new = pools.at[:, ATP].set(a).at[:, ADP].set(d).at[:, AMP].set(m)
    led = replace(state.ledger, ak_atp=state.ledger.ak_atp + (a - pools[:, ATP]))
    return replace(state, cells=replace(state.cells, pools=new), ledger=led)
