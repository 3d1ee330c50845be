"""Independent rare events in the slots of a row, drawn from ONE uniform per row (issue 10).

A row (a cell) has S slots (its producers); in one step slot s has the event (fails) with
probability p_s = 1 - exp(-lambda_s dt), independently of the others. Drawing one uniform per slot
costs S Threefry hashes and S expm1 per row and step although almost no row has an event. Here a
row draws one uniform u and the pattern is taken from u alone, exactly (in distribution: every
pattern has probability prod_{s in it} p_s prod_{s not in it} (1 - p_s)):

1. Some slot of the row has the event iff u < q, q = 1 - prod (1 - p_s) = 1 - exp(-Lambda dt),
   Lambda = sum lambda_s (the slots are independent).
2. Given that, v = u / q is uniform on [0, 1) and independent of it. The slots are decided in slot
   order, each from v, which is then rescaled to a fresh uniform (``v / c`` if the slot had the event,
   ``(v - c) / (1 - c)`` if not; the standard reuse of a uniform's unused bits). Before the first
   event the probability of slot s is conditional on at least one event among slots s..S-1:
   c_s = p_s / r_s with r_s = 1 - exp(-R_s dt), R_s = sum_{t >= s} lambda_t (suffix sums); after
   it, c_s = p_s. (P(s | some t >= s) = p_s / r_s because {s} implies {some t >= s}.)

Step 1 needs Lambda. A cheaper upper bound Lambda <= Lambda_max (e.g. S times the largest hazard a
slot of the row can have) decides most rows without it: u >= 1 - exp(-Lambda_max dt) means no
event, and only the rare candidate rows below the bound are resolved exactly
(:func:`resolve_candidates`: a while loop over windows of candidate rows, so the per-row work is
one hash, one exp and one compare). Whether a row is a candidate never changes its outcome: the
outcome is a function of u and the exact rates alone, so a reference that resolves every row
gets the same pattern.

Precision: a slot with the event divides v by c_s, spending -log2(c_s) of its 53 bits; before the
first event c_s >= 1/S-ish, and a second event in one row and step is itself rare (p_s ~ 1e-7 in the
biology preset), so the bits that remain are ample. Sums run in slot order from the last slot in
every implementation (JAX, numpy, the plain-Python reference), so they round alike.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sim.core.ops import materialize, trace_setting

WINDOW = 256  # rows resolved per trip of the candidate loop (32 and 256 cost the same at rest; 256 is
# 2-3x cheaper than 32 when hazards are extreme and most cells are candidates)
BOUND_MARGIN = 1.0 + 1e-9  # the bound is inflated so rounding in exp or in the sum can never undercut it


def bound_probability(rate_bound, dt, xp=jnp):
    """Probability of at least one event in a row whose total rate is at most ``rate_bound`` (1/s),
    slightly inflated: ``u >= bound_probability(...)`` proves the row has no event this step."""
    return -xp.expm1(-(rate_bound * BOUND_MARGIN) * dt)


def pattern(u, rates, dt, pending=None, xp=jnp):
    """Which slots have the event, from one uniform per row (the module docstring's scheme).

    ``u`` (N,) uniforms in [0, 1); ``rates`` (N, S) hazards >= 0 (1/s; 0 for an empty slot); ``dt``
    (s); ``pending`` (N,) bool, rows to decide (others get no event); ``xp``: ``jax.numpy`` or
    ``numpy`` (the reference and the numpy baseline call the same code). Returns (N, S) bool.
    The slots are visited in order by a loop (``lax.scan`` over slot-major columns in JAX: unrolled,
    XLA would recompute every earlier slot's decision inside each later one's kernel)."""
    one = xp.ones_like(u)
    below_one = xp.nextafter(one, 0.0 * one)  # rounding must never push v to 1
    cols = rates.T  # slot-major: each slot's rates contiguous
    # suffix sums R_s, summed from the last slot in every implementation so they round alike
    _, suffix = _scan(lambda acc, r: (r + acc, r + acc), xp.zeros_like(u), cols, xp, reverse=True)
    q = -xp.expm1(-suffix[0] * dt)
    hit = u < q
    if pending is not None:
        hit = hit & pending
    v = u / xp.where(q > 0, q, one)

    def slot(carry, rate_and_suffix):
        v, found = carry
        rate, suffix_s = rate_and_suffix
        p_s = -xp.expm1(-rate * dt)
        r_s = -xp.expm1(-suffix_s * dt)
        cond = xp.where(r_s > 0, p_s / xp.where(r_s > 0, r_s, one), 0.0 * one)
        c = xp.where(found, p_s, xp.minimum(cond, one))
        event = hit & (v < c)
        v = xp.where(event, v / xp.where(c > 0, c, one), (v - c) / xp.where(c < 1, 1.0 - c, one))
        return (xp.minimum(v, below_one), found | event), event

    _, events = _scan(slot, (v, xp.zeros_like(hit)), (cols, suffix), xp)
    return events.T


def _scan(fn, init, xs, xp, reverse: bool = False):
    """``jax.lax.scan`` over the leading axis of ``xs`` (a tuple or an array), or the same loop in
    Python for numpy: ``(final carry, stacked outputs)``."""
    if xp is jnp:
        return jax.lax.scan(fn, init, xs, reverse=reverse)
    n = (xs[0] if isinstance(xs, tuple) else xs).shape[0]
    carry, out = init, [None] * n
    for i in (range(n - 1, -1, -1) if reverse else range(n)):
        carry, out[i] = fn(carry, tuple(x[i] for x in xs) if isinstance(xs, tuple) else xs[i])
    return carry, np.stack(out)


_DENSE = [False]  # read while tracing: see dense()


def dense(on: bool = True):
    """Trace :func:`resolve_candidates` inside as ONE pass of ``resolve_window`` over every row (no
    loop): the engine does so for rows spread over several devices (``sim.core.engine``), where a
    candidate loop over the rows of every replicate gathers them across devices on each trip (two
    forced host devices ran at 0.76x of one with the loops, 0.95x with dense passes, 100 cells x 64
    replicates). The same bits: rows are independent, so a window of all of them is a window."""
    return trace_setting(_DENSE, bool(on))


def resolve_candidates(candidates, rows, carry, resolve_window, window: int = WINDOW):
    """Resolve every candidate row exactly once, a window of rows at a time.

    ``candidates`` (N,) bool; ``rows``: a pytree of read-only per-row arrays (leading axis N; a
    per-replicate scalar must be broadcast to (N,) by the caller); ``carry``: a pytree of per-row
    arrays updated in place; ``resolve_window(rows_w, carry_w, pending) -> carry_w`` works on a
    window of rows (leading axis ``w``) and must treat rows independently: ``pending`` (w,) marks
    the unresolved candidates in it. While a block of ``window`` rows holds a candidate, the first
    such block is resolved (the last window clamped so it fits) and its flag cleared. A
    step without candidates costs one pass over the mask.
    Derivatives: a float carry leaf passes its tangent through, so what a window adds to it must be
    piecewise constant in the inputs (a count of events); events carry no derivative.

    Under ``vmap`` (replicates, parameter points) the batch is folded into the rows (R x N rows,
    one loop), so a trip serves the candidates of whichever replicates have them instead of one
    window of every replicate, and no full-size select of the carry is made per trip: as a plain
    batched loop it made the failure process of 256 replicates of 100 cells 3.2x slower per agent
    than one 25,600-cell replicate (``bench/bench_ensemble.py --by-process``).

    Cost: one pass over the mask per call (a flag per block of ``window`` rows); a trip finds the
    next flagged block (``argmax`` over N / window flags) and resolves its ``window`` rows. At the
    biology preset's rates a step has ~3e-6 candidates per cell, so the loop almost never runs; with
    extreme hazards (every cell a candidate) it takes N / window trips. A second, dense pass for
    that case (a loop run once or not at all) cost 7% of the step at rest and was dropped."""
    if _DENSE[0]:
        return resolve_window(rows, carry, candidates)
    return _resolver(resolve_window, int(window))(candidates, rows, carry)


def _resolver(resolve_window, window: int):
    def loop(candidates, rows, carry):
        n = candidates.shape[0]
        w = min(window, n)
        nb = -(-n // w)
        # one flag per block of w rows, from one pass over the mask: a trip then looks for the next
        # block in nb flags instead of the next candidate in n rows (with births at ~1e-4 per cell and
        # step a 100,000-cell tissue takes ~16 trips a step, each reading the whole mask twice)
        padded = jnp.pad(candidates, (0, nb * w - n)) if nb * w != n else candidates
        flags = jnp.any(padded.reshape(nb, w), axis=1)

        def body(state):
            flags, c = state
            b = jnp.argmax(flags)
            # the first block with a candidate; the last window is clamped to fit, and its rows of the
            # block before (resolved already: blocks go in order) are not pending again. Rows are
            # independent, so how they are grouped into windows changes no bit. The mask is only read
            # (a mask updated in the loop was copied whole on every trip)
            start = jnp.minimum(b * w, n - w)
            pending = jax.lax.dynamic_slice_in_dim(candidates, start, w) & (start + jnp.arange(w) >= b * w)
            rows_w = jax.tree_util.tree_map(lambda x: jax.lax.dynamic_slice_in_dim(x, start, w), rows)
            # each carry window read by one kernel: when several kernels read a window of a carry leaf
            # and not all of them feed its update, XLA copies the whole leaf (twice) on every trip
            carry_w = jax.tree_util.tree_map(lambda x: _window(x, start, w), c)
            new_w = resolve_window(rows_w, carry_w, pending)
            c = jax.tree_util.tree_map(lambda x, y: jax.lax.dynamic_update_slice_in_dim(x, y.astype(x.dtype), start, 0),
                                       c, new_w)
            return flags.at[b].set(False), c

        return jax.lax.while_loop(lambda state: jnp.any(state[0]), body, (flags, carry))[1]

    @jax.custom_batching.custom_vmap
    def resolve(candidates, rows, carry):
        return loop(candidates, rows, carry)

    @resolve.def_vmap
    def folded(axis_size, in_batched, candidates, rows, carry):
        def flat(x, batched):
            x = x if batched else jnp.broadcast_to(x, (axis_size,) + jnp.shape(x))
            return x.reshape((-1,) + x.shape[2:])

        args = (candidates, rows, carry)
        flat_args = jax.tree_util.tree_map(flat, args, tuple(in_batched))
        out = resolve(*flat_args)  # nested vmaps fold again, level by level
        n = jnp.shape(candidates)[-1]
        out = jax.tree_util.tree_map(lambda x: x.reshape((axis_size, n) + x.shape[1:]), out)
        return out, jax.tree_util.tree_map(lambda _: True, out)

    # derivatives: a float carry leaf passes its tangent through (what a window adds to it, e.g. a
    # count of events, is piecewise constant in every input); events themselves have none. Without
    # this rule jacfwd (vmap of jvp) would batch a jvp of the loop through the rule above.
    @jax.custom_jvp
    def resolve_diff(candidates, rows, carry):
        return resolve(candidates, rows, carry)

    @resolve_diff.defjvp
    def _jvp(primals, tangents):
        out = resolve(*primals)
        carry_dot = tangents[2]
        return out, jax.tree_util.tree_map(_pass_tangent, out, carry_dot)

    return resolve_diff


def _window(x, start, w: int):
    """Rows ``start .. start + w - 1`` of ``x``, written once by their own kernel (``ops.materialize``
    for floats and booleans; an integer through a divide by one that XLA cannot fold)."""
    x_w = jax.lax.dynamic_slice_in_dim(x, start, w)
    if jnp.issubdtype(x_w.dtype, jnp.integer):
        return x_w // (jnp.abs(jnp.sign(x_w)) | jnp.ones((), x_w.dtype))
    return materialize(x_w)


def _pass_tangent(out, tangent):
    if jnp.issubdtype(jnp.result_type(out), jnp.inexact):
        return tangent if not isinstance(tangent, jax.custom_derivatives.SymbolicZero) else jnp.zeros_like(out)
    return np.zeros(jnp.shape(out), jax.dtypes.float0)


__all__ = ["BOUND_MARGIN", "WINDOW", "bound_probability", "dense", "pattern", "resolve_candidates"]
