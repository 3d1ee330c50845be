"""Task kinds on the LLM engine: the division of labour of :mod:`sim.substrates.llm.society` with
queues, continuous batching and the KV cache of the engine (issue 12, the multicellular stage).

The engine side is ``substrate.kinds`` (``sim.substrates.llm.kernels`` module docstring: kinds drawn
per request, instance ``i`` owns kind ``i mod K``, a router that misses the kind with probability
``p_miss``, a non-owner serving a foreign task with probability ``theta_i`` or reading it and handing
it on to an owner, which prefills it again with ``handoff_tokens``; each instance caches its context
prefix ``C(theta_i)`` once, and every sequence attends to it). This module turns runs into outcomes
per solved task and compares a cluster of specialists (``theta = 0``) with generalists
(``theta = 1``) on the same cluster, next to the static expected-cost accounting of
:func:`sim.substrates.llm.society.reference_society` at the same numbers.

Outcomes (:func:`window_outcomes`) are measured over a steady window (the ledgers' change between
the end of a warm-up and the end of the run, summed over instances and replicates):

- ``tokens_per_task``: prompt tokens prefilled (first prompts, hand-offs, tool results) + tokens
  generated, per completed task (``prefill_per_task``, ``output_per_task`` separately); the cached
  prefix is not prefilled per task (it is cached: society's ``prefill_tokens`` with
  ``context_cache_miss = 0``);
- ``joules_per_task``: all GPU energy (idle included: a rented GPU draws idle power when it waits) per
  completed task, and ``busy_joules_per_task`` (prefill and decode states only, society's joules);
- ``usd_per_task``: rent of the live GPUs over the window (``usd_per_gpu_hour``) per completed task;
- ``latency_s``: mean time in system of the tasks completed in the window (arrival to the last
  token: queues, prefill, decode, hand-offs); ``littles_latency_s`` = mean number in system /
  throughput (Little's law, the same number in a steady state);
- ``handoff_tokens_per_task`` and ``handoff_prob`` (hand-offs per completed task), ``drop_fraction``,
  ``throughput_per_s`` and the ``specialization_index`` of theta (:func:`society.specialization_index`).

Units: tokens, J, USD, s.
"""

from __future__ import annotations

import copy
import dataclasses

import jax
import numpy as np

from sim.substrates.llm import society as so

OUTCOMES = ("tokens_per_task", "prefill_per_task", "output_per_task", "joules_per_task", "busy_joules_per_task",
            "usd_per_task", "latency_s", "littles_latency_s", "handoff_tokens_per_task", "handoff_prob",
            "foreign_served_per_task", "drop_fraction", "throughput_per_s", "completed", "specialization_index")
USD_PER_GPU_HOUR = 2.99  # society.yaml's on-demand H100 rent (a recalled list price; chosen)


def _ledger_sums(state) -> dict:
    """Every ledger line summed over replicates and instances (float64)."""
    led = jax.device_get(state.ledger)
    return {f.name: float(np.sum(np.asarray(getattr(led, f.name), np.float64))) for f in dataclasses.fields(led)}


def window_outcomes(model, before: dict, after: dict, window_s: float, replicates: int,
                    usd_per_gpu_hour: float = USD_PER_GPU_HOUR) -> dict:
    """Outcomes per completed task from two ledger sums (:func:`_ledger_sums`) ``window_s`` apart."""
    d = {k: after[k] - before[k] for k in after}
    p = model.params
    done = d["completed"]
    per = (lambda x: x / done) if done > 0 else (lambda x: float("nan"))  # noqa: E731
    busy_j = float(p.power_prefill) * d["prefill_s"] + float(p.power_decode) * d["decode_s"]
    gpu_s = d["prefill_s"] + d["decode_s"] + d["idle_s"]  # live GPUs x time
    throughput = done / (window_s * replicates)
    in_system = d["occupancy_s"] / (window_s * replicates)
    theta = np.asarray(p.kind_theta, float)
    return {
        "tokens_per_task": per(d["tokens_in"] + d["tool_tokens"] + d["tokens_out"]),
        "prefill_per_task": per(d["tokens_in"] + d["tool_tokens"]),
        "output_per_task": per(d["tokens_out"]),
        "joules_per_task": per(d["energy_j"]),
        "busy_joules_per_task": per(busy_j),
        "usd_per_task": per(gpu_s * usd_per_gpu_hour / 3600.0),
        "latency_s": per(d["sojourn_s"]),
        "littles_latency_s": in_system / throughput if throughput > 0 else float("nan"),
        "handoff_tokens_per_task": per(d["kind_handoff_tokens"]),
        "handoff_prob": per(d["kind_handoffs"]),
        "foreign_served_per_task": per(d["kind_foreign"]),
        "drop_fraction": d["dropped"] / d["arrived"] if d["arrived"] > 0 else 0.0,
        "throughput_per_s": throughput,
        "completed": done,
        "specialization_index": so.specialization_index(theta),
    }


def run_outcomes(model, warmup_steps: int, steps: int, replicates: int = 1,
                 usd_per_gpu_hour: float = USD_PER_GPU_HOUR) -> dict:
    """Run the engine ``warmup_steps`` then ``steps`` more (one record per call) and return
    :func:`window_outcomes` over the second part."""
    from sim.core import engine
    from sim.substrates.llm import SUBSTRATE as LLM

    warm = engine.run(LLM, model.state, model.params, seed=model.seed, steps=warmup_steps, record_every=warmup_steps,
                      replicates=replicates)
    if warm.error is not None:
        raise RuntimeError(f"the engine stopped in the warm-up: {warm.error}")
    res = engine.run(LLM, warm.state, model.params, seed=model.seed, steps=steps, record_every=steps,
                     replicates=replicates)
    if res.error is not None:
        raise RuntimeError(f"the engine stopped: {res.error}")
    window = steps * float(model.params.dt)
    return window_outcomes(model, _ledger_sums(warm.state), _ledger_sums(res.state), window, replicates,
                           usd_per_gpu_hour)


def society_params(cfg: dict, usd_per_gpu_hour: float = USD_PER_GPU_HOUR) -> so.SocietyParams:
    """The static accounting's numbers at an engine config's point: kinds, cluster size, contexts,
    hand-off tokens and miss rate from ``substrate.kinds``, the task from the arrival medians (exact
    means when the lognormal shapes are 0), no hand-off latency, prefix caching on."""
    from sim.substrates.llm.build import read_numbers

    v = read_numbers(cfg["substrate"])
    n = int(cfg["topology"]["n_cells"]) if isinstance(cfg.get("topology"), dict) and "n_cells" in cfg["topology"] else 1
    return so.SocietyParams(
        n_kinds=v["kinds.n"], n_instances=n, base_context_tokens=v["kinds.base_context_tokens"],
        kind_context_tokens=v["kinds.context_tokens"], prompt_tokens=v["arrivals.prompt_median_tokens"],
        output_tokens=v["arrivals.output_median_tokens"], handoff_tokens=v["kinds.handoff_tokens"],
        handoff_latency_s=0.0, p_miss=v["kinds.p_miss"], context_cache_miss=0.0, usd_per_gpu_hour=usd_per_gpu_hour,
        tool_calls=0, step_output_tokens=0.0, tool_result_tokens=0.0, tool_latency_s=0.0, workers=1.0,
        worker_tool_calls=0, subtask_tokens=0.0, summary_tokens=0.0)


def with_kinds(cfg: dict, **kinds) -> dict:
    """A copy of a composed config with ``substrate.kinds`` keys changed."""
    out = copy.deepcopy(cfg)
    out["substrate"]["kinds"].update(kinds)
    return out


def compare(cfg: dict, contexts, rates, warmup_steps: int, steps: int, replicates: int = 1,
            usd_per_gpu_hour: float = USD_PER_GPU_HOUR) -> list[dict]:
    """Specialists (theta = 0) and generalists (theta = 1) on the cluster of ``cfg`` at each context
    per kind and arrival rate (requests/s per instance): one row per (context, rate, arrangement)
    with the engine's outcomes and the static accounting's (``static_*``: tokens, busy J, USD and
    latency per task of :func:`society.reference_society`, which has a full steady batch and no
    queueing). A row whose engine run stopped holds ``error``."""
    from sim.substrates.llm.build import build_llm

    rows = []
    for c in contexts:
        for rate in rates:
            for name, theta in (("specialists", 0.0), ("generalists", 1.0)):
                point = with_kinds(cfg, context_tokens=int(c), theta=theta)
                point["substrate"]["arrivals"]["rate_per_s"] = float(rate)
                model = build_llm(point)
                row = {"arrangement": name, "context_per_kind": float(c), "rate_per_s": float(rate), "theta": theta,
                       "prefix_tokens": float(np.max(model.params.kind_prefix))}
                try:
                    row.update(run_outcomes(model, warmup_steps, steps, replicates, usd_per_gpu_hour))
                except RuntimeError as exc:
                    row["error"] = str(exc)
                p = society_params(point, usd_per_gpu_hour)
                static = so.reference_society(so.read_hardware(point), p, [theta] * p.n_instances)
                row.update({
                    "static_tokens_per_task": static["prefill_tokens"] + static["output_tokens"],
                    "static_handoff_tokens_per_task": static["handoff_tokens"],
                    "static_handoff_prob": static["handoff_prob"],
                    "static_busy_joules_per_task": static["joules"],
                    "static_usd_per_task": static["usd"],
                    "static_latency_s": static["latency_s"],
                })
                rows.append(row)
    return rows
