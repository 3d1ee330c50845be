"""The Mesa layer: ``SubstrateModel`` (any registered substrate as a ``mesa.Model``, agents generated
from its entity specs) and the hand-written ``CurrencyModel`` (biology: cell, producer, consumer
and chain agents) and ``LLMCurrencyModel`` (LLM serving).

``backend="jax"`` steps the jitted engine and lets the agents read the state; ``backend="mesa"``
is the plain-Python reference backend that steps agent by agent with the same equations, process
order and random draws (see ``sim.mesa_model.model``).
"""

from sim.mesa_model.agents import CellAgent, ChainAgent, ConsumerAgent, ProducerAgent
from sim.mesa_model.model import BACKENDS, CurrencyModel, host_draws, replicate_key
from sim.mesa_model.llm import (
    DecodeStreamAgent,
    GPUAgent,
    LLMCurrencyModel,
    MemoryAgent,
    ModelInstanceAgent,
    ToolAgent,
)
from sim.mesa_model.substrate_model import SubstrateModel, agent_class

__all__ = [
    "SubstrateModel",
    "agent_class",
    "LLMCurrencyModel",
    "ModelInstanceAgent",
    "GPUAgent",
    "DecodeStreamAgent",
    "ToolAgent",
    "MemoryAgent",
    "BACKENDS",
    "CellAgent",
    "ChainAgent",
    "ConsumerAgent",
    "CurrencyModel",
    "ProducerAgent",
    "host_draws",
    "replicate_key",
]
