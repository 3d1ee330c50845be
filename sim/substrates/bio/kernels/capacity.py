"""The effective capacities of consumer and producer slots, written once for every kernel that needs them."""

from __future__ import annotations

import jax.numpy as jnp

from sim.core.differentiation import production_factor, work_factor


def consumer_vmax(state, params):
    """(C, K) mM/s: each consumer slot's capacity times the cell's heterogeneity multiplier
    (``Cells.demand_mult``) times the sweepable ``Params.demand_scale``; the specialised kinds
    (``Params.c_specialised``) also times the differentiation factor (2 (1 - theta))^alpha."""
    vmax = params.demand_scale * state.cells.demand_mult[:, None] * state.consumers.vmax
    spec = params.c_specialised[state.consumers.kind] > 0
    return vmax * jnp.where(spec, work_factor(state.diff.theta, params.diff.alpha)[:, None], 1.0)


def producer_scale(state, params):
    """(C, 1) multiplier on every producer's capacity: the sweepable ``supply_scale``, parallel
    activation and the differentiation factor (2 theta)^alpha of the cell (1 for a generalist)."""
    return (params.supply_scale * supply_activation(params)) * production_factor(state.diff.theta,
                                                                                 params.diff.alpha)[:, None]


def supply_activation(params):
    """() multiplier on every producer's capacity from parallel activation of ATP supply and demand
    (each-step activation, Korzeniewski 1998, 2017): the activator (Ca2+ in heart and muscle) that
    raises the work rate ``demand_scale`` also raises the producers' capacity, by
    ``demand_scale ** parallel_activation``. 0 (the preset): 1 exactly, supply follows demand only
    through ADP and Pi feedback; 1: capacity scales with the work rate."""
    return params.demand_scale ** params.parallel_activation
