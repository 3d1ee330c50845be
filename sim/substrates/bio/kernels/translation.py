"""Protein synthesis as chains: the biology preset's ribosome cohorts, spent in the consumption step.

Each chain slot of a cell (``State.chains``, ``sim.core.chains``) is a cohort of ribosomes
translating in lockstep; the cohort realises the consumer kind ``Params.chain_kind``
(``protein_synthesis``): that consumer's capacity ``V`` (mM/s, after ``demand_scale`` and the
cell's demand multiplier), its ATP affinity ``K``, its tier and its ledger line. Per cell and step,
on the step-start state (as every rate of ``sim.substrates.bio.kernels.metabolism``):

* elongation rate of a chain ``r = r_max A'/(K + A')`` aa/s with ``A' = max(A - R_tier, 0)``:
  elongation slows as ATP falls towards the tier's reserve (energy sensing of translation,
  eEF2K / mTOR; Hardie 2011) and stops below it, like the consumer it replaces; initiation on a
  free slot (rate ``init_rate A'/(K + A')``, eIF2 / 4E-BP) likewise;
* cost per amino acid and chain ``c0 = V / (S r_max)`` mM (``S`` slots), i.e. ``atp_per_aa``
  ATP molecules for each of the cohort's ``c0 / atp_per_aa`` mM of ribosomes (constant in the
  length: c1 = 0). With every slot translating, the chains spend ``V A'/(K + A')`` mM/s, exactly
  the Michaelis-Menten consumer law; termination (``p_stop`` per aa) and initiation
  (``init_rate`` per free slot, ``init_cost`` ATP per ribosome) make the demand stochastic;
* the chains' demand (``chains.chain_demand``) is served with the other consumers of its tier,
  tier by tier and proportionally within the tier (``metabolism.serve_tiers``); the share granted
  is the chains' budget: initiations are paid first, then every chain of the cell slows by the
  same factor (``chains.chain_step``), so no pool goes negative and the priority hierarchy holds.

The work of the chains is amino acids incorporated: units made x cohort size (mM).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from sim.substrates.bio.kernels.capacity import consumer_vmax
from sim.core.chains import without_modules
from sim.pytree import replace
from sim.substrates.bio.state import ATP


def has_chains(state) -> bool:
    """Static: does this state carry chain slots (shapes are fixed, so this never recompiles)?"""
    ch = getattr(state, "chains", None)
    return ch is not None and ch.active.shape[-1] > 0


def chain_params(state, params, is_chain, per_slot, atp=None):
    """Per-cell :class:`ChainParams` of this step and the cohort size (C,) in mM of ribosomes.

    ``is_chain`` (C, K) marks the consumer slot the chains realise; ``per_slot`` is
    ``metabolism.per_slot`` (passed in to keep this module free of a circular import); ``atp``
    (C,) mM the ATP the chains see (default the pool; with several carriers what the cell's
    consumers can spend, ``sim.core.carriers.spendable``).

    The chains' consumer is the cell's slot of that kind (one per kind, as ``build`` makes them;
    the reference takes the first): its fields are picked out as (C, 1) columns, which XLA
    computes once before the step loop (the consumers do not change in it), so each step reads
    one number per cell for its K_ATP, reserve and capacity instead of every consumer slot's
    (issue 10). The same numbers as the sums over ``is_chain`` of the single slot; 0 in a cell
    without one.
    """
    cells = state.cells
    n_slots = state.chains.active.shape[-1]
    atp = cells.pools[:, ATP] if atp is None else atp
    has = jnp.any(is_chain, axis=1)
    first = jnp.argmax(is_chain, axis=1)[:, None]
    cons = replace(state.consumers, **{f.name: jnp.take_along_axis(jnp.asarray(getattr(state.consumers, f.name)),
                                                                   first, axis=1)
                                       for f in dataclasses.fields(state.consumers)})
    ap = jnp.maximum(atp[:, None] - per_slot(params.tier_reserve, cons.tier), 0.0)
    sat = jnp.where(has, (ap / (cons.km + ap))[:, 0], 0.0)
    v = jnp.where(has, consumer_vmax(replace(state, consumers=cons), params)[:, 0], 0.0)
    r_max = params.chain_rate
    c0 = jnp.where(r_max > 0, v / jnp.where(r_max > 0, n_slots * r_max, 1.0), 0.0)
    cohort = c0 / params.chain_cost_per_unit
    alive = cells.alive
    zero = np.zeros((), c0.dtype)  # known while tracing: chain_step leaves out the length term of the cost (c1 = 0)
    cp = without_modules(
        dt=params.dt,
        rate=jnp.where(alive, r_max * sat, 0.0),
        c0=c0,
        c1=zero,
        p_stop=params.chain_p_stop,
        n_max=params.chain_n_max,
        l0=zero,
        init_rate=jnp.where(alive, params.chain_init_rate * sat, 0.0),
        init_cost=params.chain_init_cost * cohort,
    )
    return cp, cohort


def no_chain_params(dtype=np.float64) -> dict:
    """``Params`` chain fields of a preset without chains."""
    z = np.asarray(0.0, dtype)
    return dict(chain_kind=np.asarray(-1, np.int32), chain_rate=z, chain_cost_per_unit=np.asarray(1.0, dtype),
                chain_p_stop=z, chain_n_max=z, chain_init_rate=z, chain_init_cost=z)
