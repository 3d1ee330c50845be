"""The LLM engine: ``jit(vmap(scan))`` over steps and replicates (optionally parameter points).

Same layout as ``sim.engine``: an outer ``lax.scan`` over record intervals, each an inner scan of
``record_every`` steps; the host loops over chunks (a divisor of the number of records, so a run
compiles once), checks every chunk for NaN/Inf and a broken KV-cache balance, and keeps what was
good. Replicate ``r`` draws from ``fold_in(PRNGKey(seed), r)``.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from sim.engine import RunResult, broadcast_state, chunk_length, replicate_keys, scan_records
from sim.errors import NumericalError
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


def kv_balance_error(records) -> np.ndarray:
    """|kv_free + occupied - capacity| is checked through free + occupied being constant in time."""
    tot = records["kv_free"] + records["kv_occupied"]
    return np.abs(tot - tot[:, :1])


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
    fn = _compiled(chunk, record_every, axes)
    t0 = time.perf_counter()
    compiled = fn.lower(state, params, keys).compile()
    compile_s = time.perf_counter() - t0
    out: dict[str, list] = {k: [] for k in RECORD_FIELDS}
    capacity = np.asarray(state0.cells.kv_capacity)
    error, done = None, 0
    t1 = time.perf_counter()
    for _ in range(n_records // chunk):
        new_state, rec = compiled(state, params, keys)
        rec = jax.device_get(rec)
        bad = None
        for name in ("kv_free", "kv_occupied", "tokens_out", "energy_j", "debt_s"):
            b = ~np.isfinite(rec[name]) | (rec[name] < -1e-6 * np.maximum(capacity, 1.0))
            if b.any():
                bad = (name, np.argwhere(b)[0])
                break
        if bad is not None:
            name, (r, ti, c) = bad
            error = NumericalError(done + (int(ti) + 1) * record_every, int(c), name, "llm step",
                                   float(rec[name][r, ti, c]), int(r))
            break
        state = new_state
        for k in RECORD_FIELDS:
            out[k].append(rec[k])
        done += chunk * record_every
        if on_chunk is not None:
            on_chunk(state, done, keys)
    jax.block_until_ready(state)
    wall = time.perf_counter() - t1
    records = {k: (np.concatenate(v, axis=1) if v else None) for k, v in out.items()}
    dt = float(np.asarray(params.dt).reshape(-1)[0])
    times = np.arange(1, done // record_every + 1) * record_every * dt
    return RunResult(state, records, times, done, wall, compile_s, error)
