"""LLM trajectories -> xarray Dataset (dims replicate, time, cell) and the serving summary.

Summary quantities are over a steady window (after ``warmup_fraction`` of the run), summed over
cells and averaged over replicates:

- Little's law: ``L`` = time-averaged requests in the system (occupancy integral / window),
  ``lambda`` = arrivals / window, ``W`` = mean time in system of the requests that completed in
  the window; ``littles_law_rel_error = |L - lambda W| / L``.
- stability: ``stable`` is false when requests were dropped (a full queue) or the number in the
  system kept growing over the window (least-squares slope x window > max(5, 5% of the requests
  that arrived in the window): beyond the limit the excess of arrivals over service piles up).
  ``stability_limit_req_per_s`` is a fluid estimate (Li, Dai & Peng 2025): requests/s at which one
  instance's GPU time is used up by prefill plus decode at the KV-limited batch (single turn).
- ledgers: tokens in/out, J per output token (power state x time), USD billed (price per 1M
  input/output tokens) against the electricity cost, Landauer ratio per output token
  ``(J/token) / (kT ln 2 x bits per token)``, the KV-cache balance (conserved carrier).
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from sim.constants import landauer_j
from sim.substrates.llm import specs



def to_dataset(llm, result, cfg: dict) -> xr.Dataset:
    rec = result.records
    n_rep, n_t, n_c = rec["in_system"].shape
    # replicate r of the run is replicate first_replicate + r of the seed's ensemble (same draws)
    first = int(cfg.get("first_replicate", 0) or 0)
    coords = {"replicate": first + np.arange(n_rep), "time": result.times, "cell": np.arange(n_c)}
    from sim.substrates.llm.spec import RECORDS

    data = {q.name: xr.Variable(("replicate", "time", "cell"), rec[q.name], {"units": q.unit, "long_name": q.long_name})
            for q in RECORDS}
    ds = xr.Dataset(data, coords=coords)
    ds["time"].attrs["units"] = "s"
    ds.attrs.update(
        substrate="llm", currency="token", model=llm.model.name, gpu=llm.gpu.name, gpus_per_model=llm.n_gpus,
        kv_capacity_tokens=float(llm.kv_capacity), experiment=str(cfg.get("experiment", {}).get("name", "")),
        seed=int(cfg.get("seed", 0)), dt_s=float(np.asarray(llm.params.dt)), backend=str(cfg.get("backend", "jax")),
    )
    return ds


def _window(times, warmup_fraction: float) -> int:
    """Index of the first record of the steady window."""
    t_end = times[-1]
    i0 = int(np.searchsorted(times, warmup_fraction * t_end, side="left"))
    return min(max(i0, 0), len(times) - 2)


def _lognormal_moments(median, sigma):
    return median * math.exp(0.5 * sigma * sigma), median * median * math.exp(2.0 * sigma * sigma)


def stability_limit(llm) -> dict:
    """Fluid estimate of the largest sustainable arrival rate per model instance (single turns)."""
    p, m = llm.params, llm.model
    ep, ep2 = _lognormal_moments(float(p.prompt_median), float(p.prompt_sigma))
    eo, _ = _lognormal_moments(float(p.output_median), float(p.output_sigma))
    ep, eo = min(ep, m.max_context), min(eo, m.max_context)
    f = llm.gpu.achieved_flops * llm.n_gpus
    bw = llm.gpu.achieved_bandwidth * llm.n_gpus
    prefill_s = (m.flops_per_token * ep + 0.5 * m.flops_per_token_per_ctx * ep2) / f
    slots = np.asarray(llm.state.chains.active).shape[1]
    b_star = max(1.0, min(float(p.max_batch), float(slots), llm.kv_capacity / (ep + eo)))
    t_star = specs.decode_step_time(m, f, bw, b_star, b_star * (ep + 0.5 * eo),
                                    comm_s=specs.allreduce_time(m, llm.gpu, llm.n_gpus, b_star))
    decode_s = eo * t_star / b_star
    return {
        "stability_limit_req_per_s": 1.0 / (prefill_s + decode_s),
        "kv_limited_batch": b_star,
        "prefill_s_per_request": prefill_s,
        "decode_s_per_request": decode_s,
    }


MIN_GROWTH = 5.0  # requests: a smaller growth over the window is noise, whatever the arrivals
MAX_ACCUMULATION = 0.05  # a steady queue keeps its growth over the window below 5% of the arrivals


def summarize(llm, result, warmup_fraction: float = 0.25) -> dict:
    rec, times = result.records, result.times
    st = result.state
    i0 = _window(times, warmup_fraction)
    span = float(times[-1] - times[i0])

    def d(name):  # window increment, summed over cells -> (R,)
        x = rec[name]
        return (x[:, -1] - x[:, i0]).sum(-1)

    arrived, completed, sojourn, occ = d("arrived"), d("completed"), d("sojourn_s"), d("occupancy_s")
    dropped = d("dropped")
    lam = arrived / span
    mean_n = occ / span
    w = np.where(completed > 0, sojourn / np.maximum(completed, 1), np.nan)
    little = np.abs(mean_n - lam * w) / np.maximum(mean_n, 1e-300)

    n_sys = rec["in_system"][:, i0:].sum(-1).astype(float)  # (R, T')
    tw = times[i0:]
    slope = np.array([np.polyfit(tw, n_sys[r], 1)[0] if len(tw) > 2 else 0.0 for r in range(n_sys.shape[0])])
    growth = slope * span
    # a queue beyond its stability limit grows by a fixed fraction of what arrives, however many
    # requests it already holds (so not "half its mean": at 5x the limit that let 1,600 -> 3,000 pass)
    grows = growth > np.maximum(MIN_GROWTH, MAX_ACCUMULATION * arrived)
    stable_r = (dropped == 0) & ~grows
    reasons = []
    if (dropped > 0).any():
        reasons.append(f"{float(dropped.mean()):.0f} requests dropped (queue full)")
    if grows.any():
        reasons.append(f"requests in system grew by {float(growth.mean()):.1f} over the window")

    tok_in, tok_out = d("tokens_in") + d("tool_tokens"), d("tokens_out")
    energy = d("energy_j")
    j_per_tok = energy / np.maximum(tok_out, 1e-300)
    bits = llm.bits_per_token
    landauer = j_per_tok / (landauer_j(llm.temperature_k) * bits)
    pr = llm.prices
    usd_billed = tok_in / 1e6 * pr["usd_per_1m_input"] + tok_out / 1e6 * pr["usd_per_1m_output"]
    usd_energy = energy / 3.6e6 * pr["usd_per_kwh"]
    gpu_s = d("prefill_s") + d("decode_s") + d("idle_s")

    kv_free = np.asarray(st.cells.kv_free)
    ch = st.chains
    occupied = np.where(np.asarray(ch.active), np.asarray(ch.base) + np.asarray(ch.out), 0.0).sum(-1)
    cap = np.asarray(st.cells.kv_capacity)
    kv_err = float(np.max(np.abs(kv_free + occupied - cap) / cap))

    mean = lambda x: float(np.nanmean(x))  # noqa: E731
    out = {
        "status": "ok",
        "model": llm.model.name,
        "gpu": llm.gpu.name,
        "gpus_per_model": llm.n_gpus,
        "cells_total": llm.n_cells,
        "currency_unit": "tokens",
        "kv_capacity_tokens": float(llm.kv_capacity),
        "window_s": span,
        "arrival_rate_req_per_s": mean(lam),
        "throughput_req_per_s": mean(completed / span),
        "mean_in_system": mean(mean_n),
        "mean_time_in_system_s": mean(w),
        "littles_law_lambda_w": mean(lam * w),
        "littles_law_rel_error": float(np.nanmax(little)),
        "stable": bool(stable_r.all()),
        "stability_reason": "; ".join(reasons) if reasons else "no drops, no growth of the queue",
        "dropped": mean(dropped),
        "in_system_growth": mean(growth),
        "mean_queue_len": mean(rec["queue_len"][:, i0:].sum(-1)),
        "mean_batch": mean(rec["batch"][:, i0:].sum(-1)),
        "tokens_in": mean(tok_in),
        "tokens_out": mean(tok_out),
        "tokens_per_s": mean(tok_out / span),
        "joules_per_token": mean(j_per_tok),
        "joules_per_token_processed": mean(energy / np.maximum(tok_in + tok_out, 1e-300)),
        "energy_j": mean(energy),
        "mean_power_w": mean(energy / span),
        "gpu_busy_fraction": mean((d("prefill_s") + d("decode_s")) / np.maximum(gpu_s, 1e-300)),
        "usd_billed": mean(usd_billed),
        "usd_energy": mean(usd_energy),
        "billed_over_energy_cost": mean(usd_billed / np.maximum(usd_energy, 1e-300)),
        "bits_per_token": bits,
        "landauer_ratio": mean(landauer),
        "tool_calls": mean(d("tool_calls")),
        "tool_tokens": mean(d("tool_tokens")),
        "memory_compressions": mean(d("compressions")),
        "tokens_removed_by_memory": mean(d("tokens_removed")),
        "routed": mean(d("routed_out")),
        "kv_conservation_error": kv_err,
        "conservation_error": kv_err,
        "simulated_time_s": float(result.steps_done * float(np.asarray(llm.params.dt).reshape(-1)[0])),
        "replicates": int(rec["in_system"].shape[0]),
        "wall_s": float(result.wall_s),
        "compile_s": float(result.compile_s),
    }
    lim = stability_limit(llm)
    out.update(lim)
    out["utilization_estimate"] = out["arrival_rate_req_per_s"] / (lim["stability_limit_req_per_s"] * llm.n_cells)
    return out
