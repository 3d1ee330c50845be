"""``LLMCurrencyModel``: the LLM preset as a ``mesa.Model``, stepped by the JAX engine or agent by agent.

Agents (all ``FixedAgent`` s on the Mesa ``Network`` built from the tissue graph):

- :class:`ModelInstanceAgent` -- a cell: one model instance (its request queue, KV cache, debt,
  ledger);
- :class:`GPUAgent` -- a producer: one per GPU slot of an instance (alive, power state);
- :class:`DecodeStreamAgent` -- a chain slot: one decode stream (active, context, output, target,
  tool wait, turn, hop);
- :class:`ToolAgent` and :class:`MemoryAgent` -- one per instance, the consumers: they hold the
  tool-call and memory-module counters (tools and memory act on the instance's streams).

Backends:

- ``backend="jax"`` (default): ``step()`` calls the jitted substrate step (``sim.substrates.llm.SUBSTRATE.step``) once and
  ``run(n)`` advances ``n`` steps in one ``lax.scan``; the replicate key is
  ``sim.rng.replicate_keys(seed, 1, replicate)[0]`` (as the engine does). Agents read
  host (numpy) copies of the arrays, fetched lazily after each step / run.
- ``backend="mesa"``: the plain-Python reference backend. Every model-instance agent steps its
  own :class:`sim.substrates.llm.reference.ModelCell` (and that cell's decode streams and queue) through the
  per-cell steps of :class:`sim.substrates.llm.reference.ReferenceLLM`, process by process in the order of
  ``sim.substrates.llm.kernels.PROCESSES``, each process called on all instances through ``AgentSet.do``
  (``shuffle_do`` with ``shuffle=True``: same numbers). The global parts of a process -- the
  random draws (one vectorised call per purpose and step, the engine's stream), the routing
  scores and the enqueueing in flat (cell-major) order -- are run by the model between them.

Both backends expose ``model.state`` (a numpy ``sim.substrates.llm.state.LLMState``), ``model.space`` and a
``DataCollector`` (``model.datacollector``).
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
from mesa.datacollection import DataCollector
from mesa.discrete_space import FixedAgent

from sim.substrates.llm import kernels as K
from sim.substrates.llm.build import LLMModel, build_llm
from sim.substrates.llm.reference import ReferenceLLM
from sim.substrates.llm.state import LEDGER_FIELDS, LLMState
from sim.substrates.llm import SUBSTRATE as LLM
from sim.mesa_model.dual import DualBackendModel
from sim.mesa_model.substrate_model import network_space as _network

# ---------------------------------------------------------------------------- model reporters
def _kv_occupied(state) -> np.ndarray:
    ch = state.chains
    return np.where(ch.active, ch.base + ch.out, 0.0).sum(axis=1)


def tokens_out(model) -> float:
    return float(model.state.ledger.tokens_out.sum())


def kv_occupied(model) -> float:
    return float(_kv_occupied(model.state).sum())


def in_system(model) -> int:
    s = model.state
    return int(s.queue.active.sum() + s.chains.active.sum())


def queue_len(model) -> int:
    return int(model.state.queue.active.sum())


def active_streams(model) -> int:
    return int(model.state.chains.active.sum())


def completed(model) -> float:
    return float(model.state.ledger.completed.sum())


def tool_calls(model) -> float:
    return float(model.state.ledger.tool_calls.sum())


def energy_j(model) -> float:
    return float(model.state.ledger.energy_j.sum())


MODEL_REPORTERS = {
    "tokens_out": tokens_out,
    "kv_occupied": kv_occupied,
    "in_system": in_system,
    "queue_len": queue_len,
    "active_streams": active_streams,
    "completed": completed,
    "tool_calls": tool_calls,
    "energy_j": energy_j,
}
INSTANCE_REPORTERS = {"kv_free": "kv_free", "queue_len": "queue_len", "batch": "batch", "tokens_out": "tokens_out"}
GPU_REPORTERS = {"alive": "alive", "power_state": "power_state"}


# ---------------------------------------------------------------------------- agents
class ModelInstanceAgent(FixedAgent):
    """A model instance (cell): its queue, KV cache and ledger, read from ``model.state``.

    On the reference backend it steps its :class:`sim.substrates.llm.reference.ModelCell` (``self._cell``)
    with the per-cell steps of the model's :class:`ReferenceLLM` (methods below, one per process).
    """

    def __init__(self, model, index: int, cell):
        super().__init__(model)
        self.index = int(index)
        self.cell = cell
        self.gpus: list[GPUAgent] = []
        self.streams: list[DecodeStreamAgent] = []
        self.tool: ToolAgent | None = None
        self.memory_module: MemoryAgent | None = None
        self._cell = None  # reference backend: the ModelCell
        self._out = None  # reference backend: this process's entries / pending finishes

    def __repr__(self) -> str:
        return f"ModelInstanceAgent({self.index})"

    def _get(self, part: str, name: str):
        return getattr(getattr(self.model.state, part), name)[self.index]

    @property
    def alive(self) -> bool:
        return bool(self._get("cells", "alive"))

    @property
    def kv_capacity(self) -> float:
        return float(self._get("cells", "kv_capacity"))

    @property
    def kv_free(self) -> float:
        return float(self._get("cells", "kv_free"))

    @property
    def kv_occupied(self) -> float:
        return float(_kv_occupied(self.model.state)[self.index])

    @property
    def debt_s(self) -> float:
        return float(self._get("cells", "debt_s"))

    @property
    def step_time_s(self) -> float:
        return float(self._get("cells", "step_time_s"))

    @property
    def queue_len(self) -> int:
        return int(self._get("queue", "active").sum())

    @property
    def batch(self) -> int:
        """Active decode streams (holding KV)."""
        return int(self._get("chains", "active").sum())

    @property
    def decoding(self) -> int:
        """Active streams not waiting for a tool."""
        return int((self._get("chains", "active") & (self._get("chains", "tool_wait") == 0)).sum())

    @property
    def in_system(self) -> int:
        return self.queue_len + self.batch

    @property
    def n_gpus_alive(self) -> int:
        return int(self._get("gpus", "alive").sum()) if self.alive else 0

    @property
    def ledger(self) -> dict:
        """The instance's cumulative accounts (``sim.substrates.llm.state.Ledger`` fields)."""
        led = self.model.state.ledger
        return {name: float(getattr(led, name)[self.index]) for name in LEDGER_FIELDS}

    @property
    def tokens_out(self) -> float:
        return float(self._get("ledger", "tokens_out"))

    @property
    def completed(self) -> float:
        return float(self._get("ledger", "completed"))

    # ------------------------------------------------------------------ reference backend
    def tools(self) -> None:
        self.model._ref.tools_cell(self._cell)

    def memory(self) -> None:
        self.model._ref.memory_cell(self._cell)

    def arrivals(self, draws) -> None:
        self._out = self.model._ref.arrivals_cell(self._cell, draws)

    def admission(self) -> None:
        self.model._ref.admission_cell(self._cell)

    def decode(self, u) -> None:
        self.model._ref.decode_cell(self._cell, u)

    def finish(self, draws) -> None:
        self._out = self.model._ref.finish_cell(self._cell, draws)

    def account(self) -> None:
        self.model._ref.account_cell(self._cell)


class GPUAgent(FixedAgent):
    """A GPU (producer) in slot ``slot`` of its model instance."""

    def __init__(self, model, host: ModelInstanceAgent, slot: int, n_slots: int):
        super().__init__(model)
        self.host = host
        self.cell_index = host.index
        self.slot = int(slot)
        self.gid = host.index * int(n_slots) + self.slot
        self.cell = host.cell

    def __repr__(self) -> str:
        return f"GPUAgent(cell={self.cell_index}, slot={self.slot})"

    @property
    def alive(self) -> bool:
        return bool(self.model.state.gpus.alive[self.cell_index, self.slot]) and self.host.alive

    @property
    def power_state(self) -> str:
        """The state the GPU starts the next step in: "off" (dead), "prefill" (owes prefill /
        tool / memory work, served first), "decode" (streams to decode) or "idle"."""
        if not self.alive:
            return "off"
        if self.host.debt_s > 0:
            return "prefill"
        return "decode" if self.host.decoding > 0 else "idle"

    @property
    def power_w(self) -> float:
        """Power draw (W) in :attr:`power_state`."""
        p = self.model.params
        return {"off": 0.0, "prefill": float(p.power_prefill), "decode": float(p.power_decode),
                "idle": float(p.power_idle)}[self.power_state]


class DecodeStreamAgent(FixedAgent):
    """A chain slot of a model instance: one decode stream. ``chain_id = cell_index * slots + slot``
    keys its draws (tool calls, follow-ups)."""

    def __init__(self, model, host: ModelInstanceAgent, slot: int, n_slots: int):
        super().__init__(model)
        self.host = host
        self.cell_index = host.index
        self.slot = int(slot)
        self.chain_id = host.index * int(n_slots) + self.slot
        self.cell = host.cell

    def __repr__(self) -> str:
        return f"DecodeStreamAgent(cell={self.cell_index}, slot={self.slot})"

    def _get(self, name: str):
        return getattr(self.model.state.chains, name)[self.cell_index, self.slot]

    @property
    def chain(self):
        """Reference backend: the :class:`sim.substrates.llm.reference.Chain` now in this slot (else None)."""
        ref = self.model._ref
        return None if ref is None else ref.cells[self.cell_index].chains[self.slot]

    @property
    def active(self) -> bool:
        return bool(self._get("active"))

    @property
    def base(self) -> float:
        return float(self._get("base"))

    @property
    def out(self) -> float:
        """Tokens generated in this turn."""
        return float(self._get("out"))

    @property
    def context(self) -> float:
        """KV tokens held (``base + out``; 0 when inactive)."""
        return self.base + self.out if self.active else 0.0

    @property
    def target(self) -> float:
        return float(self._get("target"))

    @property
    def tool_wait(self) -> int:
        return int(self._get("tool_wait"))

    @property
    def waiting_for_tool(self) -> bool:
        return self.active and self.tool_wait > 0

    @property
    def born(self) -> int:
        return int(self._get("born"))

    @property
    def turn(self) -> int:
        return int(self._get("turn"))

    @property
    def hop(self) -> int:
        return int(self._get("hop"))


class _Consumer(FixedAgent):
    def __init__(self, model, host: ModelInstanceAgent):
        super().__init__(model)
        self.host = host
        self.cell_index = host.index
        self.cell = host.cell

    def _led(self, name: str) -> float:
        return float(getattr(self.model.state.ledger, name)[self.cell_index])


class ToolAgent(_Consumer):
    """The tools of a model instance (consumer): its streams' tool calls and returned tokens."""

    def __repr__(self) -> str:
        return f"ToolAgent(cell={self.cell_index})"

    @property
    def tool_calls(self) -> float:
        return self._led("tool_calls")

    @property
    def tool_tokens(self) -> float:
        return self._led("tool_tokens")

    @property
    def tool_truncated(self) -> float:
        return self._led("tool_truncated")

    @property
    def waiting(self) -> int:
        """Streams now waiting for a tool."""
        return sum(s.waiting_for_tool for s in self.host.streams)


class MemoryAgent(_Consumer):
    """The memory module of a model instance (consumer): compressions of its streams' contexts."""

    def __repr__(self) -> str:
        return f"MemoryAgent(cell={self.cell_index})"

    @property
    def compressions(self) -> float:
        return self._led("compressions")

    @property
    def tokens_removed(self) -> float:
        return self._led("tokens_removed")

    @property
    def flops(self) -> float:
        return self._led("flops_memory")


# ---------------------------------------------------------------------------- the model
class LLMCurrencyModel(DualBackendModel):
    """Model instances with GPUs, decode streams, tools and memory, on a Mesa ``Network``.

    Args:
        cfg: composed config (``substrate=llm``, ``topology``, ``seed``, ``dt``, optional
            ``backend`` and ``replicate``), as taken by ``sim.substrates.llm.build.build_llm``.
        model: an :class:`sim.substrates.llm.build.LLMModel` to use instead of ``cfg``.
        backend, replicate: override the config's (defaults "jax" and 0).
        shuffle: reference backend only: call the instances in a random order each process
            (results do not change).
        collect_every: ``step()`` collects data every this many steps (0: never); ``run(n)``
            collects once at its end; also collected once at construction when > 0.
        collect_agents: also collect the per-agent reporters (instances and GPUs).
    """

    def __init__(
        self,
        cfg=None,
        *,
        model: LLMModel | None = None,
        backend: str | None = None,
        replicate: int | None = None,
        shuffle: bool = False,
        collect_every: int = 1,
        collect_agents: bool = True,
    ):
        model = self._init_common(cfg, model, backend, replicate, shuffle, collect_every, build_llm)
        self._ref: ReferenceLLM | None = None

        n_cells, n_gpu = self._initial.gpus.alive.shape
        n_streams = self._initial.chains.active.shape[1]
        self.n_cells, self.n_gpu_slots, self.n_stream_slots = n_cells, n_gpu, n_streams

        self.space = _network(self.graph, self.random)
        self.instance_agents = [ModelInstanceAgent(self, i, self.space[i]) for i in range(n_cells)]
        self.gpu_agents = [GPUAgent(self, h, s, n_gpu) for h in self.instance_agents for s in range(n_gpu)]
        self.stream_agents = [
            DecodeStreamAgent(self, h, s, n_streams) for h in self.instance_agents for s in range(n_streams)
        ]
        self.tool_agents = [ToolAgent(self, h) for h in self.instance_agents]
        self.memory_agents = [MemoryAgent(self, h) for h in self.instance_agents]
        for h in self.instance_agents:
            i = h.index
            h.gpus = self.gpu_agents[i * n_gpu : (i + 1) * n_gpu]
            h.streams = self.stream_agents[i * n_streams : (i + 1) * n_streams]
            h.tool, h.memory_module = self.tool_agents[i], self.memory_agents[i]

        if self.backend == "jax":
            self._dev_params = jax.tree_util.tree_map(jnp.asarray, model.params)
            self._dev_state = jax.tree_util.tree_map(jnp.asarray, self._initial)
        else:
            self._ref = ReferenceLLM(model, replicate=self.replicate, key=self.key)
            for h in self.instance_agents:
                h._cell = self._ref.cells[h.index]
            self._instances = self.agents_by_type[ModelInstanceAgent]

        self.datacollector = DataCollector(
            model_reporters=dict(MODEL_REPORTERS),
            agenttype_reporters=(
                {ModelInstanceAgent: dict(INSTANCE_REPORTERS), GPUAgent: dict(GPU_REPORTERS)}
                if collect_agents
                else None
            ),
        )
        if self.collect_every > 0:
            self.datacollector.collect(self)

    def _export_reference(self) -> LLMState:
        return self._ref.state()

    def _collect(self) -> list:
        """Concatenate the agents' ``_out`` lists in cell order (the engine's flat order)."""
        out = []
        for h in self.instance_agents:
            out += h._out
            h._out = None
        return out

    def _kernel_step(self):
        return LLM.step  # the engine's step of the substrate value

    def _reference_step(self) -> None:
        ref = self._ref
        cells = self._instances
        do = cells.shuffle_do if self.shuffle else cells.do
        do("tools")
        do("memory")
        do("arrivals", ref.arrival_draws())
        ref.enqueue(self._collect())
        do("admission")
        do("decode", ref.decode_draws())
        do("finish", ref.finish_draws())
        ref.finish_route(self._collect())
        do("account")
        ref.step_count += 1
        self._t = ref.step_count


__all__ = [
    "DecodeStreamAgent",
    "GPUAgent",
    "LLMCurrencyModel",
    "MemoryAgent",
    "ModelInstanceAgent",
    "ToolAgent",
    "MODEL_REPORTERS",
]
