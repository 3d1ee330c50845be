"""``experiment=multicellular``: when does a collective of specialists beat generalists?

A phase diagram of division of labour (issue 12): for every topology of ``multicellular.topologies``
and every point of ``multicellular.alphas`` (trade-off curvature) x ``multicellular.losses``
(transport cost: the fraction of the currency's charge dissipated when it crosses a junction),
``multicellular.replicates`` replicates of a tissue whose cells adapt their differentiation
``theta`` (``differentiation.rule``, :mod:`sim.core.differentiation`) are run next to tissues with
an imposed pattern (``multicellular.pattern_periods``: every K-th cell a producer, theta 1, the rest
workers, theta 0; no adaptation): what the adaptation finds next to what division of labour can
give. All of it is ONE batched engine call per topology: every row is a (point, adaptive or
pattern, replicate) with its own ``diff.alpha``, ``edges.loss``, adaptation rate and initial theta,
and the same compiled program. The baseline is one more batched call: a SINGLE cell at every
uniform theta of ``multicellular.generalist_thetas`` (a tissue of identical generalists exchanges
nothing, so it is that cell repeated; the best theta moves with alpha and the substrate, so the grid
is fine: a coarse grid flatters the specialists).

``multicellular.conductance``: ``per_junction`` (the substrate's conductance on every junction: a
cell of degree k exchanges k times as fast as through one junction) or ``per_cell`` (a cell's
junctions share the exchange capacity of a cell of the ring, :func:`junction_conductance`), the
normalisation under which sparse and dense graphs are compared at equal exchange per cell (Yanni et
al. 2020). ``multicellular.beside``: a second substrate preset (e.g. ``bio_tissue``) run through the
same grid with its own time step and length, drawn side by side on the same dimensionless axes.

Outcomes per point (mean and standard deviation over replicates; rates over the second half of the
run, when the adaptation has settled):

``specialization_index``   Var(theta) / (1/4) at the end (:mod:`sim.core.division`);
``producer_fraction``      share of cells with theta >= 3/4 (``producer_spacing``: its inverse, cells
                           per producer);
``output_rate``            specialised work (the substrate's ``output`` ledger) per cell per unit time;
``output_per_substrate``   specialised work per unit of substrate used (the tissue's efficiency);
``generalist_output_rate`` the best single generalist cell (best uniform theta, ``generalist_theta``);
``gain``                   output_rate / generalist_output_rate: > 1 where the collective's division
                           of labour pays;
``pattern_gain``           the best imposed pattern's output over the generalists' (``pattern_period``
                           its K);
``distance_to_producer``   mean graph distance from a non-producer to the nearest producer;
``gap_count``              on the ring: how many gaps of each length (cells between consecutive
                           producers) the adaptive tissue ends with, pooled over replicates (Anabaena:
                           a heterocyst every 10-20 vegetative cells);
``transport_cost``         charge lost in transit / currency produced (measured, whole run);
``carrier_lost``           carrier lost through leaky junctions / initial carrier (biology: adenine
                           nucleotides, which nothing in the model replaces; generic: 0);
``transport_length``       sqrt(g / k) in cells: g the mean junction conductance, k the carrier's
                           turnover rate constant in a generalist cell (currency spent per unit time /
                           carrier pool); g / k is what one junction carries at the largest gradient
                           over a generalist's demand.

Dimensionless axes shared by every substrate: ``specialization gain`` = 2^(alpha-1), what a pair of
full specialists holds over two generalists, and ``transport cost`` = the loss fraction (measured
relative to the currency produced: ``transport_cost``), with ``transport_length`` the transport speed.

Writes ``results.nc`` (dimensions topology, alpha, loss, gap; with ``beside`` also substrate),
``multicellular.parquet`` (one row per point), ``summary.json``, ``figures/phase_diagram.png`` and,
with a ring, ``figures/spacing.png``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import numpy as np
import yaml

from sim.api import RunOutput, as_plain
from sim.core import division, engine
from sim.core import differentiation as dif
from sim.core.config import CONF_DIR
from sim.errors import ConfigError
from sim.experiments import register
from sim.io import CORE_OUTCOMES, COUNT, DIMENSIONLESS, MAPPING, TEXT
from sim import substrates
from sim.rng import replicate_keys

SUBSTRATES = ("generic", "bio")  # those with differentiation hooks


def _floats(opts: dict, key: str, lo: float, hi: float | None, strict: bool = False) -> list[float]:
    v = opts.get(key)
    ok = isinstance(v, (list, tuple)) and len(v) > 0 and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)
        and (x > lo if strict else x >= lo) and (hi is None or x <= hi) for x in v)
    if not ok:
        rng = f"{'>' if strict else '>='} {lo}" + (f" and <= {hi}" if hi is not None else "")
        raise ConfigError(f"multicellular.{key}", v, f"a non-empty list of numbers {rng}")
    return [float(x) for x in v]


CONDUCTANCES = ("per_junction", "per_cell")
BESIDE_KEYS = ("substrate", "dt", "steps", "record_every")


def _beside(v):
    """``multicellular.beside``: null, or the substrate preset drawn beside the configured one
    (``{substrate: <conf/substrate name>, dt, steps, record_every}``), checked."""
    if v is None:
        return None
    allowed = ("null or a mapping {substrate: a preset of conf/substrate/ with differentiation (bio_tissue, "
               "generic_tissue, ...), dt: > 0, steps: integer >= 1, record_every: integer >= 1 dividing steps}")
    if not isinstance(v, dict) or set(v) - set(BESIDE_KEYS) or not isinstance(v.get("substrate"), str):
        raise ConfigError("multicellular.beside", v, allowed)
    if not (CONF_DIR / "substrate" / f"{v['substrate']}.yaml").is_file():
        raise ConfigError("multicellular.beside.substrate", v["substrate"], "a preset of conf/substrate/: " + ", ".join(
            sorted(p.stem for p in (CONF_DIR / "substrate").glob("*.yaml"))))
    out = {"substrate": v["substrate"]}
    dt = v.get("dt")
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not np.isfinite(dt) or dt <= 0:
        raise ConfigError("multicellular.beside.dt", dt, "a time step > 0 (the beside substrate's time unit)")
    out["dt"] = float(dt)
    for key in ("steps", "record_every"):
        x = v.get(key)
        if isinstance(x, bool) or not isinstance(x, int) or x < 1:
            raise ConfigError(f"multicellular.beside.{key}", x, "an integer >= 1")
        out[key] = x
    if out["steps"] % out["record_every"]:
        raise ConfigError("multicellular.beside.steps", out["steps"], f"a multiple of record_every ({out['record_every']})")
    return out


def read_options(cfg: dict) -> dict:
    """The ``multicellular`` section, checked."""
    from sim.topology import KINDS

    opts = dict(cfg.get("multicellular") or {})
    out = {"alphas": _floats(opts, "alphas", 0.0, None, strict=True),
           "losses": _floats(opts, "losses", 0.0, 1.0),
           "generalist_thetas": _floats(opts, "generalist_thetas", 0.0, 1.0)}
    topo = opts.get("topologies")
    if not isinstance(topo, (list, tuple)) or not topo or any(t not in KINDS or t in ("file", "single") for t in topo):
        raise ConfigError("multicellular.topologies", topo, "a non-empty list of: " + ", ".join(
            k for k in KINDS if k not in ("file", "single")))
    out["topologies"] = list(topo)
    for key in ("replicates", "n_cells"):
        v = opts.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < (1 if key == "replicates" else 4):
            raise ConfigError(f"multicellular.{key}", v, f"an integer >= {1 if key == 'replicates' else 4}")
        out[key] = v
    periods = opts.get("pattern_periods", [])
    if not isinstance(periods, (list, tuple)) or any(
            isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= out["n_cells"] for k in periods):
        raise ConfigError("multicellular.pattern_periods", periods,
                          f"a list (may be empty) of integers in [2, n_cells = {out['n_cells']}]: every K-th cell a producer")
    out["pattern_periods"] = [int(k) for k in periods]
    mode = opts.get("conductance", "per_junction")
    if mode not in CONDUCTANCES:
        raise ConfigError("multicellular.conductance", mode, "one of " + ", ".join(CONDUCTANCES))
    out["conductance"] = mode
    out["beside"] = _beside(opts.get("beside"))
    return out


def junction_conductance(g, src, dst, n: int, mode: str) -> np.ndarray:
    """Per-junction conductance of a tissue. ``per_junction``: ``g`` as configured (a cell of degree
    k exchanges through k junctions of ``g`` each, so a denser graph moves currency faster);
    ``per_cell``: ``2 g / max(k_i, k_j)``, the exchange capacity of a cell of the ring (two
    junctions of ``g``) shared among its junctions (a cell's junctions sum to at most ``2 g``; on a
    regular graph exactly; the ring is unchanged)."""
    g = np.asarray(g, np.float64)
    if mode == "per_junction":
        return g
    src, dst = np.asarray(src), np.asarray(dst)
    deg = np.bincount(np.concatenate([src, dst]), minlength=n)
    return g * 2.0 / np.maximum(np.maximum(deg[src], deg[dst]), 1)


def topology_cfg(kind: str, n: int) -> dict:
    """The shipped ``conf/topology/<kind>.yaml`` with ``n_cells = n``."""
    node = yaml.safe_load((CONF_DIR / "topology" / f"{kind}.yaml").read_text())
    node["n_cells"] = n
    return node


def set_path(tree, path: str, value):
    """``tree`` with the (dotted) field ``path`` replaced."""
    head, _, rest = path.partition(".")
    inner = set_path(getattr(tree, head), rest, value) if rest else value
    return dataclasses.replace(tree, **{head: inner})


def get_path(tree, path: str):
    for part in path.split("."):
        tree = getattr(tree, part)
    return tree


def batch_rows(tree, n_rows: int, changes: dict):
    """Every leaf of ``tree`` repeated along a new leading axis of ``n_rows``; the fields of
    ``changes`` (dotted path -> ``(n_rows,)`` values) set row by row (broadcast over each leaf)."""
    out = jax.tree_util.tree_map(lambda x: np.broadcast_to(np.asarray(x), (n_rows,) + np.shape(x)).copy(), tree)
    for path, values in changes.items():
        old = np.asarray(get_path(tree, path))
        v = np.asarray(values, old.dtype).reshape((n_rows,) + (1,) * old.ndim)
        out = set_path(out, path, np.broadcast_to(v, (n_rows,) + old.shape).copy())
    return out


def design(alphas, losses, periods, replicates):
    """Rows of one batched call: (alpha, loss, period, replicate), point-major; period 0 is the
    adaptive tissue, K >= 2 the imposed pattern (every K-th cell a producer, theta 1, the rest workers)."""
    return [(a, loss, k, r) for a in alphas for loss in losses for k in [0] + list(periods) for r in range(replicates)]


def _carrier(records) -> np.ndarray:
    """The carrier pool per record and cell: what the currency is charged on and moves with
    (generic A + D; biology the free adenine nucleotides ATP + ADP + AMP of ``pools``)."""
    if "a" in records:
        return np.asarray(records["a"]) + np.asarray(records["d"])
    from sim.substrates.bio.state import ADP, AMP, ATP

    pools = np.asarray(records["pools"])
    return pools[..., ATP] + pools[..., ADP] + pools[..., AMP]


def _lost(state, initial_pools=None):
    """(charge lost in transit, carrier lost) per row, summed over cells, from the final ledger.
    Generic: charge dissipated in transit (A arriving as D), carrier conserved (0). Biology: the ATP
    that leaked out of the junctions, and the adenine nucleotides (ATP + ADP + AMP) that leaked,
    as a fraction of the tissue's initial free adenine nucleotides (nothing replaces them)."""
    lost = np.asarray(state.ledger.lost)
    if lost.ndim == 2:  # (rows, cells): generic
        return lost.sum(-1), np.zeros(lost.shape[0])
    from sim.substrates.bio.state import ADP, AMP, ATP

    adenine = lost[..., ATP] + lost[..., ADP] + lost[..., AMP]
    total = np.sum(np.asarray(initial_pools)[:, [ATP, ADP, AMP]])
    return lost[..., ATP].sum(-1), adenine.sum(-1) / total


def _rates(res, n: int):
    """Per row, over the second half of the run (the adaptation settled): specialised work per cell
    per unit time, per unit substrate, currency spent per cell per unit time, mean carrier pool."""
    t = np.asarray(res.times)
    h = (len(t) - 1) // 2
    out, used, spent = res.records["output"], res.records["substrate_used"], res.records["spent"]
    d_out = out[:, -1].sum(-1) - out[:, h].sum(-1)
    span = t[-1] - t[h]
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"output_rate": d_out / span / n,
                "output_per_substrate": d_out / (used[:, -1].sum(-1) - used[:, h].sum(-1)),
                "spent_rate": (spent[:, -1].sum(-1) - spent[:, h].sum(-1)) / span / n,
                "carrier": _carrier(res.records)[:, h:].mean(axis=(1, 2))}


def run_generalists(sub, base_cfg: dict, opts: dict):
    """The baseline, one batched call: a single cell (exchanging nothing; a tissue of identical
    generalists is the same cell repeated) at every uniform theta of ``generalist_thetas`` and every
    alpha, with replicates. Returns (rows (alpha, theta, replicate), per-row rates, RunResult)."""
    cfg = dict(base_cfg, topology={"kind": "single", "n_cells": 1})
    built = sub.build(cfg)
    rows = [(a, th, r) for a in opts["alphas"] for th in opts["generalist_thetas"] for r in range(opts["replicates"])]
    n_rows = len(rows)
    theta = np.array([[th] for _, th, _ in rows])
    params = batch_rows(built.params, n_rows, {"diff.alpha": np.array([r[0] for r in rows]),
                                               "diff.rate": np.zeros(n_rows)})
    state = batch_rows(built.state, n_rows, {})
    state = set_path(state, "diff", dataclasses.replace(state.diff, theta=theta, ref_theta=theta.copy()))
    res = _run_rows(sub, cfg, built, state, params, opts, [r[2] for r in rows])
    if res.error is not None:
        return rows, None, res
    return rows, _rates(res, 1), res


def _run_rows(sub, cfg: dict, built, state, params, opts: dict, replicate_of_row):
    """One batched engine call over rows (state and params batched by row), each row with the
    key of its replicate (so a row equals the same replicate run alone)."""
    keys = replicate_keys(built.seed, opts["replicates"])[np.asarray(replicate_of_row)]
    return engine.run(sub, state, params, seed=built.seed, steps=int(cfg["steps"]),
                      record_every=int(cfg["record_every"]), replicates=len(replicate_of_row), batched_params=True,
                      keys=keys, chunk_records=int(cfg.get("chunk_records", 100)))


def run_topology(sub, base_cfg: dict, kind: str, opts: dict):
    """One batched engine call: every (point, adaptive or imposed pattern, replicate) row of one
    topology; per-row outcomes. ``opts["conductance"]`` (default ``per_junction``) sets the junctions."""
    n = opts["n_cells"]
    cfg = dict(base_cfg, topology=topology_cfg(kind, n))
    built = sub.build(cfg)
    e = built.params.edges
    g = junction_conductance(e.conductance, e.src, e.dst, n, opts.get("conductance", "per_junction"))
    base_params = set_path(built.params, "edges.conductance", g.astype(np.asarray(e.conductance).dtype))
    rows = design(opts["alphas"], opts["losses"], opts.get("pattern_periods", []), opts["replicates"])
    n_rows = len(rows)
    alpha = np.array([r[0] for r in rows])
    loss = np.array([r[1] for r in rows])
    adaptive = np.array([r[2] == 0 for r in rows])
    theta0 = np.asarray(built.state.diff.theta)
    init = np.array([theta0 if k == 0 else (np.arange(n) % k == 0).astype(theta0.dtype) for _, _, k, _ in rows])
    rate = np.where(adaptive, float(np.asarray(built.params.diff.rate)), 0.0)
    params = batch_rows(base_params, n_rows, {"diff.alpha": alpha, "edges.loss": loss, "diff.rate": rate})
    state = batch_rows(built.state, n_rows, {})
    state = set_path(state, "diff", dataclasses.replace(state.diff, theta=init, ref_theta=init.copy()))
    res = _run_rows(sub, cfg, built, state, params, opts, [r[3] for r in rows])
    if res.error is not None:
        return built, rows, None, res
    per_row = _rates(res, n)
    produced = np.asarray(res.state.ledger.produced).sum(-1)
    charge_lost, carrier_lost = _lost(res.state, getattr(built.state.cells, "pools", None))
    with np.errstate(divide="ignore", invalid="ignore"):
        per_row["transport_cost"] = charge_lost / produced
    per_row["carrier_lost"] = carrier_lost
    theta = np.asarray(res.state.diff.theta)
    per_row["specialization_index"] = division.specialization_index(theta)
    per_row["producer_fraction"] = division.producer_fraction(theta)
    per_row["worker_fraction"] = division.worker_fraction(theta)
    per_row["switching_per_cell"] = np.asarray(res.state.ledger.switching).mean(-1) if hasattr(
        res.state.ledger, "switching") else np.zeros(n_rows)
    per_row["distance_to_producer"] = np.array([division.distance_to_producer(th, built.graph) for th in theta])
    with np.errstate(divide="ignore"):
        per_row["producer_spacing"] = np.where(per_row["producer_fraction"] > 0,
                                               1.0 / per_row["producer_fraction"], np.nan)
    # gaps between consecutive producers along the ring (cell index order is the ring's order)
    per_row["gap_count"] = np.array([np.bincount(division.ring_gaps(th).astype(int), minlength=n)[:n]
                                     if kind == "ring" else np.zeros(n, int) for th in theta])
    per_row["theta"] = theta
    per_row["junction_conductance"] = float(np.mean(g)) if g.size else 0.0
    return built, rows, per_row, res


ADAPTIVE = ("output_rate", "output_per_substrate", "specialization_index", "producer_fraction", "worker_fraction",
            "switching_per_cell", "distance_to_producer", "producer_spacing", "transport_cost", "carrier_lost")


def best_generalists(gen_rows, gen_rates, opts) -> dict:
    """Per alpha: the best uniform theta's output (mean over replicates), that theta, its output
    per unit substrate, and the carrier's turnover rate constant at theta 1/2 (currency spent per
    unit time / carrier pool: how often the whole carrier is charged and spent)."""
    A, G, R = len(opts["alphas"]), len(opts["generalist_thetas"]), opts["replicates"]
    out = gen_rates["output_rate"].reshape(A, G, R).mean(-1)
    best = np.argmax(out, axis=-1)
    eff = gen_rates["output_per_substrate"].reshape(A, G, R).mean(-1)
    half = int(np.argmin(np.abs(np.asarray(opts["generalist_thetas"]) - 0.5)))
    turnover = (gen_rates["spent_rate"] / gen_rates["carrier"]).reshape(A, G, R)[:, half].mean()
    return {"output_rate": out[np.arange(A), best], "theta": np.asarray(opts["generalist_thetas"])[best],
            "output_per_substrate": eff[np.arange(A), best], "curve": out, "turnover": float(turnover)}


def reduce(rows, per_row, opts, generalists: dict):
    """Per (alpha, loss): the adaptive tissue's outcomes (mean, std over replicates), the best
    generalists (:func:`best_generalists`), the best imposed pattern, and the gains over the generalists."""
    A, L = len(opts["alphas"]), len(opts["losses"])
    P, R = len(opts.get("pattern_periods", [])), opts["replicates"]
    shape = (A, L, 1 + P, R)
    out = {}
    for name in ADAPTIVE:
        x = per_row[name].reshape(shape)[:, :, 0]
        out[name] = x.mean(-1)
        out[name + "_std"] = x.std(-1)
    gen = np.broadcast_to(generalists["output_rate"][:, None], (A, L))
    out["generalist_output_rate"] = gen.copy()
    out["generalist_theta"] = np.broadcast_to(generalists["theta"][:, None], (A, L)).copy()
    out["generalist_output_per_substrate"] = np.broadcast_to(generalists["output_per_substrate"][:, None], (A, L)).copy()
    rate = per_row["output_rate"].reshape(shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = rate[:, :, 0] / gen[..., None]
        out["gain"], out["gain_std"] = g.mean(-1), g.std(-1)
        if P:
            pat = rate[:, :, 1:].mean(-1)  # (A, L, P)
            best = np.argmax(pat, axis=-1)
            out["pattern_output_rate"] = np.take_along_axis(pat, best[..., None], -1)[..., 0]
            out["pattern_period"] = np.asarray(opts["pattern_periods"], float)[best]
            out["pattern_gain"] = out["pattern_output_rate"] / gen
        else:
            out["pattern_output_rate"] = out["pattern_period"] = out["pattern_gain"] = np.full((A, L), np.nan)
    n = per_row["gap_count"].shape[-1]
    out["gap_count"] = per_row["gap_count"].reshape(shape + (n,))[:, :, 0].sum(-2)  # (A, L, gap), pooled replicates
    return out


def to_dataset(results: dict, opts: dict, attrs: dict):
    """``results``: {topology: reduce(...)} or {(substrate, topology): ...} (then a ``substrate`` dimension)."""
    import xarray as xr

    keys = list(results)
    stacked = isinstance(keys[0], tuple)
    subs = list(dict.fromkeys(k[0] for k in keys)) if stacked else None
    tops = list(dict.fromkeys(k[1] for k in keys)) if stacked else keys
    lead = ("substrate", "topology") if stacked else ("topology",)
    n = opts["n_cells"]
    coords = {"topology": tops, "alpha": opts["alphas"], "loss": opts["losses"], "gap": np.arange(n)}
    if stacked:
        coords["substrate"] = subs
    names = [k for k in results[keys[0]] if not k.startswith("_")]

    def stack(name):
        if stacked:
            return np.stack([np.stack([results[(s, t)][name] for t in tops]) for s in subs])
        return np.stack([results[t][name] for t in tops])

    data = {name: (lead + ("alpha", "loss") + (("gap",) if name == "gap_count" else ()), stack(name)) for name in names}
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    ds["specialization_gain"] = ("alpha", 2.0 ** (np.asarray(opts["alphas"]) - 1.0))
    ds["specialization_gain"].attrs["long_name"] = "2^(alpha-1): a pair of full specialists over two generalists"
    ds["loss"].attrs["long_name"] = "transport cost: fraction of the currency's charge dissipated per junction crossing"
    ds["gap"].attrs["long_name"] = "cells between consecutive producers along the ring"
    ds["gap_count"].attrs["long_name"] = "ring gaps of the adaptive tissue at the end, pooled over replicates"
    ds["transport_cost"].attrs["long_name"] = "charge lost in transit / currency produced (measured, whole run)"
    ds["carrier_lost"].attrs["long_name"] = ("carrier lost through leaky junctions / initial carrier (biology: "
                                             "adenine nucleotides, which nothing replaces; generic: 0)")
    ds["pattern_gain"].attrs["long_name"] = "best imposed pattern (every K-th cell a producer) / best generalists"
    if not stacked:
        for name in ds.data_vars:
            if name.startswith(("output_rate", "generalist_output_rate", "pattern_output_rate")):
                ds[name].attrs["units"] = (f"{attrs.get('currency_unit', '1')} of work per cell per "
                                           f"{attrs.get('time_unit', '1')}")
    return ds


def figures(ds, out_dir) -> list[Path]:
    """``figures/phase_diagram.png``: specialization index and gain over (alpha, loss), one column
    per topology, two rows per substrate (several substrates side by side on the same dimensionless
    axes when the dataset has a ``substrate`` dimension); ``figures/spacing.png`` when a ring was run:
    the ring gaps of the adaptive tissue against Anabaena's heterocyst spacing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.plot import _save

    (Path(out_dir) / "figures").mkdir(parents=True, exist_ok=True)
    tops = list(ds["topology"].values)
    subs = list(ds["substrate"].values) if "substrate" in ds.dims else [None]
    fig, axes = plt.subplots(2 * len(subs), len(tops), figsize=(3.4 * len(tops) + 1, 3.2 * 2 * len(subs)),
                             squeeze=False)
    x = ds["specialization_gain"].values
    y = ds["loss"].values
    with np.errstate(divide="ignore", invalid="ignore"):
        lg = np.abs(np.log2(ds["gain"].values))
    gmax = float(np.nanmax(np.where(np.isfinite(lg), lg, np.nan))) if np.any(np.isfinite(lg)) else 1.0
    gmax = min(gmax or 1.0, 2.0)  # colours saturate at 4x either way (a drained tissue's gain is ~0)
    for s, sub in enumerate(subs):
        part = ds if sub is None else ds.sel(substrate=sub)
        name_of = ds.attrs.get("substrate", "") if sub is None else str(sub)
        for j, top in enumerate(tops):
            for i, (name, cmap, kw, label) in enumerate((
                    ("specialization_index", "viridis", {"vmin": 0, "vmax": 1}, "specialization index"),
                    ("gain", "RdBu", {"vmin": -gmax, "vmax": gmax}, "log2 gain over the best generalists"))):
                v = part[name].sel(topology=top).values.T  # (loss, alpha)
                with np.errstate(divide="ignore", invalid="ignore"):
                    v = np.log2(v) if name == "gain" else v
                ax = axes[2 * s + i, j]
                im = ax.imshow(v, origin="lower", aspect="auto", cmap=cmap, **kw)
                ax.set_xticks(range(len(x)), [f"{g:.2g}" for g in x])
                ax.set_yticks(range(len(y)), [f"{c:.2g}" for c in y])
                if name == "gain":
                    for (a, b), val in np.ndenumerate(v):
                        ax.text(b, a, f"{2 ** val:.2f}", ha="center", va="center", fontsize=7)
                ax.set(xlabel="specialization gain 2^(alpha-1) (1)", ylabel="transport cost: loss fraction (1)",
                       title=(f"{name_of}, " if sub is not None else "") + (f"{top}: {label}" if i == 0 else f"{top}: gain"))
                fig.colorbar(im, ax=ax, fraction=0.046).set_label(f"{label} (1)")
    fig.suptitle(f"division of labour ({', '.join(str(s) for s in subs) if subs[0] is not None else ds.attrs.get('substrate', '')}; "
                 f"{ds.attrs.get('rule', '')} adaptation, {ds.attrs.get('replicates', '')} replicates per point)")
    fig.tight_layout()
    paths = [_save(fig, Path(out_dir) / "figures" / "phase_diagram.png")]
    if "gap_count" in ds and "ring" in tops:
        paths.append(_spacing_figure(ds, out_dir, subs))
    return paths


ANABAENA_GAP = (10, 20)  # vegetative cells between heterocysts (Yoon & Golden 1998; Golden & Yoon 2003)


def _spacing_figure(ds, out_dir, subs) -> Path:
    import matplotlib.pyplot as plt

    from sim.plot import _save

    fig, axes = plt.subplots(1, len(subs), figsize=(5.2 * len(subs), 3.6), squeeze=False)
    for ax, sub in zip(axes[0], subs):
        part = (ds if sub is None else ds.sel(substrate=sub)).sel(topology="ring")
        a, loss = part["alpha"].values[-1], part["loss"].values[0]  # the most convex, cheapest point
        counts = part["gap_count"].sel(alpha=a, loss=loss).values
        gaps = part["gap"].values
        ax.bar(gaps, counts, width=0.8, color="tab:blue", label="adaptive tissue (ring)")
        ax.axvspan(*ANABAENA_GAP, color="tab:green", alpha=0.2, label="Anabaena heterocysts")
        k = float(part["pattern_period"].sel(alpha=a, loss=loss))
        if np.isfinite(k):
            ax.axvline(k - 1, color="k", ls=":", label="best imposed pattern")
        ax.set(xlabel="vegetative cells between consecutive producers (cells)", ylabel="gaps counted (1)",
               xlim=(-0.5, max(ANABAENA_GAP[1] + 1, int(gaps[counts > 0].max(initial=0)) + 1)),
               title=f"{sub or ds.attrs.get('substrate', '')}: alpha {a:g}, loss {loss:g}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, Path(out_dir) / "figures" / "spacing.png")


def differentiating(cfg: dict):
    """(plain cfg, base substrate, differentiation options, substrate run) of an experiment on
    differentiation; refuses a substrate without it (shared by multicellular and robustness)."""
    from sim.api import substrate_of

    cfg = as_plain(cfg)
    base = substrates.get((cfg.get("substrate") or {}).get("name"))
    if base.differentiation is None:
        raise ConfigError("substrate", base.name, "a substrate with differentiation: " + ", ".join(SUBSTRATES))
    return cfg, base, dif.read_config(cfg), substrate_of(cfg)


def _beside_config(cfg: dict, beside: dict) -> dict:
    """The config of the substrate drawn beside: the same config with the shipped preset
    ``conf/substrate/<beside.substrate>.yaml`` and the beside time step and length."""
    node = yaml.safe_load((CONF_DIR / "substrate" / f"{beside['substrate']}.yaml").read_text())
    return dict(cfg, substrate=node, dt=beside["dt"], steps=beside["steps"], record_every=beside["record_every"])


def _units(name: str) -> tuple[str, str]:
    return ("mM", "s") if name == "bio" else ("1", "1")


# The unit of every key the multicellular summary can hold (sim.io's naming rule): gains are log2
# ratios, lengths in cells, the turnover rate constant per s (biology) or per time unit (generic).
OUTCOME_UNITS = {
    **CORE_OUTCOMES, "rule": TEXT, "payoff": TEXT, "conductance": TEXT, "topologies": TEXT, "engine_calls": COUNT,
    "rows_per_call": COUNT, "*_best_gain": DIMENSIONLESS, "*_best_gain_at": MAPPING,
    "*_max_specialization_index": DIMENSIONLESS, "*_best_pattern_gain": DIMENSIONLESS,
    "*_transport_length_cells": "cells", "*_gaps_at_convex_cheap": MAPPING, "*currency_turnover_per_s": "1/s",
    "*currency_turnover_per_time_unit": DIMENSIONLESS,
}


def run_substrate(cfg: dict, base, sub, opts: dict) -> tuple[dict, list, float, float, object, object, dict]:
    """Every topology of one substrate (one batched call each) plus its generalists (one call):
    (results by topology, failures, wall, compile, last built, last result, facts)."""
    base.validate(dict(cfg, topology=topology_cfg(opts["topologies"][0], opts["n_cells"])))
    results, failures, wall, comp, last = {}, [], 0.0, 0.0, None
    gen_rows, gen_rates, res = run_generalists(sub, cfg, opts)
    wall, comp = wall + res.wall_s, comp + res.compile_s
    if gen_rates is None:
        return results, [f"generalists: {res.error}"], wall, comp, last, res, {}
    gen = best_generalists(gen_rows, gen_rates, opts)
    facts = {"turnover": gen["turnover"], "generalist_curve": gen["curve"]}
    for kind in opts["topologies"]:
        built, rows, per_row, res = run_topology(sub, cfg, kind, opts)
        wall, comp, last = wall + res.wall_s, comp + res.compile_s, built
        if per_row is None:
            failures.append(f"{kind}: {res.error}")
            break
        results[kind] = reduce(rows, per_row, opts, gen)
        # transport length scale sqrt(g / k) in cells, k the carrier's turnover rate constant: how far
        # (in cells) currency spreads along a chain before it is spent; g / k = g C / D is what one
        # junction carries at the largest gradient (all the carrier C charged on one side) over a
        # generalist's demand D
        results[kind]["transport_length"] = np.full(results[kind]["gain"].shape,
                                                    np.sqrt(per_row["junction_conductance"] / gen["turnover"]))
        facts[f"{kind}_gaps"] = per_row["gap_count"]
    return results, failures, wall, comp, last, res, facts


@register("multicellular")
def run_multicellular(cfg: dict) -> RunOutput:
    from sim.api import substrate_of

    cfg, base, dopts, sub = differentiating(cfg)
    opts = read_options(cfg)
    if dopts["rule"] == "fixed":
        raise ConfigError("differentiation.rule", "fixed", "imitation or gradient (the adaptive tissue of the "
                          "phase diagram; generalists and imposed patterns are run beside it)")
    runs = [(base.name, cfg, base, sub)]
    if opts["beside"] is not None:
        cfg2 = _beside_config(cfg, opts["beside"])
        base2 = substrates.get(cfg2["substrate"].get("name"))
        if base2.differentiation is None:
            raise ConfigError("multicellular.beside.substrate", opts["beside"]["substrate"],
                              "a substrate preset with differentiation: " + ", ".join(SUBSTRATES))
        label = opts["beside"]["substrate"] if opts["beside"]["substrate"] != base.name else f"{base.name} (beside)"
        runs.append((label, cfg2, base2, substrate_of(cfg2)))
    t0 = time.perf_counter()
    results, failures, wall, comp, last, res, facts, calls = {}, [], 0.0, 0.0, None, None, {}, 0
    for label, c, b, s in runs:
        r, f, w, cp, last, res, fa = run_substrate(c, b, s, opts)
        calls += 1 + len(r) + (1 if f and "generalists" not in f[0] else 0)
        wall, comp = wall + w, comp + cp
        facts[label] = dict(fa, time_unit=_units(b.name)[1])
        failures += [f"{label} {x}" if len(runs) > 1 else x for x in f]
        results.update({((label, k) if len(runs) > 1 else k): v for k, v in r.items()})
        if f:
            break
    cu, tu = _units(base.name)
    attrs = {"substrate": base.name, "rule": dopts["rule"], "payoff": dopts["payoff"], "replicates": opts["replicates"],
             "n_cells": opts["n_cells"], "steps": int(cfg["steps"]), "dt": float(cfg["dt"]), "seed": int(cfg["seed"]),
             "currency_unit": cu, "time_unit": tu, "conductance": opts["conductance"],
             "pattern_periods": list(opts["pattern_periods"]),
             "generalist_thetas": list(opts["generalist_thetas"])}
    if opts["beside"] is not None:
        attrs.update({f"beside_{k}": v for k, v in opts["beside"].items()})
    complete = len(results) == len(runs) * len(opts["topologies"])
    ds = to_dataset(results, opts, attrs) if results and (len(runs) == 1 or complete) else None
    per_call = len(design(opts["alphas"], opts["losses"], opts["pattern_periods"], opts["replicates"]))
    summary = {"status": "failed" if failures else "ok", "substrate": base.name, "rule": dopts["rule"],
               "payoff": dopts["payoff"], "conductance": opts["conductance"],
               "topologies": opts["topologies"], "engine_calls": calls,
               "rows_per_call": per_call,
               "wall_s": wall, "compile_s": comp, "total_s": time.perf_counter() - t0}
    if failures:
        summary["reason"] = "; ".join(failures)
    for key, r in results.items():
        tag = "_".join(key) if isinstance(key, tuple) else key
        i, j = np.unravel_index(np.nanargmax(r["gain"]), r["gain"].shape)
        summary[f"{tag}_best_gain"] = float(r["gain"][i, j])
        summary[f"{tag}_best_gain_at"] = {"alpha": opts["alphas"][i], "loss": opts["losses"][j]}
        summary[f"{tag}_max_specialization_index"] = float(np.nanmax(r["specialization_index"]))
        if opts["pattern_periods"]:
            summary[f"{tag}_best_pattern_gain"] = float(np.nanmax(r["pattern_gain"]))
        summary[f"{tag}_transport_length_cells"] = float(r["transport_length"].flat[0])
        if tag.endswith("ring"):
            counts = r["gap_count"][-1, 0]  # most convex alpha, cheapest transport
            gaps = np.repeat(np.arange(counts.size), counts)
            summary[f"{tag}_gaps_at_convex_cheap"] = {
                "mean": float(gaps.mean()) if gaps.size else None,
                "quartiles": [float(q) for q in np.percentile(gaps, [25, 50, 75])] if gaps.size else None,
                "max": int(gaps.max()) if gaps.size else None, "n": int(gaps.size),
                "anabaena": list(ANABAENA_GAP)}
    for label, fa in facts.items():
        if "turnover" in fa:  # a rate constant: per s (biology) or per unit of the dimensionless time
            name = "currency_turnover_per_s" if fa["time_unit"] == "s" else "currency_turnover_per_time_unit"
            summary[f"{label}_{name}" if len(runs) > 1 else name] = fa["turnover"]

    def files(out_dir):
        from sim.io import write_parquet

        if ds is not None:
            write_parquet(Path(out_dir) / "multicellular.parquet",
                          ds.drop_vars(["gap_count", "gap"]).to_dataframe().reset_index())

    lines = [f"multicellular ({', '.join(lbl for lbl, *_ in runs)}, {dopts['rule']}, payoff {dopts['payoff']}, "
             f"conductance {opts['conductance']}): {summary['engine_calls']} engine call(s), {per_call} rows x "
             f"{opts['n_cells']} cells per topology, wall {wall:.1f} s, compile {comp:.1f} s",
             "gain of the adaptive tissue over the best generalists (rows alpha, columns loss)"
             + ("; [best imposed pattern: gain, period]" if opts["pattern_periods"] else "") + ":"]
    for key, r in results.items():
        lines.append(f"  {' '.join(key) if isinstance(key, tuple) else key}: (transport length "
                     f"{float(r['transport_length'].flat[0]):.2g} cells)")
        for i, a in enumerate(opts["alphas"]):
            cells = "  ".join(
                f"{g:5.2f} (SI {s:.2f})" + (f" [{pg:4.2f}, K={k:g}]" if opts["pattern_periods"] else "")
                for g, s, pg, k in zip(r["gain"][i], r["specialization_index"][i], r["pattern_gain"][i],
                                       r["pattern_period"][i]))
            lines.append(f"    alpha {a:4.2g}: {cells}")
    return RunOutput(ds, summary, last, res, figures=(lambda out_dir: figures(ds, out_dir)) if ds is not None
                     else (lambda out_dir: []), files=files, report="\n".join(lines))
