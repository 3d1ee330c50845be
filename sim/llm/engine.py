"""The LLM engine: ``jit(vmap(scan))`` over steps and replicates (optionally parameter points).

Same layout as ``sim.engine``: an outer ``lax.scan`` over record intervals, each an inner scan of
``record_every`` steps; the host loops over chunks (a divisor of the number of records, so a run
compiles once), checks every chunk and keeps what was good. Replicate ``r`` draws from
``fold_in(PRNGKey(seed), r)``.

The guard (:data:`GUARD`, the LLM counterpart of the biology pool check in ``sim.engine``): a
NaN/Inf in any record, a negative KV quantity (free, occupied), a negative prefill debt, a
negative or decreasing cumulative ledger (requests, tokens, energy, GPU time), or a broken
KV-cache balance (``free + occupied != capacity`` beyond 1e-6 of the capacity) stops the run at
that chunk. The
bad chunk is replayed process by process (``sim.llm.kernels.PROCESSES``) on the replicate that
went bad first, and the :class:`LLMNumericalError` names the step, the model instance (cell), the
quantity and the process. With ``checkpoint`` (``sim.checkpoint.Checkpointer``), ``start_step`` and
``keys`` a run checkpoints and resumes exactly as the biology engine does.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from sim.engine import (
    CACHE_CLEARERS,
    Guard,
    RunResult,
    broadcast_state,
    cached_executable,
    chunk_length,
    drive_chunks,
    earliest_record,
    locate_failure,
    replicate_keys,
    scan_records,
    signature_key,
)
from sim.errors import NumericalError
from sim.llm import kernels as K
from sim.kernels import ops
from sim.kernels.ops import rowsum
from sim.llm.kernels import in_system, step

RECORD_FIELDS = (
    "queue_len", "batch", "decoding", "kv_occupied", "kv_free", "in_system", "debt_s", "step_time_s",
    "arrived", "dropped", "completed", "turns_done", "sojourn_s", "occupancy_s", "tokens_in", "tokens_out",
    "tool_calls", "tool_tokens", "compressions", "tokens_removed", "energy_j", "prefill_s", "decode_s", "idle_s",
    "routed_out",
)


def kv_occupied(state):
    ch = state.chains
    return rowsum(jnp.where(ch.active, ch.base + ch.out, 0.0))  # fixed order when deterministic


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
def _compiled(n_records: int, record_every: int, params_axes, processes: tuple = (), fixed_order: bool = False):
    """jit(vmap(scan)) of one chunk; ``processes`` (the ids of the step's processes) is part of the
    key so that a patched ``PROCESSES`` (tests inject faults that way) is traced afresh, and
    ``fixed_order`` because deterministic reductions change the trace (``sim.kernels.ops``)."""
    fn = functools.partial(_run_records, n_records=n_records, record_every=record_every)
    return jax.jit(jax.vmap(fn, in_axes=(0, params_axes, 0)))


# ---- numerical guard ---------------------------------------------------------------------------

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


class LLMNumericalError(NumericalError):
    """A NaN/Inf, negative or decreasing quantity of the LLM engine: step, model instance (cell),
    quantity (also kept as ``species``, the run summary's ``failure_species``) and process."""

    def __init__(self, step: int, cell: int, quantity: str, process: str, value: float, replicate: int = 0):
        super().__init__(step, cell, quantity, process, value, replicate)
        self.quantity = quantity
        self.args = (
            f"numerical failure at step {step}, replicate {replicate}, cell {cell} (model instance), "
            f"quantity {quantity}, process {process}: value {value!r}",
        )

    def __str__(self) -> str:
        return self.args[0]


def bad_values(obs: dict, capacity, previous: dict | None = None) -> dict:
    """Quantity -> (mask of bad values, the values), in the order they are reported.

    ``obs``: records ``(R, T, C)`` with ``capacity`` ``(R, 1, C)``, or one observation ``(C,)``
    with ``capacity`` ``(C,)``; ``previous``: the cumulative ledgers one record (or one process)
    earlier, same shapes (None: not checked)."""
    tol = KV_TOLERANCE * np.maximum(capacity, 1.0)
    out = {}
    for name in RECORD_FIELDS:
        x = np.asarray(obs[name])
        bad = ~np.isfinite(x) if np.issubdtype(x.dtype, np.floating) else np.zeros(x.shape, bool)
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
            out[name + DECREASED] = (change < 0, change)
    return out


def _first(masks: dict, index=()):
    """(quantity, cell, value) of the first bad entry at ``index`` (the leading axes), or None."""
    for name, (bad, value) in masks.items():
        row = bad[index]
        if row.any():
            c = int(np.argmax(row))
            return name, c, float(value[index][c])
    return None


def _first_bad(rec: dict, capacity, start_ledger: dict):
    """The earliest (replicate, record) with a bad value and the first bad quantity and cell there.

    ``start_ledger``: the cumulative ledgers at the start of the chunk, ``(R, C)``."""
    cap = np.asarray(capacity)[:, None, :]  # (R, 1, C)
    previous = {k: np.concatenate([np.asarray(start_ledger[k])[:, None], rec[k][:, :-1]], axis=1) for k in CUMULATIVE}
    masks = bad_values(rec, cap, previous)
    any_rt = np.zeros(rec["kv_free"].shape[:2], bool)
    for bad, _ in masks.values():
        any_rt |= bad.any(axis=2)
    hit = earliest_record(any_rt)
    if hit is None:
        return None
    r, t = hit
    name, c, value = _first(masks, (r, t))
    return r, t, c, name, value


_observe_one = jax.jit(observe)


def inspect(state, before=None):
    """(cell, quantity, value) of the first bad quantity of one replicate's state (``before``: its
    state before the process, for the cumulative ledgers), or None."""
    obs = jax.device_get(_observe_one(state))
    previous = None if before is None else {k: np.asarray(getattr(before.ledger, k)) for k in CUMULATIVE}
    hit = _first(bad_values(obs, np.asarray(state.cells.kv_capacity), previous))
    return None if hit is None else (hit[1], hit[0], hit[2])


@functools.lru_cache(maxsize=8)
def _jitted_processes(ids):
    """The step's processes, each jitted on its own (a replay runs them one at a time)."""
    by_id = {id(fn): (name, fn) for name, fn in K.PROCESSES}
    return tuple((by_id[i][0], jax.jit(by_id[i][1])) for i in ids)


def _process_ids():
    return tuple(id(fn) for _, fn in K.PROCESSES)


@functools.lru_cache(maxsize=8)
def _advance_for(ids):
    @jax.jit
    def advance(state, params, key, n_steps):
        return jax.lax.fori_loop(0, n_steps, lambda i, s: step(s, params, key), state)

    return advance


ADVANCE_LOOP_MAX = 2000  # steps a replay advances with the jitted processes before compiling a loop


def _advance(state, params, key, n_steps: int):
    """One replicate ``n_steps`` steps on (to the record interval that went bad). Short advances
    reuse the replay's jitted processes (no further compile), long ones a compiled loop."""
    ids = _process_ids()
    if n_steps > ADVANCE_LOOP_MAX:
        return _advance_for(ids)(state, params, key, n_steps)
    processes = _jitted_processes(ids)
    for _ in range(int(n_steps)):
        for _, process in processes:
            state = process(state, params, key)
        state = dataclasses.replace(state, step=state.step + 1)
    return state


def _take_params(params, r):
    """Replicate ``r``'s point of a parameter PyTree batched along ``batch_axes``."""
    axes = params.batch_axes()
    return dataclasses.replace(params, **{
        f.name: (getattr(params, f.name) if getattr(axes, f.name) is None
                 else jax.tree_util.tree_map(lambda x: x[r], getattr(params, f.name)))
        for f in dataclasses.fields(params)
    })


GUARD = Guard(
    first_bad=None,  # needs the chunk's capacity and starting ledgers: bound in check_chunk
    inspect=inspect,
    processes=lambda: _jitted_processes(_process_ids()),
    advance=_advance,
    take_params=_take_params,
    error=LLMNumericalError,
)


def clear_caches() -> None:
    _compiled.cache_clear()
    _jitted_processes.cache_clear()
    _advance_for.cache_clear()


CACHE_CLEARERS.append(clear_caches)


def check_chunk(chunk_state, rec, params, keys, *, record_every: int, chunk_start: int,
                batched_params: bool = False, first_replicate: int = 0) -> NumericalError | None:
    """The guard of one chunk: None, or the error naming step, cell, quantity and process."""
    capacity = np.asarray(jax.device_get(chunk_state.cells.kv_capacity))
    start = {k: np.asarray(jax.device_get(getattr(chunk_state.ledger, k))) for k in CUMULATIVE}
    if _first_bad(rec, capacity, start) is None:
        return None
    guard = dataclasses.replace(GUARD, first_bad=lambda records: _first_bad(records, capacity, start))
    return locate_failure(chunk_state, params, keys, rec, record_every, chunk_start, batched_params, first_replicate,
                          guard=guard)


def run(state0, params, *, seed: int, steps: int, record_every: int, replicates: int = 1,
        chunk_records: int = 200, batched_params: bool = False, on_chunk=None, keys=None,
        start_step: int = 0, checkpoint=None, first_replicate: int = 0) -> RunResult:
    """Run ``steps`` steps of ``replicates`` replicates (with ``batched_params`` the parameter
    PyTree has a leading axis of length ``replicates``: one parameter point per replicate).
    Replicate ``r`` of the call draws as replicate ``first_replicate + r`` of the seed's ensemble.

    ``state0`` is unbatched unless it has a leading replicate axis already (resume, with the
    checkpoint's ``keys`` and ``start_step``). After each good chunk ``on_chunk(state, steps_done,
    keys)`` and ``checkpoint(state, steps_done, keys, chunk_records)`` are called, as in
    ``sim.engine.run``; the run stops at the first bad chunk, keeping the earlier ones."""
    if steps % record_every:
        raise ValueError("steps must be a multiple of record_every")
    n_records = steps // record_every
    state = broadcast_state(state0, replicates) if np.ndim(state0.step) == 0 else state0
    if keys is None:
        keys = replicate_keys(seed, replicates, first_replicate)
    axes = params.batch_axes() if batched_params else None
    chunk = chunk_length(n_records, chunk_records)
    processes = _process_ids()
    fixed = ops.FIXED_ORDER[0]
    key = ("llm", chunk, record_every, axes, processes, fixed, signature_key(state, params, keys))
    compiled, compile_s = cached_executable(
        key, lambda: _compiled(chunk, record_every, axes, processes, fixed).lower(state, params, keys).compile()
    )

    def check(chunk_state, rec, done):
        return check_chunk(chunk_state, rec, params, keys, record_every=record_every,
                           chunk_start=start_step + done, batched_params=batched_params,
                           first_replicate=first_replicate)

    return drive_chunks(compiled, state, params, keys, n_chunks=n_records // chunk, chunk=chunk,
                        record_every=record_every, fields=RECORD_FIELDS, check=check, compile_s=compile_s,
                        start_step=start_step, on_chunk=on_chunk, checkpoint=checkpoint)
