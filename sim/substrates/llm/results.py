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

from sim import topology
from sim.constants import landauer_j
from sim.io import CORE_OUTCOMES, COUNT, DIMENSIONLESS, FLAG, TEXT
from sim.network_figure import edge_attributes
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
        # per model instance (the summary's value): serving.png draws it against the request rates
        stability_limit_req_per_s=float(stability_limit(llm)["stability_limit_req_per_s"]),
        **edge_attributes(llm.graph),  # the junctions, for figures/network.png (sim.network_figure)
    )
    return topology.label_cells(ds, getattr(llm, "graph", None))  # a graph file's node labels name the cells


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


# The unit of every key an LLM serving summary can hold (sim.io's naming rule): the currency in
# tokens, requests counted, energy in J, money in USD.
OUTCOME_UNITS = {
    **CORE_OUTCOMES,
    "gpus_per_model": COUNT, "cells_total": COUNT, "kv_capacity_tokens": "tokens", "window_s": "s",
    "arrival_rate_req_per_s": "requests/s", "throughput_req_per_s": "requests/s", "mean_in_system": COUNT,
    "mean_time_in_system_s": "s", "littles_law_lambda_w": COUNT, "littles_law_rel_error": DIMENSIONLESS,
    "stable": FLAG, "stability_reason": TEXT, "dropped": COUNT, "in_system_growth": COUNT, "mean_queue_len": COUNT,
    "mean_batch": COUNT, "input_tokens": "tokens", "output_tokens": "tokens", "output_tokens_per_s": "tokens/s",
    "energy_per_output_token_j": "J/output token", "energy_per_token_processed_j": "J/token processed",
    "energy_j": "J", "mean_power_w": "W", "gpu_busy_fraction": DIMENSIONLESS, "billed_usd": "USD",
    "energy_cost_usd": "USD", "billed_over_energy_cost": DIMENSIONLESS, "bits_per_token": "bits/token",
    "landauer_ratio": DIMENSIONLESS, "tool_calls": COUNT, "tool_tokens": "tokens", "memory_compressions": COUNT,
    "memory_removed_tokens": "tokens", "routed": COUNT, "kv_conservation_error": DIMENSIONLESS,
    "conservation_error": DIMENSIONLESS, "stability_limit_req_per_s": "requests/s", "kv_limited_batch": COUNT,
    "prefill_s_per_request": "s/request", "decode_s_per_request": "s/request", "utilization_estimate": DIMENSIONLESS,
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
        "input_tokens": mean(tok_in),
        "output_tokens": mean(tok_out),
        "output_tokens_per_s": mean(tok_out / span),
        "energy_per_output_token_j": mean(j_per_tok),
        "energy_per_token_processed_j": mean(energy / np.maximum(tok_in + tok_out, 1e-300)),
        "energy_j": mean(energy),
        "mean_power_w": mean(energy / span),
        "gpu_busy_fraction": mean((d("prefill_s") + d("decode_s")) / np.maximum(gpu_s, 1e-300)),
        "billed_usd": mean(usd_billed),
        "energy_cost_usd": mean(usd_energy),
        "billed_over_energy_cost": mean(usd_billed / np.maximum(usd_energy, 1e-300)),
        "bits_per_token": bits,
        "landauer_ratio": mean(landauer),
        "tool_calls": mean(d("tool_calls")),
        "tool_tokens": mean(d("tool_tokens")),
        "memory_compressions": mean(d("compressions")),
        "memory_removed_tokens": mean(d("tokens_removed")),
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


# ------------------------------------------------------------------------------ figures
#
# Builders return the matplotlib Figure (tests read its axes); :func:`figures` and
# :func:`roofline_figures` save them. Lines: mean over replicates, bands: min-max over replicates.


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _band(ax, t, x, *, color, label, spread=True):
    """``x`` (replicate, time): mean line and min-max band over replicates; returns the top drawn."""
    mean, lo, hi = x.mean("replicate").values, x.min("replicate").values, x.max("replicate").values
    ax.plot(t, mean, color=color, label=label, lw=1.5)
    n = x.sizes.get("replicate", 1)
    if n > 1:
        ax.fill_between(t, lo, hi, color=color, alpha=0.25, lw=0,
                        label=f"min-max over {n} replicates" if spread else None)
    return float(np.nanmax(hi)) if hi.size else 0.0


def _rate(x, t):
    """Per-second rate of a cumulative ``x`` (replicate, time) between records (the first record
    from time 0, where every ledger starts at 0)."""
    dt = np.diff(np.concatenate([[0.0], t]))
    dx = x.diff("time", label="upper")
    first = x.isel(time=[0])
    return xr.concat([first, dx], dim="time") / xr.DataArray(dt, dims="time", coords={"time": x["time"]})


KV_AXIS_MIN_PCT = 5.0  # the KV panel shows at least 0-5% (an idle cache is not zoomed into noise)


def serving_figure(ds):
    """Requests in the system (queued stacked on decoding: no two lines drawn over each other), KV
    cache occupancy in % of capacity on an axis fitted to it (capacity drawn when in view, named
    when not), request rates against the stability limit, generated tokens per second."""
    plt = _pyplot()
    t = ds["time"].values
    n_rep, n_cells = ds.sizes["replicate"], ds.sizes["cell"]
    tot = ds.sum("cell")
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.2))

    ax = axes[0, 0]
    batch, queued = tot["batch"].mean("replicate").values, tot["queue_len"].mean("replicate").values
    ax.stackplot(t, batch, queued, labels=["in a chain (decoding or on a tool)", "queued"],
                 colors=["C0", "C1"], alpha=0.8)
    ax.plot(t, batch + queued, color="k", lw=1, label="in system (sum)")
    ax.set(xlabel="time (s)", ylabel="in the system, all instances (requests)",
           title=f"requests in the system (mean of {n_rep} replicate{'s' if n_rep > 1 else ''})")
    peak = float(np.max(batch + queued)) if batch.size else 0.0
    ax.set_ylim(0, 1.4 * peak if peak > 0 else 1.0)  # (room for the legend above the area)
    ax.legend(fontsize=8, loc="upper left", ncol=2)

    ax = axes[0, 1]
    pct = 100.0 * ds["kv_occupied"] / ds["kv_capacity"]  # (replicate, time, cell)
    shown = range(min(n_cells, 8))
    peak = 0.0
    for c in shown:
        peak = max(peak, _band(ax, t, pct.isel(cell=c), color=f"C{c}",
                               label=f"instance {c}" if n_cells > 1 else "occupied", spread=c == 0))
    top = min(105.0, max(KV_AXIS_MIN_PCT, 1.25 * peak))
    if top >= 100.0:
        ax.axhline(100.0, color="C3", ls="--", lw=1, label="capacity: requests queue beyond it")
    else:
        cap = float(ds["kv_capacity"].isel(replicate=0, time=0, cell=0))
        ax.text(0.98, 0.95, f"capacity 100% = {cap:,.0f} tokens (off scale)", transform=ax.transAxes,
                ha="right", va="top", fontsize=8, color="C3")
    ax.set_ylim(0, top)
    ax.set(xlabel="time (s)", ylabel="KV cache occupied (% of capacity)",
           title="KV cache" + (f" (first {len(shown)} of {n_cells} instances)" if n_cells > len(shown) else ""))
    ax.legend(fontsize=8, loc="upper left")

    ax = axes[1, 0]
    top = _band(ax, t, _rate(tot["arrived"], t), color="C0", label="arrivals")
    top = max(top, _band(ax, t, _rate(tot["completed"], t), color="C2", label="completions", spread=False))
    limit = ds.attrs.get("stability_limit_req_per_s")
    if limit is not None and np.isfinite(float(limit)):
        total_limit = float(limit) * n_cells
        ax.axhline(total_limit, color="C3", ls="--", lw=1.2,
                   label=f"stability limit {total_limit:.3g} req/s (fluid estimate)")
        top = max(top, total_limit)
    ax.set_ylim(0, 1.5 * top if top > 0 else 1.0)  # (room for the legend above the limit line)
    ax.set(xlabel="time (s)", ylabel="rate, all instances (requests/s)", title="request rates per record interval")
    ax.legend(fontsize=8, loc="upper left", ncol=2)

    ax = axes[1, 1]
    top = _band(ax, t, _rate(tot["tokens_out"], t), color="C4", label="generated")
    ax.set_ylim(0, 1.15 * top if top > 0 else 1.0)
    ax.set(xlabel="time (s)", ylabel="generated, all instances (tokens/s)", title="output tokens per second")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def figures(ds, out_dir):
    """``figures/serving.png`` of an LLM serving run and ``network.png`` of a cluster of instances."""
    from pathlib import Path

    from sim.network_figure import network_figures
    from sim.plot import _save

    (Path(out_dir) / "figures").mkdir(parents=True, exist_ok=True)
    return [_save(serving_figure(ds), Path(out_dir) / "figures" / "serving.png")] + network_figures(ds, out_dir)


def ridge_batch(llm, context: int, power_state: str = "decode", max_batch: float = 1e7) -> float | None:
    """The batch at which decoding at ``context`` turns from memory-bound to compute-bound (its
    arithmetic intensity reaches the GPU's ridge point, achieved FLOP/s / achieved bytes/s), or None
    when it never does: the KV cache read per token grows with the batch as fast as the FLOPs."""
    def intensity(b):
        p = specs.roofline_point(llm.model, llm.gpu, b, context, llm.n_gpus, power_state)
        return p["arithmetic_intensity_flop_per_byte"] - p["ridge_flop_per_byte"]

    if intensity(1.0) >= 0:
        return 1.0
    if intensity(max_batch) < 0:
        return None
    lo, hi = 1.0, max_batch
    for _ in range(60):  # bisection in log space: ~1e-15 relative
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if intensity(mid) < 0 else (lo, mid)
    return hi


def roofline_figure(llm, batch: int, context: int, power_state: str = "decode"):
    """Tokens/s and J/token against batch at this context, the ridge batch marked on both (grey,
    dashed, beyond the KV-cache limit when it lies there), and the roofline itself: attainable
    FLOP/s against arithmetic intensity with the ridge point and this run's point."""
    plt = _pyplot()
    cap_batch = max(1, int(llm.kv_capacity // context))
    ridge = ridge_batch(llm, context, power_state)
    reach = cap_batch if ridge is None else max(cap_batch, min(ridge * 2.0, 100.0 * cap_batch))
    batches = np.unique(np.clip(np.round(np.logspace(0, math.log10(max(reach, 1)), 60)), 1, None).astype(int))
    pts = [specs.roofline_point(llm.model, llm.gpu, int(b), context, llm.n_gpus, power_state) for b in batches]
    here = specs.roofline_point(llm.model, llm.gpu, batch, context, llm.n_gpus, power_state)
    fits = batches <= cap_batch
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    for a, key, ylabel, title in ((ax[0], "tokens_per_s", "throughput (tokens/s)", f"throughput, context {context}"),
                                  (ax[1], "joules_per_token", f"energy per token, {power_state} power (J/token)",
                                   "energy per token")):
        y = np.array([p[key] for p in pts])
        a.loglog(batches[fits], y[fits], color="C0", label="fits the KV cache")
        if (~fits).any():
            a.loglog(batches[~fits], y[~fits], color="0.6", ls="--", label="beyond the KV cache")
        a.plot([batch], [here[key]], "o", color="C3", label=f"this run (batch {batch})")
        a.axvline(cap_batch, color="0.3", lw=0.8, ls=":", label=f"KV limit (batch {cap_batch})")
        if ridge is not None and ridge <= batches[-1]:
            a.axvline(ridge, color="C2", lw=1.2, ls="--", label=f"ridge (batch {ridge:,.0f})")
        a.set(xlabel="batch (streams)", ylabel=ylabel, title=title)
        a.legend(fontsize=7)
    a = ax[2]
    f_peak = llm.gpu.achieved_flops * llm.n_gpus
    bw = llm.gpu.achieved_bandwidth * llm.n_gpus
    ridge_i = f_peak / bw
    ai = np.array([p["arithmetic_intensity_flop_per_byte"] for p in pts])
    xs = np.logspace(math.log10(min(ai.min(), ridge_i) / 4), math.log10(max(ai.max(), ridge_i) * 4), 200)
    a.loglog(xs, np.minimum(f_peak, xs * bw), color="k", lw=1.5, label="roofline (achieved FLOP/s, bytes/s)")
    attained = lambda p: p["flops_utilization"] * llm.gpu.peak_flops * llm.n_gpus  # noqa: E731
    a.loglog(ai[fits], [attained(p) for p, ok in zip(pts, fits) if ok], ".", color="C0", ms=4,
             label=f"batches 1-{cap_batch} at context {context}")
    a.plot([ridge_i], [f_peak], "D", color="C2", ms=8, label=f"ridge point {ridge_i:.0f} FLOP/byte")
    a.plot([here["arithmetic_intensity_flop_per_byte"]], [attained(here)], "o", color="C3", label="this run")
    a.set(xlabel="arithmetic intensity (FLOP/byte)", ylabel="attained compute (FLOP/s)", title=f"roofline: {llm.model.name} on "
          f"{llm.n_gpus} x {llm.gpu.name}")
    a.legend(fontsize=7, loc="lower right")
    if ridge is None:
        ax[0].text(0.02, 0.02, "memory-bound at every batch at this context", transform=ax[0].transAxes, fontsize=8)
    fig.tight_layout()
    return fig


def roofline_figures(llm, batch: int, context: int, power_state: str, out_dir):
    """``figures/roofline.png`` (:func:`roofline_figure`)."""
    from pathlib import Path

    from sim.plot import _save

    (Path(out_dir) / "figures").mkdir(parents=True, exist_ok=True)
    return [_save(roofline_figure(llm, batch, context, power_state), Path(out_dir) / "figures" / "roofline.png")]
