"""Generic trajectories -> xarray Dataset (dims replicate, time, cell) and the flat summary.

Everything in the generic substrate is dimensionless: amounts (currency, work, substrate) are
"units" and their summary names end with ``_units`` (where biology's end with ``_molecules`` and
the LLM's with ``_tokens``); time is in units of the config's ``dt`` (unit "1"), so times and
rates keep plain names, declared dimensionless in :data:`OUTCOME_UNITS`. Nothing here says mM,
kJ/mol, J or molecules (``tests/test_outcome_units.py``).
"""

from __future__ import annotations

import numpy as np

from sim import network_figure, topology
from sim.core import carriers as car
from sim.core import division
from sim.io import CARRIER_OUTCOMES, CORE_OUTCOMES, COUNT, DIMENSIONLESS, TEXT, carrier_outcomes

CURRENCY_UNIT = "units (dimensionless)"

# The unit of every key a generic summary can hold (sim.io's naming rule).
OUTCOME_UNITS = {
    **CORE_OUTCOMES,
    "currency": TEXT, "currency_produced_units": "units", "currency_spent_units": "units",
    "currency_transported_units": "units", "currency_lost_units": "units", "work_done_units": "units",
    "substrate_used_units": "units", "output_units": "units", "charged_total_units": "units",
    "failures": COUNT, "births": COUNT, "charged_fraction": DIMENSIONLESS,
    "spending_rate": DIMENSIONLESS,  # units per unit of the dimensionless time
    "currency_pool_turnover": DIMENSIONLESS, "simulated_time": DIMENSIONLESS,  # dimensionless time
    "conservation_error": DIMENSIONLESS, "cells_total": COUNT, "cells_alive": COUNT, "producers_alive": COUNT,
    "specialization_index": DIMENSIONLESS, "producer_fraction": DIMENSIONLESS, "theta_mean": DIMENSIONLESS,
    "output_per_substrate": DIMENSIONLESS,
    **CARRIER_OUTCOMES, "carrier_*_units": "units", "carrier_time_to_standard": DIMENSIONLESS,
}
FORBIDDEN_UNITS = ("mM", "kJ/mol", "J", "molecules")  # biology's units: a generic summary never says them


def to_dataset(built, result, cfg: dict):
    import xarray as xr

    from sim.substrates.generic.spec import RECORDS

    rec = result.records
    n_rep, _, n_c = rec["a"].shape
    first = int(cfg.get("first_replicate", 0) or 0)  # replicate r of the run is r + first of the ensemble
    coords = {"replicate": first + np.arange(n_rep), "time": result.times, "cell": np.arange(n_c)}
    data = {q.name: xr.Variable(("replicate", "time", "cell"),
                                rec[q.name].astype(np.int8) if q.name == "alive" else rec[q.name],
                                {"units": q.unit, "long_name": q.long_name}) for q in RECORDS}
    if "held" in rec:  # several carriers
        for q in car.records("1"):
            data[q.name] = xr.Variable(("replicate", "time", "cell") + q.extra_dims, rec[q.name],
                                       {"units": q.unit, "long_name": q.long_name})
        coords["carrier"] = car.carrier_names(car.read_config(cfg))
    ds = xr.Dataset(data, coords=coords)
    ds["time"].attrs["units"] = "1"
    ds.attrs.update(substrate="generic", currency="currency", units="dimensionless",
                    experiment=str((cfg.get("experiment") or {}).get("name", "")), seed=int(cfg.get("seed", 0)),
                    dt=float(np.asarray(built.params.dt)), backend=str(cfg.get("backend", "jax")),
                    **network_figure.edge_attributes(built.graph))  # the junctions, for figures/network.png
    return topology.label_cells(ds, getattr(built, "graph", None))  # a graph file's node labels name the cells


def summarize(built, result, cfg: dict) -> dict:
    """Totals summed over cells, averaged over replicates (final state); rates over the second half.
    Names as :data:`OUTCOME_UNITS` declares them."""
    st, rec, times = result.state, result.records, np.asarray(result.times)
    c, led = st.cells, st.ledger
    a, d = np.asarray(c.a, np.float64), np.asarray(c.d, np.float64)
    total = lambda x: float(np.mean(np.sum(np.asarray(x, np.float64), axis=-1)))  # noqa: E731
    s0 = built.state.cells
    carrier0 = float(np.sum(np.asarray(s0.a, np.float64) + np.asarray(s0.d, np.float64)))
    carrier = (a + d).sum(-1)  # the carrier is conserved: transport loss dissipates charge only
    alive = np.asarray(c.alive)
    frac = np.where(a + d > 0, a / np.where(a + d > 0, a + d, 1.0), 0.0)
    i0 = (len(times) - 1) // 2  # spending rate and mean pool over the second half of the records
    spent = rec["spent"].sum(-1)  # (R, T)
    if len(times) > 1:
        rate = (spent[:, -1] - spent[:, i0]) / (times[-1] - times[i0])
        pool = rec["a"][:, i0:].sum(-1).mean(-1)
    else:
        rate, pool = spent[:, -1] / times[-1], rec["a"][:, -1].sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        turnover = np.where(rate > 0, pool / rate, np.inf)
    carriers = {}
    if "held" in rec:
        raw = car.summary(st.carriers, rec, times, car.carrier_names(car.read_config(cfg)), alive)
        carriers = carrier_outcomes(raw, amount_scale=1.0, amount_ending="_units", time_ending=None)
    return {
        "status": "ok", "substrate": "generic", "currency": "currency", "currency_unit": CURRENCY_UNIT,
        "currency_produced_units": total(led.produced), "currency_spent_units": total(led.spent),
        "currency_transported_units": total(led.transported_out), "currency_lost_units": total(led.lost),
        "work_done_units": total(led.work), "substrate_used_units": total(led.substrate_used),
        "failures": total(led.failures), "births": total(led.births),
        "charged_fraction": float(np.sum(frac * alive) / max(np.sum(alive), 1)),
        "charged_total_units": total(a), "spending_rate": float(np.mean(rate)),
        "currency_pool_turnover": float(np.mean(turnover)),
        "conservation_error": float(np.max(np.abs(carrier - carrier0)) / max(carrier0, 1e-300)),
        "cells_total": int(alive.shape[-1]), "cells_alive": float(np.mean(alive.sum(-1))),
        "producers_alive": float(np.mean(np.asarray(st.producers.alive).sum((-1, -2)))),
        "replicates": int(alive.shape[0]), "wall_s": float(result.wall_s), "compile_s": float(result.compile_s),
        "simulated_time": float(times[-1]),
        "output_units": total(led.output),
        **division.summary(np.asarray(st.diff.theta), np.asarray(led.output), np.asarray(led.substrate_used)),
        **carriers,
    }
