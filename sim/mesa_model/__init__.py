"""The Mesa layer: one ``mesa.Model`` for every substrate, ``SubstrateModel``, on agents generated
from the substrate's entity specs; ``CurrencyModel`` (biology) and ``LLMCurrencyModel`` (LLM
serving) are thin subclasses with keyword parameters and their own reporters.

``backend="jax"`` steps the jitted engine and lets the agents read the state; ``backend="mesa"``
is the plain-Python reference backend with the same equations, process order and random draws,
stepped through the compartment agents phase by phase where the reference declares phases (see
``sim.mesa_model.substrate_model``). ``CellAgent``, ``GPUAgent``, ... are the generated classes.
"""

from sim.mesa_model.substrate_model import BACKENDS, SubstrateModel, agent_class
from sim.mesa_model.model import (
    CellAgent,
    ChainAgent,
    ConsumerAgent,
    CurrencyModel,
    ProducerAgent,
    host_draws,
    replicate_key,
)
from sim.mesa_model.llm import (
    DecodeStreamAgent,
    GPUAgent,
    LLMCurrencyModel,
    MemoryAgent,
    ModelInstanceAgent,
    ToolAgent,
)

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
