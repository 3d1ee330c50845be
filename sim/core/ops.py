"""Small array helpers shared by the kernels."""

from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np


def fixed_order_sum(x, axis: int = -1):
    """Sum over ``axis`` as a left-to-right chain of adds (x0 + x1) + x2 + ...

    XLA's CPU reduction emitter picks its accumulation order from the whole array shape, so
    ``jnp.sum`` over a small agent axis can differ in the last bit between a batch of 8 and a
    batch of 64 replicates. A chain of elementwise adds has one order whatever the batch, which
    keeps replicate ``k`` bit-identical alone and in a batch (and equal to a sequential loop).
    Meant for the short per-cell agent axes (producers, consumers); integers use ``jnp.sum``.
    """
    x = jnp.asarray(x)
    axis = axis % x.ndim
    n = x.shape[axis]
    if n == 0 or not jnp.issubdtype(x.dtype, jnp.floating):
        return jnp.sum(x, axis=axis)
    total = jax.lax.index_in_dim(x, 0, axis, keepdims=False)
    for i in range(1, n):
        total = total + jax.lax.index_in_dim(x, i, axis, keepdims=False)
    return total


# Off by default: fixed-order sums cost up to ~2.5x the step time on CPU (they defeat XLA's fused
# reductions). With them off, replicate k alone and in a batch agree to ~1e-15 relative, not
# bitwise. The engine traces a step inside ``reduction_order(True)`` when a run asks for
# ``deterministic_reductions`` and keys its compiled executables on that choice
# (``sim.core.engine``), so the choice is explicit per compiled program, never a process-wide switch.
_FIXED_ORDER = [False]


@contextlib.contextmanager
def trace_setting(cell: list, value):
    """Set the one-element list ``cell`` (a module's setting read while tracing) to ``value`` for the
    enclosed code, then back."""
    saved = cell[0]
    cell[0] = value
    try:
        yield
    finally:
        cell[0] = saved


def reduction_order(fixed: bool):
    """Trace the enclosed code with fixed-order (True) or XLA's fast (False) agent-axis sums."""
    return trace_setting(_FIXED_ORDER, bool(fixed))


@jax.custom_batching.custom_vmap
def any_in_batch(flag):
    """``flag`` (a bool scalar); under ``vmap``, whether it holds for any member of the batch,
    unbatched: a ``lax.cond`` on it stays one branch for the whole batch (a batched predicate would run
    both branches and select). For branches that agree wherever the cheaper one applies."""
    return flag


@any_in_batch.def_vmap
def _any_in_batch_vmap(axis_size, in_batched, flag):
    return (jnp.any(flag) if in_batched[0] else flag), False


def rowsum(x):
    """Sum over the per-cell agent axis (axis 1): XLA's reduction, or a fixed left-to-right order
    inside :func:`reduction_order` ``(True)`` (see :func:`fixed_order_sum`)."""
    if _FIXED_ORDER[0]:
        return fixed_order_sum(x, axis=1)
    return jnp.sum(x, axis=1)


def rowsums(*xs):
    """:func:`rowsum` of several same-shaped ``(C, K)`` arrays in one reduction: XLA reads the
    operands they are computed from once (one fused variadic reduction, ``lax.reduce`` of a tuple)
    instead of once per sum. Inside :func:`reduction_order` ``(True)`` each is the fixed
    left-to-right chain of :func:`fixed_order_sum`, bit for bit as :func:`rowsum` of each alone.

    Variadic, not a sum over the arrays stacked on a new last axis: XLA's CPU code for that reduce
    evaluates the stacked element per output column, recomputing what the columns share and
    vectorising poorly; the producers' four sums of the biology step were a fifth of its kernel
    time at 40,000 cells. Variadic, the step's metabolism took 2.2x less kernel time and 13 fewer
    B/agent/step (issue 10; ``bench/bench_step_work.py where``)."""
    if _FIXED_ORDER[0] or len(xs) == 1:
        return tuple(rowsum(x) for x in xs)
    return _variadic_rowsums(tuple(jnp.broadcast_arrays(*xs)))


@jax.custom_jvp
def _variadic_rowsums(xs):
    zeros = tuple(jnp.zeros((), x.dtype) for x in xs)
    return tuple(jax.lax.reduce(xs, zeros, lambda a, b: tuple(p + q for p, q in zip(a, b)), (1,)))


@_variadic_rowsums.defjvp
def _variadic_rowsums_jvp(primals, tangents):
    """A sum is linear: the tangents' row sums, each its own ``jnp.sum`` (JAX differentiates and
    transposes that, not a ``lax.reduce`` of a tuple); an integer operand's tangent is float0."""
    (xs,), (ts,) = primals, tangents
    out_t = tuple(np.zeros(x.shape[:1] + x.shape[2:], jax.dtypes.float0) if t.dtype == jax.dtypes.float0
                  else jnp.sum(t, axis=1) for x, t in zip(xs, ts))
    return _variadic_rowsums(xs), out_t


def materialize(x):
    """``x`` unchanged (every bit), written once by its own kernel: later kernels read it instead
    of each recomputing it from its operands. XLA's CPU pipeline drops optimization barriers
    before fusing and duplicates any cheap elementwise producer into every consumer fusion, which
    then all read that producer's operands (issue 10); it never duplicates a float divide, so
    ``x / one`` with ``one`` = 1 at run time (built from ``x`` elementwise: a scalar divisor would
    become a cheap multiply, a constant one would be folded; ``isnan`` keeps it finite) is
    computed once. The trick of ``sim.rng.uniforms``. Booleans go through ``uint8`` (1 byte) and an
    integer divide, which XLA does not duplicate either: ``x // (x | 1)`` is ``x`` for x in {0, 1}."""
    x = jnp.asarray(x)
    if x.dtype == jnp.bool_:
        b = x.astype(jnp.uint8)
        return (b // (b | jnp.uint8(1))) > 0
    return after(x, x)


def after(x, dep):
    """``x`` unchanged (every bit), written by a kernel that reads ``dep`` (``x``'s shape or one that
    broadcasts to it), so XLA runs ``dep``'s kernel first. XLA copies a loop state (a state leaf
    of the engine's scan) on every step when a kernel reads the old value and the kernel that
    writes the new one does not depend on it: it cannot prove the read comes first (issue 10).
    ``x / one`` with ``one`` = 1 built from ``dep`` elementwise: ``isnan`` keeps it 1 for every
    value, NaN and infinities included (0 * 0 + 1, 1 * 0 + 1), and XLA folds neither the product
    nor the divide."""
    x = jnp.asarray(x)
    one = jnp.isnan(dep).astype(x.dtype) * jnp.asarray(0.0, x.dtype) + jnp.asarray(1.0, x.dtype)
    return x / one


def per_step(xs, token):
    """``xs`` (a tuple of arrays) unchanged, as values of this step: what is computed from them stays
    in the step. State the step never changes (a producer's kind and capacity) is loop-invariant in
    the engine's scan, and XLA's while-loop-invariant code motion hoists everything computed from it
    alone out of the loop: each per-slot spread of a per-kind parameter (``kind`` int32 -> f64) and
    each mask becomes a wide array of the carry that every step then reads, several times the
    bytes of reading ``kind`` and ``vmax`` and spreading in the fusion (issue 10: 20 B per agent and
    step in the biology producers). An optimization barrier over ``xs`` and ``token`` (any array the
    step computes) ties them to the step; XLA's CPU pipeline drops the barrier after that pass, so
    fusion is unaffected and every bit is the same."""
    return jax.lax.optimization_barrier((tuple(xs), token))[0]


def prefix_sum(x, axis: int = 1):
    """Running sum along ``axis`` (``jnp.cumsum``) as a left-to-right chain of adds, out_k =
    out_(k-1) + x_k: the order XLA's CPU ``reduce-window`` adds in (so the same numbers), written
    as one elementwise kernel over the short per-cell slot axis instead of a reduce-window that
    sums every prefix anew (issue 10: ``bench/bench_step_work.py``). Every position carries its
    own chain (the adds past it are selected away, not added as zeros: ``-0.0`` stays), so no
    stack of the running sums is built: XLA's CPU code for a concatenate inside a fusion computes
    every operand in a branch per element, and LLVM had made the chains' kernel that pays
    initiations 3,013 lines of optimised IR, 284 without it (issue 10, round six)."""
    x = jnp.asarray(x)
    axis = axis % x.ndim
    n = x.shape[axis]
    if n == 0:
        return x
    pos = np.arange(n).reshape([n if a == axis else 1 for a in range(x.ndim)])  # numpy: constant masks
    total = jnp.broadcast_to(jax.lax.index_in_dim(x, 0, axis), x.shape)
    for k in range(1, n):
        total = jnp.where(pos >= k, total + jax.lax.index_in_dim(x, k, axis), total)
    return total


# XLA options the engine compiles a run's chunk with (issue 10). YNNPACK's CPU fusions take every
# row sum out of the loop fusion that computes its operand, so each operand is written to memory and
# read back: off, the biology step at 10,000 cells moves 642 instead of 782 bytes per agent over 153
# instead of 170 kernels and runs 1.44-1.47x faster (``bench/bench_step_work.py``). The option exists
# in jaxlib 0.10 and 0.12; one a jaxlib does not know is an error at compile time (not an abort at
# start-up, as an unknown ``XLA_FLAGS`` entry is), and the engine then compiles without it.
COMPILE_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
_UNSUPPORTED: set = set()


def compile_lowered(lowered, extra: dict | None = None):
    """``lowered.compile()`` with :data:`COMPILE_OPTIONS` and ``extra`` (e.g. the vector width,
    :mod:`sim.core.codegen`) as far as this jaxlib accepts them (an option it refuses is dropped,
    once per process)."""
    opts = {k: v for k, v in {**COMPILE_OPTIONS, **(extra or {})}.items() if k not in _UNSUPPORTED}
    while opts:
        try:
            return lowered.compile(dict(opts))
        except Exception as e:  # noqa: BLE001  (jaxlib's error type differs between versions)
            bad = [k for k in opts if k in str(e)]
            if "compile option" not in str(e) or not bad:
                raise
            for k in bad:
                _UNSUPPORTED.add(k)
                opts.pop(k)
    return lowered.compile()


def segment_sum(data, segment_ids, num_segments: int):
    """``jax.ops.segment_sum(data, segment_ids, num_segments=num_segments)``, the same numbers bit
    for bit, batched differently. Under the engine's ``vmap`` over replicates the ids (the edges) are
    shared and JAX's rule makes one scatter whose every update writes a window of R strided rows,
    fed by a transposed copy of the updates: at 256 replicates of 100 cells the biology step ran
    1.11-1.14x slower for it (``bench/bench_ensemble.py``). Here the replicate axis is a batching
    dimension of the scatter instead (``operand_batching_dims``), so each update is one contiguous
    row as in a single replicate of R x the cells, and each output still adds its rows in row order.
    Derivatives take ``jax.ops.segment_sum`` itself (the sum is linear in ``data``)."""
    return _segment_sum(num_segments, data, segment_ids)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _segment_sum(num_segments, data, segment_ids):
    @jax.custom_batching.custom_vmap
    def summed(data, segment_ids):
        return jax.ops.segment_sum(data, segment_ids, num_segments=num_segments)

    @summed.def_vmap
    def folded(axis_size, in_batched, data, segment_ids):
        data_b, ids_b = in_batched
        if not data_b:
            data = jnp.broadcast_to(data, (axis_size,) + data.shape)
        if not ids_b:
            segment_ids = jnp.broadcast_to(segment_ids, (axis_size,) + segment_ids.shape)
        # one scatter with the replicate axis as a batching dimension of both operand and indices
        dnums = jax.lax.ScatterDimensionNumbers(
            update_window_dims=tuple(range(2, data.ndim)), inserted_window_dims=(1,),
            scatter_dims_to_operand_dims=(1,), operand_batching_dims=(0,), scatter_indices_batching_dims=(0,))
        out = jnp.zeros((axis_size, num_segments) + data.shape[2:], data.dtype)
        return jax.lax.scatter_add(out, segment_ids[..., None], data, dnums,
                                   mode=jax.lax.GatherScatterMode.FILL_OR_DROP), True

    return summed(data, segment_ids)


@_segment_sum.defjvp
def _segment_sum_jvp(num_segments, primals, tangents):
    data, segment_ids = primals
    return (_segment_sum(num_segments, data, segment_ids),
            jax.ops.segment_sum(tangents[0], segment_ids, num_segments=num_segments))
