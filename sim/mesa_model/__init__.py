"""The Mesa layer: ``CurrencyModel`` (a ``mesa.Model``) with cell, producer, consumer and chain agents.

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

__all__ = [
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
