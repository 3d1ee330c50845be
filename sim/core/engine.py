"""The engine, written once for every substrate: ``jit(vmap(scan))`` over steps and replicates.

A run is ``lax.scan`` over record intervals, each an inner ``lax.scan`` of ``record_every`` steps of
``substrate.step`` (vmapped over the replicates inside the scan: :func:`chunk_function`); the
host loops over chunks of records so long runs can report progress, be checked by the numerical
guard, and checkpoint. Replicate ``r`` draws from
``fold_in(PRNGKey(seed), r)`` (:func:`sim.rng.replicate_keys`), so it is the same whether it runs
alone or in a batch. The chunk length is a divisor of the number of records, so a whole run
compiles exactly once, and a sweep over parameter *values* (arguments, not constants) reuses the
executable: only a new substrate, new shapes/dtypes, a new chunk length or another reduction order
compiles (:class:`ExecutableCache`, keyed on exactly those).

The guard (:func:`check_chunk`): after every chunk the substrate's ``invariants`` are evaluated on
the records (and, for monotone ledgers, on each record against the one before, the first against
the chunk's starting state). The first chunk with a bad entry stops the run, keeping every earlier
chunk; the replicate and record interval that went bad first are replayed process by process
(each process jitted on its own) and the :class:`~sim.errors.NumericalError` names step,
replicate, compartment, quantity and process.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import uuid
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sim.errors import NumericalError
from sim.core import codegen, executable_store, known, ops, rare_events, sharding
from sim.rng import replicate_keys

# ------------------------------------------------------------------------------ small helpers


def broadcast_state(state, replicates: int):
    """An unbatched state repeated along a new leading replicate axis.

    Broadcast in numpy and put on the device in one call: ``jnp.broadcast_to`` leaf by leaf compiled
    and dispatched a small program per leaf (~0.3 s of a warm start-up for the biology state's 72
    leaves); the arrays, dtypes and weak types are the same."""
    return jax.device_put(jax.tree_util.tree_map(
        lambda x: np.broadcast_to(np.asarray(x), (replicates,) + np.shape(x)), state))


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


def take(tree, r: int, axes=0):
    """Replicate ``r`` of a PyTree batched along ``axes`` (an ``in_axes`` prefix: 0, None or a tree)."""
    if axes is None:
        return tree
    if axes == 0:
        return jax.tree_util.tree_map(lambda x: x[r], tree)
    return jax.tree_util.tree_map(lambda a, x: x if a is None else x[r], axes, tree,
                                  is_leaf=lambda a: a is None)


@dataclasses.dataclass
class RunResult:
    state: object  # final batched state (jax or numpy arrays)
    records: dict  # name -> np.ndarray (replicate, time, cell, ...)
    times: np.ndarray  # s, the time of each record
    steps_done: int
    wall_s: float
    compile_s: float
    error: Exception | None = None


# ------------------------------------------------------------------------------ compiled chunks


FIRST_BAD_STEP = "_first_bad_step"  # record key: the first step of the interval whose state failed step_check (-1: none)


def scan_records(step_fn, observe_fn, state, params, key, n_records: int, record_every: int, check_fn=None):
    """``n_records`` x (``record_every`` steps of ``step_fn``, then ``observe_fn``): one chunk.

    With ``check_fn`` (a substrate's cheap per-step check, traced) every step's state is checked, and
    each record also holds :data:`FIRST_BAD_STEP`, so a bad value that later steps smooth away before
    the record is still caught."""

    def inner(carry, _):
        s, first = carry
        s = step_fn(s, params, key)
        if check_fn is not None:
            first = jnp.where((first < 0) & check_fn(s), s.step - 1, first)
        return (s, first), None

    def outer(s, _):
        # -1 per row: a scalar here, one per replicate when the step is vmapped (chunk_function)
        no_bad = jnp.full(jnp.shape(s.step), -1, jnp.asarray(s.step).dtype)
        (s, first), _ = jax.lax.scan(inner, (s, no_bad), None, length=record_every)
        obs = observe_fn(s)
        if check_fn is not None:
            obs = {**obs, FIRST_BAD_STEP: first}
        return s, obs

    return jax.lax.scan(outer, state, None, length=n_records)


def chunk_function(step_fn, observe_fn, *, n_records: int, record_every: int, check_fn=None, params_axes=None):
    """One chunk of the engine for a batch of replicates (or parameter points): a function of
    ``(states, params, keys)``, each state and key with a leading batch axis, ``params`` batched
    along ``params_axes`` (``jax.vmap``'s ``in_axes`` for it; None: shared). The same numbers as
    ``jax.vmap(scan_records, in_axes=(0, params_axes, 0))`` (bit for bit) and the same outputs
    (final states, records with the batch axis first), written as the scan of a vmapped step:
    ``vmap(scan)`` traced the step once for the scan and then batched the traced program again
    equation by equation (biology chunk at 1,000 cells: trace + lowering 1.10 -> 0.72 s, issue 10).
    """
    vstep = jax.vmap(step_fn, in_axes=(0, params_axes, 0))
    vcheck = None if check_fn is None else jax.vmap(check_fn)

    def chunk(state, params, keys):
        final, records = scan_records(vstep, jax.vmap(observe_fn), state, params, keys, n_records=n_records,
                                      record_every=record_every, check_fn=vcheck)
        return final, jax.tree_util.tree_map(lambda x: jnp.moveaxis(x, 0, 1), records)  # (batch, record, ...)

    # the compiled module's name, as under vmap(scan_records) (JAX's cache and trace events name it)
    chunk.__name__ = chunk.__qualname__ = "scan_records"
    return chunk


def _placement(x):
    """The sharding of an array spread over several devices (None for one device or host memory):
    an executable compiled for one placement cannot run arrays laid out another way."""
    sharding = getattr(x, "sharding", None)
    if sharding is None or len(sharding.device_set) <= 1:
        return None
    return sharding


def dtype_name(x) -> str:
    """The dtype a leaf has inside a jitted program (``jnp.asarray(x).dtype``), without copying an
    array to the device for it (that took 0.2 s of a warm start-up for the ~100 leaves of a tissue)."""
    if hasattr(x, "dtype"):
        return jax.dtypes.canonicalize_dtype(x.dtype).name
    return jnp.asarray(x).dtype.name


def _signature(tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((np.shape(x), dtype_name(x), _placement(x)) for x in leaves)


def signature_key(*trees) -> tuple:
    """Shapes, dtypes, placements and tree structure of ``trees``: what decides whether XLA must
    recompile."""
    return tuple(_signature(t) for t in trees)


class ExecutableCache:
    """Compiled executables of this process, keyed on what changes the program.

    The key holds the substrate itself (identity: a changed substrate is another program), the
    chunk length and record interval, the parameter batching, the reduction order, the shapes
    and dtypes of the arguments and what the substrate knows from the parameters' values
    (:mod:`sim.core.known`). ``compiles`` counts executables this process added (tests assert
    that a sweep of same-shaped configs adds none); of them, ``traced`` were traced, lowered and
    compiled here and ``loaded`` came whole from the disk store (:mod:`sim.core.executable_store`)."""

    def __init__(self):
        self._table: dict = {}
        self.compiles = 0
        self.traced = 0
        self.loaded = 0

    def get(self, key, build: Callable):
        """``build()`` once per ``key``; returns (executable, seconds spent compiling now)."""
        hit = self._table.get(key)
        if hit is not None:
            return hit, 0.0
        t0 = time.perf_counter()
        compiled = build()
        self.compiles += 1
        self._table[key] = compiled
        return compiled, time.perf_counter() - t0

    def clear(self) -> None:
        self._table.clear()


CACHE = ExecutableCache()


def _axes_key(axes):
    """A hashable form of an ``in_axes`` prefix."""
    if axes is None or isinstance(axes, int):
        return axes
    leaves, treedef = jax.tree_util.tree_flatten(axes, is_leaf=lambda a: a is None)
    return treedef, tuple(leaves)


def _renamed(fn, name: str):
    """``fn`` under another name (JAX names the compiled module, and keys its cache, after it)."""
    def chunk(state, params, key):
        return fn(state, params, key)

    chunk.__name__ = chunk.__qualname__ = name
    return chunk


def chunk_executable(substrate, chunk: int, record_every: int, params_axes, fixed_order: bool,
                     state, params, keys, layout=None, width: int = codegen.NARROW):
    """The compiled ``jit(vmap(scan))`` of one chunk for these shapes; built once per process.
    ``layout``: rows split over several devices (:class:`sim.core.sharding.Layout`), None for one;
    ``width``: the CPU vector width of its code (:mod:`sim.core.codegen`)."""
    facts = tuple(substrate.known(params))  # read on the host from the concrete parameters (sim.core.known)
    key = (substrate, chunk, record_every, _axes_key(params_axes), bool(fixed_order),
           signature_key(state, params, keys), facts, int(width), None if layout is None else layout.key)
    extra = codegen.compile_options(width)

    stored = []  # the store key, computed on an in-process miss only

    def trace_and_compile(name=None):
        """(executable, whether JAX's persistent cache served it: None when that cannot be told)."""
        fn = chunk_function(substrate.step, substrate.observe, n_records=chunk, record_every=record_every,
                            check_fn=substrate.step_check, params_axes=params_axes)
        if name is not None:
            fn = _renamed(fn, name)
        shard = {} if layout is None else layout.jit_kwargs(state, params, keys, params_axes)
        jitted = jax.jit(fn, **shard)
        # rows on several devices: the rare events as dense passes (rare_events.dense); the key
        # above holds the placement, so one program per choice
        spread = layout is not None or any(_placement(x) is not None for x in jax.tree_util.tree_leaves((state, keys)))
        with ops.reduction_order(fixed_order), rare_events.dense(spread), known.tracing(facts):  # read while tracing
            lowered = jitted.lower(state, params, keys)
        hits = executable_store.jax_cache_hits()
        compiled = ops.compile_lowered(lowered, extra)  # XLA options: ops.COMPILE_OPTIONS and the width
        after = executable_store.jax_cache_hits()
        CACHE.traced += 1
        return compiled, (None if hits is None or after is None else after != hits)

    def compile_and_store():
        compiled, from_jax_cache = trace_and_compile()
        if stored[0] is not None and from_jax_cache is not None:
            if from_jax_cache:
                # XLA:CPU cannot serialise an executable JAX's cache deserialised (the copy loads, then
                # fails: "Function ... not found"): compile a fresh one to store, under a name no cache
                # entry has (once per program and folder, when the store lost a file JAX still has)
                compiled, _ = trace_and_compile(f"scan_records_{uuid.uuid4().hex[:12]}")
            executable_store.save(stored[0], compiled)
        return compiled

    def build():
        # a warm process loads the whole executable from disk and traces nothing (None: the store is
        # off, or this program has no safe key, e.g. a substrate value without a stable token)
        stored.append(executable_store.program_key(substrate, chunk=chunk, record_every=record_every,
                                                   params_axes=params_axes, fixed_order=fixed_order,
                                                   args=(state, params, keys), layout=layout,
                                                   compile_options=extra, known=facts))
        loaded = executable_store.load(stored[0])
        if loaded is not None:
            CACHE.loaded += 1
            return executable_store.FirstCallChecked(loaded, stored[0], compile_and_store)
        return compile_and_store()

    return CACHE.get(key, build)


# ------------------------------------------------------------------------------ the guard


def earliest_record(bad_rt: np.ndarray):
    """(replicate, record) of the earliest bad record, from a ``(R, T)`` mask (ties: lowest
    replicate), or None when nothing is bad."""
    if not bad_rt.any():
        return None
    n_t = bad_rt.shape[1]
    first_t = np.where(bad_rt.any(axis=1), bad_rt.argmax(axis=1), n_t)
    r = int(np.argmin(first_t))
    return r, int(first_t[r])


def _first(masks: dict, index=()):
    """(quantity, cell, value) of the first bad entry at ``index`` (the leading axes), or None."""
    for name, (bad, value) in masks.items():
        row = np.asarray(bad)[index]
        if row.any():
            c = int(np.argmax(row))
            return name, c, float(np.asarray(value)[index][c])
    return None


def first_bad(substrate, rec: dict, start_obs: dict | None):
    """(replicate, record, cell, quantity, value) of the earliest bad entry of a chunk's records
    (``(R, T, C, ...)``), or None. ``start_obs``: the observation at the chunk start ``(R, C, ...)``."""
    flagged = rec.get(FIRST_BAD_STEP)
    rec = {k: v for k, v in rec.items() if k != FIRST_BAD_STEP}
    previous = None
    if start_obs is not None:
        previous = {k: np.concatenate([np.asarray(start_obs[k])[:, None], np.asarray(rec[k])[:, :-1]], axis=1)
                    for k in rec}
    masks = substrate.invariants(rec, previous)
    any_rt = None if flagged is None else np.asarray(flagged) >= 0
    for bad, _ in masks.values():
        b = np.asarray(bad)
        b = b.reshape(b.shape[0], b.shape[1], -1).any(axis=2)
        any_rt = b if any_rt is None else any_rt | b
    if any_rt is None:
        return None
    hit = earliest_record(any_rt)
    if hit is None:
        return None
    r, t = hit
    seen = _first(masks, (r, t))
    if seen is None:  # only the per-step check saw it: the replay of the interval names it
        step = int(np.asarray(flagged)[r, t])
        return r, t, 0, f"a value the per-step check refused at step {step}", float("nan")
    name, c, value = seen
    return r, t, c, name, value


@functools.lru_cache(maxsize=32)
def _observe_jit(substrate, batched: bool):
    fn = jax.vmap(substrate.observe) if batched else substrate.observe
    return jax.jit(fn)


@functools.lru_cache(maxsize=32)
def _process_jit(substrate, fixed_order: bool):
    """Each process of the step jitted on its own (a replay runs them one at a time)."""
    out = []
    for name, fn in substrate.processes:
        def traced(state, params, key, _fn=fn):
            with ops.reduction_order(fixed_order):
                return _fn(state, params, key)
        out.append((name, jax.jit(traced)))
    return tuple(out)


@functools.lru_cache(maxsize=32)
def _advance_jit(substrate, fixed_order: bool):
    def advance(state, params, key, n_steps):
        with ops.reduction_order(fixed_order):
            return jax.lax.fori_loop(0, n_steps, lambda i, s: substrate.step(s, params, key), state)

    return jax.jit(advance)


def make_error(substrate, step: int, cell: int, quantity: str, process: str, value: float, replicate: int = 0):
    return NumericalError(step, cell, quantity, process, value, replicate, compartment=substrate.compartment)


def diagnose(substrate, state, params, key, start_step: int, n_steps: int, fixed_order: bool = False):
    """Replay ``n_steps`` steps of one replicate process by process; the first process after which
    an invariant fails is named (None if nothing goes bad)."""
    observe = _observe_jit(substrate, False)
    processes = _process_jit(substrate, fixed_order)
    obs = jax.device_get(observe(state))
    for _ in range(n_steps):
        step_no = int(np.asarray(state.step))
        for name, process in processes:
            state = process(state, params, key)
            new = jax.device_get(observe(state))
            hit = _first(substrate.invariants(new, obs))
            obs = new
            if hit is not None:
                quantity, cell, value = hit
                return make_error(substrate, step_no, cell, quantity, name, value)
        state = dataclasses.replace(state, step=state.step + 1)
    return None


def check_chunk(substrate, chunk_state, rec, params, keys, *, record_every: int, chunk_start: int,
                params_axes=None, first_replicate: int = 0, fixed_order: bool = False, start_obs=None):
    """The guard of one chunk: None, or the error naming step, replicate, cell, quantity, process.

    ``chunk_state`` is the (batched) state at the start of the chunk and ``rec`` its records;
    ``start_obs`` the observation of ``chunk_state`` (the previous chunk's last record; observed here
    when None, for the first chunk of a call). The replicate and record interval with the earliest
    bad value are found from the records; that replicate is advanced to the start of the interval,
    then replayed process by process."""
    if start_obs is None:
        start_obs = jax.device_get(_observe_jit(substrate, True)(chunk_state))
    hit = first_bad(substrate, rec, start_obs)
    if hit is None:
        return None
    r, t, cell, quantity, value = hit
    # (on the host: the replay runs on one device whatever the run's layout)
    s_r, p_r = jax.device_get((take(chunk_state, r), take(params, r, params_axes)))
    key_r = jax.device_get(keys[r])
    error = None
    try:
        if t:
            s_r = _advance_jit(substrate, fixed_order)(s_r, p_r, key_r, t * record_every)
        error = diagnose(substrate, s_r, p_r, key_r, chunk_start + t * record_every, record_every, fixed_order)
    except Exception:  # the replay is a diagnosis aid: never let it hide the failure itself
        error = None
    if error is None:  # not reproduced step by step: report what the records show
        last = chunk_start + (t + 1) * record_every - 1
        error = make_error(substrate, last, cell, quantity, f"unknown (seen at the record after step {last})", value)
    return make_error(substrate, error.step, error.cell, error.quantity, error.process, error.value,
                      first_replicate + r)


# ------------------------------------------------------------------------------ the host loop


def drive_chunks(compiled, state, params, keys, *, n_chunks: int, chunk: int, record_every: int, fields,
                 check: Callable, compile_s: float, dt: float, start_step: int = 0,
                 on_chunk: Callable | None = None, checkpoint: Callable | None = None) -> RunResult:
    """Run ``n_chunks`` calls of a compiled chunk, stop at the first chunk for which
    ``check(state_at_chunk_start, records, steps_done, previous)`` returns an error (keeping every
    earlier chunk; ``previous``: the last record of the chunk before, None for the first), then
    stack the records of ``fields``."""
    out: dict[str, list] = {k: [] for k in fields}
    error, previous = None, None
    done = 0
    t1 = time.perf_counter()
    for _ in range(n_chunks):
        new_state, rec = compiled(state, params, keys)
        rec = jax.device_get(rec)
        error = check(state, rec, done, previous)
        if error is not None:
            break
        state = new_state
        for k in fields:
            out[k].append(rec[k])
        previous = {k: rec[k][:, -1] for k in fields}  # the observation of the next chunk's start state
        done += chunk * record_every
        if on_chunk is not None:
            on_chunk(state, done, keys)
        if checkpoint is not None:
            checkpoint(state, done, keys, {k: rec[k] for k in fields})
    jax.block_until_ready(state)
    wall = time.perf_counter() - t1
    records = {k: (np.concatenate(v, axis=1) if v else None) for k, v in out.items()}
    times = (start_step + np.arange(1, done // record_every + 1) * record_every) * dt
    return RunResult(state, records, times, done, wall, compile_s, error)


def run(substrate, state0, params, *, seed: int, steps: int, record_every: int, replicates: int = 1,
        chunk_records: int = 200, batched_params: bool = False, first_replicate: int = 0,
        on_chunk: Callable | None = None, start_step: int = 0, keys=None,
        checkpoint: Callable | None = None, fixed_order: bool | None = None, devices=None,
        vector_width=None) -> RunResult:
    """Run ``steps`` steps of ``replicates`` replicates of ``substrate``.

    ``state0`` is unbatched unless it has a leading replicate axis already (resume). With
    ``batched_params`` the parameter PyTree holds one point per replicate along the axes
    ``substrate.params_axes(params)``. Replicate ``r`` of the call draws as replicate
    ``first_replicate + r`` of the seed's ensemble. After each good chunk
    ``on_chunk(state, steps_done, keys)`` and ``checkpoint(state, steps_done, keys, chunk_records)``
    are called (``steps_done``: steps of this call, after ``start_step``); resuming passes the
    checkpointed batched state, its ``keys`` and ``start_step``, and with the same chunk length the
    continuation is bit-identical. ``fixed_order``: fixed-order reductions (bitwise batch
    invariance, :mod:`sim.determinism`); None takes the process's configured choice. ``devices``:
    ``1``, ``"auto"`` or N, the rows split over that many devices (:mod:`sim.core.sharding`); None
    takes the process's configured choice. ``vector_width``: ``"auto"``, 256 or 512, the CPU vector
    width of the compiled code (:mod:`sim.core.codegen`: auto is 512 when the run is long and large
    enough to pay for the longer compile; the same numbers either way); None takes the process's
    configured choice. Stops at the first bad chunk, keeping the earlier ones (``RunResult.error``)."""
    if steps % record_every:
        raise ValueError("steps must be a multiple of record_every")
    if fixed_order is None:
        from sim import determinism

        fixed_order = determinism.current().fixed_order_sums
    n_records = steps // record_every
    state = broadcast_state(state0, replicates) if np.ndim(state0.step) == 0 else state0
    if keys is None:
        keys = replicate_keys(seed, replicates, first_replicate)
    axes = substrate.params_axes(params) if batched_params else None
    chunk = chunk_length(n_records, chunk_records)
    layout = sharding.layout(sharding.current() if devices is None else devices, int(np.shape(state.step)[0]))
    if layout is not None:  # rows spread over several devices
        state, params, keys = layout.place(state, params, keys, axes)
    width = codegen.choose(codegen.current() if vector_width is None else vector_width, steps, state)
    compiled, compile_s = chunk_executable(substrate, chunk, record_every, axes, fixed_order, state, params, keys,
                                           layout, width)

    def check(chunk_state, rec, done, previous):
        return check_chunk(substrate, chunk_state, rec, params, keys, record_every=record_every,
                           chunk_start=start_step + done, params_axes=axes, first_replicate=first_replicate,
                           fixed_order=fixed_order, start_obs=previous)

    dt = float(np.asarray(params.dt).reshape(-1)[0])
    return drive_chunks(compiled, state, params, keys, n_chunks=n_records // chunk, chunk=chunk,
                        record_every=record_every, fields=substrate.record_fields, check=check,
                        compile_s=compile_s, dt=dt, start_step=start_step, on_chunk=on_chunk,
                        checkpoint=checkpoint)


def clear_caches() -> None:
    """Forget compiled executables and jitted replay functions."""
    CACHE.clear()
    _observe_jit.cache_clear()
    _process_jit.cache_clear()
    _advance_jit.cache_clear()
