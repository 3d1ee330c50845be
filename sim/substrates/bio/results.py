"""Trajectory -> xarray Dataset (dims replicate, time, cell, ...) and the flat summary of ledgers.

Amounts in the engine are mM of one cell's volume; the summary converts currency to molecules
(x volume_l x 1e-3 x N_A) so biology and LLM ledgers count the same thing: currency units.
Pools: ``pools`` are the free, exchanging concentrations the physics uses (dG from them);
``pools_total`` and the energy charge add the bound ADP and AMP (``Params.adp_bound``,
``amp_bound``), as a tissue assay counts them. Chains (protein synthesis) book their ATP and amino acids on the ledger line of the consumer
kind they realise, so ``currency_spent`` and ``work_done`` include them; ``chain_summary`` adds
their own accounts (proteins completed, units, the ATP of elongation and initiation).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from sim.constants import AVOGADRO_PER_MOL, landauer_j
from sim.core import division
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
    )
    return ds


def summarize(model, result, initial_state) -> dict:
    """Flat scalar outcomes (sums over cells, means over replicates) with unit-suffixed names."""
    st, p = result.state, model.params
    led = st.ledger
    to_molecules = float(p.volume_l) * 1e-3 * AVOGADRO_PER_MOL
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
        "currency_produced": tissue(produced) * to_molecules,
        "currency_spent": spent_molecules,
        "currency_transported": tissue(_np(led.transported_out)) * to_molecules,
        "currency_lost": tissue(lost[..., ATP]) * to_molecules,
        "substrate_taken_up": tissue(_np(led.substrate_uptake)) * to_molecules,
        "work_done": tissue(work_total) * to_molecules,
        "energy_j": tissue(hydrolysis_j),
        "heat_j": tissue(_np(led.heat_j)),
        "substrate_energy_j": tissue(_np(led.substrate_energy_j)),
        "energy_per_work_j": tissue(hydrolysis_j) / max(tissue(work_total) * to_molecules, 1e-300),
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
        out[f"work_{kind}"] = tissue(_np(led.work)[..., k]) * to_molecules
        out[f"spent_share_{kind}"] = tissue(_np(led.spent)[..., k]) / max(tissue(spent_all), 1e-300)
    return out


def chain_summary(model, st, tissue, to_molecules) -> dict:
    """Outcomes of the chains (empty without chains): ``spent_chains`` (ATP molecules),
    ``work_chains`` (amino acids incorporated), ``proteins_completed``, the mean protein length
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
        "spent_chains": tissue(spent) * to_molecules,
        "spent_chains_elongation": tissue(_np(cled.elongation_spent)) * to_molecules,
        "spent_chains_initiation": tissue(_np(cled.init_spent)) * to_molecules,
        "work_chains": aa,
        "proteins_completed": delivered,
        "chains_initiated": tissue(_np(cled.initiated)),
        "chains_active": float(np.mean(_np(st.chains.active).sum((-1, -2)))),
        "chain_units": units,
        "protein_mean_length_aa": units / delivered if delivered > 0 else float("nan"),
        "atp_per_aa": tissue(_np(cled.elongation_spent)) * to_molecules / aa if aa > 0 else float("nan"),
    }

