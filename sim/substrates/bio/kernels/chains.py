"""Generic chains (the cascade): ribosomes translating proteins, decode streams generating text.

A fixed-capacity block of chain slots per cell ``(C, S)`` (slot ``s`` of cell ``c`` has id
``c * S + s``). Each active chain holds ``length`` units (what its cost depends on: the residues
of the nascent protein, or the tokens of context) and has made ``made`` units. Per step:

1. tools: a chain waiting on a tool counts down; on return ``r_tool`` units are appended to its
   length (retrieval augmentation: every later unit costs more when ``c1 > 0``).
2. memory: a chain longer than ``mem_threshold`` is compressed to ``length / mem_factor`` at a
   cost of ``mem_cost`` currency per unit held before compression.
3. initiation: a free slot starts a chain with probability ``1 - exp(-init_rate dt)`` (taking
   substrate: an mRNA, a prompt of ``l0`` units), paying ``init_cost``.
4. elongation: each chain not waiting adds ``delta = rate dt`` units (capped at ``n_max - made``)
   at the cost ``c(L) = c0 + c1 L`` per unit, integrated over the step:
   ``c0 delta + c1 (L delta + delta^2 / 2)``. If the cell's ``budget`` of currency is short, every
   chain of the cell slows by the same factor ``phi = budget / demand`` (the cost is convex in
   delta, so the spend stays within the budget: no pool goes negative). With a budget, memory
   compressions (2) and initiations (3) are paid first, in slot order while their cumulative
   cost fits; elongation gets what is left.
5. termination: with probability ``1 - (1 - p_stop)^delta`` (``p_stop`` per unit) or at
   ``made >= n_max``; the chain delivers ``made`` units of work and frees its slot (and what it
   held: the KV slots of an LLM stream).
6. tool calls: a chain that goes on calls a tool with probability ``1 - (1 - p_tool)^delta`` and
   waits ``tool_steps`` steps.

Defaults for biology (``biology_params``): ~4 ATP-equivalents per amino acid (c0 = 4, c1 = 0:
constant cost per unit), elongation ~5 aa/s in mammals, mean length ~400 aa (p_stop = 1/400)
(textbook values; docs/references.md, "Translation"). For an LLM decode stream (``llm_params``)
the currency is FLOPs: c0 = 2N, c1 = 2 n_layer d_model (Kaplan et al. 2020), so a chain of
``L`` units from ``l0 = 0`` costs ``2N L + n_layer d L^2`` = the prefill cost of ``L`` tokens.

Draws: ``sim.rng.uniforms`` keyed by (seed, step, purpose, slot id); purposes 41-43 are reserved
for this module. Every parameter may be a scalar or a per-cell ``(C,)`` array. Units of the
currency are the caller's (ATP molecules, FLOPs, J); the kernel returns what each cell spent.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np

from sim import rng
from sim.core.ops import rowsum
from sim.pytree import pytree_dataclass, replace

CHAIN_INIT = 41
CHAIN_STOP = 42
CHAIN_TOOL = 43


@pytree_dataclass
class ChainSlots:
    active: object  # (C, S) bool
    length: object  # (C, S) units held (cost-relevant)
    made: object  # (C, S) units made by this chain
    tool_wait: object  # (C, S) int32 steps left waiting on a tool


@pytree_dataclass
class ChainParams:
    dt: object  # s
    rate: object  # units/s per elongating chain
    c0: object  # currency per unit at length 0
    c1: object  # currency per unit per unit of length
    p_stop: object  # termination probability per unit
    n_max: object  # units made at most (L_max)
    l0: object  # units held at initiation (prompt); 0 for a protein
    init_rate: object  # 1/s per free slot
    init_cost: object  # currency per initiation
    p_tool: object  # tool-call probability per unit
    tool_steps: object  # int32 steps a tool call takes (>= 1)
    r_tool: object  # units appended when the tool returns
    mem_threshold: object  # units; <= 0: no memory module
    mem_factor: object  # > 1
    mem_cost: object  # currency per unit held, per compression


@pytree_dataclass
class ChainLedger:
    """Cumulative per-cell accounts (currency in the caller's unit)."""

    spent: object  # all currency spent on chains
    elongation_spent: object
    init_spent: object
    memory_spent: object
    units: object  # units made
    initiated: object
    delivered: object  # chains finished
    delivered_units: object  # units of finished chains (the work)
    tool_calls: object
    tool_units: object
    compressions: object
    units_removed: object


def empty(n_cells: int, slots: int, dtype=np.float64) -> tuple[ChainSlots, ChainLedger]:
    z = np.zeros((n_cells, slots), dtype)
    chains = ChainSlots(active=np.zeros((n_cells, slots), bool), length=z.copy(), made=z.copy(),
                        tool_wait=np.zeros((n_cells, slots), np.int32))
    ledger = ChainLedger(**{f.name: np.zeros(n_cells, dtype) for f in dataclasses.fields(ChainLedger)})
    return chains, ledger


def biology_params(dt: float, **over) -> ChainParams:
    """Protein synthesis: 4 ATP/aa (c1 = 0), 5 aa/s, mean 400 aa (p_stop = 1/400), n_max 35,000 aa
    (titin-sized ceiling; chosen). Textbook values, cited in docs/references.md ("Translation")."""
    p = dict(dt=dt, rate=5.0, c0=4.0, c1=0.0, p_stop=1.0 / 400.0, n_max=35000.0, l0=0.0, init_rate=0.0,
             init_cost=0.0, p_tool=0.0, tool_steps=1, r_tool=0.0, mem_threshold=0.0, mem_factor=2.0, mem_cost=0.0)
    p.update(over)
    return _as_params(p)


def llm_params(dt: float, model, **over) -> ChainParams:
    """A decode stream of ``model`` (``sim.substrates.llm.specs.ModelSpec``) costed in FLOPs: c0 = 2N,
    c1 = 2 n_layer d_model; stops at the model's context limit."""
    p = dict(dt=dt, rate=1.0 / dt, c0=model.flops_per_token, c1=model.flops_per_token_per_ctx, p_stop=0.0,
             n_max=float(model.max_context), l0=0.0, init_rate=0.0, init_cost=0.0, p_tool=0.0, tool_steps=1,
             r_tool=0.0, mem_threshold=0.0, mem_factor=4.0, mem_cost=0.0)
    p.update(over)
    return _as_params(p)


def _as_params(p: dict) -> ChainParams:
    vals = {k: (np.asarray(v, np.int32) if k == "tool_steps" else np.asarray(v, np.float64)) for k, v in p.items()}
    return ChainParams(**vals)


def _pc(x, n):
    """Scalar or per-cell parameter -> (C, 1) for broadcasting over slots."""
    return jnp.broadcast_to(jnp.asarray(x), (n,))[:, None]


def elongation_cost(c0, c1, length, delta):
    """Currency to grow a chain from ``length`` by ``delta`` units at c(L) = c0 + c1 L."""
    return c0 * delta + c1 * (length * delta + 0.5 * delta * delta)


def chain_demand(chains: ChainSlots, ledger: ChainLedger, params: ChainParams, key, step):
    """Currency (C,) the chains of each cell would spend this step without a budget: the quote a
    caller serves from its currency (e.g. in a priority tier) before calling :func:`chain_step`
    with the budget it grants. Same arithmetic as ``chain_step(..., budget=None)``'s ``spent``."""
    return chain_step(chains, ledger, params, key, step)[2]


def chain_step(chains: ChainSlots, ledger: ChainLedger, params: ChainParams, key, step, budget=None,
               details: bool = False):
    """One step of every chain slot; ``budget`` (C,) caps each cell's elongation spend (None: no
    cap). Returns ``(chains, ledger, spent)`` with ``spent`` (C,) the currency used this step;
    with ``details=True`` also a dict of this step's per-cell amounts (``units``, ``elongation``,
    ``init``, ``memory``, ``delivered``, ``delivered_units``)."""
    n, s = chains.active.shape
    pc = lambda x: _pc(x, n)  # noqa: E731
    ids = jnp.arange(n * s, dtype=jnp.uint32)
    active, length, made, wait = chains.active, chains.length, chains.made, chains.tool_wait

    # 1 tools return
    waiting = active & (wait > 0)
    wait = jnp.where(waiting, wait - 1, wait)
    ret = waiting & (wait == 0)
    tool_units = jnp.where(ret, pc(params.r_tool), 0.0)
    length = length + tool_units

    # 2 memory module (with a budget: in slot order while the cumulative cost fits)
    thr = pc(params.mem_threshold)
    comp = active & (thr > 0) & (length > thr)
    mem_spent = jnp.where(comp, pc(params.mem_cost) * length, 0.0)
    if budget is not None:
        budget = jnp.asarray(budget)
        comp = comp & (jnp.cumsum(mem_spent, axis=1) <= budget[:, None])
        mem_spent = jnp.where(comp, mem_spent, 0.0)
        budget = budget - rowsum(mem_spent)
    new_len = jnp.where(comp, length / pc(params.mem_factor), length)
    removed = length - new_len
    length = new_len

    # 3 initiation
    u_init = rng.uniforms(key, step, CHAIN_INIT, ids).reshape(n, s)
    start = ~active & (u_init < -jnp.expm1(-pc(params.init_rate) * params.dt))
    if budget is not None:
        start = start & (jnp.cumsum(jnp.where(start, pc(params.init_cost), 0.0), axis=1) <= budget[:, None])
        budget = budget - rowsum(jnp.where(start, pc(params.init_cost), 0.0))
    active = active | start
    length = jnp.where(start, pc(params.l0), length)
    made = jnp.where(start, 0.0, made)
    init_spent = jnp.where(start, pc(params.init_cost), 0.0)

    # 4 elongation (currency-limited per cell)
    grow = active & (wait == 0)
    delta = jnp.where(grow, jnp.minimum(pc(params.rate) * params.dt, pc(params.n_max) - made), 0.0)
    delta = jnp.maximum(delta, 0.0)
    c0, c1 = pc(params.c0), pc(params.c1)
    demand = rowsum(elongation_cost(c0, c1, length, delta))
    if budget is None:
        phi = jnp.ones(n, demand.dtype)
    else:
        avail = jnp.maximum(budget, 0.0)
        phi = jnp.where(demand > avail, avail / jnp.where(demand > 0, demand, 1.0), 1.0)
    delta = delta * phi[:, None]
    el_cost = elongation_cost(c0, c1, length, delta)
    length = length + delta
    made = made + delta

    # 5 termination
    u_stop = rng.uniforms(key, step, CHAIN_STOP, ids).reshape(n, s)
    p_stop = pc(params.p_stop)
    stop = grow & (delta > 0) & (u_stop < -jnp.expm1(delta * jnp.log1p(-p_stop)))
    done = active & ((made >= pc(params.n_max)) | stop)
    delivered_units = jnp.where(done, made, 0.0)

    # 6 tool calls
    u_tool = rng.uniforms(key, step, CHAIN_TOOL, ids).reshape(n, s)
    call = grow & ~done & (delta > 0) & (pc(params.p_tool) > 0) & (u_tool < -jnp.expm1(delta * jnp.log1p(-pc(params.p_tool))))
    wait = jnp.where(call, params.tool_steps, wait).astype(chains.tool_wait.dtype)

    active = active & ~done
    length = jnp.where(done, 0.0, length)
    made = jnp.where(done, 0.0, made)
    wait = jnp.where(done, 0, wait)

    spent_el = rowsum(el_cost)
    spent_init = rowsum(init_spent)
    spent_mem = rowsum(mem_spent)
    spent = spent_el + spent_init + spent_mem
    f = ledger.spent.dtype
    ledger = replace(
        ledger,
        spent=ledger.spent + spent,
        elongation_spent=ledger.elongation_spent + spent_el,
        init_spent=ledger.init_spent + spent_init,
        memory_spent=ledger.memory_spent + spent_mem,
        units=ledger.units + rowsum(delta),
        initiated=ledger.initiated + rowsum(start).astype(f),
        delivered=ledger.delivered + rowsum(done).astype(f),
        delivered_units=ledger.delivered_units + rowsum(delivered_units),
        tool_calls=ledger.tool_calls + rowsum(call).astype(f),
        tool_units=ledger.tool_units + rowsum(tool_units),
        compressions=ledger.compressions + rowsum(comp).astype(f),
        units_removed=ledger.units_removed + rowsum(removed),
    )
    out = ChainSlots(active=active, length=length, made=made, tool_wait=wait)
    if details:
        info = dict(units=rowsum(delta), elongation=spent_el, init=spent_init, memory=spent_mem,
                    delivered=rowsum(done).astype(f), delivered_units=rowsum(delivered_units))
        return out, ledger, spent, info
    return out, ledger, spent


def chain_step_reference(chains: ChainSlots, ledger: ChainLedger, params: ChainParams, key, step, budget=None):
    """Plain-Python version of :func:`chain_step` (slot by slot, same draws) for agreement tests
    and as the template of the Mesa chain agents."""
    act = np.array(chains.active, copy=True)
    n, s = act.shape
    length = np.array(chains.length, np.float64, copy=True)
    made = np.array(chains.made, np.float64, copy=True)
    wait = np.array(chains.tool_wait, np.int32, copy=True)
    ids = np.arange(n * s)
    draws = {p: np.asarray(rng.uniforms(key, step, p, jnp.asarray(ids, jnp.uint32))).reshape(n, s)
             for p in (CHAIN_INIT, CHAIN_STOP, CHAIN_TOOL)}
    P = {f.name: np.broadcast_to(np.asarray(getattr(params, f.name)), (n,)) for f in dataclasses.fields(params)}
    dt = float(np.asarray(params.dt).reshape(-1)[0])
    led = {f.name: np.array(getattr(ledger, f.name), np.float64, copy=True) for f in dataclasses.fields(ledger)}
    spent = np.zeros(n)
    for c in range(n):
        g = {k: float(v[c]) for k, v in P.items()}
        left = math.inf if budget is None else float(budget[c])
        deltas, info = [0.0] * s, [dict() for _ in range(s)]
        init_sum, mem_sum, demand = 0.0, 0.0, 0.0
        run_mem = 0.0
        for k in range(s):  # tools return, memory module
            tu, rem, comp = 0.0, 0.0, False
            if act[c, k] and wait[c, k] > 0:
                wait[c, k] -= 1
                if wait[c, k] == 0:
                    tu = g["r_tool"]
                    length[c, k] += tu
            if act[c, k] and g["mem_threshold"] > 0 and length[c, k] > g["mem_threshold"]:
                cost = g["mem_cost"] * length[c, k]
                run_mem += cost
                if run_mem <= left:
                    comp = True
                    mem_sum += cost
                    new = length[c, k] / g["mem_factor"]
                    rem = length[c, k] - new
                    length[c, k] = new
            info[k] = dict(tu=tu, rem=rem, comp=comp, started=False)
        left -= mem_sum
        run_init = 0.0
        for k in range(s):  # initiation
            if not act[c, k] and draws[CHAIN_INIT][c, k] < -math.expm1(-g["init_rate"] * dt):
                run_init += g["init_cost"]
                if run_init <= left:
                    act[c, k], info[k]["started"] = True, True
                    length[c, k], made[c, k] = g["l0"], 0.0
                    init_sum += g["init_cost"]
        left -= init_sum
        for k in range(s):  # elongation demand
            grow = bool(act[c, k] and wait[c, k] == 0)
            d = max(min(g["rate"] * dt, g["n_max"] - made[c, k]), 0.0) if grow else 0.0
            deltas[k] = d
            demand += elongation_cost(g["c0"], g["c1"], length[c, k], d)
            info[k]["grow"] = grow
        phi = 1.0
        if budget is not None:
            avail = max(left, 0.0)
            if demand > avail:
                phi = avail / demand if demand > 0 else 1.0
        units = delivered = delivered_units = calls = 0.0
        el_sum = 0.0
        for k in range(s):
            d = deltas[k] * phi
            cost = elongation_cost(g["c0"], g["c1"], length[c, k], d)
            el_sum += cost
            length[c, k] += d
            made[c, k] += d
            units += d
            stop = info[k]["grow"] and d > 0 and draws[CHAIN_STOP][c, k] < -math.expm1(d * math.log1p(-g["p_stop"]))
            done = bool(act[c, k]) and (made[c, k] >= g["n_max"] or stop)
            if done:
                delivered += 1
                delivered_units += made[c, k]
            elif (info[k]["grow"] and d > 0 and g["p_tool"] > 0
                  and draws[CHAIN_TOOL][c, k] < -math.expm1(d * math.log1p(-g["p_tool"]))):
                wait[c, k] = int(P["tool_steps"][c])
                calls += 1
            if done:
                act[c, k], length[c, k], made[c, k], wait[c, k] = False, 0.0, 0.0, 0
            led["tool_units"][c] += info[k]["tu"]
            led["units_removed"][c] += info[k]["rem"]
            led["compressions"][c] += info[k]["comp"]
            led["initiated"][c] += info[k]["started"]
        spent[c] = el_sum + init_sum + mem_sum
        led["spent"][c] += spent[c]
        led["elongation_spent"][c] += el_sum
        led["init_spent"][c] += init_sum
        led["memory_spent"][c] += mem_sum
        led["units"][c] += units
        led["delivered"][c] += delivered
        led["delivered_units"][c] += delivered_units
        led["tool_calls"][c] += calls
    return ChainSlots(act, length, made, wait), ChainLedger(**led), spent
