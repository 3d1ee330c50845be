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

Draws come from ``sim.rng.uniforms`` keyed by (seed, step, purpose, id), ids being cells,
arrival slots ``c * A + j`` or chain slots ``c * S + s``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtri

from sim import rng
from sim.core.ops import rowsum
from sim.pytree import replace

# Draw purposes of the LLM engine (100-119 reserved for sim.substrates.llm; never renumber).
ARRIVAL_COUNT = 101
PROMPT_LEN = 102
OUTPUT_LEN = 103
TOOL_CALL = 104
FOLLOWUP = 105
FOLLOWUP_LEN = 106

_U_MIN = 1e-12  # keep ndtri finite


# ---- shared helpers --------------------------------------------------------------------------


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


def enqueue(state, entries: dict, tcell, valid, cands):
    """Append entries to the queues of cells ``tcell`` in flat (row-major) order: the r-th entry
    for a cell takes its r-th free slot and ticket ``next_seq + r``; entries beyond the free slots
    are dropped. Entries come as ``(R, K)`` arrays whose row ``i`` only targets cells among
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
    within = jnp.zeros((r_, k_), jnp.int32)
    seen = jnp.zeros((r_, k_), bool)
    offs = jnp.zeros((r_, n), jnp.int32)
    for j in range(t_):
        mj = match[j].astype(jnp.int32)
        cj = jnp.cumsum(mj, axis=1)
        hit = (tc == cd[:, j:j + 1]) & ~seen
        within = jnp.where(hit, cj - mj, within)
        seen = seen | hit
        uniq = jnp.ones(r_, bool)
        for i in range(j):
            uniq = uniq & (cd[:, i] != cd[:, j])
        tot = jnp.where(uniq, cj[:, -1], 0)
        offs = offs + tot[:, None] * (cd[:, j:j + 1] == jnp.arange(n)[None, :])
    csum = jnp.cumsum(offs, axis=0)
    before = csum - offs  # entries of earlier rows per target cell
    rank = (jnp.take_along_axis(before, tc, axis=1) + within).reshape(-1)
    tc = tc.reshape(-1)
    valid = valid.reshape(-1)
    m = tc.shape[0]
    n_free = rowsum(~q.active)
    slot_order = kth_free(q.active)
    ok = valid & (rank < n_free[tc])
    slot = slot_order[tc, jnp.clip(rank, 0, nq - 1)]
    row = jnp.where(ok, tc, n)
    seq = cells.next_seq[tc] + rank

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
    )
    f = state.ledger.arrived.dtype
    total = csum[-1]  # valid entries per target cell; the first n_free of them are accepted
    n_ok = jnp.minimum(total, n_free.astype(total.dtype))
    dropped = (total - n_ok).astype(f)
    cells = replace(cells, next_seq=cells.next_seq + n_ok.astype(cells.next_seq.dtype))
    return replace(state, queue=q, cells=cells), ok, dropped


# ---- processes -------------------------------------------------------------------------------


def tools(state, params, key=None):
    ch, cells, led = state.chains, state.cells, state.ledger
    waiting = ch.active & (ch.tool_wait > 0)
    tw = jnp.where(waiting, ch.tool_wait - 1, ch.tool_wait)
    ret = waiting & (tw == 0)
    reserved = rowsum(jnp.where(ch.active, ch.base + ch.target, 0.0))
    room = cells.kv_capacity - reserved
    want = jnp.where(ret, jnp.clip(params.l_max - (ch.base + ch.target), 0.0, params.r_tool), 0.0)
    before = jnp.cumsum(want, axis=1) - want
    got = jnp.clip(room[:, None] - before, 0.0, want)
    flops = jnp.where(ret, prefill_flops(params, got, ch.base + ch.out), 0.0)
    _, f_cell, _ = cell_compute(state, params)
    f_sum = rowsum(flops)
    debt = cells.debt_s + jnp.where(f_cell > 0, f_sum / jnp.where(f_cell > 0, f_cell, 1.0), 0.0)
    got_sum = rowsum(got)
    led = replace(
        led,
        tool_tokens=led.tool_tokens + got_sum,
        tool_truncated=led.tool_truncated + rowsum(want - got),
        flops_prefill=led.flops_prefill + f_sum,
    )
    ch = replace(ch, tool_wait=tw, base=ch.base + got)
    cells = replace(cells, kv_free=cells.kv_free - got_sum, debt_s=debt)
    return replace(state, chains=ch, cells=cells, ledger=led)


def memory(state, params, key=None):
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
    up = rng.uniforms(key, state.step, PROMPT_LEN, ids)
    uo = rng.uniforms(key, state.step, OUTPUT_LEN, ids)
    prompt = lognormal_tokens(up, params.prompt_median, params.prompt_sigma)
    target = lognormal_tokens(uo, params.output_median, params.output_sigma)
    prompt, target, _ = clip_lengths(prompt, target, params.l_max)
    score = free_capacity(state)
    best, nb, has = best_neighbour(score, params)
    dest = jnp.where(params.routing & has & (best > score), nb, jnp.arange(n))
    tcell = dest[home]
    zeros_i = jnp.zeros((n, a), jnp.int32)
    rs = lambda x: x.reshape(n, a)  # noqa: E731
    entries = {"prompt": rs(prompt), "target": rs(target), "born": zeros_i + state.step,
               "turn": zeros_i, "hop": zeros_i}
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


def _fifo_order(q):
    """Per row, the queue slots by ticket (active first; inactive after, in slot order): one
    single-operand sort of ``ticket * Q + slot`` (keys are unique, so this is exactly
    ``argsort(where(active, seq, max), stable=True)``, several times faster on CPU)."""
    n, nq = q.active.shape
    big = jnp.iinfo(q.seq.dtype).max
    wide = jnp.int64 if jax.config.jax_enable_x64 else None
    slot = jnp.arange(nq, dtype=jnp.int32)
    if wide is None:  # no 64-bit ints: fall back to the two-operand sort
        return jnp.argsort(jnp.where(q.active, q.seq, big), axis=1, stable=True).astype(jnp.int32)
    keys = jnp.where(q.active, q.seq, big).astype(wide) * nq + slot[None, :].astype(wide)
    return (jnp.sort(keys, axis=1) % nq).astype(jnp.int32)


def admission(state, params, key=None):
    ch, q, cells, led = state.chains, state.queue, state.cells, state.ledger
    n, nq = q.active.shape
    ns = ch.active.shape[1]
    order = _fifo_order(q)

    def take(x):
        return jnp.take_along_axis(x, order, axis=1)

    act_s = take(q.active)
    prompt_s = take(q.prompt)
    need_s = jnp.where(act_s, prompt_s + take(q.target), 0.0)
    reserved = rowsum(jnp.where(ch.active, ch.base + ch.target, 0.0))
    room = cells.kv_capacity - reserved
    n_gpu, f_cell, _ = cell_compute(state, params)
    n_active = rowsum(ch.active)
    limit = jnp.minimum(ns - n_active, jnp.maximum(params.max_batch - n_active, 0))
    k = jnp.arange(nq)
    adm_s = (
        act_s
        & (jnp.cumsum(need_s, axis=1) <= room[:, None])
        & (k[None, :] < limit[:, None])
        & (n_gpu > 0)[:, None]
    )
    # the k-th admitted (in FIFO order) takes the k-th free chain slot: a free chain slot of free-rank
    # j takes the j-th request in FIFO order if that one is admitted (gathers, no scatter)
    free = ~ch.active
    j = jnp.cumsum(free, axis=1) - 1
    jc = jnp.clip(j, 0, nq - 1)
    src = jnp.take_along_axis(order, jc, axis=1)  # queue slot feeding chain slot
    new = free & (j < nq) & jnp.take_along_axis(adm_s, jc, axis=1)

    def fill(arr, val):
        return jnp.where(new, jnp.take_along_axis(val, src, axis=1).astype(arr.dtype), arr)

    ch = replace(
        ch,
        active=ch.active | new,
        base=fill(ch.base, q.prompt),
        out=jnp.where(new, jnp.zeros_like(ch.out), ch.out),
        target=fill(ch.target, q.target),
        tool_wait=jnp.where(new, jnp.zeros_like(ch.tool_wait), ch.tool_wait),
        born=fill(ch.born, q.born),
        turn=fill(ch.turn, q.turn),
        hop=fill(ch.hop, q.hop),
    )
    n_adm = rowsum(adm_s)
    admitted_q = jnp.zeros_like(q.active).at[jnp.arange(n)[:, None], order].set(adm_s)
    clear = lambda x: jnp.where(admitted_q, jnp.zeros_like(x), x)  # noqa: E731
    q = replace(q, active=q.active & ~admitted_q, prompt=clear(q.prompt), target=clear(q.target),
                born=clear(q.born), turn=clear(q.turn), hop=clear(q.hop), seq=clear(q.seq))
    p_adm = jnp.where(adm_s, prompt_s, 0.0)
    flops = rowsum(jnp.where(adm_s, prefill_flops(params, prompt_s), 0.0))
    tokens = rowsum(p_adm)
    debt = cells.debt_s + jnp.where(f_cell > 0, flops / jnp.where(f_cell > 0, f_cell, 1.0), 0.0)
    led = replace(
        led,
        admitted=led.admitted + n_adm.astype(led.admitted.dtype),
        tokens_in=led.tokens_in + tokens,
        flops_prefill=led.flops_prefill + flops,
    )
    cells = replace(cells, kv_free=cells.kv_free - tokens, debt_s=debt)
    return replace(state, chains=ch, queue=q, cells=cells, ledger=led)


def decode(state, params, key):
    ch, cells, led = state.chains, state.cells, state.ledger
    n, ns = ch.active.shape
    n_gpu, f_cell, bw_cell = cell_compute(state, params)
    on = n_gpu > 0
    dec = ch.active & (ch.tool_wait == 0)
    b = rowsum(dec).astype(ch.base.dtype)
    ctx = ch.base + ch.out
    s = rowsum(jnp.where(dec, ctx, 0.0))
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
    ids = jnp.arange(n * ns, dtype=jnp.uint32)
    u = rng.uniforms(key, state.step, TOOL_CALL, ids).reshape(n, ns)
    p_call = -jnp.expm1(gain * jnp.log1p(-params.p_tool))
    call = dec & ~fin & (params.p_tool > 0) & (gain > 0) & (u < p_call)
    energy = n_gpu * (params.power_prefill * pre + params.power_decode * dec_time + params.power_idle * idle)
    gain_sum = rowsum(gain)
    led = replace(
        led,
        tokens_out=led.tokens_out + gain_sum,
        iterations=led.iterations + g,
        flops_decode=led.flops_decode + g * flops_it,
        prefill_s=led.prefill_s + n_gpu * pre,
        decode_s=led.decode_s + n_gpu * dec_time,
        idle_s=led.idle_s + n_gpu * idle,
        energy_j=led.energy_j + energy,
        tool_calls=led.tool_calls + rowsum(call).astype(led.tool_calls.dtype),
    )
    ch = replace(ch, out=out, base=base, tool_wait=jnp.where(call, params.tool_steps, ch.tool_wait).astype(ch.tool_wait.dtype))
    cells = replace(
        cells,
        kv_free=cells.kv_free - rowsum(grow),
        debt_s=cells.debt_s - pre,
        step_time_s=jnp.where(busy, t, 0.0),
    )
    return replace(state, chains=ch, cells=cells, ledger=led)


def finish(state, params, key):
    ch, cells, led = state.chains, state.cells, state.ledger
    n, ns = ch.active.shape
    done = ch.active & (ch.out >= ch.target)
    ctx = ch.base + ch.out
    released = rowsum(jnp.where(done, ctx, 0.0))
    ids = jnp.arange(n * ns, dtype=jnp.uint32)
    u_f = rng.uniforms(key, state.step, FOLLOWUP, ids).reshape(n, ns)
    u_l = rng.uniforms(key, state.step, FOLLOWUP_LEN, ids).reshape(n, ns)
    more = done & (ch.turn + 1 < params.max_turns) & (u_f < params.followup_prob)
    hop = done & ~more & (ch.hop + 1 < params.hops)
    complete = done & ~more & ~hop
    history = ch.base + ch.out + jnp.where(more, params.followup_tokens, params.handoff_tokens)
    hist_c, comp_on, comp_cost = compress(history, params)
    nxt = more | hop
    comp_on = comp_on & nxt
    prompt, target, cut = clip_lengths(hist_c, lognormal_tokens(u_l, params.output_median, params.output_sigma), params.l_max)
    # release the finished chains before routing the next turns (scores see the freed KV)
    zero = jnp.zeros_like(ch.base)
    ch = replace(
        ch,
        active=ch.active & ~done,
        base=jnp.where(done, zero, ch.base),
        out=jnp.where(done, zero, ch.out),
        target=jnp.where(done, zero, ch.target),
    )
    mem_flops = rowsum(jnp.where(comp_on, comp_cost, 0.0))
    _, f_cell, _ = cell_compute(state, params)
    cells = replace(
        cells,
        kv_free=cells.kv_free + released,
        debt_s=cells.debt_s + jnp.where(f_cell > 0, mem_flops / jnp.where(f_cell > 0, f_cell, 1.0), 0.0),
    )
    state = replace(state, chains=ch, cells=cells)
    score = free_capacity(state)
    _, nb, _ = best_neighbour(score, params)
    home = jnp.broadcast_to(jnp.arange(n)[:, None], (n, ns))
    dest = jnp.where(more, home, nb[:, None])
    entries = {
        "prompt": prompt,
        "target": target,
        "born": ch.born,
        "turn": jnp.where(more, ch.turn + 1, 0),
        "hop": jnp.where(more, ch.hop, ch.hop + 1),
    }
    cands = jnp.stack([jnp.arange(n), nb], axis=1)
    state, _, dropped = enqueue(state, entries, dest, nxt, cands)
    f = led.completed.dtype
    sojourn = jnp.where(complete, (state.step - ch.born).astype(f) * params.dt, 0.0)
    led = replace(
        led,
        turns_done=led.turns_done + rowsum(done).astype(f),
        completed=led.completed + rowsum(complete).astype(f),
        sojourn_s=led.sojourn_s + rowsum(sojourn),
        handoffs=led.handoffs + rowsum(hop).astype(f),
        dropped=led.dropped + dropped,
        compressions=led.compressions + rowsum(comp_on).astype(f),
        tokens_removed=led.tokens_removed + rowsum(jnp.where(comp_on, history - hist_c, 0.0)),
        flops_memory=led.flops_memory + mem_flops,
        truncated=led.truncated + rowsum(jnp.where(nxt, cut, 0.0)),
    )
    return replace(state, ledger=led)


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

