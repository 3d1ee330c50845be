"""The near-equilibrium kinases, fast compared with the step: adenylate kinase
(K_AK = ATP*AMP/ADP^2) and, when the cell has creatine (``Params.creatine_total > 0``), creatine
kinase (PCr + ADP <-> Cr + ATP, K_CK = ATP*Cr/(ADP*PCr)), both at equilibrium together
(``thermo.ak_ck_equilibrium``). ATP each kinase made is booked on its own ledger line.

With several carriers (:mod:`sim.core.carriers`) the kinases see the total charged pool (one
phosphate potential: nucleoside diphosphate kinase keeps the NTPs near equilibrium with ATP,
Lascu & Gonin 2000) and their change of it is spread over the carriers a cell holds pro rata
(``carriers.reconcile``); the ATP column is then the carriers' sum."""

from __future__ import annotations

import jax.numpy as jnp

from sim.core import carriers
from sim.substrates.bio.kernels.metabolism import set_columns
from sim.substrates.bio.kernels.thermo import ak_ck_equilibrium
from sim.pytree import replace
from sim.substrates.bio.state import ADP, AMP, ATP


def adenylate_kinase(state, params, key=None):
    cells = state.cells
    pools = cells.pools
    a, d, m, pcr = ak_ck_equilibrium(pools[:, ATP], pools[:, ADP], pools[:, AMP], cells.pcr,
                                     params.creatine_total, params.k_ak, params.k_ck)
    alive = cells.alive
    a = a * alive + pools[:, ATP] * ~alive
    d = d * alive + pools[:, ADP] * ~alive
    m = m * alive + pools[:, AMP] * ~alive
    pcr = pcr * alive + cells.pcr * ~alive
    new = set_columns(pools, {ATP: a, ADP: d, AMP: m})
    if carriers.active(state.carriers):  # static: with one carrier this is not traced
        cs = state.carriers
        held = jnp.where(alive[:, None], carriers.reconcile(cs.held, cs.make, a), cs.held)
        new = new.at[:, ATP].set(jnp.sum(held, axis=1))
        state = replace(state, carriers=replace(cs, held=held))
    ck = cells.pcr - pcr  # each phosphocreatine used makes one ATP
    led = replace(state.ledger, ak_atp=state.ledger.ak_atp + ((a - pools[:, ATP]) - ck),
                  ck_atp=state.ledger.ck_atp + ck)
    return replace(state, cells=replace(cells, pools=new, pcr=pcr), ledger=led)
