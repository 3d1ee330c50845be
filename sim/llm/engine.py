"""The LLM engine: ``jit(vmap(scan))`` over steps and replicates (optionally parameter points).

Same layout as ``sim.engine``: an outer ``lax.scan`` over record intervals, each an inner scan of
``record_every`` steps; the host loops over chunks (a divisor of the number of records, so a run
compiles once), checks every chunk for NaN/Inf and a broken KV-cache balance, and keeps what was
good. Replicate ``r`` draws from ``fold_in(PRNGKey(seed), r)``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sim.engine import (
    RunResult,
    broadcast_state,
    cached_executable,
    chunk_length,
    drive_chunks,
    replicate_keys,
    scan_records,
    signature_key,
)
from sim.errors import NumericalError
from sim.llm import kernels as K
from sim.llm.kernels import in_system, step

RECORD_FIELDS = (
    "queue_len", "batch", "decoding", "kv_occupied", "kv_free", "in_system", "debt_s", "step_time_s",
    "arrived", "dropped", "completed", "turns_done", "sojourn_s", "occupancy_s", "tokens_in", "tokens_out",
    "tool_calls", "tool_tokens", "compressions", "tokens_removed", "energy_j", "prefill_s", "decode_s", "idle_s",
    "routed_out",
)


def kv_occupied(state):
    ch = state.chains
    return jnp.sum(jnp.where(ch.active, ch.base + ch.out, 0.0), axis=1)


def observe(state) -> dict:
    """Per-cell record at each record point."""
    ch, led, cells = state.chains, state.ledger, state.cells
    return {
        "queue_len": jnp.sum(state.queue.active, axis=1).astype(jnp.int32),
        "batch": jnp.sum(ch.active, axis=1).astype(jnp.int32),
        "decoding": jnp.sum(ch.active & (ch.tool_wait == 0), axis=1).astype(jnp.int32),
        "kv_occupied": kv_occupied(state),
        "kv_free": cells.kv_free,
        "in_system": in_system(state).astype(jnp.int32),
        "debt_s": cells.debt_s,
        "step_time_s": cells.step_time_s,
        "arrived": led.arrived,
        "dropped": led.dropped,
        "completed": led.completed,
        "turns_done": led.turns_done,
        "sojourn_s": led.sojourn_s,
        "occupancy_s": led.occupancy_s,
        "tokens_in": led.tokens_in,
        "tokens_out": led.tokens_out,
        "tool_calls": led.tool_calls,
        "tool_tokens": led.tool_tokens,
        "compressions": led.compressions,
        "tokens_removed": led.tokens_removed,
        "energy_j": led.energy_j,
        "prefill_s": led.prefill_s,
        "decode_s": led.decode_s,
        "idle_s": led.idle_s,
        "routed_out": led.routed_out,
    }


def _run_records(state, params, key, n_records: int, record_every: int):
    return scan_records(step, observe, state, params, key, n_records, record_every)


@functools.lru_cache(maxsize=32)
def _compiled(n_records: int, record_every: int, params_axes):
    fn = functools.partial(_run_records, n_records=n_records, record_every=record_every)
    return jax.jit(jax.vmap(fn, in_axes=(0, params_axes, 0)))


def run(state0, params, *, seed: int, steps: int, record_every: int, replicates: int = 1,
        chunk_records: int = 200, batched_params: bool = False, on_chunk=None, keys=None) -> RunResult:
    """Run ``steps`` steps of ``replicates`` replicates (with ``batched_params`` the parameter
    PyTree has a leading axis of length ``replicates``: one parameter point per replicate)."""
    if steps % record_every:
        raise ValueError("steps must be a multiple of record_every")
    n_records = steps // record_every
    state = broadcast_state(state0, replicates) if np.ndim(state0.step) == 0 else state0
    if keys is None:
        keys = replicate_keys(seed, replicates)
    axes = params.batch_axes() if batched_params else None
    chunk = chunk_length(n_records, chunk_records)
    processes = tuple(id(fn) for _, fn in K.PROCESSES)
    key = ("llm", chunk, record_every, axes, processes, signature_key(state, params, keys))
    compiled, compile_s = cached_executable(
        key, lambda: _compiled(chunk, record_every, axes).lower(state, params, keys).compile()
    )
    capacity = np.asarray(state0.cells.kv_capacity)

    def check(chunk_state, rec, done):
        for name in ("kv_free", "kv_occupied", "tokens_out", "energy_j", "debt_s"):
            bad = ~np.isfinite(rec[name]) | (rec[name] < -1e-6 * np.maximum(capacity, 1.0))
            if bad.any():
                r, ti, c = np.argwhere(bad)[0]
                return NumericalError(done + (int(ti) + 1) * record_every, int(c), name, "llm step",
                                      float(rec[name][r, ti, c]), int(r))
        return None

    return drive_chunks(compiled, state, params, keys, n_chunks=n_records // chunk, chunk=chunk,
                        record_every=record_every, fields=RECORD_FIELDS, check=check, compile_s=compile_s,
                        on_chunk=on_chunk)
