"""``experiment=robustness``: specialised versus generalist collectives through a failure.

Two collectives of the same cells on the same graph (issue 12 item 5): **specialised** (the imposed
pattern of ``robustness.pattern_period``: every K-th cell a producer, theta 1, the rest workers,
theta 0) and **generalists** (every cell at ``robustness.generalist_theta``: the best uniform theta,
0.6 for generic_tissue at alpha 3, not 1/2: see experiment=multicellular's baseline), both with the
trade-off curvature ``robustness.alpha``.
At ``robustness.fail_at`` (a fraction of the run) a share ``robustness.kill_fraction`` of the cells
dies (their junctions close, they make and spend nothing):

``none``      no failure (the reference of each collective);
``random``    cells drawn at random (the same cells for both collectives, per replicate);
``targeted``  the cells with the highest theta first (producers; ties in the random order): for
              generalists, whose thetas are equal, the same cells as ``random``.

Until the failure theta does not move (the collectives are the imposed patterns); after it the
survivors adapt by ``differentiation.rule`` (gradient by default; with
``fixed`` they cannot re-differentiate): that is the collective's recovery. Every (collective,
failure, replicate) is one row of ONE batched engine call, run in two legs (before and after the
failure; the second leg continues the step counter, so its random draws are those of an unbroken run).

Outcomes per row: the tissue's specialised work rate over time (per record interval), relative to
its own rate just before the failure; ``loss`` = the share of the work the same collective and
replicate delivers without a failure that is missing after it; ``recovered`` = the same ratio over
the last fifth of the run. Writes ``results.nc`` (collective x failure x replicate x time), ``robustness.parquet``,
``summary.json`` and ``figures/robustness.png``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import jax
import numpy as np

from sim.api import RunOutput
from sim.core import engine
from sim.errors import ConfigError
from sim.experiments import register
from sim.io import CORE_OUTCOMES, COUNT, DIMENSIONLESS, TEXT
from sim.experiments.multicellular import batch_rows, differentiating, set_path
from sim.rng import replicate_keys

COLLECTIVES = ("specialised", "generalist")
FAILURES = ("none", "random", "targeted")


def read_options(cfg: dict) -> dict:
    opts = dict(cfg.get("robustness") or {})
    out = {}
    rules = {"alpha": (lambda v: v > 0, "a number > 0"),
             "kill_fraction": (lambda v: 0 <= v <= 1, "a fraction in [0, 1]"),
             "fail_at": (lambda v: 0 < v < 1, "a fraction of the run in (0, 1)"),
             "generalist_theta": (lambda v: 0 < v < 1, "a theta in (0, 1): every cell of the generalist collective")}
    for key, (ok, allowed) in rules.items():
        v = opts.get(key, 0.5) if key == "generalist_theta" else opts.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or not ok(v):
            raise ConfigError(f"robustness.{key}", v, allowed)
        out[key] = float(v)
    for key, lo in (("pattern_period", 2), ("replicates", 1)):
        v = opts.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ConfigError(f"robustness.{key}", v, f"an integer >= {lo}")
        out[key] = v
    return out


def doomed(theta: np.ndarray, kill: int, failure: str, rng: np.random.Generator, order=None) -> np.ndarray:
    """Mask of the ``kill`` cells that die: none, random, or the highest theta first (ties: random order)."""
    n = theta.shape[0]
    mask = np.zeros(n, bool)
    if failure == "none" or kill == 0:
        return mask
    order = rng.permutation(n) if order is None else order
    if failure == "targeted":
        order = order[np.argsort(-theta[order], kind="stable")]
    mask[order[:kill]] = True
    return mask


def run_collectives(sub, cfg: dict, opts: dict):
    """(built, rows, times, work rate per row and record interval, RunResult) of the batched two-leg run."""
    built = sub.build(cfg)
    n = built.n_cells
    R = opts["replicates"]
    rows = [(c, f, r) for c in COLLECTIVES for f in FAILURES for r in range(R)]
    pattern = (np.arange(n) % opts["pattern_period"] == 0).astype(float)
    theta = np.array([pattern if c == "specialised" else np.full(n, opts["generalist_theta"]) for c, _, _ in rows])
    # the collectives are the imposed patterns until the failure; the survivors re-differentiate after it
    rate = float(np.asarray(built.params.diff.rate))
    params = batch_rows(built.params, len(rows), {"diff.alpha": np.full(len(rows), opts["alpha"]),
                                                   "diff.rate": np.zeros(len(rows))})
    params2 = set_path(params, "diff.rate", np.full(len(rows), rate))
    state = batch_rows(built.state, len(rows), {})
    state = set_path(state, "diff", dataclasses.replace(state.diff, theta=theta, ref_theta=theta.copy()))
    keys = replicate_keys(built.seed, R)[np.array([r for _, _, r in rows])]
    steps, every = int(cfg["steps"]), int(cfg["record_every"])
    first = max(every, int(round(opts["fail_at"] * steps / every)) * every)
    # one chunk length for both legs: one compiled program
    chunk = math.gcd(first // every, (steps - first) // every, int(cfg.get("chunk_records", 100)))
    leg1 = engine.run(sub, state, params, seed=built.seed, steps=first, record_every=every, replicates=len(rows),
                      batched_params=True, keys=keys, chunk_records=chunk)
    if leg1.error is not None:
        return built, rows, None, None, leg1, 0
    kill = int(round(opts["kill_fraction"] * n))
    orders = [np.random.default_rng([int(built.seed), 0xFA11, r]).permutation(n) for r in range(R)]
    end = jax.device_get(leg1.state)
    alive = np.asarray(end.cells.alive).copy()
    for i, (c, f, r) in enumerate(rows):
        alive[i] &= ~doomed(np.asarray(end.diff.theta[i]), kill, f, None, order=orders[r])
    state2 = set_path(end, "cells", dataclasses.replace(end.cells, alive=alive))
    leg2 = engine.run(sub, state2, params2, seed=built.seed, steps=steps - first, record_every=every,
                      replicates=len(rows), batched_params=True, keys=keys, start_step=first, chunk_records=chunk)
    if leg2.error is not None:
        return built, rows, None, None, leg2, 0
    out = np.concatenate([leg1.records["output"], leg2.records["output"]], axis=1).sum(-1)  # (rows, T)
    times = np.concatenate([leg1.times, first * float(cfg["dt"]) + np.asarray(leg2.times)])
    t = np.concatenate([[0.0], times])
    work = np.concatenate([np.zeros((len(rows), 1)), out], axis=1)
    rate = np.diff(work, axis=1) / np.diff(t)  # (rows, T): work per unit time over each record interval
    res = dataclasses.replace(leg2, wall_s=leg1.wall_s + leg2.wall_s, compile_s=leg1.compile_s + leg2.compile_s)
    return built, rows, times, rate, res, first


def outcomes(rows, times, rate, first_time: float, opts: dict) -> dict:
    """Per row, against the same collective and replicate without a failure (the counterfactual, which
    also re-differentiates after ``fail_at``): ``loss`` = 1 - work after the failure / its work over
    the same window; ``recovered`` = the same ratio over the last fifth of the run; ``relative_rate``
    = the rate over time relative to the row's own rate before the failure."""
    before = (times <= first_time) & (times > first_time / 2)
    after = times > first_time
    tail = times >= times[-1] - (times[-1] - first_time) / 5
    pre = rate[:, before].mean(-1)
    twin = np.array([rows.index((c, "none", r)) for c, _, r in rows])
    return {"pre_rate": pre, "relative_rate": rate / pre[:, None],
            "loss": 1.0 - rate[:, after].sum(-1) / rate[twin][:, after].sum(-1),
            "recovered": rate[:, tail].sum(-1) / rate[twin][:, tail].sum(-1)}


def figures(ds, out_dir) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.plot import _save

    (Path(out_dir) / "figures").mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    t = ds["time"].values
    for ax, coll in zip(axes, ds["collective"].values):
        for fail, color in zip(ds["failure"].values, ("0.3", "tab:blue", "tab:red")):
            x = ds["work_rate"].sel(collective=coll, failure=fail) / ds["pre_rate"].sel(collective=coll, failure=fail)
            m = x.mean("replicate")
            ax.plot(t, m, color=color, label=f"{fail} (loss {float(ds['loss'].sel(collective=coll, failure=fail).mean()):.2f})")
            ax.fill_between(t, x.min("replicate"), x.max("replicate"), color=color, alpha=0.2, lw=0)
        ax.axvline(ds.attrs["fail_time"], color="k", ls=":", lw=1)
        ax.set(title=f"{coll} collective", xlabel=f"time ({ds.attrs.get('time_unit', '1')})",
               ylabel="work rate / rate before the failure (1)")
        ax.legend(fontsize=8, title=f"{ds.attrs['kill_fraction']:.0%} of cells die", title_fontsize=8)
    fig.suptitle(f"robustness ({ds.attrs['substrate']}, alpha {ds.attrs['alpha']}, "
                 f"{ds.attrs['rule']} re-differentiation; band: replicates)")
    fig.tight_layout()
    return [_save(fig, Path(out_dir) / "figures" / "robustness.png")]


# The unit of every key the robustness summary can hold (sim.io's naming rule): losses and
# recoveries are ratios to the no-failure twin; the work rate before the failure is per s in mM of
# a cell's volume (biology) or per unit of the dimensionless time (generic).
OUTCOME_UNITS = {
    **CORE_OUTCOMES, "rule": TEXT, "engine_calls": COUNT, "rows_per_call": COUNT, "*_pre_rate_mm_per_s": "mM/s",
    "*_pre_rate": DIMENSIONLESS, "*_loss": DIMENSIONLESS, "*_recovered": DIMENSIONLESS,
}


@register("robustness")
def run_robustness(cfg: dict) -> RunOutput:
    import xarray as xr

    cfg, base, dopts, sub = differentiating(cfg)
    opts = read_options(cfg)
    t0 = time.perf_counter()
    built, rows, times, rate, res, first = run_collectives(sub, cfg, opts)
    if rate is None:
        summary = {"status": "failed", "reason": str(res.error), "substrate": base.name}
        return RunOutput(None, summary, built, res, figures=lambda d: [])
    first_time = first * float(cfg["dt"])
    o = outcomes(rows, times, rate, first_time, opts)
    R = opts["replicates"]
    shape = (len(COLLECTIVES), len(FAILURES), R)
    coords = {"collective": list(COLLECTIVES), "failure": list(FAILURES), "replicate": np.arange(R), "time": times}
    unit = "s" if base.name == "bio" else "1"
    ds = xr.Dataset({
        "work_rate": (("collective", "failure", "replicate", "time"), rate.reshape(shape + (len(times),)),
                      {"long_name": "tissue specialised work per unit time over each record interval"}),
        "pre_rate": (("collective", "failure", "replicate"), o["pre_rate"].reshape(shape)),
        "loss": (("collective", "failure", "replicate"), o["loss"].reshape(shape),
                 {"long_name": "share of the no-failure twin's work missing after the failure"}),
        "recovered": (("collective", "failure", "replicate"), o["recovered"].reshape(shape),
                      {"long_name": "rate over the last fifth of the run relative to the no-failure twin"}),
    }, coords=coords, attrs={"substrate": base.name, "alpha": opts["alpha"], "kill_fraction": opts["kill_fraction"],
                             "generalist_theta": opts["generalist_theta"],
                             "fail_time": first_time, "rule": dopts["rule"], "time_unit": unit,
                             "pattern_period": opts["pattern_period"], "n_cells": built.n_cells})
    summary = {"status": "ok", "substrate": base.name, "rule": dopts["rule"], "engine_calls": 2,
               "rows_per_call": len(rows), "wall_s": res.wall_s, "compile_s": res.compile_s,
               "total_s": time.perf_counter() - t0}
    rate_key = "pre_rate_mm_per_s" if base.name == "bio" else "pre_rate"  # (tissue total: mM of a cell per s)
    for c in COLLECTIVES:
        summary[f"{c}_{rate_key}"] = float(ds["pre_rate"].sel(collective=c, failure="none").mean())
        for f in FAILURES[1:]:
            summary[f"{c}_{f}_loss"] = float(ds["loss"].sel(collective=c, failure=f).mean())
            summary[f"{c}_{f}_recovered"] = float(ds["recovered"].sel(collective=c, failure=f).mean())

    def files(out_dir):
        from sim.io import write_parquet

        write_parquet(Path(out_dir) / "robustness.parquet",
                      ds[["pre_rate", "loss", "recovered"]].to_dataframe().reset_index())

    lines = [f"robustness ({base.name}, alpha {opts['alpha']}, {opts['kill_fraction']:.0%} of {built.n_cells} cells die "
             f"at t = {first_time:g}; {dopts['rule']} re-differentiation):"]
    for c in COLLECTIVES:
        lines.append(f"  {c:12s} rate before {summary[f'{c}_{rate_key}']:.4g}; " + "; ".join(
            f"{f}: loss {summary[f'{c}_{f}_loss']:.2f}, recovered {summary[f'{c}_{f}_recovered']:.2f}"
            for f in FAILURES[1:]))
    return RunOutput(ds, summary, built, res, figures=lambda d: figures(ds, d), files=files, report="\n".join(lines))
