"""``experiment=standardization``: does one currency take over, and when?

Several competing carriers (:mod:`sim.core.carriers`) in a tissue whose compartments adapt the
carrier they make and accept by imitating better-off neighbours (with mutation). For every topology
of ``standardization.topologies`` and every number of carriers of ``standardization.n_carriers``,
ONE batched engine call runs every point of ``conversion_costs`` x ``storage_spreads`` with
``replicates`` replicates of three tissues each:

``adaptive``  strategies start uniformly random and adapt (``carriers.rule: imitation``);
``one``       every compartment makes and accepts carrier 0 (the cheapest), no adaptation: the
              tissue forced onto one standard;
``mixed``     strategies start uniformly random and never change: the tissue forced to stay mixed.

The carriers' storage costs are ``storage x (1 + spread x k / (n - 1))`` for carrier k (carrier 0
cheapest to keep; ``carriers.storage`` is the base). Outcomes per point (mean and spread over
replicates):

``herfindahl``             sum_k share_k^2 of the carriers made, at the end (1/n mixed, 1 one standard);
``standardised_fraction``  replicates in which one carrier is made by >= 90% of compartments at the end;
``time_to_standard``       median first time the dominant share reaches 90% (inf: never);
``cheapest_wins``          replicates in which carrier 0 is the most made at the end;
``work_per_substrate``     work done per unit of substrate over the second half, for each tissue
                           (``adaptive``, ``one``, ``mixed``), and ``gain_over_mixed`` =
                           adaptive / mixed;
``dominant_share``         (over time) the share of the most made carrier, for the share figure.

Plus, with ``standardization.kiyotaki_wright: true``, the Kiyotaki-Wright check of
:mod:`sim.core.kiyotaki_wright` (three types, no double coincidence of wants): which good ends as the
medium of exchange. And with ``standardization.llm: true``, the LLM side
(:mod:`sim.substrates.llm.formats`): model instances on the same topologies (``n_cells`` of them)
choosing the message format of their hand-offs (text in two tokenizers, hidden states, KV caches),
costed on the roofline of the ``model``/``gpu`` groups, with ``conversion_costs`` as the fraction of
the re-prefill a mismatched hand-off pays and ``replicates`` per point; options in
``standardization.llm_formats``; outcomes ``llm_*`` in the summary and ``llm_formats.nc`` /
``llm_formats.parquet``.

Writes ``results.nc``, ``standardization.parquet`` (one row per point), ``summary.json`` and
``figures/standardization.png`` (dominant share over time; Herfindahl over conversion cost and
storage spread per topology).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from sim.api import RunOutput, as_plain
from sim.core import carriers as car
from sim.core import engine
from sim.errors import ConfigError
from sim.experiments import register
from sim.io import CORE_OUTCOMES, COUNT, DIMENSIONLESS, TEXT
from sim.experiments.multicellular import _floats, batch_rows, topology_cfg
from sim.rng import replicate_keys
from sim.substrates.llm import formats as llm_formats

MODES = ("adaptive", "one", "mixed")
TAIL = 0.1  # the end state of a run: the mean over its last 10% of records (shares flicker under mutation)


def read_options(cfg: dict) -> dict:
    """The ``standardization`` section, checked."""
    from sim.topology import KINDS

    opts = dict(cfg.get("standardization") or {})

    def floats(key, lo, hi):
        try:
            return _floats(opts, key, lo, hi)
        except ConfigError as exc:
            raise ConfigError(f"standardization.{key}", exc.value, exc.allowed) from None

    out = {"conversion_costs": floats("conversion_costs", 0.0, 1.0), "storage_spreads": floats("storage_spreads", 0.0, None)}
    topo = opts.get("topologies")
    if not isinstance(topo, (list, tuple)) or not topo or any(t not in KINDS or t in ("file", "single") for t in topo):
        raise ConfigError("standardization.topologies", topo, "a non-empty list of: " + ", ".join(
            k for k in KINDS if k not in ("file", "single")))
    out["topologies"] = list(topo)
    ns = opts.get("n_carriers")
    if not isinstance(ns, (list, tuple)) or not ns or any(isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= 64
                                                          for n in ns):
        raise ConfigError("standardization.n_carriers", ns, "a non-empty list of integers in 2 .. 64")
    out["n_carriers"] = [int(n) for n in ns]
    for key, lo in (("replicates", 1), ("n_cells", 4)):
        v = opts.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ConfigError(f"standardization.{key}", v, f"an integer >= {lo}")
        out[key] = v
    kw = opts.get("kiyotaki_wright", False)
    if not isinstance(kw, bool):
        raise ConfigError("standardization.kiyotaki_wright", kw, "true or false")
    out["kiyotaki_wright"] = kw
    llm = opts.get("llm", False)
    if not isinstance(llm, bool):
        raise ConfigError("standardization.llm", llm, "true or false (also run the LLM message-format economy)")
    out["llm"] = llm
    out["llm_formats"] = llm_formats.read_config(opts.get("llm_formats"), "standardization.llm_formats")
    return out


def storage_costs(base: float, spread: float, n: int) -> np.ndarray:
    """Carrier k keeps at ``base (1 + spread k / (n - 1))`` per unit time: carrier 0 is the cheapest."""
    return base * (1.0 + spread * np.arange(n) / max(n - 1, 1))


def design(costs, spreads, replicates, modes=MODES):
    """Rows of one batched call: (cost, spread, mode, replicate), point-major."""
    return [(c, s, m, r) for c in costs for s in spreads for m in modes for r in range(replicates)]


def initial_strategies(built, rows, n: int, accepts: str):
    """Per row: the carrier each compartment makes at t = 0 and what it accepts (random per
    replicate from the seed; all carrier 0 for the ``one`` tissue)."""
    c = built.n_cells
    make = np.empty((len(rows), c), np.int32)
    for i, (_, _, mode, r) in enumerate(rows):
        gen = np.random.default_rng([int(built.seed), 0x57D, r])
        make[i] = 0 if mode == "one" else gen.integers(0, n, c)
    base = np.asarray(built.state.carriers.accept)
    accept = (make[..., None] == np.arange(n)) if accepts == "own" else np.broadcast_to(base, (len(rows),) + base.shape)
    return make, np.array(accept)


def run_call(sub, cfg: dict, kind: str, n: int, opts: dict, copts: dict, modes=MODES):
    """One batched engine call: every (cost, spread, mode, replicate) row for one topology and n
    (``modes``: the tissues to run, all of :data:`MODES` in the experiment)."""
    run_cfg = dict(cfg, topology=topology_cfg(kind, opts["n_cells"]), carriers=dict(cfg.get("carriers") or {}, n=n))
    built = sub.build(run_cfg)
    rows = design(opts["conversion_costs"], opts["storage_spreads"], opts["replicates"], modes)
    n_rows = len(rows)
    base = float(copts["storage"][0])
    rate = float(np.asarray(built.params.carriers.rate))
    params = batch_rows(built.params, n_rows, {
        "carriers.conversion_cost": [r[0] for r in rows],
        "carriers.rate": [rate if r[2] == "adaptive" else 0.0 for r in rows]})
    params = dataclasses.replace(params, carriers=dataclasses.replace(
        params.carriers, storage=np.array([storage_costs(base, r[1], n) for r in rows])))
    make, accept = initial_strategies(built, rows, n, copts["accepts"])
    a0 = np.asarray(built.state.cells.a)
    held = np.where(make[..., None] == np.arange(n), a0[None, :, None], 0.0)
    state = batch_rows(built.state, n_rows, {})
    state = dataclasses.replace(state, carriers=dataclasses.replace(state.carriers, make=make, accept=accept, held=held))
    keys = replicate_keys(built.seed, opts["replicates"])[np.array([r[3] for r in rows])]
    res = engine.run(sub, state, params, seed=built.seed, steps=int(cfg["steps"]), record_every=int(cfg["record_every"]),
                     replicates=n_rows, batched_params=True, keys=keys, chunk_records=int(cfg.get("chunk_records", 100)))
    return built, rows, res


def per_row(res, n: int) -> dict:
    """Outcomes of every row of a call (numpy arrays with a leading row axis)."""
    t = np.asarray(res.times)
    make = np.asarray(res.records["make"])
    alive = np.asarray(res.records["alive"], bool)
    share = car.shares(make, alive, n)  # (rows, T, n)
    tail = max(1, int(round(TAIL * len(t))))
    end = share[:, -tail:].mean(1)
    h = (len(t) - 1) // 2
    work, used = res.records["work"].sum(-1), res.records["substrate_used"].sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        wps = (work[:, -1] - work[:, h]) / (used[:, -1] - used[:, h])
    return {"herfindahl": car.herfindahl(end), "dominant_share_end": end.max(-1), "winner": end.argmax(-1),
            "time_to_standard": car.time_to_standard(share.max(-1), t), "dominant_share": share.max(-1),
            "work_per_substrate": wps, "share": share}


def reduce(rows, out: dict, opts: dict) -> dict:
    """Per (cost, spread): outcomes of the adaptive tissue over replicates, and the controls."""
    C, S, R = len(opts["conversion_costs"]), len(opts["storage_spreads"]), opts["replicates"]
    shape = (C, S, len(MODES), R)
    pick = lambda name, mode: out[name].reshape(shape + out[name].shape[1:])[:, :, MODES.index(mode)]  # noqa: E731
    h = pick("herfindahl", "adaptive")
    std = pick("dominant_share_end", "adaptive") >= car.STANDARD
    red = {"herfindahl": h.mean(-1), "herfindahl_std": h.std(-1), "standardised_fraction": std.mean(-1),
           "time_to_standard": np.median(pick("time_to_standard", "adaptive"), axis=-1),
           "cheapest_wins": (pick("winner", "adaptive") == 0).mean(-1),
           "mixed_herfindahl": pick("herfindahl", "mixed").mean(-1),
           "dominant_share_t": pick("dominant_share", "adaptive").mean(2)}  # (C, S, T)
    for mode in MODES:
        red[f"work_per_substrate_{mode}"] = pick("work_per_substrate", mode).mean(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        red["gain_over_mixed"] = red["work_per_substrate_adaptive"] / red["work_per_substrate_mixed"]
    return red


def to_dataset(results: dict, opts: dict, times, attrs: dict):
    import xarray as xr

    tops, ns = opts["topologies"], opts["n_carriers"]
    dims = ("topology", "n_carriers", "conversion_cost", "storage_spread")
    coords = {"topology": tops, "n_carriers": ns, "conversion_cost": opts["conversion_costs"],
              "storage_spread": opts["storage_spreads"], "time": np.asarray(times)}
    first = results[(tops[0], ns[0])]
    data = {}
    for name in first:
        stack = np.array([[results[(t, n)][name] for n in ns] for t in tops])
        data[name] = (dims + (("time",) if name == "dominant_share_t" else ()), stack)
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    long = {"herfindahl": "sum of squared shares of the carriers made (1/n mixed, 1 one standard)",
            "standardised_fraction": "replicates with one carrier made by >= 90% of compartments",
            "cheapest_wins": "replicates in which carrier 0 (cheapest to store) is the most made",
            "dominant_share_t": "share of the most made carrier (mean over replicates)",
            "gain_over_mixed": "work per substrate: adaptive tissue / tissue forced to stay mixed"}
    for name, text in long.items():
        ds[name].attrs["long_name"] = text
    ds["time_to_standard"].attrs["units"] = attrs.get("time_unit", "1")
    return ds


def normalised_herfindahl(h, n):
    """``(H - 1/n) / (1 - 1/n)``: 0 for an even mix of ``n`` carriers, 1 for one carrier alone, so
    tissues with different numbers of carriers sit on one scale."""
    n = np.asarray(n, float)
    return (np.asarray(h, float) - 1.0 / n) / (1.0 - 1.0 / n)


def figures(ds, out_dir) -> list[Path]:
    """``figures/standardization.png``: the dominant carrier's share over time (one line per
    conversion cost, first storage spread and number of carriers) and the Herfindahl index over
    conversion cost x storage spread, one column per topology; with several numbers of carriers a
    third row: the normalised Herfindahl (:func:`normalised_herfindahl`) against conversion cost, a
    line per number of carriers (band: the replicates' standard deviation), at the largest spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.plot import _save

    (Path(out_dir) / "figures").mkdir(parents=True, exist_ok=True)
    tops = list(ds["topology"].values)
    ns = [int(n) for n in ds["n_carriers"].values]
    n0 = ns[0]
    rows = 3 if len(ns) > 1 else 2
    fig, axes = plt.subplots(rows, len(tops), figsize=(3.8 * len(tops) + 1, 3.5 * rows), squeeze=False)
    costs, spreads = ds["conversion_cost"].values, ds["storage_spread"].values
    cmap = plt.get_cmap("viridis")
    for j, top in enumerate(tops):
        ax = axes[0, j]
        sel = ds["dominant_share_t"].sel(topology=top, n_carriers=n0).isel(storage_spread=0)
        for i, c in enumerate(costs):
            ax.plot(ds["time"].values, sel.sel(conversion_cost=c).values, color=cmap(i / max(len(costs) - 1, 1)),
                    label=f"cost {c:g}")
        ax.axhline(1.0 / n0, color="grey", lw=0.8, ls=":", label=f"1/{n0} (even)")
        ax.axhline(car.STANDARD, color="k", lw=0.8, ls="--", label="standard (90%)")
        ax.set(xlabel=f"time ({ds.attrs.get('time_unit', '1')})", ylabel="share of the dominant carrier (1)",
               ylim=(0, 1.02), title=f"{top}: dominant share ({n0} carriers, spread {spreads[0]:g})")
        if j == 0:
            ax.legend(fontsize=7)
        ax = axes[1, j]
        v = ds["herfindahl"].sel(topology=top, n_carriers=n0).values.T  # (spread, cost)
        im = ax.imshow(v, origin="lower", aspect="auto", cmap="magma", vmin=1.0 / n0, vmax=1.0)
        ax.set_xticks(range(len(costs)), [f"{c:g}" for c in costs])
        ax.set_yticks(range(len(spreads)), [f"{s:g}" for s in spreads])
        for (a, b), val in np.ndenumerate(v):
            ax.text(b, a, f"{val:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if val < 0.6 else "black")
        ax.set(xlabel="conversion cost: fraction of the charge (1)", ylabel="storage-cost spread (1)",
               title=f"{top}: Herfindahl, {n0} carriers")
        fig.colorbar(im, ax=ax, fraction=0.046).set_label("Herfindahl index of the carriers made (1)")
        if rows == 3:
            ax = axes[2, j]
            for i, n in enumerate(ns):
                sub = ds.sel(topology=top, n_carriers=n).isel(storage_spread=-1)
                mean = normalised_herfindahl(sub["herfindahl"].values, n)
                sd = np.asarray(sub["herfindahl_std"].values, float) / (1.0 - 1.0 / n)
                color = plt.get_cmap("plasma")(i / max(len(ns) - 1, 1) * 0.85)
                ax.plot(costs, mean, "o-", color=color, label=f"{n} carriers")
                ax.fill_between(costs, mean - sd, mean + sd, color=color, alpha=0.15, lw=0)
            ax.axhline(0.0, color="grey", lw=0.8, ls=":")
            ax.set(xlabel="conversion cost: fraction of the charge (1)",
                   ylabel="normalised Herfindahl (H - 1/n)/(1 - 1/n) (1)", ylim=(-0.1, 1.0),
                   title=f"{top}: number of carriers (spread {spreads[-1]:g})")
            if j == 0:
                ax.legend(fontsize=7)
    title = f"{n0} carriers" if len(ns) == 1 else f"{', '.join(map(str, ns))} carriers"
    fig.suptitle(f"standardisation: {title}, {ds.attrs.get('replicates', '')} replicates per point, "
                 f"{ds.attrs.get('n_cells', '')} compartments")
    fig.tight_layout()
    return [_save(fig, Path(out_dir) / "figures" / "standardization.png")]


KW_GRAPH = (90, 12, 0.2)  # Watts-Strogatz agents, neighbours, rewiring: 30 agents of each type
KW_STORAGE, KW_UTILITY = (1.0, 4.0, 9.0), 20.0  # s3 - s2 > u / 6: good 1 the only equilibrium medium


# The unit of every key the standardisation summary can hold (sim.io's naming rule): Herfindahl
# indices, shares and fractions are dimensionless; the LLM formats' energies in J, times in rounds.
OUTCOME_UNITS = {
    **CORE_OUTCOMES, "engine_calls": COUNT, "rows_per_call": COUNT, "*_herfindahl_at_*": DIMENSIONLESS,
    "*_standardised_at_highest_cost": DIMENSIONLESS, "*_cheapest_wins_at_widest_spread": DIMENSIONLESS,
    "kw_replicates": COUNT, "kw_storage": DIMENSIONLESS, "kw_utility": DIMENSIONLESS,  # (in units of utility)
    "kw_cheapest_is_medium_fraction": DIMENSIONLESS, "kw_medium_share_good_*": DIMENSIONLESS,
    "llm_model": TEXT, "llm_gpu": TEXT, "llm_formats": TEXT, "llm_cheapest_format": TEXT,
    "llm_task_energy_matched_*_j": "J", "llm_*_time_to_standard_at_highest_cost_rounds": "rounds",
    "llm_*_winner_at_highest_cost": TEXT, "llm_*_wins_*_at_highest_cost": DIMENSIONLESS,
    "llm_*_energy_per_handoff_*_at_highest_cost_j": "J", "llm_wall_s": "s",
}


def _kiyotaki_wright(cfg: dict, replicates: int) -> dict:
    """The Kiyotaki-Wright check (sim.core.kiyotaki_wright): which good ends as the medium of
    exchange when storage costs s3 > s2 > s1 and strategies adapt."""
    import networkx as nx

    from sim.core import kiyotaki_wright as kw

    graph = nx.connected_watts_strogatz_graph(*KW_GRAPH, seed=int(cfg["seed"]))
    out = kw.run(graph, storage=KW_STORAGE, utility=KW_UTILITY, steps=2000, replicates=max(replicates, 4),
                 seed=int(cfg["seed"]))
    med = np.asarray(out["medium_share"])  # (R, 3)
    summary = {"kw_replicates": int(med.shape[0]), "kw_storage": list(KW_STORAGE), "kw_utility": KW_UTILITY,
               "kw_cheapest_is_medium_fraction": float(np.mean(np.asarray(out["most_held_medium"]) == 0))}
    summary.update({f"kw_medium_share_good_{k + 1}": float(med[:, k].mean()) for k in range(med.shape[1])})
    return summary


def _llm(cfg: dict, opts: dict):
    """The LLM message-format economy (:mod:`sim.substrates.llm.formats`) on the experiment's
    topologies (``n_cells`` instances, the run seed's graphs) and conversion costs: its dataset."""
    from sim.topology import build_graph

    graphs = {kind: build_graph(topology_cfg(kind, opts["n_cells"]), seed=int(cfg["seed"])) for kind in opts["topologies"]}
    exp = llm_formats.experiment(cfg, opts["llm_formats"], graphs, opts["conversion_costs"], opts["replicates"],
                                 int(cfg["seed"]))
    ds = llm_formats.dataset(exp)
    ds.attrs["wall_s"] = exp["wall_s"]
    return ds


@register("standardization")
def run_standardization(cfg: dict) -> RunOutput:
    from sim import substrates
    from sim.api import substrate_of

    cfg = as_plain(cfg)
    opts = read_options(cfg)
    copts = car.read_config(cfg)
    base = substrates.get((cfg.get("substrate") or {}).get("name"))
    if base.carriers is None:
        raise ConfigError("substrate", base.name, "a substrate with carriers: generic or generic_tissue")
    if copts["rule"] != "imitation":
        raise ConfigError("carriers.rule", copts["rule"], "imitation (the adaptive tissue; the forced ones run beside it)")
    if len(set(copts["storage"])) > 1:
        raise ConfigError("carriers.storage", copts["storage"], "one number (the base storage cost; "
                          "standardization.storage_spreads sets the carriers' spread)")
    t0 = time.perf_counter()
    results, failures, wall, comp, last, res, times = {}, [], 0.0, 0.0, None, None, None
    for kind in opts["topologies"]:
        for n in opts["n_carriers"]:
            sub = substrate_of(dict(cfg, carriers=dict(cfg.get("carriers") or {}, n=n)))
            base.validate(dict(cfg, topology=topology_cfg(kind, opts["n_cells"])))
            built, rows, res = run_call(sub, cfg, kind, n, opts, copts)
            wall, comp, last = wall + res.wall_s, comp + res.compile_s, built
            if res.error is not None:
                failures.append(f"{kind}, n={n}: {res.error}")
                break
            times = res.times
            results[(kind, n)] = reduce(rows, per_row(res, n), opts)
        if failures:
            break
    attrs = {"substrate": base.name, "replicates": opts["replicates"], "n_cells": opts["n_cells"],
             "steps": int(cfg["steps"]), "dt": float(cfg["dt"]), "seed": int(cfg["seed"]), "time_unit": "1",
             "storage_base": float(copts["storage"][0]), "selection": float(copts["selection"]),
             "mutation": float(copts["mutation"]), "rate": float(copts["rate"]), "accepts": copts["accepts"]}
    complete = not failures
    ds = to_dataset(results, opts, times, attrs) if complete else None
    summary = {"status": "ok" if complete else "failed", "substrate": base.name,
               "engine_calls": len(results) + len(failures),
               "rows_per_call": len(design(opts["conversion_costs"], opts["storage_spreads"], opts["replicates"])),
               "wall_s": wall, "compile_s": comp}
    if failures:
        summary["reason"] = "; ".join(failures)
    for (kind, n), r in results.items():
        tag = f"{kind}_n{n}"
        summary[f"{tag}_herfindahl_at_lowest_cost"] = float(r["herfindahl"][0].mean())
        summary[f"{tag}_herfindahl_at_highest_cost"] = float(r["herfindahl"][-1].mean())
        summary[f"{tag}_standardised_at_highest_cost"] = float(r["standardised_fraction"][-1].mean())
        summary[f"{tag}_cheapest_wins_at_widest_spread"] = float(r["cheapest_wins"][:, -1].mean())
    if opts["kiyotaki_wright"] and complete:
        summary.update(_kiyotaki_wright(cfg, opts["replicates"]))
    llm_ds = _llm(cfg, opts) if opts["llm"] and complete else None
    if llm_ds is not None:
        summary.update(llm_formats.summary(llm_ds))
        summary["llm_wall_s"] = llm_ds.attrs["wall_s"]
    summary["total_s"] = time.perf_counter() - t0

    def files(out_dir):
        from sim.io import write_parquet

        if ds is not None:
            write_parquet(Path(out_dir) / "standardization.parquet",
                          ds.drop_vars(["dominant_share_t", "time"]).to_dataframe().reset_index())
        if llm_ds is not None:
            from sim.io import write_netcdf

            write_netcdf(Path(out_dir) / "llm_formats.nc", llm_ds)
            write_parquet(Path(out_dir) / "llm_formats.parquet", llm_formats.table(llm_ds))

    lines = [f"standardization ({base.name}): {len(results)} engine call(s) of {summary['rows_per_call']} rows x "
             f"{opts['n_cells']} compartments, wall {wall:.1f} s, compile {comp:.1f} s",
             "Herfindahl of the carriers made at the end (rows: conversion cost; columns: storage spread); "
             "in brackets the share of replicates standardised:"]
    if "kw_cheapest_is_medium_fraction" in summary:
        lines.append(f"Kiyotaki-Wright (storage {KW_STORAGE}, utility {KW_UTILITY:g}): the cheapest good is the most held "
                     f"medium in {summary['kw_cheapest_is_medium_fraction']:.0%} of {summary['kw_replicates']} replicates "
                     f"(medium shares {', '.join(f'{summary[k]:.2f}' for k in sorted(summary) if k.startswith('kw_medium'))})")
    for (kind, n), r in results.items():
        lines.append(f"  {kind}, {n} carriers (even mix: {1 / n:.2f}):")
        for i, c in enumerate(opts["conversion_costs"]):
            cells = "  ".join(f"{h:4.2f} ({f:.0%})" for h, f in zip(r["herfindahl"][i], r["standardised_fraction"][i]))
            lines.append(f"    cost {c:4.2g}: {cells}")
    if llm_ds is not None:
        lines += llm_formats.report(llm_ds, llm_ds.attrs["wall_s"])
    return RunOutput(ds, summary, last, res, figures=(lambda out_dir: figures(ds, out_dir)) if ds is not None
                     else (lambda out_dir: []), files=files, report="\n".join(lines))
