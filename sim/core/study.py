"""Batched studies: many parameter points of one substrate as a few engine calls (no process per point).

A study varies continuous *scalar* fields of the substrate's parameter PyTree (``study.params``:
name -> ``[low, high]``) over a design of points (:func:`design`: ``grid``, ``lhs`` or ``sobol``,
via :mod:`scipy.stats.qmc`, or any ``(n_points, n_params)`` array, e.g. a SALib sample), and
reduces each point's records to scalar outcomes (:func:`parse_outcome`).

How points become rows. :func:`evaluate` stacks the parameter PyTree along the leading axis the
substrate declares (``substrate.params_axes(params)``: bio and generic batch every leaf, edges
included; LLM serving batches all but ``edges`` and ``arrival_k``) and runs ``engine.run`` with
``batched_params=True``. With ``R = replicates_per_point``, replicate ``r`` of point ``i`` of a call
is row ``i * R + r``, and it draws with the key of replicate ``first_replicate + r`` of the seed's
ensemble: ``sim.rng.replicate_keys(seed, R, first_replicate)`` tiled once per point. Every point
therefore sees the same random streams (common random numbers, which is what a sensitivity
analysis wants), and point ``i`` alone (``engine.run(..., replicates=R, first_replicate=first)``
with its parameters) gives the same outcomes up to the rounding of batched reductions (~1e-13).

Cost. Points go ``chunk_points`` at a time; every call has the same shape (the last chunk is
padded by repeating its last point, and the padding is dropped), so a study compiles once, and a
200-point study costs one compile plus the arithmetic of its rows run vectorised.

Outcomes. ``"<reducer>:<quantity>"``. Quantities: any record of the substrate, or a derived one
(:data:`DERIVED`: ``energy_charge`` (bio, (ATP + ADP/2)/(ATP + ADP + AMP) from ``pools``),
``kv_free_fraction`` (llm, ``kv_free / kv_capacity``)). Reducers (over replicates of the point,
then time window, then cells and any extra dimensions):

- ``mean_last``: mean over the last 20% of records (at least one), over cells and replicates;
- ``total_last``: as ``mean_last`` but summed over cells (and extra dimensions);
- ``final``: the last record, mean over cells and replicates;
- ``mean``: mean over every record, cell and replicate.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from sim.core import engine
from sim.errors import ConfigError
from sim.rng import replicate_keys

DESIGNS = ("grid", "lhs", "sobol")
REDUCERS = ("mean_last", "total_last", "final", "mean")
LAST_FRACTION = 0.2  # the window of mean_last / total_last
NOT_VARIED = ("dt",)  # scalars a study may not vary (dt sets the time axis of the records)


# ------------------------------------------------------------------------------ derived quantities


def _energy_charge(rec, params=None):
    """Energy charge of the total pools: the recorded free pools plus the bound ADP and AMP of
    ``params`` (the built, unbatched parameters: a study varying the bound pools themselves would
    need them per point)."""
    from sim.substrates.bio.kernels.thermo import energy_charge
    from sim.substrates.bio.state import SPECIES

    p = rec["pools"]
    atp, adp, amp = (p[..., SPECIES.index(s)] for s in ("atp", "adp", "amp"))
    bound = {} if params is None else {"adp_bound": float(np.asarray(params.adp_bound)),
                                       "amp_bound": float(np.asarray(params.amp_bound))}
    return energy_charge(atp, adp, amp, xp=np, **bound)


def _kv_free_fraction(rec, params=None):
    cap = rec["kv_capacity"]
    return np.where(cap > 0, rec["kv_free"] / np.where(cap > 0, cap, 1.0), 0.0)


DERIVED = {  # substrate name -> {quantity: (records needed, fn(records) -> (rows, time, cell))}
    "bio": {"energy_charge": (("pools",), _energy_charge)},
    "llm": {"kv_free_fraction": (("kv_free", "kv_capacity"), _kv_free_fraction)},
}


# ------------------------------------------------------------------------------ parameters


def scalar_fields(substrate, params, n_cells: int) -> dict:
    """Field name -> dtype of the parameters a study may vary: floating 0-d fields (not ``dt``),
    plus the substrate's demand knob when it is per cell (shape ``(n_cells,)``: set in every cell)."""
    out = {}
    for f in dataclasses.fields(params):
        if f.name in NOT_VARIED:
            continue
        v = getattr(params, f.name)
        if dataclasses.is_dataclass(v):
            continue
        a = np.asarray(v)
        if not np.issubdtype(a.dtype, np.floating):
            continue
        if a.ndim == 0 or (f.name == substrate.demand_knob and a.shape == (n_cells,)):
            out[f.name] = a.dtype
    return out


def check_params(spec, substrate, params, n_cells: int, key: str = "study.params") -> dict:
    """``{name: (low, high)}`` from a config mapping; one ConfigError per bad entry (all at once)."""
    from sim.config.validate import ConfigErrors

    allowed = scalar_fields(substrate, params, n_cells)
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(key, spec, "a mapping of parameter name -> [low, high] with at least one entry")
    out, problems = {}, []
    names = ", ".join(sorted(allowed))
    for name, rng in spec.items():
        if name not in allowed:
            problems.append(ConfigError(f"{key}.{name}", rng,
                                        f"a scalar parameter of substrate {substrate.name}: one of {names}"))
            continue
        ok = (isinstance(rng, (list, tuple)) and len(rng) == 2
              and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in rng)
              and rng[0] < rng[1])
        if not ok:
            problems.append(ConfigError(f"{key}.{name}", rng, "[low, high] with finite low < high"))
            continue
        out[name] = (float(rng[0]), float(rng[1]))
    if problems:
        raise problems[0] if len(problems) == 1 else ConfigErrors(problems)
    return out


def stack_params(substrate, params, n_rows: int, values: dict):
    """The parameter PyTree with ``n_rows`` rows along ``substrate.params_axes(params)``, the fields
    in ``values`` (name -> ``(n_rows,)``) set row by row."""
    axes = substrate.params_axes(params)

    def rows(x):
        x = np.asarray(x)
        return np.broadcast_to(x, (n_rows,) + x.shape).copy()

    if axes == 0:
        out = jax.tree_util.tree_map(rows, params)
    elif axes is None:
        raise ValueError(f"substrate {substrate.name} does not batch its parameters")
    else:
        out = jax.tree_util.tree_map(lambda a, x: x if a is None else rows(x), axes, params,
                                     is_leaf=lambda a: a is None)
    changes = {}
    for name, v in values.items():
        old = np.asarray(getattr(params, name))
        v = np.asarray(v, old.dtype).reshape((n_rows,) + (1,) * old.ndim)
        changes[name] = np.broadcast_to(v, (n_rows,) + old.shape).copy()
    return dataclasses.replace(out, **changes)


def point_params(params, names, x):
    """The unbatched parameters of one point ``x`` (values in the order of ``names``)."""
    changes = {}
    for name, v in zip(names, x):
        old = np.asarray(getattr(params, name))
        changes[name] = np.full(old.shape, v, old.dtype)
    return dataclasses.replace(params, **changes)


# ------------------------------------------------------------------------------ designs


def design(kind: str, bounds: dict, points: int, seed: int = 0) -> np.ndarray:
    """``(n_points, n_params)`` values. ``grid``: ``points`` per axis (``points ** n_params`` in
    all, axis-major: the last parameter varies fastest); ``lhs``: Latin hypercube of ``points``;
    ``sobol``: scrambled Sobol' sequence of ``points`` (a power of two keeps its balance)."""
    from scipy.stats import qmc

    lo = np.array([b[0] for b in bounds.values()])
    hi = np.array([b[1] for b in bounds.values()])
    d = len(bounds)
    if kind == "grid":
        axes = [np.linspace(a, b, points) for a, b in zip(lo, hi)]
        mesh = np.meshgrid(*axes, indexing="ij")
        return np.stack([m.reshape(-1) for m in mesh], axis=1)
    if kind == "lhs":
        unit = qmc.LatinHypercube(d=d, seed=seed).random(points)
    elif kind == "sobol":
        unit = qmc.Sobol(d=d, scramble=True, seed=seed).random(points)
    else:
        raise ConfigError("study.design", kind, "one of " + ", ".join(DESIGNS))
    return qmc.scale(unit, lo, hi)


# ------------------------------------------------------------------------------ outcomes


def parse_outcome(text: str, substrate, key: str = "study.outcomes") -> tuple[str, str]:
    """``"reducer:quantity"`` -> (reducer, quantity); ConfigError naming what is allowed."""
    quantities = list(substrate.record_fields) + list(DERIVED.get(substrate.name, {}))
    if not isinstance(text, str) or text.count(":") != 1:
        raise ConfigError(key, text, f"'<reducer>:<quantity>', reducer one of {', '.join(REDUCERS)}")
    reducer, quantity = text.split(":")
    if reducer not in REDUCERS:
        raise ConfigError(key, text, f"a reducer in {', '.join(REDUCERS)}")
    if quantity not in quantities:
        raise ConfigError(key, text, f"a quantity of substrate {substrate.name}: one of {', '.join(quantities)}")
    return reducer, quantity


def quantity_of(substrate, records: dict, quantity: str, params=None) -> np.ndarray:
    """``(rows, time, cell, ...)`` values of a record or derived quantity (``params``: the built
    parameters, which a derived quantity may need, e.g. biology's bound ADP and AMP)."""
    if quantity in records:
        return np.asarray(records[quantity], np.float64)
    _, fn = DERIVED[substrate.name][quantity]
    return np.asarray(fn(records, params), np.float64)


def reduce_outcome(values: np.ndarray, reducer: str, replicates: int) -> np.ndarray:
    """``(rows, time, cell, ...)`` -> ``(rows // replicates,)``: one number per point."""
    n_t = values.shape[1]
    if reducer in ("mean_last", "total_last"):
        window = values[:, n_t - max(1, int(math.ceil(LAST_FRACTION * n_t))):]
    elif reducer == "final":
        window = values[:, -1:]
    else:
        window = values
    flat = window.reshape(window.shape[0], window.shape[1], -1)
    per_row = flat.sum(axis=2).mean(axis=1) if reducer == "total_last" else flat.mean(axis=(1, 2))
    return per_row.reshape(-1, replicates).mean(axis=1)


def needed_records(substrate, outcomes) -> set:
    out = set()
    for reducer, q in outcomes:
        out |= set(DERIVED.get(substrate.name, {}).get(q, ((q,), None))[0])
    return out


# ------------------------------------------------------------------------------ evaluation


@dataclasses.dataclass
class StudyResult:
    names: tuple  # varied parameters
    x: np.ndarray  # (n_points, n_params)
    outcomes: dict  # outcome text -> (n_points,)
    wall_s: float  # engine wall time, all calls
    compile_s: float  # compile time, all calls
    calls: int  # engine calls
    total_s: float  # everything, host-side reductions included
    error: Exception | None = None
    failed_point: int | None = None


def evaluate(substrate, built, names, x, outcomes, *, steps: int, record_every: int, replicates_per_point: int = 1,
             chunk_points: int = 64, seed: int | None = None, first_replicate: int = 0,
             chunk_records: int = 100, devices=None) -> StudyResult:
    """Outcomes of every point of ``x`` (``(n_points, len(names))``), ``replicates_per_point`` rows
    each, ``chunk_points`` points per engine call (one compiled shape for the whole study).
    ``outcomes``: outcome texts (parsed with :func:`parse_outcome`). A numerical failure stops the
    study: ``error`` and ``failed_point`` say where (outcomes of points after it are NaN).
    ``devices``: the rows (points x replicates) of each call split over that many devices
    (``1``, ``"auto"``, N; None: the process's choice, :mod:`sim.core.sharding`)."""
    t0 = time.perf_counter()
    x = np.asarray(x, np.float64)
    n_points, R = x.shape[0], int(replicates_per_point)
    seed = built.seed if seed is None else seed
    parsed = {o: parse_outcome(o, substrate) for o in outcomes}
    chunk_points = max(1, min(int(chunk_points), n_points))
    keys = jnp.tile(replicate_keys(seed, R, first_replicate), (chunk_points, 1))
    out = {o: np.full(n_points, np.nan) for o in outcomes}
    wall = comp = 0.0
    calls = 0
    error, failed = None, None
    for start in range(0, n_points, chunk_points):
        idx = np.arange(start, start + chunk_points)
        idx = np.minimum(idx, n_points - 1)  # pad the last chunk by repeating its last point
        n_real = min(chunk_points, n_points - start)
        values = {name: np.repeat(x[idx, j], R) for j, name in enumerate(names)}
        params = stack_params(substrate, built.params, chunk_points * R, values)
        res = engine.run(substrate, built.state, params, seed=seed, steps=steps, record_every=record_every,
                         replicates=chunk_points * R, batched_params=True, keys=keys,
                         chunk_records=chunk_records, devices=devices)
        calls += 1
        wall += res.wall_s
        comp += res.compile_s
        if res.error is not None:
            error = res.error
            failed = start + int(getattr(error, "replicate", 0)) // R
            break
        for o, (reducer, q) in parsed.items():
            out[o][start:start + n_real] = reduce_outcome(quantity_of(substrate, res.records, q, built.params), reducer, R)[:n_real]
    return StudyResult(tuple(names), x, out, wall, comp, calls, time.perf_counter() - t0, error, failed)


def to_dataset(result: StudyResult, attrs: dict | None = None):
    """xarray Dataset: dimension ``point``, one coordinate per parameter, one variable per outcome."""
    import xarray as xr

    coords = {"point": np.arange(result.x.shape[0])}
    for j, name in enumerate(result.names):
        coords[name] = ("point", result.x[:, j])
    data = {outcome_variable(o): ("point", v, {"outcome": o}) for o, v in result.outcomes.items()}
    return xr.Dataset(data, coords=coords, attrs=dict(attrs or {}))


def outcome_variable(outcome: str) -> str:
    """A netCDF-safe variable name of an outcome text (``mean_last:energy_charge`` -> ``mean_last__energy_charge``)."""
    return outcome.replace(":", "__")


def table(result: StudyResult):
    """pandas DataFrame: one row per point, the parameters then the outcomes."""
    import pandas as pd

    cols = {"point": np.arange(result.x.shape[0])}
    cols.update({name: result.x[:, j] for j, name in enumerate(result.names)})
    cols.update({o: v for o, v in result.outcomes.items()})
    return pd.DataFrame(cols)
