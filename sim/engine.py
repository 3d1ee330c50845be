"""The JAX engine: ``jit(vmap(scan))`` over steps and replicates, run in chunks.

A run is ``lax.scan`` over record intervals, each an inner ``lax.scan`` of ``record_every``
steps; the host loops over chunks of records so long runs can report progress, be checked for
NaN/Inf/negative pools, and checkpoint. Replicate ``r`` draws from ``fold_in(PRNGKey(seed), r)``,
so it is the same whether run alone or in a batch. The chunk length is a divisor of the number
of records, so a whole run compiles exactly once.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sim.kernels.ops import rowsum
from sim.kernels.step import PROCESSES, step
from sim.errors import NumericalError
from sim.state import SPECIES

RECORD_FIELDS = (
    "pools", "alive", "stress", "n_producers", "health_mean", "produced", "spent", "work",
    "transported_out", "failures", "births",
)


def observe(state) -> dict:
    """What is recorded at each record point (per cell)."""
    prod, led = state.producers, state.ledger
    n_alive = jnp.sum(prod.alive, axis=1)
    health = rowsum(jnp.where(prod.alive, prod.health, 0.0)) / jnp.maximum(n_alive, 1)
    return {
        "pools": state.cells.pools,
        "alive": state.cells.alive,
        "stress": state.cells.stress,
        "n_producers": n_alive.astype(jnp.int32),
        "health_mean": health,
        "produced": led.produced,
        "spent": rowsum(led.spent) + led.repair_spent + led.birth_spent,
        "work": rowsum(led.work),
        "transported_out": led.transported_out,
        "failures": led.failures,
        "births": led.births,
    }


def scan_records(step_fn, observe_fn, state, params, key, n_records: int, record_every: int):
    """``n_records`` x (``record_every`` steps of ``step_fn``, then ``observe_fn``): one chunk.

    Shared by the biology and LLM engines; returns (final state, stacked observations)."""

    def inner(s, _):
        return step_fn(s, params, key), None

    def outer(s, _):
        s, _ = jax.lax.scan(inner, s, None, length=record_every)
        return s, observe_fn(s)

    return jax.lax.scan(outer, state, None, length=n_records)


def _run_records(state, params, key, n_records: int, record_every: int):
    return scan_records(step, observe, state, params, key, n_records, record_every)


@functools.lru_cache(maxsize=64)
def _compiled(n_records: int, record_every: int, batched_params: bool, fixed_order: bool = False):
    """jit(vmap(scan)) of one chunk; `fixed_order` is part of the key because it changes the trace."""
    fn = functools.partial(_run_records, n_records=n_records, record_every=record_every)
    return jax.jit(jax.vmap(fn, in_axes=(0, 0 if batched_params else None, 0)))


def replicate_keys(seed: int, replicates: int, first: int = 0):
    base = jax.random.PRNGKey(int(seed))
    return jax.vmap(lambda r: jax.random.fold_in(base, r))(jnp.arange(first, first + replicates, dtype=jnp.uint32))


def broadcast_state(state, replicates: int):
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(jnp.asarray(x), (replicates,) + np.shape(x)), state)


def cast(tree, dtype):
    """Cast the floating leaves of a PyTree to ``dtype`` (float32 runs)."""
    return jax.tree_util.tree_map(
        lambda x: jnp.asarray(x, dtype) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else jnp.asarray(x),
        tree,
    )


def chunk_length(n_records: int, target: int) -> int:
    """Largest divisor of ``n_records`` not above ``target`` (so every chunk has one shape)."""
    target = max(1, min(target, n_records))
    for c in range(target, 0, -1):
        if n_records % c == 0:
            return c
    return 1


@dataclasses.dataclass
class RunResult:
    state: object  # final batched state (jax arrays)
    records: dict  # name -> np.ndarray (replicate, time, cell, ...)
    times: np.ndarray  # s, the time of each record
    steps_done: int
    wall_s: float
    compile_s: float
    error: Exception | None = None


def bad_pools(pools: np.ndarray) -> np.ndarray:
    return ~np.isfinite(pools) | (pools < 0)


@dataclasses.dataclass(frozen=True)
class Guard:
    """What a numerical guard looks for and how it replays a bad chunk to name the process.

    The biology engine's guard (:data:`BIO_GUARD`, bad pools) is the default of :func:`diagnose`
    and :func:`locate_failure`; ``sim.llm.engine`` builds its own (KV cache, token, energy
    quantities). Every callable is looked up when a failure is being located, so a test that patches
    a module's ``PROCESSES`` sees its patch.
    """

    first_bad: Callable  # records (R, T, ...) -> (replicate, record, cell, quantity, value) of the earliest bad value, or None
    inspect: Callable  # (one replicate's state, its state before the process) -> (cell, quantity, value) or None
    processes: Callable  # () -> the (name, process) pairs of one step, in order
    advance: Callable  # (state, params, key, n_steps) -> state, one replicate
    take_params: Callable | None = None  # (params, r) -> replicate r's parameters (batched params)
    error: type = NumericalError  # (step, cell, quantity, process, value, replicate) -> the exception


def earliest_record(bad_rt: np.ndarray):
    """(replicate, record) of the earliest bad record, from a ``(R, T)`` mask (ties: lowest
    replicate), or None when nothing is bad."""
    if not bad_rt.any():
        return None
    n_t = bad_rt.shape[1]
    first_t = np.where(bad_rt.any(axis=1), bad_rt.argmax(axis=1), n_t)
    r = int(np.argmin(first_t))
    return r, int(first_t[r])


def _first_bad_pool(rec):
    bad = bad_pools(rec["pools"])  # (R, T, C, S)
    hit = earliest_record(bad.reshape(bad.shape[0], bad.shape[1], -1).any(axis=2))
    if hit is None:
        return None
    r, t = hit
    cell, sp = map(int, np.argwhere(bad[r, t])[0])
    return r, t, cell, SPECIES[sp], float(rec["pools"][r, t, cell, sp])


def _bad_pool_in_state(state, before=None):
    pools = np.asarray(state.cells.pools)
    bad = bad_pools(pools)
    if not bad.any():
        return None
    cell, sp = map(int, np.argwhere(bad)[0])
    return cell, SPECIES[sp], float(pools[cell, sp])


def diagnose(state, params, key, start_step: int, n_steps: int, guard: Guard | None = None) -> NumericalError | None:
    """Replay steps one process at a time (one replicate) to name where a value went bad
    (by default: a pool, with the biology step's processes)."""
    guard = guard or BIO_GUARD
    processes = guard.processes()
    for _ in range(n_steps):
        step_no = int(np.asarray(state.step))
        for name, process in processes:
            before, state = state, process(state, params, key)
            hit = guard.inspect(state, before)
            if hit is not None:
                cell, quantity, value = hit
                return guard.error(step_no, cell, quantity, name, value)
        state = dataclasses.replace(state, step=state.step + 1)
    return None


@jax.jit
def _advance(state, params, key, n_steps):
    """``n_steps`` steps of one replicate (a traced count: compiles once whatever the count)."""
    return jax.lax.fori_loop(0, n_steps, lambda i, s: step(s, params, key), state)


def locate_failure(state, params, keys, rec, record_every: int, chunk_start: int,
                   batched_params: bool = False, first_replicate: int = 0,
                   guard: Guard | None = None) -> NumericalError:
    """Name the step, cell, quantity (species) and process of the first bad value in a chunk.

    ``state`` is the (batched) state at the start of the chunk and ``rec`` its records. The
    replicate and record interval with the earliest bad value are found from the records; that
    replicate is advanced to the start of the interval, then replayed process by process.
    """
    guard = guard or BIO_GUARD
    r, t, cell, quantity, value = guard.first_bad(rec)
    s_r = jax.tree_util.tree_map(lambda x: x[r], state)
    if not batched_params:
        p_r = params
    elif guard.take_params is not None:
        p_r = guard.take_params(params, r)
    else:
        p_r = jax.tree_util.tree_map(lambda x: x[r], params)
    error = None
    try:
        if t:
            s_r = guard.advance(s_r, p_r, keys[r], t * record_every)
        error = diagnose(s_r, p_r, keys[r], chunk_start + t * record_every, record_every, guard=guard)
    except Exception:  # the replay is a diagnosis aid: never let it hide the failure itself
        error = None
    if error is None:  # not reproduced step by step: report what the records show
        error = guard.error(
            chunk_start + (t + 1) * record_every - 1, cell, quantity,
            f"unknown (seen at the record after step {chunk_start + (t + 1) * record_every - 1})", value,
        )
    return guard.error(error.step, error.cell, error.species, error.process, error.value, first_replicate + r)


BIO_GUARD = Guard(
    first_bad=_first_bad_pool,
    inspect=_bad_pool_in_state,
    processes=lambda: PROCESSES,  # (the module global at call time: tests patch it)
    advance=lambda *args: _advance(*args),
)


_EXECUTABLES: dict = {}
COMPILE_COUNT = [0]  # executables built by this process (tests assert sweeps do not add to it)


def _signature(tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((np.shape(x), jnp.asarray(x).dtype.name) for x in leaves)


CACHE_CLEARERS: list[Callable] = []  # other engines' compiled caches (sim.llm.engine registers its own)


def clear_caches() -> None:
    """Forget compiled executables (tests that patch the step functions call this)."""
    _EXECUTABLES.clear()
    _compiled.cache_clear()
    for clear in CACHE_CLEARERS:
        clear()


def cached_executable(key, build: Callable):
    """``build()`` (a lowered-and-compiled function) once per ``key`` in this process.

    Returns (executable, seconds spent compiling now: 0 when it was cached)."""
    hit = _EXECUTABLES.get(key)
    if hit is not None:
        return hit, 0.0
    t0 = time.perf_counter()
    compiled = build()
    COMPILE_COUNT[0] += 1
    _EXECUTABLES[key] = compiled
    return compiled, time.perf_counter() - t0


def signature_key(*trees) -> tuple:
    """Shapes, dtypes and tree structure of ``trees``: what decides whether XLA must recompile."""
    return tuple(_signature(t) for t in trees)


def executable(chunk: int, record_every: int, batched_params: bool, state, params, keys):
    """The compiled chunk function for these shapes and dtypes, built once per process.

    Parameter *values* are arguments, not constants, so a sweep over them reuses one executable;
    only a change of shapes (cells, slots, edges, replicates), dtypes or chunk length compiles.
    Returns (executable, seconds spent compiling now: 0 when it was cached).
    """
    from sim.kernels import ops

    step_module = sys.modules["sim.kernels.step"]  # (the package attribute `step` is the function)
    processes = tuple(id(fn) for _, fn in step_module.PROCESSES)  # a patched step is a new program
    fixed = ops.FIXED_ORDER[0]
    key = ("bio", chunk, record_every, batched_params, processes, fixed, signature_key(state, params, keys))
    return cached_executable(
        key, lambda: _compiled(chunk, record_every, batched_params, fixed).lower(state, params, keys).compile()
    )


def drive_chunks(compiled, state, params, keys, *, n_chunks: int, chunk: int, record_every: int, fields,
                 check: Callable, compile_s: float, start_step: int = 0,
                 on_chunk: Callable | None = None, checkpoint: Callable | None = None) -> RunResult:
    """The host loop shared by the biology and LLM engines: run ``n_chunks`` calls of a compiled
    chunk, stop at the first chunk for which ``check(state_at_chunk_start, records, steps_done)``
    returns an error (keeping every earlier chunk), then stack the records of ``fields``."""
    out: dict[str, list] = {k: [] for k in fields}
    error = None
    done = 0
    t1 = time.perf_counter()
    for _ in range(n_chunks):
        new_state, rec = compiled(state, params, keys)
        rec = jax.device_get(rec)
        error = check(state, rec, done)
        if error is not None:
            break
        state = new_state
        for k in fields:
            out[k].append(rec[k])
        done += chunk * record_every
        if on_chunk is not None:
            on_chunk(state, done, keys)
        if checkpoint is not None:
            checkpoint(state, done, keys, rec)
    jax.block_until_ready(state)
    wall = time.perf_counter() - t1
    records = {k: (np.concatenate(v, axis=1) if v else None) for k, v in out.items()}
    dt = float(np.asarray(params.dt).reshape(-1)[0])
    times = (start_step + np.arange(1, done // record_every + 1) * record_every) * dt
    return RunResult(state, records, times, done, wall, compile_s, error)


def run(
    state0,
    params,
    *,
    seed: int,
    steps: int,
    record_every: int,
    replicates: int = 1,
    chunk_records: int = 200,
    batched_params: bool = False,
    first_replicate: int = 0,
    on_chunk: Callable | None = None,
    start_step: int = 0,
    keys=None,
    checkpoint: Callable | None = None,
) -> RunResult:
    """Run ``steps`` steps of ``replicates`` replicates; ``state0`` is unbatched unless it has a
    leading replicate axis already (resume). Stops at the first bad chunk, keeping earlier ones.

    After each good chunk ``on_chunk(state, steps_done, keys)`` and
    ``checkpoint(state, steps_done, keys, chunk_records)`` are called (``steps_done``: steps of
    this call, after ``start_step``). Resuming passes the checkpointed batched state, its ``keys`` and
    ``start_step``; with the same chunk length the continuation is bit-identical."""
    if steps % record_every:
        raise ValueError("steps must be a multiple of record_every")
    n_records = steps // record_every
    state = state0
    if np.ndim(state0.step) == 0:
        state = broadcast_state(state0, replicates)
    if keys is None:
        keys = replicate_keys(seed, replicates, first_replicate)
    chunk = chunk_length(n_records, chunk_records)
    compiled, compile_s = executable(chunk, record_every, batched_params, state, params, keys)

    def check(chunk_state, rec, done):
        if _first_bad_pool(rec) is not None:
            return locate_failure(
                chunk_state, params, keys, rec, record_every, start_step + done, batched_params, first_replicate
            )
        return None

    return drive_chunks(
        compiled, state, params, keys, n_chunks=n_records // chunk, chunk=chunk, record_every=record_every,
        fields=RECORD_FIELDS, check=check, compile_s=compile_s, start_step=start_step,
        on_chunk=on_chunk, checkpoint=checkpoint,
    )
