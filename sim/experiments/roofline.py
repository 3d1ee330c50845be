"""``experiment=roofline``: the serving calculator.

``python -m sim experiment=roofline model=llama3_8b gpu=h100 batch=32 context=2048`` runs a fixed
batch of ``batch`` decode streams, each holding ``context`` tokens, on the LLM engine with the
context frozen (no arrivals, no growth), and writes ``output_tokens_per_s``, ``step_time_s`` and
``energy_per_output_token_j`` (at ``roofline.power_state``, default ``decode``: idle + (TDP - idle) x the
achieved bandwidth fraction) to summary.json, at the achieved (not peak) FLOP/s and bandwidth of
``conf/gpu`` and with the tensor-parallel all-reduces on ``gpus_per_model > 1``, next to
the closed-form roofline values (``analytic_*``) they must equal. Refused with a ConfigError: a
model whose weights do not fit the GPU memory, ``batch x context`` beyond the KV capacity, a
context beyond the model's window.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from sim.api import RunOutput
from sim.config.validate import validate
from sim.constants import landauer_j
from sim.errors import ConfigError
from sim.experiments import register
from sim.io import CORE_OUTCOMES, COUNT, DIMENSIONLESS, FLAG, TEXT
from sim.core import engine
from sim.substrates.llm import specs
from sim.substrates.llm import SUBSTRATE as LLM
from sim.substrates.llm.build import build_llm
from sim.substrates.llm.results import to_dataset

POWER_STATES = ("idle", "prefill", "decode", "tdp")


def _positive_int(cfg, key):
    v = cfg.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(key, v, "an integer >= 1")
    return v


def calculator_config(cfg: dict) -> tuple[dict, int, int, str]:
    """Check batch/context against the model and GPU; return the engine config of the calculator."""
    batch, context = _positive_int(cfg, "batch"), _positive_int(cfg, "context")
    state = ((cfg.get("roofline") or {}).get("power_state")) or "decode"
    if state not in POWER_STATES:
        raise ConfigError("roofline.power_state", state, "one of " + ", ".join(POWER_STATES))
    model, gpu = specs.model_spec(cfg), specs.gpu_spec(cfg)
    sub = dict(cfg.get("substrate") or {})
    n_gpus = sub.get("gpus_per_model", 1)
    util = sub.get("gpu_memory_utilization", 0.9)
    act = sub.get("activation_reserve_gib", specs.ACTIVATION_RESERVE_GIB)
    if isinstance(n_gpus, bool) or not isinstance(n_gpus, int) or n_gpus < 1:
        raise ConfigError("substrate.gpus_per_model", n_gpus, "an integer >= 1")
    if isinstance(act, bool) or not isinstance(act, (int, float)) or not math.isfinite(act) or act < 0:
        raise ConfigError("substrate.activation_reserve_gib", act, "a reserve >= 0 (GiB per GPU)")
    cap = specs.check_fits(model, gpu, n_gpus, util, act)
    if context > model.max_context:
        raise ConfigError("context", context, f"at most model.max_context={model.max_context} tokens of {model.name}")
    if batch * context > cap:
        raise ConfigError(
            "batch", batch,
            f"a batch the KV cache holds: batch x context = {batch} x {context} = {batch * context:,} tokens > KV "
            f"capacity {cap:,.0f} tokens ({model.name} on {n_gpus} x {gpu.name}: {util:.0%} of "
            f"{n_gpus * gpu.hbm_bytes / 1e9:.1f} GB minus {model.weight_bytes / 1e9:.1f} GB of weights and "
            f"{act:g} GiB of activations per GPU); "
            f"at context {context} at most batch={int(cap // context)}",
        )
    slots = max(64, 1 << math.ceil(math.log2(batch)))  # one compiled shape for batches up to 64, 128, ...
    sub.update(
        freeze_context=True, chain_slots=slots, max_batch=slots, queue_slots=1, routing=False,
        arrivals={**sub.get("arrivals", {}), "rate_per_s": 0.0},
        tools={**sub.get("tools", {}), "p_per_token": 0.0},
        memory={**sub.get("memory", {}), "threshold_tokens": 0},
        agent={**sub.get("agent", {}), "followup_prob": 0.0, "hops": 1},
        initial={"active": batch, "queued": 0, "prompt_tokens": context, "output_tokens": 1e15},
    )
    out = copy.deepcopy(cfg)
    out["substrate"] = sub
    return out, batch, context, state


# The unit of every key the roofline's summary can hold (sim.io's naming rule).
OUTCOME_UNITS = {
    **CORE_OUTCOMES, "gpus_per_model": COUNT, "batch": COUNT, "context_tokens": "tokens", "power_state": TEXT,
    "output_tokens_per_s": "tokens/s", "step_time_s": "s", "energy_per_output_token_j": "J/output token",
    "power_w": "W", "engine_decode_state_energy_per_output_token_j": "J/output token",
    "analytic_output_tokens_per_s": "tokens/s", "analytic_step_time_s": "s",
    "analytic_energy_per_output_token_j": "J/output token", "allreduce_time_s": "s",
    "perfect_scaling_step_time_s": "s", "hbm_bandwidth_utilization": DIMENSIONLESS,
    "flops_utilization": DIMENSIONLESS, "compute_efficiency": DIMENSIONLESS, "bandwidth_efficiency": DIMENSIONLESS,
    "engine_vs_analytic_rel_error": DIMENSIONLESS, "memory_bound": FLAG,
    "arithmetic_intensity_flop_per_byte": "FLOP/byte", "ridge_flop_per_byte": "FLOP/byte",
    "attention_flop_share": DIMENSIONLESS, "kv_capacity_tokens": "tokens", "max_batch_at_context": COUNT,
    "kv_bytes_per_token": "bytes/token", "weight_bytes": "bytes", "bits_per_token": "bits/token",
    "landauer_ratio": DIMENSIONLESS, "energy_cost_per_1m_tokens_usd": "USD/1M tokens",
}


@register("roofline")
def run_roofline(cfg: dict) -> RunOutput:
    validate(cfg)
    ecfg, batch, context, power_state = calculator_config(cfg)
    llm = build_llm(ecfg)
    result = engine.run(
        LLM, llm.state, llm.params, seed=llm.seed, steps=int(cfg["steps"]), record_every=int(cfg["record_every"]),
        replicates=int(cfg["replicates"]), chunk_records=int(cfg.get("chunk_records", 100)),
    )
    ds = to_dataset(llm, result, cfg) if result.steps_done else None
    if result.error is not None:
        return RunOutput(ds, {"status": "failed", "reason": str(result.error)}, llm, result)
    rec = result.records
    span = float(result.times[-1])
    tok = rec["tokens_out"][:, -1, :].sum(-1)  # (R,)
    energy = rec["energy_j"][:, -1, :].sum(-1)
    step_time = float(np.mean(rec["step_time_s"][:, -1, 0]))
    tokens_per_s = float(np.mean(tok / span))
    n_gpus = llm.n_gpus
    power = llm.gpu.power(power_state) * n_gpus
    joules = power * step_time / batch
    analytic = specs.roofline_point(llm.model, llm.gpu, batch, context, n_gpus, power_state)
    summary = {
        "status": "ok",
        "model": llm.model.name,
        "gpu": llm.gpu.name,
        "gpus_per_model": n_gpus,
        "batch": batch,
        "context_tokens": context,
        "power_state": power_state,
        "currency_unit": "tokens",
        "output_tokens_per_s": tokens_per_s,
        "step_time_s": step_time,
        "energy_per_output_token_j": joules,
        "power_w": power,
        "engine_decode_state_energy_per_output_token_j": float(np.mean(energy / tok)),
        "analytic_output_tokens_per_s": analytic["tokens_per_s"],
        "analytic_step_time_s": analytic["step_time_s"],
        "analytic_energy_per_output_token_j": analytic["joules_per_token"],
        "allreduce_time_s": analytic["allreduce_time_s"],
        "perfect_scaling_step_time_s": analytic["perfect_scaling_step_time_s"],
        "hbm_bandwidth_utilization": analytic["hbm_bandwidth_utilization"],
        "flops_utilization": analytic["flops_utilization"],
        "compute_efficiency": llm.gpu.compute_efficiency,
        "bandwidth_efficiency": llm.gpu.bandwidth_efficiency,
        "engine_vs_analytic_rel_error": abs(tokens_per_s / analytic["tokens_per_s"] - 1.0),
        "memory_bound": analytic["memory_bound"],
        "arithmetic_intensity_flop_per_byte": analytic["arithmetic_intensity_flop_per_byte"],
        "ridge_flop_per_byte": analytic["ridge_flop_per_byte"],
        "attention_flop_share": analytic["attention_flop_share"],
        "kv_capacity_tokens": float(llm.kv_capacity),
        "max_batch_at_context": int(llm.kv_capacity // context),
        "kv_bytes_per_token": llm.model.kv_bytes_per_token,
        "weight_bytes": llm.model.weight_bytes,
        "bits_per_token": llm.bits_per_token,
        "landauer_ratio": joules / (landauer_j(llm.temperature_k) * llm.bits_per_token),
        "energy_cost_per_1m_tokens_usd": joules * 1e6 / 3.6e6 * llm.prices["usd_per_kwh"],
        "simulated_time_s": span,
        "replicates": int(tok.shape[0]),
        "wall_s": float(result.wall_s),
        "compile_s": float(result.compile_s),
    }
    return RunOutput(ds, summary, llm, result, figures=lambda out_dir: roofline_figures(llm, batch, context,
                                                                                        power_state, out_dir))


def roofline_figures(llm, batch: int, context: int, power_state: str, out_dir):
    """Tokens/s and J/token against batch at this context, the ridge point and this point marked
    (the figure writer lives with the LLM substrate's results: :mod:`sim.substrates.llm.results`)."""
    from sim.substrates.llm.results import roofline_figures as draw

    return draw(llm, batch, context, power_state, out_dir)
