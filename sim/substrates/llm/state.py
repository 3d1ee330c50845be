"""State of the LLM preset as PyTrees of fixed-capacity arrays with masks (shapes never change).

- cells = model instances ``(C,)``; producers = GPUs ``(C, G)``; chains = decode streams
  ``(C, S)`` (slot ``s`` of cell ``c`` has the global id ``c * S + s``); a request queue ``(C, Q)``
  per cell. A request (one conversation: its turns and hops) occupies exactly one queue slot or
  one chain slot at any time, which is what Little's law counts.
- The KV cache is the conserved carrier: ``kv_free + sum(context of active chains) = kv_capacity``
  per cell, booked incrementally in ``Cells.kv_free`` and checked against the chains.
- Task kinds (``substrate.kinds``, off at ``n: 1``): every request carries a kind (``kind``); an
  instance's cached context prefix (system prompt + the kinds' contexts it keeps) is held once per
  instance, outside the chains, by taking it out of ``kv_capacity``. A queued request or chain with
  ``target == 0`` is a *reader*: a task of a foreign kind the instance will read (prefill) and hand
  on to an owner of the kind, decoding nothing (``sim.substrates.llm.kernels`` module docstring).
- A chain's context (KV tokens) is ``base + out``: ``base`` is the history it was admitted with
  (prompt) plus tokens appended by tools, less what a memory module removed; ``out`` is what it
  generated in this turn. The chain reserves ``base + target`` of KV on admission, so the cache
  never overflows while it grows.

Units: tokens, s, J, FLOP. Counters in the ledger are float64 (exact below 2^53).
"""

from __future__ import annotations

from sim.pytree import pytree_dataclass


@pytree_dataclass
class Cells:
    alive: object  # (C,) bool
    kv_capacity: object  # (C,) tokens of KV cache (u * HBM - weights) / KV bytes per token
    kv_free: object  # (C,) tokens of KV cache not holding any chain's context
    debt_s: object  # (C,) s of prefill / tool / memory GPU work owed (served before decoding)
    next_seq: object  # (C,) int32 FIFO ticket of the next request enqueued here
    step_time_s: object  # (C,) s, roofline time of the last decode iteration (0 if idle)


@pytree_dataclass
class Gpus:
    alive: object  # (C, G) bool; a cell's peak FLOP/s, bandwidth and power scale with its live GPUs


@pytree_dataclass
class Chains:
    active: object  # (C, S) bool: the slot holds a request (it occupies KV)
    base: object  # (C, S) tokens: prompt + tool tokens - memory removals
    out: object  # (C, S) tokens generated in this turn
    target: object  # (C, S) tokens to generate in this turn (termination at target; base+target <= L_max)
    tool_wait: object  # (C, S) int32 steps left waiting for a tool (0: decoding)
    born: object  # (C, S) int32 step the conversation arrived (its clock for time-in-system)
    turn: object  # (C, S) int32 agent-loop turn (0-based)
    hop: object  # (C, S) int32 position in an agentic chain of models (0-based)
    kind: object  # (C, S) int32 task kind (0 when kinds are off)


@pytree_dataclass
class Queue:
    """A ring buffer per cell: the queued requests hold the consecutive tickets ``next_seq - n ..
    next_seq - 1`` (``n`` queued), ticket ``t`` in slot ``t mod Q`` (``kernels.ring_slot``), so FIFO
    order is slot order from the head, wrapping around (no sort). States are built that way
    (``build``: tickets 0..n-1 in slots 0..n-1) and every step keeps it."""

    active: object  # (C, Q) bool
    prompt: object  # (C, Q) tokens to prefill
    target: object  # (C, Q) tokens to generate
    born: object  # (C, Q) int32
    turn: object  # (C, Q) int32
    hop: object  # (C, Q) int32
    seq: object  # (C, Q) int32 FIFO ticket (admission in ticket order; slot = seq mod Q)
    kind: object  # (C, Q) int32 task kind (0 when kinds are off)


@pytree_dataclass
class Ledger:
    """Cumulative per-cell accounts (float64)."""

    arrived: object  # requests (conversations) arriving at this cell from outside
    routed_out: object  # arrivals sent to a neighbour with more free capacity
    routed_in: object  # arrivals received from neighbours
    handoffs: object  # agentic-chain hops sent to the next model
    dropped: object  # requests refused because this cell's queue was full (lost)
    admitted: object  # turns admitted (prefilled)
    turns_done: object  # turns finished (answers delivered)
    completed: object  # conversations finished here (last turn of last hop)
    sojourn_s: object  # s, sum of time-in-system of the conversations completed here
    occupancy_s: object  # request-s: integral of (queued + active) dt
    tokens_in: object  # prompt tokens prefilled (first prompts, resent histories, handoffs)
    tokens_out: object  # tokens generated
    tool_calls: object
    tool_tokens: object  # tokens appended by tools (prefilled, billed as input)
    tool_truncated: object  # tool tokens refused for lack of KV room or context
    compressions: object  # memory-module compressions
    tokens_removed: object  # tokens removed by memory modules
    truncated: object  # tokens cut from follow-up prompts at the context limit L_max
    flops_prefill: object
    flops_decode: object
    flops_memory: object
    iterations: object  # decode iterations run (fractional: dt / t per step)
    prefill_s: object  # GPU-s in the prefill state (prefill, tool ingestion, memory)
    decode_s: object  # GPU-s decoding
    idle_s: object  # GPU-s idle
    energy_j: object  # J: power(state) x time x live GPUs
    kind_handoffs: object  # tasks of a foreign kind read here and handed on to an owner of the kind
    kind_handoff_tokens: object  # tokens those hand-offs make the owner prefill (the read task P + handoff H)
    kind_foreign: object  # tasks of a foreign kind served here (kept in context: probability theta)


@pytree_dataclass
class LLMState:
    cells: Cells
    gpus: Gpus
    chains: Chains
    queue: Queue
    ledger: Ledger
    step: object  # () int32


LEDGER_FIELDS = tuple(Ledger.__dataclass_fields__)
