"""``LLMCurrencyModel``: the LLM serving substrate on the one Mesa layer (:class:`~sim.mesa_model.SubstrateModel`).

Agents, generated from ``sim.substrates.llm.spec.ENTITIES``, on the Mesa ``Network`` of the
tissue graph:

- :data:`ModelInstanceAgent` -- a cell: one model instance (KV cache in tokens, queue, prefill debt
  in s, its ledger; ``kv_occupied``, ``queue_len``, ``batch``, ... are its records);
- :data:`GPUAgent` -- a producer: one per GPU slot (``alive``, ``power_state``, ``power_w`` in W);
- :data:`DecodeStreamAgent` -- a chain slot: one decode stream (active, context, output, target,
  tool wait, turn, hop);
- :data:`ToolAgent` and :data:`MemoryAgent` -- one each per instance, the consumers: the tool-call
  and memory-module ledger lines (tools and memory act on the instance's streams).

``backend="jax"`` (default) steps the jitted substrate step; ``backend="mesa"`` steps
:class:`sim.substrates.llm.reference.ReferenceLLM` phase by phase, each per-cell phase called on
every instance agent through ``AgentSet.do`` (``shuffle_do`` with ``shuffle=True``: the same
numbers). The global parts of a process -- the random draws (one vectorised call per purpose and
step, the engine's stream), the routing scores and the enqueueing in flat (cell-major) order --
run between them.
"""

from __future__ import annotations

import numpy as np

from sim.mesa_model.substrate_model import SubstrateModel, agent_class, resolve_run
from sim.substrates.llm import SUBSTRATE as LLM
from sim.substrates.llm.build import LLMModel, build_llm


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


class LLMCurrencyModel(SubstrateModel):
    """Model instances with GPUs, decode streams, tools and memory, on a Mesa ``Network``.

    Args:
        cfg: composed config (``substrate=llm``, ``topology``, ``seed``, ``dt``, optional
            ``backend`` and ``replicate``), as taken by ``sim.substrates.llm.build.build_llm``.
        model: an :class:`sim.substrates.llm.build.LLMModel` to use instead of ``cfg``.
        backend, replicate: override the config's (defaults "jax" and 0).
        shuffle: reference backend only: call the instances in a random order in every per-cell
            phase (results do not change).
        collect_every: ``step()`` collects data every this many steps (0: never); ``run(n)``
            collects once at its end; also collected once at construction when > 0.
        collect_agents: also collect the per-agent reporters (instances and GPUs).
    """

    MODEL_REPORTERS = MODEL_REPORTERS
    AGENT_REPORTERS = {"model_instance": INSTANCE_REPORTERS, "gpu": GPU_REPORTERS}

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
        from sim.api import as_plain

        if (cfg is None) == (model is None):
            raise TypeError("LLMCurrencyModel needs exactly one of a config dict or model=")
        if cfg is not None:
            cfg = as_plain(cfg)
            backend, replicate = resolve_run(backend, replicate, cfg)
            model = build_llm(cfg)  # a composed preset need not be a whole run's config
        super().__init__(substrate=LLM, built=model, backend=backend, replicate=replicate,
                         collect_every=collect_every, shuffle=shuffle, collect_agents=collect_agents)
        self.cfg = cfg

    # the agents of each kind and the slots per instance (names kept from the hand-written model)
    instance_agents = property(lambda self: self.agents_of_entity["model_instance"])
    gpu_agents = property(lambda self: self.agents_of_entity["gpu"])
    stream_agents = property(lambda self: self.agents_of_entity["decode_stream"])
    tool_agents = property(lambda self: self.agents_of_entity["tool"])
    memory_agents = property(lambda self: self.agents_of_entity["memory"])
    n_gpu_slots = property(lambda self: self.n_slots["gpu"])
    n_stream_slots = property(lambda self: self.n_slots["decode_stream"])


# the generated agent classes (shared by every LLM serving model)
ModelInstanceAgent, GPUAgent, DecodeStreamAgent, ToolAgent, MemoryAgent = (
    agent_class(LLM, spec) for spec in LLM.entities)

__all__ = [
    "DecodeStreamAgent",
    "GPUAgent",
    "LLMCurrencyModel",
    "MemoryAgent",
    "ModelInstanceAgent",
    "ToolAgent",
    "MODEL_REPORTERS",
]
