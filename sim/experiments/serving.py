"""``experiment=serving``: a steady serving run of the LLM preset (``substrate=llm``).

Requests arrive per model instance as a Poisson process, wait in the queue while the KV cache is
full, are prefilled and decoded on the roofline, may call tools, pass through memory modules,
loop (agent turns) or hop to the next model. The summary checks Little's law over the steady
window, says whether the run was ``stable`` (beyond the stability limit the queue grows without
bound, then overflows) and reports the token, energy, dollar and Landauer ledgers
(``sim.llm.results``).
"""

from __future__ import annotations

from pathlib import Path

from sim.api import RunOutput
from sim.config.validate import validate
from sim.errors import ConfigError
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
def run_serving(cfg: dict) -> RunOutput:
    validate(cfg)
    warm = warmup_fraction(cfg)
    steps, every = int(cfg["steps"]), int(cfg["record_every"])
    if steps // every < 3:
        raise ConfigError("steps", steps, f"at least 3 records (steps / record_every = {steps // every})")
    llm = build_llm(cfg)
    result = engine.run(
        llm.state, llm.params, seed=llm.seed, steps=steps, record_every=every,
        replicates=int(cfg["replicates"]), chunk_records=int(cfg.get("chunk_records", 100)),
    )
    ds = to_dataset(llm, result, cfg) if result.steps_done else None
    if result.steps_done // every >= 3:
        summary = summarize(llm, result, warm)
    else:
        summary = {"status": "failed"}
    if result.error is not None:
        summary.update(status="failed", reason=str(result.error))
    return RunOutput(ds, summary, llm, result, figures=(lambda out: serving_figures(ds, out)) if ds is not None else None)


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
