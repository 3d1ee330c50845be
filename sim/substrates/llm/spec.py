"""The LLM-serving substrate as a value: model instances (cells) with a KV cache (the conserved
carrier), GPUs (producers, roofline), decode streams (chains whose per-token cost grows with the
context), tools and memory modules (consumers), Poisson arrivals and routing over the graph.

The equations are the kernels of :mod:`sim.substrates.llm.kernels`, the model from ``conf/substrate/llm.yaml``
with the ``model`` and ``gpu`` groups (:func:`sim.substrates.llm.build.build_llm`), the results (Little's law,
stability, token/energy/dollar/Landauer ledgers over a steady window) from :mod:`sim.substrates.llm.results`.

The guard's invariants: every record finite; the KV cache (free, occupied), the prefill debt and
every cumulative ledger non-negative; the cumulative ledgers never decrease; and the KV balance
``free + occupied == capacity`` to ``KV_TOLERANCE`` of the capacity.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from sim.core.substrate import EntitySpec, Quantity, Substrate
from sim.errors import ConfigError
from sim.core.ops import rowsum
from sim.substrates.llm.kernels import PROCESSES, in_system
from sim.substrates.llm.build import RULES

RECORDS = (
    Quantity("queue_len", "requests", "requests waiting in the queue"),
    Quantity("batch", "chains", "chain slots holding a request (decoding or waiting on a tool)"),
    Quantity("decoding", "chains", "chains decoding"),
    Quantity("kv_occupied", "tokens", "KV cache held by chains (conserved carrier, occupied)"),
    Quantity("kv_free", "tokens", "KV cache free"),
    Quantity("kv_capacity", "tokens", "KV cache of the instance (free + occupied)"),
    Quantity("in_system", "requests", "requests queued or in a chain"),
    Quantity("debt_s", "s", "prefill/tool/memory GPU work owed"),
    Quantity("step_time_s", "s", "roofline time of the last decode iteration"),
    Quantity("arrived", "requests", "cumulative arrivals"),
    Quantity("dropped", "requests", "cumulative requests dropped (queue full)"),
    Quantity("completed", "requests", "cumulative conversations completed"),
    Quantity("turns_done", "turns", "cumulative turns finished"),
    Quantity("sojourn_s", "s", "cumulative time in system of completed requests"),
    Quantity("occupancy_s", "request s", "cumulative integral of requests in system"),
    Quantity("tokens_in", "tokens", "cumulative prompt tokens prefilled"),
    Quantity("tokens_out", "tokens", "cumulative tokens generated"),
    Quantity("tool_calls", "calls", "cumulative tool calls"),
    Quantity("tool_tokens", "tokens", "cumulative tokens appended by tools"),
    Quantity("compressions", "compressions", "cumulative memory-module compressions"),
    Quantity("tokens_removed", "tokens", "cumulative tokens removed by memory modules"),
    Quantity("energy_j", "J", "cumulative GPU energy"),
    Quantity("prefill_s", "GPU s", "cumulative time in the prefill state"),
    Quantity("decode_s", "GPU s", "cumulative time decoding"),
    Quantity("idle_s", "GPU s", "cumulative idle time"),
    Quantity("routed_out", "requests", "cumulative arrivals routed to a neighbour"),
)
RECORD_FIELDS = tuple(q.name for q in RECORDS)

# recorded quantities that can never be negative: the KV cache, the prefill debt and every
# cumulative ledger (requests, tokens, energy, GPU time), which can never decrease either
CUMULATIVE = (
    "arrived", "dropped", "completed", "turns_done", "sojourn_s", "occupancy_s", "tokens_in", "tokens_out",
    "tool_calls", "tool_tokens", "compressions", "tokens_removed", "energy_j", "prefill_s", "decode_s", "idle_s",
    "routed_out",
)
NONNEGATIVE = ("kv_free", "kv_occupied", "debt_s") + CUMULATIVE
KV_TOLERANCE = 1e-6  # of the capacity (tokens): round-off of the incremental KV booking is ~1e-10
BALANCE = "kv_balance"  # the quantity named when free + occupied != capacity
DECREASED = " (decreased)"  # suffix of a cumulative ledger that went down; its value is the change


def kv_occupied(state):
    ch = state.chains
    return rowsum(jnp.where(ch.active, ch.base + ch.out, 0.0))  # fixed order when deterministic


def observe(state) -> dict:
    """Per-cell record at each record point."""
    ch, led, cells = state.chains, state.ledger, state.cells
    obs = {
        "queue_len": jnp.sum(state.queue.active, axis=1).astype(jnp.int32),
        "batch": jnp.sum(ch.active, axis=1).astype(jnp.int32),
        "decoding": jnp.sum(ch.active & (ch.tool_wait == 0), axis=1).astype(jnp.int32),
        "kv_occupied": kv_occupied(state),
        "kv_free": cells.kv_free,
        "kv_capacity": cells.kv_capacity,
        "in_system": in_system(state).astype(jnp.int32),
        "debt_s": cells.debt_s,
        "step_time_s": cells.step_time_s,
    }
    for name in CUMULATIVE:
        obs[name] = getattr(led, name)
    return obs


def invariants(obs: dict, previous: dict | None = None) -> dict:
    """Quantity -> (mask of bad values, the values), in the order they are reported."""
    capacity = np.asarray(obs["kv_capacity"])
    tol = KV_TOLERANCE * np.maximum(capacity, 1.0)
    out = {}
    for name in RECORD_FIELDS:
        x = np.asarray(obs[name])
        bad = ~np.isfinite(x) if np.issubdtype(x.dtype, np.floating) else np.zeros(x.shape, bool)
        with np.errstate(invalid="ignore"):
            if name in ("kv_free", "kv_occupied"):
                bad = bad | (x < -tol)
            elif name in NONNEGATIVE:
                bad = bad | (x < 0)
        out[name] = (bad, x)
    balance = np.asarray(obs["kv_free"]) + np.asarray(obs["kv_occupied"]) - capacity
    with np.errstate(invalid="ignore"):
        out[BALANCE] = (np.abs(balance) > tol, balance)
    if previous is not None:
        for name in CUMULATIVE:
            change = np.asarray(obs[name]) - np.asarray(previous[name])
            with np.errstate(invalid="ignore"):
                out[name + DECREASED] = (change < 0, change)
    return out


def step_check(state):
    """Traced, after every step: the KV cache (free beyond the tolerance below zero, or not finite),
    a negative or non-finite prefill debt, or a non-finite energy ledger."""
    c = state.cells
    tol = KV_TOLERANCE * jnp.maximum(c.kv_capacity, 1.0)
    bad = ~jnp.isfinite(c.kv_free) | (c.kv_free < -tol) | ~jnp.isfinite(c.debt_s) | (c.debt_s < 0)
    return jnp.any(bad | ~jnp.isfinite(state.ledger.energy_j))


def warmup_fraction(cfg: dict) -> float:
    serving = cfg.get("serving")
    w = serving.get("warmup_fraction", 0.25) if isinstance(serving, dict) else 0.25
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w < 1:
        raise ConfigError("serving.warmup_fraction", w, "a fraction in [0, 1)")
    return float(w)


def validate(cfg: dict) -> None:
    from sim.config.validate import validate_llm

    validate_llm(cfg)
    warmup_fraction(cfg)
    steps, every = cfg.get("steps"), cfg.get("record_every")
    if isinstance(steps, int) and isinstance(every, int) and every > 0 and steps // every < 3:
        raise ConfigError("steps", steps, f"at least 3 records (steps / record_every = {steps // every}): "
                          "the serving summary fits a steady window")


def build(cfg: dict):
    from sim.substrates.llm.build import build_llm

    return build_llm(cfg)


def to_dataset(llm, result, cfg: dict):
    from sim.substrates.llm.results import to_dataset as llm_dataset

    return llm_dataset(llm, result, cfg)


def summarize(llm, result, cfg: dict) -> dict:
    from sim.substrates.llm.results import summarize as llm_summary

    if len(result.times) < 3:
        return {"status": "failed", "reason": "fewer than 3 records: no steady window to summarise"}
    return llm_summary(llm, result, warmup_fraction(cfg))


def figures(ds, out_dir):
    from sim.substrates.llm.results import figures as llm_figures

    return llm_figures(ds, out_dir)


def reference(llm, replicate: int = 0):
    from sim.substrates.llm.reference import ReferenceLLM

    return ReferenceLLM(llm, replicate=replicate)


def _decoding(state):
    ch = state.chains
    return np.asarray(ch.active) & (np.asarray(ch.tool_wait) == 0)


def _gpus_on(state):
    return np.asarray(state.gpus.alive) & np.asarray(state.cells.alive)[:, None]


def _power_state(state, built):
    """The state a GPU starts the next step in: "off" (it or its instance dead), "prefill" (owes
    prefill / tool / memory work, served first), "decode" (streams to decode) or "idle"."""
    shape = np.shape(state.gpus.alive)
    debt = np.broadcast_to((np.asarray(state.cells.debt_s) > 0)[:, None], shape)
    decoding = np.broadcast_to(_decoding(state).any(axis=1)[:, None], shape)
    return np.where(~_gpus_on(state), "off", np.where(debt, "prefill", np.where(decoding, "decode", "idle")))


def _power_w(state, built):
    """W drawn in :func:`_power_state` (``power_prefill``, ``power_decode``, ``power_idle``; 0 off)."""
    p = built.params
    watts = {"off": 0.0, "prefill": float(np.asarray(p.power_prefill)), "decode": float(np.asarray(p.power_decode)),
             "idle": float(np.asarray(p.power_idle))}
    return np.vectorize(watts.__getitem__, otypes=[float])(_power_state(state, built))


def _instance_ledger(state, built):
    """Per instance: its cumulative accounts (``sim.substrates.llm.state.Ledger``) as a dict."""
    led = state.ledger
    columns = {f.name: np.asarray(getattr(led, f.name), float) for f in dataclasses.fields(led)}
    rows = np.empty(np.shape(state.cells.alive), object)
    for i in range(rows.shape[0]):
        rows[i] = {name: float(x[i]) for name, x in columns.items()}
    return rows


ENTITIES = (
    EntitySpec("model_instance", "cells", (("alive", "alive"), ("kv_capacity", "kv_capacity"),
                                           ("kv_free", "kv_free"), ("debt_s", "debt_s"),
                                           ("step_time_s", "step_time_s")),
               # tokens, requests and chains as recorded (batch: streams holding KV; decoding: not
               # waiting for a tool)
               records=(("kv_occupied", "kv_occupied"), ("queue_len", "queue_len"), ("batch", "batch"),
                        ("decoding", "decoding"), ("in_system", "in_system"), ("tokens_out", "tokens_out"),
                        ("completed", "completed")),
               derived=(("n_gpus_alive", lambda state, built: _gpus_on(state).sum(axis=1)),
                        ("ledger", _instance_ledger))),
    EntitySpec("gpu", "gpus", (("alive", "alive"),), alive="alive",
               derived=(("power_state", _power_state), ("power_w", _power_w))),
    EntitySpec("decode_stream", "chains", (("active", "active"), ("base", "base"), ("out", "out"),
                                           ("target", "target"), ("tool_wait", "tool_wait"), ("born", "born"),
                                           ("turn", "turn"), ("hop", "hop")), alive="active",
               # tokens of KV held (base + out; 0 when inactive)
               derived=(("context", lambda state, built: np.where(state.chains.active,
                                                                  state.chains.base + state.chains.out, 0.0)),
                        ("waiting_for_tool", lambda state, built: state.chains.active & (state.chains.tool_wait > 0)))),
    # an instance's tools and its memory module (one each): the ledger lines they book
    EntitySpec("tool", "ledger", (("tool_calls", "tool_calls"), ("tool_tokens", "tool_tokens"),
                                  ("tool_truncated", "tool_truncated")),
               derived=(("waiting", lambda state, built: np.sum(state.chains.active & (state.chains.tool_wait > 0),
                                                                axis=1)),)),
    EntitySpec("memory", "ledger", (("compressions", "compressions"), ("tokens_removed", "tokens_removed"),
                                    ("flops", "flops_memory"))),
)

SUBSTRATE = Substrate(
    name="llm",
    build=build,
    processes=PROCESSES,
    observe=observe,
    records=RECORDS,
    invariants=invariants,
    to_dataset=to_dataset,
    summarize=summarize,
    validate=validate,
    config_rules=RULES,
    reference=reference,
    figures=figures,
    demand_knob="arrival_rate",
    params_axes=lambda params: params.batch_axes(),
    step_check=step_check,
    entities=ENTITIES,
    compartment="model instance",
    currency="token",
    description="model instances on tokens: GPUs decode on the roofline into a KV cache, tools and memory spend it",
)
