"""Pure kernels of the LLM preset, each ``(state, params, key) -> state``; no Python loops over agents.

One step, in this order (shared with ``sim.substrates.llm.reference``):

1. ``tools``: chains waiting on a tool count down; on return ``r_tool`` tokens are appended to the
   history (limited by free KV after reservations, in slot order, and by ``L_max``) and prefilled.
2. ``memory``: a chain whose history exceeds the threshold has it compressed by the factor
   (rounded to whole tokens), freeing KV; the module's cost is ``mem_cost`` x the prefill FLOPs of
   the history, served on the GPU.
3. ``arrivals``: a Poisson number of requests per live cell (inverse CDF of one uniform, truncated
   at A per step); prompt and output lengths lognormal around the medians; with routing on, a
   cell's arrivals go to the neighbour with the most free capacity if it has more than the cell.
4. ``admission``: FIFO from the queue while a chain slot is free, the batch is below
   ``max_batch`` and the KV cache has room for ``prompt + target`` after all reservations
   (full cache: requests wait in the queue). Prefill costs ``2N P + 2 n_layer d P^2`` FLOPs at the
   achieved FLOP/s.
5. ``decode``: the GPU first serves the owed prefill work (``debt``), then decodes: one iteration
   over the B active chains with context sum(L) takes the roofline time ``t`` at the achieved
   FLOP/s and bandwidth, plus on g > 1 live GPUs the all-reduce time ``allreduce_time``; each gains
   ``(dt - prefill time) / t`` tokens (capped at its target). Energy = power(state) x time. A
   decoding chain calls a tool with probability ``1 - (1 - p_tool)^gained``.
6. ``finish``: a chain at its target releases its KV; the answer either triggers a follow-up turn
   (probability ``followup_prob``, up to ``max_turns``; the whole history + ``followup_tokens`` is
   resent, as a stateless API does), or is handed to the next model of an agentic chain (to the
   neighbour with most free capacity; prompt = history + output + ``handoff_tokens``), or ends the
   conversation (time in system booked).
7. ``account``: occupancy integral for Little's law; step counter.

**Task kinds** (``substrate.kinds.n = K > 1``; issue 12, the division of labour of
:mod:`sim.substrates.llm.society` with queues). ``K`` is static (the last axis of
``params.kind_owner``); at ``K = 1`` none of the following is traced and the step is exactly the one
without kinds. Each arriving request draws a kind, uniformly; instance ``i`` owns kind ``i mod K``
(``society.owns``). The router sends it, with probability ``1 - p_miss``, to an owner of its kind
(uniformly among the live ones) and otherwise to one of the live non-owners (uniformly); this
replaces the free-capacity routing of arrivals (``routing`` still routes agentic hops). At a
non-owner the task is served in place with probability ``theta_i`` (``kind_foreign``); otherwise
it is a *reader* (queued with ``target = 0``): admitted and prefilled like any task, it decodes
nothing and, when it finishes, is handed to the owning neighbour with the most free capacity,
which prefills it again with ``kinds.handoff_tokens`` of working context (``prompt + H``: the
transport cost; ``kind_handoffs``, ``kind_handoff_tokens``), keeping its arrival time, so its time
in system counts both queues. A non-owner with no owning neighbour serves the task itself (on a
complete graph every non-owner has one). Each instance holds its cached context prefix
``C(theta_i)`` (system prompt + the kinds' contexts it keeps) once, outside the chains (taken out of
the KV capacity by the builder: shared prefix blocks, vLLM automatic prefix caching); every
sequence still attends to it, so a decode iteration reads ``B C`` more KV tokens and spends
``c1 B C`` more FLOPs, a prefill of ``P`` tokens attends to it (``prefill_flops(P, cached=C)``),
and so does a tool result. The context limit ``L_max`` applies to a task's own tokens.

Draws come from ``sim.rng.uniforms`` keyed by (seed, step, purpose, id), ids being cells,
arrival slots ``c * A + j`` or chain slots ``c * S + s``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtri

from sim import rng
from sim.core.ops import any_in_batch, rowsum, rowsums
from sim.pytree import replace

# Draw purposes of the LLM engine (100-119 reserved for sim.substrates.llm; never renumber).
ARRIVAL_COUNT = 101
PROMPT_LEN = 102
OUTPUT_LEN = 103
TOOL_CALL = 104
FOLLOWUP = 105
FOLLOWUP_LEN = 106
KIND = 107  # kind of an arriving task (task kinds)
KIND_ROUTE = 108  # the router misses the task's kind (probability kinds.p_miss)
KIND_PICK = 109  # which instance among the owners (or the non-owners)
KIND_SERVE = 110  # a non-owner serves a foreign task in place (probability theta_i)

_U_MIN = 1e-12  # keep ndtri finite


# ---- shared helpers --------------------------------------------------------------------------


def n_true(mask):
    """True entries per row of a ``(C, K)`` mask, as ``int32`` (half the bytes of the default int64)."""
    return rowsum(mask.astype(jnp.int32))


def cell_compute(state, params):
    """Live GPUs per cell and the cell's peak FLOP/s and bandwidth."""
    n_gpu = rowsum(state.gpus.alive).astype(params.peak_flops.dtype)
    n_gpu = jnp.where(state.cells.alive, n_gpu, 0.0)
    return n_gpu, params.peak_flops * n_gpu, params.bandwidth * n_gpu


def allreduce_time(params, n_gpu, batch):
    """s of the tensor-parallel all-reduces of one decode iteration (``specs.allreduce_time``):
    ``n_allreduce (2 (g-1)/g B bytes / link + latency)`` on g > 1 GPUs, else 0."""
    ring = 2.0 * (n_gpu - 1.0) / jnp.maximum(n_gpu, 1.0)
    each = ring * batch * params.allreduce_bytes / params.link_bandwidth + params.allreduce_latency
    return jnp.where(n_gpu > 1.0, params.n_allreduce * each, 0.0)


def prefill_flops(params, tokens, cached=0.0):
    """2N P + 2 n_layer d ((c + P)^2 - c^2) (``sim.substrates.llm.specs.prefill_flops``)."""
    return params.c0 * tokens + 0.5 * params.c1 * (tokens * tokens + 2.0 * cached * tokens)


def lognormal_tokens(u, median, sigma):
    """Whole tokens >= 1 from a uniform: round(median * exp(sigma * Phi^-1(u)))."""
    z = ndtri(jnp.clip(u, _U_MIN, 1.0 - _U_MIN))
    return jnp.maximum(jnp.round(median * jnp.exp(sigma * z)), 1.0)


def clip_lengths(prompt, target, l_max):
    """Prompt <= L_max - 1, target <= L_max - prompt (>= 1); returns (prompt, target, tokens cut)."""
    p = jnp.minimum(prompt, l_max - 1.0)
    t = jnp.maximum(jnp.minimum(target, l_max - p), 1.0)
    return p, t, prompt - p


def compress(history, params):
    """Memory module on a history: above the threshold it becomes round(h / factor) (>= 1), never
    more than it was (rounding a non-whole history, as frozen contexts make, could otherwise grow
    it and book a negative removal; whole histories are unaffected)."""
    on = (params.mem_threshold > 0) & (history > params.mem_threshold)
    new = jnp.where(on, jnp.minimum(jnp.maximum(jnp.round(history / params.mem_factor), 1.0), history), history)
    cost = jnp.where(on, params.mem_cost * prefill_flops(params, history), 0.0)
    return new, on, cost


def poisson_count(u, lam, kmax: int):
    """Inverse-CDF Poisson(lam) from a uniform, truncated at ``kmax`` (loop unrolled, same op order
    as the reference)."""
    p = jnp.exp(-lam)
    cdf = p
    n = jnp.zeros_like(u)
    for k in range(kmax):
        n = n + (cdf <= u)
        p = p * lam / (k + 1)
        cdf = cdf + p
    return n


def n_kinds(params) -> int:
    """K, the number of task kinds: static (the last axis of ``kind_owner``); 1 = kinds off."""
    return params.kind_owner.shape[-1]


def kind_neighbours(score, params, alive):
    """Per cell and kind (``(C, K)``): the live neighbour owning the kind with the highest score
    (ties: lowest index; none: the cell itself) and whether there is one. Loops over kinds only."""
    own = params.kind_owner & alive[:, None]
    nbs, has = [], []
    for k in range(n_kinds(params)):
        _, nb, h = best_neighbour(jnp.where(own[:, k], score, -jnp.inf), params)
        nbs.append(nb)
        has.append(h)
    return jnp.stack(nbs, axis=1), jnp.stack(has, axis=1)


def kind_route(state, params, key, ids):
    """Task kinds at arrival slots ``ids``: (kind, destination, reader, served foreign). See the
    module docstring; the same draws and order as ``ReferenceLLM.kind_route``."""
    n_k = n_kinds(params)
    alive = state.cells.alive
    own = params.kind_owner & alive[:, None]
    other = alive[:, None] & ~params.kind_owner
    f = params.kind_prefix.dtype
    u_kind, u_miss, pick, u_serve = rng.uniforms_many(key, state.step, (KIND, KIND_ROUTE, KIND_PICK, KIND_SERVE), ids)
    kind = jnp.minimum(jnp.floor(u_kind * n_k), n_k - 1).astype(jnp.int32)
    miss = u_miss < params.kind_p_miss
    n_own = own.sum(axis=0).astype(f)[kind]
    n_oth = other.sum(axis=0).astype(f)[kind]
    to_owner = (~miss | (n_oth == 0)) & (n_own > 0)
    cnt = jnp.where(to_owner, n_own, n_oth)
    j = jnp.clip(jnp.floor(pick * cnt), 0.0, jnp.maximum(cnt - 1.0, 0.0)).astype(jnp.int32)
    owners, others = kth_free(~own.T), kth_free(~other.T)  # (K, C): the j-th owner / non-owner of each kind
    dest = jnp.where(to_owner, owners[kind, j], others[kind, j])
    foreign = ~params.kind_owner[dest, kind]
    _, has = kind_neighbours(jnp.zeros(alive.shape, f), params, alive)
    serve = u_serve < params.kind_theta[dest]
    reader = foreign & ~serve & has[dest, kind]
    return kind, dest, reader, foreign & ~reader


def free_capacity(state):
    """Tokens of KV a cell could still promise: capacity - reservations - queued demand."""
    ch, q = state.chains, state.queue
    reserved = rowsum(jnp.where(ch.active, ch.base + ch.target, 0.0))
    queued = rowsum(jnp.where(q.active, q.prompt + q.target, 0.0))
    free = state.cells.kv_capacity - reserved - queued
    return jnp.where(state.cells.alive, free, -jnp.inf)


def best_neighbour(score, params):
    """Per cell: the highest neighbour score and that neighbour (ties: lowest index; none: itself)."""
    e = params.edges
    n = score.shape[0]
    src = jnp.concatenate([e.src, e.dst])
    dst = jnp.concatenate([e.dst, e.src])
    s_e = score[dst]
    best = jax.ops.segment_max(s_e, src, num_segments=n)
    cand = jnp.where(s_e == best[src], dst, n)
    nb = jax.ops.segment_min(cand, src, num_segments=n)
    has = (nb < n) & (best > -jnp.inf)
    return jnp.where(has, best, -jnp.inf), jnp.where(has, nb, jnp.arange(n)), has


def kth_free(active):
    """Per row, the index of the k-th free (inactive) slot at column k (slot order); columns past the
    number of free slots hold 0. Same as ``argsort(active, stable=True)`` on the free part."""
    n, w = active.shape
    free = ~active
    pos = jnp.where(free, jnp.cumsum(free, axis=1) - 1, w)
    rows = jnp.broadcast_to(jnp.arange(n)[:, None], (n, w))
    cols = jnp.broadcast_to(jnp.arange(w, dtype=jnp.int32)[None, :], (n, w))
    return jnp.zeros((n, w), jnp.int32).at[rows, pos].set(cols, mode="drop")


def same_either(pred, slow, fast, *operands):
    """``lax.cond(pred, slow, fast, *operands)`` for two branches that give the same result (every
    bit) wherever ``fast`` applies (``pred`` false); ``slow`` is exact everywhere. Under ``vmap``
    the predicate is any over the batch (``sim.core.ops.any_in_batch``), so one branch runs for the
    whole batch (a batched ``lax.cond`` would run both and select): a replicate that could take
    ``fast`` takes ``slow`` with the same result."""
    return jax.lax.cond(any_in_batch(pred), slow, fast, *operands)


def ring_slot(seq, nq: int):
    """The queue slot of ticket ``seq``: ``seq mod Q``. A cell's queued requests hold the consecutive
    tickets ``next_seq - count .. next_seq - 1`` (requests join at the tail with the next tickets and
    admission takes a FIFO prefix), so they occupy distinct slots and FIFO order is slot order from
    the head ``(next_seq - count) mod Q``, wrapping around: no sort."""
    return jnp.remainder(seq, nq).astype(jnp.int32)


def _paired_cumsums(masks):
    """Cumulative sums along axis 1 of 0/1 ``int32`` arrays, two per ``cumsum``: the pair is packed
    as ``a + b * 2^16`` (exact while a row has fewer than 2^15 entries), halving the scans, which
    XLA's CPU backend runs as several reduce-window kernels each."""
    k = masks[0].shape[1]
    if k >= 1 << 15:
        return [jnp.cumsum(m, axis=1, dtype=jnp.int32) for m in masks]
    out = []
    for i in range(0, len(masks), 2):
        if i + 1 == len(masks):
            out.append(jnp.cumsum(masks[i], axis=1, dtype=jnp.int32))
            break
        c = jnp.cumsum(masks[i] + (masks[i + 1] << 16), axis=1, dtype=jnp.int32)
        out += [c & 0xFFFF, c >> 16]
    return out


def _earlier_rows(tots, cands, n: int):
    """From ``tots`` (R, T), the valid entries of row ``r`` for its candidate cell ``cands[r, j]``
    (a repeated candidate counted once): (entries of the rows before ``r`` for ``cands[r, j]``, (R,
    T); entries per cell, (n,)). Integer counts: exact in any order. Few rows and candidates (R T <=
    256, e.g. one row per instance): masked reductions over (R, T, R, T) and (n, R, T), which XLA's
    CPU backend runs far faster than the scan over rows it otherwise needs (a cumulative sum is
    several reduce-window kernels); more: that scan."""
    r_, t_ = tots.shape
    if r_ * t_ <= 256:
        same = cands[:, :, None, None] == cands[None, None, :, :]
        earlier = jnp.arange(r_)[None, None, :, None] < jnp.arange(r_)[:, None, None, None]
        before = jnp.sum(jnp.where(same & earlier, tots[None, None], 0), axis=(2, 3), dtype=jnp.int32)
        total = jnp.sum(jnp.where(cands[None] == jnp.arange(n)[:, None, None], tots[None], 0), axis=(1, 2),
                        dtype=jnp.int32)
        return before, total
    offs = jnp.zeros((r_, n), jnp.int32)
    for j in range(t_):
        offs = offs + tots[:, j:j + 1] * (cands[:, j:j + 1] == jnp.arange(n)[None, :])
    csum = jnp.cumsum(offs, axis=0)
    return jnp.take_along_axis(csum - offs, cands, axis=1), csum[-1]


def enqueue(state, entries: dict, tcell, valid, cands):
    """Append entries to the queues of cells ``tcell`` in flat (row-major) order: the r-th entry
    for a cell takes ticket ``next_seq + r`` and its ring slot (:func:`ring_slot`); entries beyond
    the free slots are dropped. Entries come as ``(R, K)`` arrays whose row ``i`` only targets cells among
    ``cands[i]`` (``(R, T)``, T small), so an entry's rank among those for its cell is a per-row
    count plus the counts of the rows before (no sort). Returns (state, accepted, dropped per
    target cell), flat."""
    q, cells = state.queue, state.cells
    n, nq = q.active.shape
    r_, k_ = tcell.shape
    t_ = cands.shape[1]
    tc = jnp.clip(tcell, 0, n - 1).astype(jnp.int32)
    cd = jnp.clip(cands, 0, n - 1).astype(jnp.int32)
    # within-row rank: valid entries before this one in the row with the same target
    match = [valid & (tc == cd[:, j:j + 1]) for j in range(t_)]
    seen = jnp.zeros((r_, k_), bool)
    cums = _paired_cumsums([m.astype(jnp.int32) for m in match])
    hits, tots = [], []
    for j in range(t_):
        hit = (tc == cd[:, j:j + 1]) & ~seen
        hits.append(hit)
        seen = seen | hit
        uniq = jnp.ones(r_, bool)
        for i in range(j):
            uniq = uniq & (cd[:, i] != cd[:, j])
        tots.append(jnp.where(uniq, cums[j][:, -1], 0))
    before, total = _earlier_rows(jnp.stack(tots, axis=1), cd, n)  # (R, T), (n,)
    # rank = entries of earlier rows for the target + valid entries before this one in its row with that
    # target, picked per candidate (elementwise selects, no per-entry gather)
    rank = jnp.zeros((r_, k_), jnp.int32)
    for j in range(t_):
        rank = jnp.where(hits[j], before[:, j:j + 1] + cums[j] - match[j].astype(jnp.int32), rank)
    rank = rank.reshape(-1)
    tc = tc.reshape(-1)
    valid = valid.reshape(-1)
    m = tc.shape[0]
    n_free = nq - n_true(q.active)
    ok = valid & (rank < n_free[tc])
    seq = cells.next_seq[tc] + rank
    slot = ring_slot(seq, nq)  # the queue is a ring: ticket t lives in slot t mod Q (free: see State)
    row = jnp.where(ok, tc, n)

    def put(arr, val):
        return arr.at[row, slot].set(val.reshape(-1).astype(arr.dtype), mode="drop")

    q = replace(
        q,
        active=put(q.active, jnp.ones(m, bool)),
        prompt=put(q.prompt, entries["prompt"]),
        target=put(q.target, entries["target"]),
        born=put(q.born, entries["born"]),
        turn=put(q.turn, entries["turn"]),
        hop=put(q.hop, entries["hop"]),
        seq=put(q.seq, seq),
        kind=put(q.kind, entries["kind"]),
    )
    f = state.ledger.arrived.dtype
    # total: valid entries per target cell; the first n_free of them are accepted
    n_ok = jnp.minimum(total, n_free.astype(total.dtype))
    dropped = (total - n_ok).astype(f)
    cells = replace(cells, next_seq=cells.next_seq + n_ok.astype(cells.next_seq.dtype))
    return replace(state, queue=q, cells=cells), ok, dropped


# ---- processes -------------------------------------------------------------------------------


def tools(state, params, key=None):
    """Tool calls returning (module docstring, 1); skipped when no chain waits on a tool (then it
    changes nothing: no count-down, no return, every sum 0), which is every step without tools."""
    ch, cells, led = state.chains, state.cells, state.ledger

    def parts(s):
        return (s.chains.tool_wait, s.chains.base, s.cells.kv_free, s.cells.debt_s, s.ledger.tool_tokens,
                s.ledger.tool_truncated, s.ledger.flops_prefill)

    waiting = jnp.any(ch.active & (ch.tool_wait > 0))
    tw, base, kv_free, debt, tok, trunc, flops = same_either(waiting, lambda s, p: parts(_tools(s, p)),
                                                             lambda s, p: parts(s), state, params)
    return replace(state, chains=replace(ch, tool_wait=tw, base=base),
                   cells=replace(cells, kv_free=kv_free, debt_s=debt),
                   ledger=replace(led, tool_tokens=tok, tool_truncated=trunc, flops_prefill=flops))


def _tools(state, params):
    ch, cells, led = state.chains, state.cells, state.ledger
    waiting = ch.active & (ch.tool_wait > 0)
    tw = jnp.where(waiting, ch.tool_wait - 1, ch.tool_wait)
    ret = waiting & (tw == 0)
    reserved = rowsum(jnp.where(ch.active, ch.base + ch.target, 0.0))
    room = cells.kv_capacity - reserved
    want = jnp.where(ret, jnp.clip(params.l_max - (ch.base + ch.target), 0.0, params.r_tool), 0.0)
    before = jnp.cumsum(want, axis=1) - want
    got = jnp.clip(room[:, None] - before, 0.0, want)
    cached = ch.base + ch.out
    if n_kinds(params) > 1:  # the result also attends to the instance's cached prefix
        cached = cached + params.kind_prefix[:, None]
    flops = jnp.where(ret, prefill_flops(params, got, cached), 0.0)
    _, f_cell, _ = cell_compute(state, params)
    f_sum, got_sum, cut_sum = rowsums(flops, got, want - got)
    debt = cells.debt_s + jnp.where(f_cell > 0, f_sum / jnp.where(f_cell > 0, f_cell, 1.0), 0.0)
    led = replace(
        led,
        tool_tokens=led.tool_tokens + got_sum,
        tool_truncated=led.tool_truncated + cut_sum,
        flops_prefill=led.flops_prefill + f_sum,
    )
    ch = replace(ch, tool_wait=tw, base=ch.base + got)
    cells = replace(cells, kv_free=cells.kv_free - got_sum, debt_s=debt)
    return replace(state, chains=ch, cells=cells, ledger=led)


def memory(state, params, key=None):
    """The memory module (see :func:`compress`); skipped when it is off (``mem_threshold`` 0: no
    history is compressed, so every sum is 0 and the step is the same). The threshold is a scalar
    parameter: a real branch unless parameters are batched (then both sides run, as before)."""
    ch, cells, led = state.chains, state.cells, state.ledger
    parts = (ch.base, cells.kv_free, cells.debt_s, led.compressions, led.tokens_removed, led.flops_memory)

    def run(parts):
        s = _memory(state, params)
        return (s.chains.base, s.cells.kv_free, s.cells.debt_s, s.ledger.compressions, s.ledger.tokens_removed,
                s.ledger.flops_memory)

    base, kv_free, debt, comp, removed, flops = jax.lax.cond(params.mem_threshold > 0, run, lambda p: p, parts)
    return replace(state, chains=replace(ch, base=base), cells=replace(cells, kv_free=kv_free, debt_s=debt),
                   ledger=replace(led, compressions=comp, tokens_removed=removed, flops_memory=flops))


def _memory(state, params):
    ch, cells, led = state.chains, state.cells, state.ledger
    new_base, on, cost = compress(ch.base, params)
    on = on & ch.active
    removed = jnp.where(on, ch.base - new_base, 0.0)
    cost = jnp.where(on, cost, 0.0)
    _, f_cell, _ = cell_compute(state, params)
    c_sum = rowsum(cost)
    r_sum = rowsum(removed)
    debt = cells.debt_s + jnp.where(f_cell > 0, c_sum / jnp.where(f_cell > 0, f_cell, 1.0), 0.0)
    led = replace(
        led,
        compressions=led.compressions + rowsum(on).astype(led.compressions.dtype),
        tokens_removed=led.tokens_removed + r_sum,
        flops_memory=led.flops_memory + c_sum,
    )
    ch = replace(ch, base=jnp.where(on, new_base, ch.base))
    cells = replace(cells, kv_free=cells.kv_free + r_sum, debt_s=debt)
    return replace(state, chains=ch, cells=cells, ledger=led)


def _arrival_lengths(key, step, count, params):
    """Prompt and output lengths (lognormal, from the PROMPT_LEN and OUTPUT_LEN draws of arrival
    slot ``c * A + j``) of the arrival slots ``j < count[c]``, ``(C, A)``; other slots hold 0 (never
    enqueued). The numbers a draw over every slot gives there, bit for bit, but only the columns some
    cell uses are hashed and sent through ``ndtri``: a few at a time, as many as the busiest cell
    needs (few arrive per step; often none)."""
    n, a = count.shape[0], params.arrival_k.shape[0]
    w = min(a, 4)
    f = params.prompt_median.dtype
    rows = jnp.arange(n, dtype=jnp.uint32)[:, None] * jnp.uint32(a)

    def body(carry):
        j, prompt, target = carry
        cols = jnp.minimum(j * w + jnp.arange(w, dtype=jnp.int32), a - 1)  # the last chunk repeats column A-1
        ids = rows + cols.astype(jnp.uint32)[None, :]
        u_p, u_t = rng.uniforms_many(key, step, (PROMPT_LEN, OUTPUT_LEN), ids)
        p = lognormal_tokens(u_p, params.prompt_median, params.prompt_sigma)
        t = lognormal_tokens(u_t, params.output_median, params.output_sigma)
        return j + 1, prompt.at[:, cols].set(p.astype(f)), target.at[:, cols].set(t.astype(f))

    zero = jnp.zeros((n, a), f)
    _, prompt, target = jax.lax.while_loop(lambda c: (c[0] * w).astype(count.dtype) < jnp.max(count), body,
                                           (jnp.int32(0), zero, zero))
    return prompt.reshape(-1), target.reshape(-1)


def arrivals(state, params, key):
    cells = state.cells
    n = cells.alive.shape[0]
    a = params.arrival_k.shape[0]
    cell_ids = jnp.arange(n, dtype=jnp.uint32)
    u = rng.uniforms(key, state.step, ARRIVAL_COUNT, cell_ids)
    count = poisson_count(u, params.arrival_rate * params.dt, a)
    count = jnp.where(cells.alive, count, 0.0)
    ids = jnp.arange(n * a, dtype=jnp.uint32)
    home = (ids // a).astype(jnp.int32)
    valid = (ids % a).astype(count.dtype) < count[home]
    prompt, target = _arrival_lengths(key, state.step, count, params)
    prompt, target, _ = clip_lengths(prompt, target, params.l_max)
    if n_kinds(params) > 1:
        return _arrivals_kinds(state, params, key, count, ids, home, valid, prompt, target)
    score = free_capacity(state)
    best, nb, has = best_neighbour(score, params)
    dest = jnp.where(params.routing & has & (best > score), nb, jnp.arange(n))
    tcell = dest[home]
    zeros_i = jnp.zeros((n, a), jnp.int32)
    rs = lambda x: x.reshape(n, a)  # noqa: E731
    entries = {"prompt": rs(prompt), "target": rs(target), "born": zeros_i + state.step,
               "turn": zeros_i, "hop": zeros_i, "kind": zeros_i}
    state, _, dropped = enqueue(state, entries, rs(tcell), rs(valid), dest[:, None])
    led = state.ledger
    moved = jnp.where(dest != jnp.arange(n), count, 0.0)
    led = replace(
        led,
        arrived=led.arrived + count,
        routed_out=led.routed_out + moved,
        routed_in=led.routed_in + jax.ops.segment_sum(moved, dest, num_segments=n),
        dropped=led.dropped + dropped,
    )
    return replace(state, ledger=led)


def _arrivals_kinds(state, params, key, count, ids, home, valid, prompt, target):
    """Arrivals with task kinds: each arrival slot is routed on its own (one enqueue row per slot)."""
    n = state.cells.alive.shape[0]
    kind, dest, reader, foreign = kind_route(state, params, key, ids)
    col = lambda x: x[:, None]  # noqa: E731
    zeros_i = jnp.zeros_like(col(kind))
    entries = {"prompt": col(prompt), "target": col(jnp.where(reader, 0.0, target)), "born": zeros_i + state.step,
               "turn": zeros_i, "hop": zeros_i, "kind": col(kind)}
    state, ok, dropped = enqueue(state, entries, col(dest), col(valid), col(dest))
    led = state.ledger
    f = led.arrived.dtype
    moved = (valid & (dest != home)).astype(f)
    led = replace(
        led,
        arrived=led.arrived + count,
        routed_out=led.routed_out + jax.ops.segment_sum(moved, home, num_segments=n),
        routed_in=led.routed_in + jax.ops.segment_sum(moved, dest, num_segments=n),
        dropped=led.dropped + dropped,
        kind_foreign=led.kind_foreign + jax.ops.segment_sum((ok & foreign).astype(f), dest, num_segments=n),
    )
    return replace(state, ledger=led)


def admission(state, params, key=None):
    """FIFO admission (module docstring, 4). Usually at most two requests wait per instance: then
    only those are read and placed (:func:`_admission_few`); the running sum of their KV need and
    the row sums have at most two non-zero terms, the same in any order, so it is the full-width
    admission (:func:`_admission_all`) bit for bit; a step where some instance has more queued
    takes that one. Only the choice of requests and slots is branched (:func:`_pick_few`,
    :func:`_pick_all`); the limits before it and the seating and booking after it are traced once."""
    n_queued = n_true(state.queue.active)
    limits = _admission_limits(state, params)
    picked = same_either(jnp.max(n_queued) > 2, _pick_all, _pick_few, state, params, *limits)
    return _seat_and_book(state, params, picked)


def _admission_few(state, params):
    """:func:`admission` when at most two requests wait per instance (:func:`_pick_few`)."""
    return _seat_and_book(state, params, _pick_few(state, params, *_admission_limits(state, params)))


def _admission_all(state, params):
    """:func:`admission` for any number of waiting requests (:func:`_pick_all`)."""
    return _seat_and_book(state, params, _pick_all(state, params, *_admission_limits(state, params)))


def _admission_limits(state, params):
    """Per instance: the KV room after all reservations, the live GPUs and how many requests may
    still be admitted (free chain slots, and the batch below ``max_batch``)."""
    ch = state.chains
    ns = ch.active.shape[1]
    reserved = rowsum(jnp.where(ch.active, ch.base + ch.target, 0.0))
    room = state.cells.kv_capacity - reserved
    n_gpu, _, _ = cell_compute(state, params)
    n_active = n_true(ch.active)
    limit = jnp.minimum(ns - n_active, jnp.maximum(params.max_batch - n_active, 0))
    return room, n_gpu, limit


def _queue_head(state):
    """Per instance: the ticket of the first queued request and the number queued."""
    n_queued = n_true(state.queue.active)
    return state.cells.next_seq - n_queued, n_queued


def _admitted_prefill(params, adm, prompt):
    """Prefill FLOPs of each admitted prompt (0 elsewhere); with task kinds the prompt attends to
    the instance's cached context prefix."""
    if n_kinds(params) > 1:
        return jnp.where(adm, prefill_flops(params, prompt, params.kind_prefix[:, None]), 0.0)
    return jnp.where(adm, prefill_flops(params, prompt), 0.0)


_SEATED = ("base", "target", "born", "turn", "hop", "kind")  # chain fields a seated request brings
_FROM_QUEUE = {"base": "prompt"}  # the queue field of each (the same name otherwise)


def _seat_and_book(state, params, picked):
    """The state after admission, from what :func:`_pick_few` / :func:`_pick_all` chose: the
    admitted requests seated in the chain slots ``new`` (their fields as ``filled``) and cleared
    from the queue (the first ``n_adm`` of each instance's queue from its head: admission takes a
    FIFO prefix), the prompts' KV taken and their prefill owed as compute debt (s), the ledger
    booked."""
    new, filled, n_adm, flops, tokens = picked
    ch, q, cells, led = state.chains, state.queue, state.cells, state.ledger
    nq = q.active.shape[1]
    head, _ = _queue_head(state)
    ch = replace(
        ch,
        active=ch.active | new,
        out=jnp.where(new, jnp.zeros_like(ch.out), ch.out),
        tool_wait=jnp.where(new, jnp.zeros_like(ch.tool_wait), ch.tool_wait),
        **filled,
    )
    admitted_q = ring_slot(jnp.arange(nq)[None, :] - head[:, None], nq) < n_adm[:, None]
    clear = lambda x: jnp.where(admitted_q, jnp.zeros_like(x), x)  # noqa: E731
    q = replace(q, active=q.active & ~admitted_q, prompt=clear(q.prompt), target=clear(q.target),
                born=clear(q.born), turn=clear(q.turn), hop=clear(q.hop), seq=clear(q.seq), kind=clear(q.kind))
    _, f_cell, _ = cell_compute(state, params)
    debt = cells.debt_s + jnp.where(f_cell > 0, flops / jnp.where(f_cell > 0, f_cell, 1.0), 0.0)
    led = replace(
        led,
        admitted=led.admitted + n_adm.astype(led.admitted.dtype),
        tokens_in=led.tokens_in + tokens,
        flops_prefill=led.flops_prefill + flops,
    )
    cells = replace(cells, kv_free=cells.kv_free - tokens, debt_s=debt)
    return replace(state, chains=ch, queue=q, cells=cells, ledger=led)


def _pick_few(state, params, room, n_gpu, limit):
    """Admission's choice when at most two requests wait per instance: queue positions 0 and 1
    (from the head) and the first two free chain slots, ``(C, 2)``. Returns (new chain slots,
    their seated fields, admitted per instance, prefill FLOPs, prompt tokens)."""
    ch, q = state.chains, state.queue
    nq = q.active.shape[1]
    ns = ch.active.shape[1]
    head, n_queued = _queue_head(state)
    k = jnp.arange(2)
    order = ring_slot(head[:, None] + k[None, :], nq)  # (C, 2) queue slots of FIFO positions 0, 1

    def take(x):
        return jnp.take_along_axis(x, order, axis=1)

    act = k[None, :] < n_queued[:, None]
    prompt = take(q.prompt)
    need = jnp.where(act, prompt + take(q.target), 0.0)
    run = jnp.stack([need[:, 0], need[:, 0] + need[:, 1]], axis=1)  # two terms: any order
    adm = act & (run <= room[:, None]) & (k[None, :] < limit[:, None]) & (n_gpu > 0)[:, None]
    n_adm = n_true(adm)
    # the j-th admitted takes the j-th free chain slot (slot order)
    slots = jnp.arange(ns, dtype=jnp.int32)[None, :]
    free = ~ch.active
    f0 = jnp.min(jnp.where(free, slots, ns), axis=1)
    f1 = jnp.min(jnp.where(free & (slots > f0[:, None]), slots, ns), axis=1)
    at0 = (slots == f0[:, None]) & (n_adm > 0)[:, None]
    at1 = (slots == f1[:, None]) & (n_adm > 1)[:, None]

    def fill(arr, val):
        v = take(val).astype(arr.dtype)
        return jnp.where(at0, v[:, :1], jnp.where(at1, v[:, 1:], arr))

    filled = {f: fill(getattr(ch, f), getattr(q, _FROM_QUEUE.get(f, f))) for f in _SEATED}
    fl = _admitted_prefill(params, adm, prompt)
    p_adm = jnp.where(adm, prompt, 0.0)
    return at0 | at1, filled, n_adm, fl[:, 0] + fl[:, 1], p_adm[:, 0] + p_adm[:, 1]


def _pick_all(state, params, room, n_gpu, limit):
    """Admission's choice for any number of waiting requests (same returns as :func:`_pick_few`)."""
    ch, q = state.chains, state.queue
    nq = q.active.shape[1]
    ns = ch.active.shape[1]
    # FIFO order without a sort: position k of the queue is ring slot (head + k) mod Q (ring_slot).
    # At most ns - active <= ns requests are admitted: only the first W = min(Q, S) positions are read.
    w = min(nq, ns)
    head, n_queued = _queue_head(state)
    k = jnp.arange(w)
    order = ring_slot(head[:, None] + k[None, :], nq)

    def take(x):
        return jnp.take_along_axis(x, order, axis=1)

    act_s = k[None, :] < n_queued[:, None]
    prompt_s = take(q.prompt)
    need_s = jnp.where(act_s, prompt_s + take(q.target), 0.0)
    adm_s = (
        act_s
        & (jnp.cumsum(need_s, axis=1) <= room[:, None])
        & (k[None, :] < limit[:, None])
        & (n_gpu > 0)[:, None]
    )
    # the k-th admitted (in FIFO order) takes the k-th free chain slot: a free chain slot of free-rank
    # j takes the j-th request in FIFO order if that one is admitted, i.e. j < n_adm (admission takes a
    # FIFO prefix: need >= 0, so the cumulative sum only grows) (gathers, no scatter)
    n_adm = n_true(adm_s)
    free = ~ch.active
    j = jnp.cumsum(free, axis=1, dtype=jnp.int32) - 1
    jc = jnp.clip(j, 0, w - 1)
    src = ring_slot(head[:, None] + jc, nq)  # queue slot feeding chain slot
    new = free & (j < n_adm[:, None])

    def fill(arr, val):
        return jnp.where(new, jnp.take_along_axis(val, src, axis=1).astype(arr.dtype), arr)

    filled = {f: fill(getattr(ch, f), getattr(q, _FROM_QUEUE.get(f, f))) for f in _SEATED}
    flops = rowsum(_admitted_prefill(params, adm_s, prompt_s))
    tokens = rowsum(jnp.where(adm_s, prompt_s, 0.0))
    return new, filled, n_adm, flops, tokens


def decode(state, params, key):
    ch, cells, led = state.chains, state.cells, state.ledger
    n, ns = ch.active.shape
    n_gpu, f_cell, bw_cell = cell_compute(state, params)
    on = n_gpu > 0
    dec = ch.active & (ch.tool_wait == 0)
    kinds_on = n_kinds(params) > 1
    if kinds_on:
        dec = dec & (ch.target > 0)  # readers (target 0) decode nothing
    # (b and s stay two reductions: fused, XLA sums s in another order, which moves its last bits with
    # task kinds; the fused sums below gave bit for bit the separate ones on 9 configurations x 300 steps)
    b = rowsum(dec).astype(ch.base.dtype)
    ctx = ch.base + ch.out
    s = rowsum(jnp.where(dec, ctx, 0.0))
    if kinds_on:  # every sequence attends to (reads) the instance's cached prefix
        s = s + b * params.kind_prefix
    busy = on & (b > 0)
    f_safe = jnp.where(on, f_cell, 1.0)
    bw_safe = jnp.where(on, bw_cell, 1.0)
    flops_it = params.c0 * b + params.c1 * s
    t = jnp.maximum(flops_it / f_safe, (params.weight_bytes + params.kv_bytes * s) / bw_safe) + allreduce_time(
        params, n_gpu, b)
    pre = jnp.where(on, jnp.minimum(cells.debt_s, params.dt), 0.0)
    dec_time = jnp.where(busy, params.dt - pre, 0.0)
    idle = jnp.where(on, params.dt - pre - dec_time, 0.0)
    g = jnp.where(busy, dec_time / jnp.where(busy, t, 1.0), 0.0)
    remaining = ch.target - ch.out
    fin = dec & (g[:, None] >= remaining)
    gain = jnp.where(dec, jnp.where(fin, remaining, g[:, None]), 0.0)
    out = jnp.where(fin, ch.target, ch.out + gain)
    grow = gain * (1.0 - params.freeze_context)
    base = ch.base - gain * params.freeze_context  # frozen context: base + out stays put
    # tool calls: the TOOL_CALL draw of every slot and its probability only when tools are on (p_tool
    # is a scalar parameter: a real branch unless parameters are batched, where both sides run and
    # the select keeps the calls where p_tool > 0); off, no chain calls
    def draw_calls():
        u = rng.uniforms(key, state.step, TOOL_CALL, jnp.arange(n * ns, dtype=jnp.uint32)).reshape(n, ns)
        p_call = -jnp.expm1(gain * jnp.log1p(-params.p_tool))
        return dec & ~fin & (gain > 0) & (u < p_call)

    call = jax.lax.cond(params.p_tool > 0, draw_calls, lambda: jnp.zeros((n, ns), bool))
    energy = n_gpu * (params.power_prefill * pre + params.power_decode * dec_time + params.power_idle * idle)
    gain_sum, n_call, grow_sum = rowsums(gain, call.astype(led.tool_calls.dtype), grow)
    led = replace(
        led,
        tokens_out=led.tokens_out + gain_sum,
        iterations=led.iterations + g,
        flops_decode=led.flops_decode + g * flops_it,
        prefill_s=led.prefill_s + n_gpu * pre,
        decode_s=led.decode_s + n_gpu * dec_time,
        idle_s=led.idle_s + n_gpu * idle,
        energy_j=led.energy_j + energy,
        tool_calls=led.tool_calls + n_call,
    )
    ch = replace(ch, out=out, base=base, tool_wait=jnp.where(call, params.tool_steps, ch.tool_wait).astype(ch.tool_wait.dtype))
    cells = replace(
        cells,
        kv_free=cells.kv_free - grow_sum,
        debt_s=cells.debt_s - pre,
        step_time_s=jnp.where(busy, t, 0.0),
    )
    return replace(state, chains=ch, cells=cells, ledger=led)


_FEW_DONE = 2  # finish's compact path: at most this many chains finish per instance (float sums exact)


def finish(state, params, key):
    """A chain at its target finishes (module docstring, 6). Usually at most two chains finish per
    instance and step: then only those are read, drawn for and enqueued (:func:`_turns_few`: the
    first and last finished slot of each row and the count, one reduction); a row's float sums
    over at most two non-zero terms are the same in any order, so this is the full-width step
    (:func:`_turns_all`) bit for bit; a step where some instance finishes more takes that one.
    Only the next turns are branched; releasing the finished chains, routing and booking are
    traced once (:func:`_finish_with`)."""
    return _finish_with(state, params, key, lambda pred, *ops: same_either(pred, _turns_all, _turns_few, *ops))


def _finish_few(state, params, key):
    """:func:`finish` when no instance finishes more than two chains (:func:`_turns_few`)."""
    return _finish_with(state, params, key, lambda pred, *ops: _turns_few(*ops))


def _finish_all(state, params, key):
    """:func:`finish` for any number of finished chains per instance (:func:`_turns_all`)."""
    return _finish_with(state, params, key, lambda pred, *ops: _turns_all(*ops))


def _finish_with(state, params, key, turns):
    """Release the finished chains, route (the neighbour with most free capacity for a hop, the
    owning neighbour of its kind for a read task: scores see the freed KV), enqueue the next turns
    with ``turns(pred, state, params, key, done, routes)`` (pred: some instance finishes more than
    two) and book the ledger."""
    ch, cells, led = state.chains, state.cells, state.ledger
    done = ch.active & (ch.out >= ch.target)
    n_done = n_true(done)
    zero = jnp.zeros_like(ch.base)
    released = replace(
        ch,
        active=ch.active & ~done,
        base=jnp.where(done, zero, ch.base),
        out=jnp.where(done, zero, ch.out),
        target=jnp.where(done, zero, ch.target),
    )
    score = free_capacity(replace(state, chains=released))
    _, nb, _ = best_neighbour(score, params)
    routes = (nb, kind_neighbours(score, params, cells.alive)[0]) if n_kinds(params) > 1 else (nb,)
    # the branch reads the finished chains as they were (state), returns the queue after the enqueue
    q, next_seq, dropped, sums, counts = turns(jnp.max(n_done) > _FEW_DONE, state, params, key, done, routes)
    f = led.completed.dtype
    released_kv, mem_flops, soj_sum, removed, trunc, *kind_sums = sums
    n_complete, n_hop, n_comp, *kind_counts = counts
    _, f_cell, _ = cell_compute(state, params)
    cells = replace(
        cells,
        kv_free=cells.kv_free + released_kv,
        debt_s=cells.debt_s + jnp.where(f_cell > 0, mem_flops / jnp.where(f_cell > 0, f_cell, 1.0), 0.0),
        next_seq=next_seq,
    )
    led = replace(
        led,
        turns_done=led.turns_done + n_done.astype(f),
        completed=led.completed + n_complete,
        sojourn_s=led.sojourn_s + soj_sum,
        handoffs=led.handoffs + n_hop,
        dropped=led.dropped + dropped,
        compressions=led.compressions + n_comp,
        tokens_removed=led.tokens_removed + removed,
        flops_memory=led.flops_memory + mem_flops,
        truncated=led.truncated + trunc,
    )
    if n_kinds(params) > 1:
        led = replace(led, kind_handoffs=led.kind_handoffs + kind_counts[0],
                      kind_handoff_tokens=led.kind_handoff_tokens + kind_sums[0])
    return replace(state, chains=released, queue=q, cells=cells, ledger=led)


def _turns_few(state, params, key, done, routes):
    """The next turns when no instance finishes more than two chains: the per-chain work on ``(C, 2)``
    (the first and last finished slot of each row), the enqueue on those entries in slot order.
    Returns (queue, next tickets, dropped per cell, per-cell sums, per-cell counts)."""
    ch = state.chains
    n, ns = ch.active.shape
    slots = jnp.arange(ns, dtype=jnp.int32)[None, :]
    n_done = n_true(done).astype(jnp.int32)
    first = jnp.min(jnp.where(done, slots, ns - 1), axis=1)
    last = jnp.max(jnp.where(done, slots, 0), axis=1)
    idx = jnp.stack([first, last], axis=1)  # (C, 2) slot order
    valid = jnp.arange(2, dtype=jnp.int32)[None, :] < n_done[:, None]
    view = {k: jnp.take_along_axis(getattr(ch, k), idx, axis=1)
            for k in ("base", "out", "target", "turn", "hop", "born", "kind")}
    ids = jnp.arange(n, dtype=jnp.uint32)[:, None] * jnp.uint32(ns) + idx.astype(jnp.uint32)
    u_f, u_t = rng.uniforms_many(key, state.step, (FOLLOWUP, FOLLOWUP_LEN), ids)
    u_f = u_f.astype(params.output_median.dtype)
    new_target = lognormal_tokens(u_t, params.output_median,
                                  params.output_sigma).astype(params.output_median.dtype)
    nx = _next_turns(state, params, valid, view, u_f, new_target)
    f = state.ledger.completed.dtype
    # at most two non-zero terms per row: their sum is the full-width one in any order
    sums = [x[:, 0] + x[:, 1] for x in nx["sums"]]
    counts = [(x[:, 0].astype(jnp.int32) + x[:, 1]).astype(f) for x in nx["counts"]]
    return (*_enqueue_turns(state, view, nx, routes), sums, counts)


def _turns_all(state, params, key, done, routes):
    """The next turns for any number of finished chains per instance: every slot drawn for, the
    per-cell sums full width, the enqueue over every slot (:func:`enqueue`). Kept plain (it runs in
    the few steps where some instance finishes more than two chains): a compact version of its own
    (draws and enqueue in chunks of the finished slots) made the LLM experiments compile 1.4x
    slower. Returns as :func:`_turns_few`."""
    ch = state.chains
    n, ns = ch.active.shape
    ids = jnp.arange(n * ns, dtype=jnp.uint32).reshape(n, ns)
    f = params.output_median.dtype
    u_f, u_t = rng.uniforms_many(key, state.step, (FOLLOWUP, FOLLOWUP_LEN), ids)
    u_f = u_f.astype(f)
    new_target = lognormal_tokens(u_t, params.output_median, params.output_sigma).astype(f)
    view = {k: getattr(ch, k) for k in ("base", "out", "target", "turn", "hop", "born", "kind")}
    nx = _next_turns(state, params, done, view, u_f, new_target)
    # the per-cell float sums in one fused reduction (sim.core.ops.rowsums; each column is summed in
    # the order it is alone, bit for bit); the counts in int32 (exact in any order)
    f = state.ledger.completed.dtype
    sums = list(rowsums(*nx["sums"]))
    counts = [x.astype(f) for x in rowsums(*[c.astype(jnp.int32) for c in nx["counts"]])]
    return (*_enqueue_turns(state, view, nx, routes), sums, counts)


def _enqueue_turns(state, view, nx, routes):
    """Enqueue the next turns of a view of the finished slots (home for a follow-up, ``routes[0]``
    for a hop, ``routes[1]``'s neighbour of its kind for a read task). Returns (queue, next tickets,
    dropped per cell)."""
    n = state.chains.active.shape[0]
    nb = routes[0]
    more, reader = nx["more"], nx["reader"]
    home = jnp.broadcast_to(jnp.arange(n)[:, None], more.shape)
    dest = jnp.where(more, home, nb[:, None])
    cands = jnp.stack([jnp.arange(n), nb], axis=1)
    if nx["kinds_on"]:  # a reader goes to the owning neighbour of its kind with the most free capacity
        nbk = routes[1]
        dest = jnp.where(reader, jnp.take_along_axis(nbk, view["kind"], axis=1), dest)
        cands = jnp.concatenate([cands, nbk], axis=1)
    entries = {
        "prompt": nx["prompt"],
        "target": nx["target"],
        "born": view["born"],
        "turn": jnp.where(more | reader, view["turn"] + jnp.where(more, 1, 0), 0),
        "hop": jnp.where(more | reader, view["hop"], view["hop"] + 1),
        "kind": view["kind"],
    }
    state, _, dropped = enqueue(state, entries, dest, nx["nxt"], cands)
    return state.queue, state.cells.next_seq, dropped


def _next_turns(state, params, valid, view, u_f, new_target):
    """What each finished chain does next (module docstring, 6), elementwise on a view of the
    finished slots (``(C, S)`` whole or ``(C, 2)`` gathered; ``valid`` marks finished ones): read and
    hand on a foreign task, a follow-up turn, a hop, or completion; the next prompt (compressed,
    clipped) and target; the per-slot terms of the per-cell sums and counts."""
    f = state.ledger.completed.dtype
    kinds_on = n_kinds(params) > 1
    reader = valid & (view["target"] == 0) if kinds_on else jnp.zeros_like(valid)  # hand the read task on
    more = valid & ~reader & (view["turn"] + 1 < params.max_turns) & (u_f < params.followup_prob)
    hop = valid & ~reader & ~more & (view["hop"] + 1 < params.hops)
    complete = valid & ~reader & ~more & ~hop
    added = jnp.where(more, params.followup_tokens, params.handoff_tokens)
    if kinds_on:
        added = jnp.where(reader, params.kind_handoff_tokens, added)
    ctx = view["base"] + view["out"]
    history = view["base"] + view["out"] + added
    hist_c, comp_on, comp_cost = compress(history, params)
    nxt = more | hop | reader
    comp_on = comp_on & nxt
    prompt, target, cut = clip_lengths(hist_c, new_target, params.l_max)
    sojourn = jnp.where(complete, (state.step - view["born"]).astype(f) * params.dt, 0.0)
    sums = [jnp.where(valid, ctx, 0.0), jnp.where(comp_on, comp_cost, 0.0), sojourn,
            jnp.where(comp_on, history - hist_c, 0.0), jnp.where(nxt, cut, 0.0)]
    counts = [complete, hop, comp_on]
    if kinds_on:
        sums.append(jnp.where(reader, prompt, 0.0))
        counts.append(reader)
    return {"reader": reader, "more": more, "nxt": nxt, "prompt": prompt, "target": target, "sums": sums,
            "counts": counts, "kinds_on": kinds_on}


def in_system(state):
    """Requests per cell in the queue or in a chain slot."""
    return rowsum(state.queue.active) + rowsum(state.chains.active)


def account(state, params, key=None):
    led = state.ledger
    occ = in_system(state).astype(led.occupancy_s.dtype) * params.dt
    return replace(state, ledger=replace(led, occupancy_s=led.occupancy_s + occ))


PROCESSES = (
    ("tools", tools),
    ("memory", memory),
    ("arrivals", arrivals),
    ("admission", admission),
    ("decode", decode),
    ("finish", finish),
    ("account", account),
)

