"""Trajectory -> xarray Dataset (dims replicate, time, cell, ...) and the flat summary of ledgers.

Amounts in the engine are mM of one cell's volume; the summary converts currency to molecules
(x volume_l x 1e-3 x N_A) so biology and LLM ledgers count the same thing: currency units (ATP
molecules here, tokens there); every summary name carries its unit (:data:`OUTCOME_UNITS`).
Pools: ``pools`` are the free, exchanging concentrations the physics uses (dG from them);
``pools_total`` and the energy charge add the bound ADP and AMP (``Params.adp_bound``,
``amp_bound``), as a tissue assay counts them. Chains (protein synthesis) book their ATP and amino acids on the ledger line of the consumer
kind they realise, so ``currency_spent_molecules`` and ``work_done_events`` include them; ``chain_summary`` adds
their own accounts (proteins completed, units, the ATP of elongation and initiation).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from sim import topology
from sim.constants import AVOGADRO_PER_MOL, landauer_j
from sim.core import division
from sim.io import CARRIER_OUTCOMES, CORE_OUTCOMES, COUNT, DIMENSIONLESS, TEXT
from sim.network_figure import edge_attributes
from sim.substrates.bio.kernels.thermo import dg_atp_kj, energy_charge_of
from sim.substrates.bio.state import ADP, AMP, ATP, GLC, PI, SPECIES


def _np(x):
    return np.asarray(x)


def pools_total(pools, params):
    """Free pools (..., species) plus the bound ADP and AMP of ``params`` (mM): what an extract measures."""
    out = np.array(pools, dtype=float, copy=True)
    out[..., ADP] += float(np.asarray(params.adp_bound))
    out[..., AMP] += float(np.asarray(params.amp_bound))
    return out


def to_dataset(model, result, cfg: dict) -> xr.Dataset:
    rec = result.records
    st = result.state
    p = model.params
    pools = rec["pools"]  # (R, T, C, S) free
    ec = energy_charge_of(pools, p, xp=np)
    total = pools_total(pools, p)
    dg = dg_atp_kj(pools[..., ATP], pools[..., ADP], pools[..., PI], float(p.dg0_kj), float(p.temperature_k), xp=np)
    n_rep, n_t, n_c = pools.shape[:3]
    coords = {
        # replicate r of the run is replicate first_replicate + r of the seed's ensemble (same draws)
        "replicate": int(cfg.get("first_replicate", 0) or 0) + np.arange(n_rep),
        "time": result.times,
        "cell": np.arange(n_c),
        "species": list(SPECIES),
        "consumer_kind": list(model.consumer_kinds),
    }
    rc = ("replicate", "time", "cell")
    led = st.ledger
    data = {
        "pools": (rc + ("species",), pools, {"units": "mM", "long_name": "free (exchanging) pool concentration"}),
        "pools_total": (rc + ("species",), total, {"units": "mM", "long_name": "total pool concentration (free + bound)"}),
        "pcr": (rc, rec["pcr"], {"units": "mM", "long_name": "phosphocreatine"}),
        "energy_charge": (rc, ec, {"units": "1", "long_name": "(ATP + ADP/2)/(ATP + ADP + AMP) of the total pools"}),
        "dg_atp": (rc, dg, {"units": "kJ/mol", "long_name": "free energy of ATP hydrolysis"}),
        "alive": (rc, rec["alive"].astype(np.int8), {"units": "1"}),
        "stress": (rc, rec["stress"], {"units": "s"}),
        "n_producers": (rc, rec["n_producers"], {"units": "1", "long_name": "producers alive"}),
        "health_mean": (rc, rec["health_mean"], {"units": "1"}),
        "produced": (rc, rec["produced"], {"units": "mM", "long_name": "cumulative currency made"}),
        "spent": (rc, rec["spent"], {"units": "mM", "long_name": "cumulative currency spent"}),
        "work": (rc, rec["work"], {"units": "work units", "long_name": "cumulative work (sum over kinds)"}),
        "transported_out": (rc, rec["transported_out"], {"units": "mM"}),
        "failures": (rc, rec["failures"], {"units": "1", "long_name": "cumulative producer failures"}),
        "births": (rc, rec["births"], {"units": "1", "long_name": "cumulative producer births"}),
        "spent_by_kind": (("replicate", "cell", "consumer_kind"), _np(led.spent), {"units": "mM", "long_name": "final ledger"}),
        "work_by_kind": (("replicate", "cell", "consumer_kind"), _np(led.work), {"units": "see work_units attribute"}),
        "heat": (("replicate", "cell"), _np(led.heat_j), {"units": "J", "long_name": "final ledger"}),
    }
    cled = getattr(st, "chain_ledger", None)
    if cled is not None and np.asarray(st.chains.active).shape[-1] > 0:  # protein synthesis chains
        data["proteins_completed"] = (("replicate", "cell"), _np(cled.delivered),
                                      {"units": "1", "long_name": "chains finished (proteins made by a cohort)"})
        data["chain_units"] = (("replicate", "cell"), _np(cled.units),
                               {"units": "aa per ribosome", "long_name": "units made by the chains (per ribosome)"})
        data["chains_active"] = (("replicate", "cell"), _np(st.chains.active).sum(-1).astype(np.int32),
                                 {"units": "1", "long_name": "chain slots translating at the end"})
    ds = xr.Dataset({k: xr.Variable(v[0], v[1], v[2]) for k, v in data.items()}, coords=coords)
    ds["time"].attrs["units"] = "s"
    ds.attrs.update(
        substrate=str(model.substrate.get("name")),
        currency=str(model.substrate.get("currency")),
        experiment=str(cfg.get("experiment", {}).get("name", "")),
        seed=int(cfg.get("seed", 0)),
        dt_s=float(p.dt),
        volume_l=float(p.volume_l),
        work_units="; ".join(f"{k}: {u}" for k, u in zip(model.consumer_kinds, model.work_units)),
        backend=str(cfg.get("backend", "jax")),
        **edge_attributes(model.graph),  # the junctions, for figures/network.png (sim.network_figure)
    )
    return topology.label_cells(ds, getattr(model, "graph", None))  # a graph file's node labels name the cells


def work_units_text(model) -> str:
    """What one work event of each consumer kind is (``na_k_pump: Na+ exported; ...``): the
    ``work_<kind>_events`` of the summary count these."""
    return "; ".join(f"{k}: {u}" for k, u in zip(model.consumer_kinds, model.work_units))


# The unit of every key a biology summary can hold (sim.io's naming rule): ledgers in molecules
# (x volume x N_A), work in events of each kind (work_units), pools in mM, energies in J.
OUTCOME_UNITS = {
    **CORE_OUTCOMES,
    "currency_produced_molecules": "molecules", "currency_spent_molecules": "molecules",
    "currency_transported_molecules": "molecules", "currency_lost_molecules": "molecules",
    "substrate_taken_up_molecules": "molecules", "output_molecules": "molecules", "switching_molecules": "molecules",
    "work_done_events": "events", "work_*_events": "events", "work_units": TEXT, "work_chains_aa": "aa",
    "energy_j": "J", "heat_j": "J", "substrate_energy_j": "J", "energy_per_work_event_j": "J/work event",
    "currency_pool_turnover_s": "s", "landauer_ratio": DIMENSIONLESS, "conservation_error": DIMENSIONLESS,
    "conservation_error_adenine": DIMENSIONLESS, "conservation_error_currency": DIMENSIONLESS,
    "energy_charge": DIMENSIONLESS, "dg_atp_kj_per_mol": "kJ/mol", "*_mm": "mM",
    "cells_alive": COUNT, "cells_total": COUNT, "producers_alive": COUNT, "producer_failures": COUNT,
    "producer_births": COUNT, "specialization_index": DIMENSIONLESS, "producer_fraction": DIMENSIONLESS,
    "theta_mean": DIMENSIONLESS, "output_per_glucose": DIMENSIONLESS,  # output events per glucose molecule
    "spent_chains_molecules": "molecules", "spent_chains_elongation_molecules": "molecules",
    "spent_chains_initiation_molecules": "molecules", "proteins_completed": COUNT, "chains_initiated": COUNT,
    "chains_active": COUNT, "chain_units_aa": "aa", "protein_mean_length_aa": "aa",
    "atp_per_aa": DIMENSIONLESS,  # ATP molecules per amino acid: a ratio of counts, named in the key
    "spent_share_*": DIMENSIONLESS,
    **CARRIER_OUTCOMES, "carrier_*_molecules": "molecules", "carrier_time_to_standard_s": "s",
}


def molecules_per_mm_of(params) -> float:
    """Molecules in 1 mM of one cell's volume: what turns the engine's mM ledgers into summary.json's molecules."""
    return float(params.volume_l) * 1e-3 * AVOGADRO_PER_MOL


def summarize(model, result, initial_state) -> dict:
    """Flat scalar outcomes (sums over cells, means over replicates) with unit-suffixed names
    (:data:`OUTCOME_UNITS` declares each)."""
    st, p = result.state, model.params
    led = st.ledger
    to_molecules = molecules_per_mm_of(p)
    pools = _np(st.cells.pools)  # (R, C, S)
    pools0 = _np(initial_state.cells.pools)[None]
    alive = _np(st.cells.alive)

    spent_all = _np(led.spent).sum(-1) + _np(led.repair_spent) + _np(led.birth_spent) + _np(led.switching)  # (R, C)
    produced = _np(led.produced)
    lost = _np(led.lost)

    def tissue(x):  # sum over cells, mean over replicates
        return float(np.mean(np.sum(x, axis=-1)))

    # conservation: adenine pool (+ what leaked in transit) and the per-cell currency ledger
    adenine = pools[..., ATP] + pools[..., ADP] + pools[..., AMP]
    adenine0 = pools0[..., ATP] + pools0[..., ADP] + pools0[..., AMP]
    lost_ad = lost[..., ATP] + lost[..., ADP] + lost[..., AMP]
    err_ad = np.abs(adenine.sum(-1) + lost_ad.sum(-1) - adenine0.sum(-1)) / adenine0.sum(-1)
    d_atp = pools[..., ATP] - pools0[..., ATP]
    booked = produced - spent_all + _np(led.ak_atp) + _np(led.ck_atp) + _np(led.transported_in) - _np(led.transported_out)
    scale = np.maximum(produced + spent_all + pools0[..., ATP], 1e-300)
    err_cur = np.max(np.abs(d_atp - booked) / scale, axis=-1)
    conservation_error = float(max(err_ad.max(), err_cur.max()))

    # end-of-run state, over living cells
    a, d, m, pi = pools[..., ATP], pools[..., ADP], pools[..., AMP], pools[..., PI]
    ec = energy_charge_of(pools, p, xp=np)
    dg = dg_atp_kj(a, d, pi, float(p.dg0_kj), float(p.temperature_k), xp=np)
    w = alive.astype(float)
    mean_alive = lambda x: float(np.sum(x * w) / max(np.sum(w), 1))  # noqa: E731

    rec = result.records
    spend_rate = np.nan
    if rec["spent"] is not None and rec["spent"].shape[1] >= 2:
        dt_rec = float(result.times[-1] - result.times[-2])
        spend_rate = (rec["spent"][:, -1] - rec["spent"][:, -2]).sum(-1) / dt_rec  # (R,) mM/s summed over cells
        turnover = float(np.mean(a.sum(-1) / np.maximum(spend_rate, 1e-300)))
    else:
        turnover = float("nan")

    hydrolysis_j = _np(led.hydrolysis_energy_j)
    spent_molecules = tissue(spent_all) * to_molecules
    energy_per_unit = tissue(hydrolysis_j) / spent_molecules if spent_molecules > 0 else float("nan")
    bits = float(model.substrate.get("landauer_bits_per_unit", 1.0))
    work_total = _np(led.work).sum(-1)
    out = {
        "status": "ok",
        "currency_unit": f"{model.substrate.get('currency', 'ATP')} molecules",
        "currency_produced_molecules": tissue(produced) * to_molecules,
        "currency_spent_molecules": spent_molecules,
        "currency_transported_molecules": tissue(_np(led.transported_out)) * to_molecules,
        "currency_lost_molecules": tissue(lost[..., ATP]) * to_molecules,
        "substrate_taken_up_molecules": tissue(_np(led.substrate_uptake)) * to_molecules,
        "work_done_events": tissue(work_total) * to_molecules,
        "work_units": work_units_text(model),
        "energy_j": tissue(hydrolysis_j),
        "heat_j": tissue(_np(led.heat_j)),
        "substrate_energy_j": tissue(_np(led.substrate_energy_j)),
        "energy_per_work_event_j": tissue(hydrolysis_j) / max(tissue(work_total) * to_molecules, 1e-300),
        "currency_pool_turnover_s": turnover,
        "landauer_ratio": energy_per_unit / (landauer_j(float(p.temperature_k)) * bits),
        "conservation_error": conservation_error,
        "conservation_error_adenine": float(err_ad.max()),
        "conservation_error_currency": float(err_cur.max()),
        "energy_charge": mean_alive(ec),
        "dg_atp_kj_per_mol": mean_alive(dg),
        "atp_mm": mean_alive(a),
        "adp_free_mm": mean_alive(d),
        "adp_total_mm": mean_alive(d + float(np.asarray(p.adp_bound))),
        "amp_free_mm": mean_alive(m),
        "amp_total_mm": mean_alive(m + float(np.asarray(p.amp_bound))),
        "pi_mm": mean_alive(pi),
        "pcr_mm": mean_alive(_np(st.cells.pcr)),
        "glucose_mm": mean_alive(pools[..., GLC]),
        "cells_alive": float(np.mean(alive.sum(-1))),
        "cells_total": int(alive.shape[-1]),
        "producers_alive": float(np.mean(_np(st.producers.alive).sum((-1, -2)))),
        "producer_failures": float(np.mean(_np(led.failures).sum(-1))),
        "output_molecules": tissue(_np(led.output)) * to_molecules,
        "switching_molecules": tissue(_np(led.switching)) * to_molecules,
        **division.summary(_np(st.diff.theta), _np(led.output), _np(led.substrate_used), "output_per_glucose"),
        "producer_births": float(np.mean(_np(led.births).sum(-1))),
        "simulated_time_s": float(result.steps_done * float(p.dt)),
        "replicates": int(pools.shape[0]),
        "wall_s": float(result.wall_s),
        "compile_s": float(result.compile_s),
    }
    out.update(chain_summary(model, st, tissue, to_molecules))
    for k, kind in enumerate(model.consumer_kinds):
        out[f"work_{kind}_events"] = tissue(_np(led.work)[..., k]) * to_molecules
        out[f"spent_share_{kind}"] = tissue(_np(led.spent)[..., k]) / max(tissue(spent_all), 1e-300)
    return out


def chain_summary(model, st, tissue, to_molecules) -> dict:
    """Outcomes of the chains (empty without chains): ``spent_chains_molecules`` (ATP),
    ``work_chains_aa`` (amino acids incorporated), ``proteins_completed``, the mean protein length
    (units made / chains finished: the maximum-likelihood mean of geometric lengths, unbiased by
    the chains still running at the end), the ATP per amino acid of elongation and initiation."""
    cled = getattr(st, "chain_ledger", None)
    if cled is None or np.asarray(st.chains.active).shape[-1] == 0:
        return {}
    k = int(np.asarray(model.params.chain_kind).reshape(-1)[0])
    spent = _np(st.ledger.spent)[..., k]
    work = _np(st.ledger.work)[..., k]
    units, delivered = tissue(_np(cled.units)), tissue(_np(cled.delivered))
    aa = tissue(work) * to_molecules
    return {
        "spent_chains_molecules": tissue(spent) * to_molecules,
        "spent_chains_elongation_molecules": tissue(_np(cled.elongation_spent)) * to_molecules,
        "spent_chains_initiation_molecules": tissue(_np(cled.init_spent)) * to_molecules,
        "work_chains_aa": aa,
        "proteins_completed": delivered,
        "chains_initiated": tissue(_np(cled.initiated)),
        "chains_active": float(np.mean(_np(st.chains.active).sum((-1, -2)))),
        "chain_units_aa": units,
        "protein_mean_length_aa": units / delivered if delivered > 0 else float("nan"),
        "atp_per_aa": tissue(_np(cled.elongation_spent)) * to_molecules / aa if aa > 0 else float("nan"),
    }



# ------------------------------------------------------------------------------ figures
#
# Each figure is built by a function returning the matplotlib Figure (tests read its axes, labels and
# limits); :func:`figures` saves them into ``<run>/figures/``. Conventions: a line is the mean over
# replicates, its band the min-max over replicates (the spread a reader must see to trust a
# difference); y-ranges are fitted to what is drawn, never a fixed 0-1; currency amounts are in
# molecules, the unit of summary.json's ``currency_*_molecules`` entries.

MIN_EC_SPAN = 0.02  # the energy-charge panel never zooms into less than this (noise would look like a trend)
PAD = 0.08  # fraction of the drawn range added above and below


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def molecules_per_mm(ds) -> float:
    """Molecules in 1 mM of one cell's volume (``volume_l`` attribute): what turns the dataset's
    ledgers into the molecules of summary.json."""
    return float(ds.attrs["volume_l"]) * 1e-3 * AVOGADRO_PER_MOL


def fitted_limits(lo: float, hi: float, *, min_span: float = 0.0, floor: float | None = None,
                  ceil: float | None = None) -> tuple[float, float]:
    """(bottom, top) around [lo, hi] with :data:`PAD` on each side and at least ``min_span``, kept
    inside [floor, ceil]."""
    lo, hi = float(lo), float(hi)
    span = max(hi - lo, min_span)
    mid = 0.5 * (lo + hi)
    bottom, top = mid - 0.5 * span, mid + 0.5 * span
    bottom, top = bottom - PAD * span, top + PAD * span
    if floor is not None and bottom < floor:
        top, bottom = min(top + (floor - bottom), ceil if ceil is not None else np.inf), floor
    if ceil is not None and top > ceil:
        bottom, top = max(bottom - (top - ceil), floor if floor is not None else -np.inf), ceil
    return bottom, top


def count_limits(lo: float, hi: float) -> tuple[float, float]:
    """Y-range of a count: from 0 for a constant (a flat 200 is drawn at 200 of 0-230, not in a
    199.5-200.5 window that makes rounding look like an event), fitted with whole-number padding
    when it moves."""
    lo, hi = float(lo), float(hi)
    if hi - lo < 1.0:
        return 0.0, max(1.0, hi) * 1.15
    pad = max(1.0, PAD * (hi - lo))
    return max(0.0, lo - pad), hi + pad


def band(ax, t, x, *, color=None, label=None, spread: str | None = None, alpha=0.25):
    """``x`` (dims replicate, time): the mean over replicates as a line and the min-max over
    replicates as a band (one replicate: the line only). ``spread``: the band's legend entry
    (default "<label>: min-max over N replicates"; "" for none). Returns (line, lowest, highest drawn)."""
    mean, lo, hi = x.mean("replicate").values, x.min("replicate").values, x.max("replicate").values
    line, = ax.plot(t, mean, color=color, label=label, lw=1.6)
    n = x.sizes.get("replicate", 1)
    if n > 1:
        if spread is None:
            spread = f"{label}: min-max over {n} replicates" if label else ""
        ax.fill_between(t, lo, hi, color=line.get_color(), alpha=alpha, lw=0, label=spread or None)
    return line, float(np.nanmin(lo)), float(np.nanmax(hi))


def pools_figure(ds):
    """Pools, energy charge and dG over time (means over cells; bands over replicates)."""
    plt = _pyplot()
    t = ds["time"].values
    n_rep = ds.sizes["replicate"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.0))
    ax = axes[0]
    lows, highs = [], []
    for i, sp in enumerate(ds["species"].values):
        _, lo, hi = band(ax, t, ds["pools"].sel(species=sp).mean("cell"), color=f"C{i}", label=str(sp), spread="")
        lows.append(lo)
        highs.append(hi)
    positive = [v for v in lows if v > 0]
    if positive and max(highs) / min(positive) > 30:  # AMP at uM beside glucose at mM: log shows both
        ax.set_yscale("log")
    ax.set(xlabel="time (s)", ylabel="free pool (mM, mean over cells)", title="pools")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside: the pools span the panel

    ax = axes[1]
    ec = ds["energy_charge"]
    cells_lo = ec.quantile(0.1, dim="cell").mean("replicate").values
    cells_hi = ec.quantile(0.9, dim="cell").mean("replicate").values
    if ds.sizes["cell"] > 1:
        ax.fill_between(t, cells_lo, cells_hi, color="C0", alpha=0.18, lw=0, label="10-90% of cells")
    _, lo, hi = band(ax, t, ec.mean("cell"), color="k", label="mean over cells",
                     spread=f"mean over cells: min-max over {n_rep} replicates", alpha=0.35)
    if ds.sizes["cell"] > 1:
        lo, hi = min(lo, float(np.nanmin(cells_lo))), max(hi, float(np.nanmax(cells_hi)))
    ax.set_ylim(*fitted_limits(lo, hi, min_span=MIN_EC_SPAN, floor=0.0, ceil=1.0))
    ax.set(xlabel="time (s)", ylabel="energy charge (1)", title="energy charge (ATP + ADP/2) / (ATP + ADP + AMP)")
    ax.legend(fontsize=8)

    ax = axes[2]
    _, lo, hi = band(ax, t, ds["dg_atp"].mean("cell"), color="C3", label="mean over cells",
                     spread=f"min-max over {n_rep} replicates")
    ax.set_ylim(*fitted_limits(lo, hi, min_span=0.5))
    ax.set(xlabel="time (s)", ylabel="dG of ATP hydrolysis (kJ/mol)", title="free energy of ATP hydrolysis")
    ax.legend(fontsize=8)
    fig.suptitle(f"lines: mean of {n_rep} replicate{'s' if n_rep > 1 else ''}", fontsize=9)
    fig.tight_layout()
    return fig


def ledger_figure(ds):
    """The currency ledger in molecules (summary.json's unit), cumulative, tissue totals: made and
    spent; moved between cells on its own axis (it is orders of magnitude smaller, so on the same
    axis it looks like zero), dropped when nothing moved; spent by consumer kind at the end."""
    plt = _pyplot()
    t = ds["time"].values
    k = molecules_per_mm(ds)
    currency = ds.attrs.get("currency", "ATP")
    unit = f"{currency} molecules"
    moved = ds["transported_out"].sum("cell") * k
    show_moved = bool(np.nanmax(np.abs(moved.values)) > 0) if moved.size else False
    n = 3 if show_moved else 2
    fig, axes = plt.subplots(1, n, figsize=(4.8 * n, 4.0))
    ax = axes[0]
    band(ax, t, ds["produced"].sum("cell") * k, color="C0", label="produced")
    band(ax, t, ds["spent"].sum("cell") * k, color="C1", label="spent")
    ax.set(xlabel="time (s)", ylabel=f"cumulative, tissue total ({unit})", title="currency made and spent")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    if show_moved:
        ax = axes[1]
        _, lo, hi = band(ax, t, moved, color="C2", label="sent to neighbours")
        ax.set_ylim(*fitted_limits(min(lo, 0.0), hi, floor=0.0))
        ax.set(xlabel="time (s)", ylabel=f"cumulative, tissue total ({unit})", title="currency moved between cells")
        ax.legend(fontsize=8)
    ax = axes[-1]
    by_kind = ds["spent_by_kind"].sum("cell") * k  # (replicate, consumer_kind)
    kinds = [str(x) for x in ds["consumer_kind"].values]
    mean = by_kind.mean("replicate").values
    err = None
    if ds.sizes["replicate"] > 1:
        err = np.vstack([mean - by_kind.min("replicate").values, by_kind.max("replicate").values - mean])
    ax.bar(kinds, mean, yerr=err, color=[f"C{i}" for i in range(len(kinds))], capsize=3)
    ax.set(ylabel=f"cumulative spent at the end ({unit})", title="spent by consumer kind (cumulative)")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return fig


def fate_figure(ds):
    """Cells and producers alive (tissue totals; bands over replicates), whole-number axes."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    t = ds["time"].values
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ax = axes[0]
    _, lo, hi = band(ax, t, ds["alive"].sum("cell"), color="C0", label="cells alive")
    total = ds.sizes["cell"]
    ax.axhline(total, color="0.4", ls="--", lw=1, label=f"cells in the tissue ({total})")
    ax.set_ylim(*count_limits(min(lo, total), max(hi, total)))
    ax.set(xlabel="time (s)", ylabel="cells alive (count)", title="cells alive")
    ax = axes[1]
    _, lo, hi = band(ax, t, ds["n_producers"].sum("cell"), color="C1", label="producers alive")
    ax.set_ylim(*count_limits(lo, hi))
    ax.set(xlabel="time (s)", ylabel="producers alive, all cells (count)", title="producers alive (mitochondria)")
    for ax in axes:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


FIGURES = (("pools_energy_charge.png", pools_figure), ("ledger.png", ledger_figure), ("fate.png", fate_figure))


def figures(ds, out_dir):
    """``figures/pools_energy_charge.png``, ``ledger.png``, ``fate.png`` of a biology tissue run, and
    ``network.png`` (:mod:`sim.network_figure`) when the dataset holds the tissue's graph."""
    from pathlib import Path

    from sim.network_figure import network_figures
    from sim.plot import _save

    out = Path(out_dir) / "figures"
    out.mkdir(parents=True, exist_ok=True)
    return [_save(make(ds), out / name) for name, make in FIGURES] + network_figures(ds, out_dir)
