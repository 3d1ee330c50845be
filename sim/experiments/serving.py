"""``experiment=serving``: a steady serving run of the LLM preset (``substrate=llm``).

Requests arrive per model instance as a Poisson process, wait in the queue while the KV cache is
full, are prefilled and decoded on the roofline, may call tools, pass through memory modules,
loop (agent turns) or hop to the next model. The summary checks Little's law over the steady
window, says whether the run was ``stable`` (beyond the stability limit the queue grows without
bound, then overflows) and reports the token, energy, dollar and Landauer ledgers
(``sim.llm.results``).

Reliability (as the tissue run): the config is checked first (``sim.config.validate.validate_llm``:
one line per problem); ``checkpoint_every=N`` checkpoints every N chunks into the run folder and
``python -m sim resume=RUN_DIR`` continues a killed run to bit-identical results
(``sim.checkpoint.resumable_run``); a NaN/Inf or negative KV/token/energy quantity stops the run
naming step, model instance, quantity and process (``sim.llm.engine``), keeping the good chunks.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from sim.api import RunOutput
from sim.checkpoint import resumable_run
from sim.config.validate import validate_llm
from sim.errors import ConfigError, NumericalError
from sim.experiments import register
from sim.llm import engine
from sim.llm.build import build_llm
from sim.llm.results import summarize, to_dataset


def warmup_fraction(cfg: dict) -> float:
    w = (cfg.get("serving") or {}).get("warmup_fraction", 0.25)
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w < 1:
        raise ConfigError("serving.warmup_fraction", w, "a fraction in [0, 1)")
    return float(w)


@register("serving")
def run_serving(cfg: dict, run_dir=None) -> RunOutput:
    """Validate, build and run; with ``run_dir`` the run checkpoints there (``checkpoint_every``)
    and ``cfg['resume']`` continues from a checkpoint (``sim.app.resume_run``)."""
    validate_llm(cfg)
    warm = warmup_fraction(cfg)
    steps, every = int(cfg["steps"]), int(cfg["record_every"])
    if steps // every < 3:
        raise ConfigError("steps", steps, f"at least 3 records (steps / record_every = {steps // every})")
    llm = build_llm(cfg)
    reps, first = int(cfg["replicates"]), int(cfg.get("first_replicate", 0) or 0)

    def run_fn(state, **kw):
        return engine.run(state, llm.params, seed=llm.seed, record_every=every, replicates=reps,
                          first_replicate=first, **kw)

    result = resumable_run(run_fn, llm.state, cfg, run_dir, fields=engine.RECORD_FIELDS,
                           dt=float(np.asarray(llm.params.dt)))
    result.state = jax.device_get(result.state)
    ds = to_dataset(llm, result, cfg) if result.steps_done else None
    if result.steps_done // every >= 3:
        summary = summarize(llm, result, warm)
    else:
        summary = {"status": "failed"}
    summary["first_replicate"] = first
    if result.error is not None:
        err = result.error
        summary.update(status="failed", reason=str(err))
        if isinstance(err, NumericalError):
            summary.update(
                failure_step=err.step, failure_cell=err.cell, failure_quantity=err.species,
                failure_species=err.species,  # (the tissue run's name for it)
                failure_process=err.process, failure_replicate=err.replicate,
            )
    return RunOutput(ds, summary, llm, result, figures=(lambda out: serving_figures(ds, out)) if ds is not None else None)


run_serving.checkpoints = True  # sim.api.run passes run_dir and lets checkpoint_every / resume through


def serving_figures(ds, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.plot import _save

    t = ds["time"].values
    tot = ds.sum("cell").mean("replicate")
    fig, ax = plt.subplots(1, 3, figsize=(14, 3.6))
    ax[0].plot(t, tot["in_system"], label="in system")
    ax[0].plot(t, tot["queue_len"], label="queued")
    ax[0].plot(t, tot["batch"], label="in a chain")
    ax[0].set(xlabel="time (s)", ylabel="requests", title="requests (sum over models)")
    ax[0].legend(fontsize=8)
    cap = float(ds.attrs.get("kv_capacity_tokens", 1.0))
    ax[1].plot(t, ds["kv_occupied"].mean("replicate") / cap, lw=0.8)
    ax[1].set(xlabel="time (s)", ylabel="fraction of KV capacity", title="KV cache occupied (per model)", ylim=(0, 1.02))
    rate = tot["tokens_out"].diff("time") / float(t[1] - t[0]) if len(t) > 1 else tot["tokens_out"]
    ax[2].plot(t[1:], rate)
    ax[2].set(xlabel="time (s)", ylabel="tokens/s", title="generated tokens per second")
    fig.tight_layout()
    return [_save(fig, Path(out_dir) / "figures" / "serving.png")]
