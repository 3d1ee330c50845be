"""The near-equilibrium kinases, fast compared with the step: adenylate kinase
(K_AK = ATP*AMP/ADP^2) and, when the cell has creatine (``Params.creatine_total > 0``), creatine
kinase (PCr + ADP <-> Cr + ATP, K_CK = ATP*Cr/(ADP*PCr)), both at equilibrium together
(``thermo.ak_ck_equilibrium``). ATP each kinase made is booked on its own ledger line.

With several carriers (:mod:`sim.core.carriers`) the kinases see the total charged pool (one
phosphate potential: nucleoside diphosphate kinase keeps the NTPs near equilibrium with ATP,
Lascu & Gonin 2000) and their change of it is spread over the carriers a cell holds pro rata
(``carriers.reconcile``); the ATP column is then the carriers' sum."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sim.core import carriers, known
from sim.core.ops import after, materialize
from sim.substrates.bio.kernels.metabolism import set_columns
from sim.substrates.bio.kernels.thermo import adenylate_equilibrium, creatine_equilibrium
from sim.pytree import replace
from sim.substrates.bio.state import ADP, AMP, ATP


CREATINE = "creatine"  # the fact (sim.core.known): True when every row has creatine, False when none has


def creatine_known(params) -> tuple:
    """``Substrate.known`` of biology: ``(("creatine", True),)`` when every parameter row has a
    creatine buffer, ``False`` when none has (then the branch of :func:`adenylate_kinase` every row
    takes is the only one compiled); nothing when the rows differ (the run-time branch)."""
    c = np.asarray(params.creatine_total)
    if np.all(c > 0):
        return ((CREATINE, True),)
    if not np.any(c > 0):
        return ((CREATINE, False),)
    return ()


def _settle(creatine: bool, k_ak, k_ck, creatine_total):
    """The whole process on one cell block, (pools, pcr, alive, ak_atp, ck_atp) -> (new pools, pcr,
    ak_atp, ck_atp, ATP): the branch of :func:`adenylate_kinase`'s ``cond`` with (True) or without
    (False) the creatine kinase Newton solve (``thermo.ak_ck_equilibrium``, step for step)."""

    def settle(pools, pcr0, alive, ak_atp, ck_atp):
        atp, adp, amp = pools[:, ATP], pools[:, ADP], pools[:, AMP]
        a, d, m = adenylate_equilibrium(atp, adp, amp, k_ak)
        pcr = pcr0
        if creatine:
            a, d, m, pcr = creatine_equilibrium(atp, adp, amp, pcr0, creatine_total, k_ak, k_ck, a, d, m)
        a = a * alive + atp * ~alive
        d = d * alive + adp * ~alive
        m = m * alive + amp * ~alive
        new = set_columns(pools, {ATP: a, ADP: d, AMP: m})
        if not creatine:  # pcr and ck_atp as they are: pcr0 alive + pcr0 ~alive is pcr0 and ck = +0
            return new, pcr0, ak_atp + (a - atp), ck_atp, a
        pcr = pcr * alive + pcr0 * ~alive
        ck = materialize(pcr0 - pcr)  # each phosphocreatine used makes one ATP
        # the new PCr written after ck, the last read of pcr0: pcr0 passes through the other branch,
        # so the step's PCr stays in one buffer only if this branch reads pcr0 before it writes the
        # new value; else XLA copied PCr twice a step in either branch (issue 10: 1.3 B/agent/step)
        pcr = after(pcr, ck)
        return new, pcr, ak_atp + ((a - atp) - ck), ck_atp + ck, a

    return settle


def adenylate_kinase(state, params, key=None):
    cells, led = state.cells, state.ledger
    # The creatine kinase Newton solve only where there is creatine: a real branch (35
    # transcendentals per cell saved without the buffer; with batched parameters vmap evaluates
    # both sides). The branches take the whole cell block and return the new one, so the pools
    # after transport are written once as the branch operand and this process is one kernel per
    # output (issue 10: each ATP/ADP/AMP column taken apart outside the branch was a kernel that
    # read the transport's whole scatter result).
    args = (cells.pools, cells.pcr, cells.alive, led.ak_atp, led.ck_atp)
    consts = (params.k_ak, params.k_ck, params.creatine_total)
    creatine = known.get(CREATINE)  # the engine's chunk knows from the parameters which branch every row takes
    if creatine is None:
        new, pcr, ak_atp, ck_atp, a = jax.lax.cond(jnp.any(params.creatine_total > 0), _settle(True, *consts),
                                                   _settle(False, *consts), *args)
    else:
        new, pcr, ak_atp, ck_atp, a = _settle(creatine, *consts)(*args)
    if carriers.active(state.carriers):  # static: with one carrier this is not traced
        cs = state.carriers
        held = jnp.where(cells.alive[:, None], carriers.reconcile(cs.held, cs.make, a), cs.held)
        new = new.at[:, ATP].set(jnp.sum(held, axis=1))
        state = replace(state, carriers=replace(cs, held=held))
    led = replace(led, ak_atp=ak_atp, ck_atp=ck_atp)
    return replace(state, cells=replace(cells, pools=new, pcr=pcr), ledger=led)
