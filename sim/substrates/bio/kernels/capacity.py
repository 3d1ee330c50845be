"""The effective capacity of the consumer slots, written once for every kernel that needs it."""

from __future__ import annotations


def consumer_vmax(state, params):
    """(C, K) mM/s: each consumer slot's capacity times the cell's heterogeneity multiplier
    (``Cells.demand_mult``) times the sweepable ``Params.demand_scale``."""
    return params.demand_scale * state.cells.demand_mult[:, None] * state.consumers.vmax
