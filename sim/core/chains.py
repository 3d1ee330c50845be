"""Generic chains (the cascade), shared by the substrates and experiments: ribosomes translating
proteins (biology's protein synthesis, without tools or memory), decode streams generating text (the
``cascade`` experiment, with tools and memory modules). The JAX kernel (:func:`chain_step`) and its one
plain-Python reference (:class:`Chain`, :func:`step_chains`, :func:`chain_step_reference`) live here.

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

Draws: ONE uniform per slot and step, ``sim.rng.uniforms`` keyed by (seed, step, CHAIN_DRAW, slot
id), decides initiation, termination and a tool call in turn: each decision uses the number left by
the one before, rescaled to a fresh uniform (given ``u < p`` the number ``u / p`` is uniform on
[0, 1), given ``u >= p`` so is ``(u - p) / (1 - p)``: the reuse of a uniform's unused bits, exact in
distribution; :mod:`sim.core.rare_events`). A slot that starts this step terminates by ``u / p_init``;
a slot active before by ``u``; a chain that goes on calls a tool by ``(u' - p_stop') / (1 - p_stop')``.
(Until issue 10 each decision had its own hash, purposes 41-43; retired, never reused.)
Purposes 41-44 are reserved for this module. Every parameter may be a scalar or a per-cell ``(C,)``
array. Units of the currency are the caller's (ATP molecules, FLOPs, J); the kernel returns what each cell spent.
"""

from __future__ import annotations

import dataclasses
import math
from math import expm1, inf, log1p

import jax
import jax.numpy as jnp
import numpy as np

from sim import rng
from sim.core.ops import materialize, prefix_sum, rowsum, rowsums
from sim.pytree import pytree_dataclass, replace

CHAIN_INIT, CHAIN_STOP, CHAIN_TOOL = 41, 42, 43  # retired (one hash per decision); never reused
CHAIN_DRAW = 44  # the one draw per slot and step


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


CHAIN_LEDGER_FIELDS = tuple(f.name for f in dataclasses.fields(ChainLedger))


def empty(n_cells: int, slots: int, dtype=np.float64) -> tuple[ChainSlots, ChainLedger]:
    z = np.zeros((n_cells, slots), dtype)
    chains = ChainSlots(active=np.zeros((n_cells, slots), bool), length=z.copy(), made=z.copy(),
                        tool_wait=np.zeros((n_cells, slots), np.int32))
    ledger = ChainLedger(**{f.name: np.zeros(n_cells, dtype) for f in dataclasses.fields(ChainLedger)})
    return chains, ledger


# the tool and memory-module fields of a chain that has neither (biology's protein synthesis)
NO_MODULES = dict(p_tool=0.0, tool_steps=1, r_tool=0.0, mem_threshold=0.0, mem_factor=2.0, mem_cost=0.0)


def without_modules(**fields) -> ChainParams:
    """Chains without tool calls or a memory module (traceable): the given fields, the module
    fields switched off in the dtype of ``c0``, as numpy numbers: known while tracing, so
    :func:`chain_step` leaves out the module arithmetic (and the reads it needs) altogether."""
    dtype = jnp.asarray(fields["c0"]).dtype
    off = {k: np.asarray(v, np.int32 if k == "tool_steps" else dtype) for k, v in NO_MODULES.items()}
    return ChainParams(**fields, **off)


def biology_params(dt: float, **over) -> ChainParams:
    """Protein synthesis: 4 ATP/aa (c1 = 0), 5 aa/s, mean 400 aa (p_stop = 1/400), n_max 35,000 aa
    (titin-sized ceiling; chosen). Textbook values, cited in docs/references.md ("Translation")."""
    p = dict(dt=dt, rate=5.0, c0=4.0, c1=0.0, p_stop=1.0 / 400.0, n_max=35000.0, l0=0.0, init_rate=0.0,
             init_cost=0.0, **NO_MODULES)
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


def _static_zero(x) -> bool:
    """Is ``x`` known while tracing (not a tracer: a Python or numpy number, a concrete array) and 0?"""
    if isinstance(x, jax.core.Tracer):
        return False
    return bool(np.all(np.asarray(x) == 0))


@dataclasses.dataclass(frozen=True)
class _Off:
    """What the parameters switch off for good, known while tracing (numpy numbers, as
    :func:`without_modules` and biology's ``translation.chain_params`` pass them): the kernel then
    leaves out the per-slot arithmetic that could only add zeros, and the slot arrays it would read
    for it (issue 10: with ``c1 = 0``, no tools and no memory module a chain's length is read by
    one kernel, its own update, not by every kernel of the step). A traced parameter takes the
    general path. The same numbers either way, up to the sign of a zero (``x + 0.0`` and
    ``c0 d + 0 (...)`` are not computed; lengths are finite and never -0)."""

    c1: bool  # c1 == 0: the cost does not depend on the length
    r_tool: bool  # r_tool == 0: a returning tool appends nothing
    tools: bool  # p_tool == 0: no chain calls a tool
    memory: bool  # mem_threshold == 0: no memory module

    @classmethod
    def of(cls, params: ChainParams) -> _Off:
        return cls(c1=_static_zero(params.c1), r_tool=_static_zero(params.r_tool), tools=_static_zero(params.p_tool),
                   memory=_static_zero(params.mem_threshold))


# bits of the decision byte chain_step writes per slot and step
_START, _DONE, _CALL, _COMP, _GROW = 1, 2, 4, 8, 16
# the stages of chain_step (:func:`_slots`): chain_demand's quote, then with a budget what it pays and
# the quote, the decisions, the new slots
_STAGES = ("demand", "paid", "quote", "decide", "apply")


def _slots(chains: ChainSlots, params: ChainParams, off: _Off, stage: str, *, u=None, p_init=None, budget=None,
           mem_left=None, phi=None, paid=None, decided=None) -> dict:
    """The per-slot arithmetic of one chain step (steps 1-6 above) as expressions of the step-start
    slot arrays, the draws and per-cell (C,) values, traced anew for each ``stage``:

    * ``paid``: with a ``budget``, the compressions and initiations it pays (in slot order while
      their cumulative cost fits) and the chains that grow, as a byte (uint8 (C, S), bits
      ``_COMP``, ``_START``, ``_GROW``);
    * ``quote``: up to the elongation quote (``el``, ``init``, ``mem`` (C, S) and, with a
      ``budget``, the per-cell ``mem_sum``, ``init_sum`` and ``left`` after the initiations paid);
    * ``decide``: the decision byte (uint8 (C, S), bits ``_START`` ...), given ``phi``;
    * ``apply``: the new slot arrays and the per-slot amounts of the ledger, the decisions taken
      from ``decided`` (the byte) instead of the draws.

    With a budget the later stages take what it pays from ``paid`` (or ``decided``) instead of the
    running sums (a running sum read by several kernels is written as a (C, S) float array).

    Each kernel of the step so computes what it needs from the narrow inputs (the slot arrays, one
    draw and one byte per slot) instead of reading (C, S) float intermediates another kernel wrote
    (issue 10: XLA's CPU fusions write a value that several kernels read, and each of them reads
    every operand; without multi-output fusions a value used by 5 kernels is read 5 times). The
    arithmetic is that of the original single pass, operation for operation: the same bits."""
    n = chains.active.shape[0]
    pc = lambda x: _pc(x, n)  # noqa: E731
    # Each stage writes its masks in its own (equivalent) form: XLA merges equal expressions of
    # two stages into one, and does not copy a value into kernels that one of them feeds through a
    # per-cell sum (the quote -> phi -> the decisions), so it would write every such mask and
    # intermediate (C, S) to memory for the others to read (issue 10). ``salt`` differs per stage.
    salt = _STAGES.index(stage)
    byte_bit = lambda x, b: ((x + jnp.uint8(32 * salt)) & jnp.uint8(b)) > 0  # noqa: E731 (x < 32: same bit)
    bit = (lambda b: byte_bit(decided, b)) if decided is not None else None
    paid_bit = (lambda b: byte_bit(paid, b)) if paid is not None else bit
    active, length, made, wait = chains.active, chains.length, chains.made, chains.tool_wait
    out = {}

    # 1 tools return
    waiting = active & ((wait + jnp.asarray(salt, wait.dtype)) > salt)
    wait = wait - waiting.astype(wait.dtype)  # wait - 1 while waiting
    if not off.r_tool:
        ret = waiting & (wait == 0)
        out["tool_units"] = jnp.where(ret, pc(params.r_tool), 0.0)
        length = length + out["tool_units"]

    # 2 memory module (with a budget: in slot order while the cumulative cost fits)
    comp = None
    if not off.memory:
        thr = pc(params.mem_threshold)
        comp = active & (thr > 0) & (length > thr)
        mem = jnp.where(comp, pc(params.mem_cost) * length, 0.0)
        if budget is not None:
            comp = comp & (paid_bit(_COMP) if paid_bit else prefix_sum(mem) <= budget[:, None])
            mem = jnp.where(comp, mem, 0.0)
            if stage == "paid":
                out["mem_sum"] = rowsum(mem)
                mem_left = budget - out["mem_sum"]
        out["mem"] = mem
        new_len = jnp.where(comp, length / pc(params.mem_factor), length)
        out["removed"] = length - new_len
        length = new_len
    elif budget is not None and mem_left is None:
        mem_left = budget

    # 3 initiation
    ic = pc(params.init_cost)
    if paid_bit:
        start = paid_bit(_START)
    else:
        start = ~active & (u < p_init)
        if budget is not None:
            start = start & (prefix_sum(jnp.where(start, ic, 0.0)) <= mem_left[:, None])
    if stage == "paid":  # what the budget pays, and which chains grow (the later stages need not read the waits)
        byte = start.astype(jnp.uint8) * jnp.uint8(_START)
        byte = byte | ((active | start) & (wait == 0)).astype(jnp.uint8) * jnp.uint8(_GROW)
        if comp is None:
            return byte, None
        return byte | comp.astype(jnp.uint8) * jnp.uint8(_COMP), out["mem_sum"]
    out["init"] = jnp.where(start, ic, 0.0)
    active = active | start
    length = jnp.where(start, pc(params.l0), length)
    made = jnp.where(start, 0.0, made)

    # 4 elongation: the quote, then (with phi) what the budget allows
    grow = paid_bit(_GROW) if paid_bit else active & (wait == 0)
    delta = jnp.where(grow, jnp.minimum(pc(params.rate) * params.dt, pc(params.n_max) - made), 0.0)
    delta = jnp.maximum(delta, 0.0)
    c0, c1 = pc(params.c0), pc(params.c1)
    cost = (lambda d: c0 * d) if off.c1 else (lambda d: elongation_cost(c0, c1, length, d))
    if stage in ("demand", "quote"):
        out["el"] = cost(delta)
        if budget is not None:  # the per-cell sums of what the budget pays and the quote, in one pass
            out["init_sum"], out["demand"] = rowsums(out["init"], out["el"])
            out["left"] = mem_left - out["init_sum"]
        return out
    if phi is not None:
        delta = delta * phi[:, None]
    out["el"] = cost(delta)
    out["delta"] = delta
    length = length + delta
    made = made + delta

    if stage == "decide":
        # 5 termination, 6 tool calls: the draw's rest after initiation, then after termination
        u = jnp.where(start, u / jnp.where(p_init > 0, p_init, 1.0), u)
        p_end = -jnp.expm1(delta * jnp.log1p(-pc(params.p_stop)))
        stop = grow & (delta > 0) & (u < p_end)
        done = active & ((made >= pc(params.n_max)) | stop)
        byte = start.astype(jnp.uint8) * jnp.uint8(_START) | done.astype(jnp.uint8) * jnp.uint8(_DONE)
        byte = byte | grow.astype(jnp.uint8) * jnp.uint8(_GROW)
        if comp is not None:
            byte = byte | comp.astype(jnp.uint8) * jnp.uint8(_COMP)
        if not off.tools:
            u = (u - p_end) / jnp.where(p_end < 1.0, 1.0 - p_end, 1.0)
            call = (grow & ~done & (delta > 0) & (pc(params.p_tool) > 0)
                    & (u < -jnp.expm1(delta * jnp.log1p(-pc(params.p_tool)))))
            byte = byte | call.astype(jnp.uint8) * jnp.uint8(_CALL)
        return byte

    done = bit(_DONE)
    out["start"], out["done"] = start, done
    out["delivered_units"] = jnp.where(done, made, 0.0)
    if not off.tools:
        out["call"] = bit(_CALL)
        wait = jnp.where(out["call"], params.tool_steps, wait).astype(chains.tool_wait.dtype)
    if comp is not None:
        out["comp"] = comp
    out["active"] = active & ~done
    out["length"] = jnp.where(done, 0.0, length)
    out["made"] = jnp.where(done, 0.0, made)
    out["wait"] = jnp.where(done, 0, wait)
    return out


def _materialize_byte(b):
    """A uint8 (C, S) below 128, unchanged, written once by its own kernel (as :func:`sim.core.ops.materialize`:
    XLA does not copy an integer divide into the kernels that read it; ``b >> 7`` is 0, so the divisor is 1)."""
    return b // ((b >> jnp.uint8(7)) | jnp.uint8(1))


def chain_draws(key, step, n: int, s: int):
    """This step's one uniform per slot (``CHAIN_DRAW``), (C, S). A caller that quotes
    (:func:`chain_demand`) then steps (:func:`chain_step`) in one step draws them once and hands
    them to both (``draws=``): traced twice, the Threefry hash (3 hashes, ~390 jaxpr equations, a
    third of the chains' traced program) reached XLA twice and was not merged, and the quote's row
    sum hashed every slot again in its own kernel each step (issue 10, biology chunk at 10,000
    cells: the chains' traced program 1137 -> 739 jaxpr equations, with ``ops.prefix_sum`` without
    a concatenate the chunk's HLO 7355 -> 6970 instructions; the step 1.04-1.15x faster; chains 83.7 -> 84.7
    B/agent, the initiation candidates written once as a byte per slot for the quote and for what
    the budget pays)."""
    return rng.uniforms(key, step, CHAIN_DRAW, jnp.arange(n * s, dtype=jnp.uint32)).reshape(n, s)


def _p_init(params: ChainParams, n: int):
    """Initiation probability of a free slot this step, (C, 1), written once (C,): every slot
    kernel reads it (an expm1 per cell, not per slot)."""
    return materialize(-jnp.expm1(-jnp.broadcast_to(jnp.asarray(params.init_rate), (n,)) * params.dt))[:, None]


def chain_demand(chains: ChainSlots, ledger: ChainLedger, params: ChainParams, key, step, draws=None):
    """Currency (C,) the chains of each cell would spend this step without a budget: the quote a
    caller serves from its currency (e.g. in a priority tier) before calling :func:`chain_step`
    with the budget it grants. Same arithmetic as ``chain_step(..., budget=None)``'s ``spent``.
    ``draws``: this step's :func:`chain_draws` (None: drawn here)."""
    n, s = chains.active.shape
    off = _Off.of(params)
    u = chain_draws(key, step, n, s) if draws is None else draws
    q = _slots(chains, params, off, "demand", u=u, p_init=_p_init(params, n))
    if off.memory:
        spent_el, spent_init = rowsums(q["el"], q["init"])
        return spent_el + spent_init
    spent_el, spent_init, spent_mem = rowsums(q["el"], q["init"], q["mem"])
    return spent_el + spent_init + spent_mem


def chain_step(chains: ChainSlots, ledger: ChainLedger, params: ChainParams, key, step, budget=None,
               details: bool = False, draws=None):
    """One step of every chain slot; ``budget`` (C,) caps each cell's elongation spend (None: no
    cap). Returns ``(chains, ledger, spent)`` with ``spent`` (C,) the currency used this step;
    with ``details=True`` also a dict of this step's per-cell amounts (``units``, ``elongation``,
    ``init``, ``memory``, ``delivered``, ``delivered_units``). ``draws``: this step's
    :func:`chain_draws` (None: drawn here), the ones the caller's :func:`chain_demand` used.

    Kernels per step (issue 10; :func:`_slots`): with a budget one pass over the slots writes
    what it pays (compressions, initiations) and which chains grow as one byte per slot, one
    pass sums the initiations paid and the elongation quote, giving the factor ``phi`` (C,); then
    one pass writes each slot's decisions (initiate, terminate, call a tool, compress, grow) as
    one byte; the new slot arrays and the ledger's per-cell sums read that byte instead of the
    draw. The same numbers as one pass over the slots (bit for bit: ``bench_step_work.py ab``)."""
    n, s = chains.active.shape
    off = _Off.of(params)
    u = chain_draws(key, step, n, s) if draws is None else draws
    kw = dict(u=u, p_init=_p_init(params, n))
    sums = {}
    phi = None
    if budget is not None:
        budget = jnp.asarray(budget)
        paid, mem_sum = _slots(chains, params, off, "paid", budget=budget, **kw)
        if mem_sum is not None:
            sums["mem"] = mem_sum
            kw["mem_left"] = budget - mem_sum
        kw.update(budget=budget, paid=_materialize_byte(paid))
        q = _slots(chains, params, off, "quote", **kw)
        avail = jnp.maximum(q["left"], 0.0)
        demand = q["demand"]
        # written once (C,): the slot kernels below would otherwise recompute it per slot (issue 10)
        phi = materialize(jnp.where(demand > avail, avail / jnp.where(demand > 0, demand, 1.0), 1.0))
        sums["init"] = q["init_sum"]
    decided = _materialize_byte(_slots(chains, params, off, "decide", phi=phi, **kw))
    a = _slots(chains, params, off, "apply", phi=phi, decided=decided, budget=budget)

    f = ledger.spent.dtype
    names = ["el", "delta", "start", "done", "delivered_units"]
    names += [k for k in ("call", "tool_units", "comp", "removed") if k in a]
    names += [k for k in ("init", "mem") if k in a and k not in sums]
    vals = [a[k].astype(f) if a[k].dtype == jnp.bool_ else a[k] for k in names]
    # the ledger's per-cell sums in one variadic reduction (``ops.rowsums``): each sum adds its slots
    # in the order of a reduction of its own (the same bits), in one kernel (issue 10, round six:
    # chains 84.7 -> 79.7 B/agent/step, the step 1.05x at 40,000 cells; in round five, next to the
    # other kernels of then, it had measured 0.92x)
    sums.update(zip(names, rowsums(*vals)))
    spent_el = sums["el"]
    spent_init = sums["init"]
    spent_mem = sums.get("mem")
    spent = spent_el + spent_init if spent_mem is None else spent_el + spent_init + spent_mem
    new = dict(
        spent=spent,
        elongation_spent=spent_el,
        init_spent=spent_init,
        memory_spent=spent_mem,
        units=sums["delta"],
        initiated=sums["start"],
        delivered=sums["done"],
        delivered_units=sums["delivered_units"],
        tool_calls=sums.get("call"),
        tool_units=sums.get("tool_units"),
        compressions=sums.get("comp"),
        units_removed=sums.get("removed"),
    )
    # a field that can only gain zeros for good is left as it is (not read, not written)
    ledger = replace(ledger, **{k: getattr(ledger, k) + v for k, v in new.items() if v is not None})
    out = ChainSlots(active=a["active"], length=a["length"], made=a["made"], tool_wait=a["wait"])
    if details:
        info = dict(units=sums["delta"], elongation=spent_el, init=spent_init,
                    memory=jnp.zeros_like(spent) if spent_mem is None else spent_mem, delivered=sums["done"],
                    delivered_units=sums["delivered_units"])
        return out, ledger, spent, info
    return out, ledger, spent


# ---------------------------------------------------------------------------- the plain-Python reference
class ChainStep:
    """One cell's chain parameters for one step, as plain floats (``sim.core.chains.ChainParams``
    with the rate already times dt and the per-unit probabilities as logs)."""

    __slots__ = ("rate_dt", "c0", "c1", "log_keep_stop", "n_max", "l0", "p_init", "init_cost",
                 "p_tool", "log_keep_tool", "tool_steps", "r_tool", "mem_threshold", "mem_factor", "mem_cost")

    def __init__(self, rate_dt, c0, c1=0.0, p_stop=0.0, n_max=inf, l0=0.0, p_init=0.0, init_cost=0.0,
                 p_tool=0.0, tool_steps=1, r_tool=0.0, mem_threshold=0.0, mem_factor=2.0, mem_cost=0.0,
                 log_keep_stop=None):
        self.rate_dt, self.c0, self.c1 = rate_dt, c0, c1
        self.log_keep_stop = log1p(-p_stop) if log_keep_stop is None else log_keep_stop
        self.n_max, self.l0, self.p_init, self.init_cost = n_max, l0, p_init, init_cost
        self.p_tool = p_tool
        self.log_keep_tool = log1p(-p_tool) if p_tool > 0 else 0.0
        self.tool_steps, self.r_tool = int(tool_steps), r_tool
        self.mem_threshold, self.mem_factor, self.mem_cost = mem_threshold, mem_factor, mem_cost


class Chain:
    """A chain slot (``chain_id = cell * slots + slot`` keys its draws): a ribosome cohort
    translating one protein per ribosome in lockstep, or a decode stream. The methods are the
    slot-wise operations of ``sim.core.chains.chain_step``, called by :func:`step_chains`."""

    __slots__ = ("chain_id", "active", "length", "made", "tool_wait", "grow", "delta", "u")

    def __init__(self, chain_id: int, active=False, length=0.0, made=0.0, tool_wait=0):
        self.chain_id = int(chain_id)
        self.active, self.length, self.made, self.tool_wait = bool(active), float(length), float(made), int(tool_wait)
        self.grow, self.delta = False, 0.0  # this step's elongation quote
        self.u = 0.0  # this step's draw (what is left of it after the decisions taken)

    @classmethod
    def from_state(cls, chains: ck.ChainSlots, i: int, s: int) -> Chain:
        """Slot ``s`` of cell ``i`` of ``chains`` (numpy or JAX ``ChainSlots``)."""
        return cls(i * chains.active.shape[1] + s, chains.active[i, s], chains.length[i, s], chains.made[i, s],
                   chains.tool_wait[i, s])

    def __repr__(self) -> str:
        return (f"Chain({self.chain_id}, active={self.active}, length={self.length}, made={self.made}, "
                f"tool_wait={self.tool_wait})")

    def quote(self, P: ChainStep, u: float):
        """(memory, initiation, elongation) cost of this step with no budget; changes nothing."""
        active, length, made, wait = self.active, self.length, self.made, self.tool_wait
        if active and wait > 0:
            wait -= 1
            if wait == 0:
                length += P.r_tool
        mem = 0.0
        if active and P.mem_threshold > 0 and length > P.mem_threshold:
            mem = P.mem_cost * length
            length = length / P.mem_factor
        init = 0.0
        if not active and u < P.p_init:
            active, length, made, init = True, P.l0, 0.0, P.init_cost
        el = 0.0
        if active and wait == 0:
            d = min(P.rate_dt, P.n_max - made)
            el = elongation_cost(P.c0, P.c1, length, d if d > 0.0 else 0.0)
        return mem, init, el

    def tool_return(self, P: ChainStep) -> float:
        if self.active and self.tool_wait > 0:
            self.tool_wait -= 1
            if self.tool_wait == 0:
                self.length += P.r_tool
                return P.r_tool
        return 0.0

    def memory_cost(self, P: ChainStep):
        """Cost of compressing this chain now (None: not a candidate)."""
        if self.active and P.mem_threshold > 0 and self.length > P.mem_threshold:
            return P.mem_cost * self.length
        return None

    def compress(self, P: ChainStep) -> float:
        new = self.length / P.mem_factor
        removed = self.length - new
        self.length = new
        return removed

    def wants_start(self, P: ChainStep) -> bool:
        return not self.active and self.u < P.p_init

    def start(self, P: ChainStep) -> None:
        self.active, self.length, self.made = True, P.l0, 0.0
        self.u = self.u / P.p_init if P.p_init > 0 else self.u

    def elongation_quote(self, P: ChainStep) -> float:
        grow = self.active and self.tool_wait == 0
        d = 0.0
        if grow:
            d = min(P.rate_dt, P.n_max - self.made)
            d = d if d > 0.0 else 0.0
        self.grow, self.delta = grow, d
        return elongation_cost(P.c0, P.c1, self.length, d)

    def elongate(self, P: ChainStep, phi: float):
        """Grow by ``phi`` of the quoted units; terminate or call a tool (decided by what is left of
        this step's draw). Returns (units, cost, units delivered or None, tool calls)."""
        d = self.delta * phi
        cost = elongation_cost(P.c0, P.c1, self.length, d)
        self.length += d
        self.made += d
        p_end = -expm1(d * P.log_keep_stop)
        stop = self.grow and d > 0 and self.u < p_end
        if self.active and (self.made >= P.n_max or stop):
            delivered = self.made
            self.active, self.length, self.made, self.tool_wait = False, 0.0, 0.0, 0
            return d, cost, delivered, 0
        u_tool = (self.u - p_end) / (1.0 - p_end if p_end < 1.0 else 1.0)
        if self.grow and d > 0 and P.p_tool > 0 and u_tool < -expm1(d * P.log_keep_tool):
            self.tool_wait = P.tool_steps
            return d, cost, None, 1
        return d, cost, None, 0


def chain_quote(chains, P: ChainStep, u) -> float:
    """Currency the chains of one cell would spend this step with no budget (``chain_demand``);
    ``u``: this step's draws by chain id."""
    el = init = mem = 0.0
    for ch in chains:
        m, i, e = ch.quote(P, u[ch.chain_id])
        el += e
        init += i
        mem += m
    return el + init + mem


def step_chains(chains, P: ChainStep, led: dict, u, budget=inf):
    """One step of one cell's chains (``sim.core.chains.chain_step`` for a cell): tools return,
    memory compressions and initiations are paid in slot order while their cumulative cost fits
    the ``budget``; every elongating chain then slows by the same factor if the rest is short;
    termination and tool calls. ``u``: this step's draws (``CHAIN_DRAW``) by chain id. Updates
    ``led`` (``CHAIN_LEDGER_FIELDS``); returns ``(spent, units)`` of this step."""
    for ch in chains:
        ch.u = u[ch.chain_id]
    left = budget
    run_mem = mem_sum = 0.0
    tool_units = removed = 0.0
    comps = 0
    for ch in chains:  # 1 tools return, 2 memory module
        tool_units += ch.tool_return(P)
        cost = ch.memory_cost(P)
        if cost is not None:
            run_mem += cost
            if run_mem <= left:
                removed += ch.compress(P)
                mem_sum += cost
                comps += 1
    left -= mem_sum
    run_init = init_sum = 0.0
    started = 0
    for ch in chains:  # 3 initiation
        if ch.wants_start(P):
            run_init += P.init_cost
            if run_init <= left:
                ch.start(P)
                init_sum += P.init_cost
                started += 1
    left -= init_sum
    demand = 0.0
    for ch in chains:  # 4 elongation demand
        demand += ch.elongation_quote(P)
    phi = 1.0
    avail = left if left > 0.0 else 0.0
    if demand > avail:
        phi = avail / demand if demand > 0 else 1.0
    units = el_sum = delivered_units = 0.0
    delivered = calls = 0
    for ch in chains:  # 4 elongate, 5 terminate, 6 tool calls
        d, cost, done_units, called = ch.elongate(P, phi)
        units += d
        el_sum += cost
        if done_units is not None:
            delivered += 1
            delivered_units += done_units
        calls += called
    spent = el_sum + init_sum + mem_sum
    led["spent"] += spent
    led["elongation_spent"] += el_sum
    led["init_spent"] += init_sum
    led["memory_spent"] += mem_sum
    led["units"] += units
    led["initiated"] += started
    led["delivered"] += delivered
    led["delivered_units"] += delivered_units
    led["tool_calls"] += calls
    led["tool_units"] += tool_units
    led["compressions"] += comps
    led["units_removed"] += removed
    return spent, units


def chain_step_reference(chains: ChainSlots, ledger: ChainLedger, params: ChainParams, key, step, budget=None):
    """Plain-Python version of :func:`chain_step` for whole ``(C, S)`` blocks: each cell's slots
    become :class:`Chain` objects stepped by :func:`step_chains` (the one chain reference, also
    what the biology reference and the Mesa chain agents run), with the same draws."""
    n, s = np.shape(chains.active)
    draws = rng.host_uniforms(key, step, CHAIN_DRAW, n * s).tolist()
    per_cell = {f.name: np.broadcast_to(np.asarray(getattr(params, f.name)), (n,)) for f in dataclasses.fields(params)}
    dt = float(np.asarray(params.dt).reshape(-1)[0])
    led = {f: np.array(getattr(ledger, f), np.float64, copy=True) for f in CHAIN_LEDGER_FIELDS}
    out = {f: np.array(getattr(chains, f), copy=True) for f in ("active", "length", "made", "tool_wait")}
    spent = np.zeros(n)
    for c in range(n):
        g = {k: v[c].item() for k, v in per_cell.items()}
        P = ChainStep(rate_dt=g["rate"] * dt, c0=g["c0"], c1=g["c1"], p_stop=g["p_stop"], n_max=g["n_max"],
                      l0=g["l0"], p_init=-math.expm1(-g["init_rate"] * dt), init_cost=g["init_cost"],
                      p_tool=g["p_tool"], tool_steps=int(g["tool_steps"]), r_tool=g["r_tool"],
                      mem_threshold=g["mem_threshold"], mem_factor=g["mem_factor"], mem_cost=g["mem_cost"])
        cell = [Chain.from_state(chains, c, k) for k in range(s)]
        cell_led = {f: 0.0 for f in CHAIN_LEDGER_FIELDS}
        spent[c], _ = step_chains(cell, P, cell_led, draws, math.inf if budget is None else float(budget[c]))
        for k, ch in enumerate(cell):
            out["active"][c, k], out["length"][c, k] = ch.active, ch.length
            out["made"][c, k], out["tool_wait"][c, k] = ch.made, ch.tool_wait
        for f in CHAIN_LEDGER_FIELDS:
            led[f][c] += cell_led[f]
    return ChainSlots(**out), ChainLedger(**led), spent


